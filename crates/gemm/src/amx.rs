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
/// so deep passes matter more than keeping the Ã sliver (32·KCA·2 bytes = 64 KiB) in L1: on a
/// quiet SPR host at 2048³, KCA = 256 gave ~600-850 GFLOPS, 512 ~850-950, 1024 ~1050-1200,
/// all of k (2048) about the same as 1024 (noisy; 2 pinned cores, medians of 15).
pub const KCA: usize = 1024;
/// Widest column chunk per task: a B̃ block of KCA × NCA bf16 = 256 KiB, in L2 with the Ã
/// sliver; 128 beat 256 and 512 at KCA ≥ 1024 in the same sweep.
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

    /// `t[e][r]` → `lines[r][e]`: a 32×32 transpose of bf16 values.
    #[inline(always)]
    fn transpose_into(t: &[Line; 32], lines: &mut [Line]) {
        for (r, line) in lines.iter_mut().enumerate() {
            for (e, d) in line.0.iter_mut().enumerate() {
                *d = t[e].0[r];
            }
        }
    }

    /// Packs 32-row sliver `s` of op(A) (rounded to bf16): line `q*32 + r` holds
    /// op(A)[32s + r, 32q .. 32q + 32].
    ///
    /// # Safety
    /// AVX-512F/BW/BF16 present (checked by `available`).
    #[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
    unsafe fn pack_a_wide(p: &Problem<'_, f32>, s: usize, out: &mut [Line]) {
        let rows = 32.min(p.m - 32 * s);
        for (q, lines) in out.chunks_exact_mut(32).enumerate() {
            let depth = 32.min(p.k - 32 * q);
            if !p.ta {
                // op(A) = A: each line is 32 consecutive elements of a stored row.
                for (r, line) in lines.iter_mut().enumerate() {
                    if r < rows {
                        let src = &p.a[(32 * s + r) * p.lda + 32 * q..][..depth];
                        // SAFETY: src holds `depth` elements; the CPU check is the caller's.
                        store(line, unsafe { bf16x32(src.as_ptr(), depth) });
                    } else {
                        *line = ZERO_LINE;
                    }
                }
            } else {
                // op(A) = Aᵀ: a k block of the sliver is 32 stored rows (k) × 32 columns (m);
                // round stored rows, then transpose.
                let mut t = [ZERO_LINE; 32];
                for (e, dst) in t.iter_mut().enumerate().take(depth) {
                    let src = &p.a[(32 * q + e) * p.lda + 32 * s..][..rows];
                    // SAFETY: as above.
                    store(dst, unsafe { bf16x32(src.as_ptr(), rows) });
                }
                transpose_into(&t, lines);
            }
        }
    }

    /// Slivers of B̃ packed by one task: with B stored k×n, a task reads G·128 contiguous
    /// bytes of each stored row instead of 128 bytes of rows a whole row stride apart (which
    /// the prefetchers do not follow: the packing was latency-bound).
    const B_GROUP: usize = 8;

    /// Packs the 32-column slivers `s0 ..` of op(B) that fill `out` in VNNI order: line
    /// `q*32 + h*16 + r` of a sliver s holds, for j < 16, the pair
    /// (op(B)[32q + 2r, 32s + 16h + j], op(B)[32q + 2r + 1, 32s + 16h + j]).
    ///
    /// # Safety
    /// AVX-512F/BW/BF16 present (checked by `available`).
    #[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
    unsafe fn pack_b_wide(p: &Problem<'_, f32>, s0: usize, out: &mut [Line]) {
        let sliver = p.k.div_ceil(32) * 32;
        if !p.tb {
            // op(B) = B: stored rows 2r and 2r + 1 of each k block give line r of each half;
            // walk the rows, and along each row every sliver of the group.
            // Word i of the result takes word IDX[i] of (bf16(row 2r half), bf16(row 2r+1 half)).
            let interleave = _mm512_set_epi16(
                31, 15, 30, 14, 29, 13, 28, 12, 27, 11, 26, 10, 25, 9, 24, 8, 23, 7, 22, 6, 21, 5,
                20, 4, 19, 3, 18, 2, 17, 1, 16, 0,
            );
            for q in 0..sliver / 32 {
                for r in 0..16 {
                    let (k0, k1) = (32 * q + 2 * r, 32 * q + 2 * r + 1);
                    for (g, lines) in out.chunks_exact_mut(sliver).enumerate() {
                        let s = s0 + g;
                        let cols = 32.min(p.n - 32 * s);
                        for h in 0..2 {
                            let n = cols.saturating_sub(16 * h).min(16);
                            // A row past the end of k (or a half past the last column) loads
                            // nothing: count 0, every lane masked off, zeros.
                            let row = |kk: usize| -> (*const f32, usize) {
                                if kk < p.k && n > 0 {
                                    (p.b[kk * p.ldb + 32 * s + 16 * h..][..n].as_ptr(), n)
                                } else {
                                    (p.b.as_ptr(), 0)
                                }
                            };
                            let ((r0, n0), (r1, n1)) = (row(k0), row(k1));
                            // SAFETY: r0/r1 hold n0/n1 elements; masked-off lanes are not read.
                            let v = unsafe {
                                let lo = _mm512_maskz_loadu_ps(((1u32 << n0) - 1) as u16, r0);
                                let hi = _mm512_maskz_loadu_ps(((1u32 << n1) - 1) as u16, r1);
                                let pair = std::mem::transmute::<__m512bh, __m512i>(
                                    _mm512_cvtne2ps_pbh(hi, lo),
                                );
                                _mm512_permutexvar_epi16(interleave, pair)
                            };
                            store(&mut lines[q * 32 + h * 16 + r], v);
                        }
                    }
                }
            }
        } else {
            // op(B) = Bᵀ: column j of a sliver is stored row 32s + j, contiguous in k. Each
            // 32-deep block of it rounds to exactly the 16 pairs that column needs, which go
            // to dword j % 16 of the 16 lines of its half: read every stored row once from
            // start to end, scatter dwords.
            for (g, lines) in out.chunks_exact_mut(sliver).enumerate() {
                let s = s0 + g;
                let cols = 32.min(p.n - 32 * s);
                lines.fill(ZERO_LINE);
                for j in 0..cols {
                    let row = &p.b[(32 * s + j) * p.ldb..][..p.k];
                    let (h, jj) = (j / 16, j % 16);
                    for (q, chunk) in row.chunks(32).enumerate() {
                        let mut pairs = Line([0; 32]);
                        // SAFETY: chunk holds chunk.len() ≤ 32 elements.
                        store(&mut pairs, unsafe { bf16x32(chunk.as_ptr(), chunk.len()) });
                        for r in 0..16 {
                            let line = &mut lines[q * 32 + h * 16 + r].0;
                            line[2 * jj] = pairs.0[2 * r];
                            line[2 * jj + 1] = pairs.0[2 * r + 1];
                        }
                    }
                }
            }
        }
    }

    fn pack_a(p: &Problem<'_, f32>, s: usize, out: &mut [Line]) {
        // SAFETY: only reached after `available()`, which checked AVX-512F/BW/BF16.
        unsafe { pack_a_wide(p, s, out) }
    }

    fn pack_b(p: &Problem<'_, f32>, s: usize, out: &mut [Line]) {
        // SAFETY: as in `pack_a`.
        unsafe { pack_b_wide(p, s, out) }
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
        let kb = k.div_ceil(32); // k blocks of 32
        let (sm, sn) = (m.div_ceil(32), n.div_ceil(32)); // slivers
        let sliver = kb * 32; // lines per sliver
        let threads = crate::threads_for(m * n * k, 64 * 64 * 64);
        with_lines(&A_PACK, sm * sliver, |apack| {
            with_lines(&B_PACK, sn * sliver, |bpack| {
                if threads > 1 {
                    apack
                        .par_chunks_mut(sliver)
                        .enumerate()
                        .for_each(|(s, o)| pack_a(p, s, o));
                    bpack
                        .par_chunks_mut(sliver * B_GROUP)
                        .enumerate()
                        .for_each(|(g, o)| pack_b(p, g * B_GROUP, o));
                } else {
                    apack
                        .chunks_mut(sliver)
                        .enumerate()
                        .for_each(|(s, o)| pack_a(p, s, o));
                    bpack
                        .chunks_mut(sliver * B_GROUP)
                        .enumerate()
                        .for_each(|(g, o)| pack_b(p, g * B_GROUP, o));
                }
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
                if threads > 1 {
                    (0..tasks).into_par_iter().for_each(task);
                } else {
                    (0..tasks).for_each(task);
                }
            })
        })
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
        let sliver = kb * 32;
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
