//! The layers, forward and backward side by side, on flat row-major buffers.
//!
//! Shape vocabulary: `B` batch, `T` time, `C` channels, `NH` heads, `HS = C / NH` head size,
//! `KV` key/value heads (grouped-query attention; `KV = NH` for GPT-2), `F` the width of a
//! gated MLP's hidden layer, `V` vocabulary, `Vp` padded vocabulary, `N = B*T` rows.
//!
//! Input (activation) gradients are written as [`Write`] says: the first contribution to a
//! buffer overwrites it (so the tape never zeroes activation gradients: that memset was 4–5% of
//! a small training step), later ones add. Parameter gradients likewise in the linear layer
//! (its weight gradient is a product, written or accumulated by the GEMM); the other layers'
//! backward passes add into them, and the tape zeroes a parameter's gradient before the first
//! of those adds when it overwrites (see [`crate::tape`]).

use crate::Float;

/// How a backward pass writes an input's gradient.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Write {
    /// The first contribution: the buffer holds stale values, overwrite them.
    Set,
    /// Another consumer already wrote: add.
    Add,
}

impl Write {
    /// `*d = v` or `*d += v`.
    #[inline(always)]
    pub fn put<T: Float>(self, d: &mut T, v: T) {
        match self {
            Write::Set => *d = v,
            Write::Add => *d += v,
        }
    }

    /// Zeroes `d` for a first write (`Set`), for backward passes that can only add.
    pub fn clear_for_adds<T: Float>(self, d: &mut [T]) {
        if self == Write::Set {
            d.fill(T::ZERO);
        }
    }

    /// Whether a product writing this gradient accumulates into it.
    pub fn accumulates(self) -> bool {
        self == Write::Add
    }
}

pub mod attention;
pub mod dropout;
pub mod embedding;
pub mod gelu;
pub mod layernorm;
pub mod linear;
pub mod residual;
pub mod rmsnorm;
pub mod rope;
pub mod softmax_ce;
pub mod swiglu;
