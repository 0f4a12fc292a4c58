//! The wgpu paths of the binary: `--matmul wgpu` (the CPU engine's products on the GPU) and
//! what happens without an adapter.
//!
//! Skipped without an adapter unless `FERROGPT_REQUIRE_WGPU=1` (`.ci/run` installs lavapipe and
//! sets it). "No adapter" is simulated by pointing the Vulkan loader at no driver
//! (`VK_ICD_FILENAMES`, `VK_DRIVER_FILES`).

mod common;

use common::*;
use std::path::Path;
use std::process::Command;

fn required() -> bool {
    std::env::var("FERROGPT_REQUIRE_WGPU").as_deref() == Ok("1")
}

/// Runs ferrogpt in `dir`, with no Vulkan driver visible when `hide_gpu`.
fn run_env(dir: &Path, args: &[&str], hide_gpu: bool) -> Out {
    let mut c = Command::new(BIN);
    c.args(args).current_dir(dir);
    if hide_gpu {
        c.env("VK_ICD_FILENAMES", "/nonexistent.json")
            .env("VK_DRIVER_FILES", "/nonexistent.json");
    }
    run_command(&mut c)
}

/// Whether a wgpu adapter exists (`ferrogpt info` lists it); panics under
/// FERROGPT_REQUIRE_WGPU=1 when none does.
fn have_adapter() -> bool {
    let o = run(&["info", "--format", "json"]);
    assert_eq!(o.code, 0, "info failed: {}", o.stderr);
    let v: serde_json::Value = serde_json::from_str(&o.stdout).expect("info's JSON");
    let n = v["wgpu"].as_array().map_or(0, |a| a.len());
    if n == 0 {
        assert!(!required(), "FERROGPT_REQUIRE_WGPU=1, but no wgpu adapter");
        println!("skipped: no wgpu adapter");
    }
    n > 0
}

fn losses(run: &Path) -> Vec<f64> {
    std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["train_loss"].as_f64())
        .map(Option::unwrap)
        .collect()
}

/// Ten steps at a learning rate high enough that the weights move: the losses of the wgpu level
/// follow the CPU's within 1e-4 (seen on lavapipe: 2e-7; the products differ only in the order
/// of their f32 sums).
#[test]
fn training_with_matmul_wgpu_follows_the_cpu() {
    if !have_adapter() {
        return;
    }
    let dir = tmp("train");
    let data = verse_file(&dir);
    let mut runs = vec![];
    for level in ["library", "wgpu"] {
        let out = dir.join(level);
        let mut args = small_train(&data, &out, "10");
        args.extend_from_slice(&["--lr", "1e-2", "--warmup", "0", "--matmul", level]);
        let o = run_env(&dir, &args, false);
        assert_eq!(o.code, 0, "{level}: {}", o.stderr);
        runs.push(losses(&out));
    }
    assert_eq!(runs[0].len(), 10);
    assert!(
        runs[0][9] < runs[0][0] - 0.3,
        "the weights should move: {:?}",
        runs[0]
    );
    for (step, (cpu, gpu)) in runs[0].iter().zip(&runs[1]).enumerate() {
        assert!(
            (cpu - gpu).abs() <= 1e-4,
            "step {}: cpu {cpu}, wgpu {gpu}",
            step + 1
        );
    }
}

/// `bench train --levels simd,wgpu` has a row for the wgpu level beside the CPU's.
#[test]
fn bench_train_shows_the_wgpu_level() {
    if !have_adapter() {
        return;
    }
    let dir = tmp("bench");
    let data = verse_file(&dir);
    let o = run_env(
        &dir,
        &[
            "bench",
            "train",
            "--levels",
            "library,wgpu",
            "--data",
            s(&data),
            "--steps",
            "1",
            "--warmup",
            "1",
            "--batch-size",
            "2",
            "--seq-len",
            "16",
            "--json",
        ],
        false,
    );
    assert_eq!(o.code, 0, "{}", o.stderr);
    for level in ["\"library\"", "\"wgpu\""] {
        assert!(o.stdout.contains(level), "no {level} row: {}", o.stdout);
    }
}

/// Without an adapter, `--matmul wgpu` is one line and exit status 1.
#[test]
fn matmul_wgpu_without_an_adapter_is_one_line() {
    let dir = tmp("noadapter");
    let data = verse_file(&dir);
    let out = dir.join("run");
    let mut args = small_train(&data, &out, "1");
    args.extend_from_slice(&["--matmul", "wgpu"]);
    let o = run_env(&dir, &args, true);
    assert_eq!(o.code, 1, "{}", o.stderr);
    let lines: Vec<&str> = o.stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "{}", o.stderr);
    assert!(
        lines[0].contains("matmul level 'wgpu' is not available here: no wgpu adapter"),
        "{}",
        lines[0]
    );
}

/// A small model trained for a few steps (so that its text is not uniform noise), in `dir`.
fn trained(dir: &Path) -> std::path::PathBuf {
    let data = verse_file(dir);
    let out = dir.join("model");
    let mut args = small_train(&data, &out, "40");
    args.extend_from_slice(&["--lr", "1e-2"]);
    let o = run_env(dir, &args, false);
    assert_eq!(o.code, 0, "{}", o.stderr);
    out
}

/// Greedy decoding on wgpu (prefill, the cache, and the window sliding past the block size of
/// 32) gives the CPU's text; eval gives its loss within 1e-4 (seen on lavapipe: equal to the
/// printed digits).
#[test]
fn sample_and_eval_on_wgpu_match_the_cpu() {
    if !have_adapter() {
        return;
    }
    let dir = tmp("sample");
    let model = trained(&dir);
    let data = verse_file(&dir);
    let mut texts = vec![];
    let mut losses = vec![];
    for device in ["cpu", "wgpu"] {
        let o = run_env(
            &dir,
            &[
                "sample",
                "--checkpoint",
                s(&model),
                "--prompt",
                "JULIET:",
                "--tokens",
                "70",
                "--temperature",
                "0",
                "--device",
                device,
            ],
            false,
        );
        assert_eq!(o.code, 0, "{device}: {}", o.stderr);
        texts.push(o.stdout);
        let o = run_env(
            &dir,
            &[
                "eval",
                "--checkpoint",
                s(&model),
                "--data",
                s(&data),
                "--json",
                "--device",
                device,
            ],
            false,
        );
        assert_eq!(o.code, 0, "{device}: {}", o.stderr);
        let v: serde_json::Value = serde_json::from_str(&o.stdout).unwrap();
        losses.push(v["loss"].as_f64().unwrap());
    }
    assert!(texts[0].len() > 40, "{}", texts[0]);
    assert_eq!(texts[0], texts[1]);
    assert!(
        (losses[0] - losses[1]).abs() <= 1e-4,
        "cpu {} wgpu {}",
        losses[0],
        losses[1]
    );
}

/// `--device wgpu` without an adapter, with an adapter index past the list, or for training:
/// one line each, exit status 1.
#[test]
fn device_wgpu_errors_are_one_line() {
    let dir = tmp("deverr");
    let data = verse_file(&dir);
    let model = dir.join("m");
    let args = small_train(&data, &model, "1");
    assert_eq!(run_env(&dir, &args, true).code, 0);
    let sample = [
        "sample",
        "--checkpoint",
        s(&model),
        "--tokens",
        "3",
        "--device",
    ];
    let cases: Vec<(Vec<&str>, bool, &str)> = vec![
        ([&sample[..], &["wgpu"]].concat(), true, "no wgpu adapter"),
        (
            vec![
                "eval",
                "--checkpoint",
                s(&model),
                "--data",
                s(&data),
                "--device",
                "wgpu",
            ],
            true,
            "no wgpu adapter",
        ),
        (
            [&sample[..], &["wgpu:x"]].concat(),
            true,
            "expected wgpu or wgpu:N",
        ),
        (
            [&sample[..], &["wgpu", "--dtype", "bf16"]].concat(),
            true,
            "computes in fp32",
        ),
        (
            [&args[..], &["--device", "wgpu"]].concat(),
            true,
            "runs sample and eval only",
        ),
    ];
    for (args, hide, needle) in cases {
        let o = run_env(&dir, &args, hide);
        assert_eq!(o.code, 1, "{args:?}: {}", o.stderr);
        let lines: Vec<&str> = o.stderr.lines().filter(|l| !l.trim().is_empty()).collect();
        assert_eq!(lines.len(), 1, "{args:?}: {}", o.stderr);
        assert!(lines[0].contains(needle), "{args:?}: {}", lines[0]);
    }
    if have_adapter() {
        // An adapter index past the list (Mesa may print its XDG_RUNTIME_DIR notice too).
        let o = run_env(&dir, &[&sample[..], &["wgpu:99"]].concat(), false);
        assert_eq!(o.code, 1, "{}", o.stderr);
        assert!(o.stderr.contains("no wgpu adapter 99"), "{}", o.stderr);
        assert!(!o.stderr.contains("panicked"), "{}", o.stderr);
    }
}
