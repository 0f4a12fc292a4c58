//! The CPU engine: the tape on the host, data parallel across rayon's thread pool.
//!
//! Each micro-batch's B sequences are split into one shard per thread (at most B); each shard
//! runs forward and backward on its own tape into its own gradient buffer, scaled by its share
//! of the rows, and the shards' gradients are summed (in shard order) before clipping. On a
//! small model this beats splitting every op across threads (one fork-join per op); results
//! depend on the thread count only through summation order (the gain is in docs/benchmarks.md,
//! "Shards of the CPU engine").
//!
//! A large model runs one shard, every op split across the threads instead ([`shards_for`]):
//! there the step is bound by memory traffic, and each extra shard adds a gradient buffer the
//! size of the parameters to write, sum and read again, and packs every weight once more.
//!
//! Evaluation batches run on the shards in parallel, each batch whole on one shard's tape.
//!
//! Sampling one sequence decodes with the key/value cache on the GEMV kernels
//! ([`ferrogpt_model::kvcache::KvCache::decode`]) over the decode weights: the model's
//! matrices converted once (f32, bf16 or int8; [`CpuEngine::with_weights`]) when first needed
//! and again after an update. A new prompt (or a slid window) runs on the tape, the GEMM
//! ladder over `params`: for bf16 and int8 the caller passes the dequantized weights there
//! (`kvcache::quant::quantize`), so prefill and decoding use the same weights (prefill with
//! f32 activations).
//!
//! `zero_grads` only marks the gradient buffers stale: the next backward pass overwrites them
//! ([`Write::Set`]), so they are neither zeroed nor read before their first write (at gpt2-124m
//! size a buffer is 0.5 GB).

use crate::config::TrainConfig;
use crate::dist::Collective;
use crate::engine::{Engine, EngineError, EngineFactory, EngineInit};
use crate::optim::{clip_factor, Optimizer, CHUNK};
use ferrogpt_core::{Level, Tape, Write};
use ferrogpt_gemm::gemv::WeightFormat;
use ferrogpt_model::kvcache::DecodeWeights;
use ferrogpt_model::Gpt;
use rand::SeedableRng;
use rand_xoshiro::Xoshiro256PlusPlus;
use rayon::prelude::*;

/// Data-parallel shards for a training engine of `n_params` parameters with `threads` threads
/// and batches of `batch` sequences: one per thread (at most `batch`) while a gradient buffer
/// (4 bytes per parameter) fits in half the last-level cache (32 MiB when the cache size is
/// unknown), else one: the rule the measurements in docs/benchmarks.md ("Shards of the CPU
/// engine") support.
pub fn shards_for(threads: usize, batch: usize, n_params: usize) -> usize {
    let llc = ferrogpt_gemm::hw::caches().l3.unwrap_or(32 << 20);
    if n_params * 4 > llc / 2 {
        1
    } else {
        threads.min(batch).max(1)
    }
}

/// One worker's share of a batch.
struct Shard {
    tape: Tape<f32>,
    /// Same layout as the parameters; empty for an inference-only engine.
    grads: Vec<f32>,
    /// The buffer's values are stale and stand for zero (set by `zero_grads`): the next
    /// backward pass overwrites it, and the sum skips it until then.
    stale: bool,
}

/// The model's parameters, gradients and optimizer state in host memory; the matmuls at one
/// level of the CPU ladder.
pub struct CpuEngine {
    model: Gpt,
    level: Level,
    params: Vec<f32>,
    /// None: inference only.
    opt: Option<Optimizer>,
    /// One per worker thread (at most B when training): a tape and a gradient buffer each.
    shards: Vec<Shard>,
    /// The global norm of the gradients once the shards' gradients have been summed into the
    /// first shard's buffer (by `clip_grads` or `update`) since the last `accumulate`; the sum
    /// and the norm are one pass over memory. Set by `accumulate` itself when one shard took
    /// the whole batch into a fresh buffer (the backward pass measured the norm).
    reduced: Option<f64>,
    /// The clipping factor(s) `clip_grads` chose, applied by `update` inside the optimizer's
    /// pass (1 when nothing is clipped): the gradients' logical value is the sum times this.
    grad_scale: f32,
    /// Keys and values of the sequence sampled last (one-row `last_logits`); cleared when the
    /// weights change.
    kv: ferrogpt_model::kvcache::KvCache,
    /// The caches of the other sequences of `last_logits_many` (sequence b ≥ 1 in entry
    /// b − 1; sequence 0 in `kv`); cleared with it.
    more_kv: Vec<ferrogpt_model::kvcache::KvCache>,
    /// The matrices as the decoder reads them, in `weights` format; None until the first
    /// decoded token and after every update.
    decode: Option<DecodeWeights>,
    weights: WeightFormat,
    /// ZeRO-1: this rank's block of the parameters, whose optimizer state `opt` holds.
    zero: Option<ZeroBlock>,
}

/// This rank's share of a ZeRO-1 run: parameters `lo..hi` of `world` blocks of `block`.
struct ZeroBlock {
    comm: std::rc::Rc<dyn Collective>,
    lo: usize,
    hi: usize,
    block: usize,
    /// The block's summed gradients (`block` values, padded), from the reduce-scatter.
    grads: Vec<f32>,
}

impl CpuEngine {
    /// An engine whose tapes run their matmuls at `level`. Errors: a level that cannot run
    /// here, parameters or optimizer moments of the wrong length, an optimizer state whose
    /// kind is not `cfg.optimizer` (a `v` present for SGD or missing for AdamW).
    pub fn new(init: EngineInit<'_>, level: Level) -> Result<Self, EngineError> {
        let model = init.model.clone();
        let n = model.layout.total;
        if init.params.len() != n {
            return Err(EngineError(format!(
                "the parameters have {} values, the model needs {n}",
                init.params.len()
            )));
        }
        let threads = rayon::current_num_threads().max(1);
        let (opt, n_shards, grad_len, zero) = match init.train {
            Some(tr) => {
                let kind = tr.cfg.optimizer;
                let want_v = if kind == crate::config::OptimizerKind::AdamW {
                    n
                } else {
                    0
                };
                if tr.m.len() != n || tr.v.len() != want_v {
                    return Err(EngineError(format!(
                        "optimizer state of {} + {} values does not fit {kind:?} on {n} parameters",
                        tr.m.len(),
                        tr.v.len()
                    )));
                }
                let decay = model.layout.decay_mask();
                let (opt, zero) = match tr.zero {
                    // The whole state.
                    None => {
                        let mut opt = Optimizer::new(kind, n, decay);
                        (opt.m, opt.v) = (tr.m, tr.v);
                        opt.t = tr.opt_t;
                        (opt, None)
                    }
                    // This rank's block of it.
                    Some(comm) => {
                        let (lo, hi, block) = crate::dist::block_of(n, comm.rank(), comm.world());
                        let mut opt = Optimizer::new(kind, hi - lo, decay[lo..hi].to_vec());
                        opt.m = tr.m[lo..hi].to_vec();
                        if !tr.v.is_empty() {
                            opt.v = tr.v[lo..hi].to_vec();
                        }
                        opt.t = tr.opt_t;
                        let grads = vec![0.0; block];
                        (
                            opt,
                            Some(ZeroBlock {
                                comm,
                                lo,
                                hi,
                                block,
                                grads,
                            }),
                        )
                    }
                };
                let shards = shards_for(threads, tr.cfg.batch_size, n);
                (Some(opt), shards, n, zero)
            }
            None => (None, threads, 0, None),
        };
        let shards = (0..n_shards)
            .map(|_| {
                Ok(Shard {
                    tape: Tape::new(level)?,
                    grads: vec![0.0; grad_len],
                    stale: false,
                })
            })
            .collect::<Result<Vec<_>, ferrogpt_gemm::GemmError>>()
            .map_err(|e| EngineError(e.to_string()))?;
        Ok(CpuEngine {
            model,
            level,
            params: init.params,
            opt,
            shards,
            reduced: None,
            grad_scale: 1.0,
            kv: Default::default(),
            more_kv: Vec::new(),
            decode: None,
            weights: WeightFormat::F32,
            zero,
        })
    }

    /// Decodes with the matrices in `format`, converted from the parameters now (so that the
    /// first tokens do not wait for it), or with `prebuilt` (read from a quantized checkpoint;
    /// its format wins). The parameters should already hold the values the format stores
    /// (`kvcache::quant::quantize`), so that the tape's prefill sees the same weights. Errors:
    /// Forgets every sequence's keys and values (the weights changed).
    fn clear_caches(&mut self) {
        self.kv.clear();
        self.more_kv.iter_mut().for_each(|kv| kv.clear());
    }

    /// the GEMV kernel cannot run here.
    pub fn with_weights(
        mut self,
        format: WeightFormat,
        prebuilt: Option<DecodeWeights>,
    ) -> Result<Self, EngineError> {
        let w = match prebuilt {
            Some(w) => w,
            None => DecodeWeights::new(&self.model, &self.params, format)
                .map_err(|e| EngineError(e.to_string()))?,
        };
        self.weights = w.format();
        self.decode = Some(w);
        self.clear_caches();
        Ok(self)
    }

    /// A factory of CPU engines at `level`, for [`crate::trainer::Trainer`] and the CLI.
    pub fn factory(level: Level) -> Box<EngineFactory<'static>> {
        Box::new(move |init| Ok(Box::new(CpuEngine::new(init, level)?) as Box<dyn Engine>))
    }

    fn training(&self) -> Result<(), EngineError> {
        match self.opt {
            Some(_) => Ok(()),
            None => Err(EngineError(
                "this engine was made for inference only (no gradients or optimizer state)".into(),
            )),
        }
    }

    /// Checks a batch: `inputs` (and `targets`, when given) B·T ids with B ≥ 1, T within the
    /// block size, ids within the vocabulary. Returns B.
    fn check_batch(
        &self,
        inputs: &[u32],
        targets: Option<&[u32]>,
        t: usize,
    ) -> Result<usize, EngineError> {
        if t == 0 || inputs.is_empty() || !inputs.len().is_multiple_of(t) {
            return Err(EngineError(format!(
                "a batch of {} token ids is not B rows of T = {t}",
                inputs.len()
            )));
        }
        self.model.check_tokens(inputs, t)?;
        if let Some(y) = targets {
            if y.len() != inputs.len() {
                return Err(EngineError(format!(
                    "{} targets for {} inputs",
                    y.len(),
                    inputs.len()
                )));
            }
            self.model.check_tokens(y, t)?;
        }
        Ok(inputs.len() / t)
    }

    /// Sums the shards' gradients into the first shard's buffer (once per accumulation) and
    /// returns their global norm, measured in the same pass (Σ g² in f64 per chunk).
    fn reduce(&mut self) -> f64 {
        if let Some(norm) = self.reduced {
            return norm;
        }
        let (first, rest) = self.shards.split_first_mut().expect("at least one shard");
        if first.stale {
            first.grads.fill(0.0);
            first.stale = false;
        }
        let grads = &mut first.grads;
        let rest: Vec<&Shard> = rest.iter().filter(|sh| !sh.stale).collect();
        let norm = if rest.is_empty() {
            crate::optim::global_norm(grads)
        } else {
            let others: Vec<&[f32]> = rest.iter().map(|sh| &sh.grads[..]).collect();
            grads
                .par_chunks_mut(CHUNK)
                .enumerate()
                .map(|(ci, d)| {
                    let c0 = ci * CHUNK;
                    let len = d.len();
                    for o in &others {
                        for (d, s) in d.iter_mut().zip(&o[c0..c0 + len]) {
                            *d += s;
                        }
                    }
                    ferrogpt_core::wide::run(
                        #[inline(always)]
                        || ferrogpt_core::reduce::sum_squares_f64(d),
                    )
                })
                .sum::<f64>()
                .sqrt()
        };
        self.reduced = Some(norm);
        norm
    }

    /// New gradients are coming: the sum, its norm and the clip factor no longer hold.
    fn gradients_change(&mut self) {
        self.reduced = None;
        self.grad_scale = 1.0;
    }
}

impl Engine for CpuEngine {
    fn describe(&self) -> String {
        let decode = match &self.decode {
            Some(w) => format!(", {} decoding ({})", w.format(), w.kernel()),
            None => String::new(),
        };
        format!(
            "cpu ({}, {} threads{decode})",
            self.level,
            rayon::current_num_threads()
        )
    }

    fn zero_grads(&mut self) -> Result<(), EngineError> {
        self.training()?;
        // Not zeroed: the next backward pass overwrites (at gpt2-124m size each buffer is
        // 0.5 GB: a memset and a first read of every weight gradient saved).
        self.shards.iter_mut().for_each(|sh| sh.stale = true);
        self.gradients_change();
        Ok(())
    }

    fn accumulate(
        &mut self,
        inputs: &[u32],
        targets: &[u32],
        t: usize,
        scale: f32,
        seed: u64,
    ) -> Result<f64, EngineError> {
        self.training()?;
        let b = self.check_batch(inputs, Some(targets), t)?;
        if self.reduced.is_some() {
            // The first buffer already holds the sum: the others start again from zero, and a
            // clip chosen since applies to what is there now, not to what comes.
            let f = self.grad_scale;
            let (first, rest) = self.shards.split_first_mut().expect("at least one shard");
            if f != 1.0 {
                first
                    .grads
                    .par_chunks_mut(CHUNK)
                    .for_each(|c| c.iter_mut().for_each(|g| *g *= f));
            }
            rest.iter_mut().for_each(|sh| sh.stale = true);
        }
        self.gradients_change();
        let n_shards = self.shards.len().min(b);
        // One shard taking the whole batch into a fresh buffer, with no other shard holding
        // gradients to add: that buffer is the sum, and the backward pass can measure its norm
        // while each gradient is still in cache (no pass over the buffer afterwards).
        let norm_in_backward =
            n_shards == 1 && self.shards[0].stale && self.shards[1..].iter().all(|sh| sh.stale);
        let (model, params) = (&self.model, &self.params);
        // The batch was checked above, so no shard's loss fails; an error still passes on.
        let results: Vec<(f64, Option<f64>)> = self.shards[..n_shards]
            .par_iter_mut()
            .enumerate()
            .map(|(i, sh)| {
                let (lo, hi) = (i * b / n_shards, (i + 1) * b / n_shards);
                let (x, y) = (&inputs[lo * t..hi * t], &targets[lo * t..hi * t]);
                // One dropout stream per shard, derived from the micro-batch's seed.
                let mut rng = Xoshiro256PlusPlus::seed_from_u64(
                    seed ^ (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15),
                );
                let weight = (hi - lo) as f32 / b as f32;
                sh.tape.reset(true);
                let loss = model.loss(&mut sh.tape, params, x, y, t, &mut rng)?;
                // Gradients of the full-batch mean: this shard's mean, scaled by its share.
                let sq = if norm_in_backward {
                    Some(
                        sh.tape
                            .backward_with_norm(params, &mut sh.grads, weight * scale),
                    )
                } else {
                    let into = if sh.stale { Write::Set } else { Write::Add };
                    sh.tape
                        .backward_scaled(params, &mut sh.grads, weight * scale, into);
                    None
                };
                sh.stale = false;
                Ok((loss as f64 * weight as f64, sq))
            })
            .collect::<Result<_, ferrogpt_model::ModelError>>()?;
        if let [(_, Some(sq))] = results[..] {
            self.reduced = Some(sq.sqrt());
        }
        Ok(results.iter().map(|r| r.0).sum::<f64>())
    }

    fn clip_grads(&mut self, max_norm: f64) -> Result<f64, EngineError> {
        self.training()?;
        // The gradients as clipped so far are the sum times `grad_scale`.
        let norm = self.reduce() * self.grad_scale as f64;
        self.grad_scale *= clip_factor(norm, max_norm);
        Ok(norm)
    }

    fn update(&mut self, lr: f64, cfg: &TrainConfig) -> Result<(), EngineError> {
        self.training()?;
        self.clear_caches();
        self.decode = None;
        let kind = self.opt.as_ref().expect("checked by training()").kind;
        if kind != cfg.optimizer {
            return Err(EngineError(format!(
                "the engine holds {kind:?} state, the update asks for {:?}",
                cfg.optimizer
            )));
        }
        self.reduce();
        let opt = self.opt.as_mut().expect("checked by training()");
        let Some(z) = self.zero.as_ref() else {
            opt.step(
                &mut self.params,
                &self.shards[0].grads,
                self.grad_scale,
                lr,
                cfg,
            );
            return Ok(());
        };
        // ZeRO-1: this rank's block, then every block from its owner.
        let (lo, hi) = (z.lo, z.hi);
        opt.step(
            &mut self.params[lo..hi],
            &z.grads[..hi - lo],
            self.grad_scale,
            lr,
            cfg,
        );
        let mut mine = self.params[lo..hi].to_vec();
        mine.resize(z.block, 0.0);
        let n = self.params.len();
        self.params.resize(z.block * z.comm.world(), 0.0);
        let r = z.comm.all_gather_f32(&mine, &mut self.params);
        self.params.truncate(n);
        r.map_err(|e| EngineError(e.to_string()))
    }

    fn losses(
        &mut self,
        batches: &[(Vec<u32>, Vec<u32>)],
        t: usize,
    ) -> Result<Vec<f64>, EngineError> {
        if batches.is_empty() {
            return Ok(Vec::new());
        }
        for (x, y) in batches {
            self.check_batch(x, Some(y), t)?;
        }
        // Consecutive runs of batches per shard, evaluated in parallel; concatenated in order.
        let (model, params) = (&self.model, &self.params);
        let per_shard = batches.len().div_ceil(self.shards.len());
        let losses: Vec<Vec<f64>> = self
            .shards
            .par_iter_mut()
            .zip(batches.par_chunks(per_shard))
            .map(|(sh, chunk)| {
                let mut rng = Xoshiro256PlusPlus::seed_from_u64(0); // unused: no dropout in eval
                chunk
                    .iter()
                    .map(|(x, y)| {
                        sh.tape.reset(false);
                        Ok(model.loss(&mut sh.tape, params, x, y, t, &mut rng)? as f64)
                    })
                    .collect()
            })
            .collect::<Result<_, ferrogpt_model::ModelError>>()?;
        Ok(losses.into_iter().flatten().collect())
    }

    /// One row (sampling): when the cache holds every position but the last (the window grew
    /// by one token, or came again: a wider rule than [`crate::engine::extension`], the
    /// cache's own), incremental decoding with the key/value cache: one position's forward
    /// pass. Otherwise (a new prompt, a sliding window, several rows) the tape's forward over
    /// the whole window, which also refills the cache for one row.
    fn last_logits(&mut self, tokens: &[u32], t: usize) -> Result<Vec<f32>, EngineError> {
        let b = self.check_batch(tokens, None, t)?;
        if b == 1 && self.kv.reusable(tokens) + 1 == tokens.len() && !self.kv.is_empty() {
            if self.decode.is_none() {
                let w = DecodeWeights::new(&self.model, &self.params, self.weights)
                    .map_err(|e| EngineError(e.to_string()))?;
                self.decode = Some(w);
            }
            let w = self.decode.as_ref().expect("built above");
            return Ok(self.kv.decode(&self.model, &self.params, w, tokens)?);
        }
        let v = self.model.config.vocab_size;
        let vp = self.model.config.padded_vocab_size;
        let tape = &mut self.shards[0].tape;
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(0); // unused: no dropout forward only
        tape.reset(false);
        let mut qkv = Vec::new();
        let logits = self.model.forward_keeping_qkv(
            tape,
            &self.params,
            tokens,
            t,
            true,
            &mut rng,
            &mut qkv,
        )?; // (B, Vp)
        if b == 1 {
            let vals: Vec<&[f32]> = qkv.iter().map(|&q| tape.value(q)).collect();
            self.kv.fill(tokens, &vals, &self.model);
        }
        let all = tape.value(logits);
        Ok((0..b)
            .flat_map(|r| &all[r * vp..r * vp + v])
            .copied()
            .collect())
    }

    /// Each sequence decodes with its own cache, one after the other (one position each when
    /// it grew by a token or came again): the same logits as sampling each alone, at the same
    /// cost, without starting a cache over at every switch.
    fn last_logits_many(&mut self, seqs: &[&[u32]]) -> Result<Vec<f32>, EngineError> {
        if self.more_kv.len() + 1 < seqs.len() {
            self.more_kv.resize_with(seqs.len() - 1, Default::default);
        }
        let mut out = Vec::new();
        for (b, s) in seqs.iter().enumerate() {
            if b > 0 {
                std::mem::swap(&mut self.kv, &mut self.more_kv[b - 1]);
            }
            let row = self.last_logits(s, s.len());
            if b > 0 {
                std::mem::swap(&mut self.kv, &mut self.more_kv[b - 1]);
            }
            out.extend(row?);
        }
        Ok(out)
    }

    fn decodes_many(&self) -> bool {
        true
    }

    /// The shards' sum, then summed across the ranks: all of it (the norm measured again
    /// after), or under ZeRO-1 only this rank's block (reduce-scatter; the norm from the
    /// blocks' sums of squares).
    fn all_reduce_grads(&mut self, comm: &dyn Collective) -> Result<(), EngineError> {
        self.training()?;
        if comm.world() == 1 {
            return Ok(());
        }
        self.reduce();
        let dist = |e: crate::dist::DistError| EngineError(e.to_string());
        let grads = &mut self.shards[0].grads;
        let Some(z) = self.zero.as_mut() else {
            comm.all_reduce_sum_f32(grads).map_err(dist)?;
            self.reduced = Some(crate::optim::global_norm(grads));
            return Ok(());
        };
        let n = grads.len();
        grads.resize(z.block * comm.world(), 0.0); // padding, dropped below
        let r = comm.reduce_scatter_sum_f32(grads, &mut z.grads);
        grads.truncate(n);
        r.map_err(dist)?;
        let mut sq = [crate::optim::global_norm(&z.grads[..z.hi - z.lo]).powi(2)];
        comm.all_reduce_sum_f64(&mut sq).map_err(dist)?;
        self.reduced = Some(sq[0].sqrt());
        Ok(())
    }

    /// The forward pass over every position on the first shard's tape, then each position's
    /// log-softmax over the real vocabulary in f64.
    fn token_losses(
        &mut self,
        inputs: &[u32],
        targets: &[u32],
        t: usize,
    ) -> Result<Vec<f32>, EngineError> {
        let b = self.check_batch(inputs, Some(targets), t)?;
        let (v, vp) = (
            self.model.config.vocab_size,
            self.model.config.padded_vocab_size,
        );
        let tape = &mut self.shards[0].tape;
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(0); // unused: no dropout forward only
        tape.reset(false);
        let logits = self
            .model
            .forward(tape, &self.params, inputs, t, false, &mut rng)?; // (B·T, Vp)
        let all = tape.value(logits);
        Ok((0..b * t)
            .map(|i| {
                let row = &all[i * vp..i * vp + v];
                let mx = row.iter().fold(f32::NEG_INFINITY, |m, &x| m.max(x)) as f64;
                let lse = mx + row.iter().map(|&x| (x as f64 - mx).exp()).sum::<f64>().ln();
                (lse - row[targets[i] as usize] as f64) as f32
            })
            .collect())
    }

    fn params(&self) -> Result<Vec<f32>, EngineError> {
        Ok(self.params.clone())
    }

    fn optimizer_state(&self) -> Result<(Vec<f32>, Vec<f32>, u64), EngineError> {
        self.training()?;
        let opt = self.opt.as_ref().expect("checked by training()");
        let Some(z) = self.zero.as_ref() else {
            return Ok((opt.m.clone(), opt.v.clone(), opt.t));
        };
        // ZeRO-1: the blocks gathered from every rank.
        let n = self.params.len();
        let gather = |part: &[f32]| -> Result<Vec<f32>, EngineError> {
            let mut mine = part.to_vec();
            mine.resize(z.block, 0.0);
            let mut all = vec![0.0; z.block * z.comm.world()];
            z.comm
                .all_gather_f32(&mine, &mut all)
                .map_err(|e| EngineError(e.to_string()))?;
            all.truncate(n);
            Ok(all)
        };
        let m = gather(&opt.m)?;
        let v = match opt.kind {
            crate::config::OptimizerKind::AdamW => gather(&opt.v)?,
            crate::config::OptimizerKind::Sgd => Vec::new(),
        };
        Ok((m, v, opt.t))
    }
}
