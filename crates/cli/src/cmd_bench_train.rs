//! `ferrogpt bench train`: the same training steps at each matmul level: median step time,
//! tokens/s, model FLOPs/s and the speedup over the slowest level measured. The end-to-end
//! version of the matmul table: whether a rung matters for training. With `--device cuda`, one
//! row: the GPU engine (the levels are the CPU's). `--save DIR` also writes the rows as a
//! result file for `ferrogpt report` (`cmd_report`); `--peer-json FILE` and `--peer-llmc-log
//! FILE` add peer rows to it (PyTorch's and llm.c's steps, timed on this machine by
//! `bench/peers/*.py` or llm.c: [`ferrogpt_report::peer`]), read and checked against this run
//! before it starts.

use crate::common::{
    engine_factory, resolve_data, set_threads, since_start, Device, DeviceArgs, RecomputeArg,
};
use ferrogpt_core::Level;
use ferrogpt_report::peer::{PeerRun, RunShape};
use ferrogpt_train::config::preset_or_err;
use ferrogpt_train::data::{load_dataset, load_text};
use ferrogpt_train::tokenizer::Tokenizer;
use ferrogpt_train::trainer::{StepPhases, Trainer};
use std::path::PathBuf;
use std::time::Instant;

#[derive(Clone, Debug, clap::Args)]
pub struct BenchTrainArgs {
    /// The model and batch to time: a preset of `train` (shakespeare-cpu, shakespeare-char,
    /// gpt2-124m, llama-tiny, smollm-135m)
    #[arg(long, default_value = "shakespeare-cpu")]
    preset: String,
    /// Comma-separated levels [default: every level available here except naive]
    #[arg(long)]
    levels: Option<String>,
    /// Timed steps per level (after --warmup untimed ones)
    #[arg(long, default_value_t = 20)]
    steps: usize,
    /// Untimed steps before the timed ones, per level
    #[arg(long, default_value_t = 3)]
    warmup: usize,
    /// Sequences per step (B) [default: the preset's]
    #[arg(long)]
    batch_size: Option<usize>,
    /// Tokens per sequence (T) [default: the preset's]
    #[arg(long)]
    seq_len: Option<usize>,
    /// Training text; the gpt2 preset uses random tokens if absent [default:
    /// data/tinyshakespeare.txt]
    #[arg(long)]
    data: Option<PathBuf>,
    /// Worker threads [default: all cores]
    #[arg(long)]
    threads: Option<usize>,
    /// Print JSON instead of a table
    #[arg(long)]
    json: bool,
    /// Peak FLOP/s (in TFLOPS) of the device, for the model FLOPs utilisation (MFU) column
    /// [default on an H100 or H200: 989 (bf16 tensor cores, dense) or 67 (fp32), NVIDIA's
    /// SXM figures; elsewhere none, and no MFU]
    #[arg(long)]
    peak_tflops: Option<f64>,
    #[command(flatten)]
    save: crate::cmd_report::SaveArgs,
    /// A peer's training steps to save beside ours (needs --save): the JSON object that
    /// bench/peers/pytorch_gpt2.py or pytorch_llama.py prints in step-timing mode, run on this
    /// machine with the same model, batch and dtype (repeatable)
    #[arg(long, value_name = "FILE", requires = "save")]
    peer_json: Vec<PathBuf>,
    /// An llm.c train_gpt2cu log to save beside ours (needs --save): the median of its step
    /// times after the first --warmup steps, run on this GPU with the same model, batch and
    /// dtype (repeatable)
    #[arg(long, value_name = "FILE", requires = "save")]
    peer_llmc_log: Vec<PathBuf>,
    #[command(flatten)]
    device: DeviceArgs,
    #[command(flatten)]
    recompute: RecomputeArg,
}

#[derive(serde::Serialize)]
struct Row {
    /// The matmul level on the CPU; the engine's description on a GPU.
    level: String,
    preset: String,
    batch_size: usize,
    seq_len: usize,
    threads: usize,
    step_s_median: f64,
    step_s_min: f64,
    tokens_per_sec: f64,
    model_gflops: f64,
    /// Model FLOPs utilisation: model FLOP/s over the peak (None without a known peak).
    mfu: Option<f64>,
    peak_tflops: Option<f64>,
    final_loss: f32,
    /// Median of each phase of the step over the timed steps (each phase's own median, so
    /// they need not add up to `step_s_median`).
    phases_median: StepPhases,
}

/// NVIDIA's dense peak for the cards we measure on (H100 SXM and H200: same tensor cores),
/// by the engine's description ("cuda:0 NVIDIA H100 80GB HBM3 (bf16)").
fn known_peak_tflops(label: &str) -> Option<f64> {
    let hopper = label.contains("H100") || label.contains("H200");
    match () {
        _ if hopper && label.ends_with("(bf16)") => Some(989.0),
        _ if hopper && label.ends_with("(fp32)") => Some(67.0),
        _ => None,
    }
}

pub fn run(a: BenchTrainArgs) -> Result<(), String> {
    set_threads(a.threads)?;
    let (device, _) = a.device.parse()?;
    if a.peak_tflops.is_some_and(|p| p.is_nan() || p <= 0.0) {
        return Err("--peak-tflops must be positive".into());
    }
    let mut cfg = preset_or_err(&a.preset)?;
    if let Some(b) = a.batch_size {
        cfg.batch_size = b;
    }
    if let Some(t) = a.seq_len {
        cfg.seq_len = t;
    }
    cfg.steps = a.steps + a.warmup;
    cfg.eval_interval = 0;
    cfg.validate()?;
    if a.steps == 0 {
        return Err("--steps must be at least 1".into());
    }
    // The peers' files are read before anything runs: a bad one costs no benchmark.
    let peers = read_peers(&a)?;
    let levels: Vec<Level> = match &a.levels {
        // Levels are the CPU engine's: a GPU engine runs once, its row named by the engine.
        _ if device != Device::Cpu => vec![Level::fastest()],
        Some(s) => s
            .split(',')
            .map(|l| l.trim().parse::<Level>().map_err(|e| e.to_string()))
            .collect::<Result<_, _>>()?,
        None => Level::ALL
            .iter()
            .copied()
            .filter(|l| *l != Level::Naive && l.available().is_ok())
            .collect(),
    };
    // Every engine is checked to be available before the data is read.
    let engines = levels
        .into_iter()
        .map(|level| {
            level.available().map_err(|e| e.to_string())?;
            Ok((
                level,
                engine_factory(level, &a.device, a.recompute.recompute)?,
            ))
        })
        .collect::<Result<Vec<_>, String>>()?;
    let (tokenizer, data) = if cfg.tokenizer == "gpt2" {
        let tok = Tokenizer::gpt2().map_err(|e| e.to_string())?;
        // Random ids: the step time does not depend on the text.
        let n = 1 << 16;
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let ids: Vec<u32> = (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x % 50257) as u32
            })
            .collect();
        (
            tok,
            ferrogpt_train::data::Dataset {
                train: ids,
                val: Vec::new(),
                sources: Vec::new(),
                ..Default::default()
            },
        )
    } else {
        let path = resolve_data(a.data.as_deref())?;
        let tok = Tokenizer::from_corpus_char(&load_text(&path).map_err(|e| e.to_string())?);
        let ds = load_dataset(&path, None, &tok).map_err(|e| e.to_string())?;
        (tok, ds)
    };
    let model = cfg.model_config(tokenizer.vocab_size());
    check_peers(&peers, &a, &cfg, &model)?;
    let flops_per_step = model.flops_per_token(cfg.seq_len) * (cfg.batch_size * cfg.seq_len) as f64;
    let mut rows = Vec::new();
    for (level, make_engine) in engines {
        let dir =
            std::env::temp_dir().join(format!("ferrogpt-bench-{}-{level}", std::process::id()));
        let mut t = Trainer::new(
            cfg.clone(),
            tokenizer.clone(),
            data.clone(),
            &*make_engine,
            &dir,
            None,
        )
        .map_err(|e| e.to_string())?;
        let label = match device {
            Device::Cpu => level.to_string(),
            Device::Cuda(_) => t.engine.describe(),
        };
        let mut times = Vec::new();
        let mut phases = Vec::new();
        let mut loss = 0.0;
        for i in 0..cfg.steps {
            let t0 = Instant::now();
            loss = t.train_step().map_err(|e| e.to_string())?.0;
            if i == 0 {
                if let Some(mem) = t.engine.memory() {
                    eprintln!(
                        "{label}: first step done {:.1} s after start; {mem}",
                        since_start()
                    );
                }
            }
            if i >= a.warmup {
                times.push(t0.elapsed().as_secs_f64());
                phases.push(t.last_phases);
            }
        }
        let _ = std::fs::remove_dir_all(&dir);
        let med = median(&mut times);
        let part =
            |f: fn(&StepPhases) -> f64| median(&mut phases.iter().map(f).collect::<Vec<_>>());
        let phases_median = StepPhases {
            forward_backward: part(|p| p.forward_backward),
            norm: part(|p| p.norm),
            update: part(|p| p.update),
        };
        let peak = a.peak_tflops.or_else(|| known_peak_tflops(&label));
        rows.push(Row {
            level: label,
            preset: a.preset.clone(),
            batch_size: cfg.batch_size,
            seq_len: cfg.seq_len,
            threads: rayon::current_num_threads(),
            step_s_median: med,
            step_s_min: times[0],
            tokens_per_sec: (cfg.batch_size * cfg.seq_len) as f64 / med,
            model_gflops: flops_per_step / med / 1e9,
            mfu: peak.map(|p| flops_per_step / med / (p * 1e12)),
            peak_tflops: peak,
            final_loss: loss,
            phases_median,
        });
        if !a.json {
            let r = rows.last().expect("just pushed");
            eprintln!("{:<18} {:>9.2} ms/step", r.level, r.step_s_median * 1e3);
        }
    }
    let peak = rows.iter().find_map(|r| r.peak_tflops);
    let peer_rows: Vec<_> = peers
        .iter()
        .map(|p| p.run.row(&p.file, flops_per_step, peak))
        .collect();
    save(&a, &cfg, &rows, peer_rows.clone())?;
    if a.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&rows).map_err(|e| e.to_string())?
        );
        return Ok(());
    }
    let slowest = rows.iter().map(|r| r.step_s_median).fold(0.0, f64::max);
    println!(
        "bench train: preset {}, batch {} x seq {}, {} threads, median of {} steps after {} warm-up",
        a.preset,
        cfg.batch_size,
        cfg.seq_len,
        rayon::current_num_threads(),
        a.steps,
        a.warmup
    );
    // The level column fits the longest label (a GPU's name).
    let w = rows
        .iter()
        .map(|r| r.level.len())
        .max()
        .unwrap_or(0)
        .max(18);
    println!(
        "{:<w$} {:>12} {:>12} {:>12} {:>7} {:>9} {:>10}   {:>9} {:>9} {:>9}",
        "level",
        "step (ms)",
        "tokens/s",
        "model GF/s",
        "MFU",
        "speedup",
        "loss",
        "fwd+bwd",
        "norm",
        "update"
    );
    for r in &rows {
        let mfu = r
            .mfu
            .map_or("-".to_string(), |m| format!("{:.1}%", m * 100.0));
        let ph = &r.phases_median;
        println!(
            "{:<w$} {:>12.2} {:>12.0} {:>12.1} {:>7} {:>8.2}x {:>10.4}   {:>9.2} {:>9.2} {:>9.2}",
            r.level,
            r.step_s_median * 1e3,
            r.tokens_per_sec,
            r.model_gflops,
            mfu,
            slowest / r.step_s_median,
            r.final_loss,
            ph.forward_backward * 1e3,
            ph.norm * 1e3,
            ph.update * 1e3
        );
    }
    println!(
        "fwd+bwd / norm / update: median ms of each part of the step (forward and backward \
         passes; gradient norm and clip; optimizer update)"
    );
    if let Some(p) = rows.iter().find_map(|r| r.peak_tflops) {
        println!("MFU: model FLOPs (6N + 12·L·C·T per token) per second over a peak of {p} TFLOPS");
    }
    let fastest = rows.iter().map(|r| r.tokens_per_sec).fold(0.0, f64::max);
    for p in &peer_rows {
        let src = p.peer_source.as_ref().map_or("", |s| s.file.as_str());
        println!(
            "peer {}: {:.2} ms/step, {:.0} tokens/s; our fastest over it {:.2}x ({src})",
            p.engine,
            p.step_s_median * 1e3,
            p.tokens_per_sec,
            fastest / p.tokens_per_sec
        );
    }
    Ok(())
}

/// A peer's run, with the flag and the file (as given) that named it.
struct Peer {
    flag: &'static str,
    file: String,
    run: PeerRun,
}

/// `--peer-json` and `--peer-llmc-log`: each file read and parsed; errors name the flag and the
/// file. Two peers of the same engine name are refused (the report would show one of them).
fn read_peers(a: &BenchTrainArgs) -> Result<Vec<Peer>, String> {
    let flagged = a
        .peer_json
        .iter()
        .map(|p| ("--peer-json", p))
        .chain(a.peer_llmc_log.iter().map(|p| ("--peer-llmc-log", p)));
    let mut peers: Vec<Peer> = vec![];
    for (flag, path) in flagged {
        let file = path.display().to_string();
        let bytes = std::fs::read(path).map_err(|e| format!("{flag} {file}: cannot read: {e}"))?;
        // An llm.c log may hold bytes of sampled text that are not UTF-8.
        let text = String::from_utf8_lossy(&bytes);
        let run = if flag == "--peer-json" {
            PeerRun::from_pytorch_json(&text)
        } else {
            PeerRun::from_llmc_log(&text, a.warmup)
        }
        .map_err(|e| format!("{flag} {file}: {e}"))?;
        if let Some(other) = peers.iter().find(|p| p.run.engine == run.engine) {
            return Err(format!(
                "{flag} {file}: the same peer engine ({}) as {}; one row each",
                run.engine, other.file
            ));
        }
        peers.push(Peer { flag, file, run });
    }
    Ok(peers)
}

/// Refuses a peer that timed another model, batch, precision, device or machine than this run
/// ([`PeerRun::check`]).
fn check_peers(
    peers: &[Peer],
    a: &BenchTrainArgs,
    cfg: &ferrogpt_train::config::TrainConfig,
    model: &ferrogpt_model::config::GptConfig,
) -> Result<(), String> {
    if peers.is_empty() {
        return Ok(());
    }
    let hw = ferrogpt_gemm::hw::detect();
    let gpus: Vec<String> = hw.cuda.devices.iter().map(|d| d.name.clone()).collect();
    let run = RunShape {
        device: &a.device.device,
        dtype: &a.device.dtype,
        family: model.family.name(),
        batch_size: cfg.batch_size,
        seq_len: cfg.seq_len,
        n_layer: model.n_layer,
        n_head: model.n_head,
        n_embd: model.n_embd,
        vocab: (model.vocab_size, model.padded_vocab_size),
        cpu_model: &hw.model,
        gpus: &gpus,
    };
    for p in peers {
        p.run
            .check(&run)
            .map_err(|e| format!("{} {}: {e}", p.flag, p.file))?;
    }
    Ok(())
}

/// `--save DIR`: the rows as a result file for `ferrogpt report`.
fn save(
    a: &BenchTrainArgs,
    cfg: &ferrogpt_train::config::TrainConfig,
    rows: &[Row],
    peers: Vec<ferrogpt_report::schema::TrainRow>,
) -> Result<(), String> {
    use ferrogpt_report::schema::{Phases, TrainFigures, TrainRow};
    let figures = TrainFigures {
        preset: a.preset.clone(),
        device: a.device.device.clone(),
        dtype: a.device.dtype.clone(),
        batch_size: cfg.batch_size,
        seq_len: cfg.seq_len,
        steps: a.steps,
        warmup: a.warmup,
        rows: rows
            .iter()
            .map(|r| TrainRow {
                engine: r.level.clone(),
                peer: false,
                threads: r.threads,
                step_s_median: r.step_s_median,
                step_s_min: r.step_s_min,
                tokens_per_sec: r.tokens_per_sec,
                model_gflops: r.model_gflops,
                mfu: r.mfu,
                peak_tflops: r.peak_tflops,
                final_loss: f64::from(r.final_loss),
                phases_median: Some(Phases {
                    forward_backward: r.phases_median.forward_backward,
                    norm: r.phases_median.norm,
                    update: r.phases_median.update,
                }),
                peer_source: None,
            })
            .chain(peers)
            .collect(),
    };
    a.save.save(crate::cmd_report::train(figures), None)
}

/// The median of `v` (the upper one of an even count); `v` is sorted in place.
fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}
