//! # ferrogpt-wgpu: the portable GPU rung of the matmul ladder
//!
//! The same matrix product as `ferrogpt-gemm` and `ferrogpt-cuda`, on any GPU that wgpu can
//! drive: Vulkan on Linux (and Windows, Android), Metal on macOS, DirectX 12 on Windows. The
//! kernels are WGSL that we write, one file per rung ([`Level`], `crates/wgpu/kernels/`), built
//! into the binary with `include_str!` and compiled by wgpu (naga, then the driver) on first use.
//!
//! ## The contract
//!
//! ```text
//! C (m×n) = A (m×k) · B (k×n)        row-major, contiguous (lda = k, ldb = n, ldc = n), overwrite
//! ```
//!
//! m, n and k are arbitrary (≥ 1): every kernel checks its bounds, reading zeros past the edges
//! of A and B and writing only inside C. Precision: the f32 levels multiply and accumulate in
//! f32; [`Level::F16`] reads A and B as f16 (rounded to nearest even on upload) and multiplies
//! and accumulates in f32. [`Gpu::matmul_host`] takes f32 inputs for every level and does that
//! rounding itself. Index arithmetic is 32-bit: m·k, k·n and m·n must stay below 2³².
//!
//! ## How it is built
//!
//! * wgpu with one native backend per platform (Cargo.toml) and WGSL as the only shader
//!   language. Without an adapter (no GPU, no Vulkan loader or driver) [`adapters`] returns an
//!   empty list and [`Gpu::new`] one [`WgpuError::NoAdapter`]; no entry point panics. Mesa's
//!   software Vulkan driver (lavapipe) is an adapter too: CI runs the tests on it.
//! * [`Gpu`] wraps one device and its queue: typed buffers ([`GpuBuffer`]) up and down, the
//!   compiled pipelines cached per level, and [`Gpu::matmul`] as the one entry point.
//! * [`offload`] is the CPU ladder's `wgpu` level: registered into `ferrogpt-gemm` at start-up,
//!   it runs the CPU engine's products here, moving the data on every call.
//! * [`mod@bench`] times every level (GPU timestamps where the adapter has them, else the wall
//!   clock around a submission) and checks it against the f64 oracle in [`mod@reference`].
//!   Measured numbers and what each kernel does: `docs/wgpu.md`.
//!
//! * [`gpt2`] is the GPT-2 forward pass in our WGSL kernels (`kernels/gpt2/`), with a key/value
//!   cache, and [`engine`] puts it behind the engine contract for `sample` and `eval`
//!   (`--device wgpu`).
//!
//! Dependency rule: the ladder depends only on `ferrogpt-gemm` (its naive level in f64 is the
//! oracle of the tests); the forward pass also on `ferrogpt-model` (the config and parameter
//! layout) and `ferrogpt-train` (the engine contract), as the CUDA engine (`ferrogpt-gpu`) does.

mod adapter;
pub mod bench;
mod device;
pub mod engine;
pub mod gpt2;
mod ladder;
pub mod offload;
pub mod reference;

pub use adapter::{adapters, render_text, AdapterLimits, AdapterReport};
pub use device::{Clock, Gpu, GpuBuffer};
pub use ladder::{Input, Level};

/// Everything that can go wrong on the wgpu path, as a value.
#[derive(Debug, thiserror::Error)]
pub enum WgpuError {
    /// No adapter at all: no GPU, or no Vulkan/Metal/DirectX 12 driver that wgpu can load.
    #[error("no wgpu adapter (no Vulkan, Metal or DirectX 12 device found; on Linux, is a Vulkan driver such as mesa-vulkan-drivers installed?)")]
    NoAdapter,
    /// The adapter index does not exist.
    #[error("no wgpu adapter {index}: {count} adapter(s) present (see `ferrogpt info`)")]
    NoSuchAdapter { index: usize, count: usize },
    /// The adapter refused to open a device.
    #[error("wgpu adapter '{adapter}' could not open a device: {message}")]
    RequestDevice { adapter: String, message: String },
    /// A level this adapter cannot run (f16 without shader-f16).
    #[error("{level} needs the wgpu feature {feature}, which adapter '{adapter}' does not offer")]
    Unsupported {
        level: &'static str,
        feature: &'static str,
        adapter: String,
    },
    /// Sizes or buffers that do not fit the contract.
    #[error("bad matmul arguments: {0}")]
    Shape(String),
    /// A buffer past the adapter's limits.
    #[error("{what} needs {bytes} bytes, past this adapter's limit of {limit} bytes")]
    TooLarge {
        what: String,
        bytes: u64,
        limit: u64,
    },
    /// wgpu reported an error (validation, out of memory, a shader the driver refused).
    #[error("wgpu error in {during}: {message}")]
    Gpu { during: String, message: String },
    /// A device name that is not `wgpu` or `wgpu:N`.
    #[error("unknown device '{0}': expected wgpu or wgpu:N")]
    BadDevice(String),
    /// An unknown level name.
    #[error("unknown wgpu level '{0}'; levels: {1}")]
    UnknownLevel(String, String),
}

/// Parses `wgpu` (the first adapter of [`adapters`]) or `wgpu:N` into an adapter index.
pub fn parse_device(s: &str) -> Result<usize, WgpuError> {
    match s.trim() {
        "wgpu" => Ok(0),
        t => t
            .strip_prefix("wgpu:")
            .and_then(|n| n.parse().ok())
            .ok_or_else(|| WgpuError::BadDevice(s.to_string())),
    }
}
