//! llm.c token files (`.bin`), read and written.
//!
//! Layout, all little-endian:
//! ```text
//! header: 256 x int32   [0] magic 20240520, [1] version 1, [2] token count N, rest 0
//! body:   N x uint16    token ids
//! ```
//! A file is valid only if its length is exactly `1024 + 2*N` bytes. Ids must fit in 16 bits.
//! Files are written atomically ([`ferrogpt_core::fsutil::write_atomic_with`]).

use std::io::Write;
use std::path::Path;

use crate::data::{DataError, Result};

/// First header int32 of a token file.
pub const MAGIC: i32 = 20240520;
/// Second header int32: version 1 holds uint16 tokens.
pub const VERSION: i32 = 1;
/// Header length in bytes (256 int32).
pub const HEADER_BYTES: usize = 256 * 4;

/// True if `prefix` (the first bytes of a file, at least 4) starts with the token-file magic.
pub fn is_token_file(prefix: &[u8]) -> bool {
    prefix.len() >= 4 && i32::from_le_bytes([prefix[0], prefix[1], prefix[2], prefix[3]]) == MAGIC
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
    let bad = |field: &str, expected: String, found: String| DataError::Mismatch {
        context: format!("token file {}", path.display()),
        field: field.into(),
        expected,
        found,
    };
    if bytes.len() < HEADER_BYTES {
        let found = format!("{} bytes", bytes.len());
        return Err(bad(
            "header",
            format!("at least {HEADER_BYTES} bytes"),
            found,
        ));
    }
    let header = |i: usize| {
        i32::from_le_bytes([
            bytes[4 * i],
            bytes[4 * i + 1],
            bytes[4 * i + 2],
            bytes[4 * i + 3],
        ])
    };
    if header(0) != MAGIC {
        return Err(bad("magic", MAGIC.to_string(), header(0).to_string()));
    }
    if header(1) != VERSION {
        return Err(bad("version", VERSION.to_string(), header(1).to_string()));
    }
    let count = header(2);
    if count < 0 {
        return Err(bad("token count", "a count >= 0".into(), count.to_string()));
    }
    let body = &bytes[HEADER_BYTES..];
    let expected = 2 * count as usize;
    if body.len() != expected {
        let what = if body.len() < expected {
            "truncated"
        } else {
            "trailing bytes"
        };
        return Err(bad(
            "file length",
            format!(
                "{} bytes (header + {count} tokens x 2)",
                HEADER_BYTES + expected
            ),
            format!("{} bytes ({what})", bytes.len()),
        ));
    }
    Ok(body
        .chunks_exact(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]) as u32)
        .collect())
}

/// Writes `tokens` to `path` as a token file, atomically. Errors: an id `>= 65536`
/// ([`DataError::IdOutOfRange`], nothing written), more than `i32::MAX` tokens, or a write failure.
pub fn write_tokens(path: &Path, tokens: &[u32]) -> Result<()> {
    if let Some(position) = tokens.iter().position(|&id| id > u16::MAX as u32) {
        return Err(DataError::IdOutOfRange {
            context: format!("token file {} (uint16 ids)", path.display()),
            id: tokens[position],
            position,
            limit: 1 << 16,
        });
    }
    let count = i32::try_from(tokens.len()).map_err(|_| DataError::Mismatch {
        context: format!("token file {}", path.display()),
        field: "token count".into(),
        expected: format!("at most {}", i32::MAX),
        found: tokens.len().to_string(),
    })?;
    let mut header = [0i32; 256];
    header[0] = MAGIC;
    header[1] = VERSION;
    header[2] = count;
    ferrogpt_core::fsutil::write_atomic_with(path, |w| {
        for h in header {
            w.write_all(&h.to_le_bytes())?;
        }
        for &id in tokens {
            w.write_all(&(id as u16).to_le_bytes())?;
        }
        Ok(())
    })
    .map_err(|source| DataError::Write {
        path: path.into(),
        source,
    })
}
