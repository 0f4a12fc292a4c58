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
//! oracle in [`mod@reference`]. ferrogpt-gpu builds the GPU training engine on [`Gpu`]'s
//! context, stream and cuBLAS handle; the CLI's `bench gpu` and `bench matmul --device cuda`
//! run [`mod@bench`].
//!
//! # Examples
//!
//! One product at a level, checked against the f64 oracle as the tests do. `no_run`: it needs
//! an NVIDIA GPU and driver at run time (it compiles anywhere; without a GPU, [`Gpu::new`]
//! returns the error that says what is missing).
//!
//! ```no_run
//! use ferrogpt_cuda::{reference, Gpu, Level};
//!
//! let gpu = Gpu::new(ferrogpt_cuda::parse_device("cuda:0")?)?;
//! let (m, n, k) = (300, 200, 500); // any sizes: edge tiles are handled
//! let mut rng = reference::Rng::new(1);
//! let (a, b) = (rng.vec(m * k), rng.vec(k * n)); // row-major (m, k) and (k, n)
//! for level in [Level::Warptile, Level::CublasF32] {
//!     gpu.supports(level)?;
//!     let c = gpu.matmul_host(level, m, n, k, &a, &b)?; // (m, n)
//!     let r = reference::matmul_f64(m, n, k, &a, &b);
//!     let err = reference::max_rel_err(c.iter().copied().zip(r));
//!     assert!(err < level.tolerance(), "{}: {err:e}", level.name());
//! }
//! # Ok::<(), ferrogpt_cuda::CudaError>(())
//! ```
//!
//! The parts that need no GPU: level names, the bf16 rounding the bf16 levels apply to their
//! inputs, and the oracle.
//!
//! ```
//! use ferrogpt_cuda::{reference, Input, Level};
//!
//! let level = Level::from_name("tensor-core-bf16")?;
//! assert_eq!(level, Level::TensorCore);
//! assert_eq!(level.input(), Input::Bf16);
//! // bf16 keeps 8 significant bits: 1 + 2⁻⁸ is a tie, rounded to the even 1.
//! assert_eq!(reference::round_bf16(1.0 + 1.0 / 256.0), 1.0);
//! assert_eq!(reference::round_bf16(1.0 + 3.0 / 256.0), 1.0 + 4.0 / 256.0);
//! // [1 2; 3 4] · [5; 6] = [17; 39]
//! let c = reference::matmul_f64(2, 1, 2, &[1.0, 2.0, 3.0, 4.0], &[5.0, 6.0]);
//! assert_eq!(c, [17.0, 39.0]);
//! assert!(ferrogpt_cuda::parse_device("gpu0").is_err());
//! # Ok::<(), ferrogpt_cuda::CudaError>(())
//! ```

#![warn(missing_docs)]

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
    NoLibrary {
        /// The library and what it is: "libcuda (the NVIDIA driver)".
        library: &'static str,
    },
    /// The driver loaded, but there is no GPU with this index.
    #[error("no CUDA device {ordinal}: {count} device(s) present")]
    NoDevice {
        /// The index asked for.
        ordinal: usize,
        /// How many GPUs the driver lists.
        count: usize,
    },
    /// A driver call failed.
    #[error("CUDA driver error in {during}: {message}")]
    Driver {
        /// What was being done: "creating the context", "launching f32_to_bf16".
        during: String,
        /// The driver's error.
        message: String,
    },
    /// NVRTC refused a kernel; `log` is the compiler's output.
    #[error("NVRTC could not compile {file}: {log}")]
    Compile {
        /// The kernel file: "warptile.cu".
        file: &'static str,
        /// NVRTC's log, with line numbers of that file.
        log: String,
    },
    /// A cuBLAS call failed.
    #[error("cuBLAS error in {during}: {message}")]
    Cublas {
        /// The call or step: "cublasGemmEx", "creating the handle".
        during: String,
        /// cuBLAS's status.
        message: String,
    },
    /// A level this GPU cannot run (e.g. wgmma on a GPU other than sm_90).
    #[error("{level} needs compute capability {need:?}; this GPU has {have:?}")]
    Unsupported {
        /// The level's [`Level::name`].
        level: &'static str,
        /// The compute capability (major, minor) the level needs exactly.
        need: (i32, i32),
        /// This GPU's.
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
    /// An unknown level name (`.0`), and the names there are, comma-separated (`.1`).
    #[error("unknown GPU level '{0}'; levels: {1}")]
    UnknownLevel(String, String),
}

/// Parses `cuda` or `cuda:N` into a device ordinal (`cuda` is 0); surrounding spaces are
/// ignored. Errors: [`CudaError::BadDevice`] for anything else. Checks the syntax only, not
/// that the device exists (see [`Gpu::new`]).
pub fn parse_device(s: &str) -> Result<usize, CudaError> {
    match s.trim() {
        "cuda" => Ok(0),
        t => t
            .strip_prefix("cuda:")
            .and_then(|n| n.parse().ok())
            .ok_or_else(|| CudaError::BadDevice(s.to_string())),
    }
}
