//! `ferrogpt quantize` and `--weights` end to end: a tiny run quantized to int8 and bf16, the
//! quantized checkpoints sampled and evaluated (the same text and loss as converting the f32
//! run at load), eval through the decoder, and bad inputs answered with one line.

mod common;

use common::*;
use std::path::{Path, PathBuf};

fn tiny_run(dir: &Path) -> PathBuf {
    let data = romeo_file(dir);
    let out = dir.join("run");
    let mut args = train_args(&data, &out, "20");
    args.extend_from_slice(&[
        "--n-layer",
        "2",
        "--n-head",
        "2",
        "--n-embd",
        "64",
        "--block-size",
        "32",
        "--batch-size",
        "4",
        "--eval-interval",
        "20",
        "--eval-batches",
        "1",
        "--sample-tokens",
        "0",
        "--threads",
        "1",
    ]);
    ok(&args);
    out
}

/// The `__metadata__` of a safetensors file.
fn metadata(path: &Path) -> serde_json::Value {
    let bytes = std::fs::read(path).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    header["__metadata__"].clone()
}

fn greedy(ckpt: &Path, extra: &[&str]) -> String {
    let mut args = vec![
        "sample",
        "--checkpoint",
        s(ckpt),
        "--prompt",
        "ROMEO:",
        "--tokens",
        "40",
        "--temperature",
        "0",
        "--threads",
        "1",
    ];
    args.extend_from_slice(extra);
    ok(&args).stdout
}

fn eval_loss(ckpt: &Path, data: &Path, extra: &[&str]) -> f64 {
    let mut args = vec![
        "eval",
        "--checkpoint",
        s(ckpt),
        "--data",
        s(data),
        "--max-windows",
        "4",
        "--json",
        "--threads",
        "1",
    ];
    args.extend_from_slice(extra);
    let v: serde_json::Value = serde_json::from_str(ok(&args).stdout.trim()).unwrap();
    v["loss"].as_f64().unwrap()
}

#[test]
fn quantized_checkpoints_sample_and_evaluate_as_converted_weights() {
    let dir = tmp("quantize");
    let run_dir = tiny_run(&dir);
    let data = dir.join("text.txt");
    let f32_loss = eval_loss(&run_dir, &data, &[]);
    for format in ["int8", "bf16"] {
        let q = dir.join(format!("q-{format}"));
        let o = ok(&[
            "quantize",
            "--checkpoint",
            s(&run_dir),
            "--weights",
            format,
            "--out",
            s(&q),
        ]);
        assert!(o.stdout.contains(format), "{}", o.stdout);
        let cfg: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(q.join("config.json")).unwrap()).unwrap();
        assert_eq!(cfg["ferrogpt_weights"]["format"], format);
        let meta = metadata(&q.join("model.safetensors"));
        assert_eq!(meta["ferrogpt.weights"], format);
        assert!(meta["ferrogpt.quantization"].as_str().unwrap().len() > 10);
        // The quantized checkpoint decodes as the f32 run converted at load.
        let from_file = greedy(&q, &[]);
        let converted = greedy(&run_dir, &["--weights", format]);
        assert_eq!(from_file, converted, "{format}: greedy text");
        assert!(from_file.starts_with("ROMEO:"), "{from_file}");
        // Evaluation: the same loss both ways, close to f32's; through the decoder too.
        let a = eval_loss(&q, &data, &[]);
        let b = eval_loss(&run_dir, &data, &["--weights", format]);
        assert_eq!(a, b, "{format}: eval loss from the file and converted");
        assert!(
            (a - f32_loss).abs() / f32_loss < 0.02,
            "{format}: {a} vs f32 {f32_loss}"
        );
        let d = eval_loss(&q, &data, &["--decode"]);
        assert!(
            (d - a).abs() / a < 0.02,
            "{format}: decoded {d} vs tape {a}"
        );
        // Read back as f32 (the stored values, widened or dequantized).
        let f = eval_loss(&q, &data, &["--weights", "f32"]);
        assert!((f - a).abs() / a < 1e-3, "{format}: as f32 {f} vs {a}");
    }
    // f32 decoding through the decoder equals the tape's loss closely.
    let d = eval_loss(&run_dir, &data, &["--decode"]);
    assert!((d - f32_loss).abs() / f32_loss < 1e-4, "{d} vs {f32_loss}");
}

#[test]
fn bad_weights_arguments_are_one_line_errors() {
    let dir = tmp("quantize-bad");
    let run_dir = tiny_run(&dir);
    let q = dir.join("q");
    fails_with(
        &[
            "quantize",
            "--checkpoint",
            s(&run_dir),
            "--weights",
            "int4",
            "--out",
            s(&q),
        ],
        "int4",
    );
    fails_with(
        &[
            "quantize",
            "--checkpoint",
            s(&run_dir),
            "--weights",
            "f32",
            "--out",
            s(&q),
        ],
        "int8 or bf16",
    );
    ok(&[
        "quantize",
        "--checkpoint",
        s(&run_dir),
        "--weights",
        "int8",
        "--out",
        s(&q),
    ]);
    fails_with(
        &[
            "quantize",
            "--checkpoint",
            s(&q),
            "--weights",
            "bf16",
            "--out",
            s(&dir.join("q2")),
        ],
        "already",
    );
    fails_with(
        &["sample", "--checkpoint", s(&run_dir), "--weights", "fp8"],
        "--weights",
    );
    fails_with(
        &[
            "sample",
            "--checkpoint",
            s(&run_dir),
            "--weights",
            "int8",
            "--device",
            "cuda",
        ],
        "CPU engine",
    );
    // A damaged quantized file is caught (its checksum, or the reader), one line.
    let path = q.join("model.safetensors");
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
    let o = run(&["sample", "--checkpoint", s(&q), "--tokens", "3"]);
    assert_ne!(o.code, 0);
    assert_eq!(o.stderr.trim().lines().count(), 1, "{}", o.stderr);
    assert!(!o.stderr.contains("panicked"), "{}", o.stderr);
}
