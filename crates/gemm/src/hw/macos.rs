//! macOS: the brand string and cache sizes from `sysctl`.
//!
//! On Apple silicon the caches differ between performance and efficiency cores; we report the
//! performance cores' (`hw.perflevel0.*`), which is where a GEMM's threads run fastest.

use super::Caches;
use std::process::Command;

/// `sysctl -n NAME`, trimmed; `None` when the command fails or the name is unknown.
pub(super) fn sysctl(name: &str) -> Option<String> {
    let out = Command::new("sysctl").arg("-n").arg(name).output().ok()?;
    if !out.status.success() {
        return None;
    }
    let s = String::from_utf8_lossy(&out.stdout).trim().to_string();
    (!s.is_empty()).then_some(s)
}

fn sysctl_bytes(names: &[&str]) -> Option<usize> {
    names
        .iter()
        .find_map(|n| sysctl(n)?.parse::<usize>().ok())
        .filter(|&b| b > 0)
}

pub(super) fn caches() -> Caches {
    Caches {
        l1d: sysctl_bytes(&["hw.perflevel0.l1dcachesize", "hw.l1dcachesize"]),
        l2: sysctl_bytes(&["hw.perflevel0.l2cachesize", "hw.l2cachesize"]),
        l3: sysctl_bytes(&["hw.l3cachesize"]),
    }
}

/// `machdep.cpu.brand_string`: "Apple M2 Pro", "Intel(R) Core(TM) i9-9880H CPU @ 2.30GHz".
pub(super) fn brand_string() -> Option<String> {
    sysctl("machdep.cpu.brand_string")
}
