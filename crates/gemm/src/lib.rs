//! # ferrogpt-gemm: the CPU matmul ladder
//!
//! Every matrix product in ferrogpt goes through [`matmul`]. The same product is implemented at
//! several *levels* of hardware use ([`Level`]), one file each, so that the cost of every idea
//! (threads, cache blocking, SIMD, a library, a matrix engine) can be measured on its own.
//!
//! ## The contract
//!
//! ```text
//! C (m×n)  =  op(A) (m×k) · op(B) (k×n)          (overwrite)
//! C (m×n) +=  op(A) (m×k) · op(B) (k×n)          (accumulate)
//! ```
//!
//! All matrices are row-major with an explicit row stride (`ld*`, in elements):
//! * `op(A) = A` when `ta == false`: A is stored m×k, element (i, p) at `a[i*lda + p]`;
//!   `op(A) = Aᵀ` when `ta == true`: A is stored k×m, element (p, i) at `a[p*lda + i]`.
//! * `op(B)` likewise: stored k×n (`tb == false`, `b[p*ldb + j]`) or n×k (`tb == true`,
//!   `b[j*ldb + p]`).
//! * C is stored m×n, element (i, j) at `c[i*ldc + j]`.
//!
//! These cover the three products a linear layer needs: forward `Y = X·W`, backward
//! `dX = dY·Wᵀ` and `dW += Xᵀ·dY`.
//!
//! Precision: every level accumulates in the element type (f32 or f64), except `amx`, which
//! rounds A and B to bf16 and accumulates in f32. The order of summation differs between levels,
//! so results agree to rounding, not bit for bit.
//!
//! Threads: the parallel levels split one product across rayon's pool. Code that already runs
//! many products in parallel (attention: one small product per sequence and head) wraps them
//! in [`serial`], and each product then stays on the calling thread (honoured by `parallel`,
//! `blocked-parallel`, `simd` and `amx`; the `library` and `blas` levels thread as their
//! libraries decide).
//!
//! ISA: `simd`, `amx` and the GEMV kernels pick their instructions at run time, once per
//! process: AVX-512F, else AVX2+FMA, else a portable scalar kernel on x86_64, NEON on aarch64
//! ([`simd::active_isa`]; `FERROGPT_ISA=avx512|avx2|neon|scalar` forces one). A level this machine or build cannot run
//! answers [`GemmError::Unavailable`] with the reason, never a panic or a silent fallback.
//!
//! Beside the ladder:
//! * [`gemv`]: matrix-vector products for decoding one token, with weights stored f32, bf16
//!   or int8 (Q8_0), one kernel per ISA.
//! * [`hw`]: what this machine is (CPU, caches, features, CUDA devices) and its measured FMA
//!   peak, the 100% of the benchmarks.
//! * [`bench`](mod@bench): the matmul benchmark behind `ferrogpt bench matmul`.
//! * [`offload`]: the hook through which ferrogpt-wgpu provides the `wgpu` level.
//!
//! Dependency rule: this crate depends on nothing else of ferrogpt. ferrogpt-core runs every
//! matrix product of its ops and tape through [`matmul`] at a [`Level`]; ferrogpt-model's
//! decoder multiplies by [`gemv`]; the CLI's `info` and `bench matmul` print [`hw`] and
//! [`bench`](mod@bench); ferrogpt-wgpu registers its engine with [`offload`].
//!
//! # Example
//!
//! A linear layer's forward `Y = X·W` and its weight gradient `dW += Xᵀ·dY` (X read
//! transposed where it lies), then one odd-shaped product at every level this machine runs,
//! against the naive oracle; last, the same weights as an int8 matrix for decoding.
//!
//! ```
//! use ferrogpt_gemm::gemv::{self, Kernel, Layout, Matrix, WeightFormat};
//! use ferrogpt_gemm::{matmul, Level};
//!
//! let x = [1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0]; // (2, 3)
//! let w = [1.0f32, 0.0, 0.0, 1.0, 1.0, 1.0]; // (3, 2)
//! let mut y = [0.0f32; 4]; // (2, 2)
//! // C = op(A)·op(B): no transposes, m = 2, n = 2, k = 3, row strides 3, 2 and 2.
//! matmul(Level::Naive, false, false, 2, 2, 3, &x, 3, &w, 2, &mut y, 2, false)?;
//! assert_eq!(y, [4.0, 5.0, 10.0, 11.0]);
//!
//! let dy = [1.0f32, 0.0, 0.0, 1.0]; // (2, 2)
//! let mut dw = [0.0f32; 6]; // (3, 2), accumulated
//! matmul(Level::Naive, true, false, 3, 2, 2, &x, 3, &dy, 2, &mut dw, 2, true)?;
//! assert_eq!(dw, [1.0, 4.0, 2.0, 5.0, 3.0, 6.0]); // Xᵀ
//!
//! let (m, n, k) = (37, 29, 53);
//! let a: Vec<f32> = (0..m * k).map(|i| (i * 7 % 13) as f32 / 13.0 - 0.5).collect();
//! let b: Vec<f32> = (0..k * n).map(|i| (i * 5 % 11) as f32 / 11.0 - 0.5).collect();
//! let mut want = vec![0.0f32; m * n];
//! matmul(Level::Naive, false, false, m, n, k, &a, k, &b, n, &mut want, n, false)?;
//! let levels = Level::available_levels();
//! assert!(levels.contains(&Level::fastest())); // simd or library: full f32 precision
//! for level in levels {
//!     let mut c = vec![0.0f32; m * n];
//!     matmul(level, false, false, m, n, k, &a, k, &b, n, &mut c, n, false)?;
//!     // The order of summation differs; amx also rounds A and B to bf16.
//!     let tol = if level.exact() { 1e-5 } else { 2e-2 };
//!     let err = c.iter().zip(&want).map(|(c, w)| (c - w).abs()).fold(0.0, f32::max);
//!     assert!(err <= tol * k as f32, "{level}: {err}");
//! }
//! assert!(matmul(Level::Naive, false, false, m, n, k, &a, k, &b, n, &mut [0.0; 10], n, false)
//!     .is_err()); // C too short: an error, nothing written
//!
//! // Decoding: y = W·x with W (out, in) = (29, 53) stored as Q8_0, on this CPU's kernel.
//! let wt = Matrix::from_f32(WeightFormat::Int8, n, k, &b, Layout::InOut)?; // b is (in, out)
//! // 29 rows padded to 8 groups of 4, 53 columns to 2 blocks of 32: quants and f32 scales.
//! assert_eq!((wt.rows(), wt.cols(), wt.bytes()), (29, 53, 32 * 64 + 4 * 32 * 2));
//! let xv = &a[..k];
//! let mut yv = vec![0.0f32; n];
//! gemv::gemv(Kernel::active()?, &wt, xv, &mut yv, None, false)?;
//! for (r, y) in yv.iter().enumerate() {
//!     let exact: f32 = (0..k).map(|p| xv[p] * b[p * n + r]).sum();
//!     assert!((y - exact).abs() < 0.05, "row {r}: {y} vs {exact}");
//! }
//! # Ok::<(), ferrogpt_gemm::GemmError>(())
//! ```

#![warn(missing_docs)]

pub mod amx;
pub mod bench;
pub mod blas;
mod blocked;
mod blocked_parallel;
pub mod gemv;
pub mod hw;
#[doc(hidden)]
pub mod library;
mod naive;
pub mod offload;
mod parallel;
pub mod simd;
#[cfg(target_arch = "x86_64")]
mod transpose;

pub use simd::Isa;

use std::cell::Cell;
use std::fmt;
use std::str::FromStr;

thread_local! {
    static SERIAL: Cell<bool> = const { Cell::new(false) };
}

/// Runs `f` with every product it starts on this thread computed by this thread alone (no
/// rayon tasks), for callers that parallelise over many small products themselves.
pub fn serial<R>(f: impl FnOnce() -> R) -> R {
    struct Restore(bool);
    impl Drop for Restore {
        fn drop(&mut self) {
            SERIAL.with(|s| s.set(self.0));
        }
    }
    let _restore = Restore(SERIAL.with(|s| s.replace(true)));
    f()
}

/// Whether the calling thread is inside [`serial`].
pub(crate) fn in_serial() -> bool {
    SERIAL.with(|s| s.get())
}

/// Threads for a product of `macs` multiply-adds: 1 inside [`serial`] or below `min_macs`
/// (a rayon fork costs more than such a product), else the pool's size.
pub(crate) fn threads_for(macs: usize, min_macs: usize) -> usize {
    if macs < min_macs || in_serial() {
        1
    } else {
        rayon::current_num_threads().max(1)
    }
}

/// A matmul level: one rung of the ladder.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Level {
    /// The triple loop, one thread. The oracle for every other level (`naive.rs`).
    Naive,
    /// The naive loop with the rows of C split across rayon threads (`parallel.rs`).
    Parallel,
    /// Cache-blocked tiles in i-k-j order, one thread (`blocked.rs`).
    Blocked,
    /// Cache-blocked tiles, row blocks split across rayon threads (`blocked_parallel.rs`).
    BlockedParallel,
    /// Our own BLIS-style GEMM: packed panels, a register-blocked `std::arch` microkernel per
    /// ISA, multithreaded (`simd/`).
    Simd,
    /// A maintained pure-Rust GEMM crate (`matrixmultiply`), multithreaded (`library.rs`).
    Library,
    /// The system CBLAS (OpenBLAS) behind the cargo feature `blas` (`blas.rs`).
    Blas,
    /// Intel AMX tiles: bf16 inputs, f32 accumulation, f32 only (`amx.rs`).
    Amx,
    /// A GPU through wgpu, the operands copied to it and the result back on every call; f32
    /// only; available once `ferrogpt-wgpu` has registered its engine and an adapter exists
    /// (`offload.rs`).
    Wgpu,
}

impl Level {
    /// Every level that computes on the CPU, in ladder order: what the benchmarks run and
    /// the tests loop over by default. [`Level::OFFLOADED`] holds the level that sends its
    /// products to a GPU, run only when named.
    pub const ALL: &'static [Level] = &[
        Level::Naive,
        Level::Parallel,
        Level::Blocked,
        Level::BlockedParallel,
        Level::Simd,
        Level::Library,
        Level::Blas,
        Level::Amx,
    ];

    /// The levels that compute on another device (`wgpu`): parsed by name, never in a default
    /// list (asking whether one is available opens the device).
    pub const OFFLOADED: &'static [Level] = &[Level::Wgpu];

    /// The name used on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Level::Naive => "naive",
            Level::Parallel => "parallel",
            Level::Blocked => "blocked",
            Level::BlockedParallel => "blocked-parallel",
            Level::Simd => "simd",
            Level::Library => "library",
            Level::Blas => "blas",
            Level::Amx => "amx",
            Level::Wgpu => "wgpu",
        }
    }

    /// One line on how this level computes the product.
    pub fn strategy(self) -> &'static str {
        match self {
            Level::Naive => "triple loop, 1 thread",
            Level::Parallel => "triple loop, rows split across threads",
            Level::Blocked => "cache-blocked tiles (i-k-j), 1 thread",
            Level::BlockedParallel => "cache-blocked tiles, row blocks across threads",
            #[cfg(target_arch = "aarch64")]
            Level::Simd => "BLIS-style packed panels + NEON microkernel, threads",
            #[cfg(not(target_arch = "aarch64"))]
            Level::Simd => "BLIS-style packed panels + AVX-512/AVX2 microkernel, threads",
            #[cfg(target_arch = "x86_64")]
            Level::Library => "matrixmultiply crate (BLIS-style, AVX2, threads)",
            #[cfg(target_arch = "aarch64")]
            Level::Library => "matrixmultiply crate (BLIS-style, NEON, threads)",
            #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
            Level::Library => "matrixmultiply crate (BLIS-style, threads)",
            Level::Blas => "system CBLAS (OpenBLAS)",
            Level::Amx => "Intel AMX bf16 tiles, f32 accumulation, threads",
            Level::Wgpu => "WGSL GEMM on a GPU via wgpu, data moved per call",
        }
    }

    /// Whether this level can run on this machine and build; the error says why not.
    ///
    /// `simd` fails when `FERROGPT_ISA` forces an ISA this CPU lacks or on a target without a
    /// built microkernel (neither x86_64 nor aarch64); `blas` fails when built without the `blas` feature; `amx` fails on a
    /// CPU without AMX-BF16 or when the OS refuses the tile-data permission; `wgpu` fails
    /// until `ferrogpt-wgpu` registers its engine, and without a wgpu adapter.
    pub fn available(self) -> Result<(), GemmError> {
        match self {
            Level::Naive
            | Level::Parallel
            | Level::Blocked
            | Level::BlockedParallel
            | Level::Library => Ok(()),
            Level::Simd => simd::active_isa().map(|_| ()),
            Level::Blas => blas::available(),
            Level::Amx => amx::available(),
            Level::Wgpu => offload::available(),
        }
    }

    /// The levels that [`Level::available`] accepts, in ladder order.
    pub fn available_levels() -> Vec<Level> {
        Level::ALL
            .iter()
            .copied()
            .filter(|l| l.available().is_ok())
            .collect()
    }

    /// Whether the level computes in the element type's own precision. `amx` does not: it
    /// rounds the inputs to bf16 (8 significant bits).
    pub fn exact(self) -> bool {
        self != Level::Amx
    }

    /// The fastest f32 level available here at full f32 precision: the default for training.
    ///
    /// `simd` where it is available (it beats `library` and OpenBLAS on this project's x86
    /// machines, see docs/ladder.md; on aarch64 its NEON kernel against `library`'s is not
    /// measured on hardware yet), else `library`. `amx` is faster still but rounds to bf16,
    /// so it is chosen only on request.
    pub fn fastest() -> Level {
        if Level::Simd.available().is_ok() {
            Level::Simd
        } else {
            Level::Library
        }
    }
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Level {
    type Err = GemmError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Level::ALL
            .iter()
            .chain(Level::OFFLOADED)
            .copied()
            .find(|l| l.name() == s)
            .ok_or_else(|| GemmError::UnknownLevel(s.to_string()))
    }
}

/// Why a product could not be computed.
#[derive(Clone, Debug, thiserror::Error, PartialEq)]
pub enum GemmError {
    /// A level name that [`Level::from_str`] does not know (the name as given).
    #[error("unknown matmul level '{0}' (expected one of: {names})", names = level_names())]
    UnknownLevel(String),
    /// A level (or the GEMV kernels, `level` "gemv") that cannot run on this machine or build.
    #[error("matmul level '{level}' is not available here: {reason}")]
    Unavailable {
        /// The level's name, as [`Level::name`].
        level: &'static str,
        /// Why, in words: the CPU feature, cargo feature or device that is missing.
        reason: String,
    },
    /// Operands that do not fit the stated shapes and strides, a bias of the wrong length, or
    /// (GEMV) a weight that cannot be stored in its format or an unknown format name; the
    /// message names the operand.
    #[error("matmul: {0}")]
    Shape(String),
}

fn level_names() -> String {
    Level::ALL
        .iter()
        .chain(Level::OFFLOADED)
        .map(|l| l.name())
        .collect::<Vec<_>>()
        .join(", ")
}

/// The element types of the ladder: f32 (training) and f64 (the oracle, gradient checks).
///
/// Sealed: implemented for f32 and f64 only (the SIMD and AMX code relies on it).
pub trait Element:
    sealed::Sealed
    + Copy
    + Send
    + Sync
    + Default
    + PartialEq
    + PartialOrd
    + fmt::Debug
    + fmt::Display
    + std::ops::Add<Output = Self>
    + std::ops::Sub<Output = Self>
    + std::ops::Mul<Output = Self>
    + std::ops::Div<Output = Self>
    + std::ops::AddAssign
    + std::ops::MulAssign
    + std::ops::Neg<Output = Self>
    + std::iter::Sum
    + 'static
{
    /// 0.0.
    const ZERO: Self;
    /// 1.0.
    const ONE: Self;
    /// "f32" or "f64".
    const NAME: &'static str;
    /// `x` rounded to this type (`as`: nearest, overflow to ±infinity).
    fn from_f64(x: f64) -> Self;
    /// The value in f64 (exact).
    fn to_f64(self) -> f64;
    /// The library level for this type (see `library.rs`).
    #[doc(hidden)]
    fn library_gemm(p: &Problem<'_, Self>, c: &mut [Self]);
    /// The simd level for this type (see `simd/mod.rs`); `bias` (n values, overwrite mode
    /// only) is added to every row of C in the kernel's epilogue.
    #[doc(hidden)]
    fn simd_gemm(p: &Problem<'_, Self>, c: &mut [Self], isa: Isa, bias: Option<&[Self]>);
    /// The blas level for this type (see `blas.rs`).
    #[doc(hidden)]
    fn blas_gemm(p: &Problem<'_, Self>, c: &mut [Self]) -> Result<(), GemmError>;
    /// The amx level for this type (see `amx.rs`): f32 only.
    #[doc(hidden)]
    fn amx_gemm(p: &Problem<'_, Self>, c: &mut [Self]) -> Result<(), GemmError>;
    /// The wgpu level for this type (see `offload.rs`): f32 only.
    #[doc(hidden)]
    fn wgpu_gemm(p: &Problem<'_, Self>, c: &mut [Self]) -> Result<(), GemmError>;
}

mod sealed {
    pub trait Sealed {}
    impl Sealed for f32 {}
    impl Sealed for f64 {}
}

impl Element for f32 {
    const ZERO: Self = 0.0;
    const ONE: Self = 1.0;
    const NAME: &'static str = "f32";
    fn from_f64(x: f64) -> Self {
        x as f32
    }
    fn to_f64(self) -> f64 {
        self as f64
    }
    fn library_gemm(p: &Problem<'_, Self>, c: &mut [Self]) {
        library::gemm(p, c)
    }
    fn simd_gemm(p: &Problem<'_, Self>, c: &mut [Self], isa: Isa, bias: Option<&[Self]>) {
        simd::gemm_f32(p, c, isa, bias)
    }
    fn blas_gemm(p: &Problem<'_, Self>, c: &mut [Self]) -> Result<(), GemmError> {
        blas::gemm_f32(p, c)
    }
    fn amx_gemm(p: &Problem<'_, Self>, c: &mut [Self]) -> Result<(), GemmError> {
        amx::gemm_f32(p, c)
    }
    fn wgpu_gemm(p: &Problem<'_, Self>, c: &mut [Self]) -> Result<(), GemmError> {
        offload::gemm_f32(p, c)
    }
}

impl Element for f64 {
    const ZERO: Self = 0.0;
    const ONE: Self = 1.0;
    const NAME: &'static str = "f64";
    fn from_f64(x: f64) -> Self {
        x
    }
    fn to_f64(self) -> f64 {
        self
    }
    fn library_gemm(p: &Problem<'_, Self>, c: &mut [Self]) {
        library::gemm(p, c)
    }
    fn simd_gemm(p: &Problem<'_, Self>, c: &mut [Self], isa: Isa, bias: Option<&[Self]>) {
        simd::gemm_f64(p, c, isa, bias)
    }
    fn blas_gemm(p: &Problem<'_, Self>, c: &mut [Self]) -> Result<(), GemmError> {
        blas::gemm_f64(p, c)
    }
    fn amx_gemm(p: &Problem<'_, Self>, c: &mut [Self]) -> Result<(), GemmError> {
        let _ = (p, c);
        Err(GemmError::Unavailable {
            level: "amx",
            reason: "AMX multiplies bf16 with f32 accumulation; it has no f64 product".into(),
        })
    }
    fn wgpu_gemm(p: &Problem<'_, Self>, c: &mut [Self]) -> Result<(), GemmError> {
        let _ = (p, c);
        Err(GemmError::Unavailable {
            level: "wgpu",
            reason: "the WGSL kernels multiply in f32; there is no f64 product".into(),
        })
    }
}

/// One product: the operands and their layout, as [`matmul`] hands them to a level after
/// checking them (see the crate doc for the contract). Built by hand it is unchecked: the
/// element accessors panic on an index past a slice, and the hidden per-level entry points
/// check it again before their unsafe code reads through it.
#[derive(Clone, Copy, Debug)]
pub struct Problem<'a, T> {
    /// Rows of op(A) and of C.
    pub m: usize,
    /// Columns of op(B) and of C.
    pub n: usize,
    /// The reduction dimension: columns of op(A), rows of op(B).
    pub k: usize,
    /// A, row-major: m×k, or k×m when `ta`.
    pub a: &'a [T],
    /// A's row stride in elements (at least its stored row length, unless it has one row).
    pub lda: usize,
    /// op(A) = Aᵀ.
    pub ta: bool,
    /// B, row-major: k×n, or n×k when `tb`.
    pub b: &'a [T],
    /// B's row stride in elements.
    pub ldb: usize,
    /// op(B) = Bᵀ.
    pub tb: bool,
    /// C's row stride in elements (C itself is passed beside the problem, m×n).
    pub ldc: usize,
    /// `true`: C += op(A)·op(B); `false`: C = op(A)·op(B).
    pub accumulate: bool,
}

impl<T: Element> Problem<'_, T> {
    /// Element (i, p) of op(A).
    #[inline(always)]
    pub fn a_at(&self, i: usize, p: usize) -> T {
        if self.ta {
            self.a[p * self.lda + i]
        } else {
            self.a[i * self.lda + p]
        }
    }

    /// Element (p, j) of op(B).
    #[inline(always)]
    pub fn b_at(&self, p: usize, j: usize) -> T {
        if self.tb {
            self.b[j * self.ldb + p]
        } else {
            self.b[p * self.ldb + j]
        }
    }

    /// (row stride, column stride) of op(A) in elements.
    pub fn a_strides(&self) -> (usize, usize) {
        if self.ta {
            (1, self.lda)
        } else {
            (self.lda, 1)
        }
    }

    /// (row stride, column stride) of op(B) in elements.
    pub fn b_strides(&self) -> (usize, usize) {
        if self.tb {
            (1, self.ldb)
        } else {
            (self.ldb, 1)
        }
    }

    /// Checks the strides and buffer lengths against the shapes (what every level's unsafe
    /// code relies on). Errors: [`GemmError::Shape`], naming the operand.
    pub(crate) fn validate(&self, c_len: usize) -> Result<(), GemmError> {
        let need = |rows: usize, cols: usize, ld: usize| {
            if rows == 0 || cols == 0 {
                0
            } else {
                (rows - 1) * ld + cols
            }
        };
        let (ar, ac) = if self.ta {
            (self.k, self.m)
        } else {
            (self.m, self.k)
        };
        let (br, bc) = if self.tb {
            (self.n, self.k)
        } else {
            (self.k, self.n)
        };
        let checks = [
            ("A", ar, ac, self.lda, self.a.len()),
            ("B", br, bc, self.ldb, self.b.len()),
            ("C", self.m, self.n, self.ldc, c_len),
        ];
        for (name, rows, cols, ld, len) in checks {
            if ld < cols && rows > 1 {
                return Err(GemmError::Shape(format!(
                    "{name} is stored {rows}x{cols} but its row stride is {ld}"
                )));
            }
            if len < need(rows, cols, ld) {
                return Err(GemmError::Shape(format!(
                    "{name} is stored {rows}x{cols} with row stride {ld} and needs {} elements, found {len}",
                    need(rows, cols, ld)
                )));
            }
        }
        Ok(())
    }
}

/// Computes `C = op(A)·op(B)` (or `C += ...` when `accumulate`) at `level`.
///
/// Shapes and strides follow the crate-level contract: row-major, `ld*` in elements, each at
/// least its stored row length (any value for an operand of one row); the slices may be
/// longer than needed. Errors, before anything is written: [`GemmError::Unavailable`] for a
/// level not available here ([`Level::available`]; `amx` and `wgpu` also refuse f64), and
/// [`GemmError::Shape`] for a stride below its row length or a buffer too short. With
/// `m == 0` or `n == 0` nothing is done; with `k == 0`, C is zeroed (or left as is when
/// accumulating). The `simd` level runs the ISA of [`simd::active_isa`].
#[allow(clippy::too_many_arguments)]
pub fn matmul<T: Element>(
    level: Level,
    ta: bool,
    tb: bool,
    m: usize,
    n: usize,
    k: usize,
    a: &[T],
    lda: usize,
    b: &[T],
    ldb: usize,
    c: &mut [T],
    ldc: usize,
    accumulate: bool,
) -> Result<(), GemmError> {
    product(
        level, ta, tb, m, n, k, a, lda, b, ldb, c, ldc, accumulate, None,
    )
}

/// Computes `C = op(A)·op(B) + 1·biasᵀ` at `level`: `bias` (n values) is added to every row of
/// C, which is overwritten.
///
/// The `simd` level adds the bias in its microkernel's epilogue, while the tile is still in
/// registers (C is written once, never read); the other levels fill C's rows with the bias and
/// accumulate the product onto them. Errors as [`matmul`], and a bias that is not n long.
#[allow(clippy::too_many_arguments)]
pub fn matmul_bias<T: Element>(
    level: Level,
    ta: bool,
    tb: bool,
    m: usize,
    n: usize,
    k: usize,
    a: &[T],
    lda: usize,
    b: &[T],
    ldb: usize,
    bias: &[T],
    c: &mut [T],
    ldc: usize,
) -> Result<(), GemmError> {
    if bias.len() != n {
        return Err(GemmError::Shape(format!(
            "the bias has {} values for {n} columns",
            bias.len()
        )));
    }
    product(
        level,
        ta,
        tb,
        m,
        n,
        k,
        a,
        lda,
        b,
        ldb,
        c,
        ldc,
        false,
        Some(bias),
    )
}

/// `matmul` and `matmul_bias`: C (+)= op(A)·op(B), plus `bias` in every row when given (then
/// `accumulate` is false). Only the `simd` level takes the bias into its kernels; for the
/// others C's rows are filled with it and the product accumulated onto them.
#[allow(clippy::too_many_arguments)]
fn product<T: Element>(
    level: Level,
    ta: bool,
    tb: bool,
    m: usize,
    n: usize,
    k: usize,
    a: &[T],
    lda: usize,
    b: &[T],
    ldb: usize,
    c: &mut [T],
    ldc: usize,
    accumulate: bool,
    bias: Option<&[T]>,
) -> Result<(), GemmError> {
    let mut p = Problem {
        m,
        n,
        k,
        a,
        lda,
        ta,
        b,
        ldb,
        tb,
        ldc,
        accumulate,
    };
    p.validate(c.len())?;
    if m == 0 || n == 0 {
        return Ok(());
    }
    // A stored operand of one row never uses its stride, so the contract lets it be anything;
    // CBLAS refuses one below the row length (and leaves C as it was), and the row-parallel
    // levels split C into chunks of `ldc`. Such strides become the row length. (rows, cols)
    // of A and B as stored:
    let (a_rows, a_cols) = if ta { (k, m) } else { (m, k) };
    let (b_rows, b_cols) = if tb { (n, k) } else { (k, n) };
    if a_rows == 1 {
        p.lda = p.lda.max(a_cols);
    }
    if b_rows == 1 {
        p.ldb = p.ldb.max(b_cols);
    }
    if m == 1 {
        p.ldc = p.ldc.max(n);
    }
    let ldc = p.ldc;
    let mut bias = bias;
    if let Some(row) = bias.filter(|_| level != Level::Simd || k == 0) {
        for i in 0..m {
            c[i * ldc..i * ldc + n].copy_from_slice(row);
        }
        (p.accumulate, bias) = (true, None);
    }
    if k == 0 {
        if !p.accumulate {
            for i in 0..m {
                c[i * ldc..i * ldc + n].fill(T::ZERO);
            }
        }
        return Ok(());
    }
    match level {
        Level::Naive => naive::gemm(&p, c),
        Level::Parallel => parallel::gemm(&p, c),
        Level::Blocked => blocked::gemm(&p, c),
        Level::BlockedParallel => blocked_parallel::gemm(&p, c),
        Level::Simd => T::simd_gemm(&p, c, simd::active_isa()?, bias),
        Level::Library => T::library_gemm(&p, c),
        Level::Blas => T::blas_gemm(&p, c)?,
        Level::Amx => T::amx_gemm(&p, c)?,
        // Inside `serial` the caller runs many small products on the CPU's threads at once
        // (attention's heads): those stay on the CPU (offload.rs says why).
        Level::Wgpu if in_serial() => match Level::fastest() {
            Level::Simd => T::simd_gemm(&p, c, simd::active_isa()?, None),
            _ => T::library_gemm(&p, c),
        },
        Level::Wgpu => T::wgpu_gemm(&p, c)?,
    }
    Ok(())
}

/// Number of threads the parallel levels use: the size of the rayon pool of the calling
/// thread (the global pool, or the one it is `install`ed in).
pub fn threads() -> usize {
    rayon::current_num_threads()
}
