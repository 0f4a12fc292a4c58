//! Level `amx`: Intel AMX tiles, bf16 inputs with f32 accumulation, through stable inline
//! assembly. f32 only.
//!
//! AMX adds eight tile registers (here each 16 rows × 64 bytes) and one instruction that
//! matters, `tdpbf16ps`: C (16×16 f32) += A (16×32 bf16) · B (32×16 bf16), with B stored in
//! "VNNI" order (row r of the tile holds the pairs (B[2r, j], B[2r+1, j]) for j < 16).
//!
//! ```text
//! pack   Ã: op(A) rounded to bf16, in 32-row slivers, per 32-deep k block two 16×32 tiles
//!        B̃: op(B) rounded to bf16, in 32-column slivers, per k block two VNNI 16×(16·2) tiles
//!        (both padded with zeros to multiples of 32; packing runs on all threads)
//! tasks  (row chunk of C) × (column chunk of ≤ NCA columns), spread over rayon threads
//! LOOP   for pc in 0..k step KCA                       (C tiles reloaded once per pass)
//!          for each 32-row Ã sliver of the task       (32×KCA bf16 = 64 KiB, L2 → L1)
//!            for each 32-column B̃ sliver of the task   (the task's B̃ block stays in L2)
//!              microkernel: tiles 0..3 = the 32×32 C tile (loaded, or zeroed on the first
//!              pc when overwriting); per k block: load 2 A tiles + 2 B tiles, 4 tdpbf16ps;
//!              store tiles 0..3 back to C
//! ```
//!
//! Rounding: f32 → bf16 round-to-nearest-even (NaN stays NaN), so each input keeps 8
//! significant bits; products are exact in f32 and accumulated in f32. The relative error of a
//! dot product of length k is about 2⁻⁸ · (Σ|a·b|) / |Σ a·b|, not k-dependent like f32's.
//!
//! Availability: x86_64 Linux with CPUID.(7,0).EDX bit 24 (AMX-TILE) and bit 22 (AMX-BF16),
//! and the kernel's permission for tile data (`arch_prctl(ARCH_REQ_XCOMP_PERM,
//! XFEATURE_XTILEDATA)`), requested once per process. Otherwise [`available`] says which part
//! is missing. All unsafe code of this level is in this file.

use crate::{GemmError, Problem};

/// Deepest k block per C tile pass. Each pass loads and stores the 32×32 f32 C tile (8 KiB),
/// so deep passes matter more than keeping the Ã sliver (32·KCA·2 bytes = 64 KiB) in L1; 1024
/// won the sweep recorded in docs/benchmarks.md ("Block sizes of the amx level").
pub const KCA: usize = 1024;
/// Widest column chunk per task: a B̃ block of KCA × NCA bf16 = 256 KiB, in L2 with the Ã
/// sliver; 128 won the same sweep.
pub const NCA: usize = 128;

fn unavailable(reason: impl Into<String>) -> GemmError {
    GemmError::Unavailable {
        level: "amx",
        reason: reason.into(),
    }
}

/// Whether AMX-BF16 can run here: CPU support and the OS permission (requested once).
pub fn available() -> Result<(), GemmError> {
    imp::available()
}

pub(crate) fn gemm_f32(p: &Problem<'_, f32>, c: &mut [f32]) -> Result<(), GemmError> {
    available()?;
    p.validate(c.len())?;
    imp::gemm(p, c);
    Ok(())
}

/// f32 → bf16 bits, round to nearest even; NaN stays a (quiet) NaN.
#[inline(always)]
pub fn f32_to_bf16(x: f32) -> u16 {
    let b = x.to_bits();
    if x.is_nan() {
        ((b >> 16) | 0x40) as u16
    } else {
        ((b + 0x7fff + ((b >> 16) & 1)) >> 16) as u16
    }
}

/// bf16 bits → f32 (exact).
#[inline(always)]
pub fn bf16_to_f32(h: u16) -> f32 {
    f32::from_bits((h as u32) << 16)
}

#[cfg(not(all(target_arch = "x86_64", target_os = "linux")))]
mod imp {
    use super::*;
    pub(super) fn available() -> Result<(), GemmError> {
        Err(unavailable(format!(
            "AMX is built only for x86_64 Linux (this is {} {})",
            std::env::consts::ARCH,
            std::env::consts::OS
        )))
    }
    pub(super) fn gemm(_: &Problem<'_, f32>, _: &mut [f32]) {
        unreachable!("available() refused")
    }
}

#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
mod imp {
    use super::*;
    use crate::transpose::transpose16;
    use rayon::prelude::*;
    use std::arch::asm;
    use std::arch::x86_64::*;
    use std::cell::RefCell;
    use std::sync::OnceLock;

    const ARCH_REQ_XCOMP_PERM: libc::c_long = 0x1023;
    const XFEATURE_XTILEDATA: libc::c_long = 18;

    fn check() -> Result<(), GemmError> {
        let max_leaf = std::arch::x86_64::__cpuid(0).eax;
        if max_leaf < 7 {
            return Err(unavailable("CPUID has no leaf 7: no AMX on this CPU"));
        }
        let edx = std::arch::x86_64::__cpuid_count(7, 0).edx;
        let (tile, bf16) = (edx >> 24 & 1 == 1, edx >> 22 & 1 == 1);
        if !tile || !bf16 {
            return Err(unavailable(format!(
                "this CPU lacks AMX (CPUID.7.EDX: AMX-TILE={tile}, AMX-BF16={bf16})"
            )));
        }
        if !std::arch::is_x86_feature_detected!("avx512f")
            || !std::arch::is_x86_feature_detected!("avx512bw")
            || !std::arch::is_x86_feature_detected!("avx512bf16")
        {
            return Err(unavailable(
                "AMX without AVX-512F/BW/BF16 (used for bf16 packing)",
            ));
        }
        // SAFETY: arch_prctl with ARCH_REQ_XCOMP_PERM only changes this process's permission
        // to use the AMX tile-data state; it takes two integer arguments and touches no memory.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_arch_prctl,
                ARCH_REQ_XCOMP_PERM,
                XFEATURE_XTILEDATA,
            )
        };
        if rc != 0 {
            return Err(unavailable(format!(
                "the kernel refused AMX tile data (arch_prctl(ARCH_REQ_XCOMP_PERM) failed: {})",
                std::io::Error::last_os_error()
            )));
        }
        Ok(())
    }

    static STATE: OnceLock<Result<(), GemmError>> = OnceLock::new();

    pub(super) fn available() -> Result<(), GemmError> {
        STATE.get_or_init(check).clone()
    }

    /// One tile row: 64 bytes = 32 bf16, cache-line aligned.
    #[derive(Clone, Copy)]
    #[repr(C, align(64))]
    struct Line([u16; 32]);
    const ZERO_LINE: Line = Line([0; 32]);

    /// The tile configuration (palette 1): tiles 0..8 all 16 rows × 64 bytes.
    #[repr(C, align(64))]
    struct TileConfig {
        palette: u8,
        start_row: u8,
        reserved: [u8; 14],
        colsb: [u16; 16],
        rows: [u8; 16],
    }

    const CONFIG: TileConfig = TileConfig {
        palette: 1,
        start_row: 0,
        reserved: [0; 14],
        colsb: [64, 64, 64, 64, 64, 64, 64, 64, 0, 0, 0, 0, 0, 0, 0, 0],
        rows: [16, 16, 16, 16, 16, 16, 16, 16, 0, 0, 0, 0, 0, 0, 0, 0],
    };

    /// Loads the tile configuration on this thread, runs `f`, releases the tiles.
    fn with_tiles<R>(f: impl FnOnce() -> R) -> R {
        // SAFETY: `available()` succeeded (the caller checked), so the CPU has AMX and the
        // process has tile-data permission; CONFIG is a valid palette-1 configuration.
        unsafe { asm!("ldtilecfg [{}]", in(reg) &CONFIG, options(nostack, readonly)) };
        let r = f();
        // SAFETY: releases the tile state loaded above.
        unsafe { asm!("tilerelease", options(nostack, nomem)) };
        r
    }

    /// C (32×32 f32, row stride `ldc_bytes`) (+)= Ã sliver · B̃ sliver over `kblocks` k blocks.
    ///
    /// # Safety
    /// Tiles configured by `with_tiles` on this thread; `a` and `b` point to `kblocks · 32`
    /// lines each; `c` is a 32×32 f32 tile with row stride `ldc_bytes`, readable and writable.
    #[inline]
    unsafe fn kernel(
        kblocks: usize,
        a: *const Line,
        b: *const Line,
        c: *mut f32,
        ldc_bytes: usize,
        load_c: bool,
    ) {
        debug_assert!(kblocks > 0);
        // SAFETY: the caller's contract; tile loads read 16 rows of 64 bytes at stride 64 from
        // each half sliver (1 KiB), tile stores write 16 rows of 64 bytes at stride ldc_bytes.
        unsafe {
            asm!(
                "test {load:e}, {load:e}",
                "jz 2f",
                "tileloadd tmm0, [{c} + {ldc}*1]",
                "tileloadd tmm1, [{c} + {ldc}*1 + 64]",
                "tileloadd tmm2, [{c2} + {ldc}*1]",
                "tileloadd tmm3, [{c2} + {ldc}*1 + 64]",
                "jmp 3f",
                "2:",
                "tilezero tmm0",
                "tilezero tmm1",
                "tilezero tmm2",
                "tilezero tmm3",
                "3:",
                "tileloadd tmm4, [{a} + {s64}*1]",
                "tileloadd tmm6, [{b} + {s64}*1]",
                "tileloadd tmm5, [{a} + {s64}*1 + 1024]",
                "tdpbf16ps tmm0, tmm4, tmm6",
                "tileloadd tmm7, [{b} + {s64}*1 + 1024]",
                "tdpbf16ps tmm2, tmm5, tmm6",
                "tdpbf16ps tmm1, tmm4, tmm7",
                "tdpbf16ps tmm3, tmm5, tmm7",
                "add {a}, 2048",
                "add {b}, 2048",
                "dec {n}",
                "jnz 3b",
                "tilestored [{c} + {ldc}*1], tmm0",
                "tilestored [{c} + {ldc}*1 + 64], tmm1",
                "tilestored [{c2} + {ldc}*1], tmm2",
                "tilestored [{c2} + {ldc}*1 + 64], tmm3",
                load = in(reg) load_c as u32,
                c = in(reg) c,
                c2 = in(reg) (c as *mut u8).add(16 * ldc_bytes),
                ldc = in(reg) ldc_bytes,
                a = inout(reg) a => _,
                b = inout(reg) b => _,
                s64 = in(reg) 64usize,
                n = inout(reg) kblocks => _,
                options(nostack),
            );
        }
    }

    /// 32 f32 (`n` ≤ 32 of them at `src`, the rest taken as 0) rounded to bf16 by one
    /// `vcvtne2ps2bf16`: nearest-even, NaN stays NaN; unlike [`f32_to_bf16`] the instruction
    /// flushes denormal inputs (below 1.2e-38) to zero.
    ///
    /// # Safety
    /// AVX-512F/BW/BF16 present; `src .. src + n` readable.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
    unsafe fn bf16x32(src: *const f32, n: usize) -> __m512i {
        // SAFETY: the masked loads read only the first n (≤ 32) elements.
        unsafe {
            let lo_mask = if n >= 16 {
                0xffff
            } else {
                (1u32 << n) as u16 - 1
            };
            let hi_mask = if n >= 32 {
                0xffff
            } else if n <= 16 {
                0
            } else {
                (1u32 << (n - 16)) as u16 - 1
            };
            let lo = _mm512_maskz_loadu_ps(lo_mask, src);
            let hi = _mm512_maskz_loadu_ps(hi_mask, src.wrapping_add(16));
            std::mem::transmute::<__m512bh, __m512i>(_mm512_cvtne2ps_pbh(hi, lo))
        }
    }

    #[inline(always)]
    fn store(line: &mut Line, v: __m512i) {
        // SAFETY: a Line is 64 bytes, 64-byte aligned.
        unsafe { _mm512_store_si512(line.0.as_mut_ptr() as *mut __m512i, v) }
    }

    /// Word i of `_mm512_permutexvar_epi16(INTERLEAVE, x)` is word INTERLEAVE[i] of x: the
    /// two 16-word halves of x interleaved (lo₀ hi₀ lo₁ hi₁ …).
    #[inline(always)]
    fn interleave() -> __m512i {
        // SAFETY: AVX-512F is the caller's contract (this is only inlined into the packers).
        unsafe {
            _mm512_set_epi16(
                31, 15, 30, 14, 29, 13, 28, 12, 27, 11, 26, 10, 25, 9, 24, 8, 23, 7, 22, 6, 21, 5,
                20, 4, 19, 3, 18, 2, 17, 1, 16, 0,
            )
        }
    }

    /// 16 pairs (lo[j], hi[j]) rounded to bf16, pair j in dword j (lo in the low word): the
    /// first `nlo` / `nhi` elements are read, the rest are 0.
    ///
    /// # Safety
    /// AVX-512F/BW/BF16 present; `lo .. lo + nlo` and `hi .. hi + nhi` readable (≤ 16 each).
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
    unsafe fn pairs16(lo: *const f32, nlo: usize, hi: *const f32, nhi: usize) -> __m512i {
        // SAFETY: masked loads read only the first nlo / nhi elements.
        unsafe {
            let l = _mm512_maskz_loadu_ps(((1u32 << nlo) - 1) as u16, lo);
            let h = _mm512_maskz_loadu_ps(((1u32 << nhi) - 1) as u16, hi);
            let x = std::mem::transmute::<__m512bh, __m512i>(_mm512_cvtne2ps_pbh(h, l));
            _mm512_permutexvar_epi16(interleave(), x)
        }
    }

    /// Lines of a packed operand written by a task that fills the same k blocks of every
    /// sliver (rows of the lines of different slivers: disjoint between tasks).
    #[derive(Clone, Copy)]
    struct LinesPtr(*mut Line);
    // SAFETY: tasks write disjoint lines (distinct k blocks), and the buffer outlives the loop.
    unsafe impl Send for LinesPtr {}
    // SAFETY: as above.
    unsafe impl Sync for LinesPtr {}

    /// Ã sliver `s` of op(A) = A (rounded to bf16): line `q*32 + r` holds
    /// A[32s + r, 32q .. 32q + 32]. One task per sliver: each line is 32 consecutive
    /// elements of a stored row.
    ///
    /// # Safety
    /// AVX-512F/BW/BF16 present (checked by `available`); `!p.ta`.
    #[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
    unsafe fn pack_a_sliver(p: &Problem<'_, f32>, s: usize, out: &mut [Line]) {
        let rows = 32.min(p.m - 32 * s);
        for (q, lines) in out.chunks_exact_mut(32).enumerate() {
            let depth = 32.min(p.k - 32 * q);
            for (r, line) in lines.iter_mut().enumerate() {
                if r < rows {
                    let src = &p.a[(32 * s + r) * p.lda + 32 * q..][..depth];
                    // SAFETY: src holds `depth` elements; the CPU check is the caller's.
                    store(line, unsafe { bf16x32(src.as_ptr(), depth) });
                } else {
                    *line = ZERO_LINE;
                }
            }
        }
    }

    /// K block `q` of every Ã sliver of op(A) = Aᵀ (A stored k×m): line `q*32 + r` of sliver s
    /// holds A[32q .. 32q + 32, 32s + r]. One task per k block reads its 32 stored rows from
    /// start to end: pairs of rows give the (k, k+1) dwords of 16 columns, a 16×16 dword
    /// transpose turns them into 16 lines.
    ///
    /// # Safety
    /// AVX-512F/BW/BF16 present; `p.ta`; `out` is the Ã buffer (`m.div_ceil(32)` slivers of
    /// `sliver` lines) and this task alone writes k block `q` of it.
    #[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
    unsafe fn pack_a_kblock(p: &Problem<'_, f32>, q: usize, out: LinesPtr, sliver: usize) {
        let depth = 32.min(p.k - 32 * q);
        for s in 0..p.m.div_ceil(32) {
            for h in 0..2 {
                let c0 = 32 * s + 16 * h;
                let n = p.m.saturating_sub(c0).min(16);
                let mut v = [_mm512_setzero_si512(); 16];
                if n > 0 {
                    for (e, x) in v.iter_mut().enumerate() {
                        let (k0, k1) = (32 * q + 2 * e, 32 * q + 2 * e + 1);
                        let row = |kk: usize| -> (*const f32, usize) {
                            if kk < 32 * q + depth {
                                (p.a[kk * p.lda + c0..][..n].as_ptr(), n)
                            } else {
                                (p.a.as_ptr(), 0)
                            }
                        };
                        let ((r0, n0), (r1, n1)) = (row(k0), row(k1));
                        // SAFETY: r0 / r1 hold n0 / n1 elements.
                        *x = unsafe { pairs16(r0, n0, r1, n1) };
                    }
                    transpose16(&mut v);
                }
                for (r, &x) in v.iter().enumerate() {
                    // SAFETY: the line is inside sliver s, k block q: this task's alone.
                    store(
                        unsafe { &mut *out.0.add(s * sliver + q * 32 + h * 16 + r) },
                        x,
                    );
                }
            }
        }
    }

    /// K block `q` of every B̃ sliver of op(B) = B (B stored k×n), in VNNI order: line
    /// `q*32 + h*16 + r` of sliver s holds, for j < 16, the pair
    /// (B[32q + 2r, 32s + 16h + j], B[32q + 2r + 1, 32s + 16h + j]). One task per k block
    /// reads its stored rows two at a time from start to end (whole rows: the prefetchers
    /// follow them; 128-byte pieces of rows a row stride apart they did not).
    ///
    /// # Safety
    /// AVX-512F/BW/BF16 present; `!p.tb`; `out` is the B̃ buffer (`n.div_ceil(32)` slivers of
    /// `sliver` lines) and this task alone writes k block `q` of it.
    #[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
    unsafe fn pack_b_kblock(p: &Problem<'_, f32>, q: usize, out: LinesPtr, sliver: usize) {
        for r in 0..16 {
            let (k0, k1) = (32 * q + 2 * r, 32 * q + 2 * r + 1);
            for s in 0..p.n.div_ceil(32) {
                for h in 0..2 {
                    let c0 = 32 * s + 16 * h;
                    let n = p.n.saturating_sub(c0).min(16);
                    // A row past the end of k (or a half past the last column) loads nothing:
                    // count 0, every lane masked off, zeros.
                    let row = |kk: usize| -> (*const f32, usize) {
                        if kk < p.k && n > 0 {
                            (p.b[kk * p.ldb + c0..][..n].as_ptr(), n)
                        } else {
                            (p.b.as_ptr(), 0)
                        }
                    };
                    let ((r0, n0), (r1, n1)) = (row(k0), row(k1));
                    // SAFETY: r0 / r1 hold n0 / n1 elements; the line is inside sliver s,
                    // k block q: this task's alone.
                    unsafe {
                        let v = pairs16(r0, n0, r1, n1);
                        store(&mut *out.0.add(s * sliver + q * 32 + h * 16 + r), v);
                    }
                }
            }
        }
    }

    /// B̃ sliver `s` of op(B) = Bᵀ (B stored n×k), VNNI order as in [`pack_b_kblock`]: column
    /// j of the sliver is stored row 32s + j, contiguous in k, and each 32-deep block of it
    /// rounds to the 16 pairs that go to dword j % 16 of the 16 lines of its half: 16 rows'
    /// blocks and a 16×16 dword transpose give 16 lines. One task per sliver.
    ///
    /// # Safety
    /// AVX-512F/BW/BF16 present; `p.tb`.
    #[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
    unsafe fn pack_b_sliver(p: &Problem<'_, f32>, s: usize, out: &mut [Line]) {
        let cols = 32.min(p.n - 32 * s);
        for h in 0..2 {
            let live = cols.saturating_sub(16 * h).min(16);
            for (q, lines) in out.chunks_exact_mut(32).enumerate() {
                let depth = 32.min(p.k - 32 * q);
                let mut v = [_mm512_setzero_si512(); 16];
                for (j, x) in v.iter_mut().enumerate().take(live) {
                    let src = &p.b[(32 * s + 16 * h + j) * p.ldb + 32 * q..][..depth];
                    // SAFETY: src holds `depth` elements.
                    *x = unsafe { bf16x32(src.as_ptr(), depth) };
                }
                transpose16(&mut v);
                for (line, &x) in lines[16 * h..16 * h + 16].iter_mut().zip(v.iter()) {
                    store(line, x);
                }
            }
        }
    }

    /// Lines from one packed sliver to the next: its k blocks (32 lines each) and one line of
    /// padding, so that slivers do not start a multiple of 4 KiB apart (the packers write the
    /// same line of many slivers in a row: without the pad all of them fall into one L1 set).
    fn sliver_lines(k: usize) -> usize {
        k.div_ceil(32) * 32 + 1
    }

    /// Runs `f(0) .. f(count - 1)` on rayon's threads when `threads > 1`, else in order.
    fn for_each_task(threads: usize, count: usize, f: impl Fn(usize) + Sync + Send) {
        if threads > 1 {
            (0..count).into_par_iter().for_each(f);
        } else {
            (0..count).for_each(f);
        }
    }

    /// Runs `f(s, sliver s of buf)` for every `sliver`-line sliver of `buf`, on rayon's threads
    /// when `threads > 1`.
    fn for_each_sliver(
        threads: usize,
        buf: &mut [Line],
        sliver: usize,
        f: impl Fn(usize, &mut [Line]) + Sync + Send,
    ) {
        if threads > 1 {
            buf.par_chunks_mut(sliver)
                .enumerate()
                .for_each(|(s, o)| f(s, o));
        } else {
            buf.chunks_mut(sliver)
                .enumerate()
                .for_each(|(s, o)| f(s, o));
        }
    }

    /// Packs all of op(A) into `apack` (`m.div_ceil(32)` slivers of `sliver` lines).
    fn pack_a(p: &Problem<'_, f32>, threads: usize, apack: &mut [Line], sliver: usize) {
        assert_eq!(apack.len(), p.m.div_ceil(32) * sliver);
        pack(
            p,
            threads,
            apack,
            sliver,
            p.ta,
            pack_a_kblock,
            pack_a_sliver,
        )
    }

    /// Packs all of op(B) into `bpack` (`n.div_ceil(32)` slivers of `sliver` lines).
    fn pack_b(p: &Problem<'_, f32>, threads: usize, bpack: &mut [Line], sliver: usize) {
        assert_eq!(bpack.len(), p.n.div_ceil(32) * sliver);
        pack(
            p,
            threads,
            bpack,
            sliver,
            !p.tb,
            pack_b_kblock,
            pack_b_sliver,
        )
    }

    /// One packed operand (all of `buf`, whose size the caller asserted): one task per k block
    /// (`by_kblock`, writing that block of every sliver) or one per sliver.
    fn pack(
        p: &Problem<'_, f32>,
        threads: usize,
        buf: &mut [Line],
        sliver: usize,
        by_kblock: bool,
        kblock: unsafe fn(&Problem<'_, f32>, usize, LinesPtr, usize),
        one_sliver: unsafe fn(&Problem<'_, f32>, usize, &mut [Line]),
    ) {
        assert_eq!(sliver, sliver_lines(p.k));
        if by_kblock {
            let out = LinesPtr(buf.as_mut_ptr());
            // SAFETY: only reached after `available()`, which checked AVX-512F/BW/BF16; the
            // k blocks are disjoint between tasks and `buf` holds every sliver (asserted).
            for_each_task(threads, p.k.div_ceil(32), |q| unsafe {
                kblock(p, q, out, sliver)
            });
        } else {
            // SAFETY: as above.
            for_each_sliver(threads, buf, sliver, |s, o| unsafe { one_sliver(p, s, o) });
        }
    }

    thread_local! {
        static A_PACK: RefCell<Vec<Line>> = const { RefCell::new(Vec::new()) };
        static B_PACK: RefCell<Vec<Line>> = const { RefCell::new(Vec::new()) };
    }

    /// Calls `f` with `len` lines of this thread's buffer `key` (a fresh one if it is in use).
    fn with_lines<R>(
        key: &'static std::thread::LocalKey<RefCell<Vec<Line>>>,
        len: usize,
        f: impl FnOnce(&mut [Line]) -> R,
    ) -> R {
        key.with(|cell| match cell.try_borrow_mut() {
            Ok(mut v) => {
                if v.len() < len {
                    v.resize(len, ZERO_LINE);
                }
                f(&mut v[..len])
            }
            Err(_) => f(&mut vec![ZERO_LINE; len]),
        })
    }

    #[derive(Clone, Copy)]
    struct CPtr(*mut f32);
    // SAFETY: tasks write disjoint rectangles of C (distinct row or column chunks), and C
    // outlives the parallel loop.
    unsafe impl Send for CPtr {}
    // SAFETY: as above.
    unsafe impl Sync for CPtr {}

    pub(super) fn gemm(p: &Problem<'_, f32>, c: &mut [f32]) {
        let (m, n, k) = (p.m, p.n, p.k);
        let (sm, sn) = (m.div_ceil(32), n.div_ceil(32)); // slivers
        let sliver = sliver_lines(k); // lines per sliver
        let threads = crate::threads_for(m * n * k, 64 * 64 * 64);
        with_lines(&A_PACK, sm * sliver, |apack| {
            with_lines(&B_PACK, sn * sliver, |bpack| {
                pack_a(p, threads, apack, sliver);
                pack_b(p, threads, bpack, sliver);
                let (apack, bpack): (&[Line], &[Line]) = (apack, bpack);
                // Tasks: column chunks of at most NCA columns, row chunks so that there are at
                // least as many tasks as threads.
                let n_chunks = sn.div_ceil(NCA / 32);
                let m_chunks = threads.div_ceil(n_chunks).min(sm).max(1);
                let cptr = CPtr(c.as_mut_ptr());
                let task = |t: usize| {
                    let (mi, ni) = (t / n_chunks, t % n_chunks);
                    let (s0, s1) = (mi * sm / m_chunks, (mi + 1) * sm / m_chunks);
                    let (q0, q1) = (ni * sn / n_chunks, (ni + 1) * sn / n_chunks);
                    with_tiles(|| run_task(p, apack, bpack, cptr, s0..s1, q0..q1))
                };
                let tasks = m_chunks * n_chunks;
                for_each_task(threads, tasks, task);
            })
        })
    }

    /// Asks for the `rows` × 32 f32 tile of C at offset `off` (row stride `ldc`) in cache, for
    /// writing (`prefetchw`).
    #[inline]
    fn prefetch_tile(c: CPtr, off: usize, ldc: usize, rows: usize) {
        for i in 0..rows {
            let row = c.0.wrapping_add(off + i * ldc) as *const i8;
            // SAFETY: a prefetch never faults and reads nothing architecturally.
            unsafe {
                _mm_prefetch::<_MM_HINT_ET0>(row);
                _mm_prefetch::<_MM_HINT_ET0>(row.wrapping_add(64));
            }
        }
    }

    /// The loop nest of one task: C rows of slivers `ms`, columns of slivers `ns`.
    fn run_task(
        p: &Problem<'_, f32>,
        apack: &[Line],
        bpack: &[Line],
        c: CPtr,
        ms: std::ops::Range<usize>,
        ns: std::ops::Range<usize>,
    ) {
        let kb = p.k.div_ceil(32);
        let sliver = sliver_lines(p.k);
        let kcb = KCA / 32;
        let mut tmp = [[0f32; 32]; 32];
        for q0 in (0..kb).step_by(kcb) {
            let nq = kcb.min(kb - q0);
            let load = p.accumulate || q0 > 0;
            for si in ms.clone() {
                let a = &apack[si * sliver + q0 * 32..][..nq * 32];
                let rows = 32.min(p.m - 32 * si);
                for sj in ns.clone() {
                    let b = &bpack[sj * sliver + q0 * 32..][..nq * 32];
                    let cols = 32.min(p.n - 32 * sj);
                    let off = 32 * si * p.ldc + 32 * sj;
                    // The next tile of C: its 32 rows are a row stride apart (64 lines from
                    // anywhere in memory); fetch them for writing while this tile computes.
                    let (ni, nj) = if sj + 1 < ns.end {
                        (si, sj + 1)
                    } else {
                        (si + 1, ns.start)
                    };
                    if ni < ms.end {
                        prefetch_tile(c, 32 * ni * p.ldc + 32 * nj, p.ldc, 32.min(p.m - 32 * ni));
                    }
                    if rows == 32 && cols == 32 {
                        // SAFETY: tiles are configured (`with_tiles`); a and b hold nq·32
                        // lines; the 32×32 tile of C at `off` is inside C (validated shapes)
                        // and belongs to this task only.
                        unsafe {
                            kernel(nq, a.as_ptr(), b.as_ptr(), c.0.add(off), p.ldc * 4, load)
                        };
                    } else {
                        for (i, row) in tmp.iter_mut().enumerate().take(rows) {
                            for (j, t) in row.iter_mut().enumerate().take(cols) {
                                // SAFETY: (i, j) inside the valid part of this task's tile.
                                *t = if load {
                                    unsafe { *c.0.add(off + i * p.ldc + j) }
                                } else {
                                    0.0
                                };
                            }
                        }
                        // SAFETY: as above, with the 32×32 scratch tile (stride 128 bytes).
                        unsafe {
                            kernel(
                                nq,
                                a.as_ptr(),
                                b.as_ptr(),
                                tmp.as_mut_ptr() as *mut f32,
                                128,
                                true,
                            )
                        };
                        for (i, row) in tmp.iter().enumerate().take(rows) {
                            for (j, &t) in row.iter().enumerate().take(cols) {
                                // SAFETY: as above.
                                unsafe { *c.0.add(off + i * p.ldc + j) = t };
                            }
                        }
                    }
                }
            }
        }
    }
}
