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
//! written atomically ([`ferrogpt_core::fsutil::write_atomic_with`]).

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
    let body = &bytes[HEADER_BYTES..];
    let expected = width * count as usize;
    if body.len() != expected {
        let what = if body.len() < expected {
            "truncated"
        } else {
            "trailing bytes"
        };
        return Err(bad(
            "file length",
            format!(
                "{} bytes (header + {count} tokens x {width})",
                HEADER_BYTES + expected
            ),
            format!("{} bytes ({what})", bytes.len()),
        ));
    }
    Ok(match width {
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

/// Writes `tokens` to `path` as a token file, atomically: uint16 ids when every id fits,
/// uint32 otherwise. Errors: more than `i32::MAX` tokens, or a write failure.
pub fn write_tokens(path: &Path, tokens: &[u32]) -> Result<()> {
    let wide = tokens.iter().any(|&id| id > u16::MAX as u32);
    let count = i32::try_from(tokens.len()).map_err(|_| DataError::Mismatch {
        context: format!("token file {}", path.display()),
        field: "token count".into(),
        expected: format!("at most {}", i32::MAX),
        found: tokens.len().to_string(),
    })?;
    let mut header = [0i32; 256];
    (header[0], header[1]) = if wide {
        (MAGIC_U32, VERSION_U32)
    } else {
        (MAGIC, VERSION)
    };
    header[2] = count;
    ferrogpt_core::fsutil::write_atomic_with(path, |w| {
        for h in header {
            w.write_all(&h.to_le_bytes())?;
        }
        for &id in tokens {
            if wide {
                w.write_all(&id.to_le_bytes())?;
            } else {
                w.write_all(&(id as u16).to_le_bytes())?;
            }
        }
        Ok(())
    })
    .map_err(|source| DataError::Write {
        path: path.into(),
        source,
    })
}
