//! The binary among the tools around it (issue 13): the first run with no network, Hugging
//! Face directories with and without their own tokenizer, run directories read by Hugging
//! Face's Python libraries, resume from the run directory alone, checksums that name a damaged
//! file, run directories of earlier versions, and help for every flag.

mod common;

use common::*;
use std::path::{Path, PathBuf};
use std::process::Command;

fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

const TINY: &[&str] = &[
    "--n-layer",
    "1",
    "--n-head",
    "2",
    "--n-embd",
    "16",
    "--block-size",
    "32",
    "--batch-size",
    "4",
    "--eval-interval",
    "5",
    "--eval-batches",
    "2",
    "--sample-tokens",
    "0",
    "--threads",
    "1",
];

fn text_file(dir: &Path, name: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(
        &p,
        "ROMEO:\nBut, soft! what light through yonder window breaks?\n".repeat(40),
    )
    .unwrap();
    p
}

/// A tiny run on `data` (and `extra` flags) into `dir/name`.
fn train(dir: &Path, name: &str, data: &Path, extra: &[&str]) -> PathBuf {
    let out = dir.join(name);
    let mut args = vec!["train", "--data", s(data), "--out", s(&out), "--steps", "5"];
    args.extend_from_slice(TINY);
    args.extend_from_slice(extra);
    ok(&args);
    out
}

#[test]
fn first_run_needs_no_network() {
    let dir = tmp("offline");
    let mut args = vec!["train", "--steps", "2", "--out", "run"];
    args.extend_from_slice(TINY);
    let o = run_in(Some(&dir), &args);
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert!(
        o.stderr.contains("the copy inside ferrogpt"),
        "{}",
        o.stderr
    );
    let data = std::fs::read(dir.join("data/tinyshakespeare.txt")).unwrap();
    assert_eq!(data.len(), 1_115_394);
    use sha2::Digest;
    let sum: String = sha2::Sha256::digest(&data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(
        sum,
        "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed"
    );
    // Tiny Shakespeare has 65 distinct characters.
    let config = std::fs::read_to_string(dir.join("run/config.json")).unwrap();
    assert!(config.contains("\"vocab_size\": 65"), "{config}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn resume_from_the_run_directory_alone() {
    let dir = tmp("resume");
    let data = text_file(&dir, "train.txt");
    let val = text_file(&dir, "val.txt");
    let run_dir = train(&dir, "run", &data, &["--val-data", s(&val)]);
    let resume = |extra: &[&str], steps: &str| -> Vec<String> {
        let mut a = vec![
            "train",
            "--resume",
            s(&run_dir),
            "--steps",
            steps,
            "--threads",
            "1",
        ];
        a.extend_from_slice(extra);
        a.into_iter().map(String::from).collect()
    };
    // No --data: the recorded files.
    let o = ok(&strs(&resume(&[], "7")));
    assert!(o.stderr.contains("train.txt"), "{}", o.stderr);
    // A changed file is refused, whatever its name.
    let original = std::fs::read(&data).unwrap();
    std::fs::write(&data, [&original[..], b"more"].concat()).unwrap();
    fails_with_all(
        &strs(&resume(&[], "8")),
        &["train.txt", "not the training data"],
    );
    // A moved copy with the same contents is accepted; the file gone is named.
    let moved = dir.join("moved.txt");
    std::fs::write(&moved, &original).unwrap();
    std::fs::remove_file(&data).unwrap();
    fails_with_all(
        &strs(&resume(&[], "8")),
        &["train.txt", "is gone", "--data"],
    );
    ok(&strs(&resume(&["--data", s(&moved)], "8")));
    // The validation file is checked too.
    std::fs::write(
        &val,
        "something else entirely, and long enough to make windows\n".repeat(9),
    )
    .unwrap();
    fails_with_all(&strs(&resume(&[], "9")), &["val.txt", "validation"]);
    let metrics = std::fs::read_to_string(run_dir.join("metrics.jsonl")).unwrap();
    assert_eq!(metrics.lines().count(), 8);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_flipped_byte_in_any_checkpoint_file_is_named() {
    let dir = tmp("flip");
    let data = text_file(&dir, "t.txt");
    let run_dir = train(&dir, "run", &data, &[]);
    let manifest = std::fs::read_to_string(run_dir.join("checksums.sha256")).unwrap();
    let files: Vec<&str> = manifest
        .lines()
        .map(|l| l.split_once("  ").unwrap().1)
        .collect();
    assert_eq!(
        files,
        [
            "model.safetensors",
            "optimizer.safetensors",
            "config.json",
            "tokenizer.json",
            "tokenizer_config.json",
            "state.json"
        ]
    );
    let best = run_dir.join("best");
    for (d, name) in files
        .iter()
        .map(|f| (&run_dir, *f))
        .chain([(&best, "model.safetensors"), (&best, "tokenizer.json")])
    {
        let path = d.join(name);
        let original = std::fs::read(&path).unwrap();
        let mut bytes = original.clone();
        let i = bytes.len() / 2;
        bytes[i] ^= 0x20;
        std::fs::write(&path, &bytes).unwrap();
        let resume = ["train", "--resume", s(d), "--steps", "6"];
        let sample = ["sample", "--checkpoint", s(d), "--tokens", "3"];
        let eval = ["eval", "--checkpoint", s(d), "--data", s(&data)];
        if d == &run_dir {
            fails_with_all(&resume, &[name, "damaged"]);
        }
        if !["optimizer.safetensors", "state.json"].contains(&name) {
            fails_with_all(&sample, &[name, "damaged"]);
            fails_with_all(&eval, &[name, "damaged"]);
        } else {
            ok(&sample);
        }
        std::fs::write(&path, &original).unwrap();
        ok(&sample);
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_save_interrupted_while_moving_files_is_finished_by_resume() {
    let dir = tmp("pending");
    let data = text_file(&dir, "t.txt");
    let run_dir = train(&dir, "run", &data, &[]);
    // The step-10 checkpoint, as a save leaves it in `.pending` before moving its files.
    let later = dir.join("later");
    copy_dir(&run_dir, &later);
    ok(&["train", "--resume", s(&later), "--steps", "10"]);
    let pending = run_dir.join(".pending");
    std::fs::create_dir(&pending).unwrap();
    for f in std::fs::read_to_string(later.join("checksums.sha256"))
        .unwrap()
        .lines()
    {
        let name = f.split_once("  ").unwrap().1;
        std::fs::copy(later.join(name), pending.join(name)).unwrap();
    }
    std::fs::copy(
        later.join("checksums.sha256"),
        pending.join("checksums.sha256"),
    )
    .unwrap();
    // The crash: the weights moved, nothing else.
    std::fs::rename(
        pending.join("model.safetensors"),
        run_dir.join("model.safetensors"),
    )
    .unwrap();
    fails_with_all(
        &["sample", "--checkpoint", s(&run_dir), "--tokens", "3"],
        &["model.safetensors", "interrupted", "--resume"],
    );
    ok(&["train", "--resume", s(&run_dir), "--steps", "10"]);
    assert!(!pending.exists());
    let state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(run_dir.join("state.json")).unwrap()).unwrap();
    assert_eq!(state["step"], 10);
    ok(&["sample", "--checkpoint", s(&run_dir), "--tokens", "3"]);
    std::fs::remove_dir_all(&dir).unwrap();
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap().flatten() {
        if e.path().is_file() {
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}

#[test]
fn run_directories_of_earlier_versions_still_load() {
    let dir = tmp("legacy");
    let data = text_file(&dir, "t.txt");
    let run_dir = train(&dir, "run", &data, &[]);
    let sample = [
        "sample",
        "--checkpoint",
        s(&run_dir),
        "--tokens",
        "20",
        "--seed",
        "5",
    ];
    let before = ok(&sample).stdout;
    // As ferrogpt wrote it before: its own tokenizer.json, no tokenizer_config.json, no
    // checksums, no data record.
    let vocab: String = {
        let mut v: Vec<char> = std::fs::read_to_string(&data).unwrap().chars().collect();
        v.sort_unstable();
        v.dedup();
        v.into_iter().collect()
    };
    let legacy = serde_json::json!({"kind": "char", "vocab": vocab}).to_string();
    std::fs::write(run_dir.join("tokenizer.json"), legacy).unwrap();
    std::fs::remove_file(run_dir.join("tokenizer_config.json")).unwrap();
    std::fs::remove_file(run_dir.join("checksums.sha256")).unwrap();
    let state = run_dir.join("state.json");
    let mut v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&state).unwrap()).unwrap();
    v.as_object_mut().unwrap().remove("data");
    std::fs::write(&state, v.to_string()).unwrap();
    assert_eq!(ok(&sample).stdout, before);
    // Resuming needs --data again (nothing recorded), and rewrites it in today's format.
    ok(&[
        "train",
        "--resume",
        s(&run_dir),
        "--data",
        s(&data),
        "--steps",
        "6",
    ]);
    assert!(run_dir.join("checksums.sha256").is_file());
    assert!(run_dir.join("tokenizer_config.json").is_file());
    assert_eq!(ok(&sample).stdout.len(), before.len());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_transformers_directory_with_its_own_tokenizer() {
    let dir = tmp("hfbpe");
    let hf = fixture("hf-bpe");
    let expected: serde_json::Value =
        serde_json::from_slice(&std::fs::read(hf.join("expected.json")).unwrap()).unwrap();
    let prompt = expected["prompt"].as_str().unwrap();
    let n = expected["greedy_ids"].as_array().unwrap().len().to_string();
    let greedy = |d: &Path| {
        ok(&[
            "sample",
            "--checkpoint",
            s(d),
            "--prompt",
            prompt,
            "--tokens",
            &n,
            "--temperature",
            "0",
            "--threads",
            "1",
        ])
        .stdout
    };
    let want = format!("{prompt}{}\n", expected["greedy_text"].as_str().unwrap());
    assert_eq!(
        greedy(&hf),
        want,
        "greedy decoding differs from transformers'"
    );
    // Train from it: the run keeps its tokenizer (the same ids), its tokenizer_config.json, and
    // samples the same at learning rate 0.
    let data = text_file(&dir, "t.txt");
    let out = dir.join("run");
    ok(&[
        "train",
        "--init",
        s(&hf),
        "--data",
        s(&data),
        "--out",
        s(&out),
        "--steps",
        "2",
        "--lr",
        "0",
        "--min-lr",
        "0",
        "--batch-size",
        "2",
        "--seq-len",
        "32",
        "--sample-tokens",
        "0",
        "--threads",
        "1",
    ]);
    assert_eq!(
        std::fs::read_to_string(out.join("tokenizer_config.json")).unwrap(),
        std::fs::read_to_string(hf.join("tokenizer_config.json")).unwrap()
    );
    assert_eq!(greedy(&out), want);
    // The same ids as the library gave, through `tokenize`.
    let text = dir.join("x.txt");
    let case = &expected["texts"][0];
    std::fs::write(&text, case["text"].as_str().unwrap()).unwrap();
    let bin = dir.join("x.bin");
    ok(&[
        "tokenize",
        "--tokenizer",
        s(&hf.join("tokenizer.json")),
        s(&text),
        "--out",
        s(&bin),
    ]);
    let bytes = std::fs::read(&bin).unwrap();
    let ids: Vec<u64> = bytes[1024..]
        .chunks(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]) as u64)
        .collect();
    let want: Vec<u64> = serde_json::from_value(case["ids"].clone()).unwrap();
    assert_eq!(ids, want);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_model_directory_without_a_tokenizer_trains_on_token_files() {
    let dir = tmp("idsonly");
    let hf = fixture("hf-tiny"); // GPT-2 of vocabulary 50, no tokenizer files
    let tokens = dir.join("t.bin");
    token_file(
        &tokens,
        &(0..600).map(|i| (i * 7 % 50) as u16).collect::<Vec<_>>(),
    );
    let text = text_file(&dir, "t.txt");
    fails_with_all(&["sample", "--checkpoint", s(&hf)], &["no tokenizer"]);
    fails_with_all(
        &["eval", "--checkpoint", s(&hf), "--data", s(&text)],
        &["no tokenizer"],
    );
    ok(&["eval", "--checkpoint", s(&hf), "--data", s(&tokens)]);
    let out = dir.join("run");
    let o = ok(&[
        "train",
        "--init",
        s(&hf),
        "--data",
        s(&tokens),
        "--out",
        s(&out),
        "--steps",
        "3",
        "--batch-size",
        "2",
        "--seq-len",
        "16",
        "--threads",
        "1",
    ]);
    assert!(o.stderr.contains("vocab 50"), "{}", o.stderr);
    assert!(!out.join("tokenizer.json").exists());
    fails_with_all(&["sample", "--checkpoint", s(&out)], &["no tokenizer"]);
    ok(&["train", "--resume", s(&out), "--steps", "4"]);
    // Ids beyond its vocabulary are refused, naming the file.
    token_file(&tokens, &[1, 2, 50, 3]);
    fails_with_all(
        &["eval", "--checkpoint", s(&hf), "--data", s(&tokens)],
        &["t.bin", "50"],
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The Python interpreter for the checks against Hugging Face's packages: `FERROGPT_PYTHON`,
/// else `python3`; None (the test says skipped, unless `FERROGPT_REQUIRE_HF_PYTHON` is set)
/// where it lacks the `tokenizers` package.
fn python() -> Option<String> {
    let py = std::env::var("FERROGPT_PYTHON").unwrap_or_else(|_| "python3".into());
    let o = Command::new(&py)
        .args(["-c", "import tokenizers"])
        .output()
        .ok()?;
    o.status.success().then_some(py)
}

#[test]
fn huggingface_reads_a_run_directory() {
    let Some(py) = python() else {
        // .ci/run installs the package and sets this, so CI cannot pass by skipping.
        assert!(
            std::env::var_os("FERROGPT_REQUIRE_HF_PYTHON").is_none(),
            "FERROGPT_REQUIRE_HF_PYTHON is set but Python has no tokenizers package"
        );
        eprintln!("skipped: no Python with the tokenizers package (pip install tokenizers)");
        return;
    };
    let dir = tmp("pyhf");
    let data = text_file(&dir, "t.txt");
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../scripts/check_hf_run.py");
    let probe = dir.join("probe.txt");
    std::fs::write(&probe, "ROMEO: what light?\nBut soft, wind!ow  breaks\n").unwrap();
    let llama: &[&str] = &[
        "--tokenizer",
        "char",
        "--family",
        "llama",
        "--n-kv-head",
        "1",
        "--untied",
    ];
    for (name, extra) in [
        ("char", &["--tokenizer", "char"][..]),
        ("gpt2", &["--tokenizer", "gpt2"][..]),
        ("llama", llama),
    ] {
        let run_dir = train(&dir, name, &data, extra);
        let bin = dir.join(format!("{name}.bin"));
        ok(&[
            "tokenize",
            "--tokenizer",
            s(&run_dir),
            s(&probe),
            "--out",
            s(&bin),
        ]);
        let bytes = std::fs::read(&bin).unwrap();
        let ours: Vec<u64> = bytes[1024..]
            .chunks(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]) as u64)
            .collect();
        let o = Command::new(&py)
            .args([s(&script), s(&run_dir), s(&probe), "ROMEO:", "20"])
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        let theirs: Vec<u64> = serde_json::from_value(v["ids"].clone()).unwrap();
        assert_eq!(
            theirs, ours,
            "{name}: the tokenizers package reads other ids"
        );
        match v["greedy"].as_str() {
            None => {
                eprintln!("skipped the transformers check ({name}): transformers or torch absent")
            }
            Some(greedy) => {
                let ours = ok(&[
                    "sample",
                    "--checkpoint",
                    s(&run_dir),
                    "--prompt",
                    "ROMEO:",
                    "--tokens",
                    "20",
                    "--temperature",
                    "0",
                ])
                .stdout;
                assert_eq!(
                    ours.trim_end_matches('\n'),
                    greedy,
                    "{name}: greedy text differs"
                );
            }
        }
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Every option of every command has help text; `train`'s are grouped and each value-taking
/// one states its default.
#[test]
fn every_flag_has_help() {
    let commands: &[&[&str]] = &[
        &["train"],
        &["sample"],
        &["eval"],
        &["tokenize"],
        &["bench", "matmul"],
        &["bench", "train"],
        &["bench", "gpu"],
        &["info"],
        &["plot"],
    ];
    for cmd in commands {
        let mut args = cmd.to_vec();
        args.push("--help");
        let help = ok(&args).stdout;
        let mut lines = help.lines().peekable();
        while let Some(line) = lines.next() {
            let t = line.trim_start();
            // Flags sit at an indent of at most 6; deeper lines are descriptions and values.
            if !t.starts_with('-') || line.len() - t.len() > 6 {
                continue;
            }
            // clap puts the help after the flag, or on the next line when the flag is long.
            let (flag, rest) = t.split_once("  ").unwrap_or((t, ""));
            let text = if rest.trim().is_empty() {
                lines.peek().map_or("", |l| l.trim())
            } else {
                rest.trim()
            };
            assert!(
                !text.is_empty() && !text.starts_with('-'),
                "{cmd:?}: {flag} has no help"
            );
            if cmd == &["train"] && flag.contains('<') {
                let all: String = std::iter::once(text)
                    .chain(
                        lines
                            .clone()
                            .take_while(|l| !l.trim_start().starts_with('-'))
                            .map(str::trim),
                    )
                    .collect::<Vec<_>>()
                    .join(" ");
                assert!(
                    all.contains("[default"),
                    "train {flag}: no default in '{all}'"
                );
            }
        }
        if cmd == &["train"] {
            for heading in [
                "Data:",
                "Model:",
                "Optimizer:",
                "Schedule:",
                "Run:",
                "Device:",
            ] {
                assert!(help.contains(heading), "train --help lacks {heading}");
            }
        }
    }
}
