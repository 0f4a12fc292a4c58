//! `ferrogpt info --identify FILE`: another machine recognised from its recorded
//! `/proc/cpuinfo`, `lscpu` or `sysctl` output (tests/fixtures/hw); bad files in one line.

mod common;

use common::{fails_with, fixture, ok, s, tmp};

#[test]
fn recorded_machines_are_named() {
    for (file, name) in [
        ("hw/graviton3-c7g-lscpu.txt", "AWS Graviton 3 (Neoverse V1)"),
        ("hw/apple-m2-pro-sysctl.txt", "Apple M2 Pro"),
        (
            "hw/intel-sapphire-rapids-m7i-lscpu.txt",
            "Intel Sapphire Rapids",
        ),
        ("hw/amd-zen4-genoa-m7a-lscpu.txt", "AMD Zen 4 (Genoa)"),
    ] {
        let o = ok(&["info", "--identify", s(&fixture(file))]);
        let first = o.stdout.lines().next().unwrap_or_default();
        assert_eq!(first, format!("{:<12} {name}", "recognised"), "{file}");
    }
    let o = ok(&[
        "info",
        "--identify",
        s(&fixture("hw/graviton4-c8g-cpuinfo.txt")),
        "--format",
        "json",
    ]);
    let v: serde_json::Value = serde_json::from_str(&o.stdout).unwrap();
    assert_eq!(v["microarch"], "Neoverse V2");
    assert_eq!(v["source"], "/proc/cpuinfo");
    assert!(v["features"]
        .as_array()
        .unwrap()
        .contains(&serde_json::json!("sve2")));
}

#[test]
fn unreadable_descriptions_are_one_line() {
    let dir = tmp("identify");
    let junk = dir.join("junk.txt");
    std::fs::write(&junk, "hello\nworld\n").unwrap();
    fails_with(
        &["info", "--identify", s(&junk)],
        "not /proc/cpuinfo, lscpu or sysctl output",
    );
    let half = dir.join("half.txt");
    std::fs::write(&half, "processor : 0\nvendor_id : GenuineIntel\n").unwrap();
    fails_with(&["info", "--identify", s(&half)], "without cpu family");
    fails_with(
        &["info", "--identify", s(&dir.join("missing.txt"))],
        "cannot read",
    );
    let _ = std::fs::remove_dir_all(&dir);
}
