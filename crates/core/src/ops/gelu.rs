//! GELU, tanh approximation (GPT-2's `gelu_new`):
//! `y = 0.5·x·(1 + tanh(s·(x + 0.044715·x³)))`, `s = sqrt(2/π)`.

use crate::{Float, PAR_MIN_ELEMS};
use rayon::prelude::*;

const S: f64 = 0.797_884_560_802_865_4; // sqrt(2/π)
const K: f64 = 0.044715;
const CHUNK: usize = 4096;

pub fn forward<T: Float>(out: &mut [T], x: &[T]) {
    let (s, k, half) = (T::from_f64(S), T::from_f64(K), T::from_f64(0.5));
    // Chunks, not single elements, go to the threads: each chunk's loop vectorises.
    let f = |(out, x): (&mut [T], &[T])| {
        for (o, &x) in out.iter_mut().zip(x) {
            let u = s * (x + k * x * x * x);
            *o = half * x * (T::ONE + u.tanh());
        }
    };
    if out.len() >= PAR_MIN_ELEMS {
        out.par_chunks_mut(CHUNK)
            .zip(x.par_chunks(CHUNK))
            .for_each(f);
    } else {
        f((out, x));
    }
}

/// dx += dout · dy/dx.
pub fn backward<T: Float>(dx: &mut [T], x: &[T], dout: &[T]) {
    let (s, k, half) = (T::from_f64(S), T::from_f64(K), T::from_f64(0.5));
    let three_k = T::from_f64(3.0 * K);
    let f = |((dx, x), dout): ((&mut [T], &[T]), &[T])| {
        for ((d, &x), &g) in dx.iter_mut().zip(x).zip(dout) {
            let u = s * (x + k * x * x * x);
            let th = u.tanh();
            let sech2 = T::ONE - th * th;
            let local = half * (T::ONE + th) + half * x * sech2 * s * (T::ONE + three_k * x * x);
            *d += g * local;
        }
    };
    if dx.len() >= PAR_MIN_ELEMS {
        dx.par_chunks_mut(CHUNK)
            .zip(x.par_chunks(CHUNK))
            .zip(dout.par_chunks(CHUNK))
            .for_each(f);
    } else {
        f(((dx, x), dout));
    }
}
