//! # ferrogpt-gpu: GPT-2 and Llama training and inference on an NVIDIA GPU
//!
//! The model of `ferrogpt-model`, every family and option it describes (same parameter
//! layout, same checkpoints), with every layer's forward and backward in our CUDA kernels and
//! the matrix products in cuBLAS:
//!
//! * [`model`]: [`GpuModel`], the forward and backward passes layer by layer, the fused
//!   optimizer and the gradient norm. Parameters, gradients and optimizer state stay on the
//!   GPU; token ids go in, losses and norms come out.
//! * `raw` and `lt` (private): the unsafe boundary: typed views of device memory, kernel
//!   launches, copies, cuBLAS calls, and cuBLASLt products with the bias (and GELU) fused
//!   into the epilogue.
//! * `kernels/*.cu`: one file per layer group (encoder, layernorm + rmsnorm, elementwise
//!   (GELU, SwiGLU, residual), rope, attention, softmax + cross-entropy, optimizer), forward
//!   and backward side by side, compiled at run time by NVRTC for the GPU's architecture,
//!   once per [`Dtype`].
//! * [`engine`]: [`GpuEngine`], the training loop's `Engine` on top of [`GpuModel`].
//! * [`nccl`]: NCCL for data-parallel GPU ranks: the gradients' sum, and the trainer's
//!   collectives for ranks started torchrun-style.
//!
//! Attention is fused (FlashAttention-style tiling with an online softmax; the (B, NH, T, T)
//! matrix never exists), with grouped-query heads; the oracle it is tested against is the CPU
//! engine's plain attention.
//!
//! Dependency rule: builds on ferrogpt-cuda (the GPU context), ferrogpt-model (config, layout)
//! and ferrogpt-train (the `Engine` trait). Without a driver or GPU every entry point returns
//! a `CudaError` naming what is missing.

pub mod engine;
mod lt;
pub mod model;
pub mod nccl;
mod raw;

pub use engine::GpuEngine;
pub use model::{GpuModel, Memory, OptKind, OptState, Update};
pub use raw::{compile, program, HEAD_SIZES};

/// Precision of activations and matrix products on the GPU (`--dtype`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dtype {
    /// Everything in f32 (cuBLAS without TF32).
    F32,
    /// Everything stored in f32 as with `F32`, the matrix products on the tensor cores in TF32
    /// (10-bit mantissa inputs, f32 accumulation): what PyTorch users get with
    /// `allow_tf32 = True`. Attention and every other kernel stay f32.
    Tf32,
    /// bf16 activations, weights copy and tensor-core products; f32 master weights, gradients,
    /// optimizer state and reductions.
    Bf16,
}

impl Dtype {
    /// Parses `fp32` / `f32` / `tf32` / `bf16`.
    pub fn parse(s: &str) -> Option<Dtype> {
        match s {
            "fp32" | "f32" => Some(Dtype::F32),
            "tf32" => Some(Dtype::Tf32),
            "bf16" => Some(Dtype::Bf16),
            _ => None,
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            Dtype::F32 => "fp32",
            Dtype::Tf32 => "tf32",
            Dtype::Bf16 => "bf16",
        }
    }
    /// Bytes per activation element.
    pub fn size(self) -> usize {
        match self {
            Dtype::F32 | Dtype::Tf32 => 4,
            Dtype::Bf16 => 2,
        }
    }
    /// Whether activations are stored in f32 (the kernels' floatX is float).
    pub fn f32_storage(self) -> bool {
        self.size() == 4
    }
}
