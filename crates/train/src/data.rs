//! Training data: loading text and token files, the train/validation split, and batching.
//!
//! Contracts:
//! - [`load_text`] returns the UTF-8 text of a file; a missing, empty or binary file (invalid
//!   UTF-8 or a NUL byte) is an error naming the path.
//! - [`load_dataset`] turns a data file into token ids. An llm.c token file (recognised by its
//!   magic, see [`crate::tokfile`]) is used whole for training. Text is encoded and split as
//!   nanoGPT does: the first `floor(0.9 * n)` tokens train, the rest validate. When `val_data`
//!   names a validation file, the data file is used whole for training and the validation file
//!   whole for validation. Without `val_data`, a token file gives an empty validation set; the
//!   caller decides what that means. Every id must be `< tokenizer.vocab_size()`.
//! - [`Batcher`] fills `inputs` and `targets`, both `(B, T)` row-major, with
//!   `targets[b][t] = tokens[o_b + t + 1]` where `inputs[b][t] = tokens[o_b + t]`.
//!   *Random* mode draws each window start `o_b` uniformly from `[0, len - T - 1]` with a seeded
//!   Xoshiro256++ owned by the batcher (nanoGPT's `get_batch`). *Sequential* mode is llm.c's
//!   loader: batch k reads `tokens[pos .. pos + B*T + 1]`, inputs the first `B*T`, targets the
//!   same shifted by one; `pos` advances by `B*T` and wraps to 0 when `pos + B*T + 1 > len`.
//!   [`Batcher::state`] / [`Batcher::from_state`] capture everything needed to resume a run
//!   with exactly the same batches.
//!
//! - Each file loaded is recorded as a [`DataSource`] (path, size, SHA-256), so that a run can
//!   find its data again and refuse data that changed.
//!
//! All functions of this module, [`crate::tokenizer`] and [`crate::tokfile`] return
//! [`DataError`], whose messages name the file or field, the expected and the found value.

use std::path::{Path, PathBuf};

use rand::{Rng, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;
use serde::{Deserialize, Serialize};

use crate::shards::ShardSet;
use crate::tokenizer::Tokenizer;
use crate::tokfile;
use std::sync::Arc;

/// Errors of data loading, tokenizers and token files.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// A file could not be read (missing, unreadable).
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The file, as given.
        path: PathBuf,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// A file could not be written.
    #[error("cannot write {}: {source}", path.display())]
    Write {
        /// The file, as given.
        path: PathBuf,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// A data file holds no bytes.
    #[error("data file {} is empty", path.display())]
    Empty {
        /// The file, as given.
        path: PathBuf,
    },
    /// A data file is neither UTF-8 text nor a token file.
    #[error("data file {} is not text: {detail} (expected UTF-8 text or an llm.c token file)", path.display())]
    Binary {
        /// The file, as given.
        path: PathBuf,
        /// Where it stops being text: the byte offset of a NUL or of invalid UTF-8.
        detail: String,
    },
    /// A field (of a file header, JSON object or argument) holds the wrong value.
    #[error("{context}: {field}: expected {expected}, found {found}")]
    Mismatch {
        /// Where: the file (and what reads it) or the call.
        context: String,
        /// The field, key or argument.
        field: String,
        /// What was expected, in words or as a value.
        expected: String,
        /// What was there (`nothing (field missing)` for an absent JSON field).
        found: String,
    },
    /// Text holds a character that the char tokenizer's vocabulary lacks.
    #[error(
        "character {ch:?} (U+{:04X}) at position {position} (line {line}, column {column}) is not in \
         the char tokenizer's vocabulary of {vocab_size} characters",
        *ch as u32
    )]
    UnknownChar {
        /// The character.
        ch: char,
        /// Its index in the text, in characters (not bytes), from 0.
        position: usize,
        /// Its line, from 1.
        line: usize,
        /// Its column, in characters, from 1.
        column: usize,
        /// Characters the tokenizer knows.
        vocab_size: usize,
    },
    /// A token id is outside the vocabulary (or outside what a file format can hold).
    #[error("{context}: token id {id} at position {position} is out of range: expected < {limit}")]
    IdOutOfRange {
        /// What held it: the file or shard (and the tokenizer), or `decode`.
        context: String,
        /// The id.
        id: u32,
        /// Its index in the sequence or file, in tokens, from 0.
        position: usize,
        /// Ids must be below this: the vocabulary size, or 2¹⁶ for llm.c's uint16 files.
        limit: u64,
    },
    /// Too few tokens for one window of `block + 1` tokens (or one sequential batch).
    #[error("{what} has {found} tokens; at least {needed} are needed")]
    TooFewTokens {
        /// The data in words (a file, a split, the longest shard).
        what: String,
        /// The fewest tokens that give one window (or batch).
        needed: usize,
        /// Tokens it has.
        found: usize,
    },
    /// A data file is not the one a run recorded (its SHA-256 differs).
    #[error(
        "{} is not the {} data this run was trained on: it has {} bytes, SHA-256 {}; the run \
         recorded {} ({} bytes, SHA-256 {}); pass {} with a copy of the original",
        found.path.display(), found.role, found.bytes, found.sha256, recorded.path.display(),
        recorded.bytes, recorded.sha256, recorded.role.flag()
    )]
    Changed {
        /// The file given now.
        found: Box<DataSource>,
        /// The file the run recorded when it was trained on it.
        recorded: Box<DataSource>,
    },
    /// A tokenizer failed to build, encode or decode.
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    /// A tokenizer file that the `tokenizers` library (or our reader) rejects.
    #[error("{}: not a tokenizer this version reads: {source}", path.display())]
    BadTokenizer {
        /// The tokenizer file or directory.
        path: PathBuf,
        /// The library's (or our reader's) error.
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// Text met a model that has no tokenizer.
    #[error(
        "this model has no tokenizer (its directory holds no tokenizer.json, nor vocab.json + \
         merges.txt), so it cannot read or write text: give it a tokenizer (--tokenizer PATH) \
         or use token files (ids < {vocab_size})"
    )]
    NoTokenizer {
        /// The model's vocabulary: token files must hold ids below it.
        vocab_size: usize,
    },
}

/// Result of this module, [`crate::tokenizer`] and [`crate::tokfile`].
pub type Result<T> = std::result::Result<T, DataError>;

/// Reads `path` as UTF-8 text. Errors: missing/unreadable ([`DataError::Read`]), empty
/// ([`DataError::Empty`]), invalid UTF-8 or a NUL byte ([`DataError::Binary`]).
pub fn load_text(path: &Path) -> Result<String> {
    let bytes = std::fs::read(path).map_err(|source| DataError::Read {
        path: path.into(),
        source,
    })?;
    text_from_bytes(path, bytes)
}

fn text_from_bytes(path: &Path, bytes: Vec<u8>) -> Result<String> {
    if bytes.is_empty() {
        return Err(DataError::Empty { path: path.into() });
    }
    if let Some(i) = bytes.iter().position(|&b| b == 0) {
        let detail = format!("NUL byte at offset {i}");
        return Err(DataError::Binary {
            path: path.into(),
            detail,
        });
    }
    String::from_utf8(bytes).map_err(|e| DataError::Binary {
        path: path.into(),
        detail: format!(
            "invalid UTF-8 at byte offset {}",
            e.utf8_error().valid_up_to()
        ),
    })
}

/// Token ids for training and validation. Either may be empty only as documented on
/// [`load_dataset`].
#[derive(Debug, Clone, Default)]
pub struct Dataset {
    /// Training ids, in file order (N_train); empty when `train_shards` holds them.
    pub train: Vec<u32>,
    /// Validation ids (N_val); empty when `val_shards` holds them or there is no validation
    /// data.
    pub val: Vec<u32>,
    /// The files the ids came from (empty for data made in memory).
    pub sources: Vec<DataSource>,
    /// Web-scale data: token shards read through memory maps ([`crate::shards`]) instead of
    /// `train` / `val` (then empty). See [`load_sharded`].
    pub train_shards: Option<Arc<ShardSet>>,
    /// Validation shards, in place of `val` (then empty); None with in-memory validation data.
    pub val_shards: Option<Arc<ShardSet>>,
}

/// What a data file is used for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DataRole {
    /// Training data (text: also the validation split when there is no validation file).
    Train,
    /// Validation data.
    Val,
}

impl DataRole {
    /// The `train` flag that names a file of this role.
    pub fn flag(self) -> &'static str {
        match self {
            DataRole::Train => "--data",
            DataRole::Val => "--val-data",
        }
    }
}

impl std::fmt::Display for DataRole {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            DataRole::Train => "training",
            DataRole::Val => "validation",
        })
    }
}

/// A data file as a run records it, to find it again and to know it is unchanged.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataSource {
    /// Training or validation.
    pub role: DataRole,
    /// Absolute where it could be resolved, as given otherwise.
    pub path: PathBuf,
    /// The file's size in bytes.
    pub bytes: u64,
    /// SHA-256 of the contents, lowercase hex.
    pub sha256: String,
}

impl DataSource {
    /// The record of `bytes` read from `path`.
    pub fn of(role: DataRole, path: &Path, bytes: &[u8]) -> Self {
        DataSource {
            role,
            path: std::fs::canonicalize(path).unwrap_or_else(|_| path.into()),
            bytes: bytes.len() as u64,
            sha256: sha256_hex(bytes),
        }
    }
}

impl DataSource {
    /// The record of a token shard, without reading it whole: its size, and as `sha256` the
    /// SHA-256 of its size (8 bytes, little-endian), its first MiB and its last MiB. A
    /// changed shard of web-scale data is caught unless the change spares both ends and the
    /// size.
    pub fn of_shard(role: DataRole, path: &Path) -> Result<Self> {
        use sha2::Digest;
        use std::io::{Read, Seek, SeekFrom};
        let read = |source| DataError::Read {
            path: path.into(),
            source,
        };
        let mut f = std::fs::File::open(path).map_err(read)?;
        let len = f.metadata().map_err(read)?.len();
        const END: u64 = 1 << 20;
        let mut h = sha2::Sha256::new();
        h.update(len.to_le_bytes());
        let mut buf = Vec::new();
        f.by_ref().take(END).read_to_end(&mut buf).map_err(read)?;
        h.update(&buf);
        if len > END {
            buf.clear();
            f.seek(SeekFrom::Start(len.saturating_sub(END).max(END)))
                .map_err(read)?;
            f.read_to_end(&mut buf).map_err(read)?;
            h.update(&buf);
        }
        Ok(DataSource {
            role,
            path: std::fs::canonicalize(path).unwrap_or_else(|_| path.into()),
            bytes: len,
            sha256: format!("ends:{}", hex(&h.finalize())),
        })
    }
}

/// SHA-256 of `bytes`, lowercase hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex(&sha2::Sha256::digest(bytes))
}

/// Lowercase hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Loads `data` (and `val_data` when given) as described in the module doc.
/// Errors: those of [`load_text`] and [`tokfile::read_tokens`], an unknown character for the
/// char tokenizer, and a token-file id `>= tokenizer.vocab_size()` ([`DataError::IdOutOfRange`],
/// naming the file, the first bad id and its position).
pub fn load_dataset(
    data: &Path,
    val_data: Option<&Path>,
    tokenizer: &Tokenizer,
) -> Result<Dataset> {
    load_dataset_checked(data, val_data, tokenizer, &[])
}

/// [`load_dataset`] for a run that recorded its data files in `recorded`: a file whose
/// contents differ from the record of its role is refused before it is decoded
/// ([`DataError::Changed`]).
pub fn load_dataset_checked(
    data: &Path,
    val_data: Option<&Path>,
    tokenizer: &Tokenizer,
    recorded: &[DataSource],
) -> Result<Dataset> {
    let mut sources = Vec::new();
    let mut load = |path, role| {
        let r = recorded.iter().find(|r| r.role == role);
        load_tokens(path, role, tokenizer, r, &mut sources)
    };
    let (mut train, is_token_file) = load(data, DataRole::Train)?;
    let val = match val_data {
        Some(v) => load(v, DataRole::Val)?.0,
        None if is_token_file => Vec::new(),
        None => {
            let n_train = (train.len() as f64 * 0.9).floor() as usize;
            train.split_off(n_train)
        }
    };
    Ok(Dataset {
        train,
        val,
        sources,
        ..Dataset::default()
    })
}

/// Whether `--data` names token shards rather than one file: a comma-separated list, a glob
/// (`*`, `?`, `[`), or a directory.
pub fn is_sharded(spec: &str) -> bool {
    spec.contains(',') || spec.contains(['*', '?', '[']) || Path::new(spec).is_dir()
}

/// The patterns of a sharded `--data` (see [`is_sharded`]).
pub fn shard_patterns(spec: &str) -> Vec<String> {
    spec.split(',')
        .filter(|p| !p.is_empty())
        .map(String::from)
        .collect()
}

/// Token shards for training (and validation, when given), memory-mapped; each shard is
/// recorded by its path, size and a sampled hash ([`DataSource::of_shard`]) and checked
/// against `recorded` (a resumed run's files, in order: the same contents, wherever they
/// are). Errors: those of [`ShardSet::open`], [`DataError::Changed`], a different number of
/// shards than recorded.
pub fn load_sharded(
    train: &[String],
    val: Option<&[String]>,
    recorded: &[DataSource],
) -> Result<Dataset> {
    let mut sources = Vec::new();
    let mut open = |patterns: &[String], role: DataRole| -> Result<Arc<ShardSet>> {
        let set = ShardSet::open(patterns)?;
        let before: Vec<&DataSource> = recorded.iter().filter(|r| r.role == role).collect();
        let now: Vec<DataSource> = set
            .shards()
            .iter()
            .map(|sh| DataSource::of_shard(role, sh.path()))
            .collect::<Result<_>>()?;
        if !before.is_empty() {
            if before.len() != now.len() {
                return Err(DataError::Mismatch {
                    context: format!("the {role} shards"),
                    field: "number of shards".into(),
                    expected: format!("{} (as the run recorded)", before.len()),
                    found: now.len().to_string(),
                });
            }
            if let Some((r, n)) = before.iter().zip(&now).find(|(r, n)| r.sha256 != n.sha256) {
                return Err(DataError::Changed {
                    found: Box::new(n.clone()),
                    recorded: Box::new((*r).clone()),
                });
            }
        }
        sources.extend(now);
        Ok(Arc::new(set))
    };
    let train_shards = open(train, DataRole::Train)?;
    let val_shards = val.map(|v| open(v, DataRole::Val)).transpose()?;
    Ok(Dataset {
        sources,
        train_shards: Some(train_shards),
        val_shards,
        ..Dataset::default()
    })
}

/// Reads one file as tokens: a token file as is, text encoded; checks it against `recorded`
/// and records it in `sources`. Returns whether it was a token file.
fn load_tokens(
    path: &Path,
    role: DataRole,
    tokenizer: &Tokenizer,
    recorded: Option<&DataSource>,
    sources: &mut Vec<DataSource>,
) -> Result<(Vec<u32>, bool)> {
    let bytes = std::fs::read(path).map_err(|source| DataError::Read {
        path: path.into(),
        source,
    })?;
    let source = DataSource::of(role, path, &bytes);
    if let Some(r) = recorded.filter(|r| r.sha256 != source.sha256) {
        return Err(DataError::Changed {
            found: Box::new(source),
            recorded: Box::new(r.clone()),
        });
    }
    sources.push(source);
    if tokfile::is_token_file(&bytes) {
        let tokens = tokfile::parse_tokens(path, &bytes)?;
        let limit = tokenizer.vocab_size();
        if let Some(position) = tokens.iter().position(|&id| id as usize >= limit) {
            return Err(DataError::IdOutOfRange {
                context: format!("{} ({} tokenizer)", path.display(), tokenizer.name()),
                id: tokens[position],
                position,
                limit: limit as u64,
            });
        }
        Ok((tokens, true))
    } else {
        let text = text_from_bytes(path, bytes)?;
        Ok((tokenizer.encode(&text)?, false))
    }
}

/// Checks that `tokens` holds at least one window of `block + 1` tokens; `what` names the
/// sequence in the error (e.g. "training data data/tiny.txt").
pub fn check_len(tokens: &[u32], block: usize, what: &str) -> Result<()> {
    if tokens.len() < block + 1 {
        return Err(DataError::TooFewTokens {
            what: what.into(),
            needed: block + 1,
            found: tokens.len(),
        });
    }
    Ok(())
}

/// How [`Batcher`] picks windows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BatchMode {
    /// Independent windows at uniform random offsets (nanoGPT).
    Random,
    /// Consecutive windows, wrapping at the end (llm.c).
    Sequential,
}

/// Everything a [`Batcher`] needs to continue exactly where it stopped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatcherState {
    /// Random or sequential windows.
    pub mode: BatchMode,
    /// Generator for random windows (unused in sequential mode).
    pub rng: Xoshiro256PlusPlus,
    /// Start of the next sequential batch (unused in random mode).
    pub pos: usize,
}

/// Produces `(B, T)` input/target batches from a token sequence; see the module doc.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batcher {
    state: BatcherState,
}

impl Batcher {
    /// A batcher in `mode`, its generator seeded with `seed`, starting at position 0.
    pub fn new(mode: BatchMode, seed: u64) -> Self {
        let rng = Xoshiro256PlusPlus::seed_from_u64(seed);
        Batcher {
            state: BatcherState { mode, rng, pos: 0 },
        }
    }

    /// Resumes from a state returned by [`Batcher::state`].
    pub fn from_state(state: BatcherState) -> Self {
        Batcher { state }
    }

    /// The current state, to save with a checkpoint.
    pub fn state(&self) -> BatcherState {
        self.state.clone()
    }

    /// Fills `inputs` and `targets` (both cleared, then `(B, T)` row-major) with the next batch.
    /// Errors: `b` or `t` zero ([`DataError::Mismatch`]), fewer than `T + 1` tokens (random) or
    /// `B*T + 1` tokens (sequential) ([`DataError::TooFewTokens`]).
    pub fn next_batch(
        &mut self,
        tokens: &[u32],
        b: usize,
        t: usize,
        inputs: &mut Vec<u32>,  // (B, T)
        targets: &mut Vec<u32>, // (B, T)
    ) -> Result<()> {
        if b == 0 || t == 0 {
            return Err(DataError::Mismatch {
                context: "batch".into(),
                field: "batch size B and sequence length T".into(),
                expected: "both > 0".into(),
                found: format!("B = {b}, T = {t}"),
            });
        }
        inputs.clear();
        targets.clear();
        let len = tokens.len();
        match self.state.mode {
            BatchMode::Random => {
                let what = format!("random batches of sequence length {t}");
                check_len(tokens, t, &what)?;
                let max_start = (len - t - 1) as u64; // inclusive
                for _ in 0..b {
                    let o = self.state.rng.gen_range(0..=max_start) as usize;
                    inputs.extend_from_slice(&tokens[o..o + t]);
                    targets.extend_from_slice(&tokens[o + 1..o + t + 1]);
                }
            }
            BatchMode::Sequential => {
                let bt = b * t;
                let what = format!("sequential batches of {b} x {t} tokens");
                check_len(tokens, bt, &what)?;
                if self.state.pos + bt + 1 > len {
                    self.state.pos = 0; // a state saved with other B, T or data
                }
                let p = self.state.pos;
                inputs.extend_from_slice(&tokens[p..p + bt]);
                targets.extend_from_slice(&tokens[p + 1..p + bt + 1]);
                self.state.pos += bt;
                if self.state.pos + bt + 1 > len {
                    self.state.pos = 0;
                }
            }
        }
        Ok(())
    }
}
