//! Level `library`: the `gemm` crate, a maintained pure-Rust BLIS-style GEMM, multithreaded
//! through rayon.

use crate::{Element, Problem};

pub(crate) fn gemm<T: Element>(p: &Problem<'_, T>, c: &mut [T]) {
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
