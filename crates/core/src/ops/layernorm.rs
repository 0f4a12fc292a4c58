//! LayerNorm over the last axis, eps = 1e-5 (GPT-2's):
//! `y = (x - mean) · rstd · w + b`, `rstd = 1/sqrt(var + eps)`, var the biased variance.

use super::Write;
use crate::{reduce, Float, PAR_MIN_ELEMS};
use rayon::prelude::*;

/// Added to the variance before the square root: GPT-2's (and PyTorch's default) 1e-5.
pub const EPS: f64 = 1e-5;

/// One row of the forward pass as the zipped iterators hand it over: (out row, mean, rstd),
/// input row.
type FwdRow<'a, T> = (((&'a mut [T], &'a mut T), &'a mut T), &'a [T]);
/// One row of the input-gradient pass: ((dx row, dout row), x row), (mean, rstd).
type BwdRow<'a, T> = (((&'a mut [T], &'a [T]), &'a [T]), (&'a T, &'a T));

/// out, x (N, C); w, b (C); saves mean, rstd (N) for the backward pass.
pub fn forward<T: Float>(
    out: &mut [T],
    mean: &mut [T],
    rstd: &mut [T],
    x: &[T],
    w: &[T],
    b: &[T],
    c: usize,
) {
    let cf = T::from_f64(c as f64);
    let eps = T::from_f64(EPS);
    let row = |(((o, m), r), x): FwdRow<'_, T>| {
        crate::wide::run(
            #[inline(always)]
            || {
                let mu = reduce::sum(x) / cf;
                // (x - mu) into `o` first: the variance is then one laned dot product.
                for (o, &x) in o.iter_mut().zip(x) {
                    *o = x - mu;
                }
                let var = reduce::dot(o, o) / cf;
                let rs = T::ONE / (var + eps).sqrt();
                for ((o, &w), &b) in o.iter_mut().zip(w).zip(b) {
                    *o = *o * rs * w + b;
                }
                *m = mu;
                *r = rs;
            },
        )
    };
    if out.len() >= PAR_MIN_ELEMS {
        out.par_chunks_mut(c)
            .zip(mean.par_iter_mut())
            .zip(rstd.par_iter_mut())
            .zip(x.par_chunks(c))
            .for_each(row);
    } else {
        out.chunks_mut(c)
            .zip(mean.iter_mut())
            .zip(rstd.iter_mut())
            .zip(x.chunks(c))
            .for_each(row);
    }
}

/// dx (+)= ... (as `wx` says), dw += Σ_rows dout·norm, db += Σ_rows dout, where
/// norm = (x - mean)·rstd.
#[allow(clippy::too_many_arguments)]
pub fn backward<T: Float>(
    wx: Write,
    dx: &mut [T],
    dw: &mut [T],
    db: &mut [T],
    dout: &[T],
    x: &[T],
    w: &[T],
    mean: &[T],
    rstd: &[T],
    c: usize,
) {
    let cf = T::from_f64(c as f64);
    // Input gradient: rows are independent.
    let row = |(((dx, dout), x), (&mu, &rs)): BwdRow<'_, T>| {
        crate::wide::run(
            #[inline(always)]
            || {
                // Σ dn and Σ dn·n (dn = g·w, n = (x - mu)·rs), each in 16 lanes in its own loop
                // (one accumulator array per loop is what the compiler vectorises).
                let w = &w[..x.len()];
                let sum_dn = reduce::dot(dout, w);
                const L: usize = 16;
                let mut s2 = [T::ZERO; L];
                let (gc, wc, xc) = (dout.chunks_exact(L), w.chunks_exact(L), x.chunks_exact(L));
                let tail = gc
                    .remainder()
                    .iter()
                    .zip(wc.remainder())
                    .zip(xc.remainder())
                    .fold(T::ZERO, |a, ((&g, &w), &x)| a + g * w * (x - mu) * rs);
                for ((g, w), x) in gc.zip(wc).zip(xc) {
                    for l in 0..L {
                        s2[l] += g[l] * w[l] * (x[l] - mu) * rs;
                    }
                }
                let sum_dn_n = s2.iter().fold(tail, |a, &v| a + v);
                let (m1, m2) = (sum_dn / cf, sum_dn_n / cf);
                for (((d, &g), &x), &w) in dx.iter_mut().zip(dout).zip(x).zip(w) {
                    let n = (x - mu) * rs;
                    wx.put(d, rs * (g * w - m1 - n * m2));
                }
            },
        )
    };
    if dx.len() >= PAR_MIN_ELEMS {
        dx.par_chunks_mut(c)
            .zip(dout.par_chunks(c))
            .zip(x.par_chunks(c))
            .zip(mean.par_iter().zip(rstd.par_iter()))
            .for_each(row);
    } else {
        dx.chunks_mut(c)
            .zip(dout.chunks(c))
            .zip(x.chunks(c))
            .zip(mean.iter().zip(rstd))
            .for_each(row);
    }
    // Parameter gradients: a reduction over rows.
    for ((dout, x), (&mu, &rs)) in dout.chunks(c).zip(x.chunks(c)).zip(mean.iter().zip(rstd)) {
        for (((dw, db), &g), &x) in dw.iter_mut().zip(db.iter_mut()).zip(dout).zip(x) {
            *dw += g * (x - mu) * rs;
            *db += g;
        }
    }
}
