//! The oracle: f64 products on the CPU, bf16 rounding, and the error measure.
//!
//! `max_rel_err` = max |C − C_ref| / max |C_ref| (the same measure as `ferrogpt-gemm`'s bench):
//! the largest error relative to the size of C's entries. NaN never passes (it compares as
//! infinite).

/// Rounds an f32 to the nearest bf16 (ties to even), returned as f32. NaN stays NaN.
pub fn round_bf16(x: f32) -> f32 {
    f32::from_bits((bf16_bits(x) as u32) << 16)
}

/// The bf16 bit pattern nearest to `x` (ties to even); the same rounding as `convert.cu`.
pub fn bf16_bits(x: f32) -> u16 {
    let u = x.to_bits();
    if (u & 0x7fff_ffff) > 0x7f80_0000 {
        return 0x7fc0;
    }
    ((u + 0x7fff + ((u >> 16) & 1)) >> 16) as u16
}

/// C (m×n) = A (m×k) · B (k×n) in f64, row-major.
pub fn matmul_f64(m: usize, n: usize, k: usize, a: &[f32], b: &[f32]) -> Vec<f64> {
    let mut c = vec![0.0f64; m * n];
    for i in 0..m {
        let row = &mut c[i * n..(i + 1) * n];
        for p in 0..k {
            let aip = a[i * k + p] as f64;
            for (cj, bj) in row.iter_mut().zip(&b[p * n..(p + 1) * n]) {
                *cj += aip * *bj as f64;
            }
        }
    }
    c
}

/// One entry of A·B in f64.
pub fn entry_f64(n: usize, k: usize, a: &[f32], b: &[f32], i: usize, j: usize) -> f64 {
    (0..k)
        .map(|p| a[i * k + p] as f64 * b[p * n + j] as f64)
        .sum()
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

/// A small, fast, seeded generator of uniform values in [-1, 1) (xorshift64*), so that the
/// tests and the benchmark need no dependency and draw fresh inputs from a seed.
pub struct Rng(u64);

impl Rng {
    /// A generator from `seed`; every seed, 0 included, gives a usable state.
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    /// The next value, uniform in [-1, 1) on a grid of 2⁻²³.
    pub fn next_f32(&mut self) -> f32 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        let x = self.0.wrapping_mul(0x2545_F491_4F6C_DD1D);
        ((x >> 40) as f32) / (1u64 << 23) as f32 - 1.0
    }
    /// `len` next values, in order: a matrix of that many entries.
    pub fn vec(&mut self, len: usize) -> Vec<f32> {
        (0..len).map(|_| self.next_f32()).collect()
    }
}
