//! Fused softmax + cross-entropy, the loss of the language model.
//!
//! logits (N, Vp), of which only the first V columns are real tokens (the rest is padding that
//! takes no part in the softmax); targets (N), each < V. The loss is the mean over the N rows of
//! `-log softmax(logits_row)[target]`. Computed in the element type with the max subtracted.

use super::Write;
use crate::{reduce, Float, PAR_MIN_ELEMS};
use rayon::prelude::*;

/// Writes probs (N, V) and returns the mean loss (row losses summed in f64).
pub fn forward<T: Float>(probs: &mut [T], logits: &[T], targets: &[u32], v: usize, vp: usize) -> T {
    // -log p[y] = log Σ exp(l - max) - (l[y] - max): exact even where p[y] underflows.
    // Three passes (max, exp, Σ): the exp pass has no reduction in it and vectorises.
    let row = |((p, l), &y): ((&mut [T], &[T]), &u32)| -> f64 {
        crate::wide::run(
            #[inline(always)]
            || {
                let l = &l[..v];
                let mx = reduce::max(l);
                for (p, &x) in p.iter_mut().zip(l) {
                    *p = (x - mx).exp();
                }
                let sum = reduce::sum(p);
                let inv = T::ONE / sum;
                p.iter_mut().for_each(|p| *p *= inv);
                sum.to_f64().ln() - (l[y as usize] - mx).to_f64()
            },
        )
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

/// dlogits (+)= dloss · (probs - onehot(target)) / N on the first V columns; the padding
/// columns get nothing (zero when `w` is [`Write::Set`]).
pub fn backward<T: Float>(
    dlogits: &mut [T],
    probs: &[T],
    targets: &[u32],
    dloss: T,
    v: usize,
    vp: usize,
    w: Write,
) {
    let scale = dloss / T::from_f64(targets.len() as f64);
    let row = |((d, p), &y): ((&mut [T], &[T]), &u32)| {
        // The target's entry is set apart so that the loop has no compare in it.
        let y = y as usize;
        let dy = if w.accumulates() { d[y] } else { T::ZERO };
        for (d, &p) in d[..v].iter_mut().zip(p) {
            w.put(d, scale * p);
        }
        d[y] = dy + scale * (p[y] - T::ONE);
        if !w.accumulates() {
            d[v..].fill(T::ZERO);
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
