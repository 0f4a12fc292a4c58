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
//! a `CudaError` naming what is missing. The CLI reaches this crate through
//! [`GpuEngine::factory`] (`--device cuda[:N]`); the training loop never sees a device buffer.
//!
//! # Examples
//!
//! Training steps of a small GPT-2 on the GPU, by hand (what [`GpuEngine`] does for the
//! trainer): the loss of a fixed batch falls. `no_run`: it needs an NVIDIA GPU, its driver,
//! NVRTC and cuBLAS at run time; it compiles anywhere, and without them
//! [`ferrogpt_cuda::Gpu::new`] returns the error that names what is missing.
//!
//! ```no_run
//! use ferrogpt_gpu::{Dtype, GpuModel, OptKind, OptState, Update};
//! use ferrogpt_model::{GptConfig, ParamLayout};
//! use rand::SeedableRng;
//!
//! // Character-level GPT-2: 2 layers, 4 heads of 32, a vocabulary of 65 padded to 128.
//! let cfg = GptConfig {
//!     n_layer: 2, n_head: 4, n_embd: 128, block_size: 64,
//!     vocab_size: 65, padded_vocab_size: 128,
//!     ..GptConfig::default()
//! };
//! let layout = ParamLayout::new(&cfg);
//! let mut rng = rand_xoshiro::Xoshiro256PlusPlus::seed_from_u64(1);
//! let params: Vec<f32> = layout.init(&cfg, &mut rng); // (P), as the CPU model initialises
//! let n = layout.total;
//! let opt = OptState {
//!     kind: OptKind::AdamW,
//!     m: vec![0.0; n],
//!     v: vec![0.0; n],
//!     t: 0,
//!     decay: layout.decay_mask(),
//! };
//! let gpu = ferrogpt_cuda::Gpu::new(0)?;
//! let mut model = GpuModel::new(gpu, Dtype::Bf16, cfg, &params, Some(opt))?;
//!
//! let (b, t) = (4, 64);
//! let x: Vec<u32> = (0..b * t).map(|i| (i % 65) as u32).collect(); // (B, T) token ids
//! let y: Vec<u32> = (0..b * t).map(|i| ((i + 1) % 65) as u32).collect(); // the next ids
//! let u = Update {
//!     lr: 1e-3, beta1: 0.9, beta2: 0.95, eps: 1e-8, weight_decay: 0.1,
//!     momentum: 0.0, // SGD's; AdamW ignores it
//! };
//! let before = model.loss(&x, &y, t)?;
//! for step in 0..20 {
//!     model.zero_grads()?;
//!     model.accumulate(&x, &y, t, 1.0, step)?; // forward + backward, gradients added
//!     let norm = model.grad_norm()?;
//!     model.update(&u, if norm > 1.0 { (1.0 / norm) as f32 } else { 1.0 })?; // clip at 1
//! }
//! assert!(model.loss(&x, &y, t)? < before);
//! println!("{}", model.memory()?); // where the GPU memory went
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! What needs no GPU: the precisions, and the CUDA program NVRTC compiles for each.
//!
//! ```
//! use ferrogpt_gpu::Dtype;
//!
//! let d = Dtype::parse("bf16").expect("a --dtype name");
//! assert_eq!((d.name(), d.size(), d.f32_storage()), ("bf16", 2, false));
//! assert_eq!(Dtype::parse(Dtype::Tf32.name()), Some(Dtype::Tf32));
//! // One program per dtype: common.cuh with floatX chosen, then every kernel file.
//! let src = ferrogpt_gpu::program(d);
//! assert!(src.starts_with("#define FERRO_BF16 1") && src.contains("adamw"));
//! ```

#![warn(missing_docs)]

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
    /// The `--dtype` spelling: "fp32", "tf32" or "bf16" (what [`Dtype::parse`] reads back).
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
