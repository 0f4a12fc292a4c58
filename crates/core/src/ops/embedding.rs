//! Token + learned position embedding: `out[b,t,:] = wte[tokens[b,t],:] + wpe[t,:]`.

use crate::Float;

/// out (B, T, C); tokens (B, T), each < rows of wte; wte (Vp, C); wpe (maxT, C) with maxT >= T.
pub fn forward<T: Float>(out: &mut [T], tokens: &[u32], wte: &[T], wpe: &[T], t: usize, c: usize) {
    for (n, (row, &tok)) in out.chunks_exact_mut(c).zip(tokens).enumerate() {
        let e = &wte[tok as usize * c..][..c];
        let p = &wpe[(n % t) * c..][..c];
        for ((o, &e), &p) in row.iter_mut().zip(e).zip(p) {
            *o = e + p;
        }
    }
}

/// dwte += scatter of dout by token; dwpe += dout summed over the batch.
pub fn backward<T: Float>(
    dwte: &mut [T],
    dwpe: &mut [T],
    dout: &[T],
    tokens: &[u32],
    t: usize,
    c: usize,
) {
    for (n, (row, &tok)) in dout.chunks_exact(c).zip(tokens).enumerate() {
        let de = &mut dwte[tok as usize * c..][..c];
        for (d, &g) in de.iter_mut().zip(row) {
            *d += g;
        }
        let dp = &mut dwpe[(n % t) * c..][..c];
        for (d, &g) in dp.iter_mut().zip(row) {
            *d += g;
        }
    }
}
