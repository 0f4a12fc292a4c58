//! The x86_64 GEMV kernels over the packed layout of `Matrix` (four rows interleaved chunk by
//! chunk): f32 and bf16 with AVX2+FMA and AVX-512F; int8 (Q8_0) with `vpmaddubsw` (AVX2),
//! `vpdpbusd` ymm (AVX-VNNI) and `vpdpbusd` zmm (AVX512-VNNI); and the attention helpers over
//! a row-major cache (`rows_f32_avx2`, `axpy_rows_avx2`).
//!
//! Each packed kernel walks its groups front to back: per chunk it loads the chunk of `x` once
//! and the four rows' chunks (consecutive in memory), and keeps per row one or two vector
//! accumulators; at the end of a group, the four horizontal sums. The AVX2 kernels walk two
//! groups at once, g and g + groups/2 (`in_pairs!`), so that two streams are in flight; the
//! AVX-512 kernels (not run on the development machine, which lacks AVX-512) one.
//!
//! bf16: a 32-bit lane of a load holds two bf16 values, columns 2j (low half) and 2j + 1 (high
//! half). `lane << 16` is column 2j as an f32, `lane & 0xffff0000` column 2j + 1, so a load of
//! 2L values feeds two FMAs with no shuffle, against `x` reordered as [x of even columns | x of
//! odd columns] per run of 2L (done once per product by the driver).
//!
//! int8: see the module doc of `gemv` for the sign trick (AVX2) and the offset trick (VNNI).
//! The AVX512-VNNI kernel takes two rows of one block per 64-byte load (the packed layout puts
//! them side by side), against that block of `x` in both halves.

use super::{QuantizedVector, GROUP, Q8_BLOCK};
use std::arch::x86_64::*;

#[inline(always)]
unsafe fn hsum256(v: __m256) -> f32 {
    // SAFETY: plain register arithmetic (AVX), callers run with AVX2 enabled.
    unsafe {
        let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        let s = _mm_add_ss(s, _mm_shuffle_ps::<1>(s, s));
        _mm_cvtss_f32(s)
    }
}

/// The four horizontal sums of `v` stored to `out[0..4]`.
#[inline(always)]
unsafe fn hsum4_256(v: [__m256; 4], out: *mut f32) {
    // SAFETY: register arithmetic (AVX) and a 4-value store the caller provides room for.
    unsafe {
        let t0 = _mm256_hadd_ps(v[0], v[1]);
        let t1 = _mm256_hadd_ps(v[2], v[3]);
        let t2 = _mm256_hadd_ps(t0, t1);
        let s = _mm_add_ps(_mm256_castps256_ps128(t2), _mm256_extractf128_ps::<1>(t2));
        _mm_storeu_ps(out, s);
    }
}

/// Checks a packed matrix slice against `x` and `out`: `groups` groups of `x.len()` padded
/// columns each. Returns the number of groups.
fn groups_of<T>(a: &[T], kp: usize, out: &[f32]) -> usize {
    let groups = out.len() / GROUP;
    assert!(out.len() == groups * GROUP && a.len() == groups * kp * GROUP);
    groups
}

/// Calls `kernel::<2>` on the pairs (g, g + groups/2) for g < groups/2, then `kernel::<1>`
/// on a last odd group: two groups in flight, from the two halves of a thread's rows, are two
/// streams through memory (measured faster than one on the Zen 2 VM, docs/benchmarks.md).
macro_rules! in_pairs {
    ($groups:expr, |$gs:ident| $two:expr, |$g1:ident| $one:expr) => {{
        let groups = $groups;
        let half = groups / 2;
        for g in 0..half {
            let $gs = [g, g + half];
            $two;
        }
        if groups % 2 == 1 {
            let $g1 = [groups - 1];
            $one;
        }
    }};
}

/// f32, AVX2+FMA: chunks of 16 columns, one accumulator a row, N groups at a time.
///
/// # Safety
/// AVX2 and FMA present. (Lengths are checked.)
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn groups_f32_avx2(a: &[f32], x: &[f32], out: &mut [f32]) {
    let kp = x.len();
    assert!(kp.is_multiple_of(16));
    let groups = groups_of(a, kp, out);
    let (a, o) = (a.as_ptr(), out.as_mut_ptr());
    // SAFETY: group g is a[g·4·kp ..][.. 4·kp]: kp/16 chunks of 4 rows × 16 values; x holds
    // kp; out 4 a group; every g < groups.
    unsafe {
        in_pairs!(groups, |gs| f32_avx2::<2>(a, kp, gs, x.as_ptr(), o), |gs| {
            f32_avx2::<1>(a, kp, gs, x.as_ptr(), o)
        })
    }
}

#[target_feature(enable = "avx2,fma")]
#[inline]
unsafe fn f32_avx2<const N: usize>(
    a: *const f32,
    kp: usize,
    gs: [usize; N],
    x: *const f32,
    out: *mut f32,
) {
    // SAFETY: the caller's contract (groups_f32_avx2).
    unsafe {
        let mut acc = [[_mm256_setzero_ps(); GROUP]; N];
        for c in (0..kp).step_by(8) {
            let xv = _mm256_loadu_ps(x.add(c));
            // Column c: chunk c/16, offset c % 16 within each row's 16.
            let off = (c / 16) * 16 * GROUP + c % 16;
            for n in 0..N {
                let p = a.add(gs[n] * GROUP * kp + off);
                for (i, acc) in acc[n].iter_mut().enumerate() {
                    *acc = _mm256_fmadd_ps(_mm256_loadu_ps(p.add(16 * i)), xv, *acc);
                }
            }
        }
        for n in 0..N {
            hsum4_256(acc[n], out.add(gs[n] * GROUP));
        }
    }
}

/// f32, AVX-512F: chunks of 16 columns, two chunks a step (two accumulators a row).
///
/// # Safety
/// AVX-512F present. (Lengths are checked.)
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn groups_f32_avx512(a: &[f32], x: &[f32], out: &mut [f32]) {
    let kp = x.len();
    assert!(kp.is_multiple_of(16));
    let groups = groups_of(a, kp, out);
    // SAFETY: as groups_f32_avx2.
    unsafe {
        for g in 0..groups {
            let mut p = a.as_ptr().add(g * GROUP * kp);
            let mut acc0 = [_mm512_setzero_ps(); GROUP];
            let mut acc1 = [_mm512_setzero_ps(); GROUP];
            let mut c = 0;
            while c + 32 <= kp {
                let x0 = _mm512_loadu_ps(x.as_ptr().add(c));
                let x1 = _mm512_loadu_ps(x.as_ptr().add(c + 16));
                for i in 0..GROUP {
                    acc0[i] = _mm512_fmadd_ps(_mm512_loadu_ps(p.add(16 * i)), x0, acc0[i]);
                    acc1[i] =
                        _mm512_fmadd_ps(_mm512_loadu_ps(p.add(16 * (GROUP + i))), x1, acc1[i]);
                }
                p = p.add(32 * GROUP);
                c += 32;
            }
            if c < kp {
                let x0 = _mm512_loadu_ps(x.as_ptr().add(c));
                for (i, acc) in acc0.iter_mut().enumerate() {
                    *acc = _mm512_fmadd_ps(_mm512_loadu_ps(p.add(16 * i)), x0, *acc);
                }
            }
            for i in 0..GROUP {
                *out.as_mut_ptr().add(g * GROUP + i) =
                    _mm512_reduce_add_ps(_mm512_add_ps(acc0[i], acc1[i]));
            }
        }
    }
}

/// bf16, AVX2+FMA: chunks of 32 columns, each row's chunk two loads of 16 values; per load
/// the even columns (shift) and the odd ones (mask) into the row's accumulator; N groups at a
/// time.
///
/// # Safety
/// AVX2 and FMA present; `x` reordered per run of 16 (module doc). (Lengths are checked.)
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn groups_bf16_avx2(a: &[u16], x: &[f32], out: &mut [f32]) {
    let kp = x.len();
    assert!(kp.is_multiple_of(32));
    let groups = groups_of(a, kp, out);
    let (a, o) = (a.as_ptr(), out.as_mut_ptr());
    // SAFETY: group g is a[g·4·kp ..][.. 4·kp]: kp/32 chunks of 4 rows × 32 values; x holds
    // kp; out 4 a group.
    unsafe {
        in_pairs!(
            groups,
            |gs| bf16_avx2::<2>(a, kp, gs, x.as_ptr(), o),
            |gs| bf16_avx2::<1>(a, kp, gs, x.as_ptr(), o)
        )
    }
}

#[target_feature(enable = "avx2,fma")]
#[inline]
unsafe fn bf16_avx2<const N: usize>(
    a: *const u16,
    kp: usize,
    gs: [usize; N],
    x: *const f32,
    out: *mut f32,
) {
    // SAFETY: the caller's contract (groups_bf16_avx2).
    unsafe {
        let hi = _mm256_set1_epi32(0xffff_0000u32 as i32);
        let mut acc = [[_mm256_setzero_ps(); GROUP]; N];
        for c in (0..kp).step_by(16) {
            // Columns c..c+16: chunk c/32, offset c % 32 within each row's 32.
            let (xe, xo) = (_mm256_loadu_ps(x.add(c)), _mm256_loadu_ps(x.add(c + 8)));
            let off = (c / 32) * 32 * GROUP + c % 32;
            for n in 0..N {
                let p = a.add(gs[n] * GROUP * kp + off);
                for (i, acc) in acc[n].iter_mut().enumerate() {
                    let v = _mm256_loadu_si256(p.add(32 * i) as *const __m256i);
                    let e = _mm256_castsi256_ps(_mm256_slli_epi32::<16>(v));
                    let o = _mm256_castsi256_ps(_mm256_and_si256(v, hi));
                    *acc = _mm256_fmadd_ps(o, xo, _mm256_fmadd_ps(e, xe, *acc));
                }
            }
        }
        for n in 0..N {
            hsum4_256(acc[n], out.add(gs[n] * GROUP));
        }
    }
}

/// bf16, AVX-512F: chunks of 32 columns, one 64-byte load a row; even and odd columns as the
/// AVX2 kernel.
///
/// # Safety
/// AVX-512F present; `x` reordered per run of 32 (module doc). (Lengths are checked.)
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn groups_bf16_avx512(a: &[u16], x: &[f32], out: &mut [f32]) {
    let kp = x.len();
    assert!(kp.is_multiple_of(32));
    let groups = groups_of(a, kp, out);
    // SAFETY: as groups_bf16_avx2.
    unsafe {
        let hi = _mm512_set1_epi32(0xffff_0000u32 as i32);
        for g in 0..groups {
            let mut p = a.as_ptr().add(g * GROUP * kp);
            let mut even = [_mm512_setzero_ps(); GROUP];
            let mut odd = [_mm512_setzero_ps(); GROUP];
            for c in (0..kp).step_by(32) {
                let xe = _mm512_loadu_ps(x.as_ptr().add(c));
                let xo = _mm512_loadu_ps(x.as_ptr().add(c + 16));
                for i in 0..GROUP {
                    let v = _mm512_loadu_si512(p.add(32 * i) as *const __m512i);
                    let e = _mm512_castsi512_ps(_mm512_slli_epi32::<16>(v));
                    let o = _mm512_castsi512_ps(_mm512_and_si512(v, hi));
                    even[i] = _mm512_fmadd_ps(e, xe, even[i]);
                    odd[i] = _mm512_fmadd_ps(o, xo, odd[i]);
                }
                p = p.add(32 * GROUP);
            }
            for i in 0..GROUP {
                *out.as_mut_ptr().add(g * GROUP + i) =
                    _mm512_reduce_add_ps(_mm512_add_ps(even[i], odd[i]));
            }
        }
    }
}

/// Checks the shared contract of the int8 kernels; returns (groups, blocks a row).
fn q8_groups(q: &[i8], d: &[f32], xq: &QuantizedVector, out: &[f32]) -> (usize, usize) {
    let nb = xq.d.len();
    let groups = out.len() / GROUP;
    assert!(out.len() == groups * GROUP);
    assert!(q.len() == groups * nb * GROUP * Q8_BLOCK && d.len() == groups * nb * GROUP);
    assert!(xq.q.len() == nb * Q8_BLOCK && xq.neg_offset.len() == nb * Q8_BLOCK / 4);
    (groups, nb)
}

/// int8, AVX2: per row and block `vpmaddubsw(|x|, w·sign(x))` (|x| once a block), `vpmaddwd` by ones into eight
/// i32, then `acc += f32(i32) · d_w·d_x`; N groups at a time.
///
/// # Safety
/// AVX2 and FMA present. (Lengths are checked.)
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn groups_q8_avx2(q: &[i8], d: &[f32], xq: &QuantizedVector, out: &mut [f32]) {
    let (groups, nb) = q8_groups(q, d, xq, out);
    let (q, d, o) = (q.as_ptr(), d.as_ptr(), out.as_mut_ptr());
    // SAFETY: group g, block b, row i: quants at ((g·nb + b)·4 + i)·32 (32 bytes), scale at
    // (g·nb + b)·4 + i; x's block b at 32·b; all inside the checked lengths.
    unsafe {
        in_pairs!(groups, |gs| q8_avx2_sign::<2>(q, d, nb, gs, xq, o), |gs| {
            q8_avx2_sign::<1>(q, d, nb, gs, xq, o)
        })
    }
}

/// int8, AVX-VNNI: per row and block `vpdpbusd(-128·Σx per lane, w ^ 0x80, x)` = Σ w·x in
/// eight i32 lanes, then `acc += f32(i32) · d_w·d_x`; N groups at a time.
///
/// # Safety
/// AVX2, FMA and AVX-VNNI present. (Lengths are checked.)
#[target_feature(enable = "avx2,fma,avxvnni")]
pub(super) unsafe fn groups_q8_avxvnni(q: &[i8], d: &[f32], xq: &QuantizedVector, out: &mut [f32]) {
    let (groups, nb) = q8_groups(q, d, xq, out);
    let (q, d, o) = (q.as_ptr(), d.as_ptr(), out.as_mut_ptr());
    // SAFETY: as groups_q8_avx2; neg_offset holds 8 values a block.
    unsafe {
        in_pairs!(groups, |gs| q8_avx2_vnni::<2>(q, d, nb, gs, xq, o), |gs| {
            q8_avx2_vnni::<1>(q, d, nb, gs, xq, o)
        })
    }
}

/// The int8 loop of the AVX2 kernel (`$vnni` false: the sign trick) or the AVX-VNNI kernel
/// (true: the offset trick), each compiled with its own features only.
macro_rules! q8_avx2_loop {
    ($name:ident, $feat:literal, $vnni:tt) => {
        #[target_feature(enable = $feat)]
        #[inline]
        unsafe fn $name<const N: usize>(
            q: *const i8,
            d: *const f32,
            nb: usize,
            gs: [usize; N],
            xq: &QuantizedVector,
            out: *mut f32,
        ) {
            // SAFETY: the caller's contract (groups_q8_avx2 / groups_q8_avxvnni).
            unsafe {
                let ones = _mm256_set1_epi16(1);
                let flip = _mm256_set1_epi8(0x80u8 as i8);
                let mut acc = [[_mm256_setzero_ps(); GROUP]; N];
                for b in 0..nb {
                    let xv = _mm256_loadu_si256(xq.q.as_ptr().add(b * Q8_BLOCK) as *const __m256i);
                    // The sign trick takes |x| once a block, every row's w·sign(x) after.
                    let xa = _mm256_sign_epi8(xv, xv);
                    let off =
                        _mm256_loadu_si256(xq.neg_offset.as_ptr().add(b * 8) as *const __m256i);
                    let dx = *xq.d.as_ptr().add(b);
                    for n in 0..N {
                        let blk = (gs[n] * nb + b) * GROUP;
                        for (i, acc) in acc[n].iter_mut().enumerate() {
                            let w =
                                _mm256_loadu_si256(q.add((blk + i) * Q8_BLOCK) as *const __m256i);
                            let p32 = q8_avx2_dot!($vnni, w, xv, xa, off, flip, ones);
                            let s = _mm256_set1_ps(*d.add(blk + i) * dx);
                            *acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p32), s, *acc);
                        }
                    }
                }
                for n in 0..N {
                    hsum4_256(acc[n], out.add(gs[n] * GROUP));
                }
            }
        }
    };
}

/// One block's eight i32 partial dot products of `w` and `x`.
macro_rules! q8_avx2_dot {
    (true, $w:ident, $x:ident, $xa:ident, $off:ident, $flip:ident, $ones:ident) => {{
        let _ = ($ones, $xa);
        _mm256_dpbusd_avx_epi32($off, _mm256_xor_si256($w, $flip), $x)
    }};
    // $xa is |x| (`vpmaddubsw`'s unsigned side, one per block for every row).
    (false, $w:ident, $x:ident, $xa:ident, $off:ident, $flip:ident, $ones:ident) => {{
        let _ = ($off, $flip);
        _mm256_madd_epi16(_mm256_maddubs_epi16($xa, _mm256_sign_epi8($w, $x)), $ones)
    }};
}

q8_avx2_loop!(q8_avx2_sign, "avx2,fma", false);
q8_avx2_loop!(q8_avx2_vnni, "avx2,fma,avxvnni", true);

/// int8, AVX512-VNNI: per block two 64-byte loads, rows (0, 1) and (2, 3) of the block, each
/// against the block of x in both halves (`vpdpbusd` zmm with the offset trick); the two rows'
/// scales in the two halves of one vector.
///
/// # Safety
/// AVX-512F, AVX-512BW and AVX512-VNNI present. (Lengths are checked.)
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
pub(super) unsafe fn groups_q8_avx512vnni(
    q: &[i8],
    d: &[f32],
    xq: &QuantizedVector,
    out: &mut [f32],
) {
    let (groups, nb) = q8_groups(q, d, xq, out);
    // SAFETY: as groups_q8_avx2: rows 0..4 of block b are 128 consecutive bytes.
    unsafe {
        let flip = _mm512_set1_epi8(0x80u8 as i8);
        for g in 0..groups {
            let mut acc = [_mm512_setzero_ps(); 2];
            for b in 0..nb {
                let xv = _mm256_loadu_si256(xq.q.as_ptr().add(b * Q8_BLOCK) as *const __m256i);
                let x2 = _mm512_broadcast_i64x4(xv);
                let off = _mm256_loadu_si256(xq.neg_offset.as_ptr().add(b * 8) as *const __m256i);
                let off2 = _mm512_broadcast_i64x4(off);
                let dx = *xq.d.as_ptr().add(b);
                let blk = (g * nb + b) * GROUP;
                for (h, acc) in acc.iter_mut().enumerate() {
                    let w = _mm512_loadu_si512(
                        q.as_ptr().add((blk + 2 * h) * Q8_BLOCK) as *const __m512i
                    );
                    let p32 = _mm512_dpbusd_epi32(off2, _mm512_xor_si512(w, flip), x2);
                    let s0 = *d.as_ptr().add(blk + 2 * h) * dx;
                    let s1 = *d.as_ptr().add(blk + 2 * h + 1) * dx;
                    let s = _mm512_mask_blend_ps(0xff00, _mm512_set1_ps(s0), _mm512_set1_ps(s1));
                    *acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(p32), s, *acc);
                }
            }
            let o = out.as_mut_ptr().add(g * GROUP);
            for (h, acc) in acc.iter().enumerate() {
                *o.add(2 * h) = _mm512_mask_reduce_add_ps(0x00ff, *acc);
                *o.add(2 * h + 1) = _mm512_mask_reduce_add_ps(0xff00, *acc);
            }
        }
    }
}

/// `out[j] = Σ_p a[j·ld + p]·x[p]` for j < rows, p < k, row-major (the attention scores over
/// the key cache).
///
/// # Safety
/// AVX2 and FMA present; row j of `a` readable for k elements at `a + j·ld`, `x` for k,
/// `out` writable for `rows`.
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn rows_f32_avx2(
    a: *const f32,
    ld: usize,
    rows: usize,
    x: *const f32,
    k: usize,
    out: *mut f32,
) {
    let mut r = 0;
    // SAFETY: rows r..r+R are within `rows` in each call (forwarded contract).
    unsafe {
        while r + 4 <= rows {
            row_group_f32_avx2::<4>(a.add(r * ld), ld, x, k, out.add(r));
            r += 4;
        }
        while r < rows {
            row_group_f32_avx2::<1>(a.add(r * ld), ld, x, k, out.add(r));
            r += 1;
        }
    }
}

#[target_feature(enable = "avx2,fma")]
#[inline]
unsafe fn row_group_f32_avx2<const R: usize>(
    a: *const f32,
    ld: usize,
    x: *const f32,
    k: usize,
    out: *mut f32,
) {
    // SAFETY: the caller's contract: R rows of k elements at a + i·ld, x of k.
    unsafe {
        let mut acc0 = [_mm256_setzero_ps(); R];
        let mut acc1 = [_mm256_setzero_ps(); R];
        let mut p = 0;
        while p + 16 <= k {
            let x0 = _mm256_loadu_ps(x.add(p));
            let x1 = _mm256_loadu_ps(x.add(p + 8));
            for i in 0..R {
                let row = a.add(i * ld + p);
                acc0[i] = _mm256_fmadd_ps(_mm256_loadu_ps(row), x0, acc0[i]);
                acc1[i] = _mm256_fmadd_ps(_mm256_loadu_ps(row.add(8)), x1, acc1[i]);
            }
            p += 16;
        }
        if p + 8 <= k {
            let x0 = _mm256_loadu_ps(x.add(p));
            for (i, acc) in acc0.iter_mut().enumerate() {
                *acc = _mm256_fmadd_ps(_mm256_loadu_ps(a.add(i * ld + p)), x0, *acc);
            }
            p += 8;
        }
        for i in 0..R {
            let mut s = hsum256(_mm256_add_ps(acc0[i], acc1[i]));
            for q in p..k {
                s += *a.add(i * ld + q) * *x.add(q);
            }
            *out.add(i) = s;
        }
    }
}

/// `out[p] += Σ_j c[j]·a[j·ld + p]` with AVX2+FMA: 32 columns of `out` held in four registers
/// while every row passes, then 8, then the rest scalar.
///
/// # Safety
/// AVX2 and FMA present; row j of `a` readable for `out.len()` elements at `a + j·ld` for
/// j < c.len().
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn axpy_rows_avx2(a: *const f32, ld: usize, c: &[f32], out: &mut [f32]) {
    let k = out.len();
    let o = out.as_mut_ptr();
    let mut p = 0;
    // SAFETY: every access is row j < c.len(), column < k (the contract), or out[..k].
    unsafe {
        while p + 32 <= k {
            let mut acc = [
                _mm256_loadu_ps(o.add(p)),
                _mm256_loadu_ps(o.add(p + 8)),
                _mm256_loadu_ps(o.add(p + 16)),
                _mm256_loadu_ps(o.add(p + 24)),
            ];
            for (j, &cj) in c.iter().enumerate() {
                let cv = _mm256_set1_ps(cj);
                let row = a.add(j * ld + p);
                for (v, acc) in acc.iter_mut().enumerate() {
                    *acc = _mm256_fmadd_ps(cv, _mm256_loadu_ps(row.add(8 * v)), *acc);
                }
            }
            for (v, acc) in acc.iter().enumerate() {
                _mm256_storeu_ps(o.add(p + 8 * v), *acc);
            }
            p += 32;
        }
        while p + 8 <= k {
            let mut acc = _mm256_loadu_ps(o.add(p));
            for (j, &cj) in c.iter().enumerate() {
                acc = _mm256_fmadd_ps(_mm256_set1_ps(cj), _mm256_loadu_ps(a.add(j * ld + p)), acc);
            }
            _mm256_storeu_ps(o.add(p), acc);
            p += 8;
        }
        for q in p..k {
            let mut s = *o.add(q);
            for (j, &cj) in c.iter().enumerate() {
                s += cj * *a.add(j * ld + q);
            }
            *o.add(q) = s;
        }
    }
}

/// `out[p] += Σ_j c[j]·a[j·ld + p]` with AVX2+FMA for many long rows (a stretch of the inputs
/// of an (in, out) weight matrix read where it lies): eight rows a pass, four from each half of
/// the stretch (two streams through memory, as the packed kernels read), against `out` in L1,
/// one FMA chain per column in row order; the rows left over (an odd group of four, the last
/// 1–3) one at a time.
///
/// # Safety
/// AVX2 and FMA present; row j of `a` readable for `out.len()` elements at `a + j·ld` for
/// j < c.len().
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn axpy_stream_avx2(a: *const f32, ld: usize, c: &[f32], out: &mut [f32]) {
    let k = out.len();
    let o = out.as_mut_ptr();
    let pairs = c.len() / 8; // group pairs (g, g + pairs), groups of four rows
                             // SAFETY: every access is row j < c.len(), column < k (the contract), or out[..k].
    unsafe {
        for g in 0..pairs {
            let js: [usize; 8] = std::array::from_fn(|i| 4 * (g + (i / 4) * pairs) + i % 4);
            let r: [*const f32; 8] = js.map(|j| a.add(j * ld));
            let cv = js.map(|j| _mm256_set1_ps(c[j]));
            let mut p = 0;
            while p + 8 <= k {
                let mut s = _mm256_loadu_ps(o.add(p));
                for i in 0..8 {
                    s = _mm256_fmadd_ps(cv[i], _mm256_loadu_ps(r[i].add(p)), s);
                }
                _mm256_storeu_ps(o.add(p), s);
                p += 8;
            }
            for q in p..k {
                let mut s = *o.add(q);
                for i in 0..8 {
                    s = c[js[i]].mul_add(*r[i].add(q), s);
                }
                *o.add(q) = s;
            }
        }
        for (j, &cj) in c.iter().enumerate().skip(8 * pairs) {
            let row = a.add(j * ld);
            let cv = _mm256_set1_ps(cj);
            let mut p = 0;
            while p + 8 <= k {
                let s = _mm256_fmadd_ps(cv, _mm256_loadu_ps(row.add(p)), _mm256_loadu_ps(o.add(p)));
                _mm256_storeu_ps(o.add(p), s);
                p += 8;
            }
            for q in p..k {
                *o.add(q) = cj.mul_add(*row.add(q), *o.add(q));
            }
        }
    }
}

/// `out[j] = Σ_p a[j·ld + p]·x[p]` for `out.len()` long rows (an (out, in) weight matrix read
/// where it lies) with AVX2+FMA: four rows from each half of the range at a time (two streams
/// through memory), one accumulator a row; the rows left over one at a time with the same
/// arithmetic, so that a row's value does not depend on how the rows were split.
///
/// # Safety
/// AVX2 and FMA present; row j of `a` readable for `x.len()` elements at `a + j·ld` for
/// j < out.len().
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn rows_stream_f32_avx2(a: *const f32, ld: usize, x: &[f32], out: &mut [f32]) {
    let pairs = out.len() / 8;
    // SAFETY: every row passed is j < out.len() (the contract).
    unsafe {
        for g in 0..pairs {
            let js: [usize; 8] = std::array::from_fn(|i| 4 * (g + (i / 4) * pairs) + i % 4);
            let s = dots_1acc(js.map(|j| a.add(j * ld)), x);
            for (j, s) in js.into_iter().zip(s) {
                out[j] = s;
            }
        }
        for (j, o) in out.iter_mut().enumerate().skip(8 * pairs) {
            *o = dots_1acc([a.add(j * ld)], x)[0];
        }
    }
}

/// The dot products of R rows with `x`: one accumulator a row over 8 columns a step, its
/// horizontal sum, then the last columns in order.
///
/// # Safety
/// AVX2 and FMA present; each row readable for `x.len()` elements.
#[target_feature(enable = "avx2,fma")]
#[inline]
unsafe fn dots_1acc<const R: usize>(r: [*const f32; R], x: &[f32]) -> [f32; R] {
    let k = x.len();
    let xp = x.as_ptr();
    // SAFETY: columns < k of each row (the contract) and of x.
    unsafe {
        let mut acc = [_mm256_setzero_ps(); R];
        let mut p = 0;
        while p + 8 <= k {
            let xv = _mm256_loadu_ps(xp.add(p));
            for i in 0..R {
                acc[i] = _mm256_fmadd_ps(_mm256_loadu_ps(r[i].add(p)), xv, acc[i]);
            }
            p += 8;
        }
        std::array::from_fn(|i| {
            let mut s = hsum256(acc[i]);
            for (q, &xq) in x.iter().enumerate().skip(p) {
                s += *r[i].add(q) * xq;
            }
            s
        })
    }
}
