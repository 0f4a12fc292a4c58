//! # ferrogpt-report: benchmark results that travel, and the report that merges them
//!
//! `ferrogpt bench matmul|train|gpu --save DIR` writes one [`ResultFile`] per run: the schema's
//! name and version, the machine (`ferrogpt info`'s record), date, commit, command line and the
//! figures ([`schema`]; documented in `docs/report.md`). `ferrogpt report FILES_OR_DIRS --out
//! DIR` reads any number of them, from any machines, and writes one self-contained HTML page
//! and a Markdown version with the same tables and SVG charts ([`render`], [`svg`]).
//!
//! Depends on serde only; the CLI fills the machine record and the figures.

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
    pub html: PathBuf,
    pub markdown: PathBuf,
    pub charts: usize,
}

/// Merge `files` into `out/index.html`, `out/report.md` and `out/charts/*.svg` (the folders
/// are created). `generated` is the report's time (RFC 3339).
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
