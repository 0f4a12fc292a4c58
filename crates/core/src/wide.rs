//! Elementwise loops compiled for the widest vectors the CPU has.
//!
//! The workspace targets x86-64-v3 (AVX2: 8 f32 lanes), so plain loops vectorise 8 wide. On a
//! CPU with AVX-512, [`run`] calls its closure through a function compiled with AVX-512
//! enabled; the closure is inlined there and its loops vectorise 16 wide. Detected once.
//! Mark the closure `#[inline(always)]`: left to the inliner, larger closures stay out of line
//! and are compiled for the baseline target. GELU through the op, one thread, hot L1
//! (machine A of docs/benchmarks.md, 2026-11-26, `d579902` against `310b185`): forward
//! 1.5–1.9 → 0.93–0.96 ns per element, backward 0.67 → 0.43.
//! Per-element arithmetic is the same at either width (tests/wide.rs checks GELU bit for bit).

/// Runs `f`, with AVX-512 code generation where the CPU has AVX-512F (x86_64 only).
#[inline(always)]
pub fn run<R>(f: impl FnOnce() -> R) -> R {
    #[cfg(target_arch = "x86_64")]
    {
        use std::sync::OnceLock;
        static AVX512: OnceLock<bool> = OnceLock::new();
        if *AVX512.get_or_init(|| std::arch::is_x86_feature_detected!("avx512f")) {
            // SAFETY: the CPU supports AVX-512F (checked above).
            return unsafe { avx512(f) };
        }
    }
    f()
}

/// `f()` compiled with AVX-512F enabled (once inlined here).
///
/// # Safety
/// The CPU must support AVX-512F.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn avx512<R>(f: impl FnOnce() -> R) -> R {
    f()
}
