//! Byte counts for people: 49152 -> "48 KiB", for the reports of a machine's caches and
//! memory: this crate's (`ferrogpt info`), ferrogpt-wgpu's adapter limits (as
//! `ferrogpt_gemm::hw::fmt_bytes`) and ferrogpt-report's (the report of saved results), which
//! compiles this file by path so that it keeps depending on serde only.

/// 49152 -> "48 KiB", 2097152 -> "2 MiB"; one decimal when not whole.
pub fn fmt_bytes(b: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if v.fract() == 0.0 {
        format!("{v:.0} {}", UNITS[u])
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_are_readable() {
        assert_eq!(fmt_bytes(49152), "48 KiB");
        assert_eq!(fmt_bytes(2 << 20), "2 MiB");
        assert_eq!(fmt_bytes(107520 << 10), "105 MiB");
        assert_eq!(fmt_bytes(1536), "1.5 KiB");
        assert_eq!(fmt_bytes(12), "12 B");
    }
}
