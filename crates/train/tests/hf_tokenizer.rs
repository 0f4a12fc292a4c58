//! Tokenizers in Hugging Face's format, against the `tokenizers` library itself: GPT-2's BPE
//! and char vocabularies as we write them give the library exactly our ids (on Tiny Shakespeare
//! and on random text); written files read back as the same variant; a directory made by
//! transformers (tests/fixtures/hf-bpe, scripts/make_hf_bpe_fixture.py) gives the ids the
//! library gave there, from tokenizer.json and from vocab.json + merges.txt.

mod common;

use std::str::FromStr;

use ferrogpt_train::data::DataError;
use ferrogpt_train::tokenizer::{hf, StreamDecoder, Tokenizer};
use rand::{Rng, SeedableRng};

/// The library's tokenizer for the tokenizer.json we write for `tok`.
fn library(tok: &Tokenizer) -> tokenizers::Tokenizer {
    let (json, _) = hf::to_files(tok, 1024).unwrap().unwrap();
    tokenizers::Tokenizer::from_str(&json).unwrap()
}

fn lib_ids(lib: &tokenizers::Tokenizer, text: &str) -> Vec<u32> {
    lib.encode(text, false).unwrap().get_ids().to_vec()
}

/// Random text: words, digits, runs of spaces and newlines, contractions, punctuation and
/// characters of 1 to 4 UTF-8 bytes.
fn random_text(rng: &mut impl Rng, n: usize) -> String {
    let pieces = [
        " ",
        "  ",
        "\n",
        "\n\n",
        "\t",
        "'s",
        "'ll",
        "'t",
        "'re",
        " the",
        "ing",
        "123",
        "4",
        "é",
        "ß",
        "東京",
        "🦀",
        "👩‍👩‍👧",
        "—",
        "!?",
        ".",
        ",",
        " A",
        "z",
        "\r\n",
        "<|endoftext|>",
        "\u{a0}",
        "ǅ",
        "Ω",
    ];
    (0..n)
        .map(|_| {
            if rng.gen_bool(0.3) {
                let len = rng.gen_range(1..8);
                (0..len)
                    .map(|_| rng.gen_range(b'a'..=b'z') as char)
                    .collect()
            } else {
                pieces[rng.gen_range(0..pieces.len())].to_string()
            }
        })
        .collect()
}

#[test]
fn gpt2_in_the_library_gives_tiktokens_ids() {
    let ours = Tokenizer::gpt2().unwrap();
    let lib = library(&ours);
    assert_eq!(lib.get_vocab_size(true), 50257);
    let text = common::shakespeare();
    let ids = ours.encode(&text).unwrap();
    assert_eq!(lib_ids(&lib, &text), ids);
    assert_eq!(lib.decode(&ids, false).unwrap(), text);
    let mut rng = rand_xoshiro::Xoshiro256PlusPlus::seed_from_u64(7);
    for _ in 0..300 {
        let t = random_text(&mut rng, 40);
        assert_eq!(lib_ids(&lib, &t), ours.encode(&t).unwrap(), "{t:?}");
    }
}

#[test]
fn char_vocab_in_the_library_gives_our_ids() {
    let text = common::shakespeare();
    let ours = Tokenizer::from_corpus_char(&text);
    let lib = library(&ours);
    let ids = ours.encode(&text).unwrap();
    assert_eq!(lib_ids(&lib, &text), ids);
    assert_eq!(lib.decode(&ids, false).unwrap(), text);
    // Odd characters: newlines, spaces, multi-byte ones, a combining sequence.
    let odd = "a\n\n  é👩‍👩‍👧 \u{301}x";
    let ours = Tokenizer::from_corpus_char(odd);
    let lib = library(&ours);
    let ids = ours.encode(odd).unwrap();
    assert_eq!(lib_ids(&lib, odd), ids);
    assert_eq!(lib.decode(&ids, false).unwrap(), odd);
}

#[test]
fn written_files_read_back_as_the_same_tokenizer() {
    let dir = common::tmp_dir("hf-roundtrip");
    for tok in [
        Tokenizer::gpt2().unwrap(),
        Tokenizer::from_corpus_char("hello, wörld\n"),
    ] {
        let names = hf::save(&tok, &dir, 64).unwrap();
        assert_eq!(names, hf::FILES);
        let back = Tokenizer::load(&dir).unwrap();
        assert_eq!(back.name(), tok.name());
        assert_eq!(back, tok);
        let config: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.join("tokenizer_config.json")).unwrap())
                .unwrap();
        assert_eq!(config["model_max_length"], 64);
        // The file alone also reads.
        assert_eq!(Tokenizer::load(&dir.join("tokenizer.json")).unwrap(), tok);
    }
    let none = Tokenizer::IdsOnly { vocab_size: 9 };
    assert!(hf::to_files(&none, 64).unwrap().is_none());
}

fn fixture() -> (std::path::PathBuf, serde_json::Value) {
    let dir = common::repo().join("tests/fixtures/hf-bpe");
    let expected =
        serde_json::from_slice(&std::fs::read(dir.join("expected.json")).unwrap()).unwrap();
    (dir, expected)
}

fn check_fixture_ids(tok: &Tokenizer, expected: &serde_json::Value) {
    assert_eq!(
        tok.vocab_size() as u64,
        expected["vocab_size"].as_u64().unwrap()
    );
    for case in expected["texts"].as_array().unwrap() {
        let text = case["text"].as_str().unwrap();
        let want: Vec<u32> = serde_json::from_value(case["ids"].clone()).unwrap();
        assert_eq!(tok.encode(text).unwrap(), want, "{text:?}");
        assert_eq!(tok.decode(&want).unwrap(), text);
        let mut d = StreamDecoder::new(tok);
        let mut streamed: String = want.iter().map(|&id| d.push(id).unwrap()).collect();
        streamed += &d.finish();
        assert_eq!(streamed, text);
    }
    let eot = tok.eot().unwrap();
    assert_eq!(tok.decode(&[eot]).unwrap(), "<|endoftext|>");
}

#[test]
fn a_transformers_directory_gives_the_librarys_ids() {
    let (dir, expected) = fixture();
    let tok = Tokenizer::load(&dir).unwrap();
    assert_eq!(tok.name(), "hf");
    check_fixture_ids(&tok, &expected);
    // Written back, it keeps its own tokenizer_config.json and reads the same.
    let out = common::tmp_dir("hf-fixture-copy");
    hf::save(&tok, &out, 64).unwrap();
    assert_eq!(
        std::fs::read_to_string(out.join("tokenizer_config.json")).unwrap(),
        std::fs::read_to_string(dir.join("tokenizer_config.json")).unwrap()
    );
    assert_eq!(Tokenizer::load(&out).unwrap(), tok);
}

#[test]
fn vocab_json_and_merges_txt_give_the_same_ids() {
    let (dir, expected) = fixture();
    let tok = Tokenizer::load(&dir.join("legacy")).unwrap();
    check_fixture_ids(&tok, &expected);
    let tok = Tokenizer::load(&dir.join("legacy/vocab.json")).unwrap();
    check_fixture_ids(&tok, &expected);
}

#[test]
fn bad_tokenizer_files_name_the_file() {
    let dir = common::tmp_dir("hf-bad");
    let err = Tokenizer::load(&dir).unwrap_err();
    assert!(matches!(err, DataError::BadTokenizer { .. }), "{err}");
    assert!(err.to_string().contains("no tokenizer.json"), "{err}");
    let file = dir.join("tokenizer.json");
    for text in ["{not json", r#"{"model": {"type": "Nope"}}"#, "[]"] {
        std::fs::write(&file, text).unwrap();
        let err = Tokenizer::load(&file).unwrap_err();
        assert!(err.to_string().contains("tokenizer.json"), "{err}");
    }
    let vocab = dir.join("vocab.json");
    std::fs::write(&vocab, r#"{"a": 0}"#).unwrap();
    let err = Tokenizer::load(&vocab).unwrap_err();
    assert!(err.to_string().contains("merges.txt"), "{err}");
    let err = Tokenizer::load(&dir.join("missing.json")).unwrap_err();
    assert!(matches!(err, DataError::Read { .. }), "{err}");
}

#[test]
fn a_model_without_a_tokenizer_takes_ids_only() {
    let tok = Tokenizer::IdsOnly { vocab_size: 50 };
    let err = tok.encode("hello").unwrap_err();
    assert!(matches!(err, DataError::NoTokenizer { vocab_size: 50 }));
    assert!(err.to_string().contains("no tokenizer"), "{err}");
    assert!(tok.decode(&[1]).is_err());
    assert!(StreamDecoder::new(&tok).push(1).is_err());
}

/// A Llama-2-style tokenizer: sentencepiece's "▁" for spaces and byte fallback (`<0xE6>`
/// tokens whose bytes only make a character together).
fn byte_fallback_tokenizer() -> Tokenizer {
    let mut vocab = serde_json::Map::new();
    vocab.insert("<unk>".into(), 0.into());
    for b in 0..=255u32 {
        vocab.insert(format!("<0x{b:02X}>"), (b + 1).into());
    }
    for (i, t) in ["▁", "a", "b", "▁a", "é"].iter().enumerate() {
        vocab.insert(t.to_string(), (257 + i).into());
    }
    let doc = serde_json::json!({
        "version": "1.0", "truncation": null, "padding": null,
        "added_tokens": [{"id": 0, "content": "<unk>", "single_word": false, "lstrip": false,
            "rstrip": false, "normalized": false, "special": true}],
        "normalizer": {"type": "Sequence", "normalizers": [
            {"type": "Prepend", "prepend": "▁"},
            {"type": "Replace", "pattern": {"String": " "}, "content": "▁"}]},
        "pre_tokenizer": null, "post_processor": null,
        "decoder": {"type": "Sequence", "decoders": [
            {"type": "Replace", "pattern": {"String": "▁"}, "content": " "},
            {"type": "ByteFallback"}, {"type": "Fuse"},
            {"type": "Strip", "content": " ", "start": 1, "stop": 0}]},
        "model": {"type": "BPE", "dropout": null, "unk_token": "<unk>",
            "continuing_subword_prefix": null, "end_of_word_suffix": null, "fuse_unk": true,
            "byte_fallback": true, "ignore_merges": false, "vocab": vocab,
            "merges": [["▁", "a"]]},
    });
    let dir = common::tmp_dir("byte-fallback");
    std::fs::write(dir.join("tokenizer.json"), doc.to_string()).unwrap();
    Tokenizer::load(&dir).unwrap()
}

#[test]
fn streaming_equals_decoding_whole_with_byte_fallback() {
    let tok = byte_fallback_tokenizer();
    assert_eq!(tok.name(), "hf");
    // 東 is E6 9D B1: three byte tokens that only make a character together.
    let ids = tok.encode("a 東é").unwrap();
    assert!(ids.len() >= 5, "{ids:?}");
    let mut rng = rand_xoshiro::Xoshiro256PlusPlus::seed_from_u64(3);
    for n in 0..300 {
        let len = 1 + n % 40;
        let ids: Vec<u32> = (0..len)
            .map(|_| rng.gen_range(0..tok.vocab_size() as u32))
            .collect();
        let mut d = StreamDecoder::new(&tok);
        let mut streamed = String::new();
        for &id in &ids {
            streamed += &d.push(id).unwrap();
        }
        streamed += &d.finish();
        assert_eq!(streamed, tok.decode(&ids).unwrap(), "{ids:?}");
    }
}

#[test]
fn a_vocabulary_with_holes_stays_with_the_library() {
    // Ids 0, 1 and 5: nothing may be printed, and the file is written back as it came.
    let text = serde_json::json!({
        "version": "1.0", "truncation": null, "padding": null, "added_tokens": [],
        "normalizer": null, "pre_tokenizer": {"type": "Whitespace"}, "post_processor": null,
        "decoder": null,
        "model": {"type": "WordLevel", "vocab": {"[UNK]": 0, "hello": 1, "world": 5},
            "unk_token": "[UNK]"},
    })
    .to_string();
    let dir = common::tmp_dir("holes");
    std::fs::write(dir.join("tokenizer.json"), &text).unwrap();
    let tok = Tokenizer::load(&dir).unwrap();
    assert_eq!(tok.vocab_size(), 6);
    assert_eq!(tok.encode("hello world").unwrap(), vec![1, 5]);
    let out = common::tmp_dir("holes-out");
    hf::save(&tok, &out, 8).unwrap();
    assert_eq!(
        std::fs::read_to_string(out.join("tokenizer.json")).unwrap(),
        text
    );
}

#[test]
fn a_vocab_json_whose_tokens_are_kind_and_model() {
    // GPT-2's own vocab.json holds the tokens "kind" and "model".
    let dir = common::tmp_dir("kind-model");
    let vocab: serde_json::Map<String, serde_json::Value> = (0..256u32)
        .map(|b| {
            let c = super_byte(b as u8);
            (c.to_string(), b.into())
        })
        .chain([
            ("kind".to_string(), 256.into()),
            ("model".to_string(), 257.into()),
        ])
        .collect();
    std::fs::write(
        dir.join("vocab.json"),
        serde_json::Value::Object(vocab).to_string(),
    )
    .unwrap();
    std::fs::write(dir.join("merges.txt"), "#version: 0.2\n").unwrap();
    let tok = Tokenizer::load(&dir.join("vocab.json")).unwrap();
    assert_eq!(tok.name(), "hf");
    assert_eq!(tok.vocab_size(), 258);
}

/// GPT-2's byte-to-unicode alphabet (printable bytes as themselves, the rest from U+0100).
fn super_byte(b: u8) -> char {
    let printable = |b: u8| matches!(b, b'!'..=b'~' | 0xA1..=0xAC | 0xAE..=0xFF);
    if printable(b) {
        return b as char;
    }
    let n = (0..b).filter(|&x| !printable(x)).count() as u32;
    char::from_u32(256 + n).unwrap()
}
