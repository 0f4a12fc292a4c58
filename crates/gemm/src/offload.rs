//! The `wgpu` level: products computed on a GPU that another crate drives, the data moved to
//! the device and back on every call (as the Go seed's Metal level did).
//!
//! This crate depends on nothing else of ferrogpt, and `ferrogpt-wgpu` depends on it (the f64
//! oracle), so the GPU cannot be called from here directly. Instead `ferrogpt-wgpu` registers
//! an [`Offload`] at start-up (`ferrogpt_wgpu::offload::register`, which the `ferrogpt` binary
//! calls in `main`); until one is registered, [`Level::Wgpu`](crate::Level::Wgpu) is
//! unavailable and says so.
//!
//! What this file does for the level: packs op(A) and op(B) into contiguous row-major m×k and
//! k×n copies where the strides or transposes ask for it (the WGSL kernels read only that
//! layout), hands them to the offload, and writes or adds its m×n result into C at C's stride.
//! f32 only. Products started inside [`crate::serial`] (attention's per-head products, which
//! the caller already runs many at a time on the CPU's threads) stay on the CPU at
//! [`Level::fastest`](crate::Level::fastest): thousands of tiny round trips through one queue
//! would cost far more than they compute.

use crate::{GemmError, Problem};
use std::borrow::Cow;
use std::sync::OnceLock;

/// A matrix engine outside this crate: `C (m×n) = A (m×k) · B (k×n)`, row-major and
/// contiguous, f32, C overwritten.
pub trait Offload: Send + Sync {
    /// Whether products can run here (a device exists and opens); the error says why not.
    fn available(&self) -> Result<(), String>;
    /// Computes the product. `a`, `b` and `c` are exactly m·k, k·n and m·n long.
    fn gemm(
        &self,
        m: usize,
        n: usize,
        k: usize,
        a: &[f32],
        b: &[f32],
        c: &mut [f32],
    ) -> Result<(), String>;
}

static WGPU: OnceLock<Box<dyn Offload>> = OnceLock::new();

/// Registers the engine behind [`Level::Wgpu`](crate::Level::Wgpu). Returns `false` (and
/// keeps the first) when one was registered already.
pub fn register_wgpu(offload: Box<dyn Offload>) -> bool {
    WGPU.set(offload).is_ok()
}

fn unavailable(reason: String) -> GemmError {
    GemmError::Unavailable {
        level: "wgpu",
        reason,
    }
}

/// Whether the `wgpu` level can run: registered, and its device opens.
pub(crate) fn available() -> Result<(), GemmError> {
    WGPU.get()
        .ok_or_else(|| {
            unavailable(
                "no GPU engine registered in this program (the ferrogpt binary registers \
                 ferrogpt-wgpu's; a library user calls ferrogpt_wgpu::offload::register)"
                    .into(),
            )
        })?
        .available()
        .map_err(unavailable)
}

/// `p` on the registered engine, C overwritten or accumulated as `p.accumulate` says.
pub(crate) fn gemm_f32(p: &Problem<'_, f32>, c: &mut [f32]) -> Result<(), GemmError> {
    let engine = WGPU.get().ok_or_else(|| available().unwrap_err())?;
    let (m, n, k) = (p.m, p.n, p.k);
    // op(A) as m×k contiguous: borrowed when it already is.
    let a: Cow<[f32]> = if !p.ta && (p.lda == k || m == 1) {
        Cow::Borrowed(&p.a[..m * k])
    } else {
        Cow::Owned((0..m * k).map(|e| p.a_at(e / k, e % k)).collect())
    };
    let b: Cow<[f32]> = if !p.tb && (p.ldb == n || k == 1) {
        Cow::Borrowed(&p.b[..k * n])
    } else {
        Cow::Owned((0..k * n).map(|e| p.b_at(e / n, e % n)).collect())
    };
    let direct = !p.accumulate && (p.ldc == n || m == 1);
    if direct {
        return engine
            .gemm(m, n, k, &a, &b, &mut c[..m * n])
            .map_err(unavailable);
    }
    let mut out = vec![0f32; m * n];
    engine
        .gemm(m, n, k, &a, &b, &mut out)
        .map_err(unavailable)?;
    for (i, row) in out.chunks_exact(n).enumerate() {
        let dst = &mut c[i * p.ldc..i * p.ldc + n];
        if p.accumulate {
            dst.iter_mut().zip(row).for_each(|(d, s)| *d += s);
        } else {
            dst.copy_from_slice(row);
        }
    }
    Ok(())
}
