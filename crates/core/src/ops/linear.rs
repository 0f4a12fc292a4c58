//! Linear layer: `out = x · W + bias`.
//!
//! x (N, IC); out (N, OC); bias (OC) or none. W is stored either (IC, OC), the layout of GPT-2's
//! Conv1D (`transposed = false`), or (OC, IC), the layout of the tied LM head, which is the token
//! embedding (`transposed = true`: `out = x · Wᵀ`). The three products (forward, dx, dW) go
//! through [`ferrogpt_gemm::matmul`] at the given level.

use super::Write;
use crate::{Float, Level};
use ferrogpt_gemm::{matmul, matmul_bias, GemmError};

/// out = x · op(W) + bias, out overwritten.
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
) -> Result<(), GemmError> {
    let ldw = if transposed { ic } else { oc };
    match bias {
        // The bias goes in with the product (the simd level adds it in the kernel's epilogue).
        Some(bias) => matmul_bias(
            level, false, transposed, n, oc, ic, x, ic, w, ldw, bias, out, oc,
        ),
        None => matmul(
            level, false, transposed, n, oc, ic, x, ic, w, ldw, out, oc, false,
        ),
    }
}

/// dx (+)= dout · op(W)ᵀ (as `wx` says); dW and dbias (+)= their gradients as `ww` says
/// (`Set`: they hold stale values and are overwritten): dW = xᵀ · dout in W's storage layout,
/// dbias = Σ_rows dout.
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
) -> Result<(), GemmError> {
    // dx (N, IC) = dout (N, OC) · op(W)ᵀ: W itself when W is stored (OC, IC), else Wᵀ.
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
        ww.clear_for_adds(db);
        for row in dout.chunks_exact(oc) {
            for (d, &g) in db.iter_mut().zip(row) {
                *d += g;
            }
        }
    }
    Ok(())
}
