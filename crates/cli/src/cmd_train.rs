//! `ferrogpt train`: a preset, then a TOML file, then flags make the run's config; a new run
//! (optionally from `--init` weights) or `--resume` of a checkpoint; a progress bar on a
//! terminal, plain lines otherwise; Ctrl-C saves and exits; a sample at the end.

use crate::common::{engine_factory, resolve_data, Compute, DeviceArgs};
use ferrogpt_model::generate::Sampling;
use ferrogpt_train::checkpoint;
use ferrogpt_train::config::{preset_or_err, OptimizerKind, Schedule, TrainConfig};
use ferrogpt_train::data::{load_dataset, load_text};
use ferrogpt_train::tokenizer::Tokenizer;
use ferrogpt_train::trainer::{Outcome, StepMetrics, Trainer};
use ferrogpt_train::EngineError;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

#[derive(Clone, Debug, clap::Args)]
pub struct TrainArgs {
    /// Starting configuration: shakespeare-cpu, shakespeare-char or gpt2-124m.
    #[arg(long, default_value = "shakespeare-cpu")]
    preset: String,
    /// A TOML file whose fields (those of the run config, e.g. `lr = 3e-4`) override the preset.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Training data: UTF-8 text (split 90/10 unless --val-data) or an llm.c token file.
    /// Default: data/tinyshakespeare.txt, downloaded if missing.
    #[arg(long)]
    data: Option<PathBuf>,
    /// Validation data (text or token file).
    #[arg(long)]
    val_data: Option<PathBuf>,
    /// char or gpt2.
    #[arg(long)]
    tokenizer: Option<String>,
    /// Run directory (default: runs/<preset>, or the next free runs/<preset>-N).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Start from these weights: one of our checkpoints or a Hugging Face GPT-2 directory.
    #[arg(long, conflicts_with = "resume")]
    init: Option<PathBuf>,
    /// Continue the run checkpointed in this directory (up to --steps, or its own total).
    #[arg(long)]
    resume: Option<PathBuf>,
    /// The run's total number of optimizer steps.
    #[arg(long)]
    steps: Option<usize>,
    /// Stop (and save) after this many seconds of this session.
    #[arg(long, allow_negative_numbers = true)]
    max_seconds: Option<f64>,
    #[arg(long)]
    batch_size: Option<usize>,
    #[arg(long)]
    seq_len: Option<usize>,
    #[arg(long)]
    grad_accum: Option<usize>,
    #[arg(long, allow_negative_numbers = true)]
    lr: Option<f64>,
    #[arg(long, allow_negative_numbers = true)]
    min_lr: Option<f64>,
    /// constant, linear or cosine.
    #[arg(long)]
    lr_schedule: Option<String>,
    #[arg(long)]
    warmup: Option<usize>,
    /// adamw or sgd.
    #[arg(long)]
    optimizer: Option<String>,
    #[arg(long, allow_negative_numbers = true)]
    weight_decay: Option<f64>,
    #[arg(long, allow_negative_numbers = true)]
    beta1: Option<f64>,
    #[arg(long, allow_negative_numbers = true)]
    beta2: Option<f64>,
    #[arg(long, allow_negative_numbers = true)]
    eps: Option<f64>,
    /// SGD momentum.
    #[arg(long, allow_negative_numbers = true)]
    momentum: Option<f64>,
    /// Clip gradients to this global norm (0 = off).
    #[arg(long, allow_negative_numbers = true)]
    grad_clip: Option<f64>,
    #[arg(long, allow_negative_numbers = true)]
    dropout: Option<f64>,
    /// Consecutive windows (llm.c's loader) instead of random ones.
    #[arg(long)]
    sequential: bool,
    /// Evaluate and checkpoint every N steps (0 = only at the end).
    #[arg(long)]
    eval_interval: Option<usize>,
    #[arg(long)]
    eval_batches: Option<usize>,
    #[arg(long)]
    seed: Option<u64>,
    #[arg(long)]
    n_layer: Option<usize>,
    #[arg(long)]
    n_head: Option<usize>,
    #[arg(long)]
    n_embd: Option<usize>,
    #[arg(long)]
    block_size: Option<usize>,
    /// Pad the vocabulary to a multiple of this.
    #[arg(long)]
    vocab_multiple: Option<usize>,
    /// Characters/tokens to sample at the end (0 = none).
    #[arg(long)]
    sample_tokens: Option<usize>,
    /// Print a plain progress line every N steps when not on a terminal.
    #[arg(long, default_value_t = 100)]
    log_interval: usize,
    #[command(flatten)]
    compute: Compute,
    #[command(flatten)]
    device: DeviceArgs,
}

/// preset → TOML file → flags.
fn build_config(a: &TrainArgs) -> Result<TrainConfig, String> {
    let mut cfg = preset_or_err(&a.preset)?;
    if let Some(path) = &a.config {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let file: toml::Table = text
            .parse()
            .map_err(|e: toml::de::Error| format!("{}: {}", path.display(), e.message()))?;
        let mut merged = toml::Table::try_from(&cfg).map_err(|e| e.to_string())?;
        merged.extend(file);
        cfg = merged
            .try_into()
            .map_err(|e: toml::de::Error| format!("{}: {}", path.display(), e.message()))?;
    }
    macro_rules! set {
        ($($f:ident),*) => { $( if let Some(v) = a.$f.clone() { cfg.$f = v; } )* };
    }
    set!(
        steps,
        batch_size,
        seq_len,
        grad_accum,
        lr,
        min_lr,
        warmup,
        weight_decay,
        beta1,
        beta2,
        eps,
        momentum
    );
    set!(
        grad_clip,
        dropout,
        eval_interval,
        eval_batches,
        seed,
        n_layer,
        n_head,
        n_embd,
        block_size,
        vocab_multiple
    );
    set!(sample_tokens, tokenizer);
    if a.block_size.is_some() && a.seq_len.is_none() {
        cfg.seq_len = cfg.seq_len.min(cfg.block_size);
    }
    if let Some(s) = &a.lr_schedule {
        cfg.lr_schedule = match s.as_str() {
            "constant" => Schedule::Constant,
            "linear" => Schedule::Linear,
            "cosine" => Schedule::Cosine,
            _ => {
                return Err(format!(
                    "--lr-schedule must be constant, linear or cosine, got '{s}'"
                ))
            }
        };
    }
    if let Some(s) = &a.optimizer {
        cfg.optimizer = match s.as_str() {
            "adamw" => OptimizerKind::AdamW,
            "sgd" => OptimizerKind::Sgd,
            _ => return Err(format!("--optimizer must be adamw or sgd, got '{s}'")),
        };
    }
    if a.sequential {
        cfg.sequential = true;
    }
    if let Some(m) = a.max_seconds {
        if !(m.is_finite() && m > 0.0) {
            return Err(format!("--max-seconds must be positive, got {m}"));
        }
    }
    cfg.validate()?;
    Ok(cfg)
}

/// The first free run directory for a preset.
fn default_out(preset: &str) -> PathBuf {
    let base = Path::new("runs");
    let first = base.join(preset);
    if !first.exists() {
        return first;
    }
    (2..)
        .map(|i| base.join(format!("{preset}-{i}")))
        .find(|p| !p.exists())
        .expect("an unused name")
}

pub fn run(a: TrainArgs) -> Result<(), String> {
    let level = a.compute.setup()?;
    let make_engine = engine_factory(level, &a.device)?;
    let mut trainer = if let Some(dir) = &a.resume {
        let tokenizer = checkpoint::load_tokenizer(dir).map_err(|e| e.to_string())?;
        let data_path = resolve_data(a.data.as_deref())?;
        let data = load_dataset(&data_path, a.val_data.as_deref(), &tokenizer)
            .map_err(|e| e.to_string())?;
        let t = Trainer::resume(dir, data, &*make_engine, a.steps).map_err(|e| e.to_string())?;
        eprintln!(
            "resuming {} at step {} of {} on {}",
            dir.display(),
            t.step,
            t.cfg.steps,
            t.engine.describe()
        );
        t
    } else {
        let mut cfg = build_config(&a)?;
        let data_path = resolve_data(a.data.as_deref())?;
        let (tokenizer, init) = match &a.init {
            Some(dir) => {
                let loaded =
                    checkpoint::load_model(dir, cfg.vocab_multiple).map_err(|e| e.to_string())?;
                let m = &loaded.model.config;
                (cfg.n_layer, cfg.n_head, cfg.n_embd, cfg.block_size) =
                    (m.n_layer, m.n_head, m.n_embd, m.block_size);
                cfg.seq_len = cfg.seq_len.min(cfg.block_size);
                cfg.tokenizer = loaded.tokenizer.name().into();
                if m.padded_vocab_size != cfg.model_config(m.vocab_size).padded_vocab_size {
                    // Keep the stored padding: a multiple equal to it reproduces it exactly.
                    cfg.vocab_multiple = m.padded_vocab_size;
                }
                eprintln!(
                    "initialising from {} ({} layers, {} heads, {} channels, {} tokenizer)",
                    dir.display(),
                    m.n_layer,
                    m.n_head,
                    m.n_embd,
                    loaded.tokenizer.name()
                );
                (loaded.tokenizer, Some(loaded.params))
            }
            None if cfg.tokenizer == "gpt2" => {
                (Tokenizer::gpt2().map_err(|e| e.to_string())?, None)
            }
            None => {
                let mut corpus = load_text(&data_path).map_err(|e| e.to_string())?;
                if let Some(v) = &a.val_data {
                    corpus.push_str(&load_text(v).map_err(|e| e.to_string())?);
                }
                (Tokenizer::from_corpus_char(&corpus), None)
            }
        };
        let data = load_dataset(&data_path, a.val_data.as_deref(), &tokenizer)
            .map_err(|e| e.to_string())?;
        let out = a.out.clone().unwrap_or_else(|| default_out(&a.preset));
        let t = Trainer::new(cfg, tokenizer, data, &*make_engine, &out, init)
            .map_err(|e| e.to_string())?;
        let engine = t.engine.describe();
        eprintln!(
            "training {} parameters ({} layers, {} heads, {} channels, vocab {}) for {} steps of {}x{} tokens on {engine}; run directory {}",
            t.model.config.num_params(),
            t.cfg.n_layer,
            t.cfg.n_head,
            t.cfg.n_embd,
            t.model.config.vocab_size,
            t.cfg.steps,
            t.cfg.batch_size,
            t.cfg.seq_len,
            out.display()
        );
        t
    };
    if !trainer.has_val() {
        eprintln!("note: no validation data (a token file is used whole for training; pass --val-data to evaluate)");
    }

    let stop = Arc::new(AtomicBool::new(false));
    {
        let stop = stop.clone();
        // A second Ctrl-C while saving kills the process, as usual.
        let _ = ctrlc::set_handler(move || {
            if stop.swap(true, Ordering::SeqCst) {
                std::process::exit(130);
            }
        });
    }
    let outcome = train_with_progress(&mut trainer, a.max_seconds, &stop, a.log_interval)?;
    let dir = trainer.out_dir.display().to_string();
    match outcome {
        Outcome::Interrupted => {
            eprintln!(
                "stopped at step {}; checkpoint saved in {dir} (continue with --resume {dir})",
                trainer.step
            );
            return Ok(());
        }
        Outcome::Finished => {
            let val = trainer
                .last_val_loss
                .map_or("n/a".to_string(), |v| format!("{v:.4}"));
            eprintln!(
                "done: step {}, val loss {val}; checkpoint in {dir}",
                trainer.step
            );
            if let Some(b) = trainer.best_val_loss {
                eprintln!(
                    "best val loss {b:.4}: its weights are in {dir}/best (sample and eval read it)"
                );
            }
        }
    }
    if trainer.cfg.sample_tokens > 0 {
        sample_after_training(&mut trainer)?;
    }
    Ok(())
}

fn train_with_progress(
    trainer: &mut Trainer,
    max_seconds: Option<f64>,
    stop: &AtomicBool,
    log_interval: usize,
) -> Result<Outcome, String> {
    let total = trainer.cfg.steps as u64;
    let tty = std::io::stderr().is_terminal();
    let bar = if tty {
        let bar = indicatif::ProgressBar::new(total);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{bar:30} {pos}/{len} {msg} [{elapsed_precise} eta {eta}]",
            )
            .expect("static template"),
        );
        bar.set_position(trainer.step as u64);
        Some(bar)
    } else {
        None
    };
    let mut last_val: Option<f64> = trainer.last_val_loss;
    let result = trainer.run(max_seconds, stop, |m: &StepMetrics| {
        if m.val_loss.is_some() {
            last_val = m.val_loss;
        }
        let val = last_val.map_or(String::new(), |v| format!(" val {v:.4}"));
        let line = format!(
            "loss {:.4}{val} lr {:.2e} {:.0} tok/s",
            m.train_loss, m.lr, m.tokens_per_sec
        );
        match &bar {
            Some(bar) => {
                bar.set_position(m.step as u64);
                bar.set_message(line);
                if let Some(v) = m.val_loss {
                    bar.println(format!("step {}: val loss {v:.4}", m.step));
                }
            }
            None => {
                if m.step.is_multiple_of(log_interval.max(1))
                    || m.val_loss.is_some()
                    || m.step as u64 == total
                {
                    eprintln!("step {}/{total} {line} ({:.1}s)", m.step, m.elapsed_s);
                }
            }
        }
    });
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    result.map_err(|e| e.to_string())
}

fn sample_after_training(trainer: &mut Trainer) -> Result<(), String> {
    use rand::SeedableRng;
    let tok = &trainer.tokenizer;
    // Start from the first token of the training text's vocabulary for char models (nanoGPT
    // starts from "\n"), from GPT-2's end-of-text token otherwise.
    let prompt: Vec<u32> = match tok.encode("\n") {
        Ok(ids) if !ids.is_empty() && tok.name() == "char" => ids,
        _ => vec![tok.vocab_size().saturating_sub(1) as u32],
    };
    let mut rng = rand_xoshiro::Xoshiro256PlusPlus::seed_from_u64(trainer.cfg.seed);
    let mut dec = ferrogpt_train::tokenizer::StreamDecoder::new(tok);
    let sampling = Sampling {
        temperature: 0.8,
        top_k: 40,
    };
    println!("--- sample ---");
    let mut out = std::io::stdout();
    ferrogpt_train::engine::generate(
        trainer.engine.as_mut(),
        &trainer.model,
        &prompt,
        trainer.cfg.sample_tokens,
        sampling,
        &mut rng,
        |id| {
            use std::io::Write;
            let s = dec.push(id).map_err(|e| EngineError(e.to_string()))?;
            let _ = out.write_all(s.as_bytes());
            let _ = out.flush();
            Ok(())
        },
    )
    .map_err(|e| e.to_string())?;
    println!("{}", dec.finish());
    Ok(())
}
