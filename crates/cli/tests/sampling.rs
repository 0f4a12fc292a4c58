//! `ferrogpt sample`'s sampling features on a small character model trained here: `--stop`
//! strings end the text where they appear (not printed, generation ended there), the prompt
//! from `--prompt-file` (bad files in one line), and a fixed `--seed` giving the same text on
//! the CPU engine's paths (the key/value cache decoder and the full forward pass, f32).

mod common;

use common::*;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

const PROMPT: &str = "ROMEO: But";

/// A character model trained for a few steps, shared by the tests of this file.
fn model() -> &'static Path {
    static RUN: OnceLock<PathBuf> = OnceLock::new();
    RUN.get_or_init(|| {
        let dir = tmp("sampling").keep();
        let data = verse_file(&dir);
        let run = dir.join("run");
        let mut args = small_train(&data, &run, "6");
        args.extend_from_slice(&["--tokenizer", "char"]);
        ok(&args);
        run
    })
}

/// `sample` of the model with `extra` flags: 60 tokens drawn at temperature 1 from all tokens
/// (past the block of 32: the window slides), seed 5 unless `extra` says.
fn sample(extra: &[&str]) -> Out {
    let mut args = vec![
        "sample",
        "--checkpoint",
        s(model()),
        "--tokens",
        "60",
        "--temperature",
        "1",
        "--top-k",
        "0",
        "--no-stop",
        "--timing",
    ];
    if !extra.contains(&"--seed") {
        args.extend_from_slice(&["--seed", "5"]);
    }
    if !extra.iter().any(|a| a.starts_with("--prompt")) {
        args.extend_from_slice(&["--prompt", PROMPT]);
    }
    args.extend_from_slice(extra);
    ok(&args)
}

/// The tokens drawn, from `--timing`'s "over N tokens" (N + 1 were drawn).
fn drawn(o: &Out) -> usize {
    let line = o.stderr.lines().find(|l| l.starts_with("timing")).unwrap();
    let after = line.split(" over ").nth(1).unwrap();
    after.split(' ').next().unwrap().parse::<usize>().unwrap() + 1
}

#[test]
fn stop_strings_end_the_text_before_them() {
    let full = sample(&[]);
    assert_eq!(drawn(&full), 60);
    let text = full.stdout.strip_suffix('\n').unwrap();
    let cont = text.strip_prefix(PROMPT).expect("the prompt comes first");
    assert_eq!(cont.chars().count(), 60, "one character a token");
    // Two characters from the middle of the continuation (two tokens: the first is held back
    // until the second shows whether the string is there), and one that never appears.
    let chars: Vec<char> = cont.chars().collect();
    let stop: String = chars[20..22].iter().collect();
    let at = cont.find(&stop).unwrap();
    let o = sample(&["--stop", "never in this text: \u{1}", "--stop", &stop]);
    assert_eq!(
        o.stdout,
        format!("{PROMPT}{}\n", &cont[..at]),
        "stop {stop:?}"
    );
    // Generation ended with the stop string's last token.
    assert_eq!(drawn(&o), cont[..at].chars().count() + 2);
    // A string that never appears changes nothing.
    let o = sample(&["--stop", "never in this text: \u{1}"]);
    assert_eq!(o.stdout, full.stdout);
    // The prompt is not searched: a stop string found only in the prompt does not stop.
    if !cont.contains("ROMEO") {
        assert_eq!(sample(&["--stop", "ROMEO"]).stdout, full.stdout);
    }
    fails_with(
        &["sample", "--checkpoint", s(model()), "--stop", ""],
        "--stop must not be empty",
    );
}

#[test]
fn the_prompt_can_come_from_a_file() {
    let dir = tmp("prompt-file");
    let file = dir.join("prompt.txt");
    std::fs::write(&file, PROMPT).unwrap();
    assert_eq!(
        sample(&["--prompt-file", s(&file)]).stdout,
        sample(&["--prompt", PROMPT]).stdout
    );
    // The file's text exactly: a final newline is part of the prompt.
    std::fs::write(&file, format!("{PROMPT}\n")).unwrap();
    let with_newline = sample(&["--prompt-file", s(&file)]).stdout;
    assert_eq!(with_newline, sample(&["--prompt", "ROMEO: But\n"]).stdout);
    assert!(with_newline.starts_with("ROMEO: But\n"));

    let run = s(model());
    let missing = dir.join("missing.txt");
    fails_with_all(
        &["sample", "--checkpoint", run, "--prompt-file", s(&missing)],
        &["--prompt-file", "missing.txt"],
    );
    let latin1 = dir.join("latin1.txt");
    std::fs::write(&latin1, b"ROMEO: caf\xe9").unwrap();
    fails_with_all(
        &["sample", "--checkpoint", run, "--prompt-file", s(&latin1)],
        &["latin1.txt", "not UTF-8", "offset 10"],
    );
    fails_with(
        &["sample", "--checkpoint", run, "--prompt-file", s(&dir)],
        "--prompt-file",
    );
    fails_with(
        &[
            "sample",
            "--checkpoint",
            run,
            "--prompt-file",
            s(&file),
            "--prompt",
            "x",
        ],
        "not both",
    );
}

#[test]
fn a_seed_gives_the_same_text_with_and_without_the_kv_cache() {
    for seed in ["5", "6"] {
        let cached = sample(&["--seed", seed, "--weights", "f32"]);
        let full = sample(&["--seed", seed, "--no-kv-cache"]);
        assert!(cached.stderr.contains("f32 decoding"), "{}", cached.stderr);
        assert!(full.stderr.contains("no kv cache"), "{}", full.stderr);
        assert_eq!(cached.stdout, full.stdout, "seed {seed}");
        // And on two threads, and again: the same text.
        let two = sample(&["--seed", seed, "--threads", "2"]);
        assert_eq!(two.stdout, cached.stdout, "seed {seed}, 2 threads");
    }
    // The seed matters: another one gives other text.
    assert_ne!(
        sample(&["--seed", "5"]).stdout,
        sample(&["--seed", "6"]).stdout
    );
    fails_with(
        &[
            "sample",
            "--checkpoint",
            s(model()),
            "--no-kv-cache",
            "--device",
            "cuda",
        ],
        "--no-kv-cache runs on the CPU",
    );
}

/// `sample` takes the weights' checksum while it generates (so the first token does not wait
/// for it), and still fails in one line, naming the file, when the weights are damaged in a
/// way their loading does not notice (a flipped bit in the middle of a value); `--timing`
/// says when the first token came after the process started.
#[test]
fn damaged_weights_stop_sampling_in_one_line() {
    let dir = tmp("damaged");
    let run = dir.join("run");
    std::fs::create_dir_all(&run).unwrap();
    for e in std::fs::read_dir(model()).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_file() {
            std::fs::copy(e.path(), run.join(e.file_name())).unwrap();
        }
    }
    let o = ok(&[
        "sample",
        "--checkpoint",
        s(&run),
        "--tokens",
        "5",
        "--prompt",
        PROMPT,
        "--timing",
    ]);
    let timing = o.stderr.lines().find(|l| l.starts_with("timing")).unwrap();
    assert!(timing.contains("ms after the process started"), "{timing}");
    let weights = run.join("model.safetensors");
    let mut bytes = std::fs::read(&weights).unwrap();
    let i = bytes.len() - 4 * 40; // inside the last tensor's values, not the header
    bytes[i] ^= 0x01;
    std::fs::write(&weights, &bytes).unwrap();
    for tokens in ["1", "40"] {
        fails_with_all(
            &[
                "sample",
                "--checkpoint",
                s(&run),
                "--tokens",
                tokens,
                "--prompt",
                PROMPT,
            ],
            &["model.safetensors", "damaged"],
        );
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
