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
//! * [`reduce`], [`fastmath`], [`wide`]: the laned sums, vectorisable `exp`/`tanh` and AVX-512
//!   dispatch the ops' inner loops are built from.
//! * [`fsutil`]: atomic file writes (checkpoints, token files, caches).
//! * [`mem`]: large buffers (parameters) on huge pages where the kernel offers them.
//!
//! Matrix products go through [`ferrogpt_gemm::matmul`] at the tape's [`Level`].
//! Dependency rule: this crate depends only on ferrogpt-gemm. ferrogpt-model builds GPT-2 and
//! Llama on the tape (its parameters are [`Param`]s of one flat buffer); ferrogpt-train runs the
//! steps; the GPU engines (ferrogpt-gpu, ferrogpt-wgpu) have kernels of their own, read the
//! same [`Param`] layout, and are tested against this crate's tape.
//!
//! # Example
//!
//! A linear classifier on the tape: logits (N, V) = x (N, IC) · W (IC, V) + b, mean
//! cross-entropy, and the gradients of W and b in a flat buffer laid out like the parameters.
//! In f64 at the naive level, the oracle's precision, a gradient matches a central difference.
//!
//! ```
//! use ferrogpt_core::{Level, Param, Tape};
//!
//! let (n, ic, v) = (4, 3, 5);
//! let w = Param { offset: 0, rows: ic, cols: v }; // (IC, V)
//! let b = Param { offset: ic * v, rows: 1, cols: v }; // (V)
//! let mut params = vec![0.0f64; ic * v + v];
//! let x: Vec<f64> = (0..n * ic).map(|i| (i % 7) as f64 * 0.1 - 0.3).collect(); // (N, IC)
//! let targets = [0u32, 3, 3, 1]; // (N)
//!
//! fn loss(tape: &mut Tape<f64>, params: &[f64], x: &[f64], w: Param, b: Param, y: &[u32]) -> f64 {
//!     let x = tape.input(x, y.len(), w.rows);
//!     let logits = tape.linear(params, x, w, Some(b), false);
//!     tape.softmax_cross_entropy(logits, y, w.cols)
//! }
//!
//! let mut tape = Tape::<f64>::new(Level::Naive)?;
//! // Zero weights: every token has probability 1/V.
//! let l = loss(&mut tape, &params, &x, w, b, &targets);
//! assert!((l - (v as f64).ln()).abs() < 1e-12);
//!
//! // d loss / d b[j] = mean over rows of (p_j - [target = j]): for j = 3, 1/5 - 2/4.
//! let mut grads = vec![0.0; params.len()];
//! tape.backward(&params, &mut grads);
//! assert!((grads[b.offset + 3] - (0.2 - 0.5)).abs() < 1e-12);
//!
//! // A weight's gradient against a central difference of the loss, forward only.
//! params.iter_mut().enumerate().for_each(|(i, p)| *p = (i % 5) as f64 * 0.05);
//! tape.reset(true);
//! loss(&mut tape, &params, &x, w, b, &targets);
//! grads.fill(0.0); // `backward` accumulates (+=) into the gradients
//! tape.backward(&params, &mut grads);
//! let (i, h) = (w.offset + 7, 1e-5);
//! tape.reset(false);
//! params[i] += h;
//! let up = loss(&mut tape, &params, &x, w, b, &targets);
//! tape.reset(false);
//! params[i] -= 2.0 * h;
//! let down = loss(&mut tape, &params, &x, w, b, &targets);
//! assert!((grads[i] - (up - down) / (2.0 * h)).abs() < 1e-9);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

#![warn(missing_docs)]

pub mod fastmath;
pub mod fsutil;
pub mod mem;
pub mod ops;
pub mod reduce;
pub mod tape;
pub mod wide;

pub use ferrogpt_gemm::{Element, Level};
pub use ops::Write;
pub use tape::{Param, Tape, Var};

/// The element type of the ops: [`Element`] plus the elementary functions the layers need.
///
/// Implemented for f32 and f64 only ([`Element`] is sealed). For f32, [`Float::exp`] and
/// [`Float::tanh`] are the vectorisable approximations of [`fastmath`] (a few ulp); for f64
/// they are the standard library's.
pub trait Float: Element {
    /// eˣ. f32: [`fastmath::exp`], input clamped to [-87, 88], so never 0 or infinite.
    fn exp(self) -> Self;
    /// The natural logarithm.
    fn ln(self) -> Self;
    /// The square root.
    fn sqrt(self) -> Self;
    /// The hyperbolic tangent. f32: [`fastmath::tanh`], absolute error about 2e-7.
    fn tanh(self) -> Self;
    /// The larger of the two; if one is NaN, the other (as `f32::max`).
    fn max(self, other: Self) -> Self;
    /// Neither infinite nor NaN.
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
