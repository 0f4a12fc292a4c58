//! Level `blas`: the system CBLAS (OpenBLAS on Linux) behind the cargo feature `blas`.
//!
//! `cblas_sgemm` / `cblas_dgemm` in row-major order take exactly this crate's contract
//! (`CblasRowMajor`, `op(A)` stored m×k or k×m with `lda`, and so on), so the level is one call.
//! Built without the feature, the level exists but [`available`] says why it cannot run.
//! OpenBLAS runs its own thread pool (not rayon's); [`set_threads`] sizes it.

use crate::{GemmError, Problem};

/// Whether the `blas` level is built in.
pub fn available() -> Result<(), GemmError> {
    if cfg!(feature = "blas") {
        Ok(())
    } else {
        Err(GemmError::Unavailable {
            level: "blas",
            reason: "built without the cargo feature `blas` (needs libopenblas-dev; \
                     build with --features blas)"
                .into(),
        })
    }
}

#[cfg(feature = "blas")]
mod ffi {
    use std::os::raw::c_int;
    pub const ROW_MAJOR: c_int = 101;
    pub const NO_TRANS: c_int = 111;
    pub const TRANS: c_int = 112;

    #[link(name = "openblas")]
    extern "C" {
        pub fn cblas_sgemm(
            order: c_int,
            ta: c_int,
            tb: c_int,
            m: c_int,
            n: c_int,
            k: c_int,
            alpha: f32,
            a: *const f32,
            lda: c_int,
            b: *const f32,
            ldb: c_int,
            beta: f32,
            c: *mut f32,
            ldc: c_int,
        );
        pub fn cblas_dgemm(
            order: c_int,
            ta: c_int,
            tb: c_int,
            m: c_int,
            n: c_int,
            k: c_int,
            alpha: f64,
            a: *const f64,
            lda: c_int,
            b: *const f64,
            ldb: c_int,
            beta: f64,
            c: *mut f64,
            ldc: c_int,
        );
        pub fn openblas_set_num_threads(n: c_int);
    }
}

/// Sets the number of threads OpenBLAS uses (no-op without the feature).
pub fn set_threads(n: usize) {
    #[cfg(feature = "blas")]
    // SAFETY: a plain setter of OpenBLAS's global thread count.
    unsafe {
        ffi::openblas_set_num_threads(n as std::os::raw::c_int)
    };
    #[cfg(not(feature = "blas"))]
    let _ = n;
}

#[cfg(feature = "blas")]
fn dims<T>(p: &Problem<'_, T>) -> Result<[std::os::raw::c_int; 6], GemmError> {
    let conv = |x: usize, name: &str| {
        std::os::raw::c_int::try_from(x.max(1))
            .map_err(|_| GemmError::Shape(format!("blas: {name} = {x} does not fit a C int")))
    };
    Ok([
        conv(p.m, "m")?,
        conv(p.n, "n")?,
        conv(p.k, "k")?,
        conv(p.lda, "lda")?,
        conv(p.ldb, "ldb")?,
        conv(p.ldc, "ldc")?,
    ])
}

macro_rules! blas_gemm {
    ($name:ident, $t:ty, $f:ident) => {
        pub(crate) fn $name(p: &Problem<'_, $t>, c: &mut [$t]) -> Result<(), GemmError> {
            available()?;
            p.validate(c.len())?;
            #[cfg(feature = "blas")]
            {
                use ffi::*;
                let [m, n, k, lda, ldb, ldc] = dims(p)?;
                let t = |x: bool| if x { TRANS } else { NO_TRANS };
                let beta = if p.accumulate { 1.0 } else { 0.0 };
                // SAFETY: `Problem::validate` checked that A, B and C hold every element the
                // shapes and strides reach (CBLAS row-major uses the same convention), the
                // strides are at least the row lengths, and C is a distinct `&mut`.
                unsafe {
                    $f(
                        ROW_MAJOR,
                        t(p.ta),
                        t(p.tb),
                        m,
                        n,
                        k,
                        1.0,
                        p.a.as_ptr(),
                        lda,
                        p.b.as_ptr(),
                        ldb,
                        beta,
                        c.as_mut_ptr(),
                        ldc,
                    )
                };
            }
            #[cfg(not(feature = "blas"))]
            let _ = (p, c);
            Ok(())
        }
    };
}

blas_gemm!(gemm_f32, f32, cblas_sgemm);
blas_gemm!(gemm_f64, f64, cblas_dgemm);
