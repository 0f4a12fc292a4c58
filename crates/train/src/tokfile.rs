//! llm.c token files (`.bin`), read and written.
//!
//! Layout, all little-endian:
//! ```text
//! header: 256 x int32   [0] magic, [1] version, [2] token count N, rest 0
//! body:   N x uint16    token ids (GPT-2's layout: magic 20240520, version 1)
//!      or N x uint32    token ids (llm.c's Llama 3 layout: magic 20240801, version 7)
//! ```
//! A file is valid only if its length is exactly `1024 + width*N` bytes. [`write_tokens`]
//! writes the uint16 layout when every id fits in 16 bits, the uint32 one otherwise. Files are
//! written atomically ([`ferrogpt_core::fsutil::write_atomic_with`]); [`TokenWriter`] streams a
//! file of unknown length (a shard) and fixes its width from the vocabulary instead.

use std::io::Write;
use std::path::Path;

use crate::data::{DataError, Result};

/// First header int32 of a token file of uint16 ids.
pub const MAGIC: i32 = 20240520;
/// Second header int32 of a token file of uint16 ids.
pub const VERSION: i32 = 1;
/// First header int32 of a token file of uint32 ids.
pub const MAGIC_U32: i32 = 20240801;
/// Second header int32 of a token file of uint32 ids.
pub const VERSION_U32: i32 = 7;
/// Header length in bytes (256 int32).
pub const HEADER_BYTES: usize = 256 * 4;

/// True if `prefix` (the first bytes of a file, at least 4) starts with a token-file magic.
pub fn is_token_file(prefix: &[u8]) -> bool {
    prefix.len() >= 4
        && [MAGIC, MAGIC_U32].contains(&i32::from_le_bytes([
            prefix[0], prefix[1], prefix[2], prefix[3],
        ]))
}

/// Reads the token ids of the token file at `path`. Errors: missing/unreadable file, a header
/// shorter than 1024 bytes, wrong magic or version, a token count that disagrees with the file
/// length (truncated file or trailing bytes); each names the file, expected and found value.
pub fn read_tokens(path: &Path) -> Result<Vec<u32>> {
    let bytes = std::fs::read(path).map_err(|source| DataError::Read {
        path: path.into(),
        source,
    })?;
    parse_tokens(path, &bytes)
}

/// Parses the contents `bytes` of a token file; `path` is used in error messages only.
pub fn parse_tokens(path: &Path, bytes: &[u8]) -> Result<Vec<u32>> {
    let header = parse_header(path, bytes, bytes.len() as u64)?;
    let body = &bytes[HEADER_BYTES..];
    Ok(match header.width {
        2 => body
            .chunks_exact(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]) as u32)
            .collect(),
        _ => body
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
    })
}

/// What a token file's header says, once checked against the file's length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Bytes per token id: 2 (magic [`MAGIC`]) or 4 (magic [`MAGIC_U32`]).
    pub width: usize,
    /// Number of token ids in the body.
    pub count: usize,
}

/// Checks the header at the start of `prefix` (the file's first bytes: all of them, or at
/// least [`HEADER_BYTES`]) against `file_len`, the file's length in bytes. Errors
/// ([`DataError::Mismatch`], naming `path`): a file shorter than the header, wrong magic or
/// version, a negative count, a length other than `1024 + width*count` (truncated file or
/// trailing bytes).
pub fn parse_header(path: &Path, prefix: &[u8], file_len: u64) -> Result<Header> {
    let bad = |field: &str, expected: String, found: String| DataError::Mismatch {
        context: format!("token file {}", path.display()),
        field: field.into(),
        expected,
        found,
    };
    if file_len < HEADER_BYTES as u64 || prefix.len() < HEADER_BYTES {
        let found = format!("{file_len} bytes");
        return Err(bad(
            "header",
            format!("at least {HEADER_BYTES} bytes"),
            found,
        ));
    }
    let header = |i: usize| {
        i32::from_le_bytes([
            prefix[4 * i],
            prefix[4 * i + 1],
            prefix[4 * i + 2],
            prefix[4 * i + 3],
        ])
    };
    let (version, width) = match header(0) {
        MAGIC => (VERSION, 2),
        MAGIC_U32 => (VERSION_U32, 4),
        m => {
            let expected = format!("{MAGIC} or {MAGIC_U32}");
            return Err(bad("magic", expected, m.to_string()));
        }
    };
    if header(1) != version {
        return Err(bad("version", version.to_string(), header(1).to_string()));
    }
    let count = header(2);
    if count < 0 {
        return Err(bad("token count", "a count >= 0".into(), count.to_string()));
    }
    let body = file_len - HEADER_BYTES as u64;
    let expected = width as u64 * count as u64;
    if body != expected {
        let what = if body < expected {
            "truncated"
        } else {
            "trailing bytes"
        };
        return Err(bad(
            "file length",
            format!(
                "{} bytes (header + {count} tokens x {width})",
                HEADER_BYTES as u64 + expected
            ),
            format!("{file_len} bytes ({what})"),
        ));
    }
    Ok(Header {
        width,
        count: count as usize,
    })
}

/// Writes `tokens` to `path` as a token file, atomically: uint16 ids when every id fits,
/// uint32 otherwise. Errors: more than `i32::MAX` tokens, or a write failure.
pub fn write_tokens(path: &Path, tokens: &[u32]) -> Result<()> {
    let wide = tokens.iter().any(|&id| id > u16::MAX as u32);
    let count = token_count(path, tokens.len())?;
    let header = header_bytes(wide, count);
    ferrogpt_core::fsutil::write_atomic_with(path, |w| {
        w.write_all(&header)?;
        write_ids(w, tokens, wide)
    })
    .map_err(|source| DataError::Write {
        path: path.into(),
        source,
    })
}

/// `n` as a header's token count. Errors: `n > i32::MAX`.
fn token_count(path: &Path, n: usize) -> Result<i32> {
    i32::try_from(n).map_err(|_| DataError::Mismatch {
        context: format!("token file {}", path.display()),
        field: "token count".into(),
        expected: format!("at most {}", i32::MAX),
        found: n.to_string(),
    })
}

/// The 1024-byte header of a file of `count` ids, uint32 if `wide`.
fn header_bytes(wide: bool, count: i32) -> Vec<u8> {
    let mut header = [0i32; 256];
    (header[0], header[1]) = if wide {
        (MAGIC_U32, VERSION_U32)
    } else {
        (MAGIC, VERSION)
    };
    header[2] = count;
    header.iter().flat_map(|h| h.to_le_bytes()).collect()
}

/// Writes `ids` little-endian, 4 bytes each if `wide`, else 2 (each id must fit).
fn write_ids(w: &mut impl Write, ids: &[u32], wide: bool) -> std::io::Result<()> {
    let mut bytes = Vec::with_capacity(ids.len().min(1 << 16) * 4);
    for chunk in ids.chunks(1 << 16) {
        bytes.clear();
        for &id in chunk {
            if wide {
                bytes.extend_from_slice(&id.to_le_bytes());
            } else {
                bytes.extend_from_slice(&(id as u16).to_le_bytes());
            }
        }
        w.write_all(&bytes)?;
    }
    Ok(())
}

/// A token file written as a stream (llm.c's shards): ids are appended, and
/// [`TokenWriter::finish`] writes the header with the final count. The file is written to a
/// temporary file beside `path` (`.NAME.PID.tmp`) and renamed over `path` only when finished,
/// as [`ferrogpt_core::fsutil::write_atomic`] does; a writer dropped unfinished removes it.
/// The width is fixed at creation: uint16 ids unless the vocabulary exceeds 65,536 ids.
pub struct TokenWriter {
    path: std::path::PathBuf,
    tmp: std::path::PathBuf,
    w: Option<std::io::BufWriter<std::fs::File>>,
    wide: bool,
    count: usize,
}

impl TokenWriter {
    /// Starts the token file `path` for ids `< vocab_size`. Errors: the temporary file cannot
    /// be created ([`DataError::Write`], naming `path`).
    pub fn create(path: &Path, vocab_size: usize) -> Result<Self> {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let tmp = path.with_file_name(format!(".{name}.{}.tmp", std::process::id()));
        let mut writer = TokenWriter {
            path: path.into(),
            tmp,
            w: None,
            wide: vocab_size > 1 << 16,
            count: 0,
        };
        let created = std::fs::File::create(&writer.tmp).and_then(|f| {
            let mut w = std::io::BufWriter::with_capacity(1 << 20, f);
            w.write_all(&header_bytes(writer.wide, 0))?;
            Ok(w)
        });
        writer.w = Some(created.map_err(|e| writer.write_error(e))?);
        Ok(writer)
    }

    /// Number of ids appended so far.
    pub fn len(&self) -> usize {
        self.count
    }

    /// True if no id was appended yet.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Appends `ids`. Errors: an id that the file's width cannot hold
    /// ([`DataError::IdOutOfRange`]), more than `i32::MAX` ids in all, a write failure.
    pub fn append(&mut self, ids: &[u32]) -> Result<()> {
        if !self.wide {
            if let Some(i) = ids.iter().position(|&id| id > u16::MAX as u32) {
                return Err(DataError::IdOutOfRange {
                    context: format!("token file {} (uint16 ids)", self.path.display()),
                    id: ids[i],
                    position: self.count + i,
                    limit: 1 << 16,
                });
            }
        }
        token_count(&self.path, self.count + ids.len())?;
        let w = self.w.as_mut().expect("a writer is open until finish");
        write_ids(w, ids, self.wide).map_err(|e| {
            let path = self.path.clone();
            DataError::Write { path, source: e }
        })?;
        self.count += ids.len();
        Ok(())
    }

    /// Writes the header, flushes the file to disk and renames it to its path; returns the
    /// number of ids. Errors: a write failure ([`DataError::Write`]).
    pub fn finish(mut self) -> Result<usize> {
        use std::io::{Seek, SeekFrom};
        let w = self.w.take().expect("a writer is open until finish");
        let header = header_bytes(self.wide, self.count as i32);
        let done = (|| {
            let mut file = w.into_inner().map_err(|e| e.into_error())?;
            file.seek(SeekFrom::Start(0))?;
            file.write_all(&header)?;
            file.sync_all()?;
            std::fs::rename(&self.tmp, &self.path)
        })();
        done.map_err(|e| self.write_error(e))?;
        Ok(self.count)
    }

    fn write_error(&self, source: std::io::Error) -> DataError {
        DataError::Write {
            path: self.path.clone(),
            source,
        }
    }
}

impl Drop for TokenWriter {
    /// An unfinished (or failed) file leaves nothing behind.
    fn drop(&mut self) {
        // After a successful finish the temporary file is already gone.
        let _ = std::fs::remove_file(&self.tmp);
    }
}
