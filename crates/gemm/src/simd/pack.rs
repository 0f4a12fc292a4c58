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
//! packed on its own so that slivers can be packed in parallel. Safe code: the source is read
//! through slices, so a wrong stride panics instead of reading out of bounds.

use crate::{Element, Problem};

/// The largest MR of any kernel.
const MAX_MR: usize = 16;

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
    assert!(rows <= mr && mr <= MAX_MR && out.len() == mr * kc);
    if !p.ta {
        // op(A) = A, stored m×k: a row of op(A) is contiguous. Read the `rows` rows in
        // lockstep so that the writes to the sliver are sequential.
        let mut src: [&[T]; MAX_MR] = [&[]; MAX_MR];
        for (i, s) in src.iter_mut().enumerate().take(rows) {
            *s = &p.a[(i0 + i) * p.lda + p0..][..kc];
        }
        let src = &src[..rows];
        for (q, dst) in out.chunks_exact_mut(mr).enumerate() {
            for (d, s) in dst.iter_mut().zip(src) {
                *d = s[q];
            }
        }
    } else {
        // op(A) = Aᵀ, stored k×m: a column of op(A) is contiguous.
        for q in 0..kc {
            let src = &p.a[(p0 + q) * p.lda + i0..][..rows];
            out[q * mr..q * mr + rows].copy_from_slice(src);
        }
    }
    if rows < mr {
        for q in 0..kc {
            out[q * mr + rows..q * mr + mr].fill(T::ZERO);
        }
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
    debug_assert!(cols <= nr && out.len() == nr * kc);
    if !p.tb {
        // op(B) = B, stored k×n: a row of op(B) is contiguous.
        for q in 0..kc {
            let src = &p.b[(p0 + q) * p.ldb + j0..][..cols];
            out[q * nr..q * nr + cols].copy_from_slice(src);
        }
    } else {
        // op(B) = Bᵀ, stored n×k: a column of op(B) is contiguous.
        for j in 0..cols {
            let src = &p.b[(j0 + j) * p.ldb + p0..][..kc];
            for (q, &v) in src.iter().enumerate() {
                out[q * nr + j] = v;
            }
        }
    }
    if cols < nr {
        for q in 0..kc {
            out[q * nr + cols..q * nr + nr].fill(T::ZERO);
        }
    }
}
