//! In-register transposes for the packing routines (x86_64 AVX-512 only).
//!
//! Packing turns rows of a stored matrix into the column order a microkernel reads (the
//! `simd` level's gathers, the `amx` level's VNNI and Aᵀ/Bᵀ slivers). Loading 16 full rows and
//! transposing them in registers reads each cache line once with whole-vector loads, where a
//! hardware gather (`vgatherdps`) costs about one load per element.

use std::arch::x86_64::*;

/// Transposes a 16×16 matrix of 32-bit elements held in 16 registers: afterwards element j of
/// `r[i]` is what element i of `r[j]` was. Three stages of shuffles (dwords, qwords, and
/// 128-bit lanes twice): 64 shuffles for 256 elements.
#[inline]
#[target_feature(enable = "avx512f")]
pub(crate) fn transpose16(r: &mut [__m512i; 16]) {
    let mut t = *r;
    for i in 0..8 {
        t[2 * i] = _mm512_unpacklo_epi32(r[2 * i], r[2 * i + 1]);
        t[2 * i + 1] = _mm512_unpackhi_epi32(r[2 * i], r[2 * i + 1]);
    }
    // u[4g + c], 128-bit lane L: column 4L + c of rows 4g .. 4g + 4.
    let mut u = t;
    for g in 0..4 {
        u[4 * g] = _mm512_unpacklo_epi64(t[4 * g], t[4 * g + 2]);
        u[4 * g + 1] = _mm512_unpackhi_epi64(t[4 * g], t[4 * g + 2]);
        u[4 * g + 2] = _mm512_unpacklo_epi64(t[4 * g + 1], t[4 * g + 3]);
        u[4 * g + 3] = _mm512_unpackhi_epi64(t[4 * g + 1], t[4 * g + 3]);
    }
    // Row 4L + c of the result: lane L of u[c], u[4 + c], u[8 + c], u[12 + c].
    for c in 0..4 {
        let v0 = _mm512_shuffle_i32x4::<0x44>(u[c], u[4 + c]);
        let v1 = _mm512_shuffle_i32x4::<0xee>(u[c], u[4 + c]);
        let v2 = _mm512_shuffle_i32x4::<0x44>(u[8 + c], u[12 + c]);
        let v3 = _mm512_shuffle_i32x4::<0xee>(u[8 + c], u[12 + c]);
        r[c] = _mm512_shuffle_i32x4::<0x88>(v0, v2);
        r[4 + c] = _mm512_shuffle_i32x4::<0xdd>(v0, v2);
        r[8 + c] = _mm512_shuffle_i32x4::<0x88>(v1, v3);
        r[12 + c] = _mm512_shuffle_i32x4::<0xdd>(v1, v3);
    }
}

#[cfg(test)]
mod tests {
    use std::arch::x86_64::*;

    #[test]
    fn transposes_every_element() {
        if !std::arch::is_x86_feature_detected!("avx512f") {
            eprintln!("SKIPPED: no AVX-512F here");
            return;
        }
        // Element j of row i holds 100·i + j.
        let m: Vec<[i32; 16]> = (0..16)
            .map(|i| std::array::from_fn(|j| 100 * i + j as i32))
            .collect();
        // SAFETY: AVX-512F checked above; each row is 16 i32 (64 bytes), read and written
        // unaligned.
        let t: Vec<[i32; 16]> = unsafe {
            let mut r: [__m512i; 16] =
                std::array::from_fn(|i| _mm512_loadu_si512(m[i].as_ptr() as *const __m512i));
            super::transpose16(&mut r);
            r.iter()
                .map(|v| {
                    let mut row = [0i32; 16];
                    _mm512_storeu_si512(row.as_mut_ptr() as *mut __m512i, *v);
                    row
                })
                .collect()
        };
        for i in 0..16 {
            for j in 0..16 {
                assert_eq!(t[i][j], m[j][i], "element ({i}, {j})");
            }
        }
    }
}
