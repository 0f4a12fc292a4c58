//! Tokenizers: character-level and GPT-2 byte-level BPE, behind one enum.
//!
//! - **char**: the vocabulary is the sorted set of distinct characters of a corpus (nanoGPT's
//!   `shakespeare_char`); id `i` is the `i`-th character. It is stored with the checkpoint via
//!   [`Tokenizer::to_json`]: `{"kind":"char","vocab":"\n !$&..."}`.
//! - **gpt2**: OpenAI's GPT-2 BPE, from `tiktoken-rs`'s `r50k_base` (ranks compiled into the
//!   crate, no network). Vocabulary 50257; id 50256 is `<|endoftext|>` ([`GPT2_EOT`]).
//!   [`Tokenizer::encode`] encodes ordinary text only (tiktoken's `encode_ordinary`): the text
//!   `<|endoftext|>` becomes ordinary tokens, never 50256. Stored as `{"kind":"gpt2"}`.
//!
//! Decoding: ids `>= vocab_size()` are an error. A GPT-2 token may hold part of a UTF-8
//! character; [`Tokenizer::decode`] replaces bytes that do not form valid UTF-8 with U+FFFD (as
//! tiktoken's `decode(errors="replace")`), and [`StreamDecoder`] buffers bytes until they do, so
//! streaming a sequence gives exactly the text of decoding it whole.

use std::collections::HashMap;
use std::sync::OnceLock;

use serde_json::{json, Value};
use tiktoken_rs::CoreBPE;

use crate::data::{DataError, Result};

/// Vocabulary size of GPT-2's BPE.
pub const GPT2_VOCAB_SIZE: usize = 50257;
/// GPT-2's `<|endoftext|>` token id.
pub const GPT2_EOT: u32 = 50256;

/// A tokenizer; see the module doc.
#[derive(Debug, Clone, PartialEq)]
pub enum Tokenizer {
    Char(CharTokenizer),
    Gpt2(Gpt2Tokenizer),
}

/// Character-level tokenizer: id `i` is `vocab[i]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CharTokenizer {
    vocab: Vec<char>,
    index: HashMap<char, u32>,
}

/// GPT-2 byte-level BPE (shared, built once per process).
#[derive(Clone)]
pub struct Gpt2Tokenizer {
    bpe: &'static CoreBPE,
}

impl std::fmt::Debug for Gpt2Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Gpt2Tokenizer")
    }
}

impl PartialEq for Gpt2Tokenizer {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl CharTokenizer {
    /// The tokenizer whose vocabulary is the sorted distinct characters of `text`.
    pub fn from_corpus(text: &str) -> Self {
        let mut vocab: Vec<char> = text.chars().collect();
        vocab.sort_unstable();
        vocab.dedup();
        Self::from_chars(vocab)
    }

    /// The tokenizer with id `i` for the `i`-th character of `vocab` (kept in the given order).
    /// Errors: an empty vocabulary or a repeated character.
    pub fn from_vocab(vocab: &str) -> Result<Self> {
        let chars: Vec<char> = vocab.chars().collect();
        let bad = |expected: &str, found: String| DataError::Mismatch {
            context: "char tokenizer".into(),
            field: "vocab".into(),
            expected: expected.into(),
            found,
        };
        if chars.is_empty() {
            return Err(bad("at least one character", "an empty string".into()));
        }
        let mut seen = std::collections::HashSet::new();
        for (i, &c) in chars.iter().enumerate() {
            if !seen.insert(c) {
                return Err(bad(
                    "distinct characters",
                    format!("{c:?} repeated at position {i}"),
                ));
            }
        }
        Ok(Self::from_chars(chars))
    }

    fn from_chars(vocab: Vec<char>) -> Self {
        let index = vocab
            .iter()
            .enumerate()
            .map(|(i, &c)| (c, i as u32))
            .collect();
        CharTokenizer { vocab, index }
    }

    /// The vocabulary, one character per id, as a string.
    pub fn vocab(&self) -> String {
        self.vocab.iter().collect()
    }
}

impl Tokenizer {
    /// Character-level tokenizer built from `text` (see [`CharTokenizer::from_corpus`]).
    pub fn from_corpus_char(text: &str) -> Self {
        Tokenizer::Char(CharTokenizer::from_corpus(text))
    }

    /// GPT-2's BPE. The tables are built on the first call (tens of milliseconds) and shared.
    pub fn gpt2() -> Result<Self> {
        static BPE: OnceLock<std::result::Result<CoreBPE, String>> = OnceLock::new();
        match BPE.get_or_init(|| tiktoken_rs::r50k_base().map_err(|e| e.to_string())) {
            Ok(bpe) => Ok(Tokenizer::Gpt2(Gpt2Tokenizer { bpe })),
            Err(e) => Err(DataError::Tokenizer(e.clone())),
        }
    }

    /// "char" or "gpt2".
    pub fn name(&self) -> &'static str {
        match self {
            Tokenizer::Char(_) => "char",
            Tokenizer::Gpt2(_) => "gpt2",
        }
    }

    /// Number of token ids; every id is `< vocab_size()`.
    pub fn vocab_size(&self) -> usize {
        match self {
            Tokenizer::Char(c) => c.vocab.len(),
            Tokenizer::Gpt2(_) => GPT2_VOCAB_SIZE,
        }
    }

    /// Encodes `text` as ordinary text. Errors (char only): a character outside the vocabulary
    /// ([`DataError::UnknownChar`], with its position in characters and its line and column).
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        match self {
            Tokenizer::Gpt2(g) => Ok(g.bpe.encode_ordinary(text)),
            Tokenizer::Char(c) => {
                let mut ids = Vec::with_capacity(text.len());
                for (position, ch) in text.chars().enumerate() {
                    match c.index.get(&ch) {
                        Some(&id) => ids.push(id),
                        None => return Err(unknown_char(text, ch, position, c.vocab.len())),
                    }
                }
                Ok(ids)
            }
        }
    }

    /// Decodes `ids` to text (invalid UTF-8 from GPT-2 byte tokens becomes U+FFFD).
    /// Errors: an id `>= vocab_size()` ([`DataError::IdOutOfRange`], naming the first one).
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        match self {
            Tokenizer::Char(c) => {
                let mut text = String::with_capacity(ids.len());
                for (position, &id) in ids.iter().enumerate() {
                    self.check_id(id, position)?;
                    text.push(c.vocab[id as usize]);
                }
                Ok(text)
            }
            Tokenizer::Gpt2(g) => {
                for (position, &id) in ids.iter().enumerate() {
                    self.check_id(id, position)?;
                }
                // All ids are in range, so each is in r50k_base's decoder or special tokens.
                let bytes: Vec<u8> = g
                    .bpe
                    ._decode_native_and_split(ids.to_vec())
                    .flatten()
                    .collect();
                Ok(String::from_utf8_lossy(&bytes).into_owned())
            }
        }
    }

    /// The tokenizer as JSON, to store with a checkpoint; see the module doc.
    pub fn to_json(&self) -> Value {
        match self {
            Tokenizer::Char(c) => json!({ "kind": "char", "vocab": c.vocab() }),
            Tokenizer::Gpt2(_) => json!({ "kind": "gpt2" }),
        }
    }

    /// Inverse of [`Tokenizer::to_json`]. Errors name the field, expected and found value.
    pub fn from_json(v: &Value) -> Result<Self> {
        let bad = |field: &str, expected: &str, found: String| DataError::Mismatch {
            context: "tokenizer JSON".into(),
            field: field.into(),
            expected: expected.into(),
            found,
        };
        match v.get("kind").and_then(Value::as_str) {
            Some("gpt2") => Tokenizer::gpt2(),
            Some("char") => match v.get("vocab").and_then(Value::as_str) {
                Some(vocab) => Ok(Tokenizer::Char(CharTokenizer::from_vocab(vocab)?)),
                None => Err(bad(
                    "vocab",
                    "a string of characters",
                    found_json(v.get("vocab")),
                )),
            },
            _ => Err(bad(
                "kind",
                "\"char\" or \"gpt2\"",
                found_json(v.get("kind")),
            )),
        }
    }

    fn check_id(&self, id: u32, position: usize) -> Result<()> {
        if id as usize >= self.vocab_size() {
            return Err(DataError::IdOutOfRange {
                context: format!("decode ({} tokenizer)", self.name()),
                id,
                position,
                limit: self.vocab_size() as u64,
            });
        }
        Ok(())
    }

    /// Bytes (GPT-2) or UTF-8 of the character (char) of one id, or an out-of-range error.
    fn token_bytes(&self, id: u32, position: usize) -> Result<Vec<u8>> {
        self.check_id(id, position)?;
        Ok(match self {
            Tokenizer::Char(c) => c.vocab[id as usize].to_string().into_bytes(),
            Tokenizer::Gpt2(g) => g.bpe._decode_native_and_split(vec![id]).flatten().collect(),
        })
    }
}

fn found_json(v: Option<&Value>) -> String {
    v.map_or_else(|| "nothing (field missing)".into(), |v| v.to_string())
}

fn unknown_char(text: &str, ch: char, position: usize, vocab_size: usize) -> DataError {
    let before = text.chars().take(position);
    let (mut line, mut column) = (1, 1);
    for c in before {
        if c == '\n' {
            (line, column) = (line + 1, 1);
        } else {
            column += 1;
        }
    }
    DataError::UnknownChar {
        ch,
        position,
        line,
        column,
        vocab_size,
    }
}

/// Decodes ids one at a time, returning the text completed by each. Bytes of an incomplete
/// UTF-8 character are held until the next ids complete it; [`StreamDecoder::finish`] flushes
/// what remains. Concatenating all returns equals [`Tokenizer::decode`] of the whole sequence.
#[derive(Debug, Clone)]
pub struct StreamDecoder {
    tokenizer: Tokenizer,
    pending: Vec<u8>,
    position: usize,
}

impl StreamDecoder {
    /// A decoder for `tokenizer` with nothing pending.
    pub fn new(tokenizer: &Tokenizer) -> Self {
        StreamDecoder {
            tokenizer: tokenizer.clone(),
            pending: Vec::new(),
            position: 0,
        }
    }

    /// Adds one id; returns the text that became complete (possibly empty).
    /// Errors: an id `>= vocab_size()`; the decoder is unchanged then.
    pub fn push(&mut self, id: u32) -> Result<String> {
        let bytes = self.tokenizer.token_bytes(id, self.position)?;
        self.position += 1;
        self.pending.extend_from_slice(&bytes);
        let mut out = String::new();
        let mut start = 0; // pending[..start] is already emitted
        while start < self.pending.len() {
            match std::str::from_utf8(&self.pending[start..]) {
                Ok(s) => {
                    out.push_str(s);
                    start = self.pending.len();
                }
                Err(e) => {
                    let valid = &self.pending[start..start + e.valid_up_to()];
                    out.push_str(std::str::from_utf8(valid).unwrap_or_default());
                    start += e.valid_up_to();
                    match e.error_len() {
                        // An invalid sequence: replace it, as from_utf8_lossy does.
                        Some(n) => {
                            out.push(char::REPLACEMENT_CHARACTER);
                            start += n;
                        }
                        // An incomplete character at the end: wait for more bytes.
                        None => break,
                    }
                }
            }
        }
        self.pending.drain(..start);
        Ok(out)
    }

    /// Flushes pending bytes of an incomplete character as U+FFFD.
    pub fn finish(self) -> String {
        String::from_utf8_lossy(&self.pending).into_owned()
    }
}
