//! The seed project's kinds of machine, recognised from recorded `/proc/cpuinfo`, `lscpu` and
//! `sysctl` outputs (tests/fixtures/hw, written from public facts: see its README).

use ferrogpt_gemm::hw::{identify, CpuId};
use std::path::PathBuf;

fn read(name: &str) -> CpuId {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/hw")
        .join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{name}: {e}"));
    identify(&text).unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// (file, source, vendor, recognised name, microarch, features that must be there, features
/// that must not).
#[allow(clippy::type_complexity)]
const CASES: &[(&str, &str, &str, &str, Option<&str>, &[&str], &[&str])] = &[
    (
        "graviton2-c6g-cpuinfo.txt",
        "/proc/cpuinfo",
        "Arm",
        "Arm Neoverse N1 (the core of AWS Graviton 2)",
        Some("Neoverse N1"),
        &["neon", "fp16", "dotprod"],
        &["sve", "bf16"],
    ),
    (
        "graviton2-c6g-lscpu.txt",
        "lscpu",
        "Arm",
        "AWS Graviton 2 (Neoverse N1)",
        Some("Neoverse N1"),
        &["neon", "dotprod"],
        &["sve"],
    ),
    (
        "graviton3-c7g-cpuinfo.txt",
        "/proc/cpuinfo",
        "Arm",
        "Arm Neoverse V1 (the core of AWS Graviton 3)",
        Some("Neoverse V1"),
        &["neon", "sve", "bf16", "i8mm"],
        &["sve2"],
    ),
    (
        "graviton3-c7g-lscpu.txt",
        "lscpu",
        "Arm",
        "AWS Graviton 3 (Neoverse V1)",
        Some("Neoverse V1"),
        &["sve", "bf16"],
        &["sve2"],
    ),
    (
        "graviton4-c8g-cpuinfo.txt",
        "/proc/cpuinfo",
        "Arm",
        "Arm Neoverse V2 (the core of AWS Graviton 4)",
        Some("Neoverse V2"),
        &["sve", "sve2", "bf16", "i8mm"],
        &[],
    ),
    (
        "graviton4-c8g-lscpu.txt",
        "lscpu",
        "Arm",
        "AWS Graviton 4 (Neoverse V2)",
        Some("Neoverse V2"),
        &["sve2"],
        &[],
    ),
    (
        "apple-m1-sysctl.txt",
        "sysctl",
        "Apple",
        "Apple M1",
        Some("Firestorm + Icestorm"),
        &["neon", "fp16", "dotprod"],
        &["bf16", "i8mm", "sme"],
    ),
    (
        "apple-m2-pro-sysctl.txt",
        "sysctl",
        "Apple",
        "Apple M2 Pro",
        Some("Avalanche + Blizzard"),
        &["bf16", "i8mm"],
        &["sme"],
    ),
    (
        "apple-m3-max-sysctl.txt",
        "sysctl",
        "Apple",
        "Apple M3 Max",
        Some("Everest + Sawtooth"),
        &["bf16", "i8mm"],
        &["sme"],
    ),
    (
        "apple-m4-sysctl.txt",
        "sysctl",
        "Apple",
        "Apple M4",
        None,
        &["bf16", "i8mm", "sme"],
        &[],
    ),
    (
        "intel-mac-coffee-lake-sysctl.txt",
        "sysctl",
        "Intel",
        "Intel Kaby Lake / Coffee Lake",
        Some("Kaby Lake / Coffee Lake"),
        &["avx", "avx2", "fma", "sse4.2"],
        &["avx512f"],
    ),
    (
        "amd-zen1-naples-m5a-cpuinfo.txt",
        "/proc/cpuinfo",
        "AMD",
        "AMD Zen (Naples)",
        Some("Zen"),
        &["avx2", "fma"],
        &["avx512f"],
    ),
    (
        "amd-zen2-rome-c5a-lscpu.txt",
        "lscpu",
        "AMD",
        "AMD Zen 2 (Rome)",
        Some("Zen 2"),
        &["avx2"],
        &["avx512f"],
    ),
    (
        "amd-zen3-milan-m6a-cpuinfo.txt",
        "/proc/cpuinfo",
        "AMD",
        "AMD Zen 3 (Milan)",
        Some("Zen 3"),
        &["avx2", "fma"],
        &["avx512f"],
    ),
    (
        "amd-zen4-genoa-m7a-lscpu.txt",
        "lscpu",
        "AMD",
        "AMD Zen 4 (Genoa)",
        Some("Zen 4"),
        &["avx512f", "avx512bf16", "avx512vnni"],
        &["amx-tile"],
    ),
    (
        "amd-zen4-desktop-cpuinfo.txt",
        "/proc/cpuinfo",
        "AMD",
        "AMD Zen 4",
        Some("Zen 4"),
        &["avx512f"],
        &[],
    ),
    (
        "amd-zen5-turin-m8a-cpuinfo.txt",
        "/proc/cpuinfo",
        "AMD",
        "AMD Zen 5 (Turin)",
        Some("Zen 5"),
        &["avx512f", "avx512bf16"],
        &["amx-tile"],
    ),
    (
        "intel-skylake-sp-m5-cpuinfo.txt",
        "/proc/cpuinfo",
        "Intel",
        "Intel Skylake-SP",
        Some("Skylake-SP"),
        &["avx512f", "avx512bw", "avx512vl"],
        &["avx512vnni"],
    ),
    (
        "intel-cascade-lake-m5-lscpu.txt",
        "lscpu",
        "Intel",
        "Intel Cascade Lake",
        Some("Cascade Lake"),
        &["avx512f", "avx512vnni"],
        &["avx512bf16"],
    ),
    (
        "intel-ice-lake-m6i-cpuinfo.txt",
        "/proc/cpuinfo",
        "Intel",
        "Intel Ice Lake-SP",
        Some("Ice Lake-SP"),
        &["avx512vnni"],
        &["amx-tile"],
    ),
    (
        "intel-sapphire-rapids-m7i-lscpu.txt",
        "lscpu",
        "Intel",
        "Intel Sapphire Rapids",
        Some("Sapphire Rapids"),
        &["amx-tile", "amx-bf16", "amx-int8", "avx512fp16"],
        &[],
    ),
    (
        "intel-emerald-rapids-cpuinfo.txt",
        "/proc/cpuinfo",
        "Intel",
        "Intel Emerald Rapids",
        Some("Emerald Rapids"),
        &["amx-tile", "amx-bf16"],
        &[],
    ),
    (
        "intel-granite-rapids-m8i-cpuinfo.txt",
        "/proc/cpuinfo",
        "Intel",
        "Intel Granite Rapids",
        Some("Granite Rapids"),
        &["amx-tile", "amx-bf16"],
        &[],
    ),
];

#[test]
fn every_recorded_machine_is_recognised() {
    for &(file, source, vendor, name, core, with, without) in CASES {
        let id = read(file);
        assert_eq!(id.source, source, "{file}");
        assert_eq!(id.vendor, vendor, "{file}");
        assert_eq!(id.name, name, "{file}");
        assert_eq!(id.microarch.as_deref(), core, "{file}");
        for f in with {
            assert!(
                id.features.contains(f),
                "{file}: {f} missing from {:?}",
                id.features
            );
        }
        for f in without {
            assert!(!id.features.contains(f), "{file}: {f} in {:?}", id.features);
        }
        assert!(id.logical_cores.is_some_and(|n| n > 0), "{file}");
    }
}

#[test]
fn every_fixture_has_a_case() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/hw");
    let mut files: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".txt"))
        .collect();
    files.sort();
    for f in &files {
        assert!(CASES.iter().any(|c| c.0 == f), "{f} has no expectation");
    }
    assert_eq!(files.len(), CASES.len());
}

#[test]
fn models_and_core_counts_come_from_the_text() {
    let spr = read("intel-sapphire-rapids-m7i-lscpu.txt");
    assert_eq!(spr.model, "Intel(R) Xeon(R) Platinum 8488C");
    assert_eq!(spr.logical_cores, Some(4));
    assert_eq!(spr.arch, "x86_64");
    let g2 = read("graviton2-c6g-cpuinfo.txt");
    assert_eq!(g2.logical_cores, Some(2));
    assert_eq!(g2.arch, "aarch64");
    let m2 = read("apple-m2-pro-sysctl.txt");
    assert_eq!(m2.logical_cores, Some(12));
    assert_eq!(m2.model, "Apple M2 Pro");
}
