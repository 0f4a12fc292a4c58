//! Multiple-choice evaluation in llm.c's format (its HellaSwag file): the accuracy of picking,
//! for each example, the completion the model finds most likely after the shared context.
//!
//! File layout (all little-endian), as llm.c's `data_common.py` writes it:
//! ```text
//! header: 256 x int32   [0] magic 20240522, [1] version 1, [2] examples N, [3] longest example
//!                       in bytes, rest 0
//! N examples, each a run of uint16:
//!   65535 (start), bytes of the example (these 3 header values included), example index,
//!   label (the right completion), completions K, context length, context ids,
//!   then K times: completion length, completion ids
//! ```
//! Scoring (llm.c's): the row of completion `c` is `context ++ completion_c`; its score is the
//! mean cross-entropy of the completion's tokens, each predicted from everything before it;
//! the example is right when the lowest score is the label's.

use std::io::Write;
use std::path::Path;

use crate::data::{DataError, Result};
use crate::engine::{Engine, EngineError};

/// First header int32 of a multiple-choice eval file.
pub const MAGIC: i32 = 20240522;
/// Second header int32.
pub const VERSION: i32 = 1;
const HEADER_BYTES: usize = 256 * 4;
const START: u16 = u16::MAX;

/// One example: a context, its possible completions, the index of the right one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct McExample {
    /// Index into `completions` of the right one.
    pub label: usize,
    /// The shared context's token ids.
    pub context: Vec<u32>,
    /// The candidate completions' token ids (K of them; HellaSwag's 4), each scored after the
    /// context.
    pub completions: Vec<Vec<u32>>,
}

impl McExample {
    /// Tokens of the longest row (context and a completion).
    pub fn longest_row(&self) -> usize {
        self.context.len() + self.completions.iter().map(Vec::len).max().unwrap_or(0)
    }
}

/// Reads a multiple-choice eval file. Errors name the file, the example and what is wrong:
/// a bad header, a truncated example, a label beyond the completions, an empty context or
/// completion.
pub fn read(path: &Path) -> Result<Vec<McExample>> {
    let bytes = std::fs::read(path).map_err(|source| DataError::Read {
        path: path.into(),
        source,
    })?;
    let bad = |field: &str, expected: String, found: String| DataError::Mismatch {
        context: format!("multiple-choice eval file {}", path.display()),
        field: field.into(),
        expected,
        found,
    };
    if bytes.len() < HEADER_BYTES {
        return Err(bad(
            "header",
            format!("{HEADER_BYTES} bytes"),
            format!("{} bytes", bytes.len()),
        ));
    }
    let int = |i: usize| i32::from_le_bytes(bytes[4 * i..4 * i + 4].try_into().expect("4 bytes"));
    if int(0) != MAGIC {
        return Err(bad("magic", MAGIC.to_string(), int(0).to_string()));
    }
    if int(1) != VERSION {
        return Err(bad("version", VERSION.to_string(), int(1).to_string()));
    }
    let n =
        usize::try_from(int(2)).map_err(|_| bad("examples", ">= 0".into(), int(2).to_string()))?;
    let words: Vec<u16> = bytes[HEADER_BYTES..]
        .chunks_exact(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]))
        .collect();
    let mut at = 0;
    let mut examples = Vec::with_capacity(n);
    for i in 0..n {
        let what = |field: &str| format!("example {i}: {field}");
        let truncated = || {
            bad(
                &what("length"),
                "the whole example".into(),
                "the end of the file".into(),
            )
        };
        let head = words.get(at..at + 6).ok_or_else(truncated)?;
        if head[0] != START {
            return Err(bad(&what("start"), START.to_string(), head[0].to_string()));
        }
        if head[2] as usize != i % (1 << 16) {
            return Err(bad(&what("index"), i.to_string(), head[2].to_string()));
        }
        let end = at + head[1] as usize / 2;
        let body = words.get(at + 3..end).ok_or_else(truncated)?;
        let (label, k) = (body[0] as usize, body[1] as usize);
        let mut rest = &body[2..];
        let mut take = |field: &str| -> Result<Vec<u32>> {
            let (&len, tail) = rest.split_first().ok_or_else(truncated)?;
            let len = len as usize;
            if len == 0 || tail.len() < len {
                return Err(bad(
                    &what(field),
                    "1 or more tokens, within the example".into(),
                    len.to_string(),
                ));
            }
            rest = &tail[len..];
            Ok(tail[..len].iter().map(|&x| x as u32).collect())
        };
        let context = take("context")?;
        let completions = (0..k)
            .map(|_| take("completion"))
            .collect::<Result<Vec<_>>>()?;
        if label >= k {
            return Err(bad(
                &what("label"),
                format!("below {k} completions"),
                label.to_string(),
            ));
        }
        examples.push(McExample {
            label,
            context,
            completions,
        });
        at = end;
    }
    Ok(examples)
}

/// Writes `examples` in the layout [`read`] reads (ids below 65535). Used by the tests and
/// for making eval files from other sources.
pub fn write(path: &Path, examples: &[McExample]) -> Result<()> {
    let mut body: Vec<u16> = Vec::new();
    let mut longest = 0;
    for (i, e) in examples.iter().enumerate() {
        let mut ex: Vec<u16> = vec![
            START,
            0,
            i as u16,
            e.label as u16,
            e.completions.len() as u16,
        ];
        for part in std::iter::once(&e.context).chain(&e.completions) {
            ex.push(part.len() as u16);
            ex.extend(part.iter().map(|&x| x as u16));
        }
        ex[1] = (2 * ex.len()) as u16;
        longest = longest.max(2 * ex.len());
        body.extend(ex);
    }
    let mut header = [0i32; 256];
    (header[0], header[1], header[2], header[3]) =
        (MAGIC, VERSION, examples.len() as i32, longest as i32);
    ferrogpt_core::fsutil::write_atomic_with(path, |w| {
        header
            .iter()
            .try_for_each(|h| w.write_all(&h.to_le_bytes()))?;
        body.iter().try_for_each(|x| w.write_all(&x.to_le_bytes()))
    })
    .map_err(|source| DataError::Write {
        path: path.into(),
        source,
    })
}

/// How many of `examples` the model on `engine` gets right: (right, scored). Each example is
/// one batch of its completions' rows, padded to the longest (padding follows every scored
/// position, so it changes nothing before it under causal attention).
pub fn score(
    engine: &mut dyn Engine,
    examples: &[McExample],
) -> std::result::Result<(usize, usize), EngineError> {
    let mut right = 0;
    for e in examples {
        let t = e.longest_row() - 1;
        let rows = e.completions.len();
        let (mut inputs, mut targets) = (vec![0u32; rows * t], vec![0u32; rows * t]);
        for (r, c) in e.completions.iter().enumerate() {
            let row: Vec<u32> = e.context.iter().chain(c).copied().collect();
            inputs[r * t..r * t + row.len() - 1].copy_from_slice(&row[..row.len() - 1]);
            targets[r * t..r * t + row.len() - 1].copy_from_slice(&row[1..]);
        }
        let losses = engine.token_losses(&inputs, &targets, t)?; // (rows, t)
        let best = e
            .completions
            .iter()
            .enumerate()
            .map(|(r, c)| {
                // The completion's tokens are targets at positions ctx-1 .. ctx-1+len.
                let from = r * t + e.context.len() - 1;
                let sum: f64 = losses[from..from + c.len()].iter().map(|&x| x as f64).sum();
                (sum / c.len() as f64, r)
            })
            .fold((f64::INFINITY, 0), |a, b| if b.0 < a.0 { b } else { a })
            .1;
        right += usize::from(best == e.label);
    }
    Ok((right, examples.len()))
}
