//! Tokenizers behind one enum, stored in Hugging Face's format.
//!
//! - **char**: the vocabulary is the sorted set of distinct characters of a corpus (nanoGPT's
//!   `shakespeare_char`); id `i` is the `i`-th character.
//! - **gpt2**: OpenAI's GPT-2 BPE, encoded by `tiktoken-rs`'s `r50k_base` (ranks compiled into
//!   the crate, no network). Vocabulary 50257; id 50256 is `<|endoftext|>` ([`GPT2_EOT`]), and
//!   the text `<|endoftext|>` encodes to it (tiktoken's `encode_with_special_tokens`), as
//!   Hugging Face's GPT-2 tokenizer does.
//! - **hf**: any tokenizer that Hugging Face's `tokenizers` library reads (`tokenizer.json`, or
//!   the older `vocab.json` + `merges.txt` pair of a byte-level BPE), encoded by that library
//!   without adding special tokens (`encode(text, add_special_tokens=False)`: no BOS is added,
//!   special tokens written in the text are still recognised).
//! - **ids only**: a model directory without tokenizer files. Token files of its vocabulary train
//!   and evaluate; text cannot be encoded ([`DataError::NoTokenizer`]).
//!
//! Every tokenizer is saved as `tokenizer.json` + `tokenizer_config.json` in the `tokenizers`
//! library's format ([`hf`]), so that `AutoTokenizer.from_pretrained(run)` reads a run
//! directory. On loading, a `tokenizer.json` that is GPT-2's BPE or a character vocabulary
//! becomes the gpt2 or char variant (the same ids, our faster encoders; tested against the
//! library); anything else stays with the library.
//!
//! Decoding: ids `>= vocab_size()` are an error. A GPT-2 token may hold part of a UTF-8
//! character; [`Tokenizer::decode`] replaces bytes that do not form valid UTF-8 with U+FFFD (as
//! tiktoken's `decode(errors="replace")`), and [`StreamDecoder`] holds text back until it is
//! complete, so streaming a sequence gives the text of decoding it whole.

pub mod hf;

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, OnceLock};

use serde_json::Value;
use tiktoken_rs::CoreBPE;

use crate::data::{DataError, Result};

/// Vocabulary size of GPT-2's BPE.
pub const GPT2_VOCAB_SIZE: usize = 50257;
/// GPT-2's `<|endoftext|>` token id.
pub const GPT2_EOT: u32 = 50256;

/// A tokenizer; see the module doc.
#[derive(Debug, Clone, PartialEq)]
pub enum Tokenizer {
    /// Character level: one id per distinct character of a corpus, in sorted order.
    Char(CharTokenizer),
    /// GPT-2's BPE (50257 ids), tiktoken's encoder.
    Gpt2(Gpt2Tokenizer),
    /// Any other tokenizer the `tokenizers` library reads.
    Hf(HfTokenizer),
    /// No tokenizer: ids below `vocab_size` only; encoding or decoding text is
    /// [`DataError::NoTokenizer`].
    IdsOnly {
        /// The model's vocabulary.
        vocab_size: usize,
    },
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

/// A tokenizer of Hugging Face's `tokenizers` library, with the files it came from (written
/// back verbatim beside a checkpoint).
#[derive(Clone)]
pub struct HfTokenizer {
    inner: Arc<tokenizers::Tokenizer>,
    /// One more than the largest id of the vocabulary and the added tokens.
    vocab_size: usize,
    /// The source's tokenizer.json, verbatim (None when it came from vocab.json + merges.txt).
    json: Option<String>,
    /// The source's `tokenizer_config.json`, verbatim, if it had one.
    config: Option<String>,
}

impl HfTokenizer {
    /// Wraps a tokenizer of the library, with the text of its tokenizer.json and
    /// tokenizer_config.json where it came from files.
    pub fn new(inner: tokenizers::Tokenizer, json: Option<String>, config: Option<String>) -> Self {
        let vocab_size = inner
            .get_vocab(true)
            .values()
            .map(|&id| id as usize + 1)
            .max()
            .unwrap_or(0);
        HfTokenizer {
            inner: Arc::new(inner),
            vocab_size,
            json,
            config,
        }
    }

    /// The library's tokenizer.
    pub fn inner(&self) -> &tokenizers::Tokenizer {
        &self.inner
    }

    /// tokenizer.json as it came (None: made from vocab.json + merges.txt).
    pub fn source_json(&self) -> Option<&str> {
        self.json.as_deref()
    }
}

impl std::fmt::Debug for HfTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "HfTokenizer({} ids)", self.vocab_size)
    }
}

impl PartialEq for HfTokenizer {
    /// The same tokenizer: one shared object, or the same source file.
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
            || (self.vocab_size == other.vocab_size
                && self.json.is_some()
                && self.json == other.json)
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
        Ok(Tokenizer::Gpt2(Gpt2Tokenizer { bpe: r50k()? }))
    }

    /// The tokenizer in `path`: a `tokenizer.json` (the `tokenizers` library's format, or the
    /// `{"kind": ...}` files of earlier ferrogpt versions), a `vocab.json` with `merges.txt`
    /// beside it (byte-level BPE, as GPT-2's), or a directory holding either.
    /// Errors: no such file, or one the library rejects ([`DataError::BadTokenizer`]).
    pub fn load(path: &Path) -> Result<Self> {
        hf::load(path)
    }

    /// "char", "gpt2", "hf" or "none".
    pub fn name(&self) -> &'static str {
        match self {
            Tokenizer::Char(_) => "char",
            Tokenizer::Gpt2(_) => "gpt2",
            Tokenizer::Hf(_) => "hf",
            Tokenizer::IdsOnly { .. } => "none",
        }
    }

    /// Number of token ids; every id is `< vocab_size()`.
    pub fn vocab_size(&self) -> usize {
        match self {
            Tokenizer::Char(c) => c.vocab.len(),
            Tokenizer::Gpt2(_) => GPT2_VOCAB_SIZE,
            Tokenizer::Hf(h) => h.vocab_size,
            Tokenizer::IdsOnly { vocab_size } => *vocab_size,
        }
    }

    /// The id that ends a document, if the tokenizer has one (GPT-2's `<|endoftext|>`; for a
    /// library tokenizer, the first of `<|endoftext|>`, `</s>`, `<eos>`, `<|end_of_text|>` it
    /// knows).
    pub fn eot(&self) -> Option<u32> {
        match self {
            Tokenizer::Gpt2(_) => Some(GPT2_EOT),
            Tokenizer::Hf(h) => ["<|endoftext|>", "</s>", "<eos>", "<|end_of_text|>"]
                .iter()
                .find_map(|t| h.inner.token_to_id(t)),
            _ => None,
        }
    }

    /// Encodes `text` (special tokens written out in it become their ids). Errors: a character outside a char vocabulary
    /// ([`DataError::UnknownChar`], with its position in characters and its line and column),
    /// the library's errors, no tokenizer ([`DataError::NoTokenizer`]).
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        match self {
            Tokenizer::Gpt2(g) => Ok(g.bpe.encode_with_special_tokens(text)),
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
            Tokenizer::Hf(h) => h
                .inner
                .encode_fast(text, false)
                .map(|e| e.get_ids().to_vec())
                .map_err(|e| DataError::Tokenizer(e.to_string())),
            Tokenizer::IdsOnly { vocab_size } => Err(DataError::NoTokenizer {
                vocab_size: *vocab_size,
            }),
        }
    }

    /// Decodes `ids` to text (invalid UTF-8 from byte tokens becomes U+FFFD).
    /// Errors: an id `>= vocab_size()` ([`DataError::IdOutOfRange`], naming the first one), no
    /// tokenizer.
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        for (position, &id) in ids.iter().enumerate() {
            self.check_id(id, position)?;
        }
        match self {
            Tokenizer::Char(c) => Ok(ids.iter().map(|&id| c.vocab[id as usize]).collect()),
            Tokenizer::Gpt2(g) => {
                // All ids are in range, so each is in r50k_base's decoder or special tokens.
                let bytes: Vec<u8> = g
                    .bpe
                    ._decode_native_and_split(ids.to_vec())
                    .flatten()
                    .collect();
                Ok(String::from_utf8_lossy(&bytes).into_owned())
            }
            Tokenizer::Hf(h) => h
                .inner
                .decode(ids, false)
                .map_err(|e| DataError::Tokenizer(e.to_string())),
            Tokenizer::IdsOnly { vocab_size } => Err(DataError::NoTokenizer {
                vocab_size: *vocab_size,
            }),
        }
    }

    /// Reads the `{"kind": "char", "vocab": ...}` / `{"kind": "gpt2"}` tokenizer.json of
    /// ferrogpt before it wrote Hugging Face's format. Errors name the field, expected and
    /// found value.
    pub fn from_legacy_json(v: &Value) -> Result<Self> {
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
}

/// tiktoken's r50k_base (GPT-2), built once per process.
fn r50k() -> Result<&'static CoreBPE> {
    static BPE: OnceLock<std::result::Result<CoreBPE, String>> = OnceLock::new();
    match BPE.get_or_init(|| tiktoken_rs::r50k_base().map_err(|e| e.to_string())) {
        Ok(bpe) => Ok(bpe),
        Err(e) => Err(DataError::Tokenizer(format!(
            "cannot build GPT-2's BPE: {e}"
        ))),
    }
}

/// The bytes of each GPT-2 token, by id (`<|endoftext|>` included).
pub(crate) fn gpt2_token_bytes() -> Result<Vec<Vec<u8>>> {
    let bpe = r50k()?;
    Ok((0..GPT2_VOCAB_SIZE as u32)
        .map(|id| bpe._decode_native_and_split(vec![id]).flatten().collect())
        .collect())
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

/// Decodes ids one at a time, returning the text completed by each. Text that the next ids
/// may still change (bytes of an incomplete UTF-8 character, for example) is held back until
/// they come; [`StreamDecoder::finish`] flushes what remains. Concatenating all returns equals
/// [`Tokenizer::decode`] of the whole sequence.
#[derive(Debug, Clone)]
pub struct StreamDecoder {
    tokenizer: Tokenizer,
    position: usize,
    /// Bytes not yet emitted (char and gpt2).
    pending: Vec<u8>,
    /// The library's tokenizers (hf): the ids so far; `ids[prefix..read]` decode to text
    /// already emitted, the ids from `read` on are not emitted yet.
    ids: Vec<u32>,
    prefix: usize,
    read: usize,
}

impl StreamDecoder {
    /// A decoder for `tokenizer` with nothing pending.
    pub fn new(tokenizer: &Tokenizer) -> Self {
        StreamDecoder {
            tokenizer: tokenizer.clone(),
            position: 0,
            pending: Vec::new(),
            ids: Vec::new(),
            prefix: 0,
            read: 0,
        }
    }

    /// Adds one id; returns the text that became complete (possibly empty).
    /// Errors: an id `>= vocab_size()`; the decoder is unchanged then.
    pub fn push(&mut self, id: u32) -> Result<String> {
        self.tokenizer.check_id(id, self.position)?;
        let bytes = match &self.tokenizer {
            Tokenizer::Char(c) => c.vocab[id as usize].to_string().into_bytes(),
            Tokenizer::Gpt2(g) => g.bpe._decode_native_and_split(vec![id]).flatten().collect(),
            Tokenizer::Hf(h) => {
                let lib = h.inner.clone();
                self.position += 1;
                self.ids.push(id);
                return Ok(self.hf_step(&lib, false));
            }
            Tokenizer::IdsOnly { vocab_size } => {
                return Err(DataError::NoTokenizer {
                    vocab_size: *vocab_size,
                })
            }
        };
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

    /// Flushes what is held back (an incomplete character becomes U+FFFD).
    pub fn finish(mut self) -> String {
        match self.tokenizer.clone() {
            Tokenizer::Hf(h) => self.hf_step(&h.inner, true),
            _ => String::from_utf8_lossy(&self.pending).into_owned(),
        }
    }

    /// The text the ids since `prefix` add to what `ids[prefix..read]` gave (decoding with some
    /// context before, as a word's leading space or a byte sequence depend on it), once it is
    /// final: it does not end in U+FFFD (bytes of a character still to come) unless `flush`.
    ///
    /// A run of byte-fallback tokens (`<0xE6>`, ...) is held back until it ends, as the library
    /// decodes such a run as one piece (a run that is not UTF-8 becomes one U+FFFD per byte).
    fn hf_step(&mut self, lib: &tokenizers::Tokenizer, flush: bool) -> String {
        let is_byte = |id: u32| {
            lib.id_to_token(id)
                .is_some_and(|t| t.len() == 6 && t.starts_with("<0x") && t.ends_with('>'))
        };
        if !flush && self.ids.last().is_some_and(|&id| is_byte(id)) {
            return String::new();
        }
        let decode = |ids: &[u32]| lib.decode(ids, false).unwrap_or_default();
        let before = decode(&self.ids[self.prefix..self.read]);
        let now = decode(&self.ids[self.prefix..]);
        let grown = now.len() > before.len() && now.is_char_boundary(before.len());
        let held = !flush && now.ends_with(char::REPLACEMENT_CHARACTER);
        if !grown || held {
            return String::new();
        }
        let new = match now.strip_prefix(before.as_str()) {
            Some(new) => new.to_string(),
            // The context changed how the earlier ids read (rare): emit what is past them.
            None => now[before.len()..].to_string(),
        };
        (self.prefix, self.read) = (self.read, self.ids.len());
        new
    }
}
