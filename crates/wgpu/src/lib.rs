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
//!
//! # Example
//!
//! Every rung on the best adapter, checked against the f64 oracle as the tests do. It runs
//! anywhere: without an adapter, [`Gpu::new`] says so with [`WgpuError::NoAdapter`] and the
//! example checks only that [`adapters`] agrees (CI has Mesa's lavapipe, so there it computes).
//!
//! ```
//! use ferrogpt_wgpu::{adapters, parse_device, reference, Gpu, Level, WgpuError};
//!
//! let (m, n, k) = (70, 50, 90); // any sizes: every kernel checks its bounds
//! let (a, b) = (reference::random(1, m * k), reference::random(2, k * n)); // (m, k), (k, n)
//! match Gpu::new(parse_device("wgpu")?) {
//!     Ok(gpu) => {
//!         let r = reference::matmul_f64(m, n, k, &a, &b); // (m, n)
//!         for level in Level::ALL {
//!             if gpu.supports(level).is_err() {
//!                 continue; // f16 without the adapter feature shader-f16
//!             }
//!             let c = gpu.matmul_host(level, m, n, k, &a, &b)?;
//!             let err = reference::max_rel_err(c.iter().copied().zip(r.iter().copied()));
//!             assert!(err < level.tolerance_vs_f32_inputs(), "{}: {err:e}", level.name());
//!         }
//!     }
//!     Err(WgpuError::NoAdapter) => assert!(adapters().is_empty()),
//!     Err(e) => return Err(e),
//! }
//! # Ok::<(), WgpuError>(())
//! ```

#![warn(missing_docs)]

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
    NoSuchAdapter {
        /// The index asked for (the N of `wgpu:N`).
        index: usize,
        /// How many adapters [`adapters`] lists.
        count: usize,
    },
    /// The adapter refused to open a device.
    #[error("wgpu adapter '{adapter}' could not open a device: {message}")]
    RequestDevice {
        /// The adapter's name.
        adapter: String,
        /// wgpu's error.
        message: String,
    },
    /// A level this adapter cannot run (f16 without shader-f16).
    #[error("{level} needs the wgpu feature {feature}, which adapter '{adapter}' does not offer")]
    Unsupported {
        /// The level's [`Level::name`].
        level: &'static str,
        /// The wgpu feature it needs: "shader-f16".
        feature: &'static str,
        /// The adapter's name.
        adapter: String,
    },
    /// Sizes or buffers that do not fit the contract.
    #[error("bad matmul arguments: {0}")]
    Shape(String),
    /// A buffer past the adapter's limits.
    #[error("{what} needs {bytes} bytes, past this adapter's limit of {limit} bytes")]
    TooLarge {
        /// Which buffer: "an uploaded buffer", "one row of A (50257 values)".
        what: String,
        /// The bytes it needs.
        bytes: u64,
        /// The adapter's limit, in bytes.
        limit: u64,
    },
    /// wgpu reported an error (validation, out of memory, a shader the driver refused).
    #[error("wgpu error in {during}: {message}")]
    Gpu {
        /// What was being done: "uploading a buffer", "running vectorized".
        during: String,
        /// wgpu's message.
        message: String,
    },
    /// A device name that is not `wgpu` or `wgpu:N`.
    #[error("unknown device '{0}': expected wgpu or wgpu:N")]
    BadDevice(String),
    /// An unknown level name (`.0`), and the names there are, comma-separated (`.1`).
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
