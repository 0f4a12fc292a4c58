//! # ferrogpt-cuda: the GPU rungs of the matmul ladder
//!
//! The same matrix product as `ferrogpt-gemm`, on an NVIDIA GPU: our own CUDA kernels, one
//! rung of hardware use each ([`Level`]), measured beside cuBLAS.
//!
//! ## The contract
//!
//! ```text
//! C (m×n) = A (m×k) · B (k×n)        row-major, contiguous (lda = k, ldb = n, ldc = n), overwrite
//! ```
//!
//! m, n and k are arbitrary (≥ 1): every kernel has a fast variant for whole tiles and an
//! `_edge` variant that checks bounds, chosen per call. Precision: the f32 levels multiply and
//! accumulate in f32; [`Level::CublasTf32`] rounds the inputs to TF32 (10-bit mantissa) inside
//! the tensor cores; the bf16 levels ([`Level::TensorCore`], [`Level::TensorCoreTuned`],
//! [`Level::TensorCoreWgmma`], [`Level::CublasBf16`]) take A and B rounded to bf16 (round to nearest even) and accumulate in f32. [`Gpu::matmul_host`] takes f32
//! inputs for every level and does that rounding itself.
//!
//! ## How it is built
//!
//! * `cudarc` with dynamic loading: the crate builds with no CUDA installed; the driver
//!   (`libcuda`), NVRTC and cuBLAS are found at run time. Without them, or without a GPU,
//!   [`Gpu::new`] answers one [`CudaError`] naming what is missing, never a panic.
//! * Our kernels are CUDA C++ in `crates/cuda/kernels/*.cu` (one file per rung), built into the
//!   binary with `include_str!`, compiled by NVRTC on first use for the GPU's compute
//!   capability (`--gpu-architecture=compute_90` on an H100, which the driver turns into sm_90
//!   code; `compute_90a` for the wgmma rung, which only sm_90 runs), and cached for the life of
//!   the [`Gpu`]. Measured numbers: `docs/gpu-ladder.md`.
//! * [`mod@bench`] times every level with CUDA events (median after warm-up) and reports TFLOPS,
//!   the ratio to cuBLAS and the error against an f64 reference.
//!
//! Dependency rule: this crate depends on nothing else of ferrogpt; its tests use the f64
//! oracle in [`mod@reference`].

pub mod bench;
mod device;
mod ladder;
pub mod reference;

pub use device::{compile_kernels, Gpu, Operand};
pub use ladder::{Input, Level, TcTile, TC_TUNED_DEFAULT, TC_TUNED_VARIANTS};

/// Everything that can go wrong on the GPU path, as a value.
#[derive(Debug, thiserror::Error)]
pub enum CudaError {
    /// A CUDA library (driver, NVRTC or cuBLAS) could not be loaded.
    #[error("no CUDA driver: could not load {library} (is an NVIDIA driver installed and the CUDA libraries on LD_LIBRARY_PATH?)")]
    NoLibrary { library: &'static str },
    /// The driver loaded, but there is no GPU with this index.
    #[error("no CUDA device {ordinal}: {count} device(s) present")]
    NoDevice { ordinal: usize, count: usize },
    /// A driver call failed.
    #[error("CUDA driver error in {during}: {message}")]
    Driver { during: String, message: String },
    /// NVRTC refused a kernel; `log` is the compiler's output.
    #[error("NVRTC could not compile {file}: {log}")]
    Compile { file: &'static str, log: String },
    /// A cuBLAS call failed.
    #[error("cuBLAS error in {during}: {message}")]
    Cublas { during: String, message: String },
    /// A level this GPU cannot run (e.g. wgmma on a GPU other than sm_90).
    #[error("{level} needs compute capability {need:?}; this GPU has {have:?}")]
    Unsupported {
        level: &'static str,
        need: (i32, i32),
        have: (i32, i32),
    },
    /// Sizes or operands that do not fit the contract.
    #[error("bad matmul arguments: {0}")]
    Shape(String),
    /// A model, batch or call the GPU model cannot take (the message says which and why).
    #[error("{0}")]
    Input(String),
    /// A device name that is not `cuda` or `cuda:N`.
    #[error("unknown device '{0}': expected cuda or cuda:N")]
    BadDevice(String),
    /// An unknown level name.
    #[error("unknown GPU level '{0}'; levels: {1}")]
    UnknownLevel(String, String),
}

/// Parses `cuda` or `cuda:N` into a device ordinal.
pub fn parse_device(s: &str) -> Result<usize, CudaError> {
    match s.trim() {
        "cuda" => Ok(0),
        t => t
            .strip_prefix("cuda:")
            .and_then(|n| n.parse().ok())
            .ok_or_else(|| CudaError::BadDevice(s.to_string())),
    }
}
