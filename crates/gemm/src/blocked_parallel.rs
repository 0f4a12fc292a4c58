//! Level `blocked-parallel`: the tiles of `blocked`, with blocks of `MB` rows of C handed to
//! rayon threads. Each thread reads all of B, so the B tile in its L2 is reused across the rows
//! of its block only.

use crate::blocked::{gemm_rows, MB};
use crate::{Element, Problem};
use rayon::prelude::*;

pub(crate) fn gemm<T: Element>(p: &Problem<'_, T>, c: &mut [T]) {
    let len = (p.m - 1) * p.ldc + p.n;
    let ldc = p.ldc;
    let block = |(b, chunk): (usize, &mut [T])| {
        let r0 = b * MB;
        gemm_rows(p, chunk, r0..(r0 + MB).min(p.m));
    };
    if !crate::in_serial() {
        c[..len]
            .par_chunks_mut(MB * ldc)
            .enumerate()
            .for_each(block);
    } else {
        c[..len].chunks_mut(MB * ldc).enumerate().for_each(block);
    }
}
