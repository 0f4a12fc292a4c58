//! Level `parallel`: the naive triple loop with the rows of C split across rayon threads.
//!
//! The only idea is threads: each row of C is independent, so rayon hands rows to the cores.
//! Memory access is as bad as in `naive` (B is walked down a column in the inner loop), so the
//! speedup is at most the number of cores.

use crate::{Element, Problem};
use rayon::prelude::*;

pub(crate) fn gemm<T: Element>(p: &Problem<'_, T>, c: &mut [T]) {
    // C rows: (m, ldc), the last one only n long.
    let len = (p.m - 1) * p.ldc + p.n;
    let row_of = |(i, row): (usize, &mut [T])| {
        for (j, dst) in row[..p.n].iter_mut().enumerate() {
            let mut acc = T::ZERO;
            for q in 0..p.k {
                acc += p.a_at(i, q) * p.b_at(q, j);
            }
            *dst = if p.accumulate { *dst + acc } else { acc };
        }
    };
    if !crate::in_serial() {
        c[..len].par_chunks_mut(p.ldc).enumerate().for_each(row_of);
    } else {
        c[..len].chunks_mut(p.ldc).enumerate().for_each(row_of);
    }
}
