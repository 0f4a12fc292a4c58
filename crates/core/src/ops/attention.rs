//! Causal multi-head self-attention (the part between the QKV and output projections).
//!
//! qkv (B, T, 3C) holds, per position, the query, key and value vectors of all heads:
//! `[q_h0 .. q_hNH-1 | k_h0 .. | v_h0 ..]`, each head HS = C/NH wide. For each batch b and head h:
//!
//! ```text
//! att[t, s] = softmax_s≤t( q_t · k_s / sqrt(HS) )        (B, NH, T, T), zero above the diagonal
//! out[t]    = Σ_s≤t  att[t, s] · mask[t, s] · v_s          (B, T, C), heads side by side
//! ```
//!
//! `mask` is attention dropout (0 or 1/(1-p)), absent when p = 0. The plain loops here are the
//! reference; work is split across batch rows with rayon.

use crate::Float;
use rayon::prelude::*;

/// Shape of one attention call.
#[derive(Clone, Copy, Debug)]
pub struct Dims {
    pub b: usize,
    pub t: usize,
    pub c: usize,
    pub nh: usize,
}

impl Dims {
    fn hs(&self) -> usize {
        self.c / self.nh
    }
}

#[inline(always)]
fn dot<T: Float>(a: &[T], b: &[T]) -> T {
    a.iter().zip(b).fold(T::ZERO, |s, (&x, &y)| s + x * y)
}

/// out (B, T, C) overwritten; att (B, NH, T, T) saved softmax; mask (B, NH, T, T) or none.
pub fn forward<T: Float>(out: &mut [T], att: &mut [T], qkv: &[T], mask: Option<&[T]>, d: Dims) {
    let (t, c, nh, hs) = (d.t, d.c, d.nh, d.hs());
    let scale = T::ONE / T::from_f64(hs as f64).sqrt();
    out.par_chunks_mut(t * c)
        .zip(att.par_chunks_mut(nh * t * t))
        .zip(qkv.par_chunks(t * 3 * c))
        .enumerate()
        .for_each(|(bi, ((out, att), qkv))| {
            for h in 0..nh {
                for ti in 0..t {
                    let q = &qkv[ti * 3 * c + h * hs..][..hs];
                    let row = &mut att[(h * t + ti) * t..][..t];
                    let mut mx = T::from_f64(f64::NEG_INFINITY);
                    for (s, a) in row[..=ti].iter_mut().enumerate() {
                        let k = &qkv[s * 3 * c + c + h * hs..][..hs];
                        *a = dot(q, k) * scale;
                        mx = mx.max(*a);
                    }
                    let mut sum = T::ZERO;
                    for a in row[..=ti].iter_mut() {
                        *a = (*a - mx).exp();
                        sum += *a;
                    }
                    let inv = T::ONE / sum;
                    row[..=ti].iter_mut().for_each(|a| *a *= inv);
                    row[ti + 1..].fill(T::ZERO);
                    let o = &mut out[ti * c + h * hs..][..hs];
                    o.fill(T::ZERO);
                    for s in 0..=ti {
                        let m = mask.map_or(T::ONE, |m| m[bi * nh * t * t + (h * t + ti) * t + s]);
                        let a = row[s] * m;
                        let v = &qkv[s * 3 * c + 2 * c + h * hs..][..hs];
                        for (o, &v) in o.iter_mut().zip(v) {
                            *o += a * v;
                        }
                    }
                }
            }
        });
}

/// dqkv (B, T, 3C) += gradient of the attention output `dout` (B, T, C).
pub fn backward<T: Float>(
    dqkv: &mut [T],
    dout: &[T],
    qkv: &[T],
    att: &[T],
    mask: Option<&[T]>,
    d: Dims,
) {
    let (t, c, nh, hs) = (d.t, d.c, d.nh, d.hs());
    let scale = T::ONE / T::from_f64(hs as f64).sqrt();
    dqkv.par_chunks_mut(t * 3 * c)
        .zip(dout.par_chunks(t * c))
        .zip(qkv.par_chunks(t * 3 * c))
        .zip(att.par_chunks(nh * t * t))
        .enumerate()
        .for_each(|(bi, (((dqkv, dout), qkv), att))| {
            let mut datt = vec![T::ZERO; t];
            for h in 0..nh {
                for ti in 0..t {
                    let row = &att[(h * t + ti) * t..][..t];
                    let m = |s: usize| {
                        mask.map_or(T::ONE, |m| m[bi * nh * t * t + (h * t + ti) * t + s])
                    };
                    let g = &dout[ti * c + h * hs..][..hs];
                    // Through out = Σ att·mask·v: datt and dv.
                    for s in 0..=ti {
                        let v = &qkv[s * 3 * c + 2 * c + h * hs..][..hs];
                        let ms = m(s);
                        datt[s] = dot(g, v) * ms;
                        let a = row[s] * ms;
                        let dv = &mut dqkv[s * 3 * c + 2 * c + h * hs..][..hs];
                        for (dv, &g) in dv.iter_mut().zip(g) {
                            *dv += a * g;
                        }
                    }
                    // Through the softmax: dscore = att · (datt - Σ att·datt).
                    let inner: T = (0..=ti).map(|s| row[s] * datt[s]).sum();
                    for s in 0..=ti {
                        let ds = row[s] * (datt[s] - inner) * scale;
                        let (qo, ko) = (ti * 3 * c + h * hs, s * 3 * c + c + h * hs);
                        for i in 0..hs {
                            let (q, k) = (qkv[qo + i], qkv[ko + i]);
                            dqkv[qo + i] += ds * k;
                            dqkv[ko + i] += ds * q;
                        }
                    }
                }
            }
        });
}
