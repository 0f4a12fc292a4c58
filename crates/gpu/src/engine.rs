//! [`GpuEngine`]: the training loop's `Engine` on one GPU (`--device cuda[:N]`).
//!
//! A thin adapter over [`GpuModel`]: gradient clipping measures the norm on the GPU (one f32
//! back to the host) and folds the clip factor into the next optimizer pass, so clipping
//! costs no extra sweep over the gradients.

use ferrogpt_cuda::{CudaError, Gpu};
use ferrogpt_train::config::{OptimizerKind, TrainConfig};
use ferrogpt_train::engine::{extension, Engine, EngineError, EngineFactory, EngineInit};

use crate::model::{GpuModel, OptKind, OptState, Update};
use crate::nccl::Nccl;
use crate::Dtype;
use ferrogpt_train::dist::Collective;

fn err(e: CudaError) -> EngineError {
    EngineError(e.to_string())
}

/// A [`GpuModel`] behind the `Engine` trait.
pub struct GpuEngine {
    /// The communicator that sums the gradients of a data-parallel run, made on the first sum.
    /// First: it goes before the model (and the GPU context the model holds).
    nccl: Option<Nccl>,
    model: GpuModel,
    ordinal: usize,
    /// Gradient scale for the next update (the clip factor).
    gscale: f32,
}

impl GpuEngine {
    /// Opens GPU `ordinal` and uploads the model of `init`, recomputing activations at level
    /// `recompute` (see [`GpuModel::set_recompute`]).
    pub fn new(
        ordinal: usize,
        dtype: Dtype,
        recompute: u8,
        init: EngineInit<'_>,
    ) -> Result<GpuEngine, EngineError> {
        if init.train.as_ref().is_some_and(|t| t.zero.is_some()) {
            return Err(EngineError(
                "ZeRO-1 on GPUs is not implemented yet (data-parallel GPU runs take --zero 0)"
                    .into(),
            ));
        }
        let gpu = Gpu::new(ordinal).map_err(err)?;
        let layout = &init.model.layout;
        let opt = init.train.map(|t| {
            let kind = match t.cfg.optimizer {
                OptimizerKind::AdamW => OptKind::AdamW,
                OptimizerKind::Sgd => OptKind::Sgd,
            };
            OptState {
                kind,
                m: t.m,
                v: t.v,
                t: t.opt_t,
                decay: layout.decay_mask(),
            }
        });
        let mut model =
            GpuModel::new(gpu, dtype, init.model.config.clone(), &init.params, opt).map_err(err)?;
        model.set_recompute(recompute).map_err(err)?;
        Ok(GpuEngine {
            model,
            ordinal,
            gscale: 1.0,
            nccl: None,
        })
    }

    /// A factory for the CLI: every engine it makes runs on GPU `ordinal` in `dtype`, with
    /// activation recomputation level `recompute`.
    pub fn factory(ordinal: usize, dtype: Dtype, recompute: u8) -> Box<EngineFactory<'static>> {
        Box::new(move |init| {
            Ok(Box::new(GpuEngine::new(ordinal, dtype, recompute, init)?) as Box<dyn Engine>)
        })
    }

    /// The model underneath (memory report, profile, decoding state).
    pub fn model(&self) -> &GpuModel {
        &self.model
    }
}

impl Engine for GpuEngine {
    fn describe(&self) -> String {
        let graphs = match self.model.decode_graph_replays() {
            0 => String::new(),
            n => format!(", {n} decoding steps replayed from a CUDA graph"),
        };
        format!("cuda:{} {}{graphs}", self.ordinal, self.model.describe())
    }

    fn memory(&self) -> Option<String> {
        self.model.memory().ok().map(|m| m.to_string())
    }

    fn zero_grads(&mut self) -> Result<(), EngineError> {
        self.model.zero_grads().map_err(err)
    }

    fn accumulate(
        &mut self,
        inputs: &[u32],
        targets: &[u32],
        t: usize,
        scale: f32,
        seed: u64,
    ) -> Result<f64, EngineError> {
        self.model
            .accumulate(inputs, targets, t, scale, seed)
            .map_err(err)
    }

    fn clip_grads(&mut self, max_norm: f64) -> Result<f64, EngineError> {
        let norm = self.model.grad_norm().map_err(err)?;
        self.gscale = 1.0;
        if max_norm > 0.0 {
            let factor = max_norm / (norm + 1e-6);
            if factor < 1.0 {
                self.gscale = factor as f32;
            }
        }
        Ok(norm)
    }

    fn update(&mut self, lr: f64, cfg: &TrainConfig) -> Result<(), EngineError> {
        let u = Update {
            lr,
            beta1: cfg.beta1,
            beta2: cfg.beta2,
            eps: cfg.eps,
            weight_decay: cfg.weight_decay,
            momentum: cfg.momentum,
        };
        let r = self.model.update(&u, self.gscale).map_err(err);
        self.gscale = 1.0;
        r
    }

    fn losses(
        &mut self,
        batches: &[(Vec<u32>, Vec<u32>)],
        t: usize,
    ) -> Result<Vec<f64>, EngineError> {
        self.model.losses(batches, t).map_err(err)
    }

    fn token_losses(
        &mut self,
        inputs: &[u32],
        targets: &[u32],
        t: usize,
    ) -> Result<Vec<f32>, EngineError> {
        self.model.token_losses(inputs, targets, t).map_err(err)
    }

    /// One sequence (B = 1) decodes with the key/value cache, as the CPU engine's does: a
    /// window that extends the last one by a token costs one position; any other window starts
    /// the cache over from it (the prompt, or a window that slid past the block size).
    fn last_logits(&mut self, tokens: &[u32], t: usize) -> Result<Vec<f32>, EngineError> {
        let m = &mut self.model;
        if tokens.len() != t || !m.can_decode() {
            return m.last_logits(tokens, t).map_err(err);
        }
        let r = match extension(m.decoded_tokens(), tokens) {
            Some(&[next]) => m.decode_next(next),
            _ => m.decode_start(tokens),
        };
        r.map_err(err)
    }

    /// Several sequences decode side by side, each with its own cache: when every window
    /// extends the last call's by one token or equals it (a sequence that has ended, held
    /// where it is), one step of them all; otherwise the caches start over from the windows.
    fn last_logits_many(&mut self, seqs: &[&[u32]]) -> Result<Vec<f32>, EngineError> {
        let m = &mut self.model;
        if !m.can_decode() {
            let mut out = Vec::new();
            for s in seqs {
                out.extend(m.last_logits(s, s.len()).map_err(err)?);
            }
            return Ok(out);
        }
        let cached = m.decoded_sequences();
        let step: Option<Vec<Option<u32>>> = (cached.len() == seqs.len())
            .then(|| {
                seqs.iter()
                    .zip(cached)
                    .map(|(s, c)| match extension(c, s) {
                        Some(&[next]) => Some(Some(next)),
                        Some(_) => None,
                        None => (*s == c.as_slice()).then_some(None),
                    })
                    .collect()
            })
            .flatten()
            .filter(|t: &Vec<Option<u32>>| t.iter().any(Option::is_some));
        match step {
            Some(tokens) => m.decode_next_many(&tokens),
            None => m.decode_start_many(seqs),
        }
        .map_err(err)
    }

    fn decodes_many(&self) -> bool {
        self.model.can_decode()
    }

    /// NCCL's in-place sum of the gradient buffer, on the model's stream. The communicator is
    /// made on the first call: rank 0's NCCL id broadcast through `comm` (MPI, or NCCL itself
    /// for ranks started torchrun-style).
    fn all_reduce_grads(&mut self, comm: &dyn Collective) -> Result<(), EngineError> {
        if !comm.distributed() {
            return Ok(());
        }
        if self.nccl.is_none() {
            let mut id = [0u8; crate::nccl::ID_BYTES];
            if comm.rank() == 0 {
                id = Nccl::unique_id().map_err(err)?;
            }
            comm.broadcast_bytes(0, &mut id)
                .map_err(|e| EngineError(e.to_string()))?;
            let nccl = Nccl::init(self.model.gpu(), &id, comm.rank(), comm.world()).map_err(err)?;
            self.nccl = Some(nccl);
        }
        let nccl = self.nccl.as_ref().expect("made above");
        self.model.all_reduce_grads(nccl).map_err(err)?;
        // Done before the trainer's own collectives (another communicator, another stream):
        // two communicators' work in flight at once may deadlock across ranks.
        self.model.synchronize().map_err(err)
    }

    fn params(&self) -> Result<Vec<f32>, EngineError> {
        self.model.params().map_err(err)
    }

    fn optimizer_state(&self) -> Result<(Vec<f32>, Vec<f32>, u64), EngineError> {
        self.model.optimizer_state().map_err(err)
    }
}
