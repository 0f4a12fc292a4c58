//! The x86_64 microkernels: AVX-512F and AVX2+FMA, f32 and f64, written with `std::arch`.
//!
//! Each kernel keeps an MR×NR tile of C in vector registers (MR rows × NV vectors of LANES
//! elements, NR = NV·LANES) and walks the packed slivers once:
//!
//! ```text
//! for p in 0..kc:                         // one rank-1 update per step
//!     b0..b(NV-1) = load NR elements of b̃ row p
//!     for i in 0..MR:  c[i][v] += broadcast(ã[p*step + i]) * b[v]    (MR·NV FMAs)
//! ```
//!
//! `step` is MR for a packed Ã sliver and lda for op(A) = Aᵀ read in place. Each kernel has a
//! second instantiation (`run_direct`) that reads op(A) = A in place, `a_row_i[p]` through MR
//! row pointers (two of them spill to the stack with AVX-512 f32: two extra L1 loads per step).
//!
//! AVX-512: 12×32 f32 / 12×16 f64 tiles, 24 zmm accumulators, 2 for B and 1 broadcast of 32
//! registers. AVX2: 6×16 f32 / 6×8 f64, 12 ymm accumulators, 2 for B and 1 broadcast of 16
//! registers (the classic Goto/BLIS haswell shape).
//!
//! The loops over MR and NV have constant bounds; the compiler unrolls them and keeps `acc` in
//! registers (checked in the disassembly: no accumulator spills in the k loop).

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

use super::kernel::Microkernel;
use super::{Blocking, AVX2_F32, AVX2_F64, AVX512_F32, AVX512_F64};
use crate::transpose::transpose16;

macro_rules! kernel {
    ($name:ident, $inner:ident, $t:ty, $feat:literal, $v:ty, $lanes:expr, $blocking:expr,
     $zero:ident, $load:ident, $set1:ident, $fma:ident, $add:ident, $store:ident) => {
        pub(crate) struct $name;

        impl Microkernel<$t> for $name {
            const BLOCKING: Blocking = $blocking;

            #[inline]
            unsafe fn run(
                kc: usize,
                a: *const $t,
                astep: usize,
                b: *const $t,
                c: *mut $t,
                ldc: usize,
                accumulate: bool,
                bias: *const $t,
            ) {
                // SAFETY: forwarded contract; the driver only selects this kernel after
                // checking that the CPU supports its ISA.
                unsafe { $inner::<false>(kc, a, astep, 0, b, c, ldc, accumulate, bias) }
            }

            #[inline]
            unsafe fn run_direct(
                kc: usize,
                a: *const $t,
                lda: usize,
                rows: usize,
                b: *const $t,
                c: *mut $t,
                ldc: usize,
                accumulate: bool,
                bias: *const $t,
            ) {
                // SAFETY: as `run`.
                unsafe { $inner::<true>(kc, a, lda, rows, b, c, ldc, accumulate, bias) }
            }
        }

        /// The kernel; `DIRECT`: A read in place (element (i, p) at `a[i·stride + p]`, rows ≥
        /// `rows` read row `rows - 1` again), else MR consecutive elements per step
        /// (`a[p·stride + i]`: a packed Ã sliver with stride MR, or Aᵀ in place).
        #[target_feature(enable = $feat)]
        #[allow(clippy::too_many_arguments)]
        unsafe fn $inner<const DIRECT: bool>(
            kc: usize,
            a: *const $t,
            stride: usize,
            rows: usize,
            mut b: *const $t,
            c: *mut $t,
            ldc: usize,
            accumulate: bool,
            bias: *const $t,
        ) {
            const MR: usize = $blocking.mr;
            const NV: usize = $blocking.nr / $lanes;
            // Start fetching the C tile now; it is needed only after the k loop, and its rows
            // are a whole row stride apart (often 4 KiB: L1 set conflicts, TLB misses).
            for i in 0..MR {
                // SAFETY: prefetch never faults; the address is inside the C tile anyway.
                unsafe {
                    let row = c.add(i * ldc) as *const i8;
                    _mm_prefetch::<_MM_HINT_T0>(row);
                    _mm_prefetch::<_MM_HINT_T0>(
                        row.add(NV * $lanes * std::mem::size_of::<$t>() - 1),
                    );
                }
            }
            // Direct: one pointer per row of A (the last real row stands in for missing ones).
            // SAFETY: rows ≥ 1 and every row i < rows is readable for kc elements.
            let arow: [*const $t; MR] = if DIRECT {
                std::array::from_fn(|i| unsafe { a.add(i.min(rows - 1) * stride) })
            } else {
                [a; MR]
            };
            let mut acc: [[$v; NV]; MR] = [[$zero(); NV]; MR];
            for p in 0..kc {
                let mut bv: [$v; NV] = [$zero(); NV];
                for (v, slot) in bv.iter_mut().enumerate() {
                    // SAFETY: b̃ holds NR = NV·LANES elements per step for kc steps.
                    *slot = unsafe { $load(b.add(v * $lanes)) };
                }
                for (i, row) in acc.iter_mut().enumerate() {
                    // SAFETY: strided, MR elements are readable at each of the kc steps;
                    // direct, row i's pointer is readable for kc elements.
                    let ai = $set1(unsafe {
                        if DIRECT {
                            *arow[i].add(p)
                        } else {
                            *a.add(p * stride + i)
                        }
                    });
                    for (slot, &bvv) in row.iter_mut().zip(bv.iter()) {
                        *slot = $fma(ai, bvv, *slot);
                    }
                }
                // SAFETY: stays within (or one past) the sliver.
                b = unsafe { b.add(NV * $lanes) };
            }
            // The bias row, loaded once.
            let mut bv: [$v; NV] = [$zero(); NV];
            let with_bias = !bias.is_null();
            if with_bias {
                for (v, slot) in bv.iter_mut().enumerate() {
                    // SAFETY: a non-null bias holds NR = NV·LANES elements.
                    *slot = unsafe { $load(bias.add(v * $lanes)) };
                }
            }
            for (i, row) in acc.iter().enumerate() {
                for (v, &x) in row.iter().enumerate() {
                    // SAFETY: the caller hands us an MR×NR tile of C with row stride ldc.
                    unsafe {
                        let dst = c.add(i * ldc + v * $lanes);
                        let y = if accumulate {
                            $add($load(dst), x)
                        } else if with_bias {
                            $add(x, bv[v])
                        } else {
                            x
                        };
                        $store(dst, y);
                    }
                }
            }
        }
    };
}

kernel!(
    Avx512F32,
    avx512_f32,
    f32,
    "avx512f",
    __m512,
    16,
    AVX512_F32,
    _mm512_setzero_ps,
    _mm512_loadu_ps,
    _mm512_set1_ps,
    _mm512_fmadd_ps,
    _mm512_add_ps,
    _mm512_storeu_ps
);
kernel!(
    Avx512F64,
    avx512_f64,
    f64,
    "avx512f",
    __m512d,
    8,
    AVX512_F64,
    _mm512_setzero_pd,
    _mm512_loadu_pd,
    _mm512_set1_pd,
    _mm512_fmadd_pd,
    _mm512_add_pd,
    _mm512_storeu_pd
);
kernel!(
    Avx2F32,
    avx2_f32,
    f32,
    "avx2,fma",
    __m256,
    8,
    AVX2_F32,
    _mm256_setzero_ps,
    _mm256_loadu_ps,
    _mm256_set1_ps,
    _mm256_fmadd_ps,
    _mm256_add_ps,
    _mm256_storeu_ps
);
kernel!(
    Avx2F64,
    avx2_f64,
    f64,
    "avx2,fma",
    __m256d,
    4,
    AVX2_F64,
    _mm256_setzero_pd,
    _mm256_loadu_pd,
    _mm256_set1_pd,
    _mm256_fmadd_pd,
    _mm256_add_pd,
    _mm256_storeu_pd
);

/// The packing move "gather" for f32 with AVX-512 (see `pack.rs`): out[q*w + i] =
/// src[i*ld + q] for i < rows, q < kc, and 0 for rows ≤ i < w (w ≤ 32). Per 16 rows and 16
/// columns: 16 (masked) row loads, an in-register transpose, 16 masked stores. (The portable
/// version moves one scalar at a time through the stack: 10% of a small training step; a
/// `vgatherdps` per column and 16 rows, the previous version, costs a load per element.)
///
/// # Safety
/// AVX-512F present; `src[i*ld + q]` readable for i < rows, q < kc; `out` writable for
/// `kc * w` elements.
#[target_feature(enable = "avx512f")]
pub(crate) unsafe fn gather_f32(
    src: *const f32,
    ld: usize,
    rows: usize,
    kc: usize,
    w: usize,
    out: *mut f32,
) {
    debug_assert!(w <= 32 && rows <= w);
    for h in 0..w.div_ceil(16) {
        let lanes = (w - 16 * h).min(16);
        let live = rows.saturating_sub(16 * h).min(16);
        let store_mask = ((1u32 << lanes) - 1) as u16;
        for q0 in (0..kc).step_by(16) {
            let cols = (kc - q0).min(16);
            let load_mask = ((1u32 << cols) - 1) as u16;
            let mut v = [_mm512_setzero_si512(); 16];
            for (i, x) in v.iter_mut().enumerate().take(live) {
                // SAFETY: row 16h + i < rows, columns q0 .. q0 + cols < kc: readable; the
                // masked-off lanes read nothing.
                *x = unsafe {
                    _mm512_castps_si512(_mm512_maskz_loadu_ps(
                        load_mask,
                        src.add((16 * h + i) * ld + q0),
                    ))
                };
            }
            transpose16(&mut v);
            for (q, &x) in v.iter().enumerate().take(cols) {
                // SAFETY: out holds kc·w elements; lanes 16h .. 16h + lanes ≤ w of row q0 + q.
                unsafe {
                    _mm512_mask_storeu_ps(
                        out.add((q0 + q) * w + 16 * h),
                        store_mask,
                        _mm512_castsi512_ps(x),
                    )
                };
            }
        }
    }
}
