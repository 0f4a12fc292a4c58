//! Level `library`: a maintained pure-Rust GEMM crate, `matrixmultiply` with its `threading`
//! feature.
//!
//! Two crates were compared (`cargo run --release -p ferrogpt-gemm --example library_compare`;
//! figures in docs/benchmarks.md, "Choosing the library level"). `gemm` selects AVX-512 kernels
//! only with its `nightly` feature, so on stable Rust it runs its AVX2 kernels;
//! `matrixmultiply` 0.3 uses AVX2+FMA too but won from 256 up, so it is the level. Both stay callable (`matrixmultiply_gemm`, `gemm_crate`) for the comparison.
//! `matrixmultiply` runs its own thread pool (not rayon's), sized once per process by
//! `MATMUL_NUM_THREADS` (default: physical cores, at most 4).

use crate::{Element, Problem};

pub(crate) fn gemm<T: Element>(p: &Problem<'_, T>, c: &mut [T]) {
    matrixmultiply_gemm(p, c)
}

/// Panics unless `p`'s shapes, strides and lengths hold (the unsafe calls below rely on them;
/// these functions are public for `examples/library_compare.rs`, which builds its own
/// [`Problem`]s).
fn check<T: Element>(p: &Problem<'_, T>, c: &[T]) {
    if let Err(e) = p.validate(c.len()) {
        panic!("library: {e}");
    }
}

/// `matrixmultiply` (threading feature): the level's choice. Panics on shapes that do not
/// hold (see [`crate::matmul`] for the checked entry point).
#[doc(hidden)]
pub fn matrixmultiply_gemm<T: Element>(p: &Problem<'_, T>, c: &mut [T]) {
    check(p, c);
    let (rsa, csa) = p.a_strides();
    let (rsb, csb) = p.b_strides();
    let beta = if p.accumulate { 1.0 } else { 0.0 };
    // SAFETY: `Problem::validate` checked every index the strides reach; C is a distinct
    // `&mut`. T is f32 or f64 (`Element` is sealed), checked by NAME before the casts.
    unsafe {
        if T::NAME == "f32" {
            matrixmultiply::sgemm(
                p.m,
                p.k,
                p.n,
                1.0,
                p.a.as_ptr() as *const f32,
                rsa as isize,
                csa as isize,
                p.b.as_ptr() as *const f32,
                rsb as isize,
                csb as isize,
                beta as f32,
                c.as_mut_ptr() as *mut f32,
                p.ldc as isize,
                1,
            )
        } else {
            matrixmultiply::dgemm(
                p.m,
                p.k,
                p.n,
                1.0,
                p.a.as_ptr() as *const f64,
                rsa as isize,
                csa as isize,
                p.b.as_ptr() as *const f64,
                rsb as isize,
                csb as isize,
                beta,
                c.as_mut_ptr() as *mut f64,
                p.ldc as isize,
                1,
            )
        }
    }
}

/// The `gemm` crate (BLIS-style, rayon threads): the other candidate. Panics as
/// [`matrixmultiply_gemm`].
#[doc(hidden)]
pub fn gemm_crate<T: Element>(p: &Problem<'_, T>, c: &mut [T]) {
    check(p, c);
    let (rsa, csa) = p.a_strides();
    let (rsb, csb) = p.b_strides();
    let threads = rayon::current_num_threads();
    let par = if threads > 1 && p.m * p.n * p.k >= 64 * 64 * 64 {
        gemm::Parallelism::Rayon(threads)
    } else {
        gemm::Parallelism::None
    };
    // SAFETY: `Problem::validate` checked that every index the strides reach is in bounds, and
    // C does not alias A or B (it is a distinct `&mut`).
    unsafe {
        gemm::gemm(
            p.m,
            p.n,
            p.k,
            c.as_mut_ptr(),
            1,
            p.ldc as isize,
            p.accumulate,
            p.a.as_ptr(),
            csa as isize,
            rsa as isize,
            p.b.as_ptr(),
            csb as isize,
            rsb as isize,
            if p.accumulate { T::ONE } else { T::ZERO },
            T::ONE,
            false,
            false,
            false,
            par,
        )
    }
}
