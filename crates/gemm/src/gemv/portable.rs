//! The portable kernels (`Kernel::Scalar`): plain Rust, the path `FERROGPT_ISA=scalar` runs and
//! the fallback on CPUs without AVX2. f32 accumulation in index order; int8 exact in i32 per
//! block.

use super::{bf16_to_f32, QuantizedVector, Q8_BLOCK};

/// `out[j] = Σ_p a[j·ld + p]·x[p]`.
pub(super) fn rows_f32(a: &[f32], ld: usize, x: &[f32], out: &mut [f32]) {
    for (j, o) in out.iter_mut().enumerate() {
        *o = a[j * ld..j * ld + x.len()]
            .iter()
            .zip(x)
            .map(|(a, b)| a * b)
            .sum();
    }
}

/// `out[j] = Σ_p bf16(a[j·ld + p])·x[p]`.
pub(super) fn rows_bf16(a: &[u16], ld: usize, x: &[f32], out: &mut [f32]) {
    for (j, o) in out.iter_mut().enumerate() {
        *o = a[j * ld..j * ld + x.len()]
            .iter()
            .zip(x)
            .map(|(&a, b)| bf16_to_f32(a) * b)
            .sum();
    }
}

/// `out[j] = Σ_b d[j·nb + b]·xq.d[b]·Σ_{i<32} q[j·cp + 32b + i]·xq.q[32b + i]`.
pub(super) fn rows_q8(q: &[i8], d: &[f32], nb: usize, xq: &QuantizedVector, out: &mut [f32]) {
    let cp = nb * Q8_BLOCK;
    for (j, o) in out.iter_mut().enumerate() {
        let mut acc = 0f32;
        for b in 0..nb {
            let w = &q[j * cp + b * Q8_BLOCK..][..Q8_BLOCK];
            let a = &xq.q[b * Q8_BLOCK..][..Q8_BLOCK];
            let dot: i32 = w.iter().zip(a).map(|(&w, &a)| w as i32 * a as i32).sum();
            acc += d[j * nb + b] * xq.d[b] * dot as f32;
        }
        *o = acc;
    }
}

/// `out[p] += Σ_j c[j]·a[j·ld + p]`.
pub(super) fn axpy_rows(a: &[f32], ld: usize, c: &[f32], out: &mut [f32]) {
    for (j, &cj) in c.iter().enumerate() {
        let row = &a[j * ld..j * ld + out.len()];
        out.iter_mut().zip(row).for_each(|(o, &v)| *o += cj * v);
    }
}
