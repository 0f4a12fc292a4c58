//! Rotary position embedding (RoPE), in the "rotate half" convention of Hugging Face's Llama
//! and GPT-NeoX: within a head of HS = 2·H2 values, element i and element i + H2 (i < H2) form
//! a pair rotated by the angle θ = pos · `inv_freq[i]`:
//!
//! ```text
//! out[i]      = x[i]·cos θ − x[i+H2]·sin θ
//! out[i+H2]   = x[i+H2]·cos θ + x[i]·sin θ
//! ```
//!
//! (HF: `x·cos + rotate_half(x)·sin` with `rotate_half(x) = [−x2, x1]`, cos and sin repeated
//! over both halves.) The backward pass is the inverse rotation, the transpose: θ → −θ.
//!
//! In the model, qkv (N, (NH + 2·KV)·HS) rows `[q heads | k heads | v heads]` (see
//! [`super::attention`]) have every query and key head rotated and the values passed through;
//! row r of a batch of sequences of length T is at position `r % T`.
//!
//! Precision: the angles are computed in f64 and their cos and sin rounded once to the element
//! type ([`table`]). Hugging Face rounds the angle itself to f32 before taking cos and sin, so at
//! large positions its f32 tables differ from these by up to about pos·2⁻²⁴ (absolute).
//!
//! [`table`] and [`rotate`] are the pieces a decoder needs to rotate the query and key of one
//! new position; [`forward`] and [`backward`] are the tape's op over a whole qkv buffer.

use super::Write;
use crate::{Float, PAR_MIN_ELEMS};
use rayon::prelude::*;

/// The cos and sin of the angles `pos · inv_freq[i]` for `pos < t`, each (T, H2) row-major with
/// H2 = `inv_freq.len()` = HS/2: row `pos` is what [`rotate`] takes for that position.
pub fn table<T: Float>(t: usize, inv_freq: &[f64]) -> (Vec<T>, Vec<T>) {
    let n = t * inv_freq.len();
    let (mut cos, mut sin) = (vec![T::ZERO; n], vec![T::ZERO; n]);
    table_into(&mut cos, &mut sin, inv_freq);
    (cos, sin)
}

/// [`table`] into given buffers: cos and sin (T, H2), T = `cos.len() / inv_freq.len()`.
pub fn table_into<T: Float>(cos: &mut [T], sin: &mut [T], inv_freq: &[f64]) {
    let h2 = inv_freq.len();
    if h2 == 0 {
        return;
    }
    for (pos, (c, s)) in cos
        .chunks_exact_mut(h2)
        .zip(sin.chunks_exact_mut(h2))
        .enumerate()
    {
        for ((c, s), &f) in c.iter_mut().zip(s.iter_mut()).zip(inv_freq) {
            let (sn, cs) = (pos as f64 * f).sin_cos();
            *c = T::from_f64(cs);
            *s = T::from_f64(sn);
        }
    }
}

/// Rotates one head `x` (HS) in place by the angles of one position: `cos`, `sin` (HS/2), a row
/// of [`table`].
pub fn rotate<T: Float>(x: &mut [T], cos: &[T], sin: &[T]) {
    let h2 = cos.len();
    let (lo, hi) = x[..2 * h2].split_at_mut(h2);
    for (((a, b), &c), &s) in lo.iter_mut().zip(hi).zip(cos).zip(sin) {
        let (x1, x2) = (*a, *b);
        *a = x1 * c - x2 * s;
        *b = x2 * c + x1 * s;
    }
}

/// The inverse of [`rotate`] (rotation by −θ), in place.
pub fn rotate_inverse<T: Float>(x: &mut [T], cos: &[T], sin: &[T]) {
    let h2 = cos.len();
    let (lo, hi) = x[..2 * h2].split_at_mut(h2);
    for (((a, b), &c), &s) in lo.iter_mut().zip(hi).zip(cos).zip(sin) {
        let (x1, x2) = (*a, *b);
        *a = x1 * c + x2 * s;
        *b = x2 * c - x1 * s;
    }
}

/// Rows per parallel task.
const ROWS: usize = 16;

/// out, qkv (N, W) with W = `width`: in each row, the first `heads` heads of HS = 2·H2 values
/// (the NH query and KV key heads) rotated, the rest (the values) copied; out overwritten.
/// cos, sin (T, H2) from [`table`]; row r is at position r % T.
pub fn forward<T: Float>(
    out: &mut [T],
    qkv: &[T],
    cos: &[T],
    sin: &[T],
    t: usize,
    width: usize,
    heads: usize,
) {
    let h2 = cos.len() / t;
    let f = |(ci, (o, x)): (usize, (&mut [T], &[T]))| {
        for (r, (o, x)) in o
            .chunks_exact_mut(width)
            .zip(x.chunks_exact(width))
            .enumerate()
        {
            let pos = (ci * ROWS + r) % t;
            let (c, s) = (&cos[pos * h2..][..h2], &sin[pos * h2..][..h2]);
            o.copy_from_slice(x);
            for head in o[..heads * 2 * h2].chunks_exact_mut(2 * h2) {
                rotate(head, c, s);
            }
        }
    };
    if out.len() >= PAR_MIN_ELEMS {
        out.par_chunks_mut(ROWS * width)
            .zip(qkv.par_chunks(ROWS * width))
            .enumerate()
            .for_each(f);
    } else {
        out.chunks_mut(ROWS * width)
            .zip(qkv.chunks(ROWS * width))
            .enumerate()
            .for_each(f);
    }
}

/// dqkv (N, W) (+)= the gradient through [`forward`] of `dout` (N, W), as `w` says: the rotated
/// heads get `dout` rotated back ([`rotate_inverse`]), the values `dout` itself.
#[allow(clippy::too_many_arguments)]
pub fn backward<T: Float>(
    w: Write,
    dqkv: &mut [T],
    dout: &[T],
    cos: &[T],
    sin: &[T],
    t: usize,
    width: usize,
    heads: usize,
) {
    let h2 = cos.len() / t;
    let f = |(ci, (d, g)): (usize, (&mut [T], &[T]))| {
        let mut tmp = vec![T::ZERO; width];
        for (r, (d, g)) in d
            .chunks_exact_mut(width)
            .zip(g.chunks_exact(width))
            .enumerate()
        {
            let pos = (ci * ROWS + r) % t;
            let (c, s) = (&cos[pos * h2..][..h2], &sin[pos * h2..][..h2]);
            tmp.copy_from_slice(g);
            for head in tmp[..heads * 2 * h2].chunks_exact_mut(2 * h2) {
                rotate_inverse(head, c, s);
            }
            for (d, &v) in d.iter_mut().zip(&tmp) {
                w.put(d, v);
            }
        }
    };
    if dqkv.len() >= PAR_MIN_ELEMS {
        dqkv.par_chunks_mut(ROWS * width)
            .zip(dout.par_chunks(ROWS * width))
            .enumerate()
            .for_each(f);
    } else {
        dqkv.chunks_mut(ROWS * width)
            .zip(dout.chunks(ROWS * width))
            .enumerate()
            .for_each(f);
    }
}
