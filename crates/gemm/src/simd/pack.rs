//! Packing for the `simd` level: copies a block of op(A) or op(B) into the contiguous,
//! microkernel-ordered layout the kernel streams through (BLIS's Ã and B̃).
//!
//! ```text
//! Ã sliver s (MR rows of op(A), kc columns):  a[s*MR*kc + p*MR + i] = op(A)[i0 + s*MR + i, p0 + p]
//! B̃ sliver s (kc rows of op(B), NR columns):  b[s*NR*kc + p*NR + j] = op(B)[p0 + p, j0 + s*NR + j]
//! ```
//!
//! Rows (of Ã) and columns (of B̃) past the edge of the matrix are zero, so the microkernel
//! always computes a full MR×NR tile; the driver keeps only the valid part. Each sliver is
//! packed on its own so that slivers can be packed in parallel.
//!
//! Both packings are one of two moves on the stored matrix: *copy* (the sliver's rows are
//! contiguous in memory: op(B) = B, op(A) = Aᵀ) or *gather* (the sliver interleaves W stored
//! rows: op(A) = A, op(B) = Bᵀ). Gather reads the W rows in lockstep, 8 columns at a time, with
//! W fixed at compile time for the kernels' MR and NR; it was the bottleneck before
//! (≈ 1 ns per element, a third of the time of a 240×320×384 product; now ≈ 0.1 ns).
//! Safe code: the source is read through slices, so a wrong stride panics instead of reading
//! out of bounds. The exception: with the AVX-512 kernel, f32 gathers load 16 rows × 16
//! columns and transpose them in registers (`x86::gather_f32`, bounds asserted here first).

use crate::{Element, Problem};

/// The largest MR or NR of any kernel.
const MAX_W: usize = 32;

/// Packs one Ã sliver: rows `i0 .. i0 + rows` (rows ≤ `mr`) and columns `p0 .. p0 + kc` of
/// op(A) into `out` (`mr * kc` elements).
pub(crate) fn pack_a_sliver<T: Element>(
    p: &Problem<'_, T>,
    i0: usize,
    rows: usize,
    p0: usize,
    kc: usize,
    mr: usize,
    out: &mut [T],
) {
    assert!(rows <= mr && mr <= MAX_W && out.len() == mr * kc);
    if !p.ta {
        // op(A) = A, stored m×k: op(A)'s rows are stored rows.
        gather(p.a, p.lda, i0, rows, p0, kc, mr, out);
    } else {
        // op(A) = Aᵀ, stored k×m: the sliver's row p is stored row p0 + p.
        copy(p.a, p.lda, p0, kc, i0, rows, mr, out);
    }
}

/// Packs one B̃ sliver: rows `p0 .. p0 + kc` and columns `j0 .. j0 + cols` (cols ≤ `nr`) of
/// op(B) into `out` (`nr * kc` elements).
pub(crate) fn pack_b_sliver<T: Element>(
    p: &Problem<'_, T>,
    p0: usize,
    kc: usize,
    j0: usize,
    cols: usize,
    nr: usize,
    out: &mut [T],
) {
    assert!(cols <= nr && nr <= MAX_W && out.len() == nr * kc);
    if !p.tb {
        // op(B) = B, stored k×n: the sliver's row p is stored row p0 + p.
        copy(p.b, p.ldb, p0, kc, j0, cols, nr, out);
    } else {
        // op(B) = Bᵀ, stored n×k: op(B)'s columns are stored rows.
        gather(p.b, p.ldb, j0, cols, p0, kc, nr, out);
    }
}

/// out[q*w + i] = src[(r0 + i)*ld + c0 + q] for i < rows, q < kc; zero for rows ≤ i < w.
#[allow(clippy::too_many_arguments)]
fn copy<T: Element>(
    src: &[T],
    ld: usize,
    r0: usize,
    kc: usize,
    c0: usize,
    cols: usize,
    w: usize,
    out: &mut [T],
) {
    debug_assert_eq!(out.len(), kc * w);
    // Full slivers move W elements per row as one fixed-size value (vector moves inline; a
    // `copy_from_slice` of 48 or 128 bytes is a libc call per row, 8% of a training step).
    match (w, cols) {
        (32, 32) => return copy_fixed::<T, 32>(src, ld, r0, c0, out),
        (16, 16) => return copy_fixed::<T, 16>(src, ld, r0, c0, out),
        (12, 12) => return copy_fixed::<T, 12>(src, ld, r0, c0, out),
        (8, 8) => return copy_fixed::<T, 8>(src, ld, r0, c0, out),
        (6, 6) => return copy_fixed::<T, 6>(src, ld, r0, c0, out),
        _ => {}
    }
    for (q, dst) in out.chunks_exact_mut(w).enumerate() {
        dst[..cols].copy_from_slice(&src[(r0 + q) * ld + c0..][..cols]);
        dst[cols..].fill(T::ZERO);
    }
}

/// `copy` of a full sliver, W elements per row.
#[inline(always)]
fn copy_fixed<T: Element, const W: usize>(
    src: &[T],
    ld: usize,
    r0: usize,
    c0: usize,
    out: &mut [T],
) {
    for (q, dst) in out.chunks_exact_mut(W).enumerate() {
        let row: &[T; W] = src[(r0 + q) * ld + c0..][..W]
            .try_into()
            .expect("W columns");
        let dst: &mut [T; W] = dst.try_into().expect("W columns");
        *dst = *row;
    }
}

/// out[q*w + i] = src[(r0 + i)*ld + c0 + q] for i < rows, q < kc; zero for rows ≤ i < w.
#[allow(clippy::too_many_arguments)]
fn gather<T: Element>(
    src: &[T],
    ld: usize,
    r0: usize,
    rows: usize,
    c0: usize,
    kc: usize,
    w: usize,
    out: &mut [T],
) {
    #[cfg(target_arch = "x86_64")]
    if let Some((src32, out32)) = as_f32(src, out) {
        if kc > 0 && rows > 0 && matches!(super::active_isa(), Ok(super::Isa::Avx512)) {
            // Bounds for the unsafe reads: the last element read is row r0 + rows - 1,
            // column c0 + kc - 1.
            let first = r0 * ld + c0;
            assert!(first + (rows - 1) * ld + kc <= src32.len() && out32.len() == kc * w);
            // SAFETY: AVX-512F checked (the active ISA); the reads are in bounds and `out`
            // holds kc·w elements (both asserted above); w ≤ 32 (asserted by the callers).
            unsafe {
                super::x86::gather_f32(src32[first..].as_ptr(), ld, rows, kc, w, out32.as_mut_ptr())
            };
            return;
        }
    }
    match (w, rows) {
        (32, 32) => gather_fixed::<T, 32>(src, ld, r0, c0, kc, out),
        (16, 16) => gather_fixed::<T, 16>(src, ld, r0, c0, kc, out),
        (12, 12) => gather_fixed::<T, 12>(src, ld, r0, c0, kc, out),
        (8, 8) => gather_fixed::<T, 8>(src, ld, r0, c0, kc, out),
        (6, 6) => gather_fixed::<T, 6>(src, ld, r0, c0, kc, out),
        (4, 4) => gather_fixed::<T, 4>(src, ld, r0, c0, kc, out),
        _ => {
            // Edge slivers: the same move, one element at a time.
            let mut rows_src: [&[T]; MAX_W] = [&[]; MAX_W];
            for (i, s) in rows_src.iter_mut().enumerate().take(rows) {
                *s = &src[(r0 + i) * ld + c0..][..kc];
            }
            for (q, dst) in out.chunks_exact_mut(w).enumerate() {
                for (d, s) in dst.iter_mut().zip(&rows_src[..rows]) {
                    *d = s[q];
                }
                dst[rows..].fill(T::ZERO);
            }
        }
    }
}

/// `src` and `out` as f32 slices when `T` is f32.
#[cfg(target_arch = "x86_64")]
fn as_f32<'a, T: Element>(src: &'a [T], out: &'a mut [T]) -> Option<(&'a [f32], &'a mut [f32])> {
    if T::NAME != "f32" {
        return None;
    }
    // SAFETY: T is f32 (Element is sealed: f32 and f64 only, told apart by NAME), so the
    // slices are reinterpreted as themselves.
    unsafe {
        Some((
            std::slice::from_raw_parts(src.as_ptr() as *const f32, src.len()),
            std::slice::from_raw_parts_mut(out.as_mut_ptr() as *mut f32, out.len()),
        ))
    }
}

/// `gather` for a full sliver of W rows, 8 columns at a time.
#[inline(always)]
fn gather_fixed<T: Element, const W: usize>(
    src: &[T],
    ld: usize,
    r0: usize,
    c0: usize,
    kc: usize,
    out: &mut [T],
) {
    let rows: [&[T]; W] = std::array::from_fn(|i| &src[(r0 + i) * ld + c0..][..kc]);
    let full = kc / 8 * 8;
    for (q8, out8) in out[..full * W].chunks_exact_mut(8 * W).enumerate() {
        let block: [[T; 8]; W] =
            std::array::from_fn(|i| rows[i][q8 * 8..q8 * 8 + 8].try_into().expect("8 columns"));
        for q in 0..8 {
            for i in 0..W {
                out8[q * W + i] = block[i][q];
            }
        }
    }
    for q in full..kc {
        for i in 0..W {
            out[q * W + i] = rows[i][q];
        }
    }
}
