//! aarch64: the CPU's name from its MIDR (Linux) or brand string (macOS), runtime feature
//! detection, and the NEON FMA peak kernels.
//!
//! Only compile-checked on the x86_64 development machine (`cargo check --target
//! aarch64-unknown-linux-gnu`); the MIDR decoding it relies on (`midr.rs`) is unit-tested
//! everywhere.

use super::peak::FmaKernel;
use super::{Caches, CpuName};
use std::arch::aarch64::*;
use std::hint::black_box;

pub(super) fn cpu_name() -> CpuName {
    #[cfg(target_os = "macos")]
    {
        if let Some(brand) = super::macos::brand_string() {
            let vendor = if brand.starts_with("Apple") {
                "Apple"
            } else {
                "unknown"
            };
            return CpuName {
                vendor: vendor.to_string(),
                microarch: super::identify::apple_cores(&brand).map(String::from),
                model: brand,
            };
        }
    }
    #[cfg(target_os = "linux")]
    {
        if let Some((imp, part)) = linux_midr() {
            let on_aws = super::linux::read_trimmed("/sys/devices/virtual/dmi/id/sys_vendor")
                .is_some_and(|v| v.contains("Amazon"));
            let ids = format!("implementer {imp:#04x}, part {part:#05x}");
            return CpuName {
                vendor: super::midr::vendor(imp),
                model: super::midr::model(imp, part, on_aws),
                microarch: Some(match super::midr::core(imp, part) {
                    Some(core) => format!("{core} ({ids})"),
                    None => ids,
                }),
            };
        }
    }
    CpuName {
        vendor: "unknown".to_string(),
        model: "unknown".to_string(),
        microarch: None,
    }
}

/// (implementer, part) of cpu0: from sysfs `midr_el1`, else from `/proc/cpuinfo`.
#[cfg(target_os = "linux")]
fn linux_midr() -> Option<(u8, u16)> {
    let sysfs = "/sys/devices/system/cpu/cpu0/regs/identification/midr_el1";
    if let Some(s) = super::linux::read_trimmed(sysfs) {
        if let Ok(v) = u64::from_str_radix(s.trim_start_matches("0x"), 16) {
            return Some(super::midr::decode(v));
        }
    }
    super::midr::from_cpuinfo(&std::fs::read_to_string("/proc/cpuinfo").ok()?)
}

/// The CPU instructions give no cache sizes we can read from user space; sysfs (Linux) or
/// sysctl (macOS) fill them in `super::caches`.
pub(super) fn caches() -> Caches {
    Caches::default()
}

pub(super) const FEATURES: &[&str] = &["neon", "fp16", "dotprod", "bf16", "i8mm", "sve", "sve2"];

pub(super) fn features() -> Vec<&'static str> {
    let present = [
        std::arch::is_aarch64_feature_detected!("neon"),
        std::arch::is_aarch64_feature_detected!("fp16"),
        std::arch::is_aarch64_feature_detected!("dotprod"),
        std::arch::is_aarch64_feature_detected!("bf16"),
        std::arch::is_aarch64_feature_detected!("i8mm"),
        std::arch::is_aarch64_feature_detected!("sve"),
        std::arch::is_aarch64_feature_detected!("sve2"),
    ];
    FEATURES
        .iter()
        .zip(present)
        .filter_map(|(&n, p)| p.then_some(n))
        .collect()
}

// FMA peak kernels: 16 independent 128-bit FMA chains (of 32 NEON registers). Current Arm
// cores have 2 to 4 FMA pipes with a 4-cycle latency, so 16 chains keep 4 pipes busy.
// NEON is part of the aarch64 baseline, so these need no runtime check.

pub(super) fn fma_kernels() -> (FmaKernel, FmaKernel) {
    (
        FmaKernel {
            isa: "neon",
            flops_per_iter: (16 * 4 * 2) as f64,
            run: fma_f32_neon,
        },
        FmaKernel {
            isa: "neon",
            flops_per_iter: (16 * 2 * 2) as f64,
            run: fma_f64_neon,
        },
    )
}

macro_rules! fma_loop {
    ($iters:expr, $e:ty, $lanes:literal, $dup:ident, $fma:ident, $st:ident) => {{
        // SAFETY (whole block): NEON is enabled on every aarch64 target; the store writes one
        // vector into an array of exactly that many lanes.
        #[allow(unused_unsafe)]
        unsafe {
            let a = $dup(black_box(0.999 as $e));
            let b = $dup(black_box(0.001 as $e));
            let mut acc = [$dup(black_box(0.5 as $e)); 16];
            for _ in 0..$iters {
                for x in acc.iter_mut() {
                    // vfmaq(c, a, b) = c + a*b: acc = b + acc*a
                    *x = $fma(b, *x, a);
                }
            }
            let mut sum = 0.0f64;
            for x in acc {
                let mut lanes = [0.0 as $e; $lanes];
                $st(lanes.as_mut_ptr(), x);
                sum += lanes.iter().map(|&l| l as f64).sum::<f64>();
            }
            sum
        }
    }};
}

fn fma_f32_neon(iters: u64) -> f64 {
    fma_loop!(iters, f32, 4, vdupq_n_f32, vfmaq_f32, vst1q_f32)
}

fn fma_f64_neon(iters: u64) -> f64 {
    fma_loop!(iters, f64, 2, vdupq_n_f64, vfmaq_f64, vst1q_f64)
}
