//! The guides' commands work as written: every line of every ```sh block of
//! docs/training-guide.md is run in order by `sh` in one empty folder, with this build's
//! `ferrogpt` first on the PATH, and must succeed; then what the guide says they leave behind
//! is checked.

use std::path::Path;
use std::process::Command;

mod common;
use common::{tmp, BIN};

/// The lines of the ```sh blocks of `text`, in order.
fn sh_commands(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut inside = false;
    for line in text.lines() {
        match line.trim_end() {
            "```sh" => inside = true,
            "```" => inside = false,
            l if inside && !l.trim().is_empty() => out.push(l.to_string()),
            _ => {}
        }
    }
    out
}

#[test]
fn training_guide_commands_run_as_written() {
    let guide = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/training-guide.md");
    let text = std::fs::read_to_string(&guide).unwrap();
    let commands = sh_commands(&text);
    assert!(commands.len() >= 10, "{} commands found", commands.len());
    assert!(
        commands.iter().all(|c| c.starts_with("ferrogpt ")),
        "{commands:?}"
    );
    let dir = tmp("training-guide");
    let bin_dir = Path::new(BIN).parent().unwrap();
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    for c in &commands {
        let o = Command::new("sh")
            .args(["-c", c])
            .current_dir(&dir)
            .env("PATH", &path)
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "`{c}` failed:\n{}",
            String::from_utf8_lossy(&o.stderr)
        );
        if c.contains("--stop \"JULIET\"") {
            let err = String::from_utf8_lossy(&o.stderr);
            assert!(err.contains("timing:"), "no timing line: {err}");
        }
    }
    // What the guide says the commands leave behind.
    for f in [
        "data/tinyshakespeare.txt",
        "runs/guide/model.safetensors",
        "runs/guide/config.json",
        "runs/guide/tokenizer.json",
        "runs/guide/optimizer.safetensors",
        "runs/guide/state.json",
        "runs/guide/metrics.jsonl",
        "runs/guide/checksums.sha256",
        "runs/guide/best/model.safetensors",
        "loss.svg",
        "data/shakespeare-gpt2.bin",
        "runs/bpe/model.safetensors",
        "runs/guide-int8/model.safetensors",
        "runs/guide.gguf",
    ] {
        assert!(dir.join(f).is_file(), "{f} is missing");
    }
    // The resume reached the new total: 60 steps in the metrics.
    let metrics = std::fs::read_to_string(dir.join("runs/guide/metrics.jsonl")).unwrap();
    let last = metrics.lines().last().unwrap();
    assert!(last.contains("\"step\":60"), "{last}");
    std::fs::remove_dir_all(&dir).unwrap();
}
