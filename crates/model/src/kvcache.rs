//! Incremental decoding on the CPU: the keys and values of the positions already seen are kept,
//! so each new token costs one position's forward pass instead of the whole window's.
//!
//! The same function as [`crate::Gpt::forward`] for one sequence, written out for a single new
//! position (f32, no tape, no dropout): embeddings; per block LayerNorm, the qkv projection
//! (the new position's k and v appended to the cache), causal attention of the new query over
//! every cached key, the output projection, the residual, LayerNorm, the MLP with tanh GELU,
//! the residual; the final LayerNorm and the tied LM head. The cache follows the token
//! sequence it was built for: a call whose tokens extend that sequence computes only the new
//! positions; one that diverges (a sliding window, another prompt) recomputes from the first
//! differing position.

use crate::{Gpt, ParamLayout};
use ferrogpt_core::fastmath;
use ferrogpt_core::Param;

/// Keys and values of each block for the positions of `tokens` (each `(T, C)`, row-major).
#[derive(Clone, Debug, Default)]
pub struct KvCache {
    tokens: Vec<u32>,
    k: Vec<Vec<f32>>,
    v: Vec<Vec<f32>>,
}

/// out (cols) = x (rows) · W (rows × cols) + bias, W row-major (HF Conv1D layout).
fn vecmat(out: &mut [f32], x: &[f32], params: &[f32], w: Param, bias: Option<Param>) {
    let cols = w.cols;
    match bias {
        Some(b) => out.copy_from_slice(&params[b.range()]),
        None => out.fill(0.0),
    }
    let wv = &params[w.range()];
    for (i, &xi) in x.iter().enumerate() {
        let row = &wv[i * cols..(i + 1) * cols];
        out.iter_mut().zip(row).for_each(|(o, &r)| *o += xi * r);
    }
}

fn layernorm(out: &mut [f32], x: &[f32], params: &[f32], w: Param, b: Param) {
    let n = x.len() as f32;
    let mean = x.iter().sum::<f32>() / n;
    let var = x.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / n;
    let rstd = 1.0 / (var + ferrogpt_core::ops::layernorm::EPS as f32).sqrt();
    let (w, b) = (&params[w.range()], &params[b.range()]);
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
    /// holds each block's (T, 3C) activation, as `Gpt::forward_keeping_qkv` collects them.
    pub fn fill(&mut self, tokens: &[u32], qkv: &[&[f32]], c: usize) {
        self.tokens = tokens.to_vec();
        self.k = qkv
            .iter()
            .map(|a| {
                a.chunks_exact(3 * c)
                    .flat_map(|r| &r[c..2 * c])
                    .copied()
                    .collect()
            })
            .collect();
        self.v = qkv
            .iter()
            .map(|a| {
                a.chunks_exact(3 * c)
                    .flat_map(|r| &r[2 * c..])
                    .copied()
                    .collect()
            })
            .collect();
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
        let (c, nh) = (cfg.n_embd, cfg.n_head);
        let hs = c / nh;
        // The last position is always computed: its logits are the answer.
        let keep = self.reusable(tokens);
        self.tokens.truncate(keep);
        self.k.resize(cfg.n_layer, Vec::new());
        self.v.resize(cfg.n_layer, Vec::new());
        for li in 0..cfg.n_layer {
            self.k[li].truncate(keep * c);
            self.v[li].truncate(keep * c);
        }
        let (mut x, mut h) = (vec![0f32; c], vec![0f32; c]);
        let (mut qkv, mut att) = (vec![0f32; 3 * c], vec![0f32; c]);
        let (mut proj, mut fc) = (vec![0f32; c], vec![0f32; 4 * c]);
        let scale = 1.0 / (hs as f32).sqrt();
        for (pos, &tok) in tokens.iter().enumerate().skip(keep) {
            let (e, p) = (tok as usize * c, pos * c);
            for i in 0..c {
                x[i] = params[l.wte.offset + e + i] + params[l.wpe.offset + p + i];
            }
            for (li, blk) in l.blocks.iter().enumerate() {
                layernorm(&mut h, &x, params, blk.ln_1_w, blk.ln_1_b);
                vecmat(&mut qkv, &h, params, blk.attn_w, Some(blk.attn_b));
                self.k[li].extend_from_slice(&qkv[c..2 * c]);
                self.v[li].extend_from_slice(&qkv[2 * c..]);
                let (ks, vs) = (&self.k[li], &self.v[li]);
                let n = pos + 1;
                let mut s = vec![0f32; n];
                for hd in 0..nh {
                    let q = &qkv[hd * hs..(hd + 1) * hs];
                    for (j, sj) in s.iter_mut().enumerate() {
                        let kj = &ks[j * c + hd * hs..j * c + (hd + 1) * hs];
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
                        let vj = &vs[j * c + hd * hs..j * c + (hd + 1) * hs];
                        o.iter_mut().zip(vj).for_each(|(o, &v)| *o += sj / z * v);
                    }
                }
                vecmat(
                    &mut proj,
                    &att,
                    params,
                    blk.attn_proj_w,
                    Some(blk.attn_proj_b),
                );
                x.iter_mut().zip(&proj).for_each(|(x, p)| *x += p);
                layernorm(&mut h, &x, params, blk.ln_2_w, blk.ln_2_b);
                vecmat(&mut fc, &h, params, blk.fc_w, Some(blk.fc_b));
                for f in fc.iter_mut() {
                    let u = *f;
                    *f = 0.5 * u * (1.0 + fastmath::tanh(0.797_884_6 * (u + 0.044715 * u * u * u)));
                }
                vecmat(&mut proj, &fc, params, blk.fc_proj_w, Some(blk.fc_proj_b));
                x.iter_mut().zip(&proj).for_each(|(x, p)| *x += p);
            }
            self.tokens.push(tok);
        }
        layernorm(&mut h, &x, params, l.ln_f_w, l.ln_f_b);
        let wte = &params[l.wte.range()];
        (0..cfg.vocab_size)
            .map(|r| {
                wte[r * c..(r + 1) * c]
                    .iter()
                    .zip(&h)
                    .map(|(a, b)| a * b)
                    .sum()
            })
            .collect()
    }
}
