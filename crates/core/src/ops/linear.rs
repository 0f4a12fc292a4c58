//! Linear layer: `out = x · W + bias`.
//!
//! x (N, IC); out (N, OC); bias (OC) or none. W is stored either (IC, OC), the layout of GPT-2's
//! Conv1D (`transposed = false`), or (OC, IC), the layout of the tied LM head, which is the token
//! embedding (`transposed = true`: `out = x · Wᵀ`). The three products (forward, dx, dW) go
//! through [`ferrogpt_gemm::matmul`] at the given level; where W's packed form for the forward
//! product (op(W)) or the input gradient (op(W)ᵀ) is given ([`crate::packed::PackedWeights`]),
//! through [`ferrogpt_gemm::matmul_packed`] instead, with the same result.

use super::Write;
use crate::{Float, Level};
use ferrogpt_gemm::{matmul, matmul_bias, matmul_packed, GemmError, PackedB};

/// out = x · op(W) + bias, out overwritten. `packed`: op(W) packed for `level` (optional).
#[allow(clippy::too_many_arguments)]
pub fn forward<T: Float>(
    level: Level,
    out: &mut [T],
    x: &[T],
    w: &[T],
    bias: Option<&[T]>,
    n: usize,
    ic: usize,
    oc: usize,
    transposed: bool,
    packed: Option<&PackedB<T>>,
) -> Result<(), GemmError> {
    if let Some(pb) = packed {
        check_packed(pb, level, ic, oc)?;
        // The bias goes in with the product (the simd level adds it in the kernel's epilogue).
        return matmul_packed(false, n, x, ic, pb, out, oc, false, bias);
    }
    let ldw = if transposed { ic } else { oc };
    match bias {
        Some(bias) => matmul_bias(
            level, false, transposed, n, oc, ic, x, ic, w, ldw, bias, out, oc,
        ),
        None => matmul(
            level, false, transposed, n, oc, ic, x, ic, w, ldw, out, oc, false,
        ),
    }
}

/// A packed B of the expected level and shape (k × n), or an error naming the mismatch.
fn check_packed<T: Float>(
    pb: &PackedB<T>,
    level: Level,
    k: usize,
    n: usize,
) -> Result<(), GemmError> {
    if pb.level() != level || pb.k() != k || pb.n() != n {
        return Err(GemmError::Shape(format!(
            "a weight packed as {}x{} for {}, used as {k}x{n} at {level}",
            pb.k(),
            pb.n(),
            pb.level()
        )));
    }
    Ok(())
}

/// dx (+)= dout · op(W)ᵀ (as `wx` says); dW and dbias (+)= their gradients as `ww` says
/// (`Set`: they hold stale values and are overwritten): dW = xᵀ · dout in W's storage layout,
/// dbias = Σ_rows dout. `packed_t`: op(W)ᵀ packed for `level` (optional).
#[allow(clippy::too_many_arguments)]
pub fn backward<T: Float>(
    level: Level,
    wx: Write,
    dx: &mut [T],
    ww: Write,
    dw: &mut [T],
    dbias: Option<&mut [T]>,
    dout: &[T],
    x: &[T],
    w: &[T],
    n: usize,
    ic: usize,
    oc: usize,
    transposed: bool,
    packed_t: Option<&PackedB<T>>,
) -> Result<(), GemmError> {
    // dx (N, IC) = dout (N, OC) · op(W)ᵀ: W itself when W is stored (OC, IC), else Wᵀ.
    match packed_t {
        Some(pb) => {
            check_packed(pb, level, oc, ic)?;
            matmul_packed(false, n, dout, oc, pb, dx, ic, wx.accumulates(), None)?;
        }
        None => {
            let ldw = if transposed { ic } else { oc };
            matmul(
                level,
                false,
                !transposed,
                n,
                ic,
                oc,
                dout,
                oc,
                w,
                ldw,
                dx,
                ic,
                wx.accumulates(),
            )?;
        }
    }
    if transposed {
        // W (OC, IC): dW (OC, IC) = doutᵀ · x.
        matmul(
            level,
            true,
            false,
            oc,
            ic,
            n,
            dout,
            oc,
            x,
            ic,
            dw,
            ic,
            ww.accumulates(),
        )?;
    } else {
        // W (IC, OC): dW (IC, OC) = xᵀ · dout.
        matmul(
            level,
            true,
            false,
            ic,
            oc,
            n,
            x,
            ic,
            dout,
            oc,
            dw,
            oc,
            ww.accumulates(),
        )?;
    }
    if let Some(db) = dbias {
        if ww == Write::Set {
            db.fill(T::ZERO);
        }
        for row in dout.chunks_exact(oc) {
            for (d, &g) in db.iter_mut().zip(row) {
                *d += g;
            }
        }
    }
    Ok(())
}
