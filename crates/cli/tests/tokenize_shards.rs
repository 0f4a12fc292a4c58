//! `ferrogpt tokenize` into llm.c shards: a folder of text files, JSONL and Parquet each round
//! trip (shard names and sizes, total tokens, decoding the shards in order gives the documents,
//! each after `<|endoftext|>`), a long text keeps the ids of encoding it whole, the shards
//! load as a `ShardSet`; bad inputs get one line on stderr, exit 1, and leave no shard.

mod common;

use common::{fails_with, ok, s, tmp};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use ferrogpt_train::shards::ShardSet;
use ferrogpt_train::tokenizer::Tokenizer;
use ferrogpt_train::tokfile::read_tokens;

const EOT: &str = "<|endoftext|>";

fn shakespeare() -> String {
    let gz = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/data/tinyshakespeare.txt.gz"
    ))
    .unwrap();
    let mut text = String::new();
    flate2::read::GzDecoder::new(&gz[..])
        .read_to_string(&mut text)
        .unwrap();
    text
}

/// 40 documents of 0 to ~9 KB from Tiny Shakespeare, some with non-ASCII text.
fn documents() -> Vec<String> {
    let text = shakespeare();
    let mut docs = Vec::new();
    let mut start = 0;
    for i in 0..40 {
        let end = text[..start + 250 * (i % 37)]
            .rfind('\n')
            .unwrap_or(start)
            .max(start);
        let mut d = text[start..end].to_string();
        if i % 7 == 3 {
            d.push_str("\ncafé — naïve 東京 🎭\n");
        }
        docs.push(d);
        start = end;
    }
    assert!(docs.iter().any(|d| d.is_empty()));
    docs
}

/// The shards `base_val_000000.bin`, `base_train_000001.bin`, ... that exist, in order.
fn shard_files(base: &Path) -> Vec<PathBuf> {
    (0..)
        .map(|i| {
            let split = if i == 0 { "val" } else { "train" };
            PathBuf::from(format!("{}_{split}_{i:06}.bin", base.display()))
        })
        .take_while(|p| p.exists())
        .collect()
}

/// Checks the shards of `base`: every one `size` tokens but the last, their concatenation
/// decodes to `docs` (each after the end-of-text marker if `eot`), nothing else was written
/// beside them. Returns the ids.
fn check_shards(base: &Path, size: usize, docs: &[String], eot: bool) -> Vec<u32> {
    let files = shard_files(base);
    assert!(files.len() >= 2, "{files:?}");
    let dir = base.parent().unwrap();
    assert_eq!(
        std::fs::read_dir(dir).unwrap().count(),
        files.len(),
        "only the shards"
    );
    let mut ids = Vec::new();
    for (i, f) in files.iter().enumerate() {
        let t = read_tokens(f).unwrap();
        if i + 1 < files.len() {
            assert_eq!(t.len(), size, "{}", f.display());
        } else {
            assert!(!t.is_empty() && t.len() <= size, "{}", f.display());
        }
        ids.extend(t);
    }
    let tok = Tokenizer::gpt2().unwrap();
    let marker = if eot { EOT } else { "" };
    let want: String = docs.iter().map(|d| format!("{marker}{d}")).collect();
    assert_eq!(tok.decode(&ids).unwrap(), want);
    let n: usize = docs
        .iter()
        .map(|d| usize::from(eot) + tok.encode(d).unwrap().len())
        .sum();
    assert_eq!(ids.len(), n);
    // The loader reads them: every shard, all the tokens.
    let set = ShardSet::open(&[dir.display().to_string()]).unwrap();
    assert_eq!((set.len(), set.total_tokens()), (files.len(), n as u64));
    ids
}

#[test]
fn a_folder_of_text_files() {
    let dir = tmp("folder");
    let (docs_dir, out) = (dir.join("docs"), dir.join("out"));
    std::fs::create_dir_all(&docs_dir).unwrap();
    std::fs::create_dir_all(&out).unwrap();
    let docs = documents();
    for (i, d) in docs.iter().enumerate() {
        std::fs::write(docs_dir.join(format!("doc_{i:03}.txt")), d).unwrap();
    }
    let base = out.join("shakespeare");
    let out_arg = format!("{}.bin", base.display()); // `.bin` is dropped
    ok(&[
        "tokenize",
        s(&docs_dir),
        "--out",
        &out_arg,
        "--shard-tokens",
        "7000",
        "--threads",
        "2",
    ]);
    check_shards(&base, 7000, &docs, true);
    // Again: the old shards are refused, not overwritten or mixed.
    fails_with(&["tokenize", s(&docs_dir), "--out", s(&base)], "exists");
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn a_long_text_in_pieces_keeps_its_ids() {
    // One text file (1.1 MB, encoded in pieces) into shards, no end-of-text by default.
    let dir = tmp("long");
    let out = dir.join("out");
    std::fs::create_dir_all(&out).unwrap();
    let text = shakespeare();
    let input = dir.join("input.txt");
    std::fs::write(&input, &text).unwrap();
    let base = out.join("ts");
    ok(&[
        "tokenize",
        s(&input),
        "--out",
        s(&base),
        "--shard-tokens",
        "100000",
    ]);
    let ids = check_shards(&base, 100_000, std::slice::from_ref(&text), false);
    assert_eq!(ids, Tokenizer::gpt2().unwrap().encode(&text).unwrap());
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn jsonl() {
    let dir = tmp("jsonl");
    let out = dir.join("out");
    std::fs::create_dir_all(&out).unwrap();
    let docs = documents();
    let mut lines = String::new();
    for (i, d) in docs.iter().enumerate() {
        let line = serde_json::json!({"id": i, "content": d, "meta": {"lang": "en"}});
        lines.push_str(&format!("{line}\n"));
        if i == 5 {
            lines.push_str("  \n"); // blank lines are skipped
        }
    }
    let input = dir.join("docs.jsonl");
    std::fs::write(&input, lines).unwrap();
    let base = out.join("web");
    let args = [
        "tokenize",
        s(&input),
        "--out",
        s(&base),
        "--text-field",
        "content",
    ];
    ok(&[&args[..], &["--shard-tokens", "5000"]].concat());
    check_shards(&base, 5000, &docs, true);
    // Without end-of-text ids.
    std::fs::remove_dir_all(&out).unwrap();
    std::fs::create_dir_all(&out).unwrap();
    ok(&[&args[..], &["--shard-tokens", "5000", "--eot", "false"]].concat());
    check_shards(&base, 5000, &docs, false);
    std::fs::remove_dir_all(dir).unwrap();
}

/// A Parquet file as FineWeb's: an id column and a nullable UTF-8 `text` column, Snappy
/// pages, several row groups; `None` documents are null rows.
fn write_parquet(path: &Path, docs: &[Option<String>], rows_per_group: usize) {
    use parquet::basic::Compression;
    use parquet::data_type::{ByteArray, ByteArrayType, Int64Type};
    use parquet::file::properties::WriterProperties;
    use parquet::file::writer::SerializedFileWriter;
    let schema = "message schema { REQUIRED INT64 id; OPTIONAL BYTE_ARRAY text (UTF8); }";
    let schema = Arc::new(parquet::schema::parser::parse_message_type(schema).unwrap());
    let props = WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
        .set_data_page_row_count_limit(7)
        .build();
    let file = std::fs::File::create(path).unwrap();
    let mut w = SerializedFileWriter::new(file, schema, Arc::new(props)).unwrap();
    for (g, group) in docs.chunks(rows_per_group).enumerate() {
        let mut rg = w.next_row_group().unwrap();
        let ids: Vec<i64> = (0..group.len())
            .map(|i| (g * rows_per_group + i) as i64)
            .collect();
        let defs: Vec<i16> = group.iter().map(|d| i16::from(d.is_some())).collect();
        let values: Vec<ByteArray> = group.iter().flatten().map(|d| d.as_str().into()).collect();
        let mut col = rg.next_column().unwrap().unwrap();
        col.typed::<Int64Type>()
            .write_batch(&ids, None, None)
            .unwrap();
        col.close().unwrap();
        let mut col = rg.next_column().unwrap().unwrap();
        col.typed::<ByteArrayType>()
            .write_batch(&values, Some(&defs), None)
            .unwrap();
        col.close().unwrap();
        rg.close().unwrap();
    }
    w.close().unwrap();
}

#[test]
fn parquet() {
    let dir = tmp("parquet");
    let out = dir.join("out");
    std::fs::create_dir_all(&out).unwrap();
    let docs = documents();
    let mut rows: Vec<Option<String>> = docs.iter().cloned().map(Some).collect();
    rows.insert(9, None);
    rows.insert(20, None);
    let input = dir.join("000_00000.parquet");
    write_parquet(&input, &rows, 16);
    let base = out.join("fineweb");
    ok(&[
        "tokenize",
        s(&input),
        "--out",
        s(&base),
        "--shard-tokens",
        "6000",
    ]);
    check_shards(&base, 6000, &docs, true);
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn bad_inputs_get_one_line_and_leave_no_shard() {
    let dir = tmp("bad");
    let out = dir.join("out");
    std::fs::create_dir_all(&out).unwrap();
    let base = out.join("x");
    let b = s(&base);
    let write = |name: &str, bytes: &[u8]| {
        let p = dir.join(name);
        std::fs::write(&p, bytes).unwrap();
        p
    };
    // A bad line after enough good ones to fill shards: the shards written are removed.
    let good = serde_json::json!({"text": shakespeare()[..20000]}).to_string();
    let mut lines = format!("{good}\n{good}\n");
    lines.push_str("{\"text\": \"unterminated\n");
    let not_json = write("bad.jsonl", lines.as_bytes());
    fails_with(
        &[
            "tokenize",
            s(&not_json),
            "--out",
            b,
            "--shard-tokens",
            "100",
        ],
        "bad.jsonl:3",
    );
    let no_field = write("nofield.jsonl", b"{\"body\": \"hello\"}\n");
    fails_with(
        &["tokenize", s(&no_field), "--out", b],
        "nofield.jsonl:1: field \"text\"",
    );
    let not_string = write("num.jsonl", b"{\"text\": 42}\n");
    fails_with(&["tokenize", s(&not_string), "--out", b], "found 42");
    let not_parquet = write("fake.parquet", b"PAR1 this is not parquet");
    fails_with(
        &["tokenize", s(&not_parquet), "--out", b],
        "not a Parquet file",
    );
    let pq = dir.join("ok.parquet");
    write_parquet(&pq, &[Some("hello".into())], 4);
    fails_with(
        &["tokenize", s(&pq), "--out", b, "--text-field", "body"],
        "no column \"body\"",
    );
    let folder = dir.join("folder");
    std::fs::create_dir_all(&folder).unwrap();
    std::fs::write(folder.join("a.txt"), "fine text\n").unwrap();
    std::fs::write(folder.join("b.txt"), b"broken \xff utf-8").unwrap();
    fails_with(
        &["tokenize", s(&folder), "--out", b],
        "invalid UTF-8 at byte offset 7",
    );
    let missing = dir.join("missing.txt");
    fails_with(&["tokenize", s(&missing), "--out", b], "missing.txt");
    let text = write("t.txt", b"some text\n");
    fails_with(
        &["tokenize", s(&text), "--out", b, "--shard-tokens", "0"],
        "--shard-tokens",
    );
    fails_with(
        &["tokenize", "--tokenizer", "char", s(&folder), "--out", b],
        "cannot write shards",
    );
    assert_eq!(
        std::fs::read_dir(&out).unwrap().count(),
        0,
        "no shard left behind"
    );
    std::fs::remove_dir_all(dir).unwrap();
}

/// `train` on a glob of shards: sequential windows through memory maps, the validation shard
/// evaluated, exact resume from the run directory alone, a changed shard refused.
#[test]
fn training_reads_shards_and_resumes_exactly() {
    let dir = tmp("train-shards");
    let text = dir.join("in.txt");
    std::fs::write(&text, &shakespeare()[..120_000]).unwrap();
    let out = dir.join("ds");
    ok(&[
        "tokenize",
        "--tokenizer",
        "gpt2",
        s(&text),
        "--out",
        s(&out),
        "--shard-tokens",
        "6000",
    ]);
    let pattern = format!("{}/ds_train_*.bin", dir.display());
    let val = dir.join("ds_val_000000.bin");
    let train = |run: &Path, steps: &str| {
        ok(&[
            "train",
            "--data",
            &pattern,
            "--val-data",
            s(&val),
            "--tokenizer",
            "gpt2",
            "--out",
            s(run),
            "--steps",
            steps,
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
            "4",
            "--eval-batches",
            "2",
            "--sample-tokens",
            "0",
            "--threads",
            "1",
            "--lr-schedule",
            "constant",
        ])
    };
    let (whole, split) = (dir.join("whole"), dir.join("split"));
    train(&whole, "12");
    train(&split, "5");
    ok(&[
        "train",
        "--resume",
        s(&split),
        "--steps",
        "12",
        "--threads",
        "1",
    ]);
    let metrics = |d: &Path| std::fs::read_to_string(d.join("metrics.jsonl")).unwrap();
    let losses = |d: &Path| -> Vec<(String, String)> {
        metrics(d)
            .lines()
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).unwrap();
                (v["train_loss"].to_string(), v["val_loss"].to_string())
            })
            .collect()
    };
    // The same losses, step for step (the first half also evaluated at its last step, 5).
    let (a, mut b) = (losses(&whole), losses(&split));
    b[4].1 = "null".into();
    assert_eq!(a, b, "a resumed sharded run must continue exactly");
    assert!(metrics(&whole).contains("val_loss"));
    let state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(whole.join("state.json")).unwrap()).unwrap();
    assert!(
        state["shard_loader"]["offset"].is_u64(),
        "{}",
        state["shard_loader"]
    );
    let n_train = state["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["role"] == "train")
        .count();
    assert!(
        n_train >= 2,
        "expected several training shards, found {n_train}"
    );
    // A changed shard is refused, naming it.
    let first = dir.join("ds_train_000001.bin");
    let mut bytes = std::fs::read(&first).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    std::fs::write(&first, &bytes).unwrap();
    fails_with(
        &["train", "--resume", s(&whole), "--steps", "13"],
        "ds_train_000001.bin",
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
