//! Token shards: both layouts, patterns, coverage, shuffling, exact resume, rank splitting,
//! bad files; and the streaming token writer. Every test writes its own small shards; token
//! `i` of shard `s` is `1000 * s + i`, so a window names its shard and offset.

use std::path::{Path, PathBuf};

use ferrogpt_train::data::DataError;
use ferrogpt_train::shards::{shard_order, ShardLoader, ShardLoaderState, ShardSet};
use ferrogpt_train::tokfile::{read_tokens, TokenWriter, MAGIC, MAGIC_U32};

fn tmp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ferrogpt-shards-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Writes a token file by hand: header (magic, version, count) and ids of `width` bytes.
fn write_raw(path: &Path, magic: i32, version: i32, count: i32, ids: &[u32], width: usize) {
    let mut h = [0i32; 256];
    (h[0], h[1], h[2]) = (magic, version, count);
    let mut bytes: Vec<u8> = h.iter().flat_map(|x| x.to_le_bytes()).collect();
    for &id in ids {
        bytes.extend_from_slice(&id.to_le_bytes()[..width]);
    }
    std::fs::write(path, bytes).unwrap();
}

fn write_u16(path: &Path, ids: &[u32]) {
    write_raw(path, MAGIC, 1, ids.len() as i32, ids, 2);
}

/// Shards `name_000.bin, name_001.bin, ...` of the given lengths (uint16), token `i` of shard
/// `s` being `1000 * s + i`.
fn shards(dir: &Path, lens: &[usize]) -> ShardSet {
    for (s, &n) in lens.iter().enumerate() {
        let ids: Vec<u32> = (0..n as u32).map(|i| 1000 * s as u32 + i).collect();
        write_u16(&dir.join(format!("train_{s:03}.bin")), &ids);
    }
    ShardSet::open(&[dir.join("train_*.bin").display().to_string()]).unwrap()
}

/// Reads one batch, checks it against the shard contents, returns its (shard, offset).
fn next(
    l: &mut ShardLoader,
    set: &ShardSet,
    rank: usize,
    world: usize,
    b: usize,
    t: usize,
) -> (usize, usize) {
    let (mut x, mut y) = (Vec::new(), Vec::new());
    l.next_batch(set, rank, world, b, t, &mut x, &mut y)
        .unwrap();
    assert_eq!((x.len(), y.len()), (b * t, b * t));
    let (s, o) = ((x[0] / 1000) as usize, (x[0] % 1000) as usize);
    let want: Vec<u32> = (0..=b * t).map(|i| x[0] + i as u32).collect();
    assert_eq!(x, want[..b * t]);
    assert_eq!(y, want[1..]);
    assert!(o + b * t < set.shards()[s].len());
    (s, o)
}

/// Every window of every shard, shards in `order`, for windows of `bt` tokens.
fn windows(set: &ShardSet, order: &[usize], bt: usize) -> Vec<(usize, usize)> {
    let mut w = Vec::new();
    for &s in order {
        let n = set.shards()[s].len();
        let mut o = 0;
        while o + bt < n {
            w.push((s, o));
            o += bt;
        }
    }
    w
}

#[test]
fn both_layouts_map_and_check_ids() {
    let dir = tmp_dir("layouts");
    let small: Vec<u32> = vec![0, 1, 2, 50256, 65535];
    let wide: Vec<u32> = vec![5, 70000, 128255, 3];
    write_u16(&dir.join("a.bin"), &small);
    write_raw(&dir.join("b.bin"), MAGIC_U32, 7, 4, &wide, 4);
    let set = ShardSet::open(&[dir.display().to_string()]).unwrap();
    assert_eq!(set.len(), 2);
    assert_eq!(set.total_tokens(), 9);
    let (a, b) = (&set.shards()[0], &set.shards()[1]);
    assert_eq!((a.width(), a.len()), (2, 5));
    assert_eq!((b.width(), b.len()), (4, 4));
    assert_eq!((0..5).map(|i| set.token(0, i)).collect::<Vec<_>>(), small);
    let mut out = vec![9];
    b.extend(1..3, &mut out);
    assert_eq!(out, vec![9, 70000, 128255]);
    set.check_ids(128256).unwrap();
    let e = set.check_ids(65536).unwrap_err();
    assert!(matches!(
        e,
        DataError::IdOutOfRange {
            id: 70000,
            position: 1,
            ..
        }
    ));
    assert!(e.to_string().contains("b.bin"), "{e}");
    let e = set.check_ids(50000).unwrap_err().to_string();
    assert!(
        e.contains("a.bin") && e.contains("50256") && e.contains("position 3"),
        "{e}"
    );
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn patterns_expand_sort_and_dedup() {
    let dir = tmp_dir("patterns");
    for name in [
        "x_val_000000.bin",
        "x_train_000002.bin",
        "x_train_000001.bin",
    ] {
        write_u16(&dir.join(name), &[1, 2, 3]);
    }
    std::fs::write(dir.join("notes.txt"), "not a shard").unwrap();
    let names = |set: &ShardSet| -> Vec<String> {
        let name = |p: &Path| p.file_name().unwrap().to_string_lossy().into_owned();
        set.shards().iter().map(|s| name(s.path())).collect()
    };
    let d = dir.display().to_string();
    let glob = ShardSet::open(&[format!("{d}/x_train_*.bin")]).unwrap();
    assert_eq!(names(&glob), ["x_train_000001.bin", "x_train_000002.bin"]);
    let all = ShardSet::open(std::slice::from_ref(&d)).unwrap();
    assert_eq!(all.len(), 3);
    let list = ShardSet::open(&[
        format!("{d}/x_train_000002.bin"),
        format!("{d}/x_val_000000.bin"),
        format!("{d}/x_train_*.bin"),
    ])
    .unwrap();
    assert_eq!(
        names(&list),
        [
            "x_train_000001.bin",
            "x_train_000002.bin",
            "x_val_000000.bin"
        ]
    );
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn sequential_reads_every_window_once_per_epoch() {
    let dir = tmp_dir("coverage");
    // B*T = 6: windows need 7 tokens. Shard 2 has none (skipped), shard 4 is empty.
    let set = shards(&dir, &[31, 7, 6, 50, 0, 13]);
    let want = windows(&set, &[0, 1, 2, 3, 4, 5], 6);
    assert_eq!(want.len(), 5 + 1 + 8 + 2);
    let mut l = ShardLoader::new(7, false);
    for epoch in 0..3 {
        let got: Vec<_> = (0..want.len())
            .map(|_| next(&mut l, &set, 0, 1, 2, 3))
            .collect();
        assert_eq!(got, want, "epoch {epoch}");
        assert_eq!(l.state().epoch, epoch + 1);
    }
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn shuffle_is_per_epoch_and_deterministic() {
    let n = 12;
    let orders: Vec<Vec<usize>> = (0..4).map(|e| shard_order(n, 42, e, true)).collect();
    for o in &orders {
        let mut sorted = o.clone();
        sorted.sort();
        assert_eq!(sorted, (0..n).collect::<Vec<_>>());
    }
    assert_ne!(orders[0], orders[1]);
    assert_ne!(orders[1], orders[2]);
    assert_eq!(orders[0], shard_order(n, 42, 0, true));
    assert_ne!(orders[0], shard_order(n, 43, 0, true));
    assert_eq!(shard_order(n, 42, 3, false), (0..n).collect::<Vec<_>>());

    // The loader follows the order of each epoch and still reads every window once.
    let dir = tmp_dir("shuffle");
    let lens: Vec<usize> = (0..n).map(|s| 9 + 4 * s).collect();
    let set = shards(&dir, &lens);
    let mut l = ShardLoader::new(42, true);
    for epoch in 0..3 {
        let want = windows(&set, &shard_order(n, 42, epoch, true), 4);
        let got: Vec<_> = (0..want.len())
            .map(|_| next(&mut l, &set, 0, 1, 1, 4))
            .collect();
        assert_eq!(got, want, "epoch {epoch}");
    }
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn resume_is_exact_mid_shard_and_across_epochs() {
    let dir = tmp_dir("resume");
    let set = shards(&dir, &[40, 5, 26, 61, 33]);
    let per_epoch = (0..5)
        .map(|s| (set.shards()[s].len().max(1) - 1) / 6)
        .sum::<usize>();
    for stop in [3, per_epoch - 1, per_epoch, 2 * per_epoch + 2] {
        let mut a = ShardLoader::new(9, true);
        for _ in 0..stop {
            next(&mut a, &set, 0, 1, 2, 3);
        }
        let saved = serde_json::to_string(&a.state()).unwrap();
        let state: ShardLoaderState = serde_json::from_str(&saved).unwrap();
        let mut b = ShardLoader::from_state(9, true, state);
        for i in 0..per_epoch + 3 {
            let (x, y) = (
                next(&mut a, &set, 0, 1, 2, 3),
                next(&mut b, &set, 0, 1, 2, 3),
            );
            assert_eq!(x, y, "stopped at {stop}, batch {i} after resume");
        }
        assert_eq!(a.state(), b.state());
    }
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn ranks_split_the_single_rank_stream() {
    let dir = tmp_dir("ranks");
    let set = shards(&dir, &[50, 20, 8, 77, 31]);
    for world in [2, 3] {
        let mut single = ShardLoader::new(5, true);
        let mut ranks: Vec<ShardLoader> = (0..world).map(|_| ShardLoader::new(5, true)).collect();
        for step in 0..40 {
            let want: Vec<_> = (0..world)
                .map(|_| next(&mut single, &set, 0, 1, 2, 2))
                .collect();
            let got: Vec<_> = (0..world)
                .map(|r| next(&mut ranks[r], &set, r, world, 2, 2))
                .collect();
            assert_eq!(got, want, "world {world}, step {step}");
            for r in &ranks {
                assert_eq!(r.state(), single.state());
            }
        }
    }
    let mut l = ShardLoader::new(0, false);
    let e = l.next_batch(&set, 2, 2, 1, 1, &mut Vec::new(), &mut Vec::new());
    assert!(matches!(e, Err(DataError::Mismatch { .. })), "{e:?}");
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn shards_shorter_than_a_window_are_an_error_not_a_hang() {
    let dir = tmp_dir("short");
    let set = shards(&dir, &[10, 0, 12]);
    let mut l = ShardLoader::new(1, true);
    let e = l
        .next_batch(&set, 0, 1, 3, 4, &mut Vec::new(), &mut Vec::new())
        .unwrap_err();
    assert!(matches!(
        e,
        DataError::TooFewTokens {
            needed: 13,
            found: 12,
            ..
        }
    ));
    // One window of 12 tokens + 1 fits nowhere; 11 + 1 fits in shard 2 only.
    let got: Vec<_> = (0..3).map(|_| next(&mut l, &set, 0, 1, 1, 11)).collect();
    assert_eq!(got, vec![(2, 0); 3]);
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn bad_files_are_named() {
    let dir = tmp_dir("bad");
    let d = dir.display().to_string();
    let open_err = |p: &str| ShardSet::open(&[p.to_string()]).unwrap_err().to_string();
    // Truncated: the header says 10 tokens, the body holds 9.
    let trunc = dir.join("trunc.bin");
    write_raw(&trunc, MAGIC, 1, 10, &[1; 9], 2);
    let e = open_err(&trunc.display().to_string());
    assert!(e.contains("trunc.bin") && e.contains("truncated"), "{e}");
    // Wrong magic, wrong version, shorter than a header.
    let magic = dir.join("magic.bin");
    write_raw(&magic, 1234, 1, 2, &[1, 2], 2);
    let e = open_err(&magic.display().to_string());
    assert!(
        e.contains("magic.bin") && e.contains("magic") && e.contains("1234"),
        "{e}"
    );
    let version = dir.join("version.bin");
    write_raw(&version, MAGIC_U32, 1, 1, &[1], 4);
    let e = open_err(&version.display().to_string());
    assert!(e.contains("version.bin") && e.contains("version"), "{e}");
    let tiny = dir.join("tiny.bin");
    std::fs::write(&tiny, [0u8; 10]).unwrap();
    let e = open_err(&tiny.display().to_string());
    assert!(e.contains("tiny.bin") && e.contains("header"), "{e}");
    // A bad file among good ones still fails the set, naming it.
    write_u16(&dir.join("good.bin"), &[1, 2, 3]);
    let e = open_err(&d);
    assert!(e.contains(".bin"), "{e}");
    // Patterns that name nothing.
    let e = open_err(&format!("{d}/fineweb_train_*.bin"));
    assert!(
        e.contains("fineweb_train_*.bin") && e.contains("no file matches"),
        "{e}"
    );
    let e = open_err(&format!("{d}/missing.bin"));
    assert!(e.contains("missing.bin"), "{e}");
    let empty = dir.join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let e = open_err(&empty.display().to_string());
    assert!(e.contains("empty") && e.contains(".bin"), "{e}");
    assert!(ShardSet::open(&[]).is_err());
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn token_writer_streams_both_widths() {
    let dir = tmp_dir("writer");
    let path = dir.join("s.bin");
    let mut w = TokenWriter::create(&path, 50257).unwrap();
    w.append(&[1, 2]).unwrap();
    w.append(&[]).unwrap();
    w.append(&[50256, 7]).unwrap();
    assert!(!path.exists(), "the file appears only when finished");
    assert_eq!(w.finish().unwrap(), 4);
    assert_eq!(read_tokens(&path).unwrap(), vec![1, 2, 50256, 7]);
    assert_eq!(std::fs::metadata(&path).unwrap().len(), 1024 + 8);
    // A vocabulary past 65,536 ids: uint32.
    let mut w = TokenWriter::create(&path, 128256).unwrap();
    w.append(&[128000, 5]).unwrap();
    w.finish().unwrap();
    assert_eq!(read_tokens(&path).unwrap(), vec![128000, 5]);
    assert_eq!(std::fs::metadata(&path).unwrap().len(), 1024 + 8);
    // An id too big for uint16 is refused; a writer dropped unfinished leaves nothing.
    let other = dir.join("t.bin");
    let mut w = TokenWriter::create(&other, 1000).unwrap();
    assert!(matches!(
        w.append(&[3, 70000]),
        Err(DataError::IdOutOfRange { id: 70000, .. })
    ));
    drop(w);
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1, "only s.bin");
    std::fs::remove_dir_all(dir).unwrap();
}
