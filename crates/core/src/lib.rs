//! # ferrogpt-core: ops and the autodiff tape
//!
//! * [`ops`]: one module per layer (embedding, layernorm, linear, attention, GELU, residual add,
//!   dropout, fused softmax + cross-entropy; for Llama-style models RMSNorm, rotary positions,
//!   SwiGLU and grouped-query attention), each a plain `forward` and a hand-written
//!   `backward` side by side, on flat row-major slices. Backward functions write or add into
//!   the gradients they are given, as their [`Write`] arguments say.
//! * [`tape`]: a reverse-mode tape that records those ops as the model's forward runs, so the
//!   backward pass follows from the forward written once.
//! * [`Float`]: the element type: f32 for training, f64 for gradient checks.
//!
//! Matrix products go through [`ferrogpt_gemm::matmul`] at the tape's [`Level`].
//! Dependency rule: this crate depends only on ferrogpt-gemm.

pub mod fastmath;
pub mod fsutil;
pub mod ops;
pub mod reduce;
pub mod tape;
pub mod wide;

pub use ferrogpt_gemm::{Element, Level};
pub use ops::Write;
pub use tape::{Param, Tape, Var};

/// The element type of the ops: [`Element`] plus the elementary functions the layers need.
pub trait Float: Element {
    fn exp(self) -> Self;
    fn ln(self) -> Self;
    fn sqrt(self) -> Self;
    fn tanh(self) -> Self;
    fn max(self, other: Self) -> Self;
    fn is_finite(self) -> bool;
}

macro_rules! impl_float {
    ($t:ty, $exp:path, $tanh:path) => {
        impl Float for $t {
            #[inline(always)]
            fn exp(self) -> Self {
                $exp(self)
            }
            #[inline(always)]
            fn ln(self) -> Self {
                <$t>::ln(self)
            }
            #[inline(always)]
            fn sqrt(self) -> Self {
                <$t>::sqrt(self)
            }
            #[inline(always)]
            fn tanh(self) -> Self {
                $tanh(self)
            }
            #[inline(always)]
            fn max(self, other: Self) -> Self {
                <$t>::max(self, other)
            }
            #[inline(always)]
            fn is_finite(self) -> bool {
                <$t>::is_finite(self)
            }
        }
    };
}
// f32 (training) uses the vectorisable exp/tanh of `fastmath`; f64 (the oracle) uses std's.
impl_float!(f32, fastmath::exp, fastmath::tanh);
impl_float!(f64, f64::exp, f64::tanh);

/// Rows below this count are processed on one thread: rayon's fork-join overhead exceeds the work.
pub(crate) const PAR_MIN_ELEMS: usize = 16 * 1024;
