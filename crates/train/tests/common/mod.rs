//! What several test files share: Tiny Shakespeare, from the compressed copy the binary
//! carries (crates/cli/data), so the tests need no network and no file outside the repository.

#![allow(dead_code)]

use std::io::Read;
use std::path::PathBuf;

/// Tiny Shakespeare (1,115,394 bytes).
pub fn shakespeare() -> String {
    let gz = std::fs::read(repo().join("crates/cli/data/tinyshakespeare.txt.gz")).unwrap();
    let mut text = String::new();
    flate2::read::GzDecoder::new(&gz[..])
        .read_to_string(&mut text)
        .unwrap();
    assert_eq!(text.len(), 1_115_394);
    text
}

/// The repository's root.
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A fresh temporary directory for one test.
pub fn tmp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ferrogpt-test-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
