//! llm.c token files: round trip and rejection of every kind of bad file.

use std::path::{Path, PathBuf};

use ferrogpt_train::data::DataError;
use ferrogpt_train::tokfile::{is_token_file, read_tokens, write_tokens, HEADER_BYTES, MAGIC};

fn tmp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ferrogpt-tokfile-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn header(magic: i32, version: i32, count: i32) -> Vec<u8> {
    let mut h = [0i32; 256];
    (h[0], h[1], h[2]) = (magic, version, count);
    h.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn expect_mismatch(path: &Path, field: &str) -> String {
    match read_tokens(path) {
        Err(e @ DataError::Mismatch { .. }) => {
            let msg = e.to_string();
            assert!(msg.contains(field), "{msg}");
            assert!(msg.contains(&path.display().to_string()), "{msg}");
            msg
        }
        other => panic!("expected a {field} mismatch, got {other:?}"),
    }
}

#[test]
fn round_trip() {
    let dir = tmp_dir("rt");
    let path = dir.join("tokens.bin");
    let tokens: Vec<u32> = vec![0, 1, 2, 50256, 65535, 198, 15496, 995];
    write_tokens(&path, &tokens).unwrap();
    let bytes = std::fs::read(&path).unwrap();
    assert_eq!(bytes.len(), HEADER_BYTES + 2 * tokens.len());
    assert_eq!(bytes[..12], header(MAGIC, 1, tokens.len() as i32)[..12]);
    assert!(is_token_file(&bytes));
    assert_eq!(read_tokens(&path).unwrap(), tokens);
    // Empty token list too.
    write_tokens(&path, &[]).unwrap();
    assert_eq!(read_tokens(&path).unwrap(), Vec::<u32>::new());
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn is_token_file_checks_magic() {
    assert!(is_token_file(&header(MAGIC, 1, 0)[..4]));
    assert!(!is_token_file(b"First Citizen:"));
    assert!(!is_token_file(&[0x60, 0x0e]));
    assert!(!is_token_file(&[]));
}

#[test]
fn missing_file() {
    let path = tmp_dir("missing").join("nope.bin");
    let err = read_tokens(&path).unwrap_err();
    assert!(matches!(err, DataError::Read { .. }), "{err:?}");
    assert!(err.to_string().contains("nope.bin"));
}

#[test]
fn short_header() {
    let path = tmp_dir("short").join("short.bin");
    std::fs::write(&path, &header(MAGIC, 1, 0)[..100]).unwrap();
    let msg = expect_mismatch(&path, "header");
    assert!(msg.contains("1024") && msg.contains("100 bytes"), "{msg}");
}

#[test]
fn wrong_magic() {
    let path = tmp_dir("magic").join("magic.bin");
    std::fs::write(&path, header(20240521, 1, 0)).unwrap();
    let msg = expect_mismatch(&path, "magic");
    assert!(
        msg.contains("20240520") && msg.contains("20240521"),
        "{msg}"
    );
}

#[test]
fn wrong_version() {
    let path = tmp_dir("version").join("version.bin");
    std::fs::write(&path, header(MAGIC, 2, 0)).unwrap();
    let msg = expect_mismatch(&path, "version");
    assert!(msg.contains("expected 1, found 2"), "{msg}");
}

#[test]
fn truncated_and_trailing() {
    let dir = tmp_dir("len");
    let path = dir.join("t.bin");
    let mut bytes = header(MAGIC, 1, 3);
    bytes.extend([1, 0, 2, 0]); // 2 of 3 tokens
    std::fs::write(&path, &bytes).unwrap();
    let msg = expect_mismatch(&path, "file length");
    assert!(
        msg.contains("truncated") && msg.contains("1030") && msg.contains("1028"),
        "{msg}"
    );
    bytes.extend([3, 0, 4]); // 3 tokens and a stray byte
    std::fs::write(&path, &bytes).unwrap();
    let msg = expect_mismatch(&path, "file length");
    assert!(msg.contains("trailing"), "{msg}");
    std::fs::write(&path, header(MAGIC, 1, -1)).unwrap();
    expect_mismatch(&path, "token count");
}

#[test]
fn large_ids_use_llm_c_uint32_layout() {
    let path = tmp_dir("large").join("large.bin");
    let ids = [1, 65536, 2, 128_255, u32::MAX];
    write_tokens(&path, &ids).unwrap();
    let bytes = std::fs::read(&path).unwrap();
    assert_eq!(bytes.len(), HEADER_BYTES + 4 * ids.len());
    assert_eq!(
        &bytes[..8],
        &[20240801i32.to_le_bytes(), 7i32.to_le_bytes()].concat()[..]
    );
    assert!(is_token_file(&bytes));
    assert_eq!(read_tokens(&path).unwrap(), ids);
    // A small vocabulary keeps GPT-2's uint16 layout.
    write_tokens(&path, &[1, 65535]).unwrap();
    assert_eq!(
        std::fs::metadata(&path).unwrap().len() as usize,
        HEADER_BYTES + 4
    );
    // A uint32 file cut short is refused.
    std::fs::write(&path, &bytes[..bytes.len() - 2]).unwrap();
    assert!(expect_mismatch(&path, "file length").contains("x 4"));
}

#[test]
fn write_to_missing_directory_is_an_error() {
    let path = tmp_dir("nodir").join("no/such/dir/x.bin");
    let err = write_tokens(&path, &[1]).unwrap_err();
    assert!(matches!(err, DataError::Write { .. }), "{err:?}");
}
