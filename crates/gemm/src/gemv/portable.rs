//! The portable kernels (`Kernel::Scalar`): plain Rust over the packed layout of `Matrix`, the
//! path `FERROGPT_ISA=scalar` runs and the fallback on CPUs without AVX2. f32 accumulation in
//! chunk order; int8 exact in i32 per block.

use super::{bf16_to_f32, QuantizedVector, GROUP, Q8_BLOCK};

/// `out[4g + i] = Σ_c W[4g + i, c]·x[c]`: `a` holds `out.len() / 4` packed groups with chunks
/// of `chunk` columns, `x` the padded input (`x.len()` a multiple of `chunk`).
fn groups<T: Copy>(a: &[T], x: &[f32], chunk: usize, out: &mut [f32], f: impl Fn(T) -> f32) {
    let g = x.len() * GROUP;
    for (gi, o) in out.chunks_exact_mut(GROUP).enumerate() {
        let mut s = [0f32; GROUP];
        for (ch, blk) in a[gi * g..(gi + 1) * g]
            .chunks_exact(GROUP * chunk)
            .enumerate()
        {
            let xc = &x[ch * chunk..(ch + 1) * chunk];
            for (i, s) in s.iter_mut().enumerate() {
                let row = &blk[i * chunk..(i + 1) * chunk];
                *s += row.iter().zip(xc).map(|(&a, b)| f(a) * b).sum::<f32>();
            }
        }
        o.copy_from_slice(&s);
    }
}

pub(super) fn groups_f32(a: &[f32], x: &[f32], chunk: usize, out: &mut [f32]) {
    groups(a, x, chunk, out, |v| v)
}

pub(super) fn groups_bf16(a: &[u16], x: &[f32], chunk: usize, out: &mut [f32]) {
    groups(a, x, chunk, out, bf16_to_f32)
}

/// int8: `out[4g + i] = Σ_b d·d_x[b]·Σ_{j<32} q·x_q` over the packed blocks.
pub(super) fn groups_q8(q: &[i8], d: &[f32], xq: &QuantizedVector, out: &mut [f32]) {
    let nb = xq.d.len();
    for (g, o) in out.chunks_exact_mut(GROUP).enumerate() {
        let mut s = [0f32; GROUP];
        for b in 0..nb {
            let xb = &xq.q[b * Q8_BLOCK..(b + 1) * Q8_BLOCK];
            let blk = (g * nb + b) * GROUP;
            for (i, s) in s.iter_mut().enumerate() {
                let w = &q[(blk + i) * Q8_BLOCK..(blk + i + 1) * Q8_BLOCK];
                let dot: i32 = w.iter().zip(xb).map(|(&w, &a)| w as i32 * a as i32).sum();
                *s += d[blk + i] * xq.d[b] * dot as f32;
            }
        }
        o.copy_from_slice(&s);
    }
}

/// `out[j] = Σ_p a[j·ld + p]·x[p]` (row-major; attention scores).
pub(super) fn rows_f32(a: &[f32], ld: usize, x: &[f32], out: &mut [f32]) {
    for (j, o) in out.iter_mut().enumerate() {
        *o = a[j * ld..j * ld + x.len()]
            .iter()
            .zip(x)
            .map(|(a, b)| a * b)
            .sum();
    }
}

/// `out[p] += Σ_j c[j]·a[j·ld + p]` (row-major; attention's weighted values).
pub(super) fn axpy_rows(a: &[f32], ld: usize, c: &[f32], out: &mut [f32]) {
    for (j, &cj) in c.iter().enumerate() {
        let row = &a[j * ld..j * ld + out.len()];
        out.iter_mut().zip(row).for_each(|(o, &v)| *o += cj * v);
    }
}
