//! Peers' training steps as rows of a saved result (`bench train --peer-json FILE
//! --peer-llmc-log FILE`).
//!
//! Two outputs are read: the JSON object that `bench/peers/pytorch_gpt2.py` and
//! `bench/peers/pytorch_llama.py` print in step-timing mode ([`PeerRun::from_pytorch_json`]),
//! and the log of llm.c's `train_gpt2cu` ([`PeerRun::from_llmc_log`]: its parameter table and
//! its `step N/M | loss ... | X ms | ...` lines). [`PeerRun::check`] refuses a peer that timed
//! another model, batch, precision, device or machine than the run it joins;
//! [`PeerRun::row`] makes its [`TrainRow`] (`peer: true`, with a [`PeerSource`]).
//!
//! The row's model FLOP/s and MFU are ours: the run's FLOPs per step over the peer's median
//! step, against the run's peak, so that those columns compare like with like (the peer's own
//! MFU counts FLOPs slightly differently; it stays in the peer's file).

use crate::schema::{PeerSource, TrainRow};
use serde_json::Value;
use std::fmt;

/// What a peer's output says about its timed training steps.
#[derive(Clone, Debug, PartialEq)]
pub struct PeerRun {
    /// What wrote it: "bench/peers/pytorch_gpt2.py", "bench/peers/pytorch_llama.py" or
    /// "llm.c train_gpt2cu".
    pub tool: String,
    /// The row's name in reports: "pytorch 2.11 compiled bf16", "llm.c bf16 -r 1".
    pub engine: String,
    /// The peer's own version ("torch 2.11.0+cu128"), where it prints one.
    pub version: Option<String>,
    /// "cpu" or "cuda".
    pub device: String,
    /// The device as the peer named it, where it did.
    pub device_name: Option<String>,
    /// "fp32", "tf32" or "bf16", where the peer said.
    pub dtype: Option<String>,
    /// "gpt2" or "llama".
    pub family: &'static str,
    /// Sequences per micro-batch (B).
    pub batch_size: usize,
    /// Tokens per sequence (T).
    pub seq_len: usize,
    /// Tokens per optimizer step (B·T, times processes and accumulation where the peer has them).
    pub tokens_per_step: usize,
    /// Layers, heads and channels, where the peer said.
    pub n_layer: Option<usize>,
    /// Attention (query) heads.
    pub n_head: Option<usize>,
    /// Channels.
    pub n_embd: Option<usize>,
    /// The vocabulary of its embedding and head (llm.c's padded one), where the peer said.
    pub vocab: Option<usize>,
    /// Timed steps.
    pub steps: usize,
    /// Untimed steps before them.
    pub warmup: usize,
    /// Median seconds of one timed step.
    pub step_s_median: f64,
    /// Fastest timed step, in seconds.
    pub step_s_min: f64,
    /// Tokens per second at the median step.
    pub tokens_per_sec: f64,
    /// CPU threads it used (PyTorch's `torch.get_num_threads()`; 1 for llm.c's host thread).
    pub threads: usize,
    /// The training loss of its last timed step.
    pub final_loss: f64,
}

/// The run a peer joins: what it must have timed too.
#[derive(Clone, Debug)]
pub struct RunShape<'a> {
    /// The run's `--device`: "cpu" or "cuda:N".
    pub device: &'a str,
    /// The run's `--dtype`.
    pub dtype: &'a str,
    /// "gpt2" or "llama".
    pub family: &'a str,
    /// B.
    pub batch_size: usize,
    /// T.
    pub seq_len: usize,
    /// Layers.
    pub n_layer: usize,
    /// Heads.
    pub n_head: usize,
    /// Channels.
    pub n_embd: usize,
    /// The vocabulary and its padded size (a peer may use either).
    pub vocab: (usize, usize),
    /// This machine's CPU model (`ferrogpt info`'s `model`).
    pub cpu_model: &'a str,
    /// This machine's CUDA devices, by name.
    pub gpus: &'a [String],
}

/// Why a peer's output was refused. Its `Display` is one line (the CLI puts the flag and the
/// file before it).
#[derive(Clone, Debug, PartialEq)]
pub enum PeerError {
    /// The PyTorch output is not JSON, or not a JSON object.
    NotJson(String),
    /// A key the step-timing output always has is missing (or null).
    Missing(String),
    /// A key holds another type than the scripts write.
    WrongType {
        /// The key, dotted ("config.batch").
        key: String,
        /// What it should hold ("a whole number").
        expected: &'static str,
    },
    /// The JSON of another mode of the script (`--train-shakespeare`).
    NotStepTiming(String),
    /// An llm.c log whose parameter table lacks a line.
    MissingLine(&'static str),
    /// An llm.c parameter-table line whose value is not a whole number.
    BadLine {
        /// The line's name ("micro batch size B").
        what: &'static str,
        /// What it holds.
        value: String,
    },
    /// An llm.c log without step lines after the warm-up ones.
    NoSteps {
        /// Step lines found.
        found: usize,
        /// Step lines skipped as warm-up.
        warmup: usize,
    },
    /// A time, rate or loss that is not a finite positive number (a loss: not finite).
    BadFigure {
        /// Which figure.
        what: &'static str,
        /// Its value.
        value: f64,
    },
    /// The peer timed something else than the run.
    Mismatch {
        /// What differs ("batch size").
        what: &'static str,
        /// The peer's value.
        peer: String,
        /// The run's value.
        ours: String,
    },
    /// The peer ran on another machine.
    OtherMachine {
        /// The peer's device name.
        peer: String,
        /// This machine's.
        ours: String,
    },
}

impl fmt::Display for PeerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const PYTORCH: &str =
            "the step-timing JSON of bench/peers/pytorch_gpt2.py or pytorch_llama.py";
        match self {
            PeerError::NotJson(e) => write!(f, "not JSON ({e}); expected {PYTORCH}"),
            PeerError::Missing(key) => write!(f, "no \"{key}\" key; expected {PYTORCH}"),
            PeerError::WrongType { key, expected } => {
                write!(f, "\"{key}\" is not {expected}; expected {PYTORCH}")
            }
            PeerError::NotStepTiming(mode) => write!(
                f,
                "a \"{mode}\" run, not step timing (run the script without --train-shakespeare)"
            ),
            PeerError::MissingLine(what) => write!(
                f,
                "the llm.c log has no \"| {what} |\" line in its parameter table"
            ),
            PeerError::BadLine { what, value } => write!(
                f,
                "the llm.c log's \"{what}\" line holds \"{value}\", not a whole number"
            ),
            PeerError::NoSteps { found: 0, .. } => write!(
                f,
                "no llm.c step lines (\"step N/M | loss ... | X ms | ...\"): not a train_gpt2cu log, \
                 or it stopped before its first step"
            ),
            PeerError::NoSteps { found, warmup } => write!(
                f,
                "only {found} llm.c step line(s), all within the {warmup} warm-up step(s) \
                 (--warmup)"
            ),
            PeerError::BadFigure { what, value } => {
                write!(f, "its {what} is {value}, not a finite positive number")
            }
            PeerError::Mismatch { what, peer, ours } => write!(
                f,
                "the peer's {what} is {peer}, this run's {ours}: a peer row must time the same \
                 model, batch, precision and device"
            ),
            PeerError::OtherMachine { peer, ours } => write!(
                f,
                "the peer ran on {peer}, not on this machine ({ours}); run it here, in the same call"
            ),
        }
    }
}

impl std::error::Error for PeerError {}

/// The value at a dotted path; missing and null are both [`PeerError::Missing`].
fn at<'a>(v: &'a Value, path: &str) -> Result<&'a Value, PeerError> {
    let mut cur = v;
    for part in path.split('.') {
        cur = match cur.get(part) {
            Some(Value::Null) | None => return Err(PeerError::Missing(path.into())),
            Some(x) => x,
        };
    }
    Ok(cur)
}

fn wrong(key: &str, expected: &'static str) -> PeerError {
    PeerError::WrongType {
        key: key.into(),
        expected,
    }
}

fn string<'a>(v: &'a Value, key: &str) -> Result<&'a str, PeerError> {
    at(v, key)?.as_str().ok_or_else(|| wrong(key, "a string"))
}

fn number(v: &Value, key: &str) -> Result<f64, PeerError> {
    at(v, key)?.as_f64().ok_or_else(|| wrong(key, "a number"))
}

fn whole(v: &Value, key: &str) -> Result<usize, PeerError> {
    at(v, key)?
        .as_u64()
        .map(|n| n as usize)
        .ok_or_else(|| wrong(key, "a whole number"))
}

/// `value` if it is finite and above 0; a loss need only be finite.
fn positive(what: &'static str, value: f64) -> Result<f64, PeerError> {
    if value.is_finite() && value > 0.0 {
        Ok(value)
    } else {
        Err(PeerError::BadFigure { what, value })
    }
}

fn finite(what: &'static str, value: f64) -> Result<f64, PeerError> {
    if value.is_finite() {
        Ok(value)
    } else {
        Err(PeerError::BadFigure { what, value })
    }
}

/// "2.11.0+cu128" -> "2.11": enough to line the same PyTorch up across machines.
fn major_minor(version: &str) -> &str {
    match version.match_indices('.').nth(1) {
        Some((i, _)) => &version[..i],
        None => version,
    }
}

/// Whitespace runs as one space, trimmed: `/proc/cpuinfo` and CPUID spell a model alike but
/// may space it differently.
fn squash(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Names that say only the architecture (Python's `platform.processor()` or `machine()`, which
/// pytorch_gpt2.py falls back to where `/proc/cpuinfo` has no model name): no model to check.
const ARCH_NAMES: &[&str] = &[
    "", "x86_64", "amd64", "i386", "i686", "aarch64", "arm64", "arm", "armv7l", "ppc64le", "s390x",
    "riscv64",
];

impl PeerRun {
    /// Reads the JSON object that `bench/peers/pytorch_gpt2.py` or `pytorch_llama.py` prints
    /// in step-timing mode. Keys read: `mode` ("step-timing"), `device`, `device_name`,
    /// `dtype`, `compile`, `config` (`batch`, `seq`, `n_layer`, `n_head`, `n_embd`, `vocab`),
    /// `steps`, `warmup`, `median_step_s`, `min_step_s`, `tokens_per_s`, `last_loss`, `env`
    /// (`torch`, `threads`), and `model` where present ("llama" for pytorch_llama.py). Errors:
    /// not JSON, a missing key or one of another type, the JSON of `--train-shakespeare`, or a
    /// time or rate that is not finite and positive.
    pub fn from_pytorch_json(text: &str) -> Result<PeerRun, PeerError> {
        let v: Value = serde_json::from_str(text).map_err(|e| PeerError::NotJson(e.to_string()))?;
        if !v.is_object() {
            return Err(PeerError::NotJson("the top level is not an object".into()));
        }
        let mode = string(&v, "mode")?;
        if mode != "step-timing" {
            return Err(PeerError::NotStepTiming(mode.into()));
        }
        let llama = match v.get("model") {
            None | Some(Value::Null) => false,
            Some(m) => m.as_str().ok_or_else(|| wrong("model", "a string"))? == "llama",
        };
        let torch = string(&v, "env.torch")?;
        let dtype = string(&v, "dtype")?;
        let compiled = at(&v, "compile")?
            .as_bool()
            .ok_or_else(|| wrong("compile", "true or false"))?;
        let (batch_size, seq_len) = (whole(&v, "config.batch")?, whole(&v, "config.seq")?);
        Ok(PeerRun {
            tool: format!(
                "bench/peers/{}",
                if llama {
                    "pytorch_llama.py"
                } else {
                    "pytorch_gpt2.py"
                }
            ),
            engine: format!(
                "pytorch {} {} {dtype}",
                major_minor(torch),
                if compiled { "compiled" } else { "eager" }
            ),
            version: Some(format!("torch {torch}")),
            device: string(&v, "device")?.into(),
            device_name: Some(string(&v, "device_name")?.into()),
            dtype: Some(dtype.into()),
            family: if llama { "llama" } else { "gpt2" },
            batch_size,
            seq_len,
            tokens_per_step: batch_size * seq_len,
            n_layer: Some(whole(&v, "config.n_layer")?),
            n_head: Some(whole(&v, "config.n_head")?),
            n_embd: Some(whole(&v, "config.n_embd")?),
            vocab: Some(whole(&v, "config.vocab")?),
            steps: whole(&v, "steps")?,
            warmup: whole(&v, "warmup")?,
            step_s_median: positive("median_step_s", number(&v, "median_step_s")?)?,
            step_s_min: positive("min_step_s", number(&v, "min_step_s")?)?,
            tokens_per_sec: positive("tokens_per_s", number(&v, "tokens_per_s")?)?,
            threads: whole(&v, "env.threads")?,
            final_loss: finite("last_loss", number(&v, "last_loss")?)?,
        })
    }

    /// Reads the output of llm.c's `train_gpt2cu`: its step lines and its parameter table (`micro batch size B`,
    /// `sequence length T` required; `total batch size`, `device`, `precision`, `recompute`,
    /// `num_layers L`, `num_heads NH`, `channels C`, `padded_vocab_size Vp` where present) and
    /// its step lines, `step    2/10 | loss 10.9 (+nanz)| norm ... | lr ... | 33.17 ms | 41.8%
    /// bf16 MFU | 493940 tok/s`. The first `warmup` step lines are left out (the first includes
    /// cuBLAS and cuDNN set-up); the median is Python's `statistics.median` of the others (the
    /// mean of the middle two of an even count), and tokens/s is tokens per step over it, not
    /// llm.c's moving average. Errors: no step line after the warm-up ones, a table line
    /// missing or unreadable, a step time that is not positive or a last loss that is not
    /// finite.
    pub fn from_llmc_log(text: &str, warmup: usize) -> Result<PeerRun, PeerError> {
        let mut table = std::collections::BTreeMap::new();
        let mut steps: Vec<(f64, Option<f64>)> = vec![]; // (ms, loss)
        for line in text.lines() {
            let cells: Vec<&str> = line.split('|').map(str::trim).collect();
            if line.starts_with('|') && cells.len() >= 3 {
                table.entry(cells[1]).or_insert(cells[2]);
            } else if let Some(step) = llmc_step(&cells) {
                steps.push(step);
            }
        }
        let int = |what: &'static str| -> Result<Option<usize>, PeerError> {
            table
                .get(what)
                .map(|s| {
                    s.parse().map_err(|_| PeerError::BadLine {
                        what,
                        value: s.to_string(),
                    })
                })
                .transpose()
        };
        if steps.is_empty() {
            // Before the table: a file without step lines is most likely not llm.c's log.
            return Err(PeerError::NoSteps { found: 0, warmup });
        }
        let b = int("micro batch size B")?.ok_or(PeerError::MissingLine("micro batch size B"))?;
        let t = int("sequence length T")?.ok_or(PeerError::MissingLine("sequence length T"))?;
        if steps.len() <= warmup {
            return Err(PeerError::NoSteps {
                found: steps.len(),
                warmup,
            });
        }
        let timed = &steps[warmup..];
        let mut ms: Vec<f64> = timed.iter().map(|s| s.0).collect();
        ms.sort_by(f64::total_cmp);
        let n = ms.len();
        let median = if n % 2 == 1 {
            ms[n / 2]
        } else {
            (ms[n / 2 - 1] + ms[n / 2]) / 2.0
        };
        let step_s_median = positive("median step time", median / 1e3)?;
        let step_s_min = positive("fastest step time", ms[0] / 1e3)?;
        let tokens_per_step = int("total batch size")?.unwrap_or(b * t);
        let dtype = table.get("precision").map(|p| p.to_ascii_lowercase());
        let recompute = table.get("recompute");
        let mut engine = vec!["llm.c".to_string()];
        engine.extend(dtype.clone());
        engine.extend(recompute.map(|r| format!("-r {r}")));
        let loss = timed.last().and_then(|s| s.1).unwrap_or(f64::NAN);
        Ok(PeerRun {
            tool: "llm.c train_gpt2cu".into(),
            engine: engine.join(" "),
            version: None,
            device: "cuda".into(),
            device_name: table.get("device").map(|d| d.to_string()),
            dtype,
            family: "gpt2",
            batch_size: b,
            seq_len: t,
            tokens_per_step,
            n_layer: int("num_layers L")?,
            n_head: int("num_heads NH")?,
            n_embd: int("channels C")?,
            vocab: int("padded_vocab_size Vp")?,
            steps: n,
            warmup,
            step_s_median,
            step_s_min,
            tokens_per_sec: tokens_per_step as f64 / step_s_median,
            threads: 1,
            final_loss: finite("last loss", loss)?,
        })
    }

    /// Refuses a peer that timed another thing than `run`: device kind, precision, model
    /// family, B, T, tokens per step (no accumulation), layers, heads, channels, vocabulary
    /// (the run's or its padded size), or another machine: on a GPU the peer's device must be
    /// one of `run.gpus`; on the CPU its model must be `run.cpu_model` (whitespace aside) where
    /// the peer names a model rather than only an architecture. What the peer does not say is
    /// not checked.
    pub fn check(&self, run: &RunShape) -> Result<(), PeerError> {
        let same = |what: &'static str, peer: String, ours: String| {
            if peer == ours {
                Ok(())
            } else {
                Err(PeerError::Mismatch { what, peer, ours })
            }
        };
        let kind = run.device.split(':').next().unwrap_or(run.device);
        same("device", self.device.clone(), kind.into())?;
        if let Some(d) = &self.dtype {
            same("precision", d.clone(), run.dtype.into())?;
        }
        same("model family", self.family.into(), run.family.into())?;
        same(
            "batch size",
            self.batch_size.to_string(),
            run.batch_size.to_string(),
        )?;
        same(
            "sequence length",
            self.seq_len.to_string(),
            run.seq_len.to_string(),
        )?;
        same(
            "tokens per step",
            self.tokens_per_step.to_string(),
            (run.batch_size * run.seq_len).to_string(),
        )?;
        for (what, peer, ours) in [
            ("layer count", self.n_layer, run.n_layer),
            ("head count", self.n_head, run.n_head),
            ("channel count", self.n_embd, run.n_embd),
        ] {
            if let Some(p) = peer {
                same(what, p.to_string(), ours.to_string())?;
            }
        }
        if let Some(v) = self.vocab {
            let (plain, padded) = run.vocab;
            if v != plain && v != padded {
                let ours = if plain == padded {
                    plain.to_string()
                } else {
                    format!("{plain} (padded {padded})")
                };
                same("vocabulary", v.to_string(), ours)?;
            }
        }
        let Some(name) = &self.device_name else {
            return Ok(());
        };
        let name = squash(name);
        if kind == "cpu" {
            let generic = ARCH_NAMES.iter().any(|a| a.eq_ignore_ascii_case(&name));
            let ours = squash(run.cpu_model);
            if !generic && ours != "unknown" && name != ours {
                return Err(PeerError::OtherMachine { peer: name, ours });
            }
        } else if !run.gpus.iter().any(|g| squash(g) == name) {
            return Err(PeerError::OtherMachine {
                peer: name,
                ours: if run.gpus.is_empty() {
                    "no CUDA device".into()
                } else {
                    run.gpus.join(", ")
                },
            });
        }
        Ok(())
    }

    /// The peer's row: its figures, model GFLOPS and MFU from the run's `flops_per_step` and
    /// `peak_tflops` (see the module doc), and its origin with `file` as named by the user.
    pub fn row(&self, file: &str, flops_per_step: f64, peak_tflops: Option<f64>) -> TrainRow {
        let per_s = flops_per_step / self.step_s_median;
        TrainRow {
            engine: self.engine.clone(),
            peer: true,
            threads: self.threads,
            step_s_median: self.step_s_median,
            step_s_min: self.step_s_min,
            tokens_per_sec: self.tokens_per_sec,
            model_gflops: per_s / 1e9,
            mfu: peak_tflops.map(|p| per_s / (p * 1e12)),
            peak_tflops,
            final_loss: self.final_loss,
            phases_median: None,
            peer_source: Some(PeerSource {
                file: file.into(),
                tool: self.tool.clone(),
                version: self.version.clone(),
                device_name: self.device_name.clone(),
                steps: self.steps,
                warmup: self.warmup,
            }),
        }
    }
}

/// One llm.c step line, split at `|`, as (milliseconds, loss); `None` for any other line.
fn llmc_step(cells: &[&str]) -> Option<(f64, Option<f64>)> {
    let (n, m) = cells
        .first()?
        .strip_prefix("step")?
        .trim()
        .split_once('/')?;
    n.parse::<u64>().ok()?;
    m.parse::<u64>().ok()?;
    let ms = cells
        .iter()
        .find_map(|c| c.strip_suffix(" ms")?.trim().parse::<f64>().ok())?;
    let loss = cells.iter().find_map(|c| {
        c.strip_prefix("loss ")?
            .split_whitespace()
            .next()?
            .parse::<f64>()
            .ok()
    });
    Some((ms, loss))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pytorch_versions_shorten_to_major_minor() {
        assert_eq!(major_minor("2.11.0+cu128"), "2.11");
        assert_eq!(major_minor("2.15.0"), "2.15");
        assert_eq!(major_minor("3"), "3");
    }

    #[test]
    fn llmc_step_lines() {
        fn cells(l: &str) -> Vec<&str> {
            l.split('|').map(str::trim).collect()
        }
        let line = "step    2/10 | loss 10.912345 (+nanz)| norm 3.1234 (+nanz)| lr 3.00e-04 | \
                    33.17 ms | 41.8% bf16 MFU | 493940 tok/s";
        assert_eq!(llmc_step(&cells(line)), Some((33.17, Some(10.912345))));
        for other in [
            "val loss 10.987654",
            "total average iteration time: 34.100000 ms",
            "stepping into it | 3 ms",
            "step 2/10 no times here",
            "| step | 2/10 |",
        ] {
            assert_eq!(llmc_step(&cells(other)), None, "{other}");
        }
    }

    /// A CPU peer of pytorch_gpt2.py's shape on a machine whose model is `model`.
    fn cpu_peer(device_name: &str) -> PeerRun {
        PeerRun {
            tool: "bench/peers/pytorch_gpt2.py".into(),
            engine: "pytorch 2.15 eager fp32".into(),
            version: Some("torch 2.15.0".into()),
            device: "cpu".into(),
            device_name: Some(device_name.into()),
            dtype: Some("fp32".into()),
            family: "gpt2",
            batch_size: 12,
            seq_len: 64,
            tokens_per_step: 768,
            n_layer: Some(4),
            n_head: Some(4),
            n_embd: Some(128),
            vocab: Some(65),
            steps: 50,
            warmup: 10,
            step_s_median: 0.05,
            step_s_min: 0.04,
            tokens_per_sec: 15360.0,
            threads: 2,
            final_loss: 3.0,
        }
    }

    #[test]
    fn cpu_peers_are_checked_by_model_where_they_name_one() {
        let run = RunShape {
            device: "cpu",
            dtype: "fp32",
            family: "gpt2",
            batch_size: 12,
            seq_len: 64,
            n_layer: 4,
            n_head: 4,
            n_embd: 128,
            vocab: (65, 65),
            cpu_model: "Intel(R) Xeon(R) Platinum 8480+",
            gpus: &[],
        };
        // Spacing aside, the same model; an architecture alone says nothing to check.
        for name in [
            "Intel(R) Xeon(R)  Platinum 8480+ ",
            "x86_64",
            "aarch64",
            "arm",
            "",
        ] {
            cpu_peer(name).check(&run).unwrap();
        }
        let e = cpu_peer("AMD EPYC 9R14").check(&run).unwrap_err();
        assert_eq!(
            e,
            PeerError::OtherMachine {
                peer: "AMD EPYC 9R14".into(),
                ours: "Intel(R) Xeon(R) Platinum 8480+".into()
            }
        );
        // A machine that could not name its CPU checks nothing.
        cpu_peer("AMD EPYC 9R14")
            .check(&RunShape {
                cpu_model: "unknown",
                ..run.clone()
            })
            .unwrap();
        // The vocabulary may be the run's or its padded size.
        cpu_peer("x86_64")
            .check(&RunShape {
                vocab: (60, 65),
                ..run.clone()
            })
            .unwrap();
        let e = cpu_peer("x86_64")
            .check(&RunShape {
                vocab: (60, 64),
                ..run
            })
            .unwrap_err();
        assert!(
            e.to_string()
                .contains("vocabulary is 65, this run's 60 (padded 64)"),
            "{e}"
        );
    }
}
