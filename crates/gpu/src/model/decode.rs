//! Decoding with a key/value cache on the GPU, for B sequences at once (batch 1 is one of
//! them): each prompt run once through the ordinary forward pass (its keys and values copied
//! into its sequence's cache), then one position a sequence per step: the B new rows through
//! each block's qkv product, their keys and values appended to their caches, and attention of
//! each one query over its own cached rows (`attn_decode`, sequences of different lengths
//! side by side), the rest the forward pass's own layers on B rows. Without a cache every new
//! token would run the whole window again.
//!
//! The caches live beside the activations: per layer B slabs of (maxT, KV·HS) keys and values
//! in floatX, allocated on the first `decode_start` for that many sequences and kept for the
//! next ones (reallocated only for more sequences).
//!
//! A step's kernels take the new tokens and their positions from a small device buffer
//! (`step`, B pairs), so their arguments are the same at every position: the first step after
//! `decode_start` runs them while capturing a CUDA graph, and every later step uploads its
//! tokens and positions and replays the graph, one launch instead of about a dozen a layer
//! (for a small model at batch 1, issuing the launches should cost the host more than the
//! GPU's work; see docs/gpu.md). The graph is dropped
//! when the activations are reallocated; `FERROGPT_GPU_GRAPHS=0` (or profiling) runs every
//! step eagerly, launch by launch. Both run the same kernels on the same buffers: the same
//! bits (tested).

use ferrogpt_cuda::CudaError;

use super::acts::Acts;
use super::forward::{block_site, Pass};
use super::launch::{self, DECODE_MAX_T};
use super::GpuModel;
use crate::raw::{Buf, DevPtr, Graph, X};

/// The key/value caches of the sequences being decoded.
pub(super) struct KvCache {
    k: Buf<X>, // (L, cap, maxT, KV·HS)
    v: Buf<X>,
    /// Sequences the caches and `step` have room for.
    cap: usize,
    /// {token, position} of each sequence in the step being decoded, read by its kernels.
    step: Buf<i32>,
    /// The tokens cached so far, one per position, of each sequence (none before the first
    /// `decode_start`).
    seqs: Vec<Vec<u32>>,
    /// The captured decoding step (of `seqs.len()` sequences), made by the first step after
    /// `decode_start` while the model's `graphs` is on.
    graph: Option<Graph>,
    /// Steps replayed from the graph since the model was made (for tests and `--timing`).
    replays: u64,
}

impl KvCache {
    /// Drops the captured step (its buffers are going away); the next step captures anew.
    pub(super) fn forget_graph(&mut self) {
        self.graph = None;
    }

    /// Layer `l`'s keys and values: `cap` slabs of `max_t` rows of `kvw`.
    fn layer(&self, l: usize, max_t: usize, kvw: usize) -> (DevPtr<X>, DevPtr<X>) {
        let per = self.cap * max_t * kvw;
        (
            self.k.ptr().slice(l * per, per),
            self.v.ptr().slice(l * per, per),
        )
    }
}

impl GpuModel {
    /// Starts a sequence: runs `prompt` through the model and caches its keys and values.
    /// Returns the logits (V, f32) of its last position. Errors: as
    /// [`GpuModel::decode_start_many`].
    pub fn decode_start(&mut self, prompt: &[u32]) -> Result<Vec<f32>, CudaError> {
        self.decode_start_many(&[prompt])
    }

    /// Appends `token` to the one sequence `decode_start` began; returns the logits (V, f32) of
    /// its position. Errors: as [`GpuModel::decode_next_many`].
    pub fn decode_next(&mut self, token: u32) -> Result<Vec<f32>, CudaError> {
        self.decode_next_many(&[Some(token)])
    }

    /// Starts B sequences at once, one per prompt (of any lengths): runs each prompt through
    /// the model and caches its keys and values. Returns the logits of each prompt's last
    /// position, B × V f32 values, sequence after sequence. Errors: no prompts, an empty
    /// prompt, one longer than the block size, a block size beyond the decoding kernel's 4096
    /// positions, ids beyond the vocabulary, CUDA failures (the memory for B caches among
    /// them).
    pub fn decode_start_many(&mut self, prompts: &[&[u32]]) -> Result<Vec<f32>, CudaError> {
        let (nb, bs) = (prompts.len(), self.config.block_size);
        if bs > DECODE_MAX_T {
            return Err(CudaError::Input(format!(
                "decoding with a key/value cache on the GPU takes block sizes up to {DECODE_MAX_T}, this model has {bs}"
            )));
        }
        if nb == 0 {
            return Err(CudaError::Input(
                "decoding needs at least one prompt".into(),
            ));
        }
        if let Some(p) = prompts.iter().find(|p| p.is_empty() || p.len() > bs) {
            return Err(CudaError::Input(format!(
                "a prompt of {} tokens (1 to the block size {bs})",
                p.len()
            )));
        }
        if self.kv.as_ref().is_none_or(|kv| kv.cap < nb) {
            self.kv = None; // free the smaller caches first
            let elems = self.config.n_layer * nb * bs * self.kv_width();
            let alloc = |what: &str| {
                Buf::new(&self.dev, elems).map_err(|e| {
                    CudaError::Input(format!(
                        "the {what} cache of {nb} sequences ({:.2} GB): {e}",
                        (elems * self.dev.dtype.size()) as f64 / 1e9
                    ))
                })
            };
            let (k, v) = (alloc("key")?, alloc("value")?);
            self.kv = Some(KvCache {
                k,
                v,
                cap: nb,
                step: Buf::new(&self.dev, 2 * nb)?,
                seqs: Vec::new(),
                graph: None,
                replays: 0,
            });
        }
        // The prompts' forward passes may reallocate the activations the graph writes
        // (ensure() then forgets it); a new batch captures anew anyway, which costs one eager
        // step.
        let kv = self.kv.as_mut().expect("made above");
        kv.forget_graph();
        kv.seqs.clear();
        let kvw = self.kv_width();
        let mut logits = Vec::with_capacity(nb * self.config.vocab_size);
        for (b, prompt) in prompts.iter().enumerate() {
            let t = prompt.len();
            self.forward(prompt, None, t, 0.0, 0, 0.0, 0, false, false)?;
            let (a, kv) = (self.acts.as_ref().expect("forward ran"), self.kv_cache());
            for (l, la) in a.layers.iter().enumerate() {
                let (kc, vc) = kv.layer(l, bs, kvw);
                let slab = |c: DevPtr<X>| c.slice(b * bs * kvw, bs * kvw);
                launch::kv_append(
                    &self.dev,
                    slab(kc),
                    slab(vc),
                    la.qkv,
                    t,
                    0,
                    None,
                    self.flash(),
                )?;
            }
            logits.extend(self.logits_rows(a, t - 1, 1)?);
        }
        // A step runs B rows through the activations.
        self.ensure(nb)?;
        self.kv.as_mut().expect("made above").seqs = prompts.iter().map(|p| p.to_vec()).collect();
        Ok(logits)
    }

    /// Appends one token to each of the sequences `decode_start_many` (or `decode_start`)
    /// began, `tokens[b]` to sequence b, or holds sequence b where it is (None: one that has
    /// ended while others go on; its last position is computed again, to the same values);
    /// returns the logits of each one's new (or held) position, B × V f32 values. Errors: no
    /// sequences started, a different number of tokens, a sequence at the block size, an id
    /// beyond the vocabulary, CUDA failures.
    pub fn decode_next_many(&mut self, tokens: &[Option<u32>]) -> Result<Vec<f32>, CudaError> {
        let (bs, v) = (self.config.block_size, self.config.vocab_size);
        let seqs = match &self.kv {
            Some(kv) if !kv.seqs.is_empty() => &kv.seqs,
            _ => return Err(CudaError::Input("decode_next before decode_start".into())),
        };
        let nb = seqs.len();
        if tokens.len() != nb {
            return Err(CudaError::Input(format!(
                "{} tokens for {nb} sequences being decoded",
                tokens.len()
            )));
        }
        if seqs
            .iter()
            .zip(tokens)
            .any(|(s, t)| t.is_some() && s.len() >= bs)
        {
            return Err(CudaError::Input(format!(
                "a sequence has reached the block size ({bs}); start a new one"
            )));
        }
        if let Some(t) = tokens.iter().flatten().find(|&&t| t as usize >= v) {
            return Err(CudaError::Input(format!(
                "token id {t} is beyond the vocabulary ({v} tokens)"
            )));
        }
        // Checked above: the tokens are inside the embedding table and the positions below the
        // block size, the caches' and position tables' rows, which the step's kernels rely on.
        // A held sequence runs its last token at its last position again.
        let step: Vec<i32> = tokens
            .iter()
            .zip(seqs)
            .flat_map(|(&t, s)| match t {
                Some(t) => [t as i32, s.len() as i32],
                None => [s[s.len() - 1] as i32, s.len() as i32 - 1],
            })
            .collect();
        let kv = self.kv_cache();
        self.dev.htod(kv.step.ptr().slice(0, 2 * nb), &step)?;
        let replayed = match (&kv.graph, self.graphs) {
            (Some(g), _) => {
                self.dev.replay(g)?;
                true
            }
            (None, true) => match self.dev.capture(|| self.decode_step(nb)) {
                Ok(g) => {
                    self.dev.replay(&g)?;
                    self.kv.as_mut().expect("checked above").graph = Some(g);
                    true
                }
                Err(e) => {
                    // A capture the driver refused (or profiling): eager from now on.
                    eprintln!("ferrogpt: note: decoding without CUDA graphs ({e})");
                    self.graphs = false;
                    self.decode_step(nb)?;
                    false
                }
            },
            (None, false) => {
                self.decode_step(nb)?;
                false
            }
        };
        let a = self.acts.as_ref().expect("decode_start ran a forward pass");
        let logits = self.logits_rows(a, 0, nb)?;
        let kv = self.kv.as_mut().expect("checked above");
        for (s, &t) in kv.seqs.iter_mut().zip(tokens) {
            s.extend(t);
        }
        kv.replays += u64::from(replayed);
        Ok(logits)
    }

    /// One decoding step's kernels for `nb` sequences, their tokens and positions in the
    /// cache's `step` buffer: the logits of those positions in rows 0 .. nb of the
    /// activations' logits.
    fn decode_step(&self, nb: usize) -> Result<(), CudaError> {
        let (bs, c, w) = (
            self.config.block_size,
            self.config.n_embd,
            self.config.qkv_width(),
        );
        let d = &self.dev;
        let a = self.acts.as_ref().expect("decode_start ran a forward pass");
        let ps = Pass {
            n: nb,
            t: 1,
            p: 0.0,
            seed: 0,
        };
        let l = &self.layout;
        let (kv, flash) = (self.kv_cache(), self.flash());
        let step = kv.step.ptr().slice(0, 2 * nb);
        let wpe = l.wpe.map(|p| self.w(p));
        launch::embed_step(d, a.x0, step, self.w(l.wte), wpe, nb, c)?;
        let mut resid = a.x0;
        for (li, (blk, la)) in l.blocks.iter().zip(&a.layers).enumerate() {
            self.norm_forward(la.ln1, la.ln1_s, resid, blk.ln_1_w, blk.ln_1_b, nb)?;
            self.linear(la.qkv, la.ln1, blk.attn_w, blk.attn_b, nb, c, w)?;
            if let Some(r) = self.rope() {
                let pos_at = step.slice(1, 2 * nb - 1);
                launch::rope(d, la.qkv, r, nb, 1, false, Some(pos_at))?;
            }
            let (kc, vc) = kv.layer(li, bs, self.kv_width());
            launch::kv_append(d, kc, vc, la.qkv, nb, 0, Some((step, bs)), flash)?;
            launch::attn_decode(d, la.atty, la.qkv, kc, vc, step, nb, bs, flash)?;
            self.linear(a.proj, la.atty, blk.attn_proj_w, None, nb, c, c)?;
            let bias = blk.attn_proj_b.map(|b| self.w(b));
            launch::residual_forward(d, la.res2, resid, a.proj, bias, nb, c, 0.0, 0)?;
            self.mlp_forward(a, blk, la, ps, block_site(li))?;
            resid = la.res3;
        }
        self.head_forward(a, resid, ps)
    }

    /// Whether decoding steps capture one CUDA graph and replay it (the default; off with
    /// `FERROGPT_GPU_GRAPHS=0`) or launch their kernels one by one. Takes effect at the next
    /// step.
    pub fn set_decode_graphs(&mut self, on: bool) {
        self.graphs = on;
        if let Some(kv) = &mut self.kv {
            kv.forget_graph();
        }
    }

    /// Decoding steps replayed from a captured CUDA graph so far (0 when graphs are off or
    /// their capture failed: then every step ran eagerly).
    pub fn decode_graph_replays(&self) -> u64 {
        self.kv.as_ref().map_or(0, |kv| kv.replays)
    }

    /// Whether this model can decode with a cache (its block size within `attn_decode`'s).
    pub fn can_decode(&self) -> bool {
        self.config.block_size <= DECODE_MAX_T
    }

    /// The tokens of the current sequence (the first, when several are decoded), one per
    /// cached position (none before `decode_start`).
    pub fn decoded_tokens(&self) -> &[u32] {
        self.kv
            .as_ref()
            .and_then(|kv| kv.seqs.first())
            .map_or(&[], Vec::as_slice)
    }

    /// The tokens of every sequence being decoded (none before `decode_start`).
    pub fn decoded_sequences(&self) -> &[Vec<u32>] {
        self.kv.as_ref().map_or(&[], |kv| &kv.seqs)
    }

    fn kv_cache(&self) -> &KvCache {
        self.kv.as_ref().expect("the cache is made by decode_start")
    }

    /// Elements of one cached position of one layer: KV·HS.
    fn kv_width(&self) -> usize {
        self.config.kv_heads() * self.config.head_size()
    }

    /// The V logits of rows `row .. row + n` of the last forward pass, as f32, row after row
    /// (the padding columns dropped in place: no copy per row).
    fn logits_rows(&self, a: &Acts, row: usize, n: usize) -> Result<Vec<f32>, CudaError> {
        let (vp, v) = (self.config.padded_vocab_size, self.config.vocab_size);
        let mut all = self.download_x(a.logits.slice(row * vp, n * vp))?;
        for r in 1..n {
            all.copy_within(r * vp..r * vp + v, r * v);
        }
        all.truncate(n * v);
        Ok(all)
    }
}
