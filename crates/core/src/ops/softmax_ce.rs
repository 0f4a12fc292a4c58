//! Fused softmax + cross-entropy, the loss of the language model.
//!
//! logits (N, Vp), of which only the first V columns are real tokens (the rest is padding that
//! takes no part in the softmax); targets (N), each < V. The loss is the mean over the N rows of
//! `-log softmax(logits_row)[target]`. Computed in the element type with the max subtracted.

use crate::{Float, PAR_MIN_ELEMS};
use rayon::prelude::*;

/// Writes probs (N, V) and returns the mean loss (row losses summed in f64).
pub fn forward<T: Float>(probs: &mut [T], logits: &[T], targets: &[u32], v: usize, vp: usize) -> T {
    // -log p[y] = log Σ exp(l - max) - (l[y] - max): exact even where p[y] underflows.
    let row = |((p, l), &y): ((&mut [T], &[T]), &u32)| -> f64 {
        let l = &l[..v];
        let mx = l.iter().copied().fold(l[0], T::max);
        let mut sum = T::ZERO;
        for (p, &x) in p.iter_mut().zip(l) {
            *p = (x - mx).exp();
            sum += *p;
        }
        let inv = T::ONE / sum;
        p.iter_mut().for_each(|p| *p *= inv);
        sum.to_f64().ln() - (l[y as usize] - mx).to_f64()
    };
    let total: f64 = if probs.len() >= PAR_MIN_ELEMS {
        probs
            .par_chunks_mut(v)
            .zip(logits.par_chunks(vp))
            .zip(targets.par_iter())
            .map(row)
            .sum()
    } else {
        probs
            .chunks_mut(v)
            .zip(logits.chunks(vp))
            .zip(targets)
            .map(row)
            .sum()
    };
    T::from_f64(total / targets.len() as f64)
}

/// dlogits += dloss · (probs - onehot(target)) / N on the first V columns; padding gets nothing.
pub fn backward<T: Float>(
    dlogits: &mut [T],
    probs: &[T],
    targets: &[u32],
    dloss: T,
    v: usize,
    vp: usize,
) {
    let scale = dloss / T::from_f64(targets.len() as f64);
    let row = |((d, p), &y): ((&mut [T], &[T]), &u32)| {
        for (j, (d, &p)) in d[..v].iter_mut().zip(p).enumerate() {
            let ind = if j == y as usize { T::ONE } else { T::ZERO };
            *d += scale * (p - ind);
        }
    };
    if dlogits.len() >= PAR_MIN_ELEMS {
        dlogits
            .par_chunks_mut(vp)
            .zip(probs.par_chunks(v))
            .zip(targets.par_iter())
            .for_each(row);
    } else {
        dlogits
            .chunks_mut(vp)
            .zip(probs.chunks(v))
            .zip(targets)
            .for_each(row);
    }
}
