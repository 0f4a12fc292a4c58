//! The x86_64 GEMV kernels: f32 and bf16 rows with AVX2+FMA and AVX-512F; int8 (Q8_0) rows
//! with `vpmaddubsw` (AVX2), `vpdpbusd` ymm (AVX-VNNI) and `vpdpbusd` zmm (AVX512-VNNI); the
//! attention helper that adds weighted rows.
//!
//! Every kernel walks R = 4 rows at a time (one load of `x` serves four rows), then the rest
//! one by one; `group` is instantiated for R = 4 and R = 1. The row's partial sums stay in
//! vector registers until the end of the row, then one horizontal sum each.

use super::{QuantizedVector, Q8_BLOCK};
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

/// Eight bf16 values at `p` widened to f32.
#[inline(always)]
unsafe fn load_bf16x8(p: *const u16) -> __m256 {
    // SAFETY: the caller guarantees 8 readable values at p; AVX2 enabled by the caller.
    unsafe {
        let h = _mm_loadu_si128(p as *const __m128i);
        _mm256_castsi256_ps(_mm256_slli_epi32::<16>(_mm256_cvtepu16_epi32(h)))
    }
}

/// Sixteen bf16 values at `p` widened to f32.
#[inline(always)]
unsafe fn load_bf16x16(p: *const u16) -> __m512 {
    // SAFETY: the caller guarantees 16 readable values at p; AVX-512F enabled by the caller.
    unsafe {
        let h = _mm256_loadu_si256(p as *const __m256i);
        _mm512_castsi512_ps(_mm512_slli_epi32::<16>(_mm512_cvtepu16_epi32(h)))
    }
}

/// The AVX2 row kernel for one element type: `$load(ptr)` gives 8 f32 from 8 elements,
/// `$scalar(ptr)` one.
macro_rules! rows_avx2 {
    ($name:ident, $group:ident, $elem:ty, $load:expr, $scalar:expr) => {
        /// `out[j] = Σ_p a[j·ld + p]·x[p]` for j < rows, p < k.
        ///
        /// # Safety
        /// AVX2 and FMA present; row j of `a` readable for k elements at `a + j·ld`, `x` for k,
        /// `out` writable for `rows`.
        #[target_feature(enable = "avx2,fma")]
        pub(super) unsafe fn $name(
            a: *const $elem,
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
                    $group::<4>(a.add(r * ld), ld, x, k, out.add(r));
                    r += 4;
                }
                while r < rows {
                    $group::<1>(a.add(r * ld), ld, x, k, out.add(r));
                    r += 1;
                }
            }
        }

        #[target_feature(enable = "avx2,fma")]
        #[inline]
        unsafe fn $group<const R: usize>(
            a: *const $elem,
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
                        acc0[i] = _mm256_fmadd_ps($load(row), x0, acc0[i]);
                        acc1[i] = _mm256_fmadd_ps($load(row.add(8)), x1, acc1[i]);
                    }
                    p += 16;
                }
                if p + 8 <= k {
                    let x0 = _mm256_loadu_ps(x.add(p));
                    for i in 0..R {
                        acc0[i] = _mm256_fmadd_ps($load(a.add(i * ld + p)), x0, acc0[i]);
                    }
                    p += 8;
                }
                for i in 0..R {
                    let mut s = hsum256(_mm256_add_ps(acc0[i], acc1[i]));
                    for q in p..k {
                        s += $scalar(a.add(i * ld + q)) * *x.add(q);
                    }
                    *out.add(i) = s;
                }
            }
        }
    };
}

rows_avx2!(
    rows_f32_avx2,
    group_f32_avx2,
    f32,
    |p: *const f32| _mm256_loadu_ps(p),
    |p: *const f32| *p
);
rows_avx2!(
    rows_bf16_avx2,
    group_bf16_avx2,
    u16,
    |p: *const u16| load_bf16x8(p),
    |p: *const u16| super::bf16_to_f32(*p)
);

/// `out[j] = Σ_p a[j·ld + p]·x[p]` with AVX-512F (f32), 16 lanes, the tail masked.
///
/// # Safety
/// AVX-512F present; otherwise as [`rows_f32_avx2`].
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn rows_f32_avx512(
    a: *const f32,
    ld: usize,
    rows: usize,
    x: *const f32,
    k: usize,
    out: *mut f32,
) {
    let mut r = 0;
    // SAFETY: forwarded contract, rows r..r+R within `rows`.
    unsafe {
        while r + 4 <= rows {
            group_f32_avx512::<4>(a.add(r * ld), ld, x, k, out.add(r));
            r += 4;
        }
        while r < rows {
            group_f32_avx512::<1>(a.add(r * ld), ld, x, k, out.add(r));
            r += 1;
        }
    }
}

#[target_feature(enable = "avx512f")]
#[inline]
unsafe fn group_f32_avx512<const R: usize>(
    a: *const f32,
    ld: usize,
    x: *const f32,
    k: usize,
    out: *mut f32,
) {
    // SAFETY: R rows of k readable elements at a + i·ld, x of k; masked loads read only lanes
    // below k.
    unsafe {
        let mut acc = [_mm512_setzero_ps(); R];
        let mut p = 0;
        while p + 16 <= k {
            let xv = _mm512_loadu_ps(x.add(p));
            for (i, acc) in acc.iter_mut().enumerate() {
                *acc = _mm512_fmadd_ps(_mm512_loadu_ps(a.add(i * ld + p)), xv, *acc);
            }
            p += 16;
        }
        if p < k {
            let m: __mmask16 = ((1u32 << (k - p)) - 1) as u16;
            let xv = _mm512_maskz_loadu_ps(m, x.add(p));
            for (i, acc) in acc.iter_mut().enumerate() {
                *acc = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, a.add(i * ld + p)), xv, *acc);
            }
        }
        for (i, acc) in acc.iter().enumerate() {
            *out.add(i) = _mm512_reduce_add_ps(*acc);
        }
    }
}

/// `out[j] = Σ_p bf16(a[j·ld + p])·x[p]` with AVX-512F, 16 lanes, the tail scalar.
///
/// # Safety
/// AVX-512F present; otherwise as [`rows_f32_avx2`].
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn rows_bf16_avx512(
    a: *const u16,
    ld: usize,
    rows: usize,
    x: *const f32,
    k: usize,
    out: *mut f32,
) {
    let mut r = 0;
    // SAFETY: forwarded contract, rows r..r+R within `rows`.
    unsafe {
        while r + 4 <= rows {
            group_bf16_avx512::<4>(a.add(r * ld), ld, x, k, out.add(r));
            r += 4;
        }
        while r < rows {
            group_bf16_avx512::<1>(a.add(r * ld), ld, x, k, out.add(r));
            r += 1;
        }
    }
}

#[target_feature(enable = "avx512f")]
#[inline]
unsafe fn group_bf16_avx512<const R: usize>(
    a: *const u16,
    ld: usize,
    x: *const f32,
    k: usize,
    out: *mut f32,
) {
    // SAFETY: R rows of k readable elements at a + i·ld, x of k.
    unsafe {
        let mut acc = [_mm512_setzero_ps(); R];
        let mut p = 0;
        while p + 16 <= k {
            let xv = _mm512_loadu_ps(x.add(p));
            for (i, acc) in acc.iter_mut().enumerate() {
                *acc = _mm512_fmadd_ps(load_bf16x16(a.add(i * ld + p)), xv, *acc);
            }
            p += 16;
        }
        for (i, acc) in acc.iter().enumerate() {
            let mut s = _mm512_reduce_add_ps(*acc);
            for q in p..k {
                s += super::bf16_to_f32(*a.add(i * ld + q)) * *x.add(q);
            }
            *out.add(i) = s;
        }
    }
}

/// Checks the shared contract of the int8 kernels and returns the padded row length.
fn q8_shape(q: &[i8], d: &[f32], nb: usize, xq: &QuantizedVector, rows: usize) -> usize {
    let cp = nb * Q8_BLOCK;
    assert!(q.len() >= rows * cp && d.len() >= rows * nb);
    assert!(xq.q.len() == cp && xq.d.len() == nb && xq.neg_offset.len() == cp / 4);
    cp
}

/// int8 rows with AVX2: per block `vpmaddubsw(|w|, x·sign(w))`, `vpmaddwd` by ones into eight
/// i32, then `acc += f32(i32) · d_w·d_x`.
///
/// # Safety
/// AVX2 and FMA present. (Lengths are checked.)
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn rows_q8_avx2(
    q: &[i8],
    d: &[f32],
    nb: usize,
    xq: &QuantizedVector,
    out: &mut [f32],
) {
    let rows = out.len();
    let cp = q8_shape(q, d, nb, xq, rows);
    let mut r = 0;
    // SAFETY: lengths checked by q8_shape; rows r..r+R within `rows`.
    unsafe {
        while r + 4 <= rows {
            group_q8_avx2::<4>(
                q.as_ptr().add(r * cp),
                d.as_ptr().add(r * nb),
                cp,
                nb,
                xq,
                out.as_mut_ptr().add(r),
            );
            r += 4;
        }
        while r < rows {
            group_q8_avx2::<1>(
                q.as_ptr().add(r * cp),
                d.as_ptr().add(r * nb),
                cp,
                nb,
                xq,
                out.as_mut_ptr().add(r),
            );
            r += 1;
        }
    }
}

#[target_feature(enable = "avx2,fma")]
#[inline]
unsafe fn group_q8_avx2<const R: usize>(
    q: *const i8,
    d: *const f32,
    cp: usize,
    nb: usize,
    xq: &QuantizedVector,
    out: *mut f32,
) {
    // SAFETY: R rows of cp quants (stride cp) and nb scales (stride nb); xq holds cp quants
    // and nb scales (checked by the caller).
    unsafe {
        let ones = _mm256_set1_epi16(1);
        let mut acc = [_mm256_setzero_ps(); R];
        for b in 0..nb {
            let xv = _mm256_loadu_si256(xq.q.as_ptr().add(b * Q8_BLOCK) as *const __m256i);
            let dx = *xq.d.get_unchecked(b);
            for (i, acc) in acc.iter_mut().enumerate() {
                let w = _mm256_loadu_si256(q.add(i * cp + b * Q8_BLOCK) as *const __m256i);
                let p16 = _mm256_maddubs_epi16(_mm256_sign_epi8(w, w), _mm256_sign_epi8(xv, w));
                let p32 = _mm256_madd_epi16(p16, ones);
                let s = _mm256_set1_ps(*d.add(i * nb + b) * dx);
                *acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p32), s, *acc);
            }
        }
        for (i, acc) in acc.iter().enumerate() {
            *out.add(i) = hsum256(*acc);
        }
    }
}

/// int8 rows with AVX-VNNI: per block `vpdpbusd(-128·Σx per lane, w ^ 0x80, x)` = Σ w·x in
/// eight i32 lanes, then `acc += f32(i32) · d_w·d_x`.
///
/// # Safety
/// AVX2, FMA and AVX-VNNI present. (Lengths are checked.)
#[target_feature(enable = "avx2,fma,avxvnni")]
pub(super) unsafe fn rows_q8_avxvnni(
    q: &[i8],
    d: &[f32],
    nb: usize,
    xq: &QuantizedVector,
    out: &mut [f32],
) {
    let rows = out.len();
    let cp = q8_shape(q, d, nb, xq, rows);
    let mut r = 0;
    // SAFETY: lengths checked by q8_shape; rows r..r+R within `rows`.
    unsafe {
        while r + 4 <= rows {
            group_q8_avxvnni::<4>(
                q.as_ptr().add(r * cp),
                d.as_ptr().add(r * nb),
                cp,
                nb,
                xq,
                out.as_mut_ptr().add(r),
            );
            r += 4;
        }
        while r < rows {
            group_q8_avxvnni::<1>(
                q.as_ptr().add(r * cp),
                d.as_ptr().add(r * nb),
                cp,
                nb,
                xq,
                out.as_mut_ptr().add(r),
            );
            r += 1;
        }
    }
}

#[target_feature(enable = "avx2,fma,avxvnni")]
#[inline]
unsafe fn group_q8_avxvnni<const R: usize>(
    q: *const i8,
    d: *const f32,
    cp: usize,
    nb: usize,
    xq: &QuantizedVector,
    out: *mut f32,
) {
    // SAFETY: as group_q8_avx2; neg_offset holds cp/4 = 8 per block.
    unsafe {
        let flip = _mm256_set1_epi8(0x80u8 as i8);
        let mut acc = [_mm256_setzero_ps(); R];
        for b in 0..nb {
            let xv = _mm256_loadu_si256(xq.q.as_ptr().add(b * Q8_BLOCK) as *const __m256i);
            let off = _mm256_loadu_si256(xq.neg_offset.as_ptr().add(b * 8) as *const __m256i);
            let dx = *xq.d.get_unchecked(b);
            for (i, acc) in acc.iter_mut().enumerate() {
                let w = _mm256_loadu_si256(q.add(i * cp + b * Q8_BLOCK) as *const __m256i);
                let p32 = _mm256_dpbusd_avx_epi32(off, _mm256_xor_si256(w, flip), xv);
                let s = _mm256_set1_ps(*d.add(i * nb + b) * dx);
                *acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p32), s, *acc);
            }
        }
        for (i, acc) in acc.iter().enumerate() {
            *out.add(i) = hsum256(*acc);
        }
    }
}

/// int8 rows with AVX512-VNNI: two blocks a step, `vpdpbusd` zmm as the AVX-VNNI kernel, the
/// scales of the two blocks in the two halves of one vector; an odd last block masked.
///
/// # Safety
/// AVX-512F, AVX-512BW and AVX512-VNNI present. (Lengths are checked.)
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
pub(super) unsafe fn rows_q8_avx512vnni(
    q: &[i8],
    d: &[f32],
    nb: usize,
    xq: &QuantizedVector,
    out: &mut [f32],
) {
    let rows = out.len();
    let cp = q8_shape(q, d, nb, xq, rows);
    let mut r = 0;
    // SAFETY: lengths checked by q8_shape; rows r..r+R within `rows`.
    unsafe {
        while r + 4 <= rows {
            group_q8_avx512vnni::<4>(
                q.as_ptr().add(r * cp),
                d.as_ptr().add(r * nb),
                cp,
                nb,
                xq,
                out.as_mut_ptr().add(r),
            );
            r += 4;
        }
        while r < rows {
            group_q8_avx512vnni::<1>(
                q.as_ptr().add(r * cp),
                d.as_ptr().add(r * nb),
                cp,
                nb,
                xq,
                out.as_mut_ptr().add(r),
            );
            r += 1;
        }
    }
}

#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
#[inline]
unsafe fn group_q8_avx512vnni<const R: usize>(
    q: *const i8,
    d: *const f32,
    cp: usize,
    nb: usize,
    xq: &QuantizedVector,
    out: *mut f32,
) {
    // SAFETY: as group_q8_avx2; the masked loads of an odd last block read its 32 bytes (8
    // offsets) only.
    unsafe {
        let flip = _mm512_set1_epi8(0x80u8 as i8);
        let mut acc = [_mm512_setzero_ps(); R];
        let mut b = 0;
        while b < nb {
            let two = b + 1 < nb;
            let (mbytes, mlanes): (__mmask64, __mmask16) =
                if two { (!0, !0) } else { (0xffff_ffff, 0x00ff) };
            let xv = _mm512_maskz_loadu_epi8(mbytes, xq.q.as_ptr().add(b * Q8_BLOCK));
            let off = _mm512_maskz_loadu_epi32(mlanes, xq.neg_offset.as_ptr().add(b * 8));
            let dx0 = *xq.d.get_unchecked(b);
            let dx1 = if two { *xq.d.get_unchecked(b + 1) } else { 0.0 };
            for (i, acc) in acc.iter_mut().enumerate() {
                let w = _mm512_maskz_loadu_epi8(mbytes, q.add(i * cp + b * Q8_BLOCK));
                // Masked-off bytes are 0 in x, so their (0 ^ 0x80)·0 adds nothing.
                let p32 = _mm512_dpbusd_epi32(off, _mm512_xor_si512(w, flip), xv);
                let s0 = *d.add(i * nb + b) * dx0;
                let s1 = if two {
                    *d.add(i * nb + b + 1) * dx1
                } else {
                    0.0
                };
                let s = _mm512_mask_blend_ps(0xff00, _mm512_set1_ps(s0), _mm512_set1_ps(s1));
                *acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(p32), s, *acc);
            }
            b += 2;
        }
        for (i, acc) in acc.iter().enumerate() {
            *out.add(i) = _mm512_reduce_add_ps(*acc);
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
