//! Causal multi-head self-attention (the part between the QKV and output projections).
//!
//! qkv (B, T, 3C) holds, per position, the query, key and value vectors of all heads:
//! `[q_h0 .. q_hNH-1 | k_h0 .. | v_h0 ..]`, each head HS = C/NH wide. For each batch b and head h:
//!
//! ```text
//! att[t, s] = softmax_s≤t( q_t · k_s / sqrt(HS) )        (B, NH, T, T), zero above the diagonal
//! out[t]    = Σ_s≤t  att[t, s] · mask[t, s] · v_s          (B, T, C), heads side by side
//! ```
//!
//! `mask` is attention dropout (0 or 1/(1-p)), absent when p = 0.
//!
//! [`forward`] and [`backward`] compute every product of one (batch, head) pair — Q·Kᵀ, P·V and,
//! backward, dP = dO·Vᵀ, dV += Pᵀ·dO, dQ += dS·K, dK += dSᵀ·Q — as a matrix product at the
//! caller's matmul level, reading Q, K, V and dO in place through the row strides (3C and C).
//! Sequences run in parallel, each product on one thread ([`ferrogpt_gemm::serial`]). Q·Kᵀ is
//! computed whole and its upper triangle then discarded: with T ≤ a few hundred the product is
//! cheap next to the projections, and a full product runs at the kernel's speed.
//! [`forward_reference`] and [`backward_reference`] are the plain loops, the oracle the fast
//! path is tested against.

use super::Write;
use crate::{reduce, Float, Level};
use ferrogpt_gemm::{matmul, serial, GemmError};
use rayon::prelude::*;

/// Shape of one attention call.
#[derive(Clone, Copy, Debug)]
pub struct Dims {
    pub b: usize,
    pub t: usize,
    pub c: usize,
    pub nh: usize,
}

impl Dims {
    fn hs(&self) -> usize {
        self.c / self.nh
    }
}

/// a · b with eight partial sums, so the compiler can keep them in one SIMD register (a single
/// running sum would serialise every add on the previous one).
#[inline(always)]
fn dot<T: Float>(a: &[T], b: &[T]) -> T {
    let mut acc = [T::ZERO; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: T = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(&x, &y)| x * y)
        .sum();
    for (x, y) in ca.zip(cb) {
        for i in 0..8 {
            acc[i] += x[i] * y[i];
        }
    }
    acc.iter().copied().sum::<T>() + tail
}

/// y += a · x.
#[inline(always)]
fn axpy<T: Float>(y: &mut [T], a: T, x: &[T]) {
    for (y, &x) in y.iter_mut().zip(x) {
        *y += a * x;
    }
}

/// Copies head `h`'s part `part` (0 = q, 1 = k, 2 = v) of every position of one sequence's
/// qkv (T, 3C) into a contiguous (T, HS) buffer: the loops below then stream through L1
/// instead of striding 3C floats between rows.
fn gather<T: Float>(dst: &mut [T], qkv: &[T], part: usize, h: usize, c: usize, hs: usize) {
    for (row, src) in dst.chunks_exact_mut(hs).zip(qkv.chunks_exact(3 * c)) {
        row.copy_from_slice(&src[part * c + h * hs..][..hs]);
    }
}

/// The plain loops: out (B, T, C) overwritten; att (B, NH, T, T) saved softmax; mask
/// (B, NH, T, T) or none.
pub fn forward_reference<T: Float>(
    out: &mut [T],
    att: &mut [T],
    qkv: &[T],
    mask: Option<&[T]>,
    d: Dims,
) {
    let (t, c, nh, hs) = (d.t, d.c, d.nh, d.hs());
    let scale = T::ONE / T::from_f64(hs as f64).sqrt();
    out.par_chunks_mut(t * c)
        .zip(att.par_chunks_mut(nh * t * t))
        .zip(qkv.par_chunks(t * 3 * c))
        .enumerate()
        .for_each(|(bi, ((out, att), qkv))| {
            let (mut q, mut k, mut v) = (
                vec![T::ZERO; t * hs],
                vec![T::ZERO; t * hs],
                vec![T::ZERO; t * hs],
            );
            for h in 0..nh {
                gather(&mut q, qkv, 0, h, c, hs);
                gather(&mut k, qkv, 1, h, c, hs);
                gather(&mut v, qkv, 2, h, c, hs);
                for ti in 0..t {
                    let qt = &q[ti * hs..][..hs];
                    let row = &mut att[(h * t + ti) * t..][..t];
                    let mut mx = T::from_f64(f64::NEG_INFINITY);
                    for (a, ks) in row[..=ti].iter_mut().zip(k.chunks_exact(hs)) {
                        *a = dot(qt, ks) * scale;
                        mx = mx.max(*a);
                    }
                    let mut sum = T::ZERO;
                    for a in row[..=ti].iter_mut() {
                        *a = (*a - mx).exp();
                        sum += *a;
                    }
                    let inv = T::ONE / sum;
                    row[..=ti].iter_mut().for_each(|a| *a *= inv);
                    row[ti + 1..].fill(T::ZERO);
                    let o = &mut out[ti * c + h * hs..][..hs];
                    o.fill(T::ZERO);
                    let mrow = mask.map(|m| &m[bi * nh * t * t + (h * t + ti) * t..][..t]);
                    for (s, vs) in v.chunks_exact(hs).take(ti + 1).enumerate() {
                        let a = mrow.map_or(row[s], |m| row[s] * m[s]);
                        axpy(o, a, vs);
                    }
                }
            }
        });
}

/// The plain loops: dqkv (B, T, 3C) += gradient of the attention output `dout` (B, T, C).
pub fn backward_reference<T: Float>(
    dqkv: &mut [T],
    dout: &[T],
    qkv: &[T],
    att: &[T],
    mask: Option<&[T]>,
    d: Dims,
) {
    let (t, c, nh, hs) = (d.t, d.c, d.nh, d.hs());
    let scale = T::ONE / T::from_f64(hs as f64).sqrt();
    dqkv.par_chunks_mut(t * 3 * c)
        .zip(dout.par_chunks(t * c))
        .zip(qkv.par_chunks(t * 3 * c))
        .zip(att.par_chunks(nh * t * t))
        .enumerate()
        .for_each(|(bi, (((dqkv, dout), qkv), att))| {
            let buf = || vec![T::ZERO; t * hs];
            let (mut q, mut k, mut v) = (buf(), buf(), buf());
            let (mut dq, mut dk, mut dv) = (buf(), buf(), buf());
            let mut datt = vec![T::ZERO; t];
            for h in 0..nh {
                gather(&mut q, qkv, 0, h, c, hs);
                gather(&mut k, qkv, 1, h, c, hs);
                gather(&mut v, qkv, 2, h, c, hs);
                dk.fill(T::ZERO);
                dv.fill(T::ZERO);
                for ti in 0..t {
                    let row = &att[(h * t + ti) * t..][..t];
                    let mrow = mask.map(|m| &m[bi * nh * t * t + (h * t + ti) * t..][..t]);
                    let g = &dout[ti * c + h * hs..][..hs];
                    // Through out = Σ att·mask·v: datt and dv.
                    for s in 0..=ti {
                        let ms = mrow.map_or(T::ONE, |m| m[s]);
                        datt[s] = dot(g, &v[s * hs..][..hs]) * ms;
                        axpy(&mut dv[s * hs..][..hs], row[s] * ms, g);
                    }
                    // Through the softmax: dscore = att · (datt - Σ att·datt), then the scores.
                    let inner: T = (0..=ti).map(|s| row[s] * datt[s]).sum();
                    let (qt, dqt) = (&q[ti * hs..][..hs], &mut dq[ti * hs..][..hs]);
                    dqt.fill(T::ZERO);
                    for s in 0..=ti {
                        let ds = row[s] * (datt[s] - inner) * scale;
                        axpy(dqt, ds, &k[s * hs..][..hs]);
                        axpy(&mut dk[s * hs..][..hs], ds, qt);
                    }
                }
                for (ti, dst) in dqkv.chunks_exact_mut(3 * c).enumerate() {
                    for (part, src) in [(0, &dq), (1, &dk), (2, &dv)] {
                        axpy(
                            &mut dst[part * c + h * hs..][..hs],
                            T::ONE,
                            &src[ti * hs..][..hs],
                        );
                    }
                }
            }
        });
}

/// One row of scores → probabilities in place: `row[..=ti]` scaled and soft-maxed, the rest
/// (scores above the diagonal, computed by the full Q·Kᵀ) zeroed.
///
/// Whole rows rather than the live prefix: a prefix of ti + 1 elements leaves up to 15 of
/// them to scalar tail loops, and at T = 64 the average row is half tail. The dead entries
/// are set to −∞ first, so that they drop out of the max and their exp is at most 2⁻¹²⁵
/// (`fastmath::exp` clamps), far under one ulp of the sum, which is at least 1; they are
/// zeroed before the normalisation. Three passes (max, exp, Σ) so that the exp pass has no reduction in it.
#[inline]
fn softmax_causal<T: Float>(row: &mut [T], ti: usize, scale: T) {
    crate::wide::run(
        #[inline(always)]
        || softmax_causal_row(row, ti, scale),
    )
}

#[inline(always)]
fn softmax_causal_row<T: Float>(row: &mut [T], ti: usize, scale: T) {
    row[ti + 1..].fill(T::from_f64(f64::NEG_INFINITY));
    // scale > 0, so max(a·scale) = max(a)·scale exactly.
    let shift = reduce::max(row) * scale;
    for a in row.iter_mut() {
        *a = (*a * scale - shift).exp();
    }
    let inv = T::ONE / reduce::sum(row);
    // Zeroed before the scaling: exp(−87)·inv would be subnormal, and subnormal arithmetic
    // is microcoded (a 100× slower multiply).
    row[ti + 1..].fill(T::ZERO);
    row.iter_mut().for_each(|a| *a *= inv);
}

/// Head `h`'s query, key and value columns of one sequence's qkv rows (row stride 3C).
fn head<T>(qkv: &[T], c: usize, h: usize, hs: usize) -> (&[T], &[T], &[T]) {
    (&qkv[h * hs..], &qkv[c + h * hs..], &qkv[2 * c + h * hs..])
}

/// out (T×T, overwritten) = x·yᵀ for x, y (T×HS) at row strides ldx, ldy: Q·Kᵀ and dO·Vᵀ.
#[allow(clippy::too_many_arguments)]
fn scores<T: Float>(
    level: Level,
    x: &[T],
    ldx: usize,
    y: &[T],
    ldy: usize,
    out: &mut [T],
    t: usize,
    hs: usize,
) -> Result<(), GemmError> {
    matmul(level, false, true, t, t, hs, x, ldx, y, ldy, out, t, false)
}

/// P̃ = P ⊙ mask (written into `buf`), or P itself without dropout.
fn masked<'a, T: Float>(p: &'a [T], mask: Option<&[T]>, buf: &'a mut [T]) -> &'a [T] {
    match mask {
        Some(m) => {
            for ((dst, &a), &mv) in buf.iter_mut().zip(p).zip(m) {
                *dst = a * mv;
            }
            buf
        }
        None => p,
    }
}

/// out (B, T, C) overwritten; att (B, NH, T, T) saved softmax; mask (B, NH, T, T) or none.
/// Products at `level` (see the module doc).
pub fn forward<T: Float>(
    level: Level,
    out: &mut [T],
    att: &mut [T],
    qkv: &[T],
    mask: Option<&[T]>,
    d: Dims,
) -> Result<(), GemmError> {
    let (t, c, nh, hs) = (d.t, d.c, d.nh, d.hs());
    let scale = T::ONE / T::from_f64(hs as f64).sqrt();
    out.par_chunks_mut(t * c)
        .zip(att.par_chunks_mut(nh * t * t))
        .zip(qkv.par_chunks(t * 3 * c))
        .enumerate()
        .try_for_each(|(bi, ((out, att), qkv))| {
            serial(|| {
                let mut pm = vec![T::ZERO; if mask.is_some() { t * t } else { 0 }];
                for h in 0..nh {
                    let att = &mut att[h * t * t..][..t * t];
                    // S = Q·Kᵀ into att, then the causal softmax row by row.
                    let (q, k, v) = head(qkv, c, h, hs);
                    scores(level, q, 3 * c, k, 3 * c, att, t, hs)?;
                    for (ti, row) in att.chunks_exact_mut(t).enumerate() {
                        softmax_causal(row, ti, scale);
                    }
                    // O = P̃·V with P̃ = P ⊙ mask.
                    let m = mask.map(|m| &m[(bi * nh + h) * t * t..][..t * t]);
                    let p = masked(att, m, &mut pm);
                    let o = &mut out[h * hs..];
                    matmul(level, false, false, t, hs, t, p, t, v, 3 * c, o, c, false)?;
                }
                Ok(())
            })
        })
}

/// dqkv (B, T, 3C) (+)= gradient of the attention output `dout` (B, T, C), as `w` says (each of
/// the q, k and v parts is written by one product per head). Products at `level`.
#[allow(clippy::too_many_arguments)]
pub fn backward<T: Float>(
    level: Level,
    w: Write,
    dqkv: &mut [T],
    dout: &[T],
    qkv: &[T],
    att: &[T],
    mask: Option<&[T]>,
    d: Dims,
) -> Result<(), GemmError> {
    let (t, c, nh, hs) = (d.t, d.c, d.nh, d.hs());
    let scale = T::ONE / T::from_f64(hs as f64).sqrt();
    let acc = w.accumulates();
    dqkv.par_chunks_mut(t * 3 * c)
        .zip(dout.par_chunks(t * c))
        .zip(qkv.par_chunks(t * 3 * c))
        .zip(att.par_chunks(nh * t * t))
        .enumerate()
        .try_for_each(|(bi, (((dqkv, dout), qkv), att))| {
            serial(|| {
                let mut ds = vec![T::ZERO; t * t];
                let mut pm = vec![T::ZERO; if mask.is_some() { t * t } else { 0 }];
                for h in 0..nh {
                    let p = &att[h * t * t..][..t * t];
                    let m = mask.map(|m| &m[(bi * nh + h) * t * t..][..t * t]);
                    let pt = masked(p, m, &mut pm);
                    let (q, k, v) = head(qkv, c, h, hs);
                    let g = &dout[h * hs..];
                    // dP̃ = dO·Vᵀ (into ds), dV (+)= P̃ᵀ·dO.
                    scores(level, g, c, v, 3 * c, &mut ds, t, hs)?;
                    let dv = &mut dqkv[2 * c + h * hs..];
                    matmul(level, true, false, t, hs, t, pt, t, g, c, dv, 3 * c, acc)?;
                    // Through the mask and the softmax: dS = P ⊙ (dP − Σ_s P·dP) / sqrt(HS).
                    // Whole rows: P is exactly 0 above the diagonal, so the dot product and
                    // the update need no live prefix, and dS is 0 there (dP is finite).
                    crate::wide::run(
                        #[inline(always)]
                        || {
                            for (ti, (row, prow)) in
                                ds.chunks_exact_mut(t).zip(p.chunks_exact(t)).enumerate()
                            {
                                if let Some(m) = m {
                                    for (x, &mv) in row.iter_mut().zip(&m[ti * t..]) {
                                        *x *= mv;
                                    }
                                }
                                let inner = reduce::dot(row, prow);
                                for (x, &a) in row.iter_mut().zip(prow) {
                                    *x = a * (*x - inner) * scale;
                                }
                            }
                        },
                    );
                    // dQ (+)= dS·K, dK (+)= dSᵀ·Q.
                    let dq = &mut dqkv[h * hs..];
                    matmul(
                        level,
                        false,
                        false,
                        t,
                        hs,
                        t,
                        &ds,
                        t,
                        k,
                        3 * c,
                        dq,
                        3 * c,
                        acc,
                    )?;
                    let dk = &mut dqkv[c + h * hs..];
                    matmul(
                        level,
                        true,
                        false,
                        t,
                        hs,
                        t,
                        &ds,
                        t,
                        q,
                        3 * c,
                        dk,
                        3 * c,
                        acc,
                    )?;
                }
                Ok(())
            })
        })
}
