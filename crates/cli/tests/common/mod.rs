//! What the binary's test files share: running ferrogpt, one-line failures, scratch folders.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_ferrogpt");

/// What a run printed and how it ended.
pub struct Out {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `c` (a ferrogpt command set up by the caller) to its end.
pub fn run_command(c: &mut Command) -> Out {
    let o = c.output().expect("run ferrogpt");
    Out {
        code: o.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
    }
}

/// Runs ferrogpt with `args` in `cwd` (this process's folder when None).
pub fn run_in(cwd: Option<&Path>, args: &[&str]) -> Out {
    let mut c = Command::new(BIN);
    c.args(args);
    if let Some(d) = cwd {
        c.current_dir(d);
    }
    run_command(&mut c)
}

/// Runs ferrogpt with `args`.
pub fn run(args: &[&str]) -> Out {
    run_in(None, args)
}

/// Runs ferrogpt with `args`, which must succeed.
pub fn ok(args: &[&str]) -> Out {
    let o = run(args);
    assert_eq!(o.code, 0, "{args:?} failed: {}", o.stderr);
    o
}

/// The run fails (exit status 1, no panic) with exactly one line on stderr holding every
/// needle.
pub fn fails_with_all(args: &[&str], needles: &[&str]) {
    let o = run(args);
    assert_eq!(
        o.code, 1,
        "{args:?} should fail with status 1; stderr: {}",
        o.stderr
    );
    assert!(
        !o.stderr.contains("panicked"),
        "{args:?} panicked: {}",
        o.stderr
    );
    let lines: Vec<&str> = o.stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(
        lines.len(),
        1,
        "{args:?}: expected one line, got: {}",
        o.stderr
    );
    for n in needles {
        assert!(lines[0].contains(n), "{args:?}: '{}' lacks '{n}'", lines[0]);
    }
}

/// [`fails_with_all`] with one needle.
pub fn fails_with(args: &[&str], needle: &str) {
    fails_with_all(args, &[needle]);
}

/// A fresh scratch folder, named for the test file, `name` and this process; removed when
/// the returned guard drops, unless the test is failing (then its files stay for a look).
pub fn tmp(name: &str) -> Scratch {
    let d = std::env::temp_dir().join(format!(
        "ferrogpt-{}-{name}-{}",
        env!("CARGO_CRATE_NAME"),
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    Scratch(d)
}

/// A scratch folder from [`tmp`]: a `Path`, removed on drop unless the thread is panicking.
pub struct Scratch(PathBuf);

impl Scratch {
    /// The folder, kept after the guard is gone (a fixture shared by a file's tests).
    pub fn keep(self) -> PathBuf {
        let me = std::mem::ManuallyDrop::new(self);
        me.0.clone()
    }
}

impl std::ops::Deref for Scratch {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.0
    }
}

impl AsRef<Path> for Scratch {
    fn as_ref(&self) -> &Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// A path as &str (the tests make UTF-8 paths).
pub fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// A fixture of tests/fixtures (Hugging Face directories made by scripts/).
pub fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures")
        .join(name)
}

/// An llm.c token file (magic 20240520, version 1, uint16 ids) of `ids` at `path`.
pub fn token_file(path: &Path, ids: &[u16]) {
    let mut b = Vec::new();
    for h in [20240520i32, 1, ids.len() as i32] {
        b.extend(h.to_le_bytes());
    }
    b.resize(1024, 0);
    for id in ids {
        b.extend(id.to_le_bytes());
    }
    std::fs::write(path, b).unwrap();
}

/// A few thousand characters of Tiny Shakespeare-like text.
pub fn verse_file(dir: &Path) -> PathBuf {
    let p = dir.join("t.txt");
    let line = "ROMEO: But soft, what light through yonder window breaks?\nJULIET: Ay me!\n";
    std::fs::write(&p, line.repeat(60)).unwrap();
    p
}

/// Romeo's two lines 60 times (3,540 characters) in `dir`/text.txt.
pub fn romeo_file(dir: &Path) -> PathBuf {
    let p = dir.join("text.txt");
    std::fs::write(
        &p,
        "ROMEO:\nBut, soft! what light through yonder window breaks?\n".repeat(60),
    )
    .unwrap();
    p
}

/// `train` of `data` into `out` for `steps` steps: the arguments, to which a test adds its
/// model's size and its own flags.
pub fn train_args<'a>(data: &'a Path, out: &'a Path, steps: &'a str) -> Vec<&'a str> {
    vec![
        "train",
        "--data",
        s(data),
        "--out",
        s(out),
        "--steps",
        steps,
    ]
}

/// [`train_args`] at the [`SMALL`] size.
pub fn small_train<'a>(data: &'a Path, out: &'a Path, steps: &'a str) -> Vec<&'a str> {
    let mut args = train_args(data, out, steps);
    args.extend_from_slice(SMALL);
    args
}

/// A small model and batch for quick CLI runs (one thread, no final sample).
pub const SMALL: &[&str] = &[
    "--n-layer",
    "2",
    "--n-head",
    "4",
    "--n-embd",
    "32",
    "--block-size",
    "32",
    "--seq-len",
    "32",
    "--batch-size",
    "4",
    "--threads",
    "1",
    "--eval-batches",
    "2",
    "--sample-tokens",
    "0",
];
