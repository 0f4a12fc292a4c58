//! # Hardware detection: what this machine is and how fast it can multiply-add
//!
//! [`detect`] describes the machine without running anything expensive: architecture, vendor and
//! model, logical cores, cache sizes, the ISA features the matmul ladder cares about, and the
//! CUDA GPUs a driver reports. [`measure_peak`] runs a short FMA microbenchmark (~0.3 s) for the
//! single-core and all-core peak in f32 and f64, the "100%" of `ferrogpt bench matmul`.
//! [`caches`] is the cache-size query the blocked and SIMD levels use for their block sizes; it
//! is computed once and cached.
//!
//! Where the facts come from:
//!
//! | fact        | x86_64                                   | aarch64                                  |
//! |-------------|------------------------------------------|------------------------------------------|
//! | vendor/model| CPUID leaf 0, brand string 0x80000002-4  | Linux: MIDR (sysfs `midr_el1` or `/proc/cpuinfo`); macOS: `sysctl machdep.cpu.brand_string` |
//! | caches      | CPUID leaf 4 (Intel), 0x8000001D (AMD)   | Linux sysfs; macOS `sysctl hw.*cachesize`|
//! | features    | `is_x86_feature_detected!`, CPUID+XCR0 for AMX | `is_aarch64_feature_detected!`     |
//!
//! On Linux, `/sys/devices/system/cpu/cpu0/cache/index*/` fills any cache level the CPU
//! instructions did not give. Other architectures get a best-effort report (sysfs, a portable
//! benchmark loop). CUDA is found by loading `libcuda.so.1` at run time (`cuda`); no driver is a
//! line in the report, never an error.
//!
//! [`identify()`] recognises a CPU from recorded `/proc/cpuinfo`, `lscpu` or `sysctl` text (a
//! machine described from elsewhere), with the same tables as the live detection.
//!
//! All unsafe and platform code lives in this folder's platform files: `x86.rs`, `aarch64.rs`,
//! `linux.rs`, `macos.rs`, `cuda.rs`.

use serde::Serialize;
use std::fmt::Write as _;
use std::sync::OnceLock;

pub use bytes::fmt_bytes;

mod bytes;
mod cuda;
pub mod identify;
mod midr;
mod peak;

#[cfg(target_arch = "aarch64")]
mod aarch64;
#[cfg(target_os = "linux")]
mod linux;
#[cfg(target_os = "macos")]
mod macos;
#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
mod other;
#[cfg(target_arch = "x86_64")]
mod x86;

#[cfg(target_arch = "aarch64")]
use aarch64 as arch;
#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
use other as arch;
#[cfg(target_arch = "x86_64")]
use x86 as arch;

pub use cuda::{CudaDevice, CudaReport};
pub use identify::{identify, CpuId, IdentifyError};
pub use peak::{measure_peak, measure_peak_on, Peak};

/// A description of this machine. Built by [`detect`]; serialises to the JSON of
/// `ferrogpt info --format json`.
#[derive(Clone, Debug, Serialize)]
pub struct HwInfo {
    /// `std::env::consts::ARCH`: "x86_64", "aarch64", ...
    pub arch: &'static str,
    /// `std::env::consts::OS`: "linux", "macos", ...
    pub os: &'static str,
    /// The CPU vendor: "Intel", "AMD", "Arm", "Apple", ... (the raw CPUID vendor string when
    /// unknown, "unknown" when nothing says).
    pub vendor: String,
    /// The model name: the CPUID brand string, the macOS brand string, or a name derived from the
    /// ARM MIDR ("AWS Graviton 3 (Neoverse V1)"). "unknown" when nothing says.
    pub model: String,
    /// The core design when it can be named from the CPU's identification registers
    /// ("Sapphire Rapids", "Neoverse V1"), with the raw identification numbers.
    pub microarch: Option<String>,
    /// Logical cores this process may use (`std::thread::available_parallelism`).
    pub logical_cores: usize,
    /// Cache sizes seen by core 0.
    pub caches: Caches,
    /// The ISA features present, by their `is_x86_feature_detected!` /
    /// `is_aarch64_feature_detected!` names, in a fixed order (see [`FEATURES`]).
    pub features: Vec<&'static str>,
    /// CUDA driver and devices, or why there are none.
    pub cuda: CudaReport,
}

impl HwInfo {
    /// Whether the feature named as in [`FEATURES`] is present.
    pub fn has(&self, feature: &str) -> bool {
        self.features.contains(&feature)
    }
}

/// Every feature this module reports on the current architecture, in report order. A feature
/// of [`HwInfo::features`] is always one of these.
pub const FEATURES: &[&str] = arch::FEATURES;

/// Cache sizes in bytes, as seen by core 0. `None` when the platform did not say.
///
/// `l1d` and `l2` are per core on every CPU we know; `l3` is the whole cache that core 0
/// shares (usually the socket's or the CCX's), not a per-core slice.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Caches {
    /// Level 1 data cache of one core.
    pub l1d: Option<usize>,
    /// Level 2 cache of one core.
    pub l2: Option<usize>,
    /// The last-level cache core 0 shares.
    pub l3: Option<usize>,
}

impl Caches {
    /// Fill the levels `self` lacks from `other`.
    fn or(self, other: Caches) -> Caches {
        Caches {
            l1d: self.l1d.or(other.l1d),
            l2: self.l2.or(other.l2),
            l3: self.l3.or(other.l3),
        }
    }
}

/// The CPU's cache sizes, detected on the first call and cached for the life of the process.
/// Cheap after the first call; safe to call from any thread.
pub fn caches() -> Caches {
    static CACHES: OnceLock<Caches> = OnceLock::new();
    *CACHES.get_or_init(|| {
        let c = arch::caches();
        #[cfg(target_os = "linux")]
        let c = c.or(linux::caches());
        #[cfg(target_os = "macos")]
        let c = c.or(macos::caches());
        c
    })
}

/// Vendor, model and microarchitecture, as the platform module found them.
pub(crate) struct CpuName {
    pub vendor: String,
    pub model: String,
    pub microarch: Option<String>,
}

/// Describe this machine. Cheap: no benchmark (see [`measure_peak`]); the CUDA query loads the
/// driver once per process if there is one. Never fails: what cannot be found reads "unknown",
/// `None` or an empty list.
pub fn detect() -> HwInfo {
    let name = arch::cpu_name();
    HwInfo {
        arch: std::env::consts::ARCH,
        os: std::env::consts::OS,
        vendor: name.vendor,
        model: name.model,
        microarch: name.microarch,
        logical_cores: logical_cores(),
        caches: caches(),
        features: arch::features(),
        cuda: cuda::detect(),
    }
}

/// Logical cores this process may use; 1 when the OS will not say.
pub fn logical_cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// The human-readable report of `ferrogpt info`: one labelled line per fact, and the peak
/// lines when a measurement is given.
pub fn render_text(hw: &HwInfo, peak: Option<&Peak>) -> String {
    let mut s = String::new();
    let mut line = |label: &str, value: &str| {
        let _ = writeln!(s, "{label:<12} {value}");
    };
    line("arch", &format!("{} ({})", hw.arch, hw.os));
    line("vendor", &hw.vendor);
    line("model", &hw.model);
    if let Some(m) = &hw.microarch {
        line("microarch", m);
    }
    line("cores", &format!("{} logical", hw.logical_cores));
    let size = |b: Option<usize>| b.map_or_else(|| "?".to_string(), |b| fmt_bytes(b as u64));
    line(
        "caches",
        &format!(
            "L1d {}, L2 {}, L3 {}",
            size(hw.caches.l1d),
            size(hw.caches.l2),
            size(hw.caches.l3)
        ),
    );
    let features = if hw.features.is_empty() {
        "none detected".to_string()
    } else {
        hw.features.join(" ")
    };
    line("features", &features);
    match peak {
        Some(p) => {
            let per = |one: f64, all: f64| {
                format!(
                    "{one:7.1} GFLOPS 1 core, {all:7.1} GFLOPS {} threads",
                    p.threads
                )
            };
            line(
                "peak f32",
                &format!("{}  ({})", per(p.f32_1core, p.f32_all), p.isa),
            );
            line(
                "peak f64",
                &format!("{}  ({})", per(p.f64_1core, p.f64_all), p.isa),
            );
        }
        None => line("peak", "not measured"),
    }
    match (&hw.cuda.note, hw.cuda.devices.is_empty()) {
        (Some(note), _) => line("cuda", note),
        (None, true) => line("cuda", "no devices"),
        (None, false) => {}
    }
    if let Some(v) = &hw.cuda.driver_version {
        line("cuda driver", v);
    }
    for d in &hw.cuda.devices {
        line(
            &format!("gpu {}", d.index),
            &format!(
                "{}, {}, compute {}.{}{}",
                d.name,
                fmt_bytes(d.total_mem_bytes),
                d.compute_major,
                d.compute_minor,
                d.multiprocessors
                    .map_or_else(String::new, |n| format!(", {n} SMs")),
            ),
        );
    }
    s
}
