//! The oracle: f64 products on the CPU, f16 rounding, the error measure and seeded inputs.
//!
//! The full product is the CPU ladder's naive level (`ferrogpt_gemm`, `Level::Naive`) in f64,
//! the oracle of every rung there too. `max_rel_err` = max |C − C_ref| / max |C_ref| (the same
//! measure as the CPU and CUDA benchmarks): the largest error relative to the size of C's
//! entries. NaN never passes (it compares as infinite).

use rand::{Rng, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;

/// C (m×n) = A (m×k) · B (k×n) in f64, row-major, by the CPU ladder's naive level.
///
/// # Panics
/// If `a` is not m·k long or `b` not k·n (a bug in the caller, not an input error).
pub fn matmul_f64(m: usize, n: usize, k: usize, a: &[f32], b: &[f32]) -> Vec<f64> {
    assert!(
        a.len() == m * k && b.len() == k * n,
        "oracle: operand lengths"
    );
    let wide = |x: &[f32]| x.iter().map(|&v| v as f64).collect::<Vec<f64>>();
    let (a, b) = (wide(a), wide(b));
    let mut c = vec![0.0f64; m * n];
    ferrogpt_gemm::matmul(
        ferrogpt_gemm::Level::Naive,
        false,
        false,
        m,
        n,
        k,
        &a,
        k,
        &b,
        n,
        &mut c,
        n,
        false,
    )
    .expect("the naive level takes every shape whose lengths match");
    c
}

/// One entry of A·B in f64 (the benchmark checks sampled entries of large products).
pub fn entry_f64(n: usize, k: usize, a: &[f32], b: &[f32], i: usize, j: usize) -> f64 {
    (0..k)
        .map(|p| a[i * k + p] as f64 * b[p * n + j] as f64)
        .sum()
}

/// `x` rounded to the nearest f16 (ties to even), as f32: what the f16 rung reads.
pub fn round_f16(x: f32) -> f32 {
    half::f16::from_f32(x).to_f32()
}

/// max |c − r| / max |r| over the pairs; infinite if any c is not finite.
pub fn max_rel_err(c: impl IntoIterator<Item = (f32, f64)>) -> f64 {
    let (mut err, mut scale) = (0.0f64, 0.0f64);
    for (x, r) in c {
        if !x.is_finite() {
            return f64::INFINITY;
        }
        err = err.max((x as f64 - r).abs());
        scale = scale.max(r.abs());
    }
    if scale == 0.0 {
        err
    } else {
        err / scale
    }
}

/// `len` values uniform in [-1, 1), the same for the same seed.
pub fn random(seed: u64, len: usize) -> Vec<f32> {
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
    (0..len).map(|_| rng.gen_range(-1.0f32..1.0)).collect()
}
