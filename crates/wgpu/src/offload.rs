//! The CPU ladder's `wgpu` level (`ferrogpt_gemm::Level::Wgpu`): the CPU engine's products sent
//! to the GPU one at a time, the operands uploaded and the result read back on every call, as
//! the Go seed's Metal level did.
//!
//! `ferrogpt-gemm` cannot depend on this crate (this crate depends on it), so [`register`]
//! hands it an engine at start-up; the `ferrogpt` binary calls it first thing in `main`. The
//! device (adapter 0 of [`crate::adapters`], the best one) is opened on first use and kept for
//! the process; without an adapter the level answers, in one line, why it is unavailable.
//!
//! The product runs at [`OFFLOAD_LEVEL`], the fastest f32 rung. Operands larger than one
//! storage binding (128 MiB on lavapipe: GPT-2's 768×50257 output layer is 154 MB) are split:
//! B into blocks of whole columns, A and C into blocks of whole rows, each block a product of
//! its own.

use crate::{Gpu, Level};
use ferrogpt_gemm::offload::Offload;
use std::sync::OnceLock;

/// The rung the offloaded products run at: the vectorised f32 kernel (the f16 rung would round
/// the operands, which the CPU ladder's contract does not allow).
pub const OFFLOAD_LEVEL: Level = Level::Vectorized;

/// The engine behind `ferrogpt_gemm::Level::Wgpu`.
pub struct WgpuOffload {
    /// Adapter index.
    index: usize,
    gpu: OnceLock<Result<Gpu, String>>,
    /// Largest buffer in f32 elements; `None`: the device's own limit.
    max_elems: Option<usize>,
}

impl WgpuOffload {
    /// An engine on adapter `index`, opened on first use.
    pub fn new(index: usize) -> WgpuOffload {
        WgpuOffload {
            index,
            gpu: OnceLock::new(),
            max_elems: None,
        }
    }

    /// The same engine with buffers of at most `max_elems` f32 values, for testing the
    /// splitting of large operands on small shapes.
    pub fn with_max_elements(index: usize, max_elems: usize) -> WgpuOffload {
        WgpuOffload {
            max_elems: Some(max_elems.max(1)),
            ..WgpuOffload::new(index)
        }
    }

    fn gpu(&self) -> Result<&Gpu, String> {
        self.gpu
            .get_or_init(|| Gpu::new(self.index).map_err(|e| e.to_string()))
            .as_ref()
            .map_err(Clone::clone)
    }
}

/// Registers [`WgpuOffload`] on adapter 0 as the engine of `ferrogpt_gemm::Level::Wgpu`. Cheap
/// (the device opens on first use); a second call does nothing.
pub fn register() {
    ferrogpt_gemm::offload::register_wgpu(Box::new(WgpuOffload::new(0)));
}

impl Offload for WgpuOffload {
    fn available(&self) -> Result<(), String> {
        let gpu = self.gpu()?;
        gpu.supports(OFFLOAD_LEVEL).map_err(|e| e.to_string())
    }

    fn gemm(
        &self,
        m: usize,
        n: usize,
        k: usize,
        a: &[f32],
        b: &[f32],
        c: &mut [f32],
    ) -> Result<(), String> {
        let gpu = self.gpu()?;
        let max = self
            .max_elems
            .unwrap_or(usize::MAX)
            .min(gpu.max_elements(crate::Input::F32));
        blocked_product(gpu, max, m, n, k, a, b, c).map_err(|e| e.to_string())
    }
}

/// C (m×n) = A (m×k) · B (k×n), every operand block at most `max` elements.
#[allow(clippy::too_many_arguments)]
fn blocked_product(
    gpu: &Gpu,
    max: usize,
    m: usize,
    n: usize,
    k: usize,
    a: &[f32],
    b: &[f32],
    c: &mut [f32],
) -> Result<(), crate::WgpuError> {
    if k > max {
        return Err(crate::WgpuError::TooLarge {
            what: format!("one row of A ({k} values)"),
            bytes: 4 * k as u64,
            limit: 4 * max as u64,
        });
    }
    // Columns of B (and C) per block, then rows of A (and C) per block.
    let nb = n.min(max / k);
    let mb = m.min(max / k).min(max / nb);
    // LOOP 1: blocks of nb columns of B and C.
    for j0 in (0..n).step_by(nb) {
        let w = nb.min(n - j0);
        let b_block = if w == n {
            gpu.upload(b)?
        } else {
            let cols: Vec<f32> = (0..k)
                .flat_map(|p| &b[p * n + j0..p * n + j0 + w])
                .copied()
                .collect();
            gpu.upload(&cols)?
        };
        // LOOP 2: blocks of mb rows of A and C.
        for i0 in (0..m).step_by(mb) {
            let h = mb.min(m - i0);
            let a_block = gpu.upload(&a[i0 * k..(i0 + h) * k])?;
            let mut c_block = gpu.zeros(h * w)?;
            gpu.matmul(OFFLOAD_LEVEL, h, w, k, &a_block, &b_block, &mut c_block)?;
            let out = gpu.download(&c_block)?;
            for (r, row) in out.chunks_exact(w).enumerate() {
                c[(i0 + r) * n + j0..][..w].copy_from_slice(row);
            }
        }
    }
    Ok(())
}
