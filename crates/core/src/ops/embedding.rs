//! Token + learned position embedding: `out[b,t,:] = wte[tokens[b,t],:] + wpe[t,:]`, or the token
//! embedding alone when there is no `wpe` (models with rotary positions, see [`super::rope`]).

use crate::Float;

/// out (B, T, C); tokens (B, T), each < rows of wte; wte (Vp, C); wpe (maxT, C) with maxT >= T,
/// or none.
pub fn forward<T: Float>(
    out: &mut [T],
    tokens: &[u32],
    wte: &[T],
    wpe: Option<&[T]>,
    t: usize,
    c: usize,
) {
    let rows = out.chunks_exact_mut(c).zip(tokens);
    match wpe {
        Some(wpe) => {
            for (n, (row, &tok)) in rows.enumerate() {
                let e = &wte[tok as usize * c..][..c];
                let p = &wpe[(n % t) * c..][..c];
                for ((o, &e), &p) in row.iter_mut().zip(e).zip(p) {
                    *o = e + p;
                }
            }
        }
        None => {
            for (row, &tok) in rows {
                row.copy_from_slice(&wte[tok as usize * c..][..c]);
            }
        }
    }
}

/// dwte += scatter of dout by token; dwpe (if any) += dout summed over the batch.
pub fn backward<T: Float>(
    dwte: &mut [T],
    mut dwpe: Option<&mut [T]>,
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
        if let Some(dwpe) = dwpe.as_deref_mut() {
            let dp = &mut dwpe[(n % t) * c..][..c];
            for (d, &g) in dp.iter_mut().zip(row) {
                *d += g;
            }
        }
    }
}
