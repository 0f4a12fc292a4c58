//! SwiGLU, the gated activation of Llama's MLP: x (N, 2F) holds per row `[gate (F) | up (F)]`,
//!
//! ```text
//! out = silu(gate) · up,   silu(g) = g · σ(g),   σ(g) = 1 / (1 + exp(−g))        (N, F)
//! ```
//!
//! Backward: `dgate = dout · up · σ(g)·(1 + g·(1 − σ(g)))`, `dup = dout · silu(g)`.
//! σ is recomputed in the backward pass rather than saved (no extra (N, F) buffer; the exp is
//! vectorised, see [`crate::fastmath`]).

use super::Write;
use crate::{Float, PAR_MIN_ELEMS};
use rayon::prelude::*;

/// Rows per parallel task at least (fewer, longer tasks for narrow rows).
const CHUNK: usize = 4096;

#[inline(always)]
fn sigmoid<T: Float>(g: T) -> T {
    T::ONE / (T::ONE + (-g).exp())
}

/// The number of rows per parallel task for rows of `f` outputs.
fn rows_per_task(f: usize) -> usize {
    CHUNK.div_ceil(f.max(1))
}

/// out (N, F) = silu(gate) · up, overwritten; x (N, 2F).
pub fn forward<T: Float>(out: &mut [T], x: &[T], f: usize) {
    let rows = |(o, x): (&mut [T], &[T])| {
        crate::wide::run(
            #[inline(always)]
            || {
                for (o, x) in o.chunks_exact_mut(f).zip(x.chunks_exact(2 * f)) {
                    let (gate, up) = x.split_at(f);
                    for ((o, &g), &u) in o.iter_mut().zip(gate).zip(up) {
                        *o = g * sigmoid(g) * u;
                    }
                }
            },
        )
    };
    let n = rows_per_task(f);
    if out.len() >= PAR_MIN_ELEMS {
        out.par_chunks_mut(n * f)
            .zip(x.par_chunks(n * 2 * f))
            .for_each(rows);
    } else {
        rows((out, x));
    }
}

/// One row's gradients into gate and up, written or (`ADD`) added. Indexed loops over slices
/// cut to one length: the zipped-iterator form of this loop did not vectorise (the cost is in
/// docs/benchmarks.md, issue 17, CPU).
#[inline(always)]
fn grad_row<T: Float, const ADD: bool>(
    dgate: &mut [T],
    dup: &mut [T],
    gate: &[T],
    up: &[T],
    dout: &[T],
) {
    let n = dout.len();
    let (dgate, dup, gate, up) = (&mut dgate[..n], &mut dup[..n], &gate[..n], &up[..n]);
    for i in 0..n {
        let (g, u, d) = (gate[i], up[i], dout[i]);
        let s = sigmoid(g);
        let vg = d * u * s * (T::ONE + g * (T::ONE - s));
        let vu = d * g * s;
        if ADD {
            dgate[i] += vg;
            dup[i] += vu;
        } else {
            dgate[i] = vg;
            dup[i] = vu;
        }
    }
}

/// dx (N, 2F) (+)= the gradient of `dout` (N, F) through [`forward`], as `w` says.
pub fn backward<T: Float>(w: Write, dx: &mut [T], x: &[T], dout: &[T], f: usize) {
    let rows = |((dx, x), dout): ((&mut [T], &[T]), &[T])| {
        crate::wide::run(
            #[inline(always)]
            || {
                for ((dx, x), dout) in dx
                    .chunks_exact_mut(2 * f)
                    .zip(x.chunks_exact(2 * f))
                    .zip(dout.chunks_exact(f))
                {
                    let (gate, up) = x.split_at(f);
                    let (dgate, dup) = dx.split_at_mut(f);
                    // One loop per write mode: a `match` inside the loop keeps it scalar.
                    match w {
                        Write::Set => grad_row::<T, false>(dgate, dup, gate, up, dout),
                        Write::Add => grad_row::<T, true>(dgate, dup, gate, up, dout),
                    }
                }
            },
        )
    };
    let n = rows_per_task(f);
    if dx.len() >= PAR_MIN_ELEMS {
        dx.par_chunks_mut(n * 2 * f)
            .zip(x.par_chunks(n * 2 * f))
            .zip(dout.par_chunks(n * f))
            .for_each(rows);
    } else {
        rows(((dx, x), dout));
    }
}
