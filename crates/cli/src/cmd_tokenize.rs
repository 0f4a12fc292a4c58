//! `ferrogpt tokenize`: text → llm.c token files, one file or shards.
//!
//! **One file.** A single text file (up to 1 GiB) without `--shard-tokens` is written to
//! `--out` as before: uint16 ids (uint32 past 65,536), and for the char tokenizer, whose
//! vocabulary is built from the input, the vocabulary beside it as `OUT.tokenizer.json` in
//! Hugging Face's format (`train --tokenizer OUT.tokenizer.json` reads it).
//!
//! **Shards**, otherwise (several inputs, a folder, JSONL, Parquet, a bigger text file, or
//! `--shard-tokens` given), named as llm.c's `fineweb.py` names them: with OUT = `--out` less
//! `.bin`, `OUT_val_000000.bin`, `OUT_train_000001.bin`, `OUT_train_000002.bin`, ... Every
//! shard holds exactly `--shard-tokens` ids (default 100M) but the last; the first is the
//! validation shard (so `--data 'OUT_train_*.bin' --val-data OUT_val_000000.bin`). Existing
//! shards of that name are refused, not mixed with new ones; a failed run removes its shards.
//!
//! **Documents.** A text file is one document; a folder, its files (sorted, not recursive),
//! each read by its extension; `*.jsonl`, one JSON object per line with the document in
//! `--text-field` (blank lines skipped); `*.parquet`, the string column `--text-field`, page by
//! page (null rows skipped). `--eot` (default: on unless the input is one text file) puts the
//! tokenizer's end-of-text id before each document, as `fineweb.py` does.
//!
//! **Pipeline**, in constant memory: a reader thread cuts documents into pieces of about
//! [`PIECE`] bytes and sends batches of them; rayon encodes a batch's pieces in parallel and
//! this thread writes them in order. A long text is cut only before a space or after a newline
//! that lies between two non-space characters: GPT-2's pre-tokenizer (and other byte-level BPE
//! regexes) split there anyway, so the ids equal those of encoding the text whole (tested). A
//! tokenizer that treats the start of a text specially (SentencePiece's prefix space) can
//! differ at those cuts.

use std::io::{BufRead, IsTerminal, Read};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{sync_channel, SyncSender};

use ferrogpt_train::data::load_text;
use ferrogpt_train::tokenizer::{hf, Tokenizer};
use ferrogpt_train::tokfile::{write_tokens, TokenWriter};
use rayon::prelude::*;

/// Target size of a piece of text encoded as one task.
pub const PIECE: usize = 1 << 20;
/// A text with no cut point within this many bytes past [`PIECE`] is cut at a character
/// boundary (the ids near that cut may differ from encoding it whole).
const PIECE_MAX: usize = 16 << 20;
/// A single text file larger than this is written as shards.
const ONE_FILE_MAX: u64 = 1 << 30;
/// llm.c's shard size.
const DEFAULT_SHARD_TOKENS: usize = 100_000_000;

#[derive(Clone, Debug, clap::Args)]
pub struct TokenizeArgs {
    /// char, gpt2, or the path of a tokenizer.json (or of vocab.json with merges.txt beside
    /// it, or of a directory holding either)
    #[arg(long, default_value = "gpt2")]
    tokenizer: String,
    /// Inputs: text files, folders of them, JSONL (*.jsonl) or Parquet (*.parquet) files
    #[arg(required = true)]
    inputs: Vec<PathBuf>,
    /// The token file to write; for shards, their prefix (data/fineweb →
    /// data/fineweb_val_000000.bin, data/fineweb_train_000001.bin, ...)
    #[arg(long)]
    out: PathBuf,
    /// Tokens per shard; giving it always writes shards [default: 100000000]
    #[arg(long, value_name = "N")]
    shard_tokens: Option<usize>,
    /// The field (JSONL) or column (Parquet) that holds each document's text
    #[arg(long, default_value = "text")]
    text_field: String,
    /// Put the end-of-text id before each document [default: true unless the input is one
    /// text file]
    #[arg(long, num_args = 0..=1, default_missing_value = "true", value_name = "BOOL")]
    eot: Option<bool>,
    /// Worker threads [default: all cores]
    #[arg(long)]
    threads: Option<usize>,
}

/// How an input file is read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Text,
    Jsonl,
    Parquet,
}

fn kind(path: &Path) -> Kind {
    match path.extension().and_then(|e| e.to_str()) {
        Some("jsonl") => Kind::Jsonl,
        Some("parquet") => Kind::Parquet,
        _ => Kind::Text,
    }
}

pub fn run(a: TokenizeArgs) -> Result<(), String> {
    let threads = match a.threads {
        Some(0) => return Err("--threads must be at least 1".into()),
        Some(n) => n,
        None => rayon::current_num_threads(),
    };
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .map_err(|e| format!("cannot set up {threads} threads: {e}"))?;
    let files = expand_inputs(&a.inputs)?;
    let multi_doc = a.inputs.len() > 1
        || a.inputs.iter().any(|p| p.is_dir())
        || files.iter().any(|(p, _)| kind(p) != Kind::Text);
    let bytes: u64 = files.iter().map(|(_, n)| n).sum();
    let one_file = !multi_doc && a.shard_tokens.is_none() && bytes <= ONE_FILE_MAX;
    if a.tokenizer == "char" && !one_file {
        return Err(
            "--tokenizer char builds its vocabulary from one text file and cannot \
                    write shards: use gpt2 or a tokenizer.json"
                .into(),
        );
    }
    let text = match a.tokenizer.as_str() {
        "char" => Some(load_text(&a.inputs[0]).map_err(|e| e.to_string())?),
        _ => None,
    };
    let tok = match (a.tokenizer.as_str(), &text) {
        ("gpt2", _) => Tokenizer::gpt2().map_err(|e| e.to_string())?,
        ("char", Some(text)) => Tokenizer::from_corpus_char(text),
        (path, _) => Tokenizer::load(Path::new(path)).map_err(|e| format!("--tokenizer: {e}"))?,
    };
    let eot = match (a.eot.unwrap_or(multi_doc), tok.eot()) {
        (false, _) => None,
        (true, Some(id)) => Some(id),
        (true, None) => {
            return Err(format!(
                "the {} tokenizer has no end-of-text token to put between documents: pass \
                 --eot false",
                tok.name()
            ))
        }
    };
    let start = std::time::Instant::now();
    let written = if one_file {
        let text = match text {
            Some(t) => t,
            None => load_text(&a.inputs[0]).map_err(|e| e.to_string())?,
        };
        pool.install(|| write_one_file(&a, &tok, eot, &text))?
    } else {
        let shard_tokens = a.shard_tokens.unwrap_or(DEFAULT_SHARD_TOKENS);
        if shard_tokens == 0 || shard_tokens > i32::MAX as usize {
            return Err(format!(
                "--shard-tokens must be between 1 and {}, not {shard_tokens}",
                i32::MAX
            ));
        }
        let mut out = Shards::new(&a.out, shard_tokens, tok.vocab_size())?;
        let job = Job {
            tok: &tok,
            eot,
            field: &a.text_field,
        };
        let done = pool.install(|| write_shards(&job, files, bytes, threads, &mut out));
        if let Err(e) = done {
            out.remove();
            return Err(e);
        }
        out.summary()
    };
    let secs = start.elapsed().as_secs_f64();
    eprintln!(
        "{written} ({:.1} MB of input in {secs:.1} s, {:.1} MB/s on {threads} threads)",
        bytes as f64 / 1e6,
        bytes as f64 / 1e6 / secs.max(1e-9)
    );
    Ok(())
}

/// The files that `inputs` name, with their sizes: a folder's regular files (not hidden),
/// sorted. Errors: a missing input, a folder without files.
fn expand_inputs(inputs: &[PathBuf]) -> Result<Vec<(PathBuf, u64)>, String> {
    let mut files = Vec::new();
    for input in inputs {
        let err = |e: std::io::Error| format!("cannot read {}: {e}", input.display());
        if input.is_dir() {
            let mut found = Vec::new();
            for entry in std::fs::read_dir(input).map_err(err)? {
                let p = entry.map_err(err)?.path();
                let hidden = p
                    .file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with('.'));
                if p.is_file() && !hidden {
                    found.push(p);
                }
            }
            if found.is_empty() {
                return Err(format!("input folder {} holds no files", input.display()));
            }
            found.sort();
            files.extend(found);
        } else {
            files.push(input.clone());
        }
    }
    files
        .into_iter()
        .map(|p| match std::fs::metadata(&p) {
            Ok(m) => Ok((p, m.len())),
            Err(e) => Err(format!("cannot read {}: {e}", p.display())),
        })
        .collect()
}

/// One text (already loaded) → the token file `--out`, its pieces encoded in parallel (GPT-2
/// and char; a library tokenizer encodes it whole, as before).
/// Returns what was written, in words.
fn write_one_file(
    a: &TokenizeArgs,
    tok: &Tokenizer,
    eot: Option<u32>,
    text: &str,
) -> Result<String, String> {
    // Library tokenizers may treat the start of a text specially: those get it whole.
    let exact_cuts = matches!(tok, Tokenizer::Gpt2(_) | Tokenizer::Char(_));
    let mut pieces = Vec::new();
    let mut rest = text;
    while !rest.is_empty() {
        let cut = match exact_cuts {
            true => cut_point(rest.as_bytes(), true).unwrap_or(rest.len()),
            false => rest.len(),
        };
        pieces.push(&rest[..cut]);
        rest = &rest[cut..];
    }
    let encoded = pieces
        .par_iter()
        .map(|p| tok.encode(p))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| e.to_string())?;
    let mut ids: Vec<u32> = eot.into_iter().collect();
    ids.extend(encoded.into_iter().flatten());
    write_tokens(&a.out, &ids).map_err(|e| e.to_string())?;
    if a.tokenizer == "char" {
        let mut vocab_path = a.out.clone().into_os_string();
        vocab_path.push(".tokenizer.json");
        let vocab_path = PathBuf::from(vocab_path);
        let (json, _) = hf::to_files(tok, 0)
            .map_err(|e| e.to_string())?
            .expect("a char tokenizer has files");
        ferrogpt_core::fsutil::write_atomic(&vocab_path, json.as_bytes())
            .map_err(|e| format!("cannot write {}: {e}", vocab_path.display()))?;
        eprintln!(
            "vocabulary ({} characters) written to {}",
            tok.vocab_size(),
            vocab_path.display()
        );
    }
    Ok(format!(
        "{} tokens written to {}",
        ids.len(),
        a.out.display()
    ))
}

/// Where a text of `bytes` (valid UTF-8 up to its end, or cut mid-character at the end when
/// `at_end` is false) may be cut into a piece of about [`PIECE`] bytes: the first byte offset
/// `>= PIECE` that is before a space or after a newline, that space or newline lying between
/// two non-whitespace characters. `None`: `bytes` is short enough to stay whole (`at_end`), or
/// needs more bytes to find a cut. Past [`PIECE_MAX`] bytes without one, the last character
/// boundary before it.
fn cut_point(bytes: &[u8], at_end: bool) -> Option<usize> {
    if bytes.len() <= PIECE && at_end {
        return None;
    }
    let limit = bytes.len().min(PIECE_MAX);
    for p in PIECE.min(limit)..limit {
        let c = bytes[p];
        if (c == b' ' || c == b'\n') && p > 0 {
            let (before, after) = (char_before(&bytes[..p]), char_at(&bytes[p + 1..]));
            if let (Some(b), Some(a)) = (before, after) {
                if !b.is_whitespace() && !a.is_whitespace() {
                    return Some(if c == b' ' { p } else { p + 1 });
                }
            }
        }
    }
    if bytes.len() >= PIECE_MAX {
        let mut p = PIECE_MAX;
        while p > 0 && (bytes[p] & 0xC0) == 0x80 {
            p -= 1; // not inside a UTF-8 sequence
        }
        return Some(p.max(1));
    }
    None
}

/// The character that ends `bytes`, if they end with a whole one.
fn char_before(bytes: &[u8]) -> Option<char> {
    let start = bytes.len().saturating_sub(4);
    (start..bytes.len())
        .find_map(|i| std::str::from_utf8(&bytes[i..]).ok())
        .and_then(|s| s.chars().next_back())
}

/// The character that starts `bytes`, if whole.
fn char_at(bytes: &[u8]) -> Option<char> {
    (1..=bytes.len().min(4))
        .find_map(|n| std::str::from_utf8(&bytes[..n]).ok())
        .and_then(|s| s.chars().next())
}

/// A unit of encoding work, made by the reader thread.
enum Unit {
    /// Text; `starts_doc` if it begins a document (it then gets the end-of-text id).
    Text { text: String, starts_doc: bool },
    /// A JSONL line, parsed by the worker that encodes it; `at` is `FILE:LINE`.
    Json { line: String, at: String },
}

/// Units in input order, and the input bytes read once they are written.
struct Batch {
    units: Vec<Unit>,
    progress: u64,
}

/// What encoding needs.
struct Job<'a> {
    tok: &'a Tokenizer,
    eot: Option<u32>,
    field: &'a str,
}

impl Job<'_> {
    /// The ids of a unit, the end-of-text id first if it starts a document.
    fn encode(&self, unit: Unit) -> Result<Vec<u32>, String> {
        let (text, starts_doc, at) = match unit {
            Unit::Text { text, starts_doc } => (text, starts_doc, None),
            Unit::Json { line, at } => (self.json_text(&line, &at)?, true, Some(at)),
        };
        let ids = self.tok.encode(&text).map_err(|e| match &at {
            Some(at) => format!("{at}: {e}"),
            None => e.to_string(),
        })?;
        match self.eot.filter(|_| starts_doc) {
            Some(eot) => Ok([eot].into_iter().chain(ids).collect()),
            None => Ok(ids),
        }
    }

    /// The text field of a JSONL line. Errors name `at` and the field.
    fn json_text(&self, line: &str, at: &str) -> Result<String, String> {
        let mut v: serde_json::Value =
            serde_json::from_str(line).map_err(|e| format!("{at}: not JSON: {e}"))?;
        match v.get_mut(self.field).map(serde_json::Value::take) {
            Some(serde_json::Value::String(s)) => Ok(s),
            found => Err(format!(
                "{at}: field {:?}: expected a string (--text-field), found {}",
                self.field,
                found.map_or("nothing".to_string(), |f| f
                    .to_string()
                    .chars()
                    .take(40)
                    .collect())
            )),
        }
    }
}

/// Streams `files` (of `bytes` in all) into `out`: see the module doc.
fn write_shards(
    job: &Job,
    files: Vec<(PathBuf, u64)>,
    bytes: u64,
    threads: usize,
    out: &mut Shards,
) -> Result<(), String> {
    let (tx, rx) = sync_channel(2);
    let field = job.field.to_string();
    let batch_bytes = (4 * PIECE * threads).max(16 * PIECE);
    let reader = std::thread::spawn(move || {
        let mut r = Reader {
            tx,
            units: Vec::new(),
            held: 0,
            progress: 0,
            batch_bytes,
        };
        if let Err(e) = r.read_all(&files, &field) {
            let _ = r.tx.send(Err(e)); // fails only if the writer has stopped
        }
    });
    let bar = std::io::stderr().is_terminal().then(|| {
        let bar = indicatif::ProgressBar::new(bytes);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{bar:30} {bytes}/{total_bytes} {bytes_per_sec} {msg} [{elapsed_precise} eta {eta}]",
            )
            .expect("static template"),
        );
        bar
    });
    for batch in rx {
        let batch = batch?;
        let encoded: Vec<Result<Vec<u32>, String>> =
            batch.units.into_par_iter().map(|u| job.encode(u)).collect();
        for ids in encoded {
            out.push(&ids?)?;
        }
        if let Some(bar) = &bar {
            bar.set_position(batch.progress);
            bar.set_message(format!("{} tokens", out.tokens));
        }
    }
    let _ = reader.join();
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    out.finish()
}

/// The reader thread: files → batches of units on `tx`.
struct Reader {
    tx: SyncSender<Result<Batch, String>>,
    units: Vec<Unit>,
    /// Bytes of text in `units`.
    held: usize,
    /// Input bytes read so far.
    progress: u64,
    batch_bytes: usize,
}

/// The writer stopped (it has an error of its own to report).
const STOPPED: &str = "stopped";

impl Reader {
    fn read_all(&mut self, files: &[(PathBuf, u64)], field: &str) -> Result<(), String> {
        let mut done = 0;
        for (path, len) in files {
            match kind(path) {
                Kind::Text => self.text(path)?,
                Kind::Jsonl => self.jsonl(path)?,
                Kind::Parquet => self.parquet(path, field)?,
            }
            done += len;
            self.progress = done;
        }
        self.send()
    }

    fn push(&mut self, unit: Unit, len: usize) -> Result<(), String> {
        self.units.push(unit);
        self.held += len;
        if self.held >= self.batch_bytes {
            self.send()?;
        }
        Ok(())
    }

    fn send(&mut self) -> Result<(), String> {
        let units = std::mem::take(&mut self.units);
        self.held = 0;
        let batch = Batch {
            units,
            progress: self.progress,
        };
        self.tx.send(Ok(batch)).map_err(|_| STOPPED.to_string())
    }

    /// A text file: one document, in pieces. Errors: unreadable, NUL byte, invalid UTF-8.
    fn text(&mut self, path: &Path) -> Result<(), String> {
        let err = |e: std::io::Error| format!("cannot read {}: {e}", path.display());
        let mut file = std::fs::File::open(path).map_err(err)?;
        let (mut buf, mut offset, mut eof) = (Vec::new(), 0u64, false);
        let mut starts_doc = true; // an empty file is an empty document
        while starts_doc || !buf.is_empty() || !eof {
            let cut = loop {
                match cut_point(&buf, eof) {
                    Some(cut) => break cut,
                    None if eof => break buf.len(),
                    None => {
                        let n = buf.len();
                        buf.resize(n + PIECE, 0);
                        let got = file.read(&mut buf[n..]).map_err(err)?;
                        buf.truncate(n + got);
                        eof = got == 0;
                    }
                }
            };
            let rest = buf.split_off(cut);
            let text = text_piece(path, std::mem::replace(&mut buf, rest), offset)?;
            offset += cut as u64;
            self.progress += cut as u64;
            self.push(Unit::Text { text, starts_doc }, cut)?;
            starts_doc = false;
        }
        Ok(())
    }

    /// A JSONL file: a document per non-blank line.
    fn jsonl(&mut self, path: &Path) -> Result<(), String> {
        let err = |e: std::io::Error| format!("cannot read {}: {e}", path.display());
        let file = std::fs::File::open(path).map_err(err)?;
        let mut r = std::io::BufReader::with_capacity(PIECE, file);
        let mut line_no = 0;
        loop {
            let mut line = String::new();
            let n = r
                .read_line(&mut line)
                .map_err(|e| format!("{}:{}: cannot read: {e}", path.display(), line_no + 1))?;
            if n == 0 {
                return Ok(());
            }
            line_no += 1;
            self.progress += n as u64;
            if !line.trim().is_empty() {
                let at = format!("{}:{line_no}", path.display());
                self.push(Unit::Json { line, at }, n)?;
            }
        }
    }

    /// A Parquet file: a document per non-null value of the byte-array column `field`.
    fn parquet(&mut self, path: &Path, field: &str) -> Result<(), String> {
        use parquet::basic::Type;
        use parquet::column::reader::ColumnReader;
        use parquet::file::reader::FileReader;
        let at = path.display();
        let bad = |e: parquet::errors::ParquetError| format!("{at}: {e}");
        let file = std::fs::File::open(path).map_err(|e| format!("cannot read {at}: {e}"))?;
        let reader = parquet::file::reader::SerializedFileReader::new(file)
            .map_err(|e| format!("{at}: not a Parquet file: {e}"))?;
        let meta = reader.metadata();
        let schema = meta.file_metadata().schema_descr();
        let columns: Vec<String> = (0..schema.num_columns())
            .map(|i| schema.column(i).path().string())
            .collect();
        let col = columns.iter().position(|c| c == field).ok_or_else(|| {
            format!(
                "{at}: no column {field:?} (--text-field); columns: {}",
                columns.join(", ")
            )
        })?;
        let descr = schema.column(col);
        if descr.physical_type() != Type::BYTE_ARRAY || descr.max_rep_level() != 0 {
            return Err(format!(
                "{at}: column {field:?} is not a string column ({})",
                descr.physical_type()
            ));
        }
        for g in 0..meta.num_row_groups() {
            let group = reader.get_row_group(g).map_err(bad)?;
            let ColumnReader::ByteArrayColumnReader(mut values) =
                group.get_column_reader(col).map_err(bad)?
            else {
                unreachable!("a BYTE_ARRAY column has a byte-array reader");
            };
            let (mut defs, mut batch, mut row) = (Vec::new(), Vec::new(), 0);
            loop {
                defs.clear();
                batch.clear();
                let (records, _, _) = values
                    .read_records(1024, Some(&mut defs), None, &mut batch)
                    .map_err(bad)?;
                if records == 0 {
                    break;
                }
                for v in batch.drain(..) {
                    let text = String::from_utf8(v.data().to_vec()).map_err(|e| {
                        format!(
                            "{at}: row group {g}, value {row}: not UTF-8 text: {}",
                            e.utf8_error()
                        )
                    })?;
                    row += 1;
                    let len = text.len();
                    self.push(
                        Unit::Text {
                            text,
                            starts_doc: true,
                        },
                        len,
                    )?;
                }
            }
            self.progress += group.metadata().compressed_size().max(0) as u64;
        }
        Ok(())
    }
}

/// `piece`, the bytes of `path` from `offset`, as text. Errors: a NUL byte, invalid UTF-8.
fn text_piece(path: &Path, piece: Vec<u8>, offset: u64) -> Result<String, String> {
    let not_text = |detail: String| {
        format!(
            "data file {} is not text: {detail} (expected UTF-8 text)",
            path.display()
        )
    };
    if let Some(i) = piece.iter().position(|&b| b == 0) {
        return Err(not_text(format!(
            "NUL byte at offset {}",
            offset + i as u64
        )));
    }
    String::from_utf8(piece).map_err(|e| {
        let at = offset + e.utf8_error().valid_up_to() as u64;
        not_text(format!("invalid UTF-8 at byte offset {at}"))
    })
}

/// The shards being written: `BASE_val_000000.bin`, then `BASE_train_NNNNNN.bin`.
struct Shards {
    base: String,
    size: usize,
    vocab: usize,
    current: Option<TokenWriter>,
    written: Vec<PathBuf>,
    tokens: u64,
}

impl Shards {
    /// Shards of `size` ids named after `out` (less `.bin`). Errors: shards of that name exist.
    fn new(out: &Path, size: usize, vocab: usize) -> Result<Self, String> {
        let out = out.to_string_lossy();
        let base = out.strip_suffix(".bin").unwrap_or(&out).to_string();
        let s = Shards {
            base,
            size,
            vocab,
            current: None,
            written: Vec::new(),
            tokens: 0,
        };
        let first = s.path(0);
        let dir = match first.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let stem = Path::new(&s.base)
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if let Ok(entries) = std::fs::read_dir(&dir) {
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                let ours = [format!("{stem}_val_"), format!("{stem}_train_")]
                    .iter()
                    .any(|p| name.starts_with(p.as_str()));
                if ours && name.ends_with(".bin") {
                    return Err(format!(
                        "{} exists: remove the old shards of {} first (a glob would mix them \
                         with the new ones)",
                        dir.join(&name).display(),
                        s.base
                    ));
                }
            }
        }
        Ok(s)
    }

    fn path(&self, index: usize) -> PathBuf {
        let split = if index == 0 { "val" } else { "train" };
        PathBuf::from(format!("{}_{split}_{index:06}.bin", self.base))
    }

    /// Appends `ids`, starting a new shard whenever one is full.
    fn push(&mut self, mut ids: &[u32]) -> Result<(), String> {
        while !ids.is_empty() {
            if self.current.is_none() {
                let path = self.path(self.written.len());
                let w = TokenWriter::create(&path, self.vocab).map_err(|e| e.to_string())?;
                self.current = Some(w);
            }
            let w = self.current.as_mut().expect("opened above");
            let n = (self.size - w.len()).min(ids.len());
            w.append(&ids[..n]).map_err(|e| e.to_string())?;
            self.tokens += n as u64;
            ids = &ids[n..];
            if w.len() == self.size {
                self.close()?;
            }
        }
        Ok(())
    }

    fn close(&mut self) -> Result<(), String> {
        if let Some(w) = self.current.take() {
            w.finish().map_err(|e| e.to_string())?;
            self.written.push(self.path(self.written.len()));
        }
        Ok(())
    }

    /// Closes the last shard. Errors: no token at all.
    fn finish(&mut self) -> Result<(), String> {
        self.close()?;
        if self.written.is_empty() {
            return Err("the inputs hold no text: no token to write".into());
        }
        Ok(())
    }

    /// Removes what this run wrote (after an error).
    fn remove(&mut self) {
        self.current = None;
        for p in self.written.drain(..) {
            let _ = std::fs::remove_file(p);
        }
    }

    /// One line: tokens, shards, their names.
    fn summary(&self) -> String {
        let n = self.written.len();
        let names = match n {
            1 => format!(
                "{} (the validation shard only: pass a smaller --shard-tokens for training \
                 shards)",
                self.path(0).display()
            ),
            _ => format!(
                "{} and {}..{}",
                self.path(0).display(),
                self.path(1).display(),
                self.path(n - 1).display()
            ),
        };
        let shards = if n == 1 { "shard" } else { "shards" };
        format!("{} tokens in {n} {shards}: {names}", self.tokens)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shakespeare() -> String {
        let gz = include_bytes!("../data/tinyshakespeare.txt.gz");
        let mut text = String::new();
        flate2::read::GzDecoder::new(&gz[..])
            .read_to_string(&mut text)
            .unwrap();
        text
    }

    /// Cuts `text` as the reader does.
    fn pieces(text: &str) -> Vec<&str> {
        let mut out = Vec::new();
        let mut rest = text;
        while !rest.is_empty() {
            let cut = cut_point(rest.as_bytes(), true).unwrap_or(rest.len());
            out.push(&rest[..cut]);
            rest = &rest[cut..];
        }
        out
    }

    #[test]
    fn cuts_keep_gpt2_ids() {
        // Tiny Shakespeare, its spaces and newlines made into every kind of neighbourhood.
        let text = shakespeare().replace("e ", "e  ").replace("\n\n", "\n \n") + "end";
        let big = text.repeat(2);
        let p = pieces(&big);
        assert!(p.len() >= 2, "{}", p.len());
        assert_eq!(p.concat(), big);
        for w in p.windows(2) {
            let (a, b) = (w[0].chars().last().unwrap(), w[1].chars().next().unwrap());
            assert!(a == '\n' || b == ' ', "cut between {a:?} and {b:?}");
        }
        let tok = Tokenizer::gpt2().unwrap();
        let whole = tok.encode(&big).unwrap();
        let cut: Vec<u32> = p.iter().flat_map(|s| tok.encode(s).unwrap()).collect();
        assert_eq!(cut, whole);
    }

    #[test]
    fn cuts_avoid_whitespace_runs_and_split_long_runs_at_characters() {
        // No allowed cut: whitespace everywhere next to spaces; then a character boundary.
        let text = "é \u{a0}".repeat(PIECE_MAX / 3);
        let cut = cut_point(text.as_bytes(), true).unwrap();
        assert!(text.is_char_boundary(cut) && cut <= PIECE_MAX, "{cut}");
        assert_eq!(cut_point(b"short text", true), None);
        assert_eq!(cut_point(b"short text", false), None);
    }
}
