//! Incremental decoding on the CPU: the keys and values of the positions already seen are kept,
//! so each new token costs one position's forward pass instead of the whole window's.
//!
//! The same function as [`crate::Gpt::forward`] for one sequence, written out for a single new
//! position (no tape, no dropout), for every family: the embedding (plus the learned
//! position); per block the first norm, the qkv projection (the new position's keys rotated
//! where positions are rotary, its k and v appended to the cache), causal attention of each
//! query head over every cached key of its key/value head, the output projection added to the
//! residual, the second norm, the MLP (GELU or SwiGLU), its output projection added to the
//! residual; the final norm and the LM head. The cache follows the token sequence it was built
//! for: a call whose tokens extend that sequence computes only the new positions; one that
//! diverges (a sliding window, another prompt) recomputes from the first differing position.
//!
//! Two ways to do the products, one loop (`Products`):
//! * [`KvCache::logits`], the reference: plain loops over the flat f32 parameters in the
//!   model's own layout, one thread.
//! * [`KvCache::decode`], the fast path: every matrix product a multithreaded SIMD GEMV
//!   (`ferrogpt_gemm::gemv`) over [`DecodeWeights`] (bf16 or int8 converted and stored (out,
//!   in); f32 read in place from the parameters, in the family's own layout), the
//!   bias and the residual added in the GEMV's epilogue; attention with the GEMV crate's
//!   vector dot products and weighted row sums, heads split over threads on long contexts.
//!   Norms, rotary positions, GELU/SwiGLU and the softmax are the same code in both.
//!
//! Precision: f32 throughout; bf16 and int8 weights as [`ferrogpt_gemm::gemv`] states (int8
//! also quantizes each product's input vector per block of 32).

// The weight formats live in `crate::quant`; the old paths stay for existing callers.
pub use crate::quant::{self, DecodeWeights};

use crate::config::Family;
use crate::quant::Weight;
use crate::{Gpt, ModelError, ParamLayout};
use ferrogpt_core::fastmath;
use ferrogpt_core::ops::rope;
use ferrogpt_core::Param;
use ferrogpt_gemm::gemv;
use ferrogpt_gemm::GemmError;
use rayon::prelude::*;

/// Keys and values of each block for the positions of `tokens` (each `(T, KV·HS)`, row-major).
#[derive(Clone, Debug, Default)]
pub struct KvCache {
    tokens: Vec<u32>,
    k: Vec<Vec<f32>>,
    v: Vec<Vec<f32>>,
}

/// Below this many multiply-adds (positions × heads × head size) the attention of one block
/// runs its heads on one thread.
const PARALLEL_ATTENTION_MACS: usize = 1 << 16;

/// How the decoding loop multiplies (module doc).
#[derive(Clone, Copy)]
enum Products<'a> {
    /// The reference: the flat parameters, `out_in` their layout.
    Plain { params: &'a [f32], out_in: bool },
    /// The GEMV kernels over converted matrices.
    Fast(&'a DecodeWeights),
}

/// Which matrix of a block.
#[derive(Clone, Copy)]
enum Which {
    Qkv,
    Proj,
    Fc,
    FcProj,
}

/// out = x · W + bias (or out += ..., `accumulate`): W (in, out) row-major (GPT-2's Conv1D) or,
/// with `out_in`, (out, in) (nn.Linear's layout). The plain reference loop.
#[allow(clippy::too_many_arguments)]
fn vecmat(
    out: &mut [f32],
    x: &[f32],
    params: &[f32],
    w: Param,
    bias: Option<Param>,
    out_in: bool,
    accumulate: bool,
) {
    let wv = &params[w.range()];
    let mut y = vec![0f32; out.len()];
    if out_in {
        for (r, o) in y.iter_mut().enumerate() {
            let row = &wv[r * w.cols..(r + 1) * w.cols];
            *o = row.iter().zip(x).map(|(a, b)| a * b).sum::<f32>();
        }
    } else {
        let cols = w.cols;
        for (i, &xi) in x.iter().enumerate() {
            let row = &wv[i * cols..(i + 1) * cols];
            y.iter_mut().zip(row).for_each(|(o, &r)| *o += xi * r);
        }
    }
    if let Some(b) = bias {
        y.iter_mut()
            .zip(&params[b.range()])
            .for_each(|(o, b)| *o += b);
    }
    for (o, y) in out.iter_mut().zip(y) {
        *o = if accumulate { *o + y } else { y };
    }
}

/// LayerNorm (with a bias) or RMSNorm (without, ε = `eps`).
fn norm(out: &mut [f32], x: &[f32], params: &[f32], w: Param, b: Option<Param>, eps: f64) {
    let n = x.len() as f32;
    let w = &params[w.range()];
    let Some(b) = b else {
        let ms = x.iter().map(|v| v * v).sum::<f32>() / n;
        let rstd = 1.0 / (ms + eps as f32).sqrt();
        for i in 0..x.len() {
            out[i] = x[i] * rstd * w[i];
        }
        return;
    };
    let mean = x.iter().sum::<f32>() / n;
    let var = x.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / n;
    let rstd = 1.0 / (var + ferrogpt_core::ops::layernorm::EPS as f32).sqrt();
    let b = &params[b.range()];
    for i in 0..x.len() {
        out[i] = (x[i] - mean) * rstd * w[i] + b[i];
    }
}

/// In place: scores → softmax weights (max subtracted, `fastmath::exp`), divided by their sum.
fn softmax(s: &mut [f32]) {
    let m = s.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut z = 0.0;
    for sj in s.iter_mut() {
        *sj = fastmath::exp(*sj - m);
        z += *sj;
    }
    let inv = 1.0 / z;
    s.iter_mut().for_each(|sj| *sj *= inv);
}

impl Products<'_> {
    /// out (+)= x·W + bias for matrix `which` of block `li`.
    #[allow(clippy::too_many_arguments)]
    fn linear(
        self,
        model: &Gpt,
        params: &[f32],
        li: usize,
        which: Which,
        x: &[f32],
        out: &mut [f32],
        accumulate: bool,
    ) -> Result<(), GemmError> {
        let blk = &model.layout.blocks[li];
        let (w, b) = match which {
            Which::Qkv => (blk.attn_w, blk.attn_b),
            Which::Proj => (blk.attn_proj_w, blk.attn_proj_b),
            Which::Fc => (blk.fc_w, blk.fc_b),
            Which::FcProj => (blk.fc_proj_w, blk.fc_proj_b),
        };
        match self {
            Products::Plain { params, out_in } => {
                vecmat(out, x, params, w, b, out_in, accumulate);
                Ok(())
            }
            Products::Fast(dw) => {
                let m = &dw.blocks[li];
                let m: &Weight = match which {
                    Which::Qkv => &m.qkv,
                    Which::Proj => &m.proj,
                    Which::Fc => &m.fc,
                    Which::FcProj => &m.fc_proj,
                };
                let bias = b.map(|b| &params[b.range()]);
                m.gemv(dw.kernel(), params, x, out, bias, accumulate)
            }
        }
    }

    /// Causal attention of the new position (its queries in `q`, (NH·HS)) over the `n` cached
    /// positions `ks`, `vs` ((n, KV·HS)) into `att` (NH·HS).
    #[allow(clippy::too_many_arguments)]
    fn attend(
        self,
        q: &[f32],
        ks: &[f32],
        vs: &[f32],
        n: usize,
        (nh, kv, hs): (usize, usize, usize),
        att: &mut [f32],
    ) {
        let kvw = kv * hs;
        let group = nh / kv;
        let scale = 1.0 / (hs as f32).sqrt();
        match self {
            Products::Plain { .. } => {
                let mut s = vec![0f32; n];
                for hd in 0..nh {
                    let q = &q[hd * hs..(hd + 1) * hs];
                    let kv_off = (hd / group) * hs;
                    for (j, sj) in s.iter_mut().enumerate() {
                        let kj = &ks[j * kvw + kv_off..][..hs];
                        *sj = q.iter().zip(kj).map(|(a, b)| a * b).sum::<f32>() * scale;
                    }
                    softmax(&mut s);
                    let o = &mut att[hd * hs..(hd + 1) * hs];
                    o.fill(0.0);
                    for (j, &sj) in s.iter().enumerate() {
                        let vj = &vs[j * kvw + kv_off..][..hs];
                        o.iter_mut().zip(vj).for_each(|(o, &v)| *o += sj * v);
                    }
                }
            }
            Products::Fast(dw) => {
                let kernel = dw.kernel();
                let head = |(hd, o): (usize, &mut [f32])| {
                    let q = &q[hd * hs..(hd + 1) * hs];
                    let kv_off = (hd / group) * hs;
                    let mut s = vec![0f32; n];
                    gemv::dot_rows(kernel, &ks[kv_off..], kvw, q, &mut s);
                    s.iter_mut().for_each(|sj| *sj *= scale);
                    softmax(&mut s);
                    o.fill(0.0);
                    gemv::add_weighted_rows(kernel, &vs[kv_off..], kvw, &s, o);
                };
                if n * nh * hs >= PARALLEL_ATTENTION_MACS && ferrogpt_gemm::threads() > 1 {
                    att.par_chunks_mut(hs).enumerate().for_each(head);
                } else {
                    att.chunks_mut(hs).enumerate().for_each(head);
                }
            }
        }
    }

    /// Logits of the final normalised state `h` (C): the LM head, V values.
    fn head(self, model: &Gpt, params: &[f32], h: &[f32]) -> Result<Vec<f32>, GemmError> {
        let v = model.config.vocab_size;
        match self {
            Products::Plain { params, .. } => {
                let c = h.len();
                let head = &params[model.layout.head().range()];
                Ok((0..v)
                    .map(|r| {
                        head[r * c..(r + 1) * c]
                            .iter()
                            .zip(h)
                            .map(|(a, b)| a * b)
                            .sum()
                    })
                    .collect())
            }
            Products::Fast(dw) => {
                let mut out = vec![0f32; v];
                dw.head
                    .gemv(dw.kernel(), params, h, &mut out, None, false)?;
                Ok(out)
            }
        }
    }
}

impl KvCache {
    /// An empty cache: the first call computes every position.
    pub fn new() -> Self {
        Self::default()
    }

    /// Positions cached.
    pub fn len(&self) -> usize {
        self.tokens.len()
    }

    /// Whether no position is cached.
    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }

    /// Forgets everything (the weights changed).
    pub fn clear(&mut self) {
        self.tokens.clear();
        self.k
            .iter_mut()
            .chain(self.v.iter_mut())
            .for_each(Vec::clear);
    }

    /// How many positions of `tokens` the cache holds already (the shared prefix, at most all
    /// but the last position).
    pub fn reusable(&self, tokens: &[u32]) -> usize {
        self.tokens
            .iter()
            .zip(tokens)
            .take_while(|(a, b)| a == b)
            .count()
            .min(tokens.len().saturating_sub(1))
    }

    /// Replaces the cache with the keys and values of a full forward pass over `tokens`: `qkv`
    /// holds each block's (T, (NH+2KV)·HS) activation (keys already rotated), as
    /// `Gpt::forward_keeping_qkv` collects them (one slice per block, T = `tokens.len()`
    /// rows each; not checked).
    pub fn fill(&mut self, tokens: &[u32], qkv: &[&[f32]], model: &Gpt) {
        let cfg = &model.config;
        let (q, kv) = (
            cfg.n_head * cfg.head_size(),
            cfg.kv_heads() * cfg.head_size(),
        );
        let width = q + 2 * kv;
        self.tokens = tokens.to_vec();
        let part = |a: &&[f32], from: usize| -> Vec<f32> {
            a.chunks_exact(width)
                .flat_map(|r| &r[from..from + kv])
                .copied()
                .collect()
        };
        self.k = qkv.iter().map(|a| part(a, q)).collect();
        self.v = qkv.iter().map(|a| part(a, q + kv)).collect();
    }

    /// Logits (vocab_size values, f32) of the last position of `tokens` (one sequence),
    /// computing only the positions past the longest prefix shared with the cached sequence;
    /// empty `tokens` give no logits. The reference: plain loops over `params` (the model's
    /// flat buffer), one thread. Errors, checked once per call before the cache changes:
    /// [`ModelError::ParamsLength`], [`ModelError::SequenceLength`] for more tokens than the
    /// block size, [`ModelError::TokenId`] for an id past V among the positions to compute.
    pub fn logits(
        &mut self,
        model: &Gpt,
        params: &[f32],
        tokens: &[u32],
    ) -> Result<Vec<f32>, ModelError> {
        let out_in = model.layout.weights_out_in;
        self.run(model, params, Products::Plain { params, out_in }, tokens)
    }

    /// [`KvCache::logits`] with every product on the GEMV kernels over `weights` (converted
    /// from, or loaded beside, `params`, which still supplies the embeddings, norms and
    /// biases; with f32 weights, the matrices too). Errors: [`KvCache::logits`]'s,
    /// [`ModelError::Quant`] for weights built for another model, [`ModelError::Gemm`] when
    /// the weights' kernel cannot run here.
    pub fn decode(
        &mut self,
        model: &Gpt,
        params: &[f32],
        weights: &DecodeWeights,
        tokens: &[u32],
    ) -> Result<Vec<f32>, ModelError> {
        self.run(model, params, Products::Fast(weights), tokens)
    }

    /// The checks of [`KvCache::logits`] and [`KvCache::decode`] for the positions `keep..`
    /// of `tokens` to compute (the cached positions are not read again).
    fn check(
        model: &Gpt,
        params: &[f32],
        products: Products<'_>,
        tokens: &[u32],
        keep: usize,
    ) -> Result<(), ModelError> {
        let cfg = &model.config;
        if params.len() != model.layout.total {
            return Err(ModelError::ParamsLength {
                found: params.len(),
                expected: model.layout.total,
            });
        }
        if tokens.len() > cfg.block_size {
            return Err(ModelError::SequenceLength {
                t: tokens.len(),
                max: cfg.block_size,
            });
        }
        if let Some(i) = tokens[keep..]
            .iter()
            .position(|&id| id as usize >= cfg.vocab_size)
        {
            return Err(ModelError::TokenId {
                id: tokens[keep + i],
                position: keep + i,
                vocab: cfg.vocab_size,
            });
        }
        if let Products::Fast(w) = products {
            w.check(model, params)?;
        }
        Ok(())
    }

    fn run(
        &mut self,
        model: &Gpt,
        params: &[f32],
        products: Products<'_>,
        tokens: &[u32],
    ) -> Result<Vec<f32>, ModelError> {
        if tokens.is_empty() {
            return Ok(Vec::new());
        }
        let cfg = &model.config;
        let l: &ParamLayout = &model.layout;
        let (c, nh, hs) = (cfg.n_embd, cfg.n_head, cfg.head_size());
        let kvw = cfg.kv_heads() * hs;
        // The last position is always computed: its logits are the answer.
        let keep = self.reusable(tokens);
        Self::check(model, params, products, tokens, keep)?;
        self.tokens.truncate(keep);
        self.k.resize(cfg.n_layer, Vec::new());
        self.v.resize(cfg.n_layer, Vec::new());
        for li in 0..cfg.n_layer {
            self.k[li].truncate(keep * kvw);
            self.v[li].truncate(keep * kvw);
        }
        let fc_width = match cfg.family {
            Family::Gpt2 => cfg.ffn(),
            Family::Llama => 2 * cfg.ffn(),
        };
        let inv_freq = cfg.rope_inv_freq();
        let (mut cos, mut sin) = (vec![0f32; hs / 2], vec![0f32; hs / 2]);
        let (mut x, mut h) = (vec![0f32; c], vec![0f32; c]); // (C): the residual stream, normed
        let (mut qkv, mut att) = (vec![0f32; cfg.qkv_width()], vec![0f32; nh * hs]);
        let mut fc = vec![0f32; fc_width]; // (F or 2F)
        for (pos, &tok) in tokens.iter().enumerate().skip(keep) {
            let e = tok as usize * c;
            x.copy_from_slice(&params[l.wte.offset + e..][..c]);
            if let Some(wpe) = l.wpe {
                let p = &params[wpe.offset + pos * c..][..c];
                x.iter_mut().zip(p).for_each(|(x, p)| *x += p);
            }
            if cfg.rotary() {
                for (i, f) in inv_freq.iter().enumerate() {
                    let angle = pos as f64 * f;
                    (cos[i], sin[i]) = (angle.cos() as f32, angle.sin() as f32);
                }
            }
            for (li, blk) in l.blocks.iter().enumerate() {
                norm(&mut h, &x, params, blk.ln_1_w, blk.ln_1_b, cfg.norm_eps);
                products.linear(model, params, li, Which::Qkv, &h, &mut qkv, false)?;
                if cfg.rotary() {
                    for head in qkv[..nh * hs + kvw].chunks_exact_mut(hs) {
                        rope::rotate(head, &cos, &sin);
                    }
                }
                self.k[li].extend_from_slice(&qkv[nh * hs..nh * hs + kvw]);
                self.v[li].extend_from_slice(&qkv[nh * hs + kvw..]);
                let dims = (nh, cfg.kv_heads(), hs);
                let q = &qkv[..nh * hs];
                products.attend(q, &self.k[li], &self.v[li], pos + 1, dims, &mut att);
                // x += att · W_proj + b
                products.linear(model, params, li, Which::Proj, &att, &mut x, true)?;
                norm(&mut h, &x, params, blk.ln_2_w, blk.ln_2_b, cfg.norm_eps);
                products.linear(model, params, li, Which::Fc, &h, &mut fc, false)?;
                let act = match cfg.family {
                    Family::Gpt2 => {
                        for f in fc.iter_mut() {
                            let u = *f;
                            *f = 0.5
                                * u
                                * (1.0 + fastmath::tanh(0.797_884_6 * (u + 0.044715 * u * u * u)));
                        }
                        &fc[..]
                    }
                    Family::Llama => {
                        // SwiGLU: silu(gate) · up, written over the gate half.
                        let f = cfg.ffn();
                        let (gate, up) = fc.split_at_mut(f);
                        for (g, u) in gate.iter_mut().zip(up.iter()) {
                            *g = *g / (1.0 + fastmath::exp(-*g)) * u;
                        }
                        &fc[..f]
                    }
                };
                // x += act · W_fc_proj + b
                products.linear(model, params, li, Which::FcProj, act, &mut x, true)?;
            }
            self.tokens.push(tok);
        }
        norm(&mut h, &x, params, l.ln_f_w, l.ln_f_b, cfg.norm_eps);
        Ok(products.head(model, params, &h)?)
    }
}
