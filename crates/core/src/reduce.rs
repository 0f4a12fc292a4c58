//! Reductions over slices (Σ, max, dot, Σ x² in f64) with 16 running lanes.
//!
//! A single running value serialises every step on the previous one (4 cycles of add latency
//! per element) and keeps the compiler from vectorising, because it does not reassociate float
//! sums for us. Sixteen independent lanes, combined at the end, fill one AVX-512 register (two
//! AVX2 registers) of f32. The order of summation is fixed by the slice length alone, so results
//! are deterministic; they differ from a left-to-right sum by rounding.

use crate::Float;

const LANES: usize = 16;

/// Folds `x` with `f` in [`LANES`] lanes from `init`, then folds the lanes and the tail.
#[inline(always)]
fn lanes<T: Float>(x: &[T], init: T, f: impl Fn(T, T) -> T) -> T {
    let mut acc = [init; LANES];
    let chunks = x.chunks_exact(LANES);
    let tail = chunks.remainder().iter().fold(init, |a, &v| f(a, v));
    for c in chunks {
        for i in 0..LANES {
            acc[i] = f(acc[i], c[i]);
        }
    }
    acc.iter().fold(tail, |a, &v| f(a, v))
}

/// Σ x.
#[inline(always)]
pub fn sum<T: Float>(x: &[T]) -> T {
    lanes(x, T::ZERO, |a, b| a + b)
}

/// max x (−∞ for an empty slice).
#[inline(always)]
pub fn max<T: Float>(x: &[T]) -> T {
    lanes(x, T::from_f64(f64::NEG_INFINITY), T::max)
}

/// Σ a·b over the common length.
#[inline(always)]
pub fn dot<T: Float>(a: &[T], b: &[T]) -> T {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut acc = [T::ZERO; LANES];
    let (ca, cb) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let tail: T = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .fold(T::ZERO, |s, (&x, &y)| s + x * y);
    for (x, y) in ca.zip(cb) {
        for i in 0..LANES {
            acc[i] += x[i] * y[i];
        }
    }
    acc.iter().fold(tail, |s, &v| s + v)
}

/// Σ x², each x widened to f64 (the square of an f32 is then exact), summed in f64 over
/// `LANES` lanes: the sum of squares behind a gradient norm. Only the additions round.
#[inline(always)]
pub fn sum_squares_f64<T: Float>(x: &[T]) -> f64 {
    let sq = |v: T| v.to_f64() * v.to_f64();
    let mut acc = [0f64; LANES];
    let chunks = x.chunks_exact(LANES);
    let tail = chunks.remainder().iter().fold(0.0, |a, &v| a + sq(v));
    for c in chunks {
        for i in 0..LANES {
            acc[i] += sq(c[i]);
        }
    }
    acc.iter().fold(tail, |a, &v| a + v)
}

#[cfg(test)]
mod tests {
    #[test]
    fn match_plain_loops_at_every_length() {
        for n in 0..70 {
            let a: Vec<f64> = (0..n)
                .map(|i| ((i * 37 % 11) as f64 - 5.0) * 0.25)
                .collect();
            let b: Vec<f64> = (0..n).map(|i| ((i * 13 % 7) as f64 - 3.0) * 0.5).collect();
            // Quarter and half multiples: every partial sum is exact, so any order agrees.
            assert_eq!(super::sum(&a), a.iter().sum::<f64>());
            assert_eq!(
                super::dot(&a, &b),
                a.iter().zip(&b).map(|(x, y)| x * y).sum::<f64>()
            );
            let af: Vec<f32> = a.iter().map(|&x| x as f32).collect();
            assert_eq!(
                super::sum_squares_f64(&af),
                a.iter().map(|x| x * x).sum::<f64>()
            );
            let m = a.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            assert_eq!(super::max(&a), m);
        }
    }
}
