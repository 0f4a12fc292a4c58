//! The number formats of the GEMV path: bf16 rounding and widening, Q8_0 blocks for weights,
//! and the int8 form of the activation vector an int8 product takes.

use super::Q8_BLOCK;

/// f32 → bf16 bit pattern, rounded to nearest even (NaN stays a quiet NaN).
pub fn f32_to_bf16(x: f32) -> u16 {
    let b = x.to_bits();
    if x.is_nan() {
        return ((b >> 16) | 0x40) as u16;
    }
    let round = 0x7fff + ((b >> 16) & 1);
    (b.wrapping_add(round) >> 16) as u16
}

/// bf16 bit pattern → f32 (exact).
pub fn bf16_to_f32(h: u16) -> f32 {
    f32::from_bits((h as u32) << 16)
}

/// Quantizes one block (at most [`Q8_BLOCK`] values; `q` as long) as llama.cpp's Q8_0:
/// `d = max|x| / 127`, `q = round(x / d)` (half away from zero), and returns `d` (0 for a block
/// of zeros, whose quants are then 0). Each value is off by at most `d/2` (plus f32 rounding of
/// `x/d`): `|x - d·q| ≤ d/2·(1 + 2⁻²²)`. A block holding a NaN gets the scale NaN, one holding
/// an infinity (and no NaN) the scale infinity, its quants 0 either way: a product through the
/// block is then not finite, as it would be in f32.
pub fn quantize_q8_block(x: &[f32], q: &mut [i8]) -> f32 {
    // max|x| that keeps a NaN (`f32::max` would drop it): once `m` is NaN no comparison
    // replaces it.
    let amax = x.iter().fold(0f32, |m, v| {
        let a = v.abs();
        if a > m || a.is_nan() {
            a
        } else {
            m
        }
    });
    let d = amax / 127.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    for (q, &v) in q.iter_mut().zip(x) {
        *q = (v * id).round().clamp(-127.0, 127.0) as i8;
    }
    d
}

/// An activation vector quantized for an int8 product: per block of 32 values (the last padded
/// with zeros) the quants and the scale, as [`quantize_q8_block`]; and for the VNNI kernels,
/// per group of four quants `-128·Σ` of the group (the start of each i32 lane's sum, which
/// cancels the +128 that makes the weights unsigned; see the module doc of `gemv`).
#[derive(Clone, Debug)]
pub struct QuantizedVector {
    /// Padded length / 1 quants.
    pub q: Vec<i8>,
    /// One scale per block.
    pub d: Vec<f32>,
    /// `-128 · (q[4i] + q[4i+1] + q[4i+2] + q[4i+3])`, padded length / 4 values.
    pub neg_offset: Vec<i32>,
}

impl QuantizedVector {
    /// Quantizes `x` per block of [`Q8_BLOCK`], as an int8 [`super::gemv`] does before its
    /// kernels run. A NaN makes its block's scale NaN, an infinity makes it infinite (the
    /// quants 0): the products through that block are then not finite.
    pub fn new(x: &[f32]) -> Self {
        let cp = x.len().next_multiple_of(Q8_BLOCK);
        let nb = cp / Q8_BLOCK;
        let mut q = vec![0i8; cp];
        let mut d = vec![0f32; nb];
        for (b, (db, qb)) in d.iter_mut().zip(q.chunks_exact_mut(Q8_BLOCK)).enumerate() {
            let xs = &x[(b * Q8_BLOCK).min(x.len())..((b + 1) * Q8_BLOCK).min(x.len())];
            *db = quantize_q8_block(xs, &mut qb[..xs.len()]);
        }
        let neg_offset = q
            .chunks_exact(4)
            .map(|g| -128 * g.iter().map(|&v| v as i32).sum::<i32>())
            .collect();
        QuantizedVector { q, d, neg_offset }
    }

    /// The values the quants stand for (`d·q`; padded length).
    pub fn dequantize(&self) -> Vec<f32> {
        self.q
            .iter()
            .enumerate()
            .map(|(i, &q)| self.d[i / Q8_BLOCK] * q as f32)
            .collect()
    }
}
