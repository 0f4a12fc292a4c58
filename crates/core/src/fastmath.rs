//! Branch-free f32 `exp` and `tanh` that the compiler can vectorise.
//!
//! libm's scalar `expf`/`tanhf` were 28% of a shakespeare-cpu training step (perf, 2026-11-26):
//! GELU calls tanh on every hidden activation, softmax calls exp on every score. These versions
//! are plain arithmetic on lanes, so loops over slices become SIMD loops.
//!
//! * `exp(x)`: `x = k·ln2 + r`, `|r| ≤ ln2/2`, `exp(r)` by its degree-7 Taylor polynomial
//!   (truncation error < 2e-8 relative), `2^k` built in the exponent bits. Relative error about
//!   2e-7 (a few ulp) over the whole range; inputs are clamped to [-87, 88] (no denormals, no
//!   infinity).
//! * `tanh(x) = 1 - 2/(exp(2x) + 1)`: absolute error about 2e-7. Near 0 its *relative* error is
//!   larger than libm's, which is harmless where it is used (GELU adds it to 1).
//!
//! f64, the oracle's precision, keeps the standard library's functions.
//!
//! The polynomial and the range reduction use `mul_add`: one rounding per step, and one FMA
//! instruction each where the target has FMA (x86-64-v3, this workspace's x86_64 target, and
//! every aarch64). Without hardware FMA, `mul_add` is a libm call: correct but slow. Fused, the
//! GELU forward loop ran 1.5× faster than with separate multiplies and adds (in isolation,
//! one thread, machine A of docs/benchmarks.md, 2026-11-26, `310b185`).

const LOG2E: f32 = std::f32::consts::LOG2_E;
// ln 2 split in two so that k·LN2_HI is exact for the k that occur.
const LN2_HI: f32 = 0.693_145_75;
const LN2_LO: f32 = 1.428_606_8e-6;
/// 1.5·2^23: adding and subtracting it rounds a float of magnitude < 2^22 to an integer.
const ROUNDER: f32 = 12_582_912.0;

/// eˣ, relative error about 2e-7; `x` is clamped to [-87, 88] first, so the result is never 0,
/// subnormal or infinite. NaN in, NaN out.
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    let x = x.clamp(-87.0, 88.0);
    // k = round(x/ln2), both as a float and (from the low mantissa bits of the rounded sum) as
    // an integer: no float-to-int conversion, which Rust makes saturating and thus scalar.
    let shifted = x.mul_add(LOG2E, ROUNDER);
    let k = shifted - ROUNDER;
    let ki = shifted.to_bits() as i32 - ROUNDER.to_bits() as i32;
    let r = k.mul_add(-LN2_LO, k.mul_add(-LN2_HI, x));
    // Horner form of Σ_{i≤7} r^i / i!, one fused multiply-add per step.
    let mut p: f32 = 1.0 / 5040.0;
    for c in [
        1.0 / 720.0,
        1.0 / 120.0,
        1.0 / 24.0,
        1.0 / 6.0,
        0.5,
        1.0,
        1.0,
    ] {
        p = p.mul_add(r, c);
    }
    let scale = f32::from_bits(((ki + 127) as u32) << 23);
    p * scale
}

/// tanh x as `1 - 2/(exp(2x) + 1)`: absolute error about 2e-7, exactly ±1 for |x| past about
/// 9. NaN in, NaN out.
#[inline(always)]
pub fn tanh(x: f32) -> f32 {
    1.0 - 2.0 / (exp(2.0 * x) + 1.0)
}

#[cfg(test)]
mod tests {
    #[test]
    fn exp_and_tanh_match_f64() {
        let mut worst_exp = 0.0f64;
        let mut worst_tanh = 0.0f64;
        let mut x = -87.0f32;
        while x < 88.0 {
            let e = super::exp(x) as f64;
            let r = (x as f64).exp();
            worst_exp = worst_exp.max(((e - r) / r).abs());
            let t = super::tanh(x) as f64;
            worst_tanh = worst_tanh.max((t - (x as f64).tanh()).abs());
            x += 0.001_3;
        }
        assert!(worst_exp < 5e-7, "exp relative error {worst_exp:e}");
        assert!(worst_tanh < 5e-7, "tanh absolute error {worst_tanh:e}");
        // Clamped, never 0 or infinite: softmax sums stay finite and positive.
        assert!(super::exp(-1000.0) > 0.0 && super::exp(1000.0).is_finite());
        assert_eq!(super::tanh(50.0), 1.0);
        assert_eq!(super::tanh(-50.0), -1.0);
        assert!(super::exp(f32::NAN).is_nan() && super::tanh(f32::NAN).is_nan());
    }
}
