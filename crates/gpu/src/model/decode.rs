//! Decoding with a key/value cache on the GPU: one sequence (batch 1), the prompt run once
//! through the ordinary forward pass (its keys and values copied into the cache), then one
//! position per step: each block's qkv product for the new row, its key and value appended to
//! the cache, and attention of its one query over the cached rows (`attn_decode`), the rest
//! the forward pass's own layers on one row. Without a cache every new token would run the
//! whole window again.
//!
//! The caches live beside the activations: per layer (maxT, KV·HS) keys and values in floatX,
//! allocated on the first `decode_start` and kept for the next sequence.
//!
//! A step's kernels take the new token and its position from a small device buffer (`step`),
//! so their arguments are the same at every position: the first step after `decode_start`
//! runs them while capturing a CUDA graph, and every later step uploads its token and
//! position and replays the graph, one launch instead of about a dozen a layer (for a small
//! model at batch 1, issuing the launches should cost the host more than the GPU's work; see
//! docs/gpu.md). The graph is dropped
//! when the activations are reallocated; `FERROGPT_GPU_GRAPHS=0` (or profiling) runs every
//! step eagerly, launch by launch. Both run the same kernels on the same buffers: the same
//! bits (tested).

use ferrogpt_cuda::CudaError;

use super::acts::Acts;
use super::forward::{block_site, Pass};
use super::launch::{self, DECODE_MAX_T};
use super::GpuModel;
use crate::raw::{Buf, DevPtr, Graph, X};

/// The key/value cache of one sequence.
pub(super) struct KvCache {
    k: Buf<X>, // (L, maxT, KV·HS)
    v: Buf<X>,
    /// {token, position} of the step being decoded, read by its kernels.
    step: Buf<i32>,
    /// The tokens cached so far, one per position.
    tokens: Vec<u32>,
    /// The captured decoding step, made by the first step after `decode_start` while the
    /// model's `graphs` is on.
    graph: Option<Graph>,
    /// Steps replayed from the graph since the model was made (for tests and `--timing`).
    replays: u64,
}

impl KvCache {
    /// Drops the captured step (its buffers are going away); the next step captures anew.
    pub(super) fn forget_graph(&mut self) {
        self.graph = None;
    }

    /// Layer `l`'s keys and values.
    fn layer(&self, l: usize, max_t: usize, kvw: usize) -> (DevPtr<X>, DevPtr<X>) {
        let per = max_t * kvw;
        (
            self.k.ptr().slice(l * per, per),
            self.v.ptr().slice(l * per, per),
        )
    }
}

impl GpuModel {
    /// Starts a sequence: runs `prompt` through the model and caches its keys and values.
    /// Returns the logits (V, f32) of its last position. Errors: an empty prompt, one longer
    /// than the block size, a block size beyond the decoding kernel's 4096 positions, ids
    /// beyond the vocabulary, CUDA failures.
    pub fn decode_start(&mut self, prompt: &[u32]) -> Result<Vec<f32>, CudaError> {
        let (t, bs) = (prompt.len(), self.config.block_size);
        if bs > DECODE_MAX_T {
            return Err(CudaError::Input(format!(
                "decoding with a key/value cache on the GPU takes block sizes up to {DECODE_MAX_T}, this model has {bs}"
            )));
        }
        if t == 0 || t > bs {
            return Err(CudaError::Input(format!(
                "a prompt of {t} tokens (1 to the block size {bs})"
            )));
        }
        if self.kv.is_none() {
            let elems = self.config.n_layer * bs * self.kv_width();
            self.kv = Some(KvCache {
                k: Buf::new(&self.dev, elems)?,
                v: Buf::new(&self.dev, elems)?,
                step: Buf::new(&self.dev, 2)?,
                tokens: Vec::new(),
                graph: None,
                replays: 0,
            });
        }
        // The prompt's forward pass may reallocate the activations the graph writes (ensure()
        // then forgets it); a new sequence captures anew anyway, which costs one eager step.
        self.kv.as_mut().expect("made above").forget_graph();
        self.forward(prompt, None, t, 0.0, 0, 0.0, 0, false, false)?;
        let (a, kv) = (self.acts.as_ref().expect("forward ran"), self.kv_cache());
        for (l, la) in a.layers.iter().enumerate() {
            let (kc, vc) = kv.layer(l, bs, self.kv_width());
            launch::kv_append(&self.dev, kc, vc, la.qkv, t, 0, None, self.flash())?;
        }
        let logits = self.logits_row(a, t - 1)?;
        self.kv.as_mut().expect("made above").tokens = prompt.to_vec();
        Ok(logits)
    }

    /// Appends `token` to the sequence `decode_start` began; returns the logits (V, f32) of
    /// its position. Errors: no sequence started, the block size reached, an id beyond the
    /// vocabulary, CUDA failures.
    pub fn decode_next(&mut self, token: u32) -> Result<Vec<f32>, CudaError> {
        let bs = self.config.block_size;
        let pos = match &self.kv {
            Some(kv) if !kv.tokens.is_empty() => kv.tokens.len(),
            _ => return Err(CudaError::Input("decode_next before decode_start".into())),
        };
        if pos >= bs {
            return Err(CudaError::Input(format!(
                "the sequence has reached the block size ({bs}); start a new one"
            )));
        }
        let v = self.config.vocab_size;
        if token as usize >= v {
            return Err(CudaError::Input(format!(
                "token id {token} is beyond the vocabulary ({v} tokens)"
            )));
        }
        // Checked above: the token is inside the embedding table and pos below the block
        // size, the caches' and position tables' rows, which the step's kernels rely on.
        let kv = self.kv_cache();
        self.dev.htod(kv.step.ptr(), &[token as i32, pos as i32])?;
        let replayed = match (&kv.graph, self.graphs) {
            (Some(g), _) => {
                self.dev.replay(g)?;
                true
            }
            (None, true) => match self.dev.capture(|| self.decode_step()) {
                Ok(g) => {
                    self.dev.replay(&g)?;
                    self.kv.as_mut().expect("checked above").graph = Some(g);
                    true
                }
                Err(_) => {
                    // A capture the driver refused (or profiling): eager from now on.
                    self.graphs = false;
                    self.decode_step()?;
                    false
                }
            },
            (None, false) => {
                self.decode_step()?;
                false
            }
        };
        let a = self.acts.as_ref().expect("decode_start ran a forward pass");
        let logits = self.logits_row(a, 0)?;
        let kv = self.kv.as_mut().expect("checked above");
        kv.tokens.push(token);
        kv.replays += u64::from(replayed);
        Ok(logits)
    }

    /// One decoding step's kernels, for the token and position in the cache's `step` buffer:
    /// the logits of that position in row 0 of the activations' logits.
    fn decode_step(&self) -> Result<(), CudaError> {
        let (bs, c, w) = (
            self.config.block_size,
            self.config.n_embd,
            self.config.qkv_width(),
        );
        let d = &self.dev;
        let a = self.acts.as_ref().expect("decode_start ran a forward pass");
        let ps = Pass {
            n: 1,
            t: 1,
            p: 0.0,
            seed: 0,
        };
        let l = &self.layout;
        let (kv, flash) = (self.kv_cache(), self.flash());
        let step = kv.step.ptr();
        launch::embed_step(d, a.x0, step, self.w(l.wte), l.wpe.map(|p| self.w(p)), c)?;
        let mut resid = a.x0;
        for (li, (blk, la)) in l.blocks.iter().zip(&a.layers).enumerate() {
            self.norm_forward(la.ln1, la.ln1_s, resid, blk.ln_1_w, blk.ln_1_b, 1)?;
            self.linear(la.qkv, la.ln1, blk.attn_w, blk.attn_b, 1, c, w)?;
            if let Some(r) = self.rope() {
                launch::rope(d, la.qkv, r, 1, 1, false, Some(step.slice(1, 1)))?;
            }
            let (kc, vc) = kv.layer(li, bs, self.kv_width());
            launch::kv_append(d, kc, vc, la.qkv, 1, 0, Some((step, bs)), flash)?;
            launch::attn_decode(d, la.atty, la.qkv, kc, vc, step, bs, flash)?;
            self.linear(a.proj, la.atty, blk.attn_proj_w, None, 1, c, c)?;
            let bias = blk.attn_proj_b.map(|b| self.w(b));
            launch::residual_forward(d, la.res2, resid, a.proj, bias, 1, c, 0.0, 0)?;
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

    /// The tokens of the current sequence, one per cached position (none before
    /// `decode_start`).
    pub fn decoded_tokens(&self) -> &[u32] {
        self.kv.as_ref().map_or(&[], |kv| &kv.tokens)
    }

    fn kv_cache(&self) -> &KvCache {
        self.kv.as_ref().expect("the cache is made by decode_start")
    }

    /// Elements of one cached position of one layer: KV·HS.
    fn kv_width(&self) -> usize {
        self.config.kv_heads() * self.config.head_size()
    }

    /// The V logits of row `row` of the last forward pass, as f32.
    fn logits_row(&self, a: &Acts, row: usize) -> Result<Vec<f32>, CudaError> {
        let (vp, v) = (self.config.padded_vocab_size, self.config.vocab_size);
        self.download_x(a.logits.slice(row * vp, v))
    }
}
