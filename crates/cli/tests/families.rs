//! Model families from the command line (issue 17): the Llama preset and flags, GPT-2 with
//! rotary positions, Hugging Face Llama directories (sharded, without a tokenizer) to train
//! from, run directories that record their family and resume, and the refusals of shapes a
//! family cannot take.

mod common;

use common::*;
use std::path::Path;

fn config_json(dir: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap()
}

fn train(out: &Path, data: &Path, steps: &str, extra: &[&str]) -> Out {
    let mut args = small_train(data, out, steps);
    args.extend_from_slice(extra);
    ok(&args)
}

/// The llama-tiny preset's family through train, resume, eval and sample (the decoding cache
/// on the CPU), and its run directory in transformers' Llama format.
#[test]
fn a_llama_trains_resumes_and_samples() {
    let dir = tmp("fam-llama");
    let data = verse_file(&dir);
    let out = dir.join("run");
    let o = train(
        &out,
        &data,
        "4",
        &["--preset", "llama-tiny", "--n-kv-head", "2"],
    );
    assert!(o.stderr.contains("llama with 2 layers"), "{}", o.stderr);
    let c = config_json(&out);
    assert_eq!(c["model_type"], "llama");
    assert_eq!(c["num_key_value_heads"], 2);
    assert_eq!(c["tie_word_embeddings"], false);
    assert_eq!(c["intermediate_size"], 344);
    ok(&["train", "--resume", s(&out), "--steps", "6"]);
    ok(&["eval", "--checkpoint", s(&out), "--data", s(&data)]);
    let a = ok(&[
        "sample",
        "--checkpoint",
        s(&out),
        "--prompt",
        "ROMEO:",
        "--tokens",
        "12",
        "--temperature",
        "0",
    ]);
    assert!(a.stdout.starts_with("ROMEO:"), "{}", a.stdout);
    // Two greedy samples: the same text twice, between them nanoGPT's separator.
    let two = ok(&[
        "sample",
        "--checkpoint",
        s(&out),
        "--prompt",
        "ROMEO:",
        "--tokens",
        "12",
        "--temperature",
        "0",
        "--num-samples",
        "2",
    ]);
    assert_eq!(
        two.stdout,
        format!("{}---------------\n{}", a.stdout, a.stdout)
    );
    fails_with(
        &["sample", "--checkpoint", s(&out), "--num-samples", "0"],
        "--num-samples must be at least 1",
    );
    // Samples side by side (two at a time, on the CPU engine's one cache a sequence) are the
    // samples drawn one after the other: each from its own stream of the seed, so they differ,
    // and a stop string ends one without ending the others.
    let many = |batch: &str| {
        ok(&[
            "sample",
            "--checkpoint",
            s(&out),
            "--prompt",
            "ROMEO:",
            "--tokens",
            "40",
            "--temperature",
            "1.5",
            "--seed",
            "7",
            "--num-samples",
            "3",
            "--stop",
            "e",
            "--batch",
            batch,
        ])
        .stdout
    };
    let one_by_one = many("1");
    assert_eq!(many("2"), one_by_one);
    assert_eq!(many("8"), one_by_one);
    let texts: Vec<&str> = one_by_one.split("---------------\n").collect();
    assert_eq!(texts.len(), 3, "{one_by_one}");
    assert!(texts[0] != texts[1] && texts[1] != texts[2], "{one_by_one}");
    fails_with(
        &["sample", "--checkpoint", s(&out), "--batch", "0"],
        "--batch must be at least 1",
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `--pos rope` on GPT-2: no position table, a config that transformers will refuse rather
/// than misread, and a run that resumes.
#[test]
fn gpt2_with_rotary_positions() {
    let dir = tmp("fam-rope");
    let data = verse_file(&dir);
    let out = dir.join("run");
    train(&out, &data, "3", &["--pos", "rope", "--rope-theta", "500"]);
    let c = config_json(&out);
    assert_eq!(c["model_type"], "ferrogpt-gpt2-rope");
    assert_eq!(c["rope_theta"], 500.0);
    ok(&["train", "--resume", s(&out), "--steps", "4"]);
    ok(&[
        "sample",
        "--checkpoint",
        s(&out),
        "--tokens",
        "5",
        "--temperature",
        "0",
    ]);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// transformers' sharded Llama without a tokenizer: evaluated and fine-tuned on token files.
#[test]
fn a_hugging_face_llama_directory_trains_on_token_files() {
    let dir = tmp("fam-hf-llama");
    let hf = fixture("llama-tiny");
    let tokens = dir.join("t.bin");
    token_file(
        &tokens,
        &(0..800).map(|i| (i * 13 % 96) as u16).collect::<Vec<_>>(),
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
        "2",
        "--batch-size",
        "2",
        "--seq-len",
        "24",
        "--threads",
        "1",
    ]);
    assert!(o.stderr.contains("llama with 2 layers"), "{}", o.stderr);
    let c = config_json(&out);
    assert_eq!(
        (
            c["num_attention_heads"].clone(),
            c["num_key_value_heads"].clone()
        ),
        (4.into(), 2.into())
    );
    ok(&["train", "--resume", s(&out), "--steps", "3"]);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Shapes a family cannot take fail in one line naming the problem.
#[test]
fn impossible_family_shapes_are_refused() {
    let dir = tmp("fam-bad");
    let data = verse_file(&dir);
    let out = dir.join("run");
    let with = |extra: &[&'static str]| -> Vec<&str> {
        let mut v = small_train(&data, &out, "1");
        v.extend_from_slice(extra);
        v
    };
    fails_with(&with(&["--n-kv-head", "2"]), "needs the llama family");
    fails_with(&with(&["--untied"]), "always tied");
    fails_with(&with(&["--family", "llama", "--pos", "learned"]), "rotary");
    fails_with(
        &with(&["--family", "llama", "--n-kv-head", "3"]),
        "n_kv_head",
    );
    fails_with(
        &with(&["--family", "mamba"]),
        "--family must be gpt2 or llama",
    );
    fails_with(&with(&["--pos", "alibi"]), "--pos must be learned or rope");
    std::fs::remove_dir_all(&dir).unwrap();
}
