//! llm.c token shards at web scale: many token files, memory-mapped, read as one stream of
//! windows.
//!
//! - [`ShardSet::open`] expands patterns (a file; a directory, meaning its `*.bin` files; or a
//!   glob such as `fineweb_train_*.bin`) into one sorted list of distinct files, maps each
//!   (nothing is read whole) and checks its header exactly as [`crate::tokfile`] does: magic
//!   20240520 version 1 (uint16 ids) or 20240801 version 7 (uint32 ids), length
//!   `1024 + width*count`. Ids are checked against a vocabulary only when asked
//!   ([`ShardSet::check_ids`], one pass over every byte).
//! - [`ShardLoader`] is llm.c's sequential loader over the set. With `BT = B*T`, window `k` of a
//!   shard of `n` tokens is its tokens `[k*BT, k*BT + BT + 1)`: inputs the first `BT`, targets
//!   the same shifted by one. A shard has `floor((n - 1) / BT)` windows; one too short for a
//!   window is skipped. An epoch reads every window of every shard once, shard after shard, in
//!   the epoch's order ([`shard_order`]): the sorted order, or with `shuffle` a permutation drawn
//!   from `(seed, epoch)`; then the next epoch begins.
//! - Data parallel: the windows form one stream. A call `next_batch(rank, world, ..)` covers the
//!   next `world` windows of the stream and gives rank `r` the `r`-th; every rank's state
//!   advances by `world` windows. So `world` ranks together read exactly what one rank reads
//!   in `world` calls with `world = 1` (gradient accumulation), in the same order, across shard
//!   and epoch boundaries too.
//! - [`ShardLoaderState`] (epoch, position in the epoch's order, token offset in that shard of
//!   the next window) is all a loader needs, with its seed and `shuffle`, to continue the exact
//!   stream.
//!
//! Shards must not change while they are open (they are mapped, not copied).

use std::ops::Range;
use std::path::{Path, PathBuf};

use rand::{RngCore, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::data::{DataError, Result};
use crate::tokfile::{self, HEADER_BYTES};

/// One token file, memory-mapped.
#[derive(Debug)]
pub struct Shard {
    path: PathBuf,
    map: memmap2::Mmap,
    /// Bytes per id: 2 or 4.
    width: usize,
    len: usize,
}

impl Shard {
    /// Maps the token file `path` and checks its header. Errors: unreadable file
    /// ([`DataError::Read`]), a bad header or length ([`DataError::Mismatch`]), both naming it.
    pub fn open(path: &Path) -> Result<Self> {
        let read_err = |source| DataError::Read {
            path: path.into(),
            source,
        };
        let file = std::fs::File::open(path).map_err(read_err)?;
        let file_len = file.metadata().map_err(read_err)?.len();
        if file_len < HEADER_BYTES as u64 {
            // Too short to map usefully; parse_header names the problem.
            tokfile::parse_header(path, &[], file_len)?;
        }
        // SAFETY: the map is read-only and lives as long as `Shard`; the module's contract is
        // that shards are not modified while open (a file truncated under us would fault).
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(read_err)?;
        #[cfg(unix)]
        let _ = map.advise(memmap2::Advice::Sequential);
        let header = tokfile::parse_header(path, &map, map.len() as u64)?;
        Ok(Shard {
            path: path.into(),
            map,
            width: header.width,
            len: header.count,
        })
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Number of token ids.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True if the shard holds no token.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Bytes per id: 2 (uint16) or 4 (uint32).
    pub fn width(&self) -> usize {
        self.width
    }

    /// Token `i`. Panics if `i >= len()`, as slice indexing does.
    pub fn get(&self, i: usize) -> u32 {
        assert!(i < self.len, "token {i} of a shard of {}", self.len);
        let b = &self.map[HEADER_BYTES + i * self.width..];
        match self.width {
            2 => u16::from_le_bytes([b[0], b[1]]) as u32,
            _ => u32::from_le_bytes([b[0], b[1], b[2], b[3]]),
        }
    }

    /// Appends tokens `range` to `out`. Panics if the range reaches past `len()`.
    pub fn extend(&self, range: Range<usize>, out: &mut Vec<u32>) {
        assert!(
            range.end <= self.len,
            "tokens {range:?} of a shard of {}",
            self.len
        );
        let w = self.width;
        let body = &self.map[HEADER_BYTES + range.start * w..HEADER_BYTES + range.end * w];
        match w {
            2 => out.extend(
                body.chunks_exact(2)
                    .map(|c| u16::from_le_bytes([c[0], c[1]]) as u32),
            ),
            _ => out.extend(
                body.chunks_exact(4)
                    .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]])),
            ),
        }
    }

    /// The first id `>= limit` and its position, if any.
    fn first_at_least(&self, limit: u64) -> Option<(usize, u32)> {
        const CHUNK: usize = 1 << 16;
        let mut buf = Vec::with_capacity(CHUNK);
        for start in (0..self.len).step_by(CHUNK) {
            buf.clear();
            self.extend(start..(start + CHUNK).min(self.len), &mut buf);
            if let Some(i) = buf.iter().position(|&id| id as u64 >= limit) {
                return Some((start + i, buf[i]));
            }
        }
        None
    }
}

/// The shards named by a list of patterns; see the module doc.
#[derive(Debug)]
pub struct ShardSet {
    shards: Vec<Shard>, // sorted by path
}

impl ShardSet {
    /// Opens every file that `patterns` name: each a path, a directory (its `*.bin` files), or a
    /// glob (`*`, `?`, `[..]`); the union is sorted by path, each file once. Errors
    /// ([`DataError`], naming the file or pattern): no pattern; a pattern that matches nothing
    /// (a missing file, an empty glob, a directory without `.bin` files) or is not a valid glob;
    /// a file that [`Shard::open`] rejects.
    pub fn open(patterns: &[String]) -> Result<Self> {
        if patterns.is_empty() {
            return Err(DataError::Mismatch {
                context: "token shards".into(),
                field: "patterns".into(),
                expected: "at least one file, directory or glob".into(),
                found: "none".into(),
            });
        }
        let mut paths = Vec::new();
        for pattern in patterns {
            paths.extend(expand(pattern)?);
        }
        paths.sort();
        paths.dedup();
        let shards = paths
            .par_iter()
            .map(|p| Shard::open(p))
            .collect::<Result<Vec<_>>>()?;
        Ok(ShardSet { shards })
    }

    /// The shards, sorted by path.
    pub fn shards(&self) -> &[Shard] {
        &self.shards
    }

    /// Number of shards (at least one).
    pub fn len(&self) -> usize {
        self.shards.len()
    }

    /// Always false: a set holds at least one shard.
    pub fn is_empty(&self) -> bool {
        self.shards.is_empty()
    }

    /// Total number of tokens in all shards.
    pub fn total_tokens(&self) -> u64 {
        self.shards.iter().map(|s| s.len as u64).sum()
    }

    /// Token `offset` of shard `shard` (indices into [`ShardSet::shards`]). Panics if either is
    /// out of range.
    pub fn token(&self, shard: usize, offset: usize) -> u32 {
        self.shards[shard].get(offset)
    }

    /// Checks that every id is `< vocab`, reading every shard once (in parallel over shards).
    /// Errors: [`DataError::IdOutOfRange`] for the first bad id in path order, naming its shard
    /// and its position there.
    pub fn check_ids(&self, vocab: usize) -> Result<()> {
        let bad = self
            .shards
            .par_iter()
            .find_map_first(|s| s.first_at_least(vocab as u64).map(|found| (s, found)));
        match bad {
            None => Ok(()),
            Some((s, (position, id))) => Err(DataError::IdOutOfRange {
                context: format!("token shard {}", s.path.display()),
                id,
                position,
                limit: vocab as u64,
            }),
        }
    }

    /// The longest shard's length.
    fn longest(&self) -> usize {
        self.shards.iter().map(|s| s.len).max().unwrap_or(0)
    }
}

/// The files one pattern names (see [`ShardSet::open`]).
fn expand(pattern: &str) -> Result<Vec<PathBuf>> {
    let path = Path::new(pattern);
    let none = |what: &str| DataError::Read {
        path: path.into(),
        source: std::io::Error::new(std::io::ErrorKind::NotFound, what.to_string()),
    };
    if path.is_dir() {
        let entries = std::fs::read_dir(path).map_err(|source| DataError::Read {
            path: path.into(),
            source,
        })?;
        let mut files = Vec::new();
        for entry in entries {
            let p = entry
                .map_err(|source| DataError::Read {
                    path: path.into(),
                    source,
                })?
                .path();
            if p.extension().is_some_and(|e| e == "bin") && p.is_file() {
                files.push(p);
            }
        }
        if files.is_empty() {
            return Err(none("a directory without .bin files"));
        }
        return Ok(files);
    }
    if path.exists() || !pattern.contains(['*', '?', '[']) {
        return Ok(vec![path.into()]); // a missing file is named when opened
    }
    let matches = glob::glob(pattern).map_err(|e| DataError::Mismatch {
        context: format!("token shards {pattern}"),
        field: "glob pattern".into(),
        expected: "a valid pattern".into(),
        found: e.to_string(),
    })?;
    let mut files = Vec::new();
    for m in matches {
        let p = m.map_err(|e| DataError::Read {
            path: e.path().into(),
            source: e.into(),
        })?;
        if p.is_file() {
            files.push(p);
        }
    }
    if files.is_empty() {
        return Err(none("no file matches this pattern"));
    }
    Ok(files)
}

/// The order in which epoch `epoch` reads `n` shards: `0..n` unshuffled; with `shuffle`, a
/// Fisher–Yates shuffle of `0..n` (index `j` for position `i` is `floor(u * (i + 1) / 2^64)`
/// with `u` the generator's next u64) by a Xoshiro256++ whose 32-byte seed is the SHA-256 of
/// `seed` and `epoch`, both little-endian u64. Deterministic on every platform.
pub fn shard_order(n: usize, seed: u64, epoch: u64, shuffle: bool) -> Vec<usize> {
    use sha2::Digest;
    let mut order: Vec<usize> = (0..n).collect();
    if shuffle {
        let mut h = sha2::Sha256::new();
        h.update(seed.to_le_bytes());
        h.update(epoch.to_le_bytes());
        let mut rng = Xoshiro256PlusPlus::from_seed(h.finalize().into());
        for i in (1..n).rev() {
            let j = ((rng.next_u64() as u128 * (i as u128 + 1)) >> 64) as usize;
            order.swap(i, j);
        }
    }
    order
}

/// Where a [`ShardLoader`] stands: the next window is at token `offset` of the shard at
/// `position` in epoch `epoch`'s [`shard_order`]. A state that does not point at a whole
/// window (a fresh one, or one saved with another `B*T` or other shards) moves forward to the
/// next window that fits.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardLoaderState {
    /// Epochs completed: 0 during the first pass over the shards.
    pub epoch: u64,
    /// Index into the epoch's [`shard_order`] (not a shard's index in path order).
    pub position: usize,
    /// Token offset of the next window in that shard.
    pub offset: usize,
}

/// Sequential windows over a [`ShardSet`], shuffled shard order per epoch, any number of
/// ranks; see the module doc.
#[derive(Debug, Clone)]
pub struct ShardLoader {
    seed: u64,
    shuffle: bool,
    state: ShardLoaderState,
    /// The order of `state.epoch` for a set of `order.len()` shards, once computed.
    order: Option<(u64, Vec<usize>)>,
}

impl ShardLoader {
    /// A loader at the start of epoch 0; `shuffle` draws each epoch's shard order from `seed`.
    pub fn new(seed: u64, shuffle: bool) -> Self {
        Self::from_state(seed, shuffle, ShardLoaderState::default())
    }

    /// Resumes at `state` (from [`ShardLoader::state`], with the same `seed` and `shuffle`).
    pub fn from_state(seed: u64, shuffle: bool, state: ShardLoaderState) -> Self {
        ShardLoader {
            seed,
            shuffle,
            state,
            order: None,
        }
    }

    /// The current state, to save with a checkpoint.
    pub fn state(&self) -> ShardLoaderState {
        self.state
    }

    /// Fills `inputs` and `targets` (both cleared, then `(B, T)` row-major) with rank `rank`'s
    /// window of the next `world` windows, and advances by `world` windows. Errors
    /// ([`DataError::Mismatch`]): `b` or `t` zero, `world` zero or `rank >= world`;
    /// ([`DataError::TooFewTokens`]): no shard holds one window of `b*t + 1` tokens.
    #[allow(clippy::too_many_arguments)]
    pub fn next_batch(
        &mut self,
        set: &ShardSet,
        rank: usize,
        world: usize,
        b: usize,
        t: usize,
        inputs: &mut Vec<u32>,  // (B, T)
        targets: &mut Vec<u32>, // (B, T)
    ) -> Result<()> {
        let bad = |field: &str, expected: &str, found: String| DataError::Mismatch {
            context: "sharded batch".into(),
            field: field.into(),
            expected: expected.into(),
            found,
        };
        if b == 0 || t == 0 {
            let found = format!("B = {b}, T = {t}");
            return Err(bad("batch size B and sequence length T", "both > 0", found));
        }
        if rank >= world {
            let found = format!("rank {rank} of {world}");
            return Err(bad("rank", "0 <= rank < world", found));
        }
        let bt = b * t;
        if set.longest() < bt + 1 {
            return Err(DataError::TooFewTokens {
                what: format!(
                    "the longest of {} token shards, for windows of {b} x {t} tokens + 1,",
                    set.len()
                ),
                needed: bt + 1,
                found: set.longest(),
            });
        }
        inputs.clear();
        targets.clear();
        self.settle(set, bt);
        for r in 0..world {
            if r == rank {
                let shard = &set.shards[self.shard_index(set)];
                let o = self.state.offset;
                shard.extend(o..o + bt, inputs);
                shard.extend(o + 1..o + bt + 1, targets);
            }
            self.state.offset += bt;
            self.settle(set, bt);
        }
        Ok(())
    }

    /// The index in `set` of the shard at the state's position (the order must be current).
    fn shard_index(&mut self, set: &ShardSet) -> usize {
        let epoch = self.state.epoch;
        let stale = !matches!(&self.order, Some((e, o)) if *e == epoch && o.len() == set.len());
        if stale {
            let order = shard_order(set.len(), self.seed, epoch, self.shuffle);
            self.order = Some((epoch, order));
        }
        let (_, order) = self.order.as_ref().expect("computed above");
        order[self.state.position]
    }

    /// Moves the state forward to the next whole window of `bt + 1` tokens: to the next shard
    /// of the order, and to the next epoch after the last. Ends because some shard holds a
    /// window (checked by the caller).
    fn settle(&mut self, set: &ShardSet, bt: usize) {
        loop {
            if self.state.position < set.len() {
                let len = set.shards[self.shard_index(set)].len;
                if self.state.offset + bt < len {
                    return;
                }
            }
            self.state.position += 1;
            self.state.offset = 0;
            if self.state.position >= set.len() {
                self.state.epoch += 1;
                self.state.position = 0;
            }
        }
    }
}
