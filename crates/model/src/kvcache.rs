//! Incremental decoding on the CPU: the keys and values of the positions already seen are kept,
//! so each new token costs one position's forward pass instead of the whole window's.
//!
//! The same function as [`crate::Gpt::forward`] for one sequence, written out for a single new
//! position (f32, no tape, no dropout), for every family: the embedding (plus the learned
//! position); per block the first norm, the qkv projection (the new position's keys rotated
//! where positions are rotary, its k and v appended to the cache), causal attention of each
//! query head over every cached key of its key/value head, the output projection, the
//! residual, the second norm, the MLP (GELU or SwiGLU), the residual; the final norm and the
//! LM head. The cache follows the token sequence it was built for: a call whose tokens extend
//! that sequence computes only the new positions; one that diverges (a sliding window, another
//! prompt) recomputes from the first differing position.

use crate::config::Family;
use crate::{Gpt, ParamLayout};
use ferrogpt_core::fastmath;
use ferrogpt_core::ops::rope;
use ferrogpt_core::Param;

/// Keys and values of each block for the positions of `tokens` (each `(T, KV·HS)`, row-major).
#[derive(Clone, Debug, Default)]
pub struct KvCache {
    tokens: Vec<u32>,
    k: Vec<Vec<f32>>,
    v: Vec<Vec<f32>>,
}

/// out = x · W + bias: W (in, out) row-major (GPT-2's Conv1D) or, with `out_in`, (out, in)
/// (nn.Linear's layout).
fn vecmat(out: &mut [f32], x: &[f32], params: &[f32], w: Param, bias: Option<Param>, out_in: bool) {
    let wv = &params[w.range()];
    if out_in {
        for (r, o) in out.iter_mut().enumerate() {
            let row = &wv[r * w.cols..(r + 1) * w.cols];
            *o = row.iter().zip(x).map(|(a, b)| a * b).sum::<f32>();
        }
        if let Some(b) = bias {
            out.iter_mut()
                .zip(&params[b.range()])
                .for_each(|(o, b)| *o += b);
        }
        return;
    }
    let cols = w.cols;
    match bias {
        Some(b) => out.copy_from_slice(&params[b.range()]),
        None => out.fill(0.0),
    }
    for (i, &xi) in x.iter().enumerate() {
        let row = &wv[i * cols..(i + 1) * cols];
        out.iter_mut().zip(row).for_each(|(o, &r)| *o += xi * r);
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

impl KvCache {
    pub fn new() -> Self {
        Self::default()
    }

    /// Positions cached.
    pub fn len(&self) -> usize {
        self.tokens.len()
    }

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
    /// `Gpt::forward_keeping_qkv` collects them.
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

    /// Logits (vocab_size values, f32) of the last position of `tokens` (one sequence, at most
    /// the block size, ids checked by the caller), computing only the positions past the
    /// longest prefix shared with the cached sequence.
    pub fn logits(&mut self, model: &Gpt, params: &[f32], tokens: &[u32]) -> Vec<f32> {
        if tokens.is_empty() {
            return Vec::new();
        }
        let cfg = &model.config;
        let l: &ParamLayout = &model.layout;
        let (c, nh, hs) = (cfg.n_embd, cfg.n_head, cfg.head_size());
        let kvw = cfg.kv_heads() * hs;
        let group = nh / cfg.kv_heads();
        let out_in = l.weights_out_in;
        // The last position is always computed: its logits are the answer.
        let keep = self.reusable(tokens);
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
        let (mut x, mut h) = (vec![0f32; c], vec![0f32; c]);
        let (mut qkv, mut att) = (vec![0f32; cfg.qkv_width()], vec![0f32; nh * hs]);
        let (mut proj, mut fc) = (vec![0f32; c], vec![0f32; fc_width]);
        let scale = 1.0 / (hs as f32).sqrt();
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
                vecmat(&mut qkv, &h, params, blk.attn_w, blk.attn_b, out_in);
                if cfg.rotary() {
                    for head in qkv[..nh * hs + kvw].chunks_exact_mut(hs) {
                        rope::rotate(head, &cos, &sin);
                    }
                }
                self.k[li].extend_from_slice(&qkv[nh * hs..nh * hs + kvw]);
                self.v[li].extend_from_slice(&qkv[nh * hs + kvw..]);
                let (ks, vs) = (&self.k[li], &self.v[li]);
                let n = pos + 1;
                let mut s = vec![0f32; n];
                for hd in 0..nh {
                    let q = &qkv[hd * hs..(hd + 1) * hs];
                    let kv_off = (hd / group) * hs;
                    for (j, sj) in s.iter_mut().enumerate() {
                        let kj = &ks[j * kvw + kv_off..][..hs];
                        *sj = q.iter().zip(kj).map(|(a, b)| a * b).sum::<f32>() * scale;
                    }
                    let m = s.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                    let mut z = 0.0;
                    for sj in s.iter_mut() {
                        *sj = fastmath::exp(*sj - m);
                        z += *sj;
                    }
                    let o = &mut att[hd * hs..(hd + 1) * hs];
                    o.fill(0.0);
                    for (j, &sj) in s.iter().enumerate() {
                        let vj = &vs[j * kvw + kv_off..][..hs];
                        o.iter_mut().zip(vj).for_each(|(o, &v)| *o += sj / z * v);
                    }
                }
                vecmat(
                    &mut proj,
                    &att,
                    params,
                    blk.attn_proj_w,
                    blk.attn_proj_b,
                    out_in,
                );
                x.iter_mut().zip(&proj).for_each(|(x, p)| *x += p);
                norm(&mut h, &x, params, blk.ln_2_w, blk.ln_2_b, cfg.norm_eps);
                vecmat(&mut fc, &h, params, blk.fc_w, blk.fc_b, out_in);
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
                vecmat(&mut proj, act, params, blk.fc_proj_w, blk.fc_proj_b, out_in);
                x.iter_mut().zip(&proj).for_each(|(x, p)| *x += p);
            }
            self.tokens.push(tok);
        }
        norm(&mut h, &x, params, l.ln_f_w, l.ln_f_b, cfg.norm_eps);
        let head = &params[l.head().range()];
        (0..cfg.vocab_size)
            .map(|r| {
                head[r * c..(r + 1) * c]
                    .iter()
                    .zip(&h)
                    .map(|(a, b)| a * b)
                    .sum()
            })
            .collect()
    }
}
