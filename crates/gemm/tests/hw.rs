//! Hardware detection on the machine the tests run on: every field filled, the features the
//! same as the standard library's detection, and a plausible FMA peak. Runs in well under a
//! second (one `measure_peak`).

use ferrogpt_gemm::hw;

#[test]
fn detect_fills_every_field() {
    let info = hw::detect();
    assert_eq!(info.arch, std::env::consts::ARCH);
    assert_eq!(info.os, std::env::consts::OS);
    assert!(!info.vendor.is_empty() && !info.model.is_empty());
    assert_eq!(
        info.logical_cores,
        std::thread::available_parallelism().unwrap().get()
    );
    if cfg!(target_arch = "x86_64") {
        assert_ne!(
            info.vendor, "unknown",
            "CPUID gives a vendor on every x86_64 CPU"
        );
        assert_ne!(info.model, "unknown", "{info:?}");
        assert!(!info.features.is_empty(), "x86_64 always has SSE2");
        assert!(info.has("sse2"));
    }
    if cfg!(any(target_arch = "x86_64", target_arch = "aarch64")) {
        assert!(info.microarch.is_some() || cfg!(target_os = "macos"));
    }
    // Every reported feature is one this module documents, in the documented order.
    let positions: Vec<usize> = info
        .features
        .iter()
        .map(|f| {
            hw::FEATURES
                .iter()
                .position(|g| g == f)
                .expect("undocumented feature")
        })
        .collect();
    assert!(
        positions.windows(2).all(|w| w[0] < w[1]),
        "{:?}",
        info.features
    );
    // No driver, or a driver with its devices: either way the report says something.
    assert!(info.cuda.note.is_some() || !info.cuda.devices.is_empty());
}

#[test]
fn caches_are_plausible_and_cached() {
    let c = hw::caches();
    assert_eq!(c, hw::caches());
    assert_eq!(c, hw::detect().caches);
    if cfg!(all(
        target_os = "linux",
        any(target_arch = "x86_64", target_arch = "aarch64")
    )) {
        let l1d = c.l1d.expect("L1d size");
        let l2 = c.l2.expect("L2 size");
        assert!((8 << 10..=1 << 20).contains(&l1d), "L1d {l1d}");
        assert!(l2 > l1d, "L2 {l2} <= L1d {l1d}");
        if let Some(l3) = c.l3 {
            assert!(l3 >= l2, "L3 {l3} < L2 {l2}");
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[test]
fn x86_features_agree_with_std() {
    let info = hw::detect();
    macro_rules! same {
        ($($f:tt),*) => {$(
            assert_eq!(info.has($f), is_x86_feature_detected!($f), "feature {}", $f);
        )*};
    }
    same!(
        "sse",
        "sse2",
        "sse3",
        "ssse3",
        "sse4.1",
        "sse4.2",
        "avx",
        "avx2",
        "fma",
        "avx512f",
        "avx512bw",
        "avx512vl",
        "avx512vnni",
        "avx512bf16",
        "avx512fp16"
    );
    // AMX is not in stable `is_x86_feature_detected!`; Linux's own flags are the reference.
    if let Ok(cpuinfo) = std::fs::read_to_string("/proc/cpuinfo") {
        let flags = cpuinfo
            .lines()
            .find(|l| l.starts_with("flags"))
            .unwrap_or("");
        let flag = |f: &str| flags.split_whitespace().any(|x| x == f);
        assert_eq!(info.has("amx-tile"), flag("amx_tile"));
        assert_eq!(info.has("amx-bf16"), flag("amx_bf16"));
        assert_eq!(info.has("amx-int8"), flag("amx_int8"));
    }
}

#[test]
fn peak_is_positive_and_plausible() {
    let p = hw::measure_peak();
    assert_eq!(p.threads, hw::logical_cores());
    for (name, g) in [
        ("f32 1 core", p.f32_1core),
        ("f32 all", p.f32_all),
        ("f64 1 core", p.f64_1core),
        ("f64 all", p.f64_all),
    ] {
        // Over 2 TFLOPS per core would mean the loop was optimised away.
        assert!(g.is_finite() && g > 0.1, "{name}: {g} GFLOPS");
        assert!(g < 2000.0 * p.threads as f64, "{name}: {g} GFLOPS");
    }
    #[cfg(target_arch = "x86_64")]
    if is_x86_feature_detected!("avx512f") {
        assert_eq!(p.isa, "avx512f");
    }
    let text = hw::render_text(&hw::detect(), Some(&p));
    assert!(text.contains("peak f32") && text.contains(p.isa), "{text}");
    // On one thread the "all" figure is a one-core figure (within the noise of a busy VM).
    let one = hw::measure_peak_on(1);
    assert_eq!(one.threads, 1);
    assert!(one.f32_all > 0.1 && one.f32_all < 2000.0, "{}", one.f32_all);
    assert!(
        one.f32_all < 1.6 * one.f32_1core,
        "{} vs {}",
        one.f32_all,
        one.f32_1core
    );
}

#[test]
fn text_report_has_one_line_per_fact() {
    let info = hw::detect();
    let text = hw::render_text(&info, None);
    for label in [
        "arch", "vendor", "model", "cores", "caches", "features", "peak", "cuda",
    ] {
        assert!(
            text.lines().any(|l| l.starts_with(label)),
            "no '{label}' line in\n{text}"
        );
    }
    assert!(text.contains(&info.model));
    assert!(text.contains("not measured"));
}
