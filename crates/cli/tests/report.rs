//! Results that travel (issue 21): `bench ... --save`, the result schema's round trip and
//! refusals, `ferrogpt report` merging two machines of different kinds, and the page in a
//! headless Chromium.
//!
//! The two machines' results are written here, from the schema's types: a Graviton 3 (aarch64,
//! NEON, no GPU) and a Sapphire Rapids host with an H100 (AMX, a CUDA ladder, a GPU training
//! engine). Their figures are made up for the test (round numbers whose ratios are easy to
//! check), not measurements.

mod common;

use common::{fails_with_all, ok, run, s, tmp, verse_file};
use ferrogpt_report::schema::{
    Caches, Cuda, CudaDevice, MatmulFigures, MatmulRow, Peak, TrainFigures, TrainRow,
};
use ferrogpt_report::{Figures, Machine, ResultFile, SCHEMA, SCHEMA_VERSION};
use std::path::Path;
use std::process::Command;

fn machine(arch: &str, vendor: &str, model: &str, core: &str, gpu: Option<&str>) -> Machine {
    Machine {
        arch: arch.into(),
        os: "linux".into(),
        vendor: vendor.into(),
        model: model.into(),
        microarch: Some(core.into()),
        logical_cores: 8,
        caches: Caches {
            l1d: Some(64 << 10),
            l2: Some(1 << 20),
            l3: Some(32 << 20),
        },
        features: if arch == "aarch64" {
            vec!["neon".into(), "bf16".into(), "sve".into()]
        } else {
            vec!["avx512f".into(), "amx-tile".into(), "amx-bf16".into()]
        },
        cuda: Cuda {
            driver_version: gpu.map(|_| "13.0".into()),
            devices: gpu
                .map(|name| CudaDevice {
                    index: 0,
                    name: name.into(),
                    total_mem_bytes: 80 << 30,
                    compute_major: 9,
                    compute_minor: 0,
                    multiprocessors: Some(132),
                })
                .into_iter()
                .collect(),
            note: gpu.is_none().then(|| "no CUDA driver found".into()),
        },
        peak: Some(Peak {
            isa: if arch == "aarch64" { "neon" } else { "avx512f" }.into(),
            threads: 8,
            f32_1core: 100.0,
            f32_all: 800.0,
            f64_1core: 50.0,
            f64_all: 400.0,
        }),
        ..Default::default()
    }
}

fn row(level: &str, peer: bool, n: usize, gflops: f64) -> MatmulRow {
    MatmulRow {
        level: level.into(),
        peer,
        m: n,
        n,
        k: n,
        seconds: Some(2.0 * (n as f64).powi(3) / gflops / 1e9),
        gflops: Some(gflops),
        pct_of_peak: Some(gflops / 8.0),
        speedup_vs_naive: None,
        pct_cublas_f32: None,
        pct_cublas_bf16: None,
        max_rel_err: Some(1e-6),
        skipped: None,
    }
}

fn result(host: &str, date: &str, machine: Machine, figures: Figures) -> ResultFile {
    ResultFile {
        schema: SCHEMA.into(),
        schema_version: SCHEMA_VERSION,
        ferrogpt_version: "0.1.0".into(),
        commit: "abc1234".into(),
        date: date.into(),
        host: host.into(),
        command: vec!["ferrogpt".into(), "bench".into(), "matmul".into()],
        machine,
        figures,
    }
}

fn cpu_matmul(rows: Vec<MatmulRow>, name: &str) -> Figures {
    Figures::Matmul {
        matmul: MatmulFigures {
            device: "cpu".into(),
            device_name: name.into(),
            dtype: "f32".into(),
            threads: Some(8),
            peak_gflops: Some(800.0),
            rows,
        },
    }
}

fn train_row(engine: &str, tokens_per_sec: f64) -> TrainRow {
    TrainRow {
        engine: engine.into(),
        peer: false,
        threads: 8,
        step_s_median: 768.0 / tokens_per_sec,
        step_s_min: 700.0 / tokens_per_sec,
        tokens_per_sec,
        model_gflops: tokens_per_sec * 1e-3,
        mfu: None,
        peak_tflops: None,
        final_loss: 3.5,
        phases_median: None,
        peer_source: None,
    }
}

fn train(device: &str, dtype: &str, rows: Vec<TrainRow>) -> Figures {
    Figures::Train {
        train: TrainFigures {
            preset: "shakespeare-cpu".into(),
            device: device.into(),
            dtype: dtype.into(),
            batch_size: 12,
            seq_len: 64,
            steps: 20,
            warmup: 3,
            rows,
        },
    }
}

/// Writes the two machines' result files into `dir`; returns their count.
fn write_two_machines(dir: &Path) -> usize {
    let graviton = || {
        machine(
            "aarch64",
            "Arm",
            "AWS Graviton 3 (Neoverse V1)",
            "Neoverse V1",
            None,
        )
    };
    let spr = || {
        machine(
            "x86_64",
            "Intel",
            "Intel(R) Xeon(R) Platinum 8480+",
            "Sapphire Rapids",
            Some("NVIDIA H100 80GB HBM3"),
        )
    };
    let files = [
        result(
            "graviton3",
            "2026-12-07T10:00:00Z",
            graviton(),
            cpu_matmul(
                vec![
                    row("naive", false, 256, 2.0),
                    row("naive", false, 512, 2.0),
                    row("simd", false, 256, 90.0),
                    row("simd", false, 512, 100.0),
                    row("blas", true, 512, 125.0),
                ],
                "AWS Graviton 3 (Neoverse V1)",
            ),
        ),
        result(
            "sapphire",
            "2026-12-07T11:00:00Z",
            spr(),
            cpu_matmul(
                vec![
                    row("naive", false, 512, 4.0),
                    row("naive", false, 1024, 3.0),
                    row("simd", false, 512, 300.0),
                    row("simd", false, 1024, 350.0),
                    row("amx", false, 512, 1200.0),
                    row("blas", true, 512, 400.0),
                ],
                "Intel(R) Xeon(R) Platinum 8480+",
            ),
        ),
        result(
            "sapphire",
            "2026-12-07T11:05:00Z",
            spr(),
            Figures::Matmul {
                matmul: MatmulFigures {
                    device: "cuda".into(),
                    device_name: "NVIDIA H100 80GB HBM3 (sm_90)".into(),
                    dtype: "mixed".into(),
                    threads: None,
                    peak_gflops: None,
                    rows: vec![
                        MatmulRow {
                            pct_cublas_f32: Some(80.0),
                            ..row("warptile", false, 4096, 40_000.0)
                        },
                        row("cublas-f32", true, 4096, 50_000.0),
                    ],
                },
            },
        ),
        result(
            "graviton3",
            "2026-12-07T10:10:00Z",
            graviton(),
            train("cpu", "fp32", vec![train_row("simd", 10_000.0)]),
        ),
        result(
            "sapphire",
            "2026-12-07T11:10:00Z",
            spr(),
            train(
                "cpu",
                "fp32",
                vec![train_row("simd", 30_000.0), train_row("amx", 40_000.0)],
            ),
        ),
        result(
            "sapphire",
            "2026-12-07T11:20:00Z",
            spr(),
            train(
                "cuda:0",
                "bf16",
                vec![train_row("cuda:0 H100 (bf16)", 400_000.0)],
            ),
        ),
    ];
    for f in &files {
        f.save_in(dir).unwrap();
    }
    files.len()
}

#[test]
fn two_machines_merge_into_one_page() {
    let dir = tmp("merge");
    let results = dir.join("results");
    assert_eq!(write_two_machines(&results), 6);
    let out = dir.join("report");
    let o = ok(&["report", s(&results), "--out", s(&out)]);
    assert!(o.stderr.contains("report of 6 result(s)"), "{}", o.stderr);
    let html = std::fs::read_to_string(out.join("index.html")).unwrap();
    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    for page in [&html, &md] {
        for needle in [
            "graviton3",
            "sapphire",
            "AWS Graviton 3 (Neoverse V1)",
            "Sapphire Rapids",
            "NVIDIA H100 80GB HBM3",
            "Matmul: CPU ladder, f32",
            "Matmul: cuda GPU ladder",
            "Training: shakespeare-cpu, batch 12 × 64",
            "blas (peer)",
            "cublas-f32 (peer)",
            // simd on both machines at their largest common size, 512: 100 and 300 GFLOPS.
            "100 (n=512",
            "300 (n=512",
            // Sapphire over Graviton at the same rung and size.
            "3.00×",
            // naive: 2 against 4 GFLOPS at 512 (sapphire's 1024 is not common).
            "2.00×",
            // Ours over the peer on Graviton: simd 100 / blas 125.
            "0.800×",
            // Sapphire's fastest (amx, 512) over its naive at 512: 1200 / 4.
            "300×",
            // Graviton's fastest (simd at 512) over naive there: 100 / 2.
            "50.0×",
            // Training: sapphire's fastest engine (the GPU's) over its slowest (simd).
            "13.3×",
            "cuda bf16",
        ] {
            assert!(page.contains(needle), "{needle:?} missing from the report");
        }
    }
    // One chart per section with figures (CPU matmul, GPU matmul, training), inline in the
    // page and as files beside the Markdown.
    assert_eq!(html.matches("<svg ").count(), 3);
    let charts: Vec<_> = std::fs::read_dir(out.join("charts")).unwrap().collect();
    assert_eq!(charts.len(), 3);
    for c in ["matmul-cpu-f32-chart", "matmul-cuda-mixed-chart"] {
        let link = format!("charts/{c}.svg");
        assert!(md.contains(&link), "{link} not linked");
        let svg = std::fs::read_to_string(out.join(&link)).unwrap();
        assert!(svg.starts_with("<svg xmlns=\"http://www.w3.org/2000/svg\""));
    }
    // Both machines are series of the CPU chart: one bar per measured (rung, machine).
    let cpu_chart = std::fs::read_to_string(out.join("charts/matmul-cpu-f32-chart.svg")).unwrap();
    assert_eq!(cpu_chart.matches("class=\"bar\"").count(), 7); // naive, simd, blas ×2; amx ×1
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn schema_round_trip() {
    let dir = tmp("roundtrip");
    write_two_machines(&dir);
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        let parsed = ResultFile::from_json(&text).unwrap();
        assert_eq!(parsed.to_json(), text, "{}", path.display());
        n += 1;
    }
    assert_eq!(n, 6);
    // A field a later ferrogpt adds to the machine record survives a read and a write.
    let mut v: serde_json::Value = serde_json::from_str(
        &result(
            "h",
            "2026-12-07T00:00:00Z",
            machine("x86_64", "AMD", "AMD EPYC 9R14", "Zen 4", None),
            cpu_matmul(vec![row("simd", false, 64, 10.0)], "AMD EPYC 9R14"),
        )
        .to_json(),
    )
    .unwrap();
    v["machine"]["numa_nodes"] = serde_json::json!(2);
    v["note_from_the_future"] = serde_json::json!("ignored");
    let parsed = ResultFile::from_json(&v.to_string()).unwrap();
    assert_eq!(parsed.machine.extra["numa_nodes"], serde_json::json!(2));
    assert!(parsed.to_json().contains("\"numa_nodes\": 2"));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bad_files_are_refused_in_one_line() {
    let dir = tmp("refuse");
    let good = dir.join("good");
    write_two_machines(&good);
    let out = dir.join("out");
    let bad = dir.join("bad");
    std::fs::create_dir_all(&bad).unwrap();
    // Graviton's CPU matmul result (it has "gflops" fields to spoil).
    let valid = std::fs::read_dir(&good)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| s(p).contains("matmul-cpu-f32-graviton3"))
        .unwrap();
    let text = std::fs::read_to_string(&valid).unwrap();
    let cases = [
        (
            "truncated.json",
            text[..text.len() / 2].to_string(),
            "not JSON",
        ),
        (
            "future.json",
            text.replace("\"schema_version\": 1", "\"schema_version\": 2"),
            "schema version 2 is newer than this ferrogpt reads (1)",
        ),
        (
            "other.json",
            "{\"schema\": \"someone-else\", \"x\": 1}".to_string(),
            "not a ferrogpt benchmark result",
        ),
        (
            "nomachine.json",
            {
                let mut v: serde_json::Value = serde_json::from_str(&text).unwrap();
                v.as_object_mut().unwrap().remove("machine");
                v.to_string()
            },
            "missing field `machine`",
        ),
        (
            "negative.json",
            text.replacen("\"gflops\": ", "\"gflops\": -", 1),
            "malformed",
        ),
    ];
    for (name, body, why) in &cases {
        let path = bad.join(name);
        std::fs::write(&path, body).unwrap();
        fails_with_all(
            &["report", s(&good), s(&path), "--out", s(&out)],
            &[name, why],
        );
        assert!(
            !out.join("index.html").exists(),
            "{name}: a report was written"
        );
        std::fs::remove_file(&path).unwrap();
    }
    // --skip-invalid: one line per refused file, the report from the rest.
    for (name, body, _) in &cases {
        std::fs::write(bad.join(name), body).unwrap();
    }
    let o = ok(&[
        "report",
        s(&good),
        s(&bad),
        "--out",
        s(&out),
        "--skip-invalid",
    ]);
    assert_eq!(
        o.stderr.lines().filter(|l| l.contains("skipped")).count(),
        cases.len(),
        "{}",
        o.stderr
    );
    assert!(o.stderr.contains("report of 6 result(s)"), "{}", o.stderr);
    // Nothing readable at all, and paths that do not exist.
    let only_bad = run(&["report", s(&bad), "--out", s(&out), "--skip-invalid"]);
    assert_eq!(only_bad.code, 1);
    assert!(only_bad.stderr.contains("no readable results"));
    fails_with_all(
        &["report", s(&dir.join("missing")), "--out", s(&out)],
        &["missing", "no such file or folder"],
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bench_save_writes_a_result_the_report_reads() {
    let dir = tmp("save");
    let saved = dir.join("saved");
    ok(&[
        "bench",
        "matmul",
        "--sizes",
        "24,40",
        "--levels",
        "naive,simd",
        "--threads",
        "1",
        "--save",
        s(&saved),
        "--label",
        "here",
    ]);
    let files: Vec<_> = std::fs::read_dir(&saved)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    let name = files[0].file_name().unwrap().to_str().unwrap().to_string();
    assert!(name.starts_with("matmul-cpu-f32-here-"), "{name}");
    let r = ferrogpt_report::load(&files[0]).unwrap();
    assert_eq!(r.host, "here");
    assert_eq!(r.schema_version, SCHEMA_VERSION);
    assert!(!r.commit.is_empty());
    assert!(r.command.iter().any(|a| a == "--save"), "{:?}", r.command);
    assert!(r.date.ends_with('Z') && r.date.len() == 20, "{}", r.date);
    // The machine is `info`'s record.
    let info: serde_json::Value =
        serde_json::from_str(&ok(&["info", "--format", "json", "--no-peak"]).stdout).unwrap();
    assert_eq!(info["model"], serde_json::json!(r.machine.model));
    assert_eq!(
        info["logical_cores"],
        serde_json::json!(r.machine.logical_cores)
    );
    assert_eq!(info["features"], serde_json::json!(r.machine.features));
    let peak = r.machine.peak.as_ref().expect("the run's peak");
    assert_eq!(peak.threads, 1);
    let Figures::Matmul { matmul } = &r.figures else {
        panic!("not a matmul result")
    };
    assert_eq!(matmul.rows.len(), 4);
    assert_eq!(matmul.peak_gflops, Some(peak.f32_all));
    assert!(matmul
        .rows
        .iter()
        .all(|r| r.gflops.is_some_and(|g| g > 0.0)));
    // bench train too (one step of one engine, on a small text), then one report of both.
    let text = verse_file(&dir);
    ok(&[
        "bench",
        "train",
        "--levels",
        "simd",
        "--steps",
        "1",
        "--warmup",
        "0",
        "--threads",
        "1",
        "--data",
        s(&text),
        "--save",
        s(&saved),
    ]);
    let out = dir.join("report");
    let o = ok(&["report", s(&saved), "--out", s(&out)]);
    assert!(o.stderr.contains("report of 2 result(s)"), "{}", o.stderr);
    // Without --save, --label is refused by the argument parser.
    let o = run(&["bench", "matmul", "--label", "x"]);
    assert_eq!(o.code, 2, "{}", o.stderr);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Chromium's binary, if one is installed.
fn chromium() -> Option<&'static str> {
    ["chromium", "chromium-browser", "google-chrome"]
        .into_iter()
        .find(|b| {
            Command::new(b)
                .arg("--version")
                .output()
                .is_ok_and(|o| o.status.success())
        })
}

/// Loads `page` in headless Chromium: (the DOM after load, the console messages).
fn render(browser: &str, page: &Path, dir: &Path) -> (String, Vec<String>) {
    let o = Command::new(browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--enable-logging=stderr",
            "--v=0",
            &format!("--user-data-dir={}", dir.join("profile").display()),
            "--dump-dom",
        ])
        .arg(format!("file://{}", page.display()))
        .output()
        .expect("run chromium");
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "chromium failed: {stderr}");
    let console = stderr
        .lines()
        .filter(|l| l.contains(":CONSOLE"))
        .map(String::from)
        .collect();
    (String::from_utf8_lossy(&o.stdout).into_owned(), console)
}

#[test]
fn the_page_renders_in_headless_chromium() {
    let Some(browser) = chromium() else {
        if std::env::var("FERROGPT_REQUIRE_BROWSER").as_deref() == Ok("1") {
            panic!("FERROGPT_REQUIRE_BROWSER=1 but no chromium on PATH (apt-get install chromium)");
        }
        eprintln!("skipped: no chromium on PATH (FERROGPT_REQUIRE_BROWSER=1 makes this fail)");
        return;
    };
    let dir = tmp("browser");
    write_two_machines(&dir.join("results"));
    let out = dir.join("report");
    ok(&["report", s(&dir.join("results")), "--out", s(&out)]);
    // The check can fail: a page with a script error shows up as console messages.
    let control = dir.join("control.html");
    std::fs::write(
        &control,
        "<!DOCTYPE html><html><body><script>no_such_function()</script></body></html>",
    )
    .unwrap();
    let (_, console) = render(browser, &control, &dir);
    assert!(
        console.iter().any(|l| l.contains("no_such_function")),
        "the console check sees nothing: {console:?}"
    );
    let (dom, console) = render(browser, &out.join("index.html"), &dir);
    assert!(console.is_empty(), "console messages: {console:?}");
    assert!(dom.contains("<h1>ferrogpt benchmark report</h1>"), "{dom}");
    // The parser put every chart in the DOM as SVG, with its bars.
    assert_eq!(dom.matches("<svg ").count(), 3);
    assert!(dom.matches("class=\"bar\"").count() >= 10);
    assert!(dom.contains("graviton3") && dom.contains("sapphire"));
    // And it paints: a screenshot of the page is written.
    let shot = dir.join("page.png");
    let o = Command::new(browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            &format!("--user-data-dir={}", dir.join("profile").display()),
            "--window-size=1200,3000",
            &format!("--screenshot={}", shot.display()),
        ])
        .arg(format!("file://{}", out.join("index.html").display()))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let png = std::fs::read(&shot).unwrap();
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 20_000,
        "{} bytes",
        png.len()
    );
    let _ = std::fs::remove_dir_all(&dir);
}
