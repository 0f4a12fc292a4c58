//! Data loading and batching: text errors, the 90/10 split, token files with and without
//! validation files, and the batcher's exactness, determinism and resumability.

use std::path::PathBuf;

use ferrogpt_train::data::{
    check_len, load_dataset, load_text, BatchMode, Batcher, BatcherState, DataError,
};
use ferrogpt_train::tokenizer::Tokenizer;
use ferrogpt_train::tokfile::write_tokens;

fn tmp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ferrogpt-data-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn load_text_errors_name_the_path() {
    let dir = tmp_dir("text");
    let missing = dir.join("missing.txt");
    let err = load_text(&missing).unwrap_err();
    assert!(
        matches!(err, DataError::Read { .. }) && err.to_string().contains("missing.txt"),
        "{err}"
    );

    let empty = dir.join("empty.txt");
    std::fs::write(&empty, "").unwrap();
    let err = load_text(&empty).unwrap_err();
    assert!(
        matches!(err, DataError::Empty { .. }) && err.to_string().contains("empty.txt"),
        "{err}"
    );

    let nul = dir.join("nul.txt");
    std::fs::write(&nul, b"abc\0def").unwrap();
    let err = load_text(&nul).unwrap_err();
    assert!(
        matches!(err, DataError::Binary { .. }) && err.to_string().contains("offset 3"),
        "{err}"
    );

    let latin1 = dir.join("latin1.txt");
    std::fs::write(&latin1, b"caf\xe9 au lait").unwrap();
    let err = load_text(&latin1).unwrap_err();
    assert!(
        matches!(err, DataError::Binary { .. }) && err.to_string().contains("latin1.txt"),
        "{err}"
    );

    let ok = dir.join("ok.txt");
    std::fs::write(&ok, "héllo\n").unwrap();
    assert_eq!(load_text(&ok).unwrap(), "héllo\n");
}

#[test]
fn text_is_split_90_10() {
    let dir = tmp_dir("split");
    let path = dir.join("t.txt");
    let text: String = (0..1234).map(|i| (b'a' + (i % 26) as u8) as char).collect();
    std::fs::write(&path, &text).unwrap();
    let tok = Tokenizer::from_corpus_char(&text);
    let all = tok.encode(&text).unwrap();
    let ds = load_dataset(&path, None, &tok).unwrap();
    assert_eq!(ds.train.len(), 1110); // floor(0.9 * 1234)
    assert_eq!(ds.train, all[..1110]);
    assert_eq!(ds.val, all[1110..]);

    // With a validation file, the data file is used whole.
    let val = dir.join("v.txt");
    std::fs::write(&val, "xyz").unwrap();
    let ds = load_dataset(&path, Some(&val), &tok).unwrap();
    assert_eq!(ds.train, all);
    assert_eq!(ds.val, tok.encode("xyz").unwrap());
}

#[test]
fn token_files_are_used_whole() {
    let dir = tmp_dir("tokfile");
    let tok = Tokenizer::gpt2().unwrap();
    let train: Vec<u32> = (0..100).map(|i| i * 500).collect();
    let path = dir.join("train.bin");
    write_tokens(&path, &train).unwrap();
    let ds = load_dataset(&path, None, &tok).unwrap();
    assert_eq!(ds.train, train);
    assert!(ds.val.is_empty());

    let val_path = dir.join("val.bin");
    write_tokens(&val_path, &[7, 8, 9]).unwrap();
    let ds = load_dataset(&path, Some(&val_path), &tok).unwrap();
    assert_eq!((ds.train, ds.val), (train, vec![7, 8, 9]));
}

#[test]
fn token_ids_beyond_the_vocab_are_an_error() {
    let dir = tmp_dir("vocab");
    let path = dir.join("ids.bin");
    write_tokens(&path, &[1, 2, 64, 65, 70, 3]).unwrap();
    let tok =
        Tokenizer::from_corpus_char(&(0..65u8).map(|i| (b'0' + i) as char).collect::<String>());
    assert_eq!(tok.vocab_size(), 65);
    let err = load_dataset(&path, None, &tok).unwrap_err();
    assert!(
        matches!(
            err,
            DataError::IdOutOfRange {
                id: 65,
                position: 3,
                limit: 65,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("ids.bin"), "{err}");

    // The same check applies to a validation token file.
    let text = dir.join("t.txt");
    std::fs::write(&text, "0123").unwrap();
    let err = load_dataset(&text, Some(&path), &tok).unwrap_err();
    assert!(
        matches!(err, DataError::IdOutOfRange { id: 65, .. }),
        "{err:?}"
    );
}

#[test]
fn unknown_character_in_text_is_an_error() {
    let dir = tmp_dir("unknown");
    let path = dir.join("t.txt");
    std::fs::write(&path, "abc").unwrap();
    let tok = Tokenizer::from_corpus_char("ab");
    let err = load_dataset(&path, None, &tok).unwrap_err();
    assert!(
        matches!(
            err,
            DataError::UnknownChar {
                ch: 'c',
                position: 2,
                ..
            }
        ),
        "{err:?}"
    );
}

#[test]
fn check_len_needs_block_plus_one() {
    assert!(check_len(&[0; 9], 8, "x").is_ok());
    let err = check_len(&[0; 8], 8, "validation data").unwrap_err();
    assert!(
        matches!(
            err,
            DataError::TooFewTokens {
                needed: 9,
                found: 8,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("validation data"));
}

fn seq(n: u32) -> Vec<u32> {
    (0..n).collect()
}

#[test]
fn sequential_batches_wrap_exactly() {
    let tokens = seq(20);
    let (b, t) = (2, 4); // B*T = 8; batches start at 0, 8, then 16 + 9 > 20 wraps to 0
    let mut bat = Batcher::new(BatchMode::Sequential, 0);
    let (mut x, mut y) = (Vec::new(), Vec::new());
    let mut starts = Vec::new();
    for _ in 0..5 {
        bat.next_batch(&tokens, b, t, &mut x, &mut y).unwrap();
        assert_eq!(x.len(), b * t);
        assert_eq!(y.len(), b * t);
        let p = x[0] as usize;
        assert_eq!(x, tokens[p..p + 8]);
        assert_eq!(y, tokens[p + 1..p + 9]);
        starts.push(p);
    }
    assert_eq!(starts, vec![0, 8, 0, 8, 0]);

    // Exactly B*T + 1 tokens per batch fit: 17 tokens give batches at 0 and 8.
    let tokens = seq(17);
    let mut bat = Batcher::new(BatchMode::Sequential, 0);
    let mut starts = Vec::new();
    for _ in 0..4 {
        bat.next_batch(&tokens, b, t, &mut x, &mut y).unwrap();
        starts.push(x[0]);
    }
    assert_eq!(starts, vec![0, 8, 0, 8]);
    assert_eq!(y.last(), Some(&16));
}

#[test]
fn random_batches_are_windows_and_deterministic() {
    let tokens: Vec<u32> = (0..1000).map(|i| i * 7 % 1000).collect();
    let (b, t) = (4, 16);
    let run = |seed| {
        let mut bat = Batcher::new(BatchMode::Random, seed);
        let (mut x, mut y) = (Vec::new(), Vec::new());
        let mut all = Vec::new();
        for _ in 0..10 {
            bat.next_batch(&tokens, b, t, &mut x, &mut y).unwrap();
            for r in 0..b {
                let row = &x[r * t..(r + 1) * t];
                // Find the window's offset and check targets are inputs shifted by one.
                let o = tokens
                    .windows(t)
                    .position(|w| w == row)
                    .expect("a window of the data");
                assert!(o + t < tokens.len());
                assert_eq!(&y[r * t..(r + 1) * t], &tokens[o + 1..o + t + 1]);
            }
            all.push((x.clone(), y.clone()));
        }
        all
    };
    assert_eq!(run(42), run(42));
    assert_ne!(run(42), run(43));
}

#[test]
fn random_offsets_cover_the_full_range() {
    // len - T - 1 = 2: offsets 0, 1 and 2 all appear, nothing beyond.
    let tokens = seq(6);
    let t = 3;
    let mut bat = Batcher::new(BatchMode::Random, 1);
    let (mut x, mut y) = (Vec::new(), Vec::new());
    let mut seen = [false; 3];
    for _ in 0..200 {
        bat.next_batch(&tokens, 1, t, &mut x, &mut y).unwrap();
        seen[x[0] as usize] = true;
        assert_eq!(y, x.iter().map(|v| v + 1).collect::<Vec<_>>());
    }
    assert_eq!(seen, [true; 3]);
}

#[test]
fn saved_state_continues_identically() {
    let tokens: Vec<u32> = (0..500).collect();
    for mode in [BatchMode::Random, BatchMode::Sequential] {
        let (b, t) = (3, 10);
        let mut a = Batcher::new(mode, 7);
        let (mut x, mut y) = (Vec::new(), Vec::new());
        for _ in 0..5 {
            a.next_batch(&tokens, b, t, &mut x, &mut y).unwrap();
        }
        let json = serde_json::to_string(&a.state()).unwrap();
        let state: BatcherState = serde_json::from_str(&json).unwrap();
        let mut r = Batcher::from_state(state);
        let (mut x2, mut y2) = (Vec::new(), Vec::new());
        for _ in 0..40 {
            a.next_batch(&tokens, b, t, &mut x, &mut y).unwrap();
            r.next_batch(&tokens, b, t, &mut x2, &mut y2).unwrap();
            assert_eq!((&x, &y), (&x2, &y2), "{mode:?}");
        }
    }
}

#[test]
fn too_few_tokens_and_bad_shapes_are_errors() {
    let tokens = seq(10);
    let (mut x, mut y) = (Vec::new(), Vec::new());
    let mut r = Batcher::new(BatchMode::Random, 0);
    assert!(r.next_batch(&tokens, 2, 9, &mut x, &mut y).is_ok());
    let err = r.next_batch(&tokens, 2, 10, &mut x, &mut y).unwrap_err();
    assert!(
        matches!(
            err,
            DataError::TooFewTokens {
                needed: 11,
                found: 10,
                ..
            }
        ),
        "{err:?}"
    );
    let mut s = Batcher::new(BatchMode::Sequential, 0);
    let err = s.next_batch(&tokens, 2, 5, &mut x, &mut y).unwrap_err();
    assert!(
        matches!(err, DataError::TooFewTokens { needed: 11, .. }),
        "{err:?}"
    );
    assert!(s.next_batch(&tokens, 0, 5, &mut x, &mut y).is_err());
    assert!(s.next_batch(&tokens, 1, 0, &mut x, &mut y).is_err());
}
