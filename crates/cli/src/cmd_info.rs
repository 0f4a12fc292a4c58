//! `ferrogpt info`: what this machine is and how fast it can multiply-add.
//!
//! Prints [`ferrogpt_gemm::hw::detect`] and, unless `--no-peak`, the FMA peak of
//! [`ferrogpt_gemm::hw::measure_peak`] (about 0.2-0.5 s). Text by default; `--format json` prints
//! one JSON object: the fields of `HwInfo` (`arch`, `os`, `vendor`, `model`, `microarch`,
//! `logical_cores`, `caches`, `features`, `cuda`), `peak` (null with `--no-peak`) and `wgpu`
//! (the adapters of [`ferrogpt_wgpu::adapters`], best first; empty when there is none).
//! `--identify FILE` describes another machine instead, from its recorded `/proc/cpuinfo`,
//! `lscpu` or `sysctl -a` output ([`ferrogpt_gemm::hw::identify()`]).

use ferrogpt_gemm::hw::{self, HwInfo, Peak};
use serde::Serialize;

/// Output format of `ferrogpt info`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum InfoFormat {
    /// One labelled line per fact.
    #[default]
    Text,
    /// One JSON object, for scripts.
    Json,
}

/// Describe this machine: CPU, cores, caches, ISA features, FMA peak, CUDA GPUs, wgpu adapters.
#[derive(Clone, Debug, clap::Args)]
pub struct InfoArgs {
    /// Output format.
    #[arg(long, value_enum, default_value_t = InfoFormat::Text)]
    pub format: InfoFormat,
    /// Skip the FMA peak microbenchmark (detection only, instant)
    #[arg(long)]
    pub no_peak: bool,
    /// Instead of this machine, recognise the CPU that FILE describes: a recorded
    /// `/proc/cpuinfo`, `lscpu` or `sysctl -a` output (from another machine)
    #[arg(long, value_name = "FILE")]
    pub identify: Option<std::path::PathBuf>,
}

/// The JSON report: the hardware description with the peak beside it.
#[derive(Serialize)]
struct Report<'a> {
    #[serde(flatten)]
    hw: &'a HwInfo,
    peak: Option<&'a Peak>,
    wgpu: &'a [ferrogpt_wgpu::AdapterReport],
}

/// Detect the hardware, measure the peak unless told not to, and print the report to stdout.
/// Errors only if the JSON cannot be written (which would be a bug).
pub fn run(args: &InfoArgs) -> Result<(), String> {
    if let Some(path) = &args.identify {
        return identify(path, args.format);
    }
    let info = hw::detect();
    let peak = (!args.no_peak).then(hw::measure_peak);
    let wgpu = ferrogpt_wgpu::adapters();
    match args.format {
        InfoFormat::Text => {
            print!("{}", hw::render_text(&info, peak.as_ref()));
            print!("{}", ferrogpt_wgpu::render_text(&wgpu));
        }
        InfoFormat::Json => {
            let report = Report {
                hw: &info,
                peak: peak.as_ref(),
                wgpu: &wgpu,
            };
            let json = serde_json::to_string_pretty(&report)
                .map_err(|e| format!("info: cannot write the JSON report: {e}"))?;
            println!("{json}");
        }
    }
    Ok(())
}

/// `--identify FILE`: what [`hw::identify()`] recognises in a recorded description.
fn identify(path: &std::path::Path, format: InfoFormat) -> Result<(), String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("--identify {}: cannot read: {e}", path.display()))?;
    let id = hw::identify(&text).map_err(|e| format!("--identify {}: {e}", path.display()))?;
    match format {
        InfoFormat::Json => println!(
            "{}",
            serde_json::to_string_pretty(&id).map_err(|e| e.to_string())?
        ),
        InfoFormat::Text => {
            let cores = id.logical_cores.map_or("?".into(), |n| n.to_string());
            for (label, value) in [
                ("recognised", id.name.as_str()),
                ("source", id.source),
                ("arch", id.arch),
                ("vendor", &id.vendor),
                ("model", &id.model),
                ("microarch", id.microarch.as_deref().unwrap_or("unknown")),
                ("cores", &format!("{cores} logical")),
                ("features", &id.features.join(" ")),
            ] {
                println!("{label:<12} {value}");
            }
        }
    }
    Ok(())
}

/// The record of `--format json` as a JSON value, with `peak` as given (the `machine` of
/// saved benchmark results).
pub fn record(peak: Option<&Peak>) -> Result<serde_json::Value, String> {
    let info = hw::detect();
    let wgpu = ferrogpt_wgpu::adapters();
    serde_json::to_value(Report {
        hw: &info,
        peak,
        wgpu: &wgpu,
    })
    .map_err(|e| format!("info: cannot write the machine record: {e}"))
}
