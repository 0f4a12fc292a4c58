//! `ferrogpt train`: a preset, then a TOML file, then flags make the run's config; a new run
//! (optionally from `--init` weights) or `--resume` of a checkpoint; a progress bar on a
//! terminal, plain lines otherwise; Ctrl-C saves and exits; a sample at the end.

use crate::common::{
    self, engine_factory, resolve_data, Compute, Device, DeviceArgs, RecomputeArg,
    SHAKESPEARE_SHA256,
};
use ferrogpt_model::config::{Family, Position};
use ferrogpt_model::generate::Sampling;
use ferrogpt_train::checkpoint;
use ferrogpt_train::config::{
    preset, preset_or_err, OptimizerKind, Schedule, TrainConfig, PRESETS,
};
use ferrogpt_train::data::{
    is_sharded, load_dataset, load_dataset_checked, load_sharded, load_text, shard_patterns,
    DataRole, DataSource,
};
use ferrogpt_train::dist::{Collective, Launch, Watchdog};
use ferrogpt_train::tokenizer::{hf, Tokenizer};
use ferrogpt_train::trainer::{InitWeights, Outcome, StepMetrics, Trainer};
use ferrogpt_train::{EngineError, EngineFactory};
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// `help` for a flag whose default comes from the preset: the value of each preset for
/// `field` (one value when they agree), read from the presets themselves.
fn by_preset(what: &str, field: &str) -> String {
    let values: Vec<(&str, String)> = PRESETS
        .iter()
        .map(|&p| {
            let cfg = serde_json::to_value(preset(p).expect("listed presets exist"))
                .expect("the config is plain data");
            let v = match &cfg[field] {
                serde_json::Value::String(s) => s.clone(),
                v => v.to_string(),
            };
            (p, v)
        })
        .collect();
    if values.iter().all(|(_, v)| *v == values[0].1) {
        format!("{what} [default: {}]", values[0].1)
    } else {
        let list: Vec<String> = values.iter().map(|(p, v)| format!("{p} {v}")).collect();
        format!("{what} [default: {}]", list.join(", "))
    }
}

#[derive(Clone, Debug, clap::Args)]
pub struct TrainArgs {
    // Data.
    /// Training data: UTF-8 text (split 90/10 unless --val-data) or an llm.c token file
    /// [default: data/tinyshakespeare.txt, written from the copy inside ferrogpt if missing;
    /// on --resume, the run's own data files]
    #[arg(long, help_heading = "Data")]
    data: Option<PathBuf>,
    /// Validation data, text or token file [default: the last 10% of text --data; none for a
    /// token file; on --resume, the run's own]
    #[arg(long, help_heading = "Data")]
    val_data: Option<PathBuf>,
    #[arg(long, help_heading = "Data", help = by_preset("char, gpt2, or the path of a tokenizer.json (or of vocab.json with merges.txt beside it, or of a directory holding either)", "tokenizer"))]
    tokenizer: Option<String>,
    /// Consecutive windows (llm.c's loader) instead of random ones [default: off]
    #[arg(long, help_heading = "Data")]
    sequential: bool,
    #[arg(long, help_heading = "Data", help = by_preset("Sequences per micro-batch (B)", "batch_size"))]
    batch_size: Option<usize>,
    #[arg(long, help_heading = "Data", help = by_preset("Tokens per sequence (T), at most --block-size", "seq_len"))]
    seq_len: Option<usize>,
    #[arg(long, help_heading = "Data", help = by_preset("Micro-batches per optimizer step", "grad_accum"))]
    grad_accum: Option<usize>,

    // Model.
    #[arg(long, help_heading = "Model", help = by_preset("Transformer blocks", "n_layer"))]
    n_layer: Option<usize>,
    #[arg(long, help_heading = "Model", help = by_preset("Attention heads per block", "n_head"))]
    n_head: Option<usize>,
    #[arg(long, help_heading = "Model", help = by_preset("Channels (embedding width)", "n_embd"))]
    n_embd: Option<usize>,
    #[arg(long, help_heading = "Model", help = by_preset("Longest context the model reads", "block_size"))]
    block_size: Option<usize>,
    #[arg(long, help_heading = "Model", help = by_preset("Pad the vocabulary to a multiple of this", "vocab_multiple"))]
    vocab_multiple: Option<usize>,
    #[arg(long, allow_negative_numbers = true, help_heading = "Model", help = by_preset("Dropout probability while training", "dropout"))]
    dropout: Option<f64>,
    /// Model family: gpt2 (LayerNorm, GELU, biases, tied head) or llama (RMSNorm, SwiGLU,
    /// rotary positions, grouped-query attention, no biases) [default: by preset]
    #[arg(long, help_heading = "Model")]
    family: Option<String>,
    /// Positions: learned (GPT-2's table) or rope (rotary); llama is always rope
    /// [default: by preset]
    #[arg(long, help_heading = "Model")]
    pos: Option<String>,
    #[arg(long, help_heading = "Model", help = by_preset("RoPE's base θ", "rope_theta"))]
    rope_theta: Option<f64>,
    /// Key/value heads of grouped-query attention (llama; must divide --n-head)
    /// [default: by preset; 0 = --n-head]
    #[arg(long, help_heading = "Model")]
    n_kv_head: Option<usize>,
    /// The MLP's hidden width [default: by preset; 0 = 4 × --n-embd]
    #[arg(long, help_heading = "Model")]
    ffn_hidden: Option<usize>,
    /// An LM head of its own instead of the token embedding's weights (llama only)
    /// [default: by preset]
    #[arg(long, help_heading = "Model")]
    untied: bool,
    /// Start from these weights: one of our checkpoints or a Hugging Face GPT-2 directory
    /// (its tokenizer too, if it has one) [default: GPT-2 initialisation from --seed]
    #[arg(long, conflicts_with = "resume", help_heading = "Model")]
    init: Option<PathBuf>,

    // Optimizer.
    /// adamw or sgd [default: adamw]
    #[arg(long, help_heading = "Optimizer")]
    optimizer: Option<String>,
    #[arg(long, allow_negative_numbers = true, help_heading = "Optimizer", help = by_preset("Decoupled weight decay (AdamW) or L2 (SGD), on matrices only", "weight_decay"))]
    weight_decay: Option<f64>,
    #[arg(long, allow_negative_numbers = true, help_heading = "Optimizer", help = by_preset("AdamW beta1", "beta1"))]
    beta1: Option<f64>,
    #[arg(long, allow_negative_numbers = true, help_heading = "Optimizer", help = by_preset("AdamW beta2", "beta2"))]
    beta2: Option<f64>,
    #[arg(long, allow_negative_numbers = true, help_heading = "Optimizer", help = by_preset("AdamW epsilon", "eps"))]
    eps: Option<f64>,
    #[arg(long, allow_negative_numbers = true, help_heading = "Optimizer", help = by_preset("SGD momentum", "momentum"))]
    momentum: Option<f64>,
    #[arg(long, allow_negative_numbers = true, help_heading = "Optimizer", help = by_preset("Clip gradients to this global norm (0 = off)", "grad_clip"))]
    grad_clip: Option<f64>,
    /// ZeRO stage of a data-parallel run: 0, or 1 (optimizer state and update sharded across
    /// the ranks) [default: 0]
    #[arg(long, help_heading = "Optimizer")]
    zero: Option<u8>,

    // Schedule.
    #[arg(long, help_heading = "Schedule", help = by_preset("The run's total number of optimizer steps", "steps"))]
    steps: Option<usize>,
    #[arg(long, allow_negative_numbers = true, help_heading = "Schedule", help = by_preset("Peak learning rate", "lr"))]
    lr: Option<f64>,
    #[arg(long, allow_negative_numbers = true, help_heading = "Schedule", help = by_preset("Learning rate at the end of the decay", "min_lr"))]
    min_lr: Option<f64>,
    #[arg(long, help_heading = "Schedule", help = by_preset("Decay after warmup: constant, linear or cosine", "lr_schedule"))]
    lr_schedule: Option<String>,
    #[arg(long, help_heading = "Schedule", help = by_preset("Steps of linear warmup from 0 to --lr", "warmup"))]
    warmup: Option<usize>,

    // Run.
    /// Starting configuration: shakespeare-cpu, shakespeare-char or gpt2-124m
    #[arg(long, default_value = "shakespeare-cpu", help_heading = "Run")]
    preset: String,
    /// A TOML file whose fields (those of the run config, e.g. `lr = 3e-4`) override the
    /// preset [default: none]
    #[arg(long, help_heading = "Run")]
    config: Option<PathBuf>,
    /// Run directory [default: runs/<preset>, or the next free runs/<preset>-N]
    #[arg(long, help_heading = "Run")]
    out: Option<PathBuf>,
    /// Continue the run checkpointed in this directory, on its own data, up to --steps or its
    /// own total [default: a new run]
    #[arg(long, help_heading = "Run")]
    resume: Option<PathBuf>,
    /// Stop (and save) after this many seconds of this session [default: no limit]
    #[arg(long, allow_negative_numbers = true, help_heading = "Run")]
    max_seconds: Option<f64>,
    #[arg(long, help_heading = "Run", help = by_preset("Evaluate and checkpoint every N steps (0 = only at the end)", "eval_interval"))]
    eval_interval: Option<usize>,
    #[arg(long, help_heading = "Run", help = by_preset("Validation batches per evaluation", "eval_batches"))]
    eval_batches: Option<usize>,
    #[arg(long, help_heading = "Run", help = by_preset("Seed of the initialisation, the batches and dropout", "seed"))]
    seed: Option<u64>,
    #[arg(long, help_heading = "Run", help = by_preset("Tokens to sample at the end (0 = none)", "sample_tokens"))]
    sample_tokens: Option<usize>,
    /// Seconds a data-parallel rank waits for the others in a step's collective before it
    /// gives up with one line (a rank died or hangs)
    #[arg(long, default_value_t = 60.0, help_heading = "Run")]
    dist_timeout: f64,
    /// A multiple-choice eval file in llm.c's format (its HellaSwag file), scored at every
    /// evaluation [default: none]
    #[arg(long, help_heading = "Run")]
    eval_mc: Option<String>,
    /// Print a plain progress line every N steps when not on a terminal
    #[arg(long, default_value_t = 100, help_heading = "Run")]
    log_interval: usize,
    /// Start N local data-parallel ranks (CPU: through mpirun; needs a build with the `mpi`
    /// feature), each with cores/N threads unless --threads says [default: one rank, or the
    /// ranks an MPI launcher started]
    #[arg(long, help_heading = "Run")]
    nproc_per_node: Option<usize>,

    #[command(flatten, next_help_heading = "Device")]
    compute: Compute,
    #[command(flatten, next_help_heading = "Device")]
    device: DeviceArgs,
    #[command(flatten, next_help_heading = "Device")]
    recompute: RecomputeArg,
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
    set!(
        sample_tokens,
        tokenizer,
        zero,
        rope_theta,
        n_kv_head,
        ffn_hidden
    );
    if let Some(f) = &a.family {
        cfg.family = match f.as_str() {
            "gpt2" => Family::Gpt2,
            "llama" => Family::Llama,
            _ => return Err(format!("--family must be gpt2 or llama, got '{f}'")),
        };
        if cfg.family == Family::Llama && a.pos.is_none() {
            cfg.pos = Position::Rope;
        }
    }
    if let Some(p) = &a.pos {
        cfg.pos = match p.as_str() {
            "learned" => Position::Learned,
            "rope" => Position::Rope,
            _ => return Err(format!("--pos must be learned or rope, got '{p}'")),
        };
    }
    if a.untied {
        cfg.tie_embeddings = false;
    }
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
    if a.eval_mc.is_some() {
        cfg.eval_mc = a.eval_mc.clone();
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

/// The tokenizer that `spec` names: char (built from the training text, and the validation
/// text if given), gpt2, or a path.
fn tokenizer_from_spec(
    spec: &str,
    data: &Path,
    val_data: Option<&Path>,
) -> Result<Tokenizer, String> {
    match spec {
        "gpt2" => Tokenizer::gpt2().map_err(|e| e.to_string()),
        "char" if is_sharded(&data.to_string_lossy()) => Err(
            "--data names token shards: their ids need the tokenizer that wrote them (--tokenizer gpt2 or PATH), not a char vocabulary built from text"
                .into(),
        ),
        "char" => {
            let mut corpus = load_text(data).map_err(|e| e.to_string())?;
            if let Some(v) = val_data {
                corpus.push_str(&load_text(v).map_err(|e| e.to_string())?);
            }
            Ok(Tokenizer::from_corpus_char(&corpus))
        }
        path => Tokenizer::load(Path::new(path)).map_err(|e| format!("--tokenizer: {e}")),
    }
}

/// Where a recorded data file is now: its path if it is there, the bundled Tiny Shakespeare if
/// that is what it was, otherwise an error that says what to pass.
fn locate(source: &DataSource, flag: &str) -> Result<PathBuf, String> {
    if source.path.is_file() {
        return Ok(source.path.clone());
    }
    if source.sha256 == SHAKESPEARE_SHA256 {
        return resolve_data(None);
    }
    Err(format!(
        "this run's data file {} ({} bytes) is gone; pass {flag} PATH to a copy (checked against its SHA-256)",
        source.path.display(),
        source.bytes
    ))
}

/// A resumed run: the checkpoint's own data files unless --data / --val-data say otherwise
/// (checked against the recorded SHA-256 either way).
fn resume(
    a: &TrainArgs,
    dir: &Path,
    make_engine: &EngineFactory,
    comm: Rc<dyn Collective>,
) -> Result<Trainer, String> {
    // Rank 0 alone finishes a save interrupted while moving its files; the others wait.
    if comm.rank() == 0 {
        checkpoint::finish_pending(dir).map_err(|e| e.to_string())?;
    }
    comm.all_reduce_sum_f64(&mut [0.0])
        .map_err(|e| e.to_string())?;
    let state = checkpoint::read_state(dir).map_err(|e| e.to_string())?;
    checkpoint::verify(dir, &["config.json", hf::FILES[0], hf::FILES[1]])
        .map_err(|e| e.to_string())?;
    let model_cfg = ferrogpt_model::checkpoint::load_config(dir, state.config.vocab_multiple)
        .map_err(|e| e.to_string())?;
    let tokenizer =
        checkpoint::load_tokenizer(dir, model_cfg.vocab_size).map_err(|e| e.to_string())?;
    let recorded = |role| state.data.iter().find(|d| d.role == role);
    let sharded = state.data.iter().any(|d| d.sha256.starts_with("ends:"))
        || a.data
            .as_deref()
            .is_some_and(|d| is_sharded(&d.to_string_lossy()));
    let (data, data_path) = if sharded {
        // The files as given, or as recorded (each still where it was).
        let files = |flag: &str,
                     given: &Option<PathBuf>,
                     role|
         -> Result<Option<Vec<String>>, String> {
            if let Some(p) = given {
                return Ok(Some(shard_patterns(&p.to_string_lossy())));
            }
            let rec: Vec<&DataSource> = state.data.iter().filter(|d| d.role == role).collect();
            if rec.is_empty() {
                return Ok(None);
            }
            rec.iter()
                .map(|r| match r.path.is_file() {
                    true => Ok(r.path.to_string_lossy().into_owned()),
                    false => Err(format!(
                        "this run's shard {} ({} bytes) is gone; pass {flag} with the shards' new place (each is checked against the run's record)",
                        r.path.display(),
                        r.bytes
                    )),
                })
                .collect::<Result<Vec<_>, _>>()
                .map(Some)
        };
        let train = files("--data", &a.data, DataRole::Train)?
            .ok_or("this run recorded no training shards; pass --data")?;
        let val = files("--val-data", &a.val_data, DataRole::Val)?;
        let data = load_sharded(&train, val.as_deref(), &state.data).map_err(|e| e.to_string())?;
        (data, PathBuf::from(train.join(",")))
    } else {
        let data_path = match (&a.data, recorded(DataRole::Train)) {
            (Some(p), _) => p.clone(),
            (None, Some(r)) => locate(r, "--data")?,
            // A checkpoint from before data files were recorded.
            (None, None) => resolve_data(None)?,
        };
        let val_path = match (&a.val_data, recorded(DataRole::Val)) {
            (Some(p), _) => Some(p.clone()),
            (None, Some(r)) => Some(locate(r, "--val-data")?),
            (None, None) => None,
        };
        let data = load_dataset_checked(&data_path, val_path.as_deref(), &tokenizer, &state.data)
            .map_err(|e| e.to_string())?;
        (data, data_path)
    };
    let ignored = ignored_on_resume(a);
    if !ignored.is_empty() && Launch::from_env().map(|l| l.local_rank()).unwrap_or(0) == 0 {
        eprintln!(
            "note: --resume continues the run's own configuration (its state.json); ignored: {}",
            ignored.join(" ")
        );
    }
    let t = Trainer::resume_on(dir, data, make_engine, a.steps, comm).map_err(|e| e.to_string())?;
    if t.rank_and_world().0 == 0 {
        eprintln!(
            "resuming {} at step {} of {} on {}{} (data: {})",
            dir.display(),
            t.step,
            t.cfg.steps,
            t.engine.describe(),
            ranks_note(&t),
            data_path.display()
        );
    }
    Ok(t)
}

/// The flags given that a resumed run does not take (its configuration is its own).
fn ignored_on_resume(a: &TrainArgs) -> Vec<&'static str> {
    let mut v = Vec::new();
    macro_rules! given {
        ($($f:ident => $flag:literal),* $(,)?) => { $( if a.$f.is_some() { v.push($flag); } )* };
    }
    given!(
        config => "--config", tokenizer => "--tokenizer", batch_size => "--batch-size",
        seq_len => "--seq-len", grad_accum => "--grad-accum", lr => "--lr", min_lr => "--min-lr",
        lr_schedule => "--lr-schedule", warmup => "--warmup", optimizer => "--optimizer",
        weight_decay => "--weight-decay", beta1 => "--beta1", beta2 => "--beta2", eps => "--eps",
        momentum => "--momentum", grad_clip => "--grad-clip", dropout => "--dropout",
        eval_interval => "--eval-interval", eval_batches => "--eval-batches", seed => "--seed",
        n_layer => "--n-layer", n_head => "--n-head", n_embd => "--n-embd", family => "--family",
        pos => "--pos", rope_theta => "--rope-theta", n_kv_head => "--n-kv-head",
        ffn_hidden => "--ffn-hidden",
        block_size => "--block-size", vocab_multiple => "--vocab-multiple", out => "--out",
        sample_tokens => "--sample-tokens", zero => "--zero", eval_mc => "--eval-mc",
    );
    if a.sequential {
        v.push("--sequential");
    }
    if a.untied {
        v.push("--untied");
    }
    v
}

/// A new run, from scratch or from `--init` weights.
fn start(
    a: &TrainArgs,
    make_engine: &EngineFactory,
    comm: Rc<dyn Collective>,
) -> Result<Trainer, String> {
    let mut cfg = build_config(a)?;
    let data_path = resolve_data(a.data.as_deref())?;
    let val_path = a.val_data.as_deref();
    let (tokenizer, init) = match &a.init {
        Some(dir) => {
            let loaded =
                checkpoint::load_model(dir, cfg.vocab_multiple).map_err(|e| e.to_string())?;
            let m = &loaded.model.config;
            cfg.take_model(m);
            // The directory's tokenizer, unless --tokenizer names one for a model without.
            let tokenizer = match (&a.tokenizer, &loaded.tokenizer) {
                (Some(spec), _) if !hf::has_tokenizer(dir) => {
                    let t = tokenizer_from_spec(spec, &data_path, val_path)?;
                    if t.vocab_size() > m.vocab_size {
                        return Err(format!(
                            "--tokenizer {spec} has {} tokens, more than the {} of {}",
                            t.vocab_size(),
                            m.vocab_size,
                            dir.display()
                        ));
                    }
                    t
                }
                (Some(_), t) => {
                    return Err(format!(
                        "{} has its own tokenizer ({}); --tokenizer applies only to a model directory without one",
                        dir.display(),
                        t.name()
                    ))
                }
                (None, t) => t.clone(),
            };
            cfg.tokenizer = match &a.tokenizer {
                Some(spec) => spec.clone(),
                None => tokenizer.name().into(),
            };
            eprintln!(
                "{}initialising from {} ({} with {} layers, {} heads, {} channels, vocab {}, {} tokenizer)",
                rank_prefix(),
                dir.display(),
                m.family.name(),
                m.n_layer,
                m.n_head,
                m.n_embd,
                m.vocab_size,
                tokenizer.name()
            );
            // The model keeps its vocabulary even where the tokenizer has fewer ids.
            let tokenizer = match tokenizer {
                Tokenizer::IdsOnly { .. } => Tokenizer::IdsOnly {
                    vocab_size: m.vocab_size,
                },
                t => t,
            };
            let init = InitWeights {
                params: loaded.params,
                vocab_size: m.vocab_size,
            };
            (tokenizer, Some(init))
        }
        None => (
            tokenizer_from_spec(&cfg.tokenizer, &data_path, val_path)?,
            None,
        ),
    };
    let data = match a.data.as_deref().map(|d| d.to_string_lossy().into_owned()) {
        Some(d) if is_sharded(&d) => {
            let val = val_path.map(|v| shard_patterns(&v.to_string_lossy()));
            load_sharded(&shard_patterns(&d), val.as_deref(), &[]).map_err(|e| e.to_string())?
        }
        _ => load_dataset(&data_path, val_path, &tokenizer).map_err(|e| e.to_string())?,
    };
    let out = a.out.clone().unwrap_or_else(|| default_out(&a.preset));
    let t = Trainer::new_on(cfg, tokenizer, data, make_engine, &out, init, comm)
        .map_err(|e| e.to_string())?;
    if t.rank_and_world().0 != 0 {
        return Ok(t);
    }
    let engine = format!("{}{}", t.engine.describe(), ranks_note(&t));
    eprintln!(
        "training {} parameters ({} with {} layers, {} heads, {} channels, vocab {}) for {} steps of {}x{} tokens on {engine}; run directory {}",
        t.model.config.num_params(),
        t.model.config.family.name(),
        t.cfg.n_layer,
        t.cfg.n_head,
        t.cfg.n_embd,
        t.model.config.vocab_size,
        t.cfg.steps,
        t.cfg.batch_size,
        t.cfg.seq_len,
        out.display()
    );
    Ok(t)
}

/// ", 2 ranks (MPI ...), global batch 2 x 12 x 1" for a data-parallel run, else "".
fn ranks_note(t: &Trainer) -> String {
    let (_, world) = t.rank_and_world();
    if world == 1 {
        return String::new();
    }
    let zero = if t.cfg.zero == 1 {
        // AdamW keeps two f32 moments per parameter, SGD one.
        let moments = if t.cfg.optimizer == OptimizerKind::AdamW {
            2
        } else {
            1
        };
        let whole = (moments * 4 * t.model.layout.total) as f64 / 1e6;
        format!(
            "; ZeRO-1: optimizer state {:.1} MB per rank instead of {whole:.1} MB",
            whole / world as f64
        )
    } else {
        String::new()
    };
    format!(
        " x {world} ranks ({}); global batch {world} ranks x {} x {} grad_accum{zero}",
        t.describe_ranks(),
        t.cfg.batch_size,
        t.cfg.grad_accum
    )
}

/// "" on one rank or rank 0; "rank N: " otherwise (the launcher's rank, from the environment).
fn rank_prefix() -> String {
    let rank = ["OMPI_COMM_WORLD_RANK", "PMI_RANK", "RANK"]
        .iter()
        .find_map(|k| std::env::var(k).ok());
    match rank.ok_or(()) {
        Ok(r) if r != "0" => format!("rank {r}: "),
        _ => String::new(),
    }
}

pub fn run(mut a: TrainArgs) -> Result<(), String> {
    let mut launch = Launch::from_env().map_err(|e| e.to_string())?;
    let (device, _) = a.device.parse()?;
    if let Some(n) = a.nproc_per_node {
        if launch != Launch::Single {
            return Err("--nproc-per-node: this process was already started by a launcher (MPI or torchrun's variables); give one or the other".into());
        }
        return match device {
            Device::Cpu => crate::launch::local_ranks(n, a.compute.threads),
            Device::Cuda(_) if a.device.device != "cuda" => Err(format!(
                "--nproc-per-node with --device {}: give --device cuda (rank i takes GPU i)",
                a.device.device
            )),
            Device::Cuda(_) => crate::launch::local_gpu_ranks(n),
        };
    }
    // torchrun's variables for one rank on the CPU: nothing to connect.
    if matches!(&launch, Launch::Env(e) if e.world == 1) && device == Device::Cpu {
        launch = Launch::Single;
    }
    // Each rank of a node takes its own GPU: `--device cuda` means cuda:LOCAL_RANK.
    if device == Device::Cuda(0) && a.device.device == "cuda" {
        a.device.device = format!("cuda:{}", launch.local_rank());
    }
    let comm: Rc<dyn Collective> = match (&launch, a.device.parse()?.0) {
        (Launch::Env(ranks), Device::Cuda(ordinal)) => Rc::new(
            ferrogpt_gpu::nccl::NcclHost::connect(ranks, ordinal).map_err(|e| e.to_string())?,
        ),
        _ => launch.connect().map_err(|e| e.to_string())?,
    };
    match train(a, comm.clone()) {
        Ok(()) => Ok(()),
        // A rank that fails must not wait for the others in MPI's shutdown (they may be in a
        // collective it will never join): it says why and ends the run everywhere.
        Err(e) if comm.distributed() => {
            eprintln!("ferrogpt: error: {}{e}", rank_prefix());
            comm.abort(1)
        }
        Err(e) => Err(e),
    }
}

fn train(a: TrainArgs, comm: Rc<dyn Collective>) -> Result<(), String> {
    if !(a.dist_timeout.is_finite() && a.dist_timeout > 0.0) {
        return Err(format!(
            "--dist-timeout must be positive, got {}",
            a.dist_timeout
        ));
    }
    let level = a.compute.setup()?;
    let make_engine = engine_factory(level, &a.device, a.recompute.recompute)?;
    let mut trainer = match &a.resume {
        Some(dir) => resume(&a, dir, &*make_engine, comm)?,
        None => start(&a, &*make_engine, comm)?,
    };
    let (rank, _) = trainer.rank_and_world();
    let lead = rank == 0;
    let timeout = std::time::Duration::from_secs_f64(a.dist_timeout);
    trainer.watch_collectives(Watchdog::new(timeout, move |what| {
        eprintln!(
            "ferrogpt: error: rank {rank}: no answer from the other ranks for {} s while {what} (did a rank die?); stopping",
            timeout.as_secs_f64()
        );
        exit_now(1);
    }));
    if !trainer.has_val() && lead {
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
    // SIGUSR1, SIGTERM and the death of `--nproc-per-node`'s launcher ask the same; a rank
    // still running twice the collectives' timeout after its launcher died ends itself.
    crate::launch::stop_requests(&stop, rank, 2 * timeout);
    let outcome = train_with_progress(&mut trainer, a.max_seconds, &stop, a.log_interval, !lead)?;
    if !lead {
        return Ok(());
    }
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
        // The run is saved: a sample that fails costs a warning, not the exit status.
        if let Err(e) = sample_after_training(&mut trainer) {
            eprintln!("warning: no sample: {e}");
        }
    }
    Ok(())
}

fn train_with_progress(
    trainer: &mut Trainer,
    max_seconds: Option<f64>,
    stop: &AtomicBool,
    log_interval: usize,
    quiet: bool,
) -> Result<Outcome, String> {
    let total = trainer.cfg.steps as u64;
    // quiet: a rank other than 0 of a data-parallel run.
    let tty = !quiet && std::io::stderr().is_terminal();
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
        let mut val = last_val.map_or(String::new(), |v| format!(" val {v:.4}"));
        if let Some(acc) = m.mc_acc {
            val += &format!(" acc {:.2}%", 100.0 * acc);
        }
        if let (Some(mem), false) = (&m.engine_memory, quiet) {
            // The first step of the session: how long the user waited, and what it holds.
            let note = format!(
                "first step done {:.1} s after start; {mem}",
                common::since_start()
            );
            match &bar {
                Some(bar) => bar.println(note),
                None => eprintln!("{note}"),
            }
        }
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
            None if quiet => {}
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
    let prompt = match crate::cmd_sample::start_ids(tok) {
        Ok(ids) => ids,
        Err(why) => {
            eprintln!("no sample: {why}");
            return Ok(());
        }
    };
    let mut rng = rand_xoshiro::Xoshiro256PlusPlus::seed_from_u64(trainer.cfg.seed);
    let mut dec = ferrogpt_train::tokenizer::StreamDecoder::new(tok);
    let sampling = Sampling {
        temperature: 0.8,
        top_k: 40,
        top_p: 1.0,
        allowed: Some(tok.vocab_size()),
        stop: tok.eot(),
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

/// Ends the process at once, without exit handlers: MPI's may wait for ranks that never come
/// (the launcher then sees a rank die and ends the job).
fn exit_now(code: i32) -> ! {
    #[cfg(unix)]
    // SAFETY: _exit ends the process; nothing runs after it.
    unsafe {
        libc::_exit(code)
    }
    #[cfg(not(unix))]
    std::process::exit(code)
}
