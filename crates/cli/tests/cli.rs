//! The binary end to end: a tiny training run, sample, eval, tokenize, resume; and every bad
//! input the issue lists gets one line on stderr, a non-zero exit, no panic, and leaves
//! existing files untouched.

mod common;

use common::*;
use std::path::{Path, PathBuf};

const TINY: &[&str] = &[
    "--n-layer",
    "1",
    "--n-head",
    "2",
    "--n-embd",
    "16",
    "--block-size",
    "16",
    "--batch-size",
    "4",
    "--eval-interval",
    "5",
    "--eval-batches",
    "2",
    "--sample-tokens",
    "20",
    "--threads",
    "1",
];

/// `train` of `data` into `out` for `steps` steps at the [`TINY`] size.
fn tiny_args<'a>(data: &'a Path, out: &'a Path, steps: &'a str) -> Vec<&'a str> {
    let mut args = train_args(data, out, steps);
    args.extend_from_slice(TINY);
    args
}

fn train_tiny(dir: &Path, steps: &str) -> PathBuf {
    let data = romeo_file(dir);
    let out = dir.join("run");
    let o = run(&tiny_args(&data, &out, steps));
    assert_eq!(o.code, 0, "train failed: {}", o.stderr);
    out
}

#[test]
fn train_sample_eval_resume() {
    let dir = tmp("e2e");
    let run_dir = train_tiny(&dir, "10");
    for f in [
        "model.safetensors",
        "optimizer.safetensors",
        "config.json",
        "tokenizer.json",
        "state.json",
        "metrics.jsonl",
    ] {
        assert!(run_dir.join(f).is_file(), "missing {f}");
    }
    let metrics = std::fs::read_to_string(run_dir.join("metrics.jsonl")).unwrap();
    assert_eq!(metrics.lines().count(), 10);
    let last: serde_json::Value = serde_json::from_str(metrics.lines().last().unwrap()).unwrap();
    for k in [
        "step",
        "train_loss",
        "lr",
        "grad_norm",
        "tokens_per_sec",
        "elapsed_s",
        "val_loss",
    ] {
        assert!(!last[k].is_null(), "metrics lack {k}");
    }
    // Sample: the prompt, then 30 generated characters, deterministic for a seed.
    let args = [
        "sample",
        "--checkpoint",
        s(&run_dir),
        "--prompt",
        "ROMEO:",
        "--tokens",
        "30",
        "--seed",
        "3",
        "--threads",
        "1",
    ];
    let a = run(&args);
    assert_eq!(a.code, 0, "{}", a.stderr);
    assert!(a.stdout.starts_with("ROMEO:"));
    assert_eq!(a.stdout.trim_end_matches('\n').chars().count(), 6 + 30);
    assert_eq!(run(&args).stdout, a.stdout);
    // Eval, as JSON.
    let o = run(&[
        "eval",
        "--checkpoint",
        s(&run_dir),
        "--data",
        s(&romeo_file(&dir)),
        "--json",
        "--threads",
        "1",
    ]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    let v: serde_json::Value = serde_json::from_str(o.stdout.trim()).unwrap();
    let (loss, ppl) = (
        v["loss"].as_f64().unwrap(),
        v["perplexity"].as_f64().unwrap(),
    );
    assert!(loss > 0.0 && loss < 4.0 && (ppl - loss.exp()).abs() < 1e-6 * ppl);
    // A new run initialised from this one's weights, trained at learning rate 0: its checkpoint
    // evaluates exactly as the original does.
    let text = romeo_file(&dir);
    let init_out = dir.join("from-init");
    let mut args = vec![
        "train",
        "--data",
        s(&text),
        "--init",
        s(&run_dir),
        "--out",
        s(&init_out),
    ];
    args.extend_from_slice(&["--steps", "1", "--lr", "0", "--min-lr", "0"]);
    args.extend_from_slice(&TINY[10..]); // not the shape flags: the shape comes from --init
    let o = run(&args);
    assert_eq!(o.code, 0, "{}", o.stderr);
    let eval = |d: &Path| {
        run(&[
            "eval",
            "--checkpoint",
            s(d),
            "--data",
            s(&romeo_file(&dir)),
            "--json",
            "--threads",
            "1",
        ])
        .stdout
    };
    let (a, b) = (eval(&run_dir), eval(&init_out));
    let loss = |o: &str| {
        serde_json::from_str::<serde_json::Value>(o.trim()).unwrap()["loss"]
            .as_f64()
            .unwrap()
    };
    assert_eq!(
        loss(&a),
        loss(&b),
        "--init did not start from the checkpoint's weights"
    );
    // Resume to 15 steps.
    let o = run(&[
        "train",
        "--resume",
        s(&run_dir),
        "--data",
        s(&romeo_file(&dir)),
        "--steps",
        "15",
        "--threads",
        "1",
    ]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    let metrics = std::fs::read_to_string(run_dir.join("metrics.jsonl")).unwrap();
    assert_eq!(metrics.lines().count(), 15);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn bench_train_reports_the_parts_of_a_step() {
    let dir = tmp("bench-train");
    let data = romeo_file(&dir);
    let o = run(&[
        "bench",
        "train",
        "--data",
        s(&data),
        "--levels",
        "simd",
        "--steps",
        "3",
        "--warmup",
        "1",
        "--batch-size",
        "2",
        "--seq-len",
        "16",
        "--json",
    ]);
    assert_eq!(o.code, 0, "bench train failed: {}", o.stderr);
    let rows: serde_json::Value = serde_json::from_str(&o.stdout).expect("JSON rows");
    let row = &rows.as_array().expect("an array")[0];
    let step = row["step_s_median"].as_f64().unwrap();
    let ph = &row["phases_median"];
    let part = |k: &str| ph[k].as_f64().unwrap_or_else(|| panic!("{k} in {ph}"));
    let (fb, norm, update) = (part("forward_backward"), part("norm"), part("update"));
    assert!(fb > 0.0 && norm >= 0.0 && update > 0.0, "{ph}");
    // Seconds, like the step: the parts fit in it (loosely: each is its own median).
    assert!(
        fb + norm + update < 2.0 * step,
        "{ph} against a step of {step} s"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn tokenize_writes_token_files() {
    let dir = tmp("tok");
    let text = romeo_file(&dir);
    let out = dir.join("t.bin");
    let o = run(&[
        "tokenize",
        "--tokenizer",
        "gpt2",
        s(&text),
        "--out",
        s(&out),
    ]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    let bytes = std::fs::read(&out).unwrap();
    assert_eq!(
        i32::from_le_bytes(bytes[0..4].try_into().unwrap()),
        20240520
    );
    let n = i32::from_le_bytes(bytes[8..12].try_into().unwrap()) as usize;
    assert_eq!(bytes.len(), 1024 + 2 * n);
    let o = run(&[
        "tokenize",
        "--tokenizer",
        "char",
        s(&text),
        "--out",
        s(&dir.join("c.bin")),
    ]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert!(dir.join("c.bin.tokenizer.json").is_file());
    // A gpt2 token file has ids beyond a char model's vocabulary.
    let run_dir = train_tiny(&dir, "5");
    fails_with(
        &["eval", "--checkpoint", s(&run_dir), "--data", s(&out)],
        "out of range",
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn bad_data_files() {
    let dir = tmp("baddata");
    let empty = dir.join("empty.txt");
    std::fs::write(&empty, "").unwrap();
    let binary = dir.join("bin.dat");
    std::fs::write(&binary, [0u8, 159, 146, 150, 0, 1, 2]).unwrap();
    let out = dir.join("o");
    fails_with(
        &[
            "train",
            "--data",
            s(&dir.join("nope.txt")),
            "--out",
            s(&out),
        ],
        "nope.txt",
    );
    fails_with(&["train", "--data", s(&empty), "--out", s(&out)], "empty");
    fails_with(
        &["train", "--data", s(&binary), "--out", s(&out)],
        "not text",
    );
    let bad_header = dir.join("bad.bin");
    let mut b = vec![0u8; 1024];
    b[0..4].copy_from_slice(&20240520i32.to_le_bytes());
    b[4..8].copy_from_slice(&7i32.to_le_bytes());
    std::fs::write(&bad_header, &b).unwrap();
    fails_with(
        &[
            "train",
            "--data",
            s(&bad_header),
            "--tokenizer",
            "gpt2",
            "--out",
            s(&out),
        ],
        "version",
    );
    assert!(!out.exists(), "a failed run left a directory behind");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn bad_flags() {
    let dir = tmp("flags");
    let data = romeo_file(&dir);
    let out = dir.join("o");
    let base = ["train", "--data", s(&data), "--out", s(&out)];
    let with = |extra: &[&str]| -> Vec<String> {
        base.iter().chain(extra).map(|x| x.to_string()).collect()
    };
    let check = |extra: &[&str], needle: &str| {
        let args = with(extra);
        fails_with(&args.iter().map(String::as_str).collect::<Vec<_>>(), needle);
    };
    check(&["--lr", "-1"], "lr");
    check(&["--preset", "bogus"], "unknown preset");
    check(&["--matmul", "warp-drive"], "unknown matmul level");
    check(&["--beta2", "1.5"], "beta2");
    check(&["--n-head", "3", "--n-embd", "16"], "n_head");
    check(&["--seq-len", "100", "--block-size", "16"], "seq_len");
    check(&["--dropout", "1"], "dropout");
    check(&["--threads", "0"], "threads");
    check(&["--lr-schedule", "zigzag"], "lr-schedule");
    check(&["--device", "cuda:x"], "--device");
    check(&["--device", "tpu"], "--device");
    check(&["--dtype", "fp8"], "--dtype");
    check(&["--dtype", "bf16"], "bf16");
    check(&["--dtype", "tf32"], "--dtype tf32 needs --device cuda");
    check(&["--recompute"], "--recompute is for the GPU engine");
    check(&["--recompute", "1"], "--recompute is for the GPU engine");
    // The engine flags are checked before anything is read, on every command that runs the model.
    let missing = dir.join("missing");
    for cmd in [
        vec!["sample", "--checkpoint", s(&missing)],
        vec!["eval", "--checkpoint", s(&missing), "--data", s(&missing)],
        vec!["bench", "train", "--data", s(&missing)],
    ] {
        if cmd[0] == "bench" {
            let mut args = cmd.clone();
            args.push("--recompute");
            fails_with(&args, "--recompute is for the GPU engine");
        }
        for (flag, value, needle) in [
            ("--device", "cuda:x", "--device"),
            ("--dtype", "bf16", "bf16"),
        ] {
            let mut args = cmd.clone();
            args.extend([flag, value]);
            fails_with(&args, needle);
        }
    }
    for p in ["0", "1.5", "-0.2"] {
        fails_with(
            &["sample", "--checkpoint", s(&missing), "--top-p", p],
            "--top-p must be in (0, 1]",
        );
    }
    // clap's own errors: non-zero exit, no panic.
    let o = run(&with(&["--steps", "many"])
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>());
    assert_eq!(o.code, 2);
    assert!(o.stderr.contains("--steps"));
    let toml = dir.join("c.toml");
    std::fs::write(&toml, "learning_rate = 3\n").unwrap();
    check(&["--config", s(&toml)], "learning_rate");
    assert!(!out.exists());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn bad_checkpoints_and_prompts() {
    let dir = tmp("badckpt");
    let run_dir = train_tiny(&dir, "5");
    let model = run_dir.join("model.safetensors");
    let original = std::fs::read(&model).unwrap();
    let data = romeo_file(&dir);
    // Prompt longer than the block size (16), and characters outside the vocabulary.
    let long = "ROMEO: ".repeat(5);
    fails_with(
        &["sample", "--checkpoint", s(&run_dir), "--prompt", &long],
        "block size",
    );
    fails_with(
        &["sample", "--checkpoint", s(&run_dir), "--prompt", "Zebra€"],
        "prompt",
    );
    fails_with(
        &["sample", "--checkpoint", s(&dir.join("missing"))],
        "missing",
    );
    // Training into an existing checkpoint is refused, and the checkpoint is untouched.
    fails_with(
        &tiny_args(&data, &run_dir, "5"),
        "already holds a checkpoint",
    );
    assert_eq!(std::fs::read(&model).unwrap(), original);
    // Unwritable output directory (its parent is a file).
    let file = dir.join("afile");
    std::fs::write(&file, "x").unwrap();
    fails_with(&tiny_args(&data, &file.join("run"), "2"), "afile");
    // Mismatched checkpoint: state.json from another step (written without checksums, as by an
    // earlier version, so that the step check is what catches it).
    let state = run_dir.join("state.json");
    let text = std::fs::read_to_string(&state).unwrap();
    let sums = std::fs::read(run_dir.join("checksums.sha256")).unwrap();
    std::fs::remove_file(run_dir.join("checksums.sha256")).unwrap();
    std::fs::write(&state, text.replace("\"step\": 5", "\"step\": 4")).unwrap();
    fails_with(
        &["train", "--resume", s(&run_dir), "--data", s(&data)],
        "mismatched",
    );
    std::fs::write(&state, &text).unwrap();
    std::fs::write(run_dir.join("checksums.sha256"), sums).unwrap();
    // Truncated weights.
    std::fs::write(&model, &original[..original.len() / 2]).unwrap();
    fails_with(
        &["sample", "--checkpoint", s(&run_dir)],
        "model.safetensors",
    );
    fails_with(
        &["train", "--resume", s(&run_dir), "--data", s(&data)],
        "model.safetensors",
    );
    assert_eq!(
        std::fs::read(&model).unwrap().len(),
        original.len() / 2,
        "a failed resume rewrote the weights"
    );
    // Corrupt config.
    std::fs::write(&model, &original).unwrap();
    std::fs::write(run_dir.join("config.json"), "{ not json").unwrap();
    fails_with(
        &["eval", "--checkpoint", s(&run_dir), "--data", s(&data)],
        "config.json",
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `--device cuda` where there is no usable GPU (CI): one line naming what is missing, a
/// non-zero exit, no run directory left behind. Where a GPU is present it trains instead.
#[test]
fn cuda_without_a_gpu_is_one_line() {
    let dir = tmp("nogpu");
    let data = romeo_file(&dir);
    let out = dir.join("o");
    let args = [
        "train",
        "--data",
        s(&data),
        "--out",
        s(&out),
        "--device",
        "cuda",
        "--steps",
        "2",
        "--n-layer",
        "1",
        "--n-embd",
        "32",
        "--n-head",
        "2",
        "--block-size",
        "16",
        "--seq-len",
        "16",
        "--batch-size",
        "2",
        "--sample-tokens",
        "0",
    ];
    let o = run(&args);
    if o.code == 0 {
        println!("a GPU is present: trained on it");
    } else {
        fails_with(&args, "CUDA");
        assert!(!out.exists(), "a failed start left {}", out.display());
    }
    fails_with(&["bench", "matmul", "--device", "cuda:x"], "cuda:x");
    std::fs::remove_dir_all(&dir).unwrap();
}
