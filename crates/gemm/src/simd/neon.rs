//! The aarch64 microkernels: NEON (Advanced SIMD), f32 and f64, written with `std::arch`.
//!
//! NEON is part of the AArch64 base architecture (every aarch64 Linux and macOS target enables
//! it), so these kernels need no runtime detection. Each keeps an MR×NR tile of C in 128-bit
//! registers (MR rows × NV vectors of LANES elements, NR = NV·LANES) and walks the packed
//! slivers once:
//!
//! ```text
//! for p in 0..kc:                               // one rank-1 update per step
//!     b0..b(NV-1) = load NR elements of b̃ row p
//!     a0..a(NA-1) = load MR elements of ã step p   (NA = MR / LANES registers)
//!     for i in 0..MR, v in 0..NV:
//!         c[i][v] += b[v] · a(i / LANES)[i % LANES]   (FMLA by element: MR·NV FMAs)
//! ```
//!
//! f32: 8×12 tile, 24 `float32x4_t` accumulators + 3 for B̃ + 2 for Ã = 29 of the 32 vector
//! registers. f64: 8×6 tile, 24 `float64x2_t` accumulators + 3 for B̃ + 4 for Ã = 31.
//!
//! Where the x86 kernels broadcast each element of Ã into a register of its own before the FMA,
//! NEON's by-element FMLA (`vfmaq_laneq_*`) takes its multiplier from one lane of a register:
//! the MR elements of a step cost MR/LANES vector loads and no broadcasts, so the k loop has
//! 5 (f32) or 7 (f64) loads per 24 FMAs.
//!
//! `run_direct` reads op(A) = A in place through MR row pointers: the step's MR elements then
//! lie in MR different rows, and each is loaded as a scalar and used as lane 0 (`vfmaq_n_*`):
//! MR scalar loads per step instead of MR/LANES vector loads.
//!
//! The loops over MR, NV and NA have constant bounds; the compiler unrolls them, folds the lane
//! choice and keeps `acc` in registers (checked in the aarch64 disassembly: by-element `fmla`,
//! no stack traffic in the k loop). Block sizes: `NEON_F32`, `NEON_F64` in `mod.rs`.

use std::arch::aarch64::*;

use super::kernel::Microkernel;
use super::{Blocking, NEON_F32, NEON_F64};

/// The NEON operations a kernel needs, for one element type's 128-bit vector.
trait Vector: Copy {
    type Elem: Copy;
    /// Elements per 128-bit register.
    const LANES: usize;
    fn zero() -> Self;
    /// # Safety
    /// `p` is readable for `LANES` elements (no alignment needed).
    unsafe fn load(p: *const Self::Elem) -> Self;
    /// # Safety
    /// `p` is writable for `LANES` elements (no alignment needed).
    unsafe fn store(p: *mut Self::Elem, v: Self);
    fn add(x: Self, y: Self) -> Self;
    /// `acc + b · a[lane]`, fused (FMLA by element); `lane < LANES`.
    fn fma_lane(acc: Self, b: Self, a: Self, lane: usize) -> Self;
    /// `acc + b · s`, fused.
    fn fma_scalar(acc: Self, b: Self, s: Self::Elem) -> Self;
}

// The intrinsics below are `#[target_feature(enable = "neon")]` functions, so each call is an
// unsafe block: NEON is part of every aarch64 target this crate builds for (the build enables
// it), which is what their safety needs. (These helpers cannot carry `#[target_feature]`
// themselves: it does not combine with `#[inline(always)]`.) The `lane` matches fold away once
// the kernel's loops are unrolled and the lane is a constant.

impl Vector for float32x4_t {
    type Elem = f32;
    const LANES: usize = 4;
    #[inline(always)]
    fn zero() -> Self {
        // SAFETY: NEON is enabled on every aarch64 target (above).
        unsafe { vdupq_n_f32(0.0) }
    }
    #[inline(always)]
    unsafe fn load(p: *const f32) -> Self {
        // SAFETY: the caller guarantees 4 readable elements; NEON as above.
        unsafe { vld1q_f32(p) }
    }
    #[inline(always)]
    unsafe fn store(p: *mut f32, v: Self) {
        // SAFETY: the caller guarantees 4 writable elements; NEON as above.
        unsafe { vst1q_f32(p, v) }
    }
    #[inline(always)]
    fn add(x: Self, y: Self) -> Self {
        // SAFETY: NEON is enabled on every aarch64 target (above).
        unsafe { vaddq_f32(x, y) }
    }
    #[inline(always)]
    fn fma_lane(acc: Self, b: Self, a: Self, lane: usize) -> Self {
        // SAFETY: NEON is enabled on every aarch64 target (above).
        unsafe {
            match lane {
                0 => vfmaq_laneq_f32::<0>(acc, b, a),
                1 => vfmaq_laneq_f32::<1>(acc, b, a),
                2 => vfmaq_laneq_f32::<2>(acc, b, a),
                _ => vfmaq_laneq_f32::<3>(acc, b, a),
            }
        }
    }
    #[inline(always)]
    fn fma_scalar(acc: Self, b: Self, s: f32) -> Self {
        // SAFETY: NEON is enabled on every aarch64 target (above).
        unsafe { vfmaq_n_f32(acc, b, s) }
    }
}

impl Vector for float64x2_t {
    type Elem = f64;
    const LANES: usize = 2;
    #[inline(always)]
    fn zero() -> Self {
        // SAFETY: NEON is enabled on every aarch64 target (above).
        unsafe { vdupq_n_f64(0.0) }
    }
    #[inline(always)]
    unsafe fn load(p: *const f64) -> Self {
        // SAFETY: the caller guarantees 2 readable elements; NEON as above.
        unsafe { vld1q_f64(p) }
    }
    #[inline(always)]
    unsafe fn store(p: *mut f64, v: Self) {
        // SAFETY: the caller guarantees 2 writable elements; NEON as above.
        unsafe { vst1q_f64(p, v) }
    }
    #[inline(always)]
    fn add(x: Self, y: Self) -> Self {
        // SAFETY: NEON is enabled on every aarch64 target (above).
        unsafe { vaddq_f64(x, y) }
    }
    #[inline(always)]
    fn fma_lane(acc: Self, b: Self, a: Self, lane: usize) -> Self {
        // SAFETY: NEON is enabled on every aarch64 target (above).
        unsafe {
            match lane {
                0 => vfmaq_laneq_f64::<0>(acc, b, a),
                _ => vfmaq_laneq_f64::<1>(acc, b, a),
            }
        }
    }
    #[inline(always)]
    fn fma_scalar(acc: Self, b: Self, s: f64) -> Self {
        // SAFETY: NEON is enabled on every aarch64 target (above).
        unsafe { vfmaq_n_f64(acc, b, s) }
    }
}

/// The kernel for vectors `V`: an MR×(NV·LANES) tile, NA = MR / LANES registers of Ã per step.
/// `DIRECT`: A read in place (element (i, p) at `a[i·stride + p]`; rows ≥ `rows` read row
/// `rows - 1` again), else MR consecutive elements per step (`a[p·stride + i]`: a packed Ã
/// sliver with stride MR, or Aᵀ in place).
///
/// # Safety
/// The contract of [`Microkernel::run`] (or `run_direct` with `DIRECT`), with MR and
/// NR = NV·LANES.
#[target_feature(enable = "neon")]
#[allow(clippy::too_many_arguments)]
unsafe fn tile<V: Vector, const MR: usize, const NV: usize, const NA: usize, const DIRECT: bool>(
    kc: usize,
    a: *const V::Elem,
    stride: usize,
    rows: usize,
    mut b: *const V::Elem,
    c: *mut V::Elem,
    ldc: usize,
    accumulate: bool,
    bias: *const V::Elem,
) {
    let lanes = V::LANES;
    debug_assert!(NA * lanes == MR);
    // Direct: one pointer per row of A (the last real row stands in for missing ones).
    // SAFETY: rows ≥ 1 and every row i < rows is readable for kc elements.
    let arow: [*const V::Elem; MR] = if DIRECT {
        std::array::from_fn(|i| unsafe { a.add(i.min(rows - 1) * stride) })
    } else {
        [a; MR]
    };
    let mut acc: [[V; NV]; MR] = [[V::zero(); NV]; MR];
    for p in 0..kc {
        let mut bv: [V; NV] = [V::zero(); NV];
        for (v, slot) in bv.iter_mut().enumerate() {
            // SAFETY: b̃ holds NR = NV·LANES elements per step for kc steps.
            *slot = unsafe { V::load(b.add(v * lanes)) };
        }
        if DIRECT {
            for (i, row) in acc.iter_mut().enumerate() {
                // SAFETY: row i's pointer is readable for kc elements.
                let s = unsafe { *arow[i].add(p) };
                for (slot, &bvv) in row.iter_mut().zip(bv.iter()) {
                    *slot = V::fma_scalar(*slot, bvv, s);
                }
            }
        } else {
            let mut av: [V; NA] = [V::zero(); NA];
            for (q, slot) in av.iter_mut().enumerate() {
                // SAFETY: MR = NA·LANES elements are readable at each of the kc steps.
                *slot = unsafe { V::load(a.add(p * stride + q * lanes)) };
            }
            for (i, row) in acc.iter_mut().enumerate() {
                for (slot, &bvv) in row.iter_mut().zip(bv.iter()) {
                    *slot = V::fma_lane(*slot, bvv, av[i / lanes], i % lanes);
                }
            }
        }
        // SAFETY: stays within (or one past) the sliver.
        b = unsafe { b.add(NV * lanes) };
    }
    // The bias row, loaded once.
    let mut bv: [V; NV] = [V::zero(); NV];
    let with_bias = !bias.is_null();
    if with_bias {
        for (v, slot) in bv.iter_mut().enumerate() {
            // SAFETY: a non-null bias holds NR = NV·LANES elements.
            *slot = unsafe { V::load(bias.add(v * lanes)) };
        }
    }
    for (i, row) in acc.iter().enumerate() {
        for (v, &x) in row.iter().enumerate() {
            // SAFETY: the caller hands us an MR×NR tile of C with row stride ldc.
            unsafe {
                let dst = c.add(i * ldc + v * lanes);
                let y = if accumulate {
                    V::add(V::load(dst), x)
                } else if with_bias {
                    V::add(x, bv[v])
                } else {
                    x
                };
                V::store(dst, y);
            }
        }
    }
}

macro_rules! kernel {
    ($name:ident, $t:ty, $v:ty, $blocking:expr) => {
        pub(crate) struct $name;

        impl $name {
            const MR: usize = $blocking.mr;
            const NV: usize = $blocking.nr / <$v as Vector>::LANES;
            const NA: usize = $blocking.mr / <$v as Vector>::LANES;
        }

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
                // SAFETY: forwarded contract; NEON is present on every aarch64 CPU.
                unsafe {
                    tile::<$v, { Self::MR }, { Self::NV }, { Self::NA }, false>(
                        kc, a, astep, 0, b, c, ldc, accumulate, bias,
                    )
                }
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
                unsafe {
                    tile::<$v, { Self::MR }, { Self::NV }, { Self::NA }, true>(
                        kc, a, lda, rows, b, c, ldc, accumulate, bias,
                    )
                }
            }
        }
    };
}

kernel!(NeonF32, f32, float32x4_t, NEON_F32);
kernel!(NeonF64, f64, float64x2_t, NEON_F64);
