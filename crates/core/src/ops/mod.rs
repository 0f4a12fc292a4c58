//! The layers, forward and backward side by side, on flat row-major buffers.
//!
//! Shape vocabulary: `B` batch, `T` time, `C` channels, `NH` heads, `HS = C / NH` head size,
//! `V` vocabulary, `Vp` padded vocabulary, `N = B*T` rows. Every backward *accumulates* into the
//! gradient buffers it is given; callers zero them.

pub mod attention;
pub mod dropout;
pub mod embedding;
pub mod gelu;
pub mod layernorm;
pub mod linear;
pub mod residual;
pub mod softmax_ce;
