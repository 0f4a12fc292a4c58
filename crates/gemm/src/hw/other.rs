//! Architectures without a dedicated module: a best-effort report (the Linux `model name` /
//! `uarch` / `isa` lines when present) and the portable peak kernels.

use super::peak::FmaKernel;
use super::{Caches, CpuName};

pub(super) fn cpu_name() -> CpuName {
    #[cfg(target_os = "linux")]
    let (vendor, model) = (
        super::linux::cpuinfo_field("vendor_id")
            .or_else(|| super::linux::cpuinfo_field("mvendorid")),
        super::linux::cpuinfo_field("model name").or_else(|| super::linux::cpuinfo_field("uarch")),
    );
    #[cfg(not(target_os = "linux"))]
    let (vendor, model): (Option<String>, Option<String>) = (None, None);
    CpuName {
        vendor: vendor.unwrap_or_else(|| "unknown".to_string()),
        model: model.unwrap_or_else(|| "unknown".to_string()),
        microarch: None,
    }
}

pub(super) fn caches() -> Caches {
    Caches::default()
}

pub(super) const FEATURES: &[&str] = &[];

pub(super) fn features() -> Vec<&'static str> {
    Vec::new()
}

pub(super) fn fma_kernels() -> (FmaKernel, FmaKernel) {
    super::peak::portable_kernels()
}
