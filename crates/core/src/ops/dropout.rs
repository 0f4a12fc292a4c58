//! Inverted dropout: `out = x · mask`, where each mask element is `0` with probability `p` and
//! `1/(1-p)` otherwise, so the expected value of `out` is `x`. The mask is drawn by the caller
//! (the tape) from the run's seeded generator and saved for the backward pass.

use super::Write;
use crate::Float;
use rand::Rng;

/// Fills `mask` with 0 or 1/(1-p). `p` in [0, 1).
pub fn draw_mask<T: Float>(mask: &mut [T], p: f64, rng: &mut impl Rng) {
    let keep = T::from_f64(1.0 / (1.0 - p));
    for m in mask.iter_mut() {
        *m = if rng.gen::<f64>() < p { T::ZERO } else { keep };
    }
}

/// out = x · mask, elementwise, out overwritten; all the same length (from [`draw_mask`]).
pub fn forward<T: Float>(out: &mut [T], x: &[T], mask: &[T]) {
    for ((o, &x), &m) in out.iter_mut().zip(x).zip(mask) {
        *o = x * m;
    }
}

/// dx (+)= dout · mask (as `w` says).
pub fn backward<T: Float>(w: Write, dx: &mut [T], dout: &[T], mask: &[T]) {
    for ((d, &g), &m) in dx.iter_mut().zip(dout).zip(mask) {
        w.put(d, g * m);
    }
}
