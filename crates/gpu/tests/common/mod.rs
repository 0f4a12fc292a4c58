//! Shared by the GPU test files.

/// A test that cannot run here (no GPU, no driver, no NVRTC) calls this and returns: it says
/// "skipped: {why}" and the test passes, unless `FERROGPT_REQUIRE_GPU=1` (set by the GPU
/// benchmark scripts), where it fails, so a broken driver setup cannot pass silently.
pub fn skip(why: impl std::fmt::Display) {
    if std::env::var("FERROGPT_REQUIRE_GPU").is_ok_and(|v| v == "1") {
        panic!("FERROGPT_REQUIRE_GPU=1, but {why}");
    }
    println!("skipped: {why}");
}
