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
//! Dependency rule: this crate depends on nothing else of ferrogpt.

pub mod hw;
mod naive;
mod library;

use std::fmt;
use std::str::FromStr;

/// A matmul level: one rung of the ladder.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Level {
    /// The triple loop, one thread. The oracle for every other level.
    Naive,
    /// A maintained pure-Rust GEMM crate, multithreaded.
    Library,
}

impl Level {
    /// Every level, in ladder order.
    pub const ALL: &'static [Level] = &[Level::Naive, Level::Library];

    /// The name used on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Level::Naive => "naive",
            Level::Library => "library",
        }
    }

    /// One line on how this level computes the product.
    pub fn strategy(self) -> &'static str {
        match self {
            Level::Naive => "triple loop, 1 thread",
            Level::Library => "gemm crate (BLIS-style, multithreaded)",
        }
    }

    /// Whether this level can run on this machine and build.
    pub fn available(self) -> Result<(), GemmError> {
        Ok(())
    }

    /// The fastest f32 level available here: the default for training.
    pub fn fastest() -> Level {
        Level::Library
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
            .copied()
            .find(|l| l.name() == s)
            .ok_or_else(|| GemmError::UnknownLevel(s.to_string()))
    }
}

/// Why a product could not be computed.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum GemmError {
    #[error("unknown matmul level '{0}' (expected one of: {names})", names = level_names())]
    UnknownLevel(String),
    #[error("matmul level '{level}' is not available here: {reason}")]
    Unavailable { level: &'static str, reason: String },
    #[error("matmul: {0}")]
    Shape(String),
}

fn level_names() -> String {
    Level::ALL.iter().map(|l| l.name()).collect::<Vec<_>>().join(", ")
}

/// The element types of the ladder: f32 (training) and f64 (the oracle, gradient checks).
pub trait Element:
    Copy
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
    const ZERO: Self;
    const ONE: Self;
    /// "f32" or "f64".
    const NAME: &'static str;
    fn from_f64(x: f64) -> Self;
    fn to_f64(self) -> f64;
    /// The library level for this type (see `library.rs`).
    #[doc(hidden)]
    fn library_gemm(p: &Problem<'_, Self>, c: &mut [Self]);
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
}

/// One product, validated: the operands and their layout (see the crate doc for the contract).
#[derive(Clone, Copy, Debug)]
pub struct Problem<'a, T> {
    pub m: usize,
    pub n: usize,
    pub k: usize,
    pub a: &'a [T],
    pub lda: usize,
    pub ta: bool,
    pub b: &'a [T],
    pub ldb: usize,
    pub tb: bool,
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

    fn validate(&self, c_len: usize) -> Result<(), GemmError> {
        let need = |rows: usize, cols: usize, ld: usize| {
            if rows == 0 || cols == 0 {
                0
            } else {
                (rows - 1) * ld + cols
            }
        };
        let (ar, ac) = if self.ta { (self.k, self.m) } else { (self.m, self.k) };
        let (br, bc) = if self.tb { (self.n, self.k) } else { (self.k, self.n) };
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
/// Shapes and strides follow the crate-level contract. Errors: a level not available here, or
/// buffers too short for the stated shapes. With `k == 0`, C is zeroed (or left as is when
/// accumulating).
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
    let p = Problem { m, n, k, a, lda, ta, b, ldb, tb, ldc, accumulate };
    p.validate(c.len())?;
    if m == 0 || n == 0 {
        return Ok(());
    }
    if k == 0 {
        if !accumulate {
            for i in 0..m {
                c[i * ldc..i * ldc + n].fill(T::ZERO);
            }
        }
        return Ok(());
    }
    match level {
        Level::Naive => naive::gemm(&p, c),
        Level::Library => T::library_gemm(&p, c),
    }
    Ok(())
}

/// Number of threads the parallel levels use (the size of rayon's global pool).
pub fn threads() -> usize {
    rayon::current_num_threads()
}
