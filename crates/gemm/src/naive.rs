//! Level `naive`: the triple loop, one thread.
//!
//! The oracle. Obviously correct and never optimised: every other level is tested against it.

use crate::{Element, Problem};

pub(crate) fn gemm<T: Element>(p: &Problem<'_, T>, c: &mut [T]) {
    for i in 0..p.m {
        for j in 0..p.n {
            let mut acc = T::ZERO;
            for q in 0..p.k {
                acc += p.a_at(i, q) * p.b_at(q, j);
            }
            let dst = &mut c[i * p.ldc + j];
            *dst = if p.accumulate { *dst + acc } else { acc };
        }
    }
}
