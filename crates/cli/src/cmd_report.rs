//! `ferrogpt report`, and the `--save DIR` of the bench commands.
//!
//! `bench matmul|train|gpu --save DIR [--label NAME]` write one result file per run
//! ([`ferrogpt_report::ResultFile`], schema in docs/report.md): the machine as `ferrogpt info
//! --format json` records it, the date, the commit the binary was built from, the command line
//! and the figures. `ferrogpt report FILES_OR_DIRS... --out DIR` merges any number of them into
//! `DIR/index.html` (self-contained: tables and inline SVG charts), `DIR/report.md` and the
//! charts it links (`DIR/charts/*.svg`). A file that is not a result of this schema version is
//! refused in one line; with `--skip-invalid` it is left out (one line each) and the others
//! are merged.

use ferrogpt_report::render::Loaded;
use ferrogpt_report::schema::{utc_now, MatmulFigures, TrainFigures};
use ferrogpt_report::{Figures, Machine, ResultFile, SCHEMA, SCHEMA_VERSION};
use std::path::PathBuf;

/// `--save DIR` and `--label NAME`, shared by the bench commands.
#[derive(Clone, Debug, Default, clap::Args)]
pub struct SaveArgs {
    /// Also save this run as one self-describing JSON file in DIR, for `ferrogpt report`
    /// (schema: docs/report.md) [default: not saved]
    #[arg(long, value_name = "DIR")]
    pub save: Option<PathBuf>,
    /// This machine's name in saved results and reports [default: the host name]
    #[arg(long, value_name = "NAME", requires = "save")]
    pub label: Option<String>,
}

/// Merge saved benchmark results from any machines into one HTML page and a Markdown report.
#[derive(Clone, Debug, clap::Args)]
pub struct ReportArgs {
    /// Result files written by `bench ... --save`, or folders of them (their *.json files)
    #[arg(required = true, value_name = "FILES_OR_DIRS")]
    pub inputs: Vec<PathBuf>,
    /// Folder for index.html, report.md and charts/ (created if missing)
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// Leave out files that cannot be read (one line each on stderr) instead of stopping
    #[arg(long)]
    pub skip_invalid: bool,
}

/// Read, merge and write; errors are one line naming the file.
pub fn run(args: &ReportArgs) -> Result<(), String> {
    let paths = ferrogpt_report::expand(&args.inputs)?;
    let mut files = vec![];
    for p in &paths {
        match ferrogpt_report::load(p) {
            Ok(file) => files.push(Loaded {
                source: p.display().to_string(),
                file,
            }),
            Err(e) if args.skip_invalid => eprintln!("ferrogpt: skipped {e}"),
            Err(e) => return Err(format!("{e} (--skip-invalid leaves such files out)")),
        }
    }
    if files.is_empty() {
        return Err("no readable results among the files given".into());
    }
    let w = ferrogpt_report::write_report(&files, &args.out, &utc_now())?;
    eprintln!(
        "report of {} result(s): {} and {} ({} charts)",
        files.len(),
        w.html.display(),
        w.markdown.display(),
        w.charts
    );
    Ok(())
}

impl SaveArgs {
    /// Save `figures` with this machine's record (`peak`: the FMA peak this run measured, or
    /// `None` to measure it now) when `--save` was given; prints the path to stderr.
    pub fn save(
        &self,
        figures: Figures,
        peak: Option<ferrogpt_gemm::hw::Peak>,
    ) -> Result<(), String> {
        let Some(dir) = &self.save else {
            return Ok(());
        };
        let peak = peak.unwrap_or_else(ferrogpt_gemm::hw::measure_peak);
        let record = crate::cmd_info::record(Some(&peak))?;
        let machine: Machine = serde_json::from_value(record)
            .map_err(|e| format!("--save: the machine record does not fit the schema: {e}"))?;
        let file = ResultFile {
            schema: SCHEMA.into(),
            schema_version: SCHEMA_VERSION,
            ferrogpt_version: ferrogpt_report::VERSION.into(),
            commit: ferrogpt_report::COMMIT.into(),
            date: utc_now(),
            host: self.label.clone().unwrap_or_else(host_name),
            command: std::env::args_os()
                .map(|a| a.to_string_lossy().into_owned())
                .collect(),
            machine,
            figures,
        };
        let path = file.save_in(dir)?;
        eprintln!("saved {}", path.display());
        Ok(())
    }
}

/// Wrap matmul figures.
pub fn matmul(m: MatmulFigures) -> Figures {
    Figures::Matmul { matmul: m }
}

/// Wrap training figures.
pub fn train(t: TrainFigures) -> Figures {
    Figures::Train { train: t }
}

/// The host name (Linux's `/proc/sys/kernel/hostname`, else the `hostname` command), or
/// "unknown".
fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| {
            let out = std::process::Command::new("hostname").output().ok()?;
            String::from_utf8(out.stdout).ok()
        })
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "unknown".into())
}
