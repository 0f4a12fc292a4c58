//! Level `simd`: our own BLIS-style GEMM.
//!
//! The product is cut into blocks that fit the caches, the blocks of op(A) and op(B) are copied
//! ("packed", `pack.rs`) into the exact order a register-blocked microkernel reads them
//! (`kernel.rs`, `x86.rs`, `neon.rs`), and the microkernel computes an MR×NR tile of C in vector
//! registers.
//!
//! ```text
//! LOOP 5  for jc in 0..n step NP             columns of C and op(B)
//! LOOP 4    for pc in 0..k step KC           pack B̃ = op(B)[pc.., jc..] (KC×NP, L3; all threads)
//! LOOP 3      for ic in 0..m step MC         pack Ã = op(A)[ic.., pc..] (MC×KC)   ← threads
//! LOOP 3b       for jb in 0..NP step NC      a KC×NC block of B̃ (in L2)
//! LOOP 2          for ir in 0..MC step MR    one Ã sliver (MR×KC, in L1)
//! LOOP 1            for jr in jb.. step NR   microkernel: C[ic+ir.., jc+jr..] (+)= Ã sliver · B̃ sliver
//! ```
//!
//! Our microkernel vectorises along the rows of C (NR is the wide side) where BLIS's x86
//! kernels vectorise along columns, so the roles of loops 1 and 2 are swapped relative to the
//! BLIS paper: the small, broadcast operand (the MR×KC Ã sliver) stays in L1 and the B̃ slivers
//! stream from L2. With NR = 32 f32 a B̃ sliver is KC·128 bytes, which would not fit L1 at a
//! useful KC, while an Ã sliver (12·KC·4 bytes = 18 KiB at KC = 384) does.
//!
//! Threads: per (jc, pc) the B̃ block is packed by all threads (one sliver per task), then the
//! rows of C are cut into as many equal MR-multiples as there are threads (or more, at most MC
//! rows each); each task packs its own Ã and runs loops 2 and 1. Where m is too small to give
//! every thread a sliver, the columns are split as well, so shapes like 768×128×384 or
//! 64×768×768 keep both cores busy.
//!
//! Products with few rows (m ≤ `SMALL_M_MAX`, n > `DIRECT_A_MAX_N`: every weight product
//! of a gpt2 step at batch 4 × 64) take a second nest, `gemm_small_m`: tasks are column
//! blocks, each packing its own KC×NC block of B̃ into its own core's L2 and sweeping all rows
//! of op(A) over it, read in place; no shared panel and no Ã packing.
//!
//! Narrow products (n ≤ [`DIRECT_A_MAX_N`]) skip Ã packing: the kernel reads op(A) = A through
//! one pointer per row (`Microkernel::run_direct`) and op(A) = Aᵀ with step lda. A bias (see
//! `matmul_bias`) is added by the first KC block's epilogue.
//!
//! ISA: detected once (`OnceLock`): on x86_64 AVX-512F, else AVX2+FMA, else the scalar kernel;
//! on aarch64 NEON (part of the base architecture, always there).
//! `FERROGPT_ISA=avx512|avx2|neon|scalar` forces one (an ISA the CPU lacks makes the level
//! unavailable, with the reason); tests force each in turn with [`with_isa`].
//! On other targets no vector kernel is built; the level answers with an Unavailable error
//! unless `FERROGPT_ISA=scalar` asks for the portable kernel.
//!
//! Precision: f32 or f64 FMAs in the element type, summed in k order within a KC block.

mod kernel;
#[cfg(target_arch = "aarch64")]
mod neon;
mod pack;
#[cfg(target_arch = "x86_64")]
mod x86;

use crate::{Element, GemmError, Problem};
use kernel::Microkernel;
use rayon::prelude::*;
use std::cell::{Cell, RefCell};
use std::sync::OnceLock;

/// The block sizes of one microkernel: the one documented place for them.
#[derive(Clone, Copy, Debug)]
pub struct Blocking {
    /// Rows of the microtile (broadcast side; registers: MR·NR/LANES accumulators).
    pub mr: usize,
    /// Columns of the microtile (vector side, a multiple of the vector width).
    pub nr: usize,
    /// Depth of a packed block: an Ã sliver (MR×KC) should fill at most half of L1d (48 KiB).
    pub kc: usize,
    /// Rows of an Ã block per task (upper bound; the driver balances blocks across threads).
    pub mc: usize,
    /// Columns of the B̃ block that one Ã sliver sweeps: KC×NC should take about half of L2
    /// (2 MiB per core here).
    pub nc: usize,
}

// Sapphire Rapids: L1d 48 KiB, L2 2 MiB per core, L3 shared. The hardware-detection module
// (`hw`) is being written; when it reports cache sizes, KC and NC can follow them. Until then
// these constants, chosen for the caches above, are used everywhere.

/// AVX-512F f32: 12×32 tile (24 zmm accumulators). Ã sliver 12·384·4 = 18 KiB, B̃ block
/// 384·640·4 = 960 KiB.
pub const AVX512_F32: Blocking = Blocking {
    mr: 12,
    nr: 32,
    kc: 384,
    mc: 240,
    nc: 640,
};
/// AVX-512F f64: 12×16 tile. Ã sliver 12·256·8 = 24 KiB, B̃ block 256·512·8 = 1 MiB.
pub const AVX512_F64: Blocking = Blocking {
    mr: 12,
    nr: 16,
    kc: 256,
    mc: 240,
    nc: 512,
};
/// AVX2+FMA f32: 6×16 tile (12 ymm accumulators). Ã sliver 6 KiB, B̃ block 512 KiB.
pub const AVX2_F32: Blocking = Blocking {
    mr: 6,
    nr: 16,
    kc: 256,
    mc: 120,
    nc: 512,
};
/// AVX2+FMA f64: 6×8 tile. Ã sliver 12 KiB, B̃ block 512 KiB.
pub const AVX2_F64: Blocking = Blocking {
    mr: 6,
    nr: 8,
    kc: 256,
    mc: 120,
    nc: 256,
};
/// NEON f32 (aarch64): 8×12 tile (24 of the 32 128-bit registers accumulate). Chosen for the
/// smallest caches of the Arm servers we target (Neoverse N1/V1: L1d 64 KiB, L2 1 MiB per
/// core; V2 and Apple cores have more), not tuned on hardware yet: Ã sliver 8·256·4 = 8 KiB,
/// B̃ sliver 12 KiB, Ã block 128·256·4 = 128 KiB and B̃ block 256·384·4 = 384 KiB, together
/// half of a 1 MiB L2.
pub const NEON_F32: Blocking = Blocking {
    mr: 8,
    nr: 12,
    kc: 256,
    mc: 128,
    nc: 384,
};
/// NEON f64 (aarch64): 8×6 tile (24 accumulators). Ã sliver 16 KiB, B̃ sliver 12 KiB, Ã block
/// 64·256·8 = 128 KiB, B̃ block 256·192·8 = 384 KiB (same reasoning as [`NEON_F32`]).
pub const NEON_F64: Blocking = Blocking {
    mr: 8,
    nr: 6,
    kc: 256,
    mc: 64,
    nc: 192,
};
/// Portable scalar kernel: 4×8 tile.
pub const SCALAR: Blocking = Blocking {
    mr: 4,
    nr: 8,
    kc: 256,
    mc: 64,
    nc: 256,
};

/// Columns of the B̃ panel packed per (jc, pc) step and shared by all threads (KC×NP is
/// 5.6 MiB of f32 at KC = 384: it lives in L3, each thread pulls NC-column blocks of it into L2).
/// Ã is packed once per panel, so wide products (the vocabulary projection) re-pack A rarely.
pub const NP: usize = 4096;

/// Where C has at most this many columns, the kernel reads op(A) in place instead of packing
/// Ã: each Ã sliver would serve only n/NR ≤ 8 B̃ slivers, too few to repay the copy. op(A) = A
/// (row-major) goes through `Microkernel::run_direct` (one pointer per row); op(A) = Aᵀ is
/// already MR consecutive elements per step, read with step lda (edge slivers are packed).
/// Measured on shard-sized products, 384×128×K, 1 thread (a probe on machine A of
/// docs/benchmarks.md, 2026-11-26, before `481f974`): in place ran at 92-95% of the
/// kernel on pre-packed data, packing + kernel at 65-80%. Wider products pack: there the
/// kernel's contiguous Ã stream is worth more than the copy costs.
pub const DIRECT_A_MAX_N: usize = 256;

/// Below this many multiply-adds (m·n·k) the product runs on one thread: rayon's fork costs
/// a few microseconds, more than the work.
const PARALLEL_MIN_MACS: usize = 48 * 48 * 48;

/// The instruction set the `simd` level's microkernel uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Isa {
    /// AVX-512F (x86_64): 512-bit FMAs.
    Avx512,
    /// AVX2 + FMA (x86_64): 256-bit FMAs.
    Avx2,
    /// NEON / Advanced SIMD (aarch64, always present there): 128-bit FMAs.
    Neon,
    /// Portable Rust, no explicit vectors.
    Scalar,
}

impl Isa {
    /// Every ISA, fastest first (each architecture has its own; `Scalar` runs everywhere).
    pub const ALL: [Isa; 4] = [Isa::Avx512, Isa::Avx2, Isa::Neon, Isa::Scalar];

    /// The name `FERROGPT_ISA` accepts.
    pub fn name(self) -> &'static str {
        match self {
            Isa::Avx512 => "avx512",
            Isa::Avx2 => "avx2",
            Isa::Neon => "neon",
            Isa::Scalar => "scalar",
        }
    }

    /// Whether the running CPU (and this build's target) can execute this ISA's kernels.
    pub fn supported(self) -> bool {
        match self {
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => std::arch::is_x86_feature_detected!("avx512f"),
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => {
                std::arch::is_x86_feature_detected!("avx2")
                    && std::arch::is_x86_feature_detected!("fma")
            }
            #[cfg(not(target_arch = "x86_64"))]
            Isa::Avx512 | Isa::Avx2 => false,
            // Part of the AArch64 base architecture; the check is constant on targets that
            // enable it (all of aarch64 Linux and macOS).
            #[cfg(target_arch = "aarch64")]
            Isa::Neon => std::arch::is_aarch64_feature_detected!("neon"),
            #[cfg(not(target_arch = "aarch64"))]
            Isa::Neon => false,
            Isa::Scalar => true,
        }
    }
}

impl std::fmt::Display for Isa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

fn unavailable(reason: String) -> GemmError {
    GemmError::Unavailable {
        level: "simd",
        reason,
    }
}

/// The ISA chosen for this process: `FERROGPT_ISA` if set, else the best the CPU has.
fn detect() -> Result<Isa, GemmError> {
    match std::env::var("FERROGPT_ISA") {
        Ok(name) => {
            let isa = Isa::ALL
                .into_iter()
                .find(|i| i.name() == name)
                .ok_or_else(|| {
                    let names: Vec<&str> = Isa::ALL.iter().map(|i| i.name()).collect();
                    unavailable(format!(
                        "FERROGPT_ISA={name} is not one of {}",
                        names.join(", ")
                    ))
                })?;
            if isa.supported() {
                Ok(isa)
            } else {
                Err(unavailable(format!(
                    "FERROGPT_ISA={name} but this {} CPU lacks {name}",
                    std::env::consts::ARCH
                )))
            }
        }
        Err(_) => {
            if cfg!(not(any(target_arch = "x86_64", target_arch = "aarch64"))) {
                return Err(unavailable(format!(
                    "no SIMD microkernel is built for {} (x86_64 and aarch64 only; \
                     FERROGPT_ISA=scalar runs the portable kernel)",
                    std::env::consts::ARCH
                )));
            }
            Ok(Isa::ALL
                .into_iter()
                .find(|i| i.supported())
                .unwrap_or(Isa::Scalar))
        }
    }
}

static DETECTED: OnceLock<Result<Isa, GemmError>> = OnceLock::new();

thread_local! {
    static OVERRIDE: Cell<Option<Isa>> = const { Cell::new(None) };
}

/// The ISA the `simd` level uses on this thread now: a [`with_isa`] override, else the
/// process-wide choice (detected once, `FERROGPT_ISA` honoured).
pub fn active_isa() -> Result<Isa, GemmError> {
    if let Some(isa) = OVERRIDE.with(|o| o.get()) {
        return Ok(isa);
    }
    DETECTED.get_or_init(detect).clone()
}

/// Runs `f` with the `simd` level forced to `isa` on the calling thread (for tests: covers
/// every kernel this CPU has in one process). Errors if the CPU lacks `isa`.
#[doc(hidden)]
pub fn with_isa<R>(isa: Isa, f: impl FnOnce() -> R) -> Result<R, GemmError> {
    if !isa.supported() {
        return Err(unavailable(format!("this CPU lacks {isa}")));
    }
    let prev = OVERRIDE.with(|o| o.replace(Some(isa)));
    let r = f();
    OVERRIDE.with(|o| o.set(prev));
    Ok(r)
}

/// The block sizes the `simd` level uses for `T` with `isa`.
pub fn blocking<T: Element>(isa: Isa) -> Blocking {
    match (isa, T::NAME) {
        (Isa::Avx512, "f32") => AVX512_F32,
        (Isa::Avx512, _) => AVX512_F64,
        (Isa::Avx2, "f32") => AVX2_F32,
        (Isa::Avx2, _) => AVX2_F64,
        (Isa::Neon, "f32") => NEON_F32,
        (Isa::Neon, _) => NEON_F64,
        (Isa::Scalar, _) => SCALAR,
    }
}

/// The checks the kernels' unsafe code relies on, for callers that reach this level without
/// [`crate::matmul`] (the hidden `Element::simd_gemm`): shapes and lengths, and an ISA this
/// CPU runs (`gemm_with` checks the bias). Panics otherwise.
fn check<T: Element>(p: &Problem<'_, T>, c: &[T], isa: Isa) {
    if let Err(e) = p.validate(c.len()) {
        panic!("simd: {e}");
    }
    assert!(isa.supported(), "simd: this CPU lacks {isa}");
}

pub(crate) fn gemm_f32(p: &Problem<'_, f32>, c: &mut [f32], isa: Isa, bias: Option<&[f32]>) {
    check(p, c, isa);
    match isa {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => gemm_with::<f32, x86::Avx512F32>(p, c, bias),
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => gemm_with::<f32, x86::Avx2F32>(p, c, bias),
        #[cfg(target_arch = "aarch64")]
        Isa::Neon => gemm_with::<f32, neon::NeonF32>(p, c, bias),
        _ => gemm_with::<f32, kernel::Scalar>(p, c, bias),
    }
}

pub(crate) fn gemm_f64(p: &Problem<'_, f64>, c: &mut [f64], isa: Isa, bias: Option<&[f64]>) {
    check(p, c, isa);
    match isa {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => gemm_with::<f64, x86::Avx512F64>(p, c, bias),
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => gemm_with::<f64, x86::Avx2F64>(p, c, bias),
        #[cfg(target_arch = "aarch64")]
        Isa::Neon => gemm_with::<f64, neon::NeonF64>(p, c, bias),
        _ => gemm_with::<f64, kernel::Scalar>(p, c, bias),
    }
}

/// `len` split into `ceil(len / max)` near-equal blocks, each a multiple of `unit`.
fn balanced(len: usize, max: usize, unit: usize) -> usize {
    let blocks = len.div_ceil(max);
    len.div_ceil(blocks).next_multiple_of(unit)
}

/// A pointer to C that tasks may share; each task writes a disjoint rectangle of C.
#[derive(Clone, Copy)]
struct CPtr<T>(*mut T);
// SAFETY: tasks built in `gemm_with` write disjoint tiles of C (distinct rows or columns) and
// C outlives the parallel loop; the element types are plain f32/f64.
unsafe impl<T> Send for CPtr<T> {}
// SAFETY: as above.
unsafe impl<T> Sync for CPtr<T> {}

/// The loop nest of the module doc, for one microkernel `K`. `bias` (n values; only with
/// `p.accumulate == false`) is added to every row of C by the first KC block's epilogue.
fn gemm_with<T: Element, K: Microkernel<T>>(p: &Problem<'_, T>, c: &mut [T], bias: Option<&[T]>) {
    let Blocking {
        mr,
        nr,
        kc: kc_max,
        mc: mc_max,
        nc: nc_max,
    } = K::BLOCKING;
    let (m, n, k) = (p.m, p.n, p.k);
    let threads = crate::threads_for(m * n * k, PARALLEL_MIN_MACS);
    assert!(bias.is_none_or(|b| b.len() == n && !p.accumulate));
    let cptr = CPtr(c.as_mut_ptr());
    if m <= SMALL_M_MAX && n > DIRECT_A_MAX_N {
        return gemm_small_m::<T, K>(p, cptr, bias, threads);
    }
    let np = balanced(n, NP, nr);
    let kc = balanced(k, kc_max, 1);
    let nb = nc_max / nr; // B̃ slivers per L2 block
    let ldc = p.ldc;
    // Ã in place: op(A) = A row by row, op(A) = Aᵀ with step lda (full slivers only).
    let (rows_in_place, cols_in_place) = if n <= DIRECT_A_MAX_N {
        (!p.ta, p.ta)
    } else {
        (false, false)
    };

    // Row chunks of C (in MR slivers): at most MC rows each, a multiple of the thread count
    // so that every thread gets the same share, at least one sliver each.
    let m_slivers = m.div_ceil(mr);
    let m_chunks = m.div_ceil(mc_max).next_multiple_of(threads).min(m_slivers);

    // LOOP 5: columns of C in panels of NP.
    for jc in (0..n).step_by(np) {
        let ncur = np.min(n - jc);
        let n_slivers = ncur.div_ceil(nr);
        // Where the rows alone cannot feed every thread, split the columns too.
        let n_chunks = if m_chunks < threads {
            threads.div_ceil(m_chunks).min(n_slivers)
        } else {
            1
        };
        // LOOP 4: the shared dimension in blocks of KC.
        for pc in (0..k).step_by(kc) {
            let kcur = kc.min(k - pc);
            // Later KC blocks add to what the first one wrote; the first adds the bias.
            let acc = p.accumulate || pc > 0;
            let bias = if acc { None } else { bias };
            with_buffer::<T, _>(&B_BUF, n_slivers * nr * kcur, |bpack| {
                // Pack the B̃ panel: one sliver per task.
                let pack_one = |(s, out): (usize, &mut [T])| {
                    let j0 = jc + s * nr;
                    pack::pack_b_sliver(p, pc, kcur, j0, nr.min(jc + ncur - j0), nr, out)
                };
                if threads > 1 {
                    bpack
                        .par_chunks_mut(nr * kcur)
                        .enumerate()
                        .for_each(pack_one);
                } else {
                    bpack.chunks_mut(nr * kcur).enumerate().for_each(pack_one);
                }
                let bpack: &[T] = bpack;

                // LOOP 3: tasks = row chunks (≤ MC rows) × column chunks; each packs its Ã.
                let task = |t: usize| {
                    let (mi, ni) = (t / n_chunks, t % n_chunks);
                    let s0 = mi * m_slivers / m_chunks;
                    let s1 = (mi + 1) * m_slivers / m_chunks;
                    let (ic, mcur) = (s0 * mr, (s1 * mr).min(m) - s0 * mr);
                    let q0 = ni * n_slivers / n_chunks;
                    let q1 = (ni + 1) * n_slivers / n_chunks;
                    let alen = if rows_in_place {
                        0
                    } else {
                        (s1 - s0) * mr * kcur
                    };
                    with_buffer::<T, _>(&A_BUF, alen, |apack| {
                        if !rows_in_place {
                            for (s, out) in apack.chunks_mut(mr * kcur).enumerate() {
                                let i0 = ic + s * mr;
                                let rows = mr.min(ic + mcur - i0);
                                if !cols_in_place || rows < mr {
                                    pack::pack_a_sliver(p, i0, rows, pc, kcur, mr, out);
                                }
                            }
                        }
                        // LOOP 3b: the task's B̃ slivers in L2-sized blocks of NC columns.
                        for b0 in (q0..q1).step_by(nb) {
                            let b1 = (b0 + nb).min(q1);
                            // LOOP 2: one Ã sliver at a time (stays in L1).
                            for si in 0..s1 - s0 {
                                let i0 = ic + si * mr;
                                let rows = mr.min(ic + mcur - i0);
                                let asl = if rows_in_place {
                                    ASliver::Rows {
                                        a: &p.a[i0 * p.lda + pc..],
                                        lda: p.lda,
                                        rows,
                                    }
                                } else if cols_in_place && rows == mr {
                                    ASliver::Steps {
                                        a: &p.a[pc * p.lda + i0..],
                                        step: p.lda,
                                    }
                                } else {
                                    ASliver::Steps {
                                        a: &apack[si * mr * kcur..][..mr * kcur],
                                        step: mr,
                                    }
                                };
                                // LOOP 1: stream the B̃ slivers of the block from L2.
                                for sj in b0..b1 {
                                    let j0 = jc + sj * nr;
                                    let cols = nr.min(jc + ncur - j0);
                                    let bsl = &bpack[sj * nr * kcur..(sj + 1) * nr * kcur];
                                    let off = i0 * ldc + j0;
                                    let epilogue = Epilogue::for_tile(bias, acc, j0, cols);
                                    microtile::<T, K>(
                                        kcur, asl, bsl, cptr, off, ldc, rows, cols, epilogue,
                                    );
                                }
                            }
                        }
                    })
                };
                let tasks = m_chunks * n_chunks;
                if threads > 1 {
                    (0..tasks).into_par_iter().for_each(task);
                } else {
                    (0..tasks).for_each(task);
                }
            });
        }
    }
}

/// Products with at most this many rows (and more than [`DIRECT_A_MAX_N`] columns) take
/// [`gemm_small_m`]. Measured on a gpt2-124m step (m = 256; machine B, 2026-11-27
/// 01:01–01:11 UTC, three calls alternating with the general nest): ahead in 13 rounds of 19,
/// medians 7–10% lower (docs/benchmarks.md, "Issue 3 at its close").
const SMALL_M_MAX: usize = 512;

/// The loop nest for products with few rows (m ≤ [`SMALL_M_MAX`]: every product of a gpt2
/// step that multiplies by a weight matrix): tasks are blocks of ≤ NC columns, as many as a
/// multiple of the thread count; each task packs its own KC×NC block of B̃ into a buffer of
/// its own thread (in that core's L2) and sweeps every row of op(A) over it, read in place
/// (op(A) = A through row pointers, op(A) = Aᵀ with step lda; an edge sliver of Aᵀ is packed).
///
/// ```text
/// tasks   column blocks of ≤ NC columns                          ← threads
/// LOOP 4    for pc in 0..k step KC:  pack this block's B̃ (KC×NC, L2)
/// LOOP 2      for each MR-row sliver of op(A), in place          (L1)
/// LOOP 1        for each B̃ sliver of the block: microkernel
/// ```
///
/// Against the general nest, no B̃ panel shared by the threads (packed by both, read by both
/// from L3 and from each other's caches) and no Ã packing; what a task packs it uses while it
/// is still in its own L2.
fn gemm_small_m<T: Element, K: Microkernel<T>>(
    p: &Problem<'_, T>,
    cptr: CPtr<T>,
    bias: Option<&[T]>,
    threads: usize,
) {
    let Blocking {
        mr,
        nr,
        kc: kc_max,
        nc: nc_max,
        ..
    } = K::BLOCKING;
    let (m, n, k) = (p.m, p.n, p.k);
    let kc = balanced(k, kc_max, 1);
    let n_slivers = n.div_ceil(nr);
    let blocks = n_slivers
        .div_ceil(nc_max / nr)
        .next_multiple_of(threads)
        .min(n_slivers);
    let m_slivers = m.div_ceil(mr);
    let task = |bi: usize| {
        let (q0, q1) = (bi * n_slivers / blocks, (bi + 1) * n_slivers / blocks);
        let (j0, j1) = (q0 * nr, (q1 * nr).min(n));
        for pc in (0..k).step_by(kc) {
            let kcur = kc.min(k - pc);
            let acc = p.accumulate || pc > 0;
            let bias = if acc { None } else { bias };
            with_buffer::<T, _>(&B_BUF, (q1 - q0) * nr * kcur, |bpack| {
                for (s, out) in bpack.chunks_mut(nr * kcur).enumerate() {
                    let js = j0 + s * nr;
                    pack::pack_b_sliver(p, pc, kcur, js, nr.min(j1 - js), nr, out);
                }
                let bpack: &[T] = bpack;
                with_buffer::<T, _>(&A_BUF, mr * kcur, |apack| {
                    for si in 0..m_slivers {
                        let i0 = si * mr;
                        let rows = mr.min(m - i0);
                        let asl = if !p.ta {
                            ASliver::Rows {
                                a: &p.a[i0 * p.lda + pc..],
                                lda: p.lda,
                                rows,
                            }
                        } else if rows == mr {
                            ASliver::Steps {
                                a: &p.a[pc * p.lda + i0..],
                                step: p.lda,
                            }
                        } else {
                            pack::pack_a_sliver(p, i0, rows, pc, kcur, mr, apack);
                            ASliver::Steps {
                                a: &apack[..],
                                step: mr,
                            }
                        };
                        for (s, bsl) in bpack.chunks_exact(nr * kcur).enumerate() {
                            let js = j0 + s * nr;
                            let cols = nr.min(j1 - js);
                            let epilogue = Epilogue::for_tile(bias, acc, js, cols);
                            microtile::<T, K>(
                                kcur,
                                asl,
                                bsl,
                                cptr,
                                i0 * p.ldc + js,
                                p.ldc,
                                rows,
                                cols,
                                epilogue,
                            );
                        }
                    }
                })
            });
        }
    };
    if threads > 1 {
        (0..blocks).into_par_iter().for_each(task);
    } else {
        (0..blocks).for_each(task);
    }
}

/// The largest MR·NR of any kernel (12·32).
const MAX_TILE: usize = 384;

/// Where the microkernel reads its block of op(A).
#[derive(Clone, Copy)]
enum ASliver<'a, T> {
    /// MR consecutive elements per step: element (i, p) at `a[p * step + i]`. A packed Ã
    /// sliver (`pack.rs`, step MR), or op(A) = Aᵀ in place (step lda).
    Steps { a: &'a [T], step: usize },
    /// op(A) = A read in place: element (i, p) at `a[i * lda + p]`, for i < rows.
    Rows { a: &'a [T], lda: usize, rows: usize },
}

/// What the microkernel does with its tile of C once the k loop is done.
#[derive(Clone, Copy)]
enum Epilogue<'a, T> {
    /// C = tile.
    Store,
    /// C += tile.
    Add,
    /// C = tile + bias (one value per column of the tile).
    Bias(&'a [T]),
}

impl<'a, T> Epilogue<'a, T> {
    /// The epilogue of the tile whose columns are `j0 .. j0 + cols`: the bias (only on the
    /// first KC block of an overwriting product, the caller's `bias` is `None` otherwise),
    /// else add (`acc`: a later KC block, or an accumulating product) or store.
    fn for_tile(bias: Option<&'a [T]>, acc: bool, j0: usize, cols: usize) -> Self {
        match bias {
            Some(b) => Epilogue::Bias(&b[j0..j0 + cols]),
            None if acc => Epilogue::Add,
            None => Epilogue::Store,
        }
    }
}

/// Runs the microkernel on the `rows`×`cols` tile of C at offset `off`; full tiles are
/// computed in place, edge tiles through a scratch tile.
#[allow(clippy::too_many_arguments)]
#[inline]
fn microtile<T: Element, K: Microkernel<T>>(
    kc: usize,
    a: ASliver<'_, T>,
    b: &[T],
    c: CPtr<T>,
    off: usize,
    ldc: usize,
    rows: usize,
    cols: usize,
    epilogue: Epilogue<'_, T>,
) {
    let Blocking { mr, nr, .. } = K::BLOCKING;
    assert!(b.len() >= nr * kc && mr * nr <= MAX_TILE && rows >= 1 && rows <= mr);
    match a {
        ASliver::Steps { a, step } => assert!(step >= mr && a.len() >= (kc - 1) * step + mr),
        ASliver::Rows { a, lda, rows: r } => {
            assert!(r == rows && a.len() >= (rows - 1) * lda + kc)
        }
    }
    // A closure cannot be an `unsafe fn`: `run` is called exactly twice below, each time with a
    // C tile (MR×NR at stride `ldc`) valid for writes and owned by this task.
    // SAFETY: A's extent is asserted above (MR elements at each of kc steps, or `rows` rows of
    // kc elements at stride lda), B̃'s too; C as just said; K's ISA is the active one.
    let run = |c: *mut T, ldc: usize, accumulate: bool, bias: *const T| unsafe {
        match a {
            ASliver::Steps { a, step } => {
                K::run(kc, a.as_ptr(), step, b.as_ptr(), c, ldc, accumulate, bias)
            }
            ASliver::Rows { a, lda, rows } => K::run_direct(
                kc,
                a.as_ptr(),
                lda,
                rows,
                b.as_ptr(),
                c,
                ldc,
                accumulate,
                bias,
            ),
        }
    };
    if rows == mr && cols == nr {
        let (accumulate, bias) = match epilogue {
            Epilogue::Store => (false, std::ptr::null()),
            Epilogue::Add => (true, std::ptr::null()),
            Epilogue::Bias(b) => {
                assert!(b.len() >= nr);
                (false, b.as_ptr())
            }
        };
        // The tile C[off .. off + (MR-1)·ldc + NR] lies inside C because rows == MR and
        // cols == NR are within the m×n bounds `Problem::validate` checked, and it belongs to
        // this task alone; a bias holds NR values (asserted). `active_isa` only selects K
        // when the CPU supports it.
        // SAFETY: `off` is inside C (see above).
        run(unsafe { c.0.add(off) }, ldc, accumulate, bias)
    } else {
        // Not zeroed first: in overwrite mode the kernel writes all MR×NR elements.
        let mut tmp = std::mem::MaybeUninit::<[T; MAX_TILE]>::uninit();
        let tmp_ptr = tmp.as_mut_ptr() as *mut T;
        // As above, with the scratch tile (MR×NR ≤ MAX_TILE, row stride NR) as C, no bias.
        run(tmp_ptr, nr, false, std::ptr::null());
        // SAFETY: the kernel initialised the first MR·NR elements (overwrite mode).
        let tile = unsafe { std::slice::from_raw_parts(tmp_ptr as *const T, mr * nr) };
        for (i, src) in tile.chunks_exact(nr).take(rows).enumerate() {
            // SAFETY: row i < rows of the tile, columns < cols: inside C (validated bounds)
            // and inside this task's tile, which no other thread touches.
            let dst = unsafe { std::slice::from_raw_parts_mut(c.0.add(off + i * ldc), cols) };
            match epilogue {
                Epilogue::Store => dst.copy_from_slice(&src[..cols]),
                Epilogue::Add => dst.iter_mut().zip(src).for_each(|(d, &x)| *d += x),
                Epilogue::Bias(b) => dst
                    .iter_mut()
                    .zip(src)
                    .zip(b)
                    .for_each(|((d, &x), &bj)| *d = x + bj),
            }
        }
    }
}

/// A 64-byte-aligned, zero-initialised scratch allocation, kept per thread and grown on
/// demand, so that packing does not pay for fresh pages on every call.
struct AlignedBuf {
    ptr: *mut u8,
    bytes: usize,
}

const ALIGN: usize = 64;

impl AlignedBuf {
    const fn new() -> Self {
        AlignedBuf {
            ptr: std::ptr::null_mut(),
            bytes: 0,
        }
    }

    fn reserve(&mut self, bytes: usize) {
        if bytes <= self.bytes {
            return;
        }
        self.release();
        let layout = std::alloc::Layout::from_size_align(bytes, ALIGN).expect("buffer size");
        // SAFETY: `layout` has non-zero size (bytes > self.bytes >= 0).
        let ptr = unsafe { std::alloc::alloc_zeroed(layout) };
        if ptr.is_null() {
            std::alloc::handle_alloc_error(layout);
        }
        self.ptr = ptr;
        self.bytes = bytes;
    }

    fn release(&mut self) {
        if !self.ptr.is_null() {
            let layout = std::alloc::Layout::from_size_align(self.bytes, ALIGN).expect("layout");
            // SAFETY: `ptr` was allocated with exactly this layout in `reserve`.
            unsafe { std::alloc::dealloc(self.ptr, layout) };
            self.ptr = std::ptr::null_mut();
            self.bytes = 0;
        }
    }
}

impl Drop for AlignedBuf {
    fn drop(&mut self) {
        self.release();
    }
}

thread_local! {
    static A_BUF: RefCell<AlignedBuf> = const { RefCell::new(AlignedBuf::new()) };
    static B_BUF: RefCell<AlignedBuf> = const { RefCell::new(AlignedBuf::new()) };
}

/// Calls `f` with `len` elements of this thread's scratch buffer `key` (or a fresh one when
/// the buffer is already in use further up this thread's stack, as happens when rayon runs a
/// second product on a thread that waits inside the first).
fn with_buffer<T: Element, R>(
    key: &'static std::thread::LocalKey<RefCell<AlignedBuf>>,
    len: usize,
    f: impl FnOnce(&mut [T]) -> R,
) -> R {
    let bytes = (len * std::mem::size_of::<T>()).max(ALIGN);
    fn run<T: Element, R>(
        buf: &mut AlignedBuf,
        bytes: usize,
        len: usize,
        f: impl FnOnce(&mut [T]) -> R,
    ) -> R {
        buf.reserve(bytes);
        // SAFETY: the allocation is at least `bytes` long, 64-byte aligned (enough for f32 and
        // f64), zero-initialised at allocation and only ever written with f32 or f64 values
        // since (`Element` is sealed to those two, for which every bit pattern is valid); the
        // `&mut` borrow of `buf` keeps it exclusive for the life of the slice.
        let s = unsafe { std::slice::from_raw_parts_mut(buf.ptr as *mut T, len) };
        f(s)
    }
    key.with(|cell| match cell.try_borrow_mut() {
        Ok(mut buf) => run(&mut buf, bytes, len, f),
        Err(_) => run(&mut AlignedBuf::new(), bytes, len, f),
    })
}

/// The AVX-512 f32 microkernel alone, on one thread, for `examples/kernel_probe.rs`: one Ã
/// sliver (12×`kc`, in L1) against `slivers` B̃ slivers (32×`kc` each, 128·kc bytes: in L1, L2
/// or beyond depending on `slivers`), each 12×32 tile of C overwritten in a small contiguous C.
/// Returns the seconds of each of `passes` passes over the slivers (2·12·32·kc·slivers flops
/// each), or `None` where the AVX-512 kernel cannot run. No packing, no threads, no strided C:
/// what is left when everything around the kernel is taken away.
#[doc(hidden)]
pub fn probe_kernel_f32(kc: usize, slivers: usize, passes: usize) -> Option<Vec<f64>> {
    #[cfg(target_arch = "x86_64")]
    {
        use kernel::Microkernel;
        if !Isa::Avx512.supported() || kc == 0 || slivers == 0 {
            return None;
        }
        let (mr, nr) = (AVX512_F32.mr, AVX512_F32.nr);
        let a: Vec<f32> = (0..mr * kc).map(|i| (i % 7) as f32 * 0.25).collect();
        let b: Vec<f32> = (0..nr * kc * slivers)
            .map(|i| (i % 5) as f32 * 0.25)
            .collect();
        let mut c = vec![0f32; mr * nr * slivers];
        let times = (0..passes)
            .map(|_| {
                let t = std::time::Instant::now();
                for s in 0..slivers {
                    // SAFETY: AVX-512F checked above; the Ã sliver holds mr·kc elements (step
                    // mr), sliver s of b holds nr·kc, and tile s of c is mr×nr with row stride
                    // nr, all inside the vectors allocated above; no bias.
                    unsafe {
                        x86::Avx512F32::run(
                            kc,
                            a.as_ptr(),
                            mr,
                            b.as_ptr().add(s * nr * kc),
                            c.as_mut_ptr().add(s * mr * nr),
                            nr,
                            false,
                            std::ptr::null(),
                        )
                    };
                }
                t.elapsed().as_secs_f64()
            })
            .collect();
        std::hint::black_box(&c);
        Some(times)
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (kc, slivers, passes);
        None
    }
}
