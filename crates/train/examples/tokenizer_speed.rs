//! Encoding speed of GPT-2's BPE and of a char vocabulary: our encoders (tiktoken-rs for
//! GPT-2, a table for char) beside Hugging Face's `tokenizers` library reading the
//! tokenizer.json we write, on Tiny Shakespeare (1,115,394 bytes), one thread. Medians of 7
//! rounds after one untimed round; the ids are checked equal first.
//!
//! Run: cargo run --release -p ferrogpt-train --example tokenizer_speed

use std::io::Read;
use std::str::FromStr;
use std::time::Instant;

use ferrogpt_train::tokenizer::{hf, Tokenizer};

fn median_s(mut f: impl FnMut()) -> f64 {
    f();
    let mut t: Vec<f64> = (0..7)
        .map(|_| {
            let t0 = Instant::now();
            f();
            t0.elapsed().as_secs_f64()
        })
        .collect();
    t.sort_by(f64::total_cmp);
    t[3]
}

fn main() {
    let gz = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../cli/data/tinyshakespeare.txt.gz"
    ))
    .expect("the bundled Tiny Shakespeare");
    let mut text = String::new();
    flate2::read::GzDecoder::new(&gz[..])
        .read_to_string(&mut text)
        .expect("gzip");
    let mb = text.len() as f64 / 1e6;
    println!("Tiny Shakespeare, {} bytes, one thread", text.len());
    println!("| tokenizer | ours | tokenizers library | ours / library |");
    println!("|---|---|---|---|");
    for tok in [
        Tokenizer::gpt2().unwrap(),
        Tokenizer::from_corpus_char(&text),
    ] {
        let (json, _) = hf::to_files(&tok, 1024).unwrap().unwrap();
        let lib = tokenizers::Tokenizer::from_str(&json).unwrap();
        let ours = tok.encode(&text).unwrap();
        assert_eq!(
            lib.encode_fast(text.as_str(), false).unwrap().get_ids(),
            &ours[..]
        );
        let a = median_s(|| {
            std::hint::black_box(tok.encode(&text).unwrap());
        });
        let b = median_s(|| {
            std::hint::black_box(lib.encode_fast(text.as_str(), false).unwrap());
        });
        println!(
            "| {} | {:.1} ms ({:.1} MB/s) | {:.1} ms ({:.1} MB/s) | {:.2}x |",
            tok.name(),
            a * 1e3,
            mb / a,
            b * 1e3,
            mb / b,
            b / a
        );
    }
}
