//! Level `blocked`: cache-blocked tiles, one thread.
//!
//! C is computed tile by tile (`MB`×`NB` of C, `KB` of the shared dimension at a time) so that
//! the tiles of A, B and C in use stay in L1/L2 while they are reused. Inside a tile the loop
//! order is i-k-j: the innermost loop walks a row of B and a row of C with stride 1, which the
//! compiler vectorises when B is not transposed. No packing, no explicit SIMD: the gain over
//! `naive` comes from the loop order and reuse, not from the tiling alone (docs/ladder.md).

use crate::{Element, Problem};

/// Tile of C rows.
pub(crate) const MB: usize = 64;
/// Tile of C columns: a row segment of B and C is 256 f32 = 1 KiB.
pub(crate) const NB: usize = 256;
/// Tile of the shared dimension: a KB×NB tile of B is 64 KiB in f32, resident in L2.
pub(crate) const KB: usize = 64;

/// Computes the rows `rows` of C (`c` starts at row `rows.start`).
pub(crate) fn gemm_rows<T: Element>(p: &Problem<'_, T>, c: &mut [T], rows: std::ops::Range<usize>) {
    let ldc = p.ldc;
    let r0 = rows.start;
    if !p.accumulate {
        for i in rows.clone() {
            c[(i - r0) * ldc..(i - r0) * ldc + p.n].fill(T::ZERO);
        }
    }
    for i0 in rows.clone().step_by(MB) {
        let i1 = (i0 + MB).min(rows.end);
        for q0 in (0..p.k).step_by(KB) {
            let q1 = (q0 + KB).min(p.k);
            for j0 in (0..p.n).step_by(NB) {
                let j1 = (j0 + NB).min(p.n);
                for i in i0..i1 {
                    let crow = &mut c[(i - r0) * ldc + j0..(i - r0) * ldc + j1];
                    for q in q0..q1 {
                        let aiq = p.a_at(i, q);
                        if p.tb {
                            for (j, dst) in crow.iter_mut().enumerate() {
                                *dst += aiq * p.b[(j0 + j) * p.ldb + q];
                            }
                        } else {
                            let brow = &p.b[q * p.ldb + j0..q * p.ldb + j1];
                            for (dst, &bv) in crow.iter_mut().zip(brow) {
                                *dst += aiq * bv;
                            }
                        }
                    }
                }
            }
        }
    }
}

pub(crate) fn gemm<T: Element>(p: &Problem<'_, T>, c: &mut [T]) {
    gemm_rows(p, c, 0..p.m)
}
