//! # ferrogpt-report: benchmark results that travel, and the report that merges them
//!
//! `ferrogpt bench matmul|train|gpu --save DIR` writes one [`ResultFile`] per run: the schema's
//! name and version, the machine (`ferrogpt info`'s record), date, commit, command line and the
//! figures ([`schema`]; documented in `docs/report.md`). `ferrogpt report FILES_OR_DIRS --out
//! DIR` reads any number of them, from any machines, and writes one self-contained HTML page
//! and a Markdown version with the same tables and SVG charts ([`render`], [`svg`]).
//!
//! Depends on serde only; the CLI (ferrogpt-cli's `bench` and `report` commands) fills the
//! machine record and the figures, and `bench/fleet.sh` collects the files of many machines.
//! [`peer`] reads PyTorch's and llm.c's training-step output into peer rows of a training
//! result (`bench train --peer-json FILE --peer-llmc-log FILE`).
//!
//! # Example
//!
//! A saved result read, checked and written back, refused when it comes from a newer schema,
//! and merged into a report page.
//!
//! ```
//! use ferrogpt_report::{render, ResultFile, SchemaError};
//!
//! let text = r#"{
//!   "schema": "ferrogpt-bench-result", "schema_version": 1,
//!   "ferrogpt_version": "0.1.0", "commit": "692cdba", "date": "2026-12-07T18:20:05Z",
//!   "host": "laptop", "command": ["ferrogpt", "bench", "matmul", "--save", "results"],
//!   "machine": { "arch": "x86_64", "os": "linux", "vendor": "AMD",
//!                "model": "AMD Ryzen 7 4800U", "logical_cores": 16 },
//!   "kind": "matmul",
//!   "matmul": { "device": "cpu", "device_name": "AMD Ryzen 7 4800U", "dtype": "f32",
//!               "threads": 16, "rows": [
//!     { "level": "naive", "peer": false, "m": 512, "n": 512, "k": 512,
//!       "seconds": 0.25, "gflops": 1.07 },
//!     { "level": "simd", "peer": false, "m": 512, "n": 512, "k": 512,
//!       "seconds": 0.0008, "gflops": 335.5 } ] }
//! }"#;
//! let file = ResultFile::from_json(text)?;
//! assert_eq!(file.figures.kind(), "matmul");
//! assert_eq!(file.file_name(), "matmul-cpu-f32-laptop-2026-12-07T18-20-05Z.json");
//! assert_eq!(ResultFile::from_json(&file.to_json())?, file);
//!
//! // A file of a newer schema version is refused with one line that says what to do.
//! let newer = text.replace("\"schema_version\": 1", "\"schema_version\": 2");
//! let err = ResultFile::from_json(&newer).unwrap_err();
//! assert_eq!(err, SchemaError::Version { found: 2 });
//! assert!(err.to_string().contains("update ferrogpt"));
//!
//! // One page from any number of files: HTML with inline SVG charts, and Markdown whose charts
//! // the caller writes beside it (as [`write_report`] does).
//! let loaded = render::Loaded { source: "results/laptop.json".into(), file };
//! let page = render::build(&[loaded], "2026-12-08T09:00:00Z");
//! let html = render::html(&page);
//! assert!(html.starts_with("<!DOCTYPE html>") && html.contains("<svg"));
//! let (md, charts) = render::markdown(&page);
//! assert!(md.contains("laptop") && !charts.is_empty());
//! # Ok::<(), SchemaError>(())
//! ```

#![warn(missing_docs)]

pub mod peer;
pub mod render;
pub mod schema;
pub mod svg;

pub use schema::{load, Figures, Machine, ResultFile, SchemaError, SCHEMA, SCHEMA_VERSION};

use std::path::{Path, PathBuf};

/// The ferrogpt version of this build.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
/// The git commit this build came from (short hash), or "unknown" (see `build.rs`).
pub const COMMIT: &str = env!("FERROGPT_GIT_COMMIT");

/// The result files named by `paths`: a file as it is, a folder's `*.json` files (not its
/// subfolders), sorted by name. Errors: a path that does not exist or cannot be listed, or no
/// JSON file at all.
pub fn expand(paths: &[PathBuf]) -> Result<Vec<PathBuf>, String> {
    let mut out = vec![];
    for p in paths {
        if p.is_dir() {
            let mut found: Vec<PathBuf> = std::fs::read_dir(p)
                .map_err(|e| format!("{}: cannot list the folder: {e}", p.display()))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|f| f.is_file() && f.extension().is_some_and(|x| x == "json"))
                .collect();
            found.sort();
            out.extend(found);
        } else if p.exists() {
            out.push(p.clone());
        } else {
            return Err(format!("{}: no such file or folder", p.display()));
        }
    }
    if out.is_empty() {
        return Err("no saved results (*.json) in the paths given".into());
    }
    Ok(out)
}

/// What [`write_report`] wrote.
pub struct Written {
    /// `out/index.html`, the self-contained page.
    pub html: PathBuf,
    /// `out/report.md`, which links the charts.
    pub markdown: PathBuf,
    /// How many SVG files went into `out/charts/`.
    pub charts: usize,
}

/// Merge `files` into `out/index.html`, `out/report.md` and `out/charts/*.svg` (the folders
/// are created). `generated` is the report's time (RFC 3339). Existing files of those names
/// are overwritten; other files in `out` are left alone. Errors: one line naming the folder or
/// file that could not be created or written (files written before it stay).
pub fn write_report(
    files: &[render::Loaded],
    out: &Path,
    generated: &str,
) -> Result<Written, String> {
    let page = render::build(files, generated);
    let (md, charts) = render::markdown(&page);
    let dir = out.join("charts");
    std::fs::create_dir_all(&dir)
        .map_err(|e| format!("--out {}: cannot create the folder: {e}", out.display()))?;
    let write = |p: &Path, text: &str| {
        std::fs::write(p, text).map_err(|e| format!("{}: cannot write: {e}", p.display()))
    };
    let html = out.join("index.html");
    write(&html, &render::html(&page))?;
    let markdown = out.join("report.md");
    write(&markdown, &md)?;
    for (name, svg) in &charts {
        write(&out.join(name), svg)?;
    }
    Ok(Written {
        html,
        markdown,
        charts: charts.len(),
    })
}
