//! Tokenizer tests: round trips on Unicode text, GPT-2 ids for known strings, the char vocab of
//! Tiny Shakespeare, errors, streaming decode and the JSON of earlier versions. Hugging Face formats: tests/hf_tokenizer.rs.

mod common;

use ferrogpt_train::data::DataError;
use ferrogpt_train::tokenizer::{StreamDecoder, Tokenizer, GPT2_EOT, GPT2_VOCAB_SIZE};

const UNICODE: &str = "Héllo, wörld! Ça va?\nnaïve café — 東京タワー 你好世界\n\
                       emoji: 🦀🚀👩‍👩‍👧 flags 🇫🇷\r\n\ttabs and  spaces  \n";

fn gpt2() -> Tokenizer {
    Tokenizer::gpt2().expect("GPT-2 tables are compiled into tiktoken-rs")
}

fn stream(tok: &Tokenizer, ids: &[u32]) -> String {
    let mut d = StreamDecoder::new(tok);
    let mut out = String::new();
    for &id in ids {
        out.push_str(&d.push(id).unwrap());
    }
    out + &d.finish()
}

#[test]
fn char_round_trip_unicode() {
    let tok = Tokenizer::from_corpus_char(UNICODE);
    let ids = tok.encode(UNICODE).unwrap();
    assert_eq!(ids.len(), UNICODE.chars().count());
    assert_eq!(tok.decode(&ids).unwrap(), UNICODE);
    assert_eq!(stream(&tok, &ids), UNICODE);
    assert_eq!(tok.name(), "char");
}

#[test]
fn char_vocab_is_sorted_unique() {
    let tok = Tokenizer::from_corpus_char("hello");
    assert_eq!(tok.vocab_size(), 4);
    assert_eq!(tok.encode("ehlo").unwrap(), vec![0, 1, 2, 3]);
    match &tok {
        Tokenizer::Char(c) => assert_eq!(c.vocab(), "ehlo"),
        t => panic!("{t:?}"),
    }
}

#[test]
fn gpt2_round_trip_unicode() {
    let tok = gpt2();
    let ids = tok.encode(UNICODE).unwrap();
    assert!(ids.iter().all(|&id| (id as usize) < GPT2_VOCAB_SIZE));
    assert_eq!(tok.decode(&ids).unwrap(), UNICODE);
    assert_eq!(stream(&tok, &ids), UNICODE);
    assert_eq!(tok.name(), "gpt2");
    assert_eq!(tok.vocab_size(), 50257);
}

#[test]
fn gpt2_known_ids() {
    let tok = gpt2();
    assert_eq!(tok.encode("Hello world").unwrap(), vec![15496, 995]);
    assert_eq!(tok.encode(" the").unwrap(), vec![262]);
    assert_eq!(tok.encode("The").unwrap(), vec![464]);
    assert_eq!(tok.encode("\n").unwrap(), vec![198]);
    assert_eq!(tok.encode("!").unwrap(), vec![0]);
    assert_eq!(
        tok.encode("Hello, world!").unwrap(),
        vec![15496, 11, 995, 0]
    );
    assert_eq!(tok.decode(&[GPT2_EOT]).unwrap(), "<|endoftext|>");
}

#[test]
fn gpt2_encodes_the_end_of_text_marker_as_its_token() {
    // As Hugging Face's GPT-2 tokenizer does: documents joined by the marker (TinyStories'
    // text files, for one) are separated by the token.
    let tok = gpt2();
    let ids = tok.encode("a<|endoftext|>b").unwrap();
    assert_eq!(ids, vec![64, GPT2_EOT, 65]);
    assert_eq!(tok.decode(&ids).unwrap(), "a<|endoftext|>b");
    // Anything short of the exact marker is ordinary text.
    let ids = tok.encode("<|endoftext|").unwrap();
    assert!(!ids.contains(&GPT2_EOT), "{ids:?}");
}

#[test]
fn gpt2_stream_holds_partial_utf8() {
    let tok = gpt2();
    // An emoji is split over several byte tokens; no partial character may be emitted.
    let ids = tok.encode("🦀").unwrap();
    assert!(ids.len() > 1, "expected a multi-token emoji, got {ids:?}");
    let mut d = StreamDecoder::new(&tok);
    let mut pieces = Vec::new();
    for &id in &ids {
        pieces.push(d.push(id).unwrap());
    }
    assert!(
        pieces[..pieces.len() - 1].iter().all(|p| p.is_empty()),
        "{pieces:?}"
    );
    assert_eq!(pieces.last().unwrap(), "🦀");
    assert_eq!(d.finish(), "");
}

#[test]
fn gpt2_stream_matches_decode_on_invalid_utf8() {
    let tok = gpt2();
    let crab = tok.encode("🦀").unwrap();
    // A lone leading byte token followed by ASCII, and a truncated character at the end.
    let mut ids = vec![crab[0]];
    ids.extend(tok.encode(" ok").unwrap());
    ids.push(crab[0]);
    let whole = tok.decode(&ids).unwrap();
    assert!(whole.contains('\u{FFFD}'));
    assert_eq!(stream(&tok, &ids), whole);
}

#[test]
fn tinyshakespeare_char_vocab_is_65() {
    let text = common::shakespeare();
    let tok = Tokenizer::from_corpus_char(&text);
    assert_eq!(tok.vocab_size(), 65);
    let ids = tok.encode(&text).unwrap();
    assert_eq!(tok.decode(&ids).unwrap(), text);
    // The vocab is "\n !$&',-.3:;?ABC...Zabc...z".
    assert_eq!(tok.encode("\n").unwrap(), vec![0]);
    assert_eq!(tok.encode("z").unwrap(), vec![64]);
}

#[test]
fn unknown_char_is_an_error_naming_it_and_its_position() {
    let tok = Tokenizer::from_corpus_char("abc\n");
    let err = tok.encode("ab\ncaé").unwrap_err();
    match &err {
        DataError::UnknownChar {
            ch,
            position,
            line,
            column,
            vocab_size,
        } => {
            assert_eq!(
                (*ch, *position, *line, *column, *vocab_size),
                ('é', 5, 2, 3, 4)
            );
        }
        other => panic!("unexpected error {other:?}"),
    }
    let msg = err.to_string();
    assert!(msg.contains("'é'") && msg.contains("position 5"), "{msg}");
}

#[test]
fn out_of_range_id_is_an_error() {
    let tok = Tokenizer::from_corpus_char("abc");
    let err = tok.decode(&[0, 1, 3]).unwrap_err();
    assert!(
        matches!(
            err,
            DataError::IdOutOfRange {
                id: 3,
                position: 2,
                limit: 3,
                ..
            }
        ),
        "{err:?}"
    );
    let g = gpt2();
    let err = g.decode(&[15496, 50257]).unwrap_err();
    assert!(
        matches!(
            err,
            DataError::IdOutOfRange {
                id: 50257,
                position: 1,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("50257"));
    let mut d = StreamDecoder::new(&g);
    assert!(d.push(u32::MAX).is_err());
    assert_eq!(d.push(15496).unwrap(), "Hello");
}

#[test]
fn legacy_json_still_reads() {
    let c = Tokenizer::from_corpus_char(UNICODE);
    let vocab = match &c {
        Tokenizer::Char(ch) => ch.vocab(),
        t => panic!("{t:?}"),
    };
    let back =
        Tokenizer::from_legacy_json(&serde_json::json!({"kind": "char", "vocab": vocab})).unwrap();
    assert_eq!(back, c);
    assert_eq!(back.encode(UNICODE).unwrap(), c.encode(UNICODE).unwrap());
    let g = gpt2();
    assert_eq!(
        Tokenizer::from_legacy_json(&serde_json::json!({"kind": "gpt2"})).unwrap(),
        g
    );
}

#[test]
fn bad_json_is_an_error() {
    use serde_json::json;
    for v in [
        json!({}),
        json!({"kind": "bpe"}),
        json!({"kind": "char"}),
        json!({"kind": "char", "vocab": 3}),
        json!({"kind": "char", "vocab": ""}),
        json!({"kind": "char", "vocab": "abca"}),
    ] {
        let err = Tokenizer::from_legacy_json(&v).unwrap_err();
        assert!(matches!(err, DataError::Mismatch { .. }), "{v}: {err:?}");
    }
}
