//! GELU, tanh approximation (GPT-2's `gelu_new`):
//! `y = 0.5·x·(1 + tanh(s·(x + 0.044715·x³)))`, `s = sqrt(2/π)`.
//!
//! The forward pass also saves the tanh (`th`, same shape): the backward pass needs it, and
//! recomputing it cost as much as the whole forward (a quarter of GELU's time).

use super::Write;
use crate::{Float, PAR_MIN_ELEMS};
use rayon::prelude::*;

const S: f64 = 0.797_884_560_802_865_4; // sqrt(2/π)
const K: f64 = 0.044715;
const CHUNK: usize = 4096;

/// out = GELU(x), th = tanh(s·(x + k·x³)); all the same shape.
pub fn forward<T: Float>(out: &mut [T], th: &mut [T], x: &[T]) {
    let (s, k, half) = (T::from_f64(S), T::from_f64(K), T::from_f64(0.5));
    // Chunks, not single elements, go to the threads: each chunk's loop vectorises.
    let f = |((out, th), x): ((&mut [T], &mut [T]), &[T])| {
        crate::wide::run(
            #[inline(always)]
            || {
                for ((o, t), &x) in out.iter_mut().zip(th.iter_mut()).zip(x) {
                    let u = s * (x + k * x * x * x);
                    *t = u.tanh();
                    *o = half * x * (T::ONE + *t);
                }
            },
        )
    };
    if out.len() >= PAR_MIN_ELEMS {
        out.par_chunks_mut(CHUNK)
            .zip(th.par_chunks_mut(CHUNK))
            .zip(x.par_chunks(CHUNK))
            .for_each(f);
    } else {
        f(((out, th), x));
    }
}

/// dx (+)= dout · dy/dx (as `w` says), with `th` saved by the forward pass.
pub fn backward<T: Float>(w: Write, dx: &mut [T], x: &[T], th: &[T], dout: &[T]) {
    let (s, half) = (T::from_f64(S), T::from_f64(0.5));
    let three_k = T::from_f64(3.0 * K);
    let f = |dx: &mut [T], x: &[T], th: &[T], dout: &[T]| {
        crate::wide::run(
            #[inline(always)]
            || {
                for (((d, &x), &th), &g) in dx.iter_mut().zip(x).zip(th).zip(dout) {
                    let sech2 = T::ONE - th * th;
                    let local =
                        half * (T::ONE + th) + half * x * sech2 * s * (T::ONE + three_k * x * x);
                    w.put(d, g * local);
                }
            },
        )
    };
    if dx.len() >= PAR_MIN_ELEMS {
        dx.par_chunks_mut(CHUNK)
            .zip(x.par_chunks(CHUNK))
            .zip(th.par_chunks(CHUNK))
            .zip(dout.par_chunks(CHUNK))
            .for_each(|(((dx, x), th), dout)| f(dx, x, th, dout));
    } else {
        f(dx, x, th, dout);
    }
}
