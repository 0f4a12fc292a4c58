//! GGUF files that `ferrogpt export --gguf` writes, run by llama.cpp itself: they load, and
//! llama.cpp's greedy decoding (`llama-simple`, which tokenizes the prompt with the vocabulary
//! and merges from the file) gives the text of `ferrogpt sample --temperature 0`.
//!
//! Needs a llama.cpp build: `LLAMA_CPP=/path/to/llama.cpp/build` (the folder holding
//! `bin/llama-simple`, or that folder itself); without it the tests say SKIPPED. f32 and f16
//! files must decode the same text; a q8_0 file must load and decode (llama.cpp quantizes the
//! activations of its Q8_0 products with f16 scales, so near-ties may go the other way). A
//! character vocabulary has no end-of-text token, and llama.cpp then ends at id 11 (its
//! default): its text must be the beginning of ours.

mod common;

use common::*;
use std::path::{Path, PathBuf};
use std::process::Command;

/// llama.cpp's `llama-simple`, or None (the test is then skipped).
fn llama_simple() -> Option<PathBuf> {
    let dir = PathBuf::from(std::env::var_os("LLAMA_CPP")?);
    let found = [dir.join("bin/llama-simple"), dir.join("llama-simple")]
        .into_iter()
        .find(|p| p.is_file());
    assert!(
        found.is_some(),
        "LLAMA_CPP={} holds no bin/llama-simple",
        dir.display()
    );
    found
}

/// llama.cpp's greedy continuation of `prompt` by `n` tokens: the prompt and the text.
fn llama_greedy(bin: &Path, model: &Path, prompt: &str, n: usize) -> String {
    let o = Command::new(bin)
        .args(["-m", s(model), "-n", &n.to_string(), prompt])
        .output()
        .expect("run llama-simple");
    assert!(
        o.status.success(),
        "llama-simple failed on {}: {}",
        model.display(),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout)
        .unwrap()
        .trim_end_matches('\n')
        .to_string()
}

/// ferrogpt's greedy continuation, as `llama_greedy`.
fn ours(model: &Path, prompt: &str, n: usize) -> String {
    ok(&[
        "sample",
        "--checkpoint",
        s(model),
        "--prompt",
        prompt,
        "--tokens",
        &n.to_string(),
        "--temperature",
        "0",
        "--no-stop",
    ])
    .stdout
    .trim_end_matches('\n')
    .to_string()
}

/// Exports `checkpoint` as f32, f16 and q8_0 and compares the greedy text of each. `eot`:
/// the vocabulary has an end-of-text token; without one, llama.cpp takes id 11 as its end
/// of text (its default for byte-level BPE), so its text may stop earlier than ours.
fn check(bin: &Path, checkpoint: &Path, dir: &Path, prompt: &str, n: usize, eot: bool) {
    for ty in ["f32", "f16", "q8_0"] {
        let file = dir.join(format!("model-{ty}.gguf"));
        ok(&[
            "export",
            "--gguf",
            s(&file),
            "--checkpoint",
            s(checkpoint),
            "--type",
            ty,
        ]);
        let theirs = llama_greedy(bin, &file, prompt, n);
        assert!(
            theirs.starts_with(prompt) && theirs.len() > prompt.len(),
            "{ty}: llama.cpp gave {theirs:?}"
        );
        if ty == "q8_0" {
            continue;
        }
        let ours = ours(&file, prompt, n);
        if eot {
            assert_eq!(theirs, ours, "{ty}");
        } else {
            assert!(
                ours.starts_with(&theirs),
                "{ty}: {theirs:?} vs ours {ours:?}"
            );
        }
    }
}

#[test]
fn llama_cpp_decodes_a_byte_level_bpe_model_as_we_do() {
    let Some(bin) = llama_simple() else {
        eprintln!("SKIPPED: set LLAMA_CPP to a llama.cpp build folder");
        return;
    };
    // A GPT-2 trained by transformers with its own byte-level BPE (merges included).
    let dir = tmp("llamacpp-bpe");
    check(
        &bin,
        &fixture("hf-bpe"),
        &dir,
        "ROMEO:\nBut soft, what light",
        24,
        true,
    );
}

#[test]
fn llama_cpp_decodes_a_character_model_as_we_do() {
    let Some(bin) = llama_simple() else {
        eprintln!("SKIPPED: set LLAMA_CPP to a llama.cpp build folder");
        return;
    };
    // One of our runs with a character tokenizer (exported as a byte-level BPE without merges).
    let dir = tmp("llamacpp-char");
    let data = verse_file(&dir);
    let run = dir.join("run");
    let mut args = small_train(&data, &run, "150");
    args.extend_from_slice(&["--lr", "0.01", "--tokenizer", "char"]);
    ok(&args);
    check(&bin, &run, &dir, "ROMEO: But", 20, false);
}
