//! RMSNorm over the last axis (Llama's, as Hugging Face's `LlamaRMSNorm`):
//! `y = x · rstd · w`, `rstd = 1/sqrt(mean(x²) + eps)`; no mean subtracted, no bias.
//!
//! Precision: the mean of squares is accumulated in f64 from the elements widened to f64 (the
//! square of an f32 is then exact), and rstd is computed in f64 and rounded once to the element
//! type: at least the f32 statistics of Hugging Face. The normalisation and the scale by w run
//! in the element type.
//!
//! Backward, with n = x·rstd and dn = dout·w:
//! `dx = rstd · (dn − n · mean(dn·n))`, `dw += Σ_rows dout·n`.

use super::Write;
use crate::{reduce, Float, PAR_MIN_ELEMS};
use rayon::prelude::*;

/// One row of the input-gradient pass as the zipped iterators hand it over:
/// ((dx row, dout row), x row), rstd.
type BwdRow<'a, T> = (((&'a mut [T], &'a [T]), &'a [T]), &'a T);

/// out, x (N, C); w (C); saves rstd (N) for the backward pass.
pub fn forward<T: Float>(out: &mut [T], rstd: &mut [T], x: &[T], w: &[T], eps: f64, c: usize) {
    let row = |((o, r), x): ((&mut [T], &mut T), &[T])| {
        crate::wide::run(
            #[inline(always)]
            || {
                let ms = reduce::sum_squares_f64(x) / c as f64;
                let rs = T::from_f64(1.0 / (ms + eps).sqrt());
                for ((o, &x), &w) in o.iter_mut().zip(x).zip(w) {
                    *o = x * rs * w;
                }
                *r = rs;
            },
        )
    };
    if out.len() >= PAR_MIN_ELEMS {
        out.par_chunks_mut(c)
            .zip(rstd.par_iter_mut())
            .zip(x.par_chunks(c))
            .for_each(row);
    } else {
        out.chunks_mut(c)
            .zip(rstd.iter_mut())
            .zip(x.chunks(c))
            .for_each(row);
    }
}

/// dx (+)= ... (as `wx` says), dw += Σ_rows dout·x·rstd.
#[allow(clippy::too_many_arguments)]
pub fn backward<T: Float>(
    wx: Write,
    dx: &mut [T],
    dw: &mut [T],
    dout: &[T],
    x: &[T],
    w: &[T],
    rstd: &[T],
    c: usize,
) {
    let cf = T::from_f64(c as f64);
    // Input gradient: rows are independent.
    let row = |(((dx, dout), x), &rs): BwdRow<'_, T>| {
        crate::wide::run(
            #[inline(always)]
            || {
                // mean(dn·n) = rs · Σ (g·w·x) / C, Σ in 16 lanes.
                const L: usize = 16;
                let w = &w[..x.len()];
                let mut s = [T::ZERO; L];
                let (gc, wc, xc) = (dout.chunks_exact(L), w.chunks_exact(L), x.chunks_exact(L));
                let tail = gc
                    .remainder()
                    .iter()
                    .zip(wc.remainder())
                    .zip(xc.remainder())
                    .fold(T::ZERO, |a, ((&g, &w), &x)| a + g * w * x);
                for ((g, w), x) in gc.zip(wc).zip(xc) {
                    for l in 0..L {
                        s[l] += g[l] * w[l] * x[l];
                    }
                }
                let m = s.iter().fold(tail, |a, &v| a + v) * rs / cf;
                for (((d, &g), &x), &w) in dx.iter_mut().zip(dout).zip(x).zip(w) {
                    wx.put(d, rs * (g * w - x * rs * m));
                }
            },
        )
    };
    if dx.len() >= PAR_MIN_ELEMS {
        dx.par_chunks_mut(c)
            .zip(dout.par_chunks(c))
            .zip(x.par_chunks(c))
            .zip(rstd.par_iter())
            .for_each(row);
    } else {
        dx.chunks_mut(c)
            .zip(dout.chunks(c))
            .zip(x.chunks(c))
            .zip(rstd)
            .for_each(row);
    }
    // Parameter gradient: a reduction over rows.
    for ((dout, x), &rs) in dout.chunks(c).zip(x.chunks(c)).zip(rstd) {
        for ((dw, &g), &x) in dw.iter_mut().zip(dout).zip(x) {
            *dw += g * x * rs;
        }
    }
}
