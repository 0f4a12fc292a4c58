//! The saved-result file: one benchmark run on one machine, as one JSON object.
//!
//! The schema is documented in `docs/report.md` (its version, every field, and the rule for
//! files of other versions); this module is its single definition in code. Writing goes
//! through [`ResultFile::to_json`], reading through [`ResultFile::from_json`], which checks the
//! schema's name and version before it looks at anything else.
//!
//! Version rule: a reader reads files whose `schema` is [`SCHEMA`] and whose `schema_version`
//! is [`SCHEMA_VERSION`]; unknown fields are ignored (a later ferrogpt may add optional
//! fields without a new version). A file of a newer version is refused (one line: update
//! ferrogpt), as is one of an older version, or of another schema.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

/// The `schema` field of every saved result.
pub const SCHEMA: &str = "ferrogpt-bench-result";
/// The `schema_version` this build writes and reads.
pub const SCHEMA_VERSION: u32 = 1;

/// One saved benchmark run: who ran what, where, when, and what it measured.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ResultFile {
    /// Always [`SCHEMA`].
    pub schema: String,
    /// Always [`SCHEMA_VERSION`] when written by this build.
    pub schema_version: u32,
    /// The ferrogpt version that wrote it (`CARGO_PKG_VERSION`).
    pub ferrogpt_version: String,
    /// The git commit the binary was built from (short hash), or "unknown".
    pub commit: String,
    /// When the run finished, UTC, RFC 3339 to the second: "2026-12-07T18:20:05Z".
    pub date: String,
    /// The machine's name in reports: `--label`, else the host name, else "unknown".
    pub host: String,
    /// The command line, argument by argument, as it was typed.
    pub command: Vec<String>,
    /// `ferrogpt info --format json`'s record of the machine.
    pub machine: Machine,
    /// What was measured.
    #[serde(flatten)]
    pub figures: Figures,
}

/// The measurements, by benchmark: `"kind": "matmul"` with `"matmul": {...}`, or
/// `"kind": "train"` with `"train": {...}`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Figures {
    /// `bench matmul` (any device) or `bench gpu`.
    Matmul {
        /// The ladder's rows.
        matmul: MatmulFigures,
    },
    /// `bench train`.
    Train {
        /// The engines' rows.
        train: TrainFigures,
    },
}

impl Figures {
    /// "matmul" or "train".
    pub fn kind(&self) -> &'static str {
        match self {
            Figures::Matmul { .. } => "matmul",
            Figures::Train { .. } => "train",
        }
    }
}

/// `ferrogpt info`'s record. The fields the report reads are typed; any other field of the
/// record (a later `info` may add some) is kept as it is in `extra`, so a file read and
/// written again loses nothing.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Machine {
    /// Rust's name of the architecture: "x86_64", "aarch64".
    pub arch: String,
    /// Rust's name of the OS: "linux", "macos".
    pub os: String,
    /// The CPU vendor: "Intel", "AMD", "Arm", "Apple", or "unknown".
    pub vendor: String,
    /// The CPU model: "AWS Graviton 3 (Neoverse V1)", a CPUID brand string, or "unknown".
    pub model: String,
    /// The core design where `info` could name it ("Sapphire Rapids", "Neoverse V1").
    #[serde(default)]
    pub microarch: Option<String>,
    /// Logical cores the benchmark's process could use.
    pub logical_cores: usize,
    /// Cache sizes; absent in the file reads as all `None`.
    #[serde(default)]
    pub caches: Caches,
    /// ISA features present, by Rust's feature-detection names ("avx2", "fma", "neon").
    #[serde(default)]
    pub features: Vec<String>,
    /// The CUDA driver and its GPUs.
    #[serde(default)]
    pub cuda: Cuda,
    /// The measured FMA peak; `null` when not measured.
    #[serde(default)]
    pub peak: Option<Peak>,
    /// wgpu adapters, as `info` reports them (kept verbatim).
    #[serde(default)]
    pub wgpu: Vec<Value>,
    /// Every other field of the record, by name, kept so that writing the file again keeps it.
    #[serde(flatten)]
    pub extra: BTreeMap<String, Value>,
}

/// Cache sizes in bytes, as seen by core 0; `None` where the platform did not say.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Caches {
    /// L1 data cache, per core.
    pub l1d: Option<u64>,
    /// L2, per core.
    pub l2: Option<u64>,
    /// L3: the whole cache core 0 shares (a socket's or a CCX's), not a per-core slice.
    pub l3: Option<u64>,
}

/// The CUDA driver's report.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Cuda {
    /// The driver's CUDA version ("12.4"); `None` without a working driver.
    pub driver_version: Option<String>,
    /// Every device the driver listed.
    #[serde(default)]
    pub devices: Vec<CudaDevice>,
    /// Why there are no devices, or what went wrong ("no CUDA driver found").
    pub note: Option<String>,
}

/// One CUDA device.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CudaDevice {
    /// The driver's ordinal, after `CUDA_VISIBLE_DEVICES`'s renumbering.
    pub index: usize,
    /// "NVIDIA H100 80GB HBM3".
    pub name: String,
    /// Device memory, in bytes.
    pub total_mem_bytes: u64,
    /// Compute capability, major (9 for Hopper).
    pub compute_major: i32,
    /// Compute capability, minor (0 for Hopper's 9.0).
    pub compute_minor: i32,
    /// Streaming multiprocessors, when the driver said.
    #[serde(default)]
    pub multiprocessors: Option<i32>,
}

/// The FMA peak in GFLOPS, on one core and on `threads` threads.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Peak {
    /// The FMA kernel that ran: "avx512f", "avx2+fma", "neon", "portable".
    pub isa: String,
    /// Threads of the `_all` figures.
    pub threads: usize,
    /// f32 GFLOPS on one core.
    pub f32_1core: f64,
    /// f32 GFLOPS on `threads` threads.
    pub f32_all: f64,
    /// f64 GFLOPS on one core.
    pub f64_1core: f64,
    /// f64 GFLOPS on `threads` threads.
    pub f64_all: f64,
}

/// `bench matmul` (CPU ladder, or `--device cuda|wgpu`) and `bench gpu`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MatmulFigures {
    /// "cpu", "cuda" or "wgpu": which ladder ran.
    pub device: String,
    /// The device's name: the CPU model, "NVIDIA H100 80GB HBM3 (sm_90)", a wgpu adapter.
    pub device_name: String,
    /// Element type of the CPU ladder ("f32", "f64"); "mixed" for the GPU ladders, whose
    /// rungs carry their precision in their names.
    pub dtype: String,
    /// Threads of the parallel CPU levels; `None` on a GPU.
    pub threads: Option<usize>,
    /// The FMA peak the CPU run measured for `dtype` on `threads` threads (the 100% of
    /// `pct_of_peak`); `None` on a GPU.
    pub peak_gflops: Option<f64>,
    /// One per rung and size, in the order they ran.
    pub rows: Vec<MatmulRow>,
}

/// One level at one size. `C = A·B` with A m×k, B k×n; the benchmarks use squares.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MatmulRow {
    /// The rung's name as `--levels` takes it: "simd", "blas", "warptile", "cublas-bf16".
    pub level: String,
    /// Whether the rung is another project's code (OpenBLAS, matrixmultiply, cuBLAS): a peer
    /// measured beside ours.
    pub peer: bool,
    /// Rows of A and C.
    pub m: usize,
    /// Columns of B and C.
    pub n: usize,
    /// Columns of A, rows of B.
    pub k: usize,
    /// Median seconds of one product; `None` when skipped.
    pub seconds: Option<f64>,
    /// 2·m·n·k / seconds / 10⁹; `None` when skipped.
    pub gflops: Option<f64>,
    /// `gflops` over the measured FMA peak, in percent (CPU only).
    #[serde(default)]
    pub pct_of_peak: Option<f64>,
    /// The naive level's time over this one's at the same size, where naive ran.
    #[serde(default)]
    pub speedup_vs_naive: Option<f64>,
    /// Percent of cuBLAS f32's, and of cuBLAS bf16's, throughput (CUDA only).
    #[serde(default)]
    pub pct_cublas_f32: Option<f64>,
    /// Percent of cuBLAS bf16's throughput at the same size (CUDA only).
    #[serde(default)]
    pub pct_cublas_bf16: Option<f64>,
    /// max |C − C_ref| / max |C_ref| against the f64 oracle.
    #[serde(default)]
    pub max_rel_err: Option<f64>,
    /// Why this size was not measured.
    #[serde(default)]
    pub skipped: Option<String>,
}

/// `bench train`: the same training steps on each engine.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainFigures {
    /// The preset timed ("shakespeare-cpu", "gpt2-124m").
    pub preset: String,
    /// "cpu" or "cuda:N".
    pub device: String,
    /// The engine's arithmetic: "fp32" or "bf16".
    pub dtype: String,
    /// Sequences per step (B).
    pub batch_size: usize,
    /// Tokens per sequence (T).
    pub seq_len: usize,
    /// Timed steps per engine, after `warmup` untimed ones.
    pub steps: usize,
    /// Untimed steps per engine before the timed ones.
    pub warmup: usize,
    /// One per engine, in the order they ran.
    pub rows: Vec<TrainRow>,
}

/// One engine's training steps.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainRow {
    /// The matmul level on the CPU ("simd"); the engine's description on a GPU.
    pub engine: String,
    /// Whether this row is another project's training step (PyTorch) rather than ours.
    pub peer: bool,
    /// CPU threads the engine used.
    pub threads: usize,
    /// Median seconds of one timed step.
    pub step_s_median: f64,
    /// Fastest timed step, in seconds.
    pub step_s_min: f64,
    /// B·T tokens over the median step time.
    pub tokens_per_sec: f64,
    /// Model FLOPs per second, in GFLOPS (6N + 12·L·C·T per token).
    pub model_gflops: f64,
    /// Model FLOPs utilisation against `peak_tflops`, as a fraction.
    #[serde(default)]
    pub mfu: Option<f64>,
    /// The peak the MFU is taken against, in TFLOPS (`--peak-tflops`, or the GPU's known
    /// figure); `None` when not known.
    #[serde(default)]
    pub peak_tflops: Option<f64>,
    /// The training loss of the last step: engines that train alike end alike.
    pub final_loss: f64,
    /// Median seconds of each part of the step.
    #[serde(default)]
    pub phases_median: Option<Phases>,
    /// Where a peer row came from (`bench train --peer-json|--peer-llmc-log`); absent from our
    /// own rows, and from files written before peers could be imported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer_source: Option<PeerSource>,
}

/// A peer row's origin: the file it was read from and what the peer said about itself. A peer
/// row is measured on the machine of the file that holds it (`bench train` checks the peer's
/// device name against the machine record where the peer names one).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PeerSource {
    /// The file, as it was named on the command line.
    pub file: String,
    /// What wrote it: "bench/peers/pytorch_gpt2.py", "bench/peers/pytorch_llama.py" or
    /// "llm.c train_gpt2cu".
    pub tool: String,
    /// The peer's own version ("torch 2.11.0+cu128"); `None` where it prints none (llm.c).
    #[serde(default)]
    pub version: Option<String>,
    /// The device as the peer named it ("NVIDIA H100 80GB HBM3", a CPU model); `None` where
    /// the file does not say.
    #[serde(default)]
    pub device_name: Option<String>,
    /// The peer's timed steps (its median is the row's `step_s_median`).
    pub steps: usize,
    /// The peer's untimed steps before them.
    pub warmup: usize,
}

/// Median seconds of the parts of a training step.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Phases {
    /// Forward and backward passes of every micro-batch, with the drawing of their batches.
    pub forward_backward: f64,
    /// The gradient norm (and clipping).
    pub norm: f64,
    /// The optimizer step.
    pub update: f64,
}

/// Why a file was refused. Its `Display` is the one line the user sees (without the path).
#[derive(Debug, Clone, PartialEq)]
pub enum SchemaError {
    /// Not JSON at all, or not an object.
    NotJson(String),
    /// JSON, but not a ferrogpt result (no or another `schema`).
    NotOurs(String),
    /// Our schema, a version this build does not read.
    Version {
        /// The file's `schema_version`.
        found: u64,
    },
    /// Our schema and version, but a field is missing or has the wrong type.
    Invalid(String),
}

impl fmt::Display for SchemaError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SchemaError::NotJson(e) => write!(f, "not JSON ({e})"),
            SchemaError::NotOurs(why) => write!(f, "not a ferrogpt benchmark result ({why})"),
            SchemaError::Version { found } if *found > SCHEMA_VERSION as u64 => write!(
                f,
                "schema version {found} is newer than this ferrogpt reads ({SCHEMA_VERSION}); \
                 update ferrogpt to read it"
            ),
            SchemaError::Version { found } => write!(
                f,
                "schema version {found} is older than this ferrogpt reads ({SCHEMA_VERSION}); \
                 run the benchmark again with this ferrogpt"
            ),
            SchemaError::Invalid(e) => write!(f, "malformed {SCHEMA} v{SCHEMA_VERSION}: {e}"),
        }
    }
}

impl std::error::Error for SchemaError {}

impl ResultFile {
    /// Parse a saved result, checking name and version first (see the module doc).
    pub fn from_json(text: &str) -> Result<ResultFile, SchemaError> {
        let value: Value =
            serde_json::from_str(text).map_err(|e| SchemaError::NotJson(e.to_string()))?;
        let Value::Object(obj) = &value else {
            return Err(SchemaError::NotOurs(
                "the top level is not an object".into(),
            ));
        };
        match obj.get("schema") {
            Some(Value::String(s)) if s == SCHEMA => {}
            Some(Value::String(s)) => {
                return Err(SchemaError::NotOurs(format!(
                    "schema \"{s}\", expected \"{SCHEMA}\""
                )))
            }
            _ => return Err(SchemaError::NotOurs("no \"schema\" field".into())),
        }
        match obj.get("schema_version").and_then(Value::as_u64) {
            Some(v) if v == SCHEMA_VERSION as u64 => {}
            Some(v) => return Err(SchemaError::Version { found: v }),
            None => {
                return Err(SchemaError::Invalid(
                    "\"schema_version\" is missing or not a whole number".into(),
                ))
            }
        }
        let file: ResultFile =
            serde_json::from_value(value).map_err(|e| SchemaError::Invalid(e.to_string()))?;
        file.check()?;
        Ok(file)
    }

    /// The file's text: pretty JSON with a final newline.
    pub fn to_json(&self) -> String {
        let mut s = serde_json::to_string_pretty(self).expect("a result serialises");
        s.push('\n');
        s
    }

    /// Checks serde cannot express: the times and rates (a matmul row's `seconds` and `gflops`
    /// when present, a train row's `step_s_median` and `tokens_per_sec`) are finite and not
    /// negative; 0 is accepted (a run too short to time). The error names the row, the field and
    /// its value.
    fn check(&self) -> Result<(), SchemaError> {
        let check = |row: String, name: &str, v: f64| {
            if v.is_finite() && v >= 0.0 {
                Ok(())
            } else {
                Err(SchemaError::Invalid(format!(
                    "{row}: {name} is {v}, not a finite number >= 0"
                )))
            }
        };
        match &self.figures {
            Figures::Matmul { matmul } => {
                for r in &matmul.rows {
                    for (name, v) in [("seconds", r.seconds), ("gflops", r.gflops)] {
                        if let Some(v) = v {
                            check(format!("level {} size {}", r.level, r.m), name, v)?;
                        }
                    }
                }
            }
            Figures::Train { train } => {
                for r in &train.rows {
                    for (name, v) in [
                        ("step_s_median", r.step_s_median),
                        ("tokens_per_sec", r.tokens_per_sec),
                    ] {
                        check(format!("engine {}", r.engine), name, v)?;
                    }
                }
            }
        }
        Ok(())
    }

    /// The file name `--save` gives it: `<kind>-<detail>-<host>-<date>.json`, with anything but
    /// letters, digits, dots and dashes turned into dashes.
    pub fn file_name(&self) -> String {
        let detail = match &self.figures {
            Figures::Matmul { matmul } => format!("{}-{}", matmul.device, matmul.dtype),
            Figures::Train { train } => format!("{}-{}", train.preset, train.device),
        };
        let raw = format!(
            "{}-{detail}-{}-{}",
            self.figures.kind(),
            self.host,
            self.date
        );
        let clean: String = raw
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                    c
                } else {
                    '-'
                }
            })
            .collect();
        format!("{clean}.json")
    }

    /// Write the file into `dir` (created if missing) under [`ResultFile::file_name`]; a file
    /// of that name already there gets `-2`, `-3`, ... Returns the path written.
    pub fn save_in(&self, dir: &Path) -> Result<std::path::PathBuf, String> {
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("--save {}: cannot create the folder: {e}", dir.display()))?;
        let name = self.file_name();
        let stem = name.trim_end_matches(".json");
        let mut path = dir.join(&name);
        let mut i = 2;
        while path.exists() {
            path = dir.join(format!("{stem}-{i}.json"));
            i += 1;
        }
        std::fs::write(&path, self.to_json())
            .map_err(|e| format!("--save {}: cannot write: {e}", path.display()))?;
        Ok(path)
    }
}

/// Read and parse one saved result; the error is one line naming the file.
pub fn load(path: &Path) -> Result<ResultFile, String> {
    let text = std::fs::read(path).map_err(|e| format!("{}: cannot read: {e}", path.display()))?;
    let text = String::from_utf8(text)
        .map_err(|_| format!("{}: not JSON (the file is not UTF-8 text)", path.display()))?;
    ResultFile::from_json(&text).map_err(|e| format!("{}: {e}", path.display()))
}

/// UTC now as RFC 3339 to the second ("2026-12-07T18:20:05Z").
pub fn utc_now() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    rfc3339(secs)
}

/// Seconds since the Unix epoch as an RFC 3339 UTC time.
pub fn rfc3339(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// The proleptic Gregorian date of a day count since 1970-01-01: count 400-year eras of
/// 146,097 days, then the year within the era with a year starting on March 1 (so the leap day
/// is the era-year's last), then month and day from the day of that year.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468; // days from 0000-03-01 to 1970-01-01
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097); // day of era, 0..=146096
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365; // year of era, 0..=399
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // day of the March-based year
    let mp = (5 * doy + 2) / 153; // month, March = 0
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_796_667_605), "2026-12-07T18:20:05Z");
        assert_eq!(rfc3339(4_107_542_399), "2100-02-28T23:59:59Z");
    }

    #[test]
    fn refusals_name_the_problem() {
        let e = ResultFile::from_json("{\"schema\": 1").unwrap_err();
        assert!(matches!(e, SchemaError::NotJson(_)), "{e}");
        let e = ResultFile::from_json("[1, 2]").unwrap_err();
        assert!(e.to_string().contains("not an object"), "{e}");
        let e = ResultFile::from_json("{\"schema\": \"other\"}").unwrap_err();
        assert!(e.to_string().contains("schema \"other\""), "{e}");
        let e = ResultFile::from_json(&format!(
            "{{\"schema\": \"{SCHEMA}\", \"schema_version\": 99}}"
        ))
        .unwrap_err();
        assert_eq!(e, SchemaError::Version { found: 99 });
        assert!(e.to_string().contains("newer"), "{e}");
        let e = ResultFile::from_json(&format!(
            "{{\"schema\": \"{SCHEMA}\", \"schema_version\": {SCHEMA_VERSION}}}"
        ))
        .unwrap_err();
        assert!(e.to_string().contains("missing field"), "{e}");
    }

    /// A train result whose one row has these two figures.
    fn train_result(step_s_median: &str, tokens_per_sec: &str) -> String {
        format!(
            r#"{{"schema": "{SCHEMA}", "schema_version": {SCHEMA_VERSION},
              "ferrogpt_version": "0.1.0", "commit": "abc1234", "date": "2026-12-07T18:20:05Z",
              "host": "h", "command": ["ferrogpt"], "machine": {{"arch": "x86_64", "os": "linux", "vendor": "AMD", "model": "EPYC",
                "logical_cores": 2}},
              "kind": "train",
              "train": {{"preset": "shakespeare-cpu", "device": "cpu", "dtype": "fp32",
                "batch_size": 4, "seq_len": 64, "steps": 3, "warmup": 1, "rows": [
                {{"engine": "simd", "peer": false, "threads": 2, "step_s_median": {step_s_median},
                  "step_s_min": 0.1, "tokens_per_sec": {tokens_per_sec}, "model_gflops": 1.0,
                  "final_loss": 4.0}}]}}}}"#
        )
    }

    #[test]
    fn figures_are_finite_and_not_negative() {
        // 0 is accepted, as docs/report.md says.
        ResultFile::from_json(&train_result("0.0", "0")).unwrap();
        ResultFile::from_json(&train_result("0.5", "512.0")).unwrap();
        let e = ResultFile::from_json(&train_result("0.5", "-3.5")).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!(
                "malformed {SCHEMA} v{SCHEMA_VERSION}: engine simd: tokens_per_sec is -3.5, \
                 not a finite number >= 0"
            )
        );
        // JSON has no NaN or infinity (serde_json refuses 1e999 as not JSON): the sign is
        // what can go wrong.
        let e = ResultFile::from_json(&train_result("-0.5", "1.0")).unwrap_err();
        assert!(
            e.to_string()
                .ends_with("engine simd: step_s_median is -0.5, not a finite number >= 0"),
            "{e}"
        );
    }
}
