//! A run's checkpoint: everything needed to sample from it, evaluate it, or resume it exactly.
//!
//! ```text
//! runs/<name>/
//!   model.safetensors       weights, HF GPT-2 names and layouts (ferrogpt_model::checkpoint)
//!   config.json             HF GPT2Config fields + padded_vocab_size, dropout
//!   tokenizer.json          {"kind": "char", "vocab": ...} or {"kind": "gpt2"}
//!   optimizer.safetensors   flat moments "m" (and "v" for AdamW), parameter layout
//!   state.json              step, run config, data position, RNG states, elapsed time
//!   metrics.jsonl           one line per step (appended by the trainer)
//! ```
//!
//! Every file is written to a temporary name and renamed, `state.json` last. The safetensors
//! files carry the step and a run id in their metadata, and loading refuses a set whose files
//! disagree (a crash between two renames, or files copied from different runs).

use crate::config::TrainConfig;
use crate::data::BatcherState;
use crate::tokenizer::Tokenizer;
use ferrogpt_core::fsutil::write_atomic;
use ferrogpt_model::{checkpoint as mc, Gpt};
use rand_xoshiro::Xoshiro256PlusPlus;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::Path;

/// Why a checkpoint could not be written or read. Messages name the file.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct CheckpointError(pub String);

impl From<ferrogpt_model::ModelError> for CheckpointError {
    fn from(e: ferrogpt_model::ModelError) -> Self {
        CheckpointError(e.to_string())
    }
}

fn err(path: &Path, msg: impl std::fmt::Display) -> CheckpointError {
    CheckpointError(format!("{}: {msg}", path.display()))
}

/// The small part of the run's state, as `state.json`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RunState {
    pub format: String,
    pub step: usize,
    pub run_id: String,
    pub config: TrainConfig,
    pub batcher: BatcherState,
    /// The dropout generator.
    pub rng: Xoshiro256PlusPlus,
    /// Optimizer steps taken (AdamW's bias correction).
    pub opt_t: u64,
    pub elapsed_s: f64,
    pub tokens_seen: u64,
    pub last_val_loss: Option<f64>,
    /// The lowest validation loss so far (its weights are in `best/`); absent in checkpoints
    /// written before it existed.
    #[serde(default)]
    pub best_val_loss: Option<f64>,
}

pub const FORMAT: &str = "ferrogpt-run-v1";

/// The large part: weights and optimizer moments.
pub struct Tensors<'a> {
    pub params: &'a [f32],
    pub m: &'a [f32],
    pub v: &'a [f32],
}

/// Writes the run's checkpoint into `dir` as one set: every file is first written (and synced)
/// into a staging folder inside `dir`, then moved into place with `state.json` last, so a
/// crash while writing (seconds for a large model) leaves the previous checkpoint whole, and
/// the moves themselves take microseconds. A failed write removes the staging folder and
/// leaves the previous checkpoint untouched.
pub fn save(
    dir: &Path,
    model: &Gpt,
    tokenizer: &Tokenizer,
    state: &RunState,
    t: Tensors,
) -> Result<(), CheckpointError> {
    // Staging folders a killed process left behind hold nothing the checkpoint needs.
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_name().to_string_lossy().starts_with(".staging-") {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    }
    let stage = dir.join(format!(".staging-{}", std::process::id()));
    let r = (|| {
        std::fs::create_dir_all(&stage).map_err(|e| err(&stage, e))?;
        write_files(&stage, model, tokenizer, state, t)?;
        // state.json last: a checkpoint is complete once its state names the step.
        for name in [
            "model.safetensors",
            "optimizer.safetensors",
            "config.json",
            "tokenizer.json",
            "state.json",
        ] {
            std::fs::rename(stage.join(name), dir.join(name))
                .map_err(|e| err(&dir.join(name), e))?;
        }
        Ok(())
    })();
    let _ = std::fs::remove_dir_all(&stage);
    r
}

fn write_files(
    dir: &Path,
    model: &Gpt,
    tokenizer: &Tokenizer,
    state: &RunState,
    t: Tensors,
) -> Result<(), CheckpointError> {
    let meta = HashMap::from([
        ("format".to_string(), "pt".to_string()),
        ("ferrogpt_step".to_string(), state.step.to_string()),
        ("ferrogpt_run_id".to_string(), state.run_id.clone()),
    ]);
    mc::save_weights(
        &dir.join("model.safetensors"),
        model,
        t.params,
        meta.clone(),
    )?;
    let mut moments: Vec<(String, Vec<usize>, &[f32])> = vec![("m".into(), vec![t.m.len()], t.m)];
    if !t.v.is_empty() {
        moments.push(("v".into(), vec![t.v.len()], t.v));
    }
    mc::write_tensors(&dir.join("optimizer.safetensors"), &moments, meta)?;
    mc::save_config(dir, &model.config)?;
    let tok = dir.join("tokenizer.json");
    write_atomic(&tok, tokenizer.to_json().to_string().as_bytes()).map_err(|e| err(&tok, e))?;
    let st = dir.join("state.json");
    let text = serde_json::to_string_pretty(state).map_err(|e| err(&st, e))?;
    write_atomic(&st, text.as_bytes()).map_err(|e| err(&st, e))
}

/// The weights alone, as `sample` and `eval` read them (model.safetensors, config.json,
/// tokenizer.json), into `dir` (created): the run's best model so far, in `<run>/best/`.
pub fn save_model(
    dir: &Path,
    model: &Gpt,
    tokenizer: &Tokenizer,
    params: &[f32],
    meta: HashMap<String, String>,
) -> Result<(), CheckpointError> {
    std::fs::create_dir_all(dir).map_err(|e| err(dir, e))?;
    mc::save_weights(&dir.join("model.safetensors"), model, params, meta)?;
    mc::save_config(dir, &model.config)?;
    let tok = dir.join("tokenizer.json");
    write_atomic(&tok, tokenizer.to_json().to_string().as_bytes()).map_err(|e| err(&tok, e))
}

/// Whether `dir` holds a checkpoint (of ours: a state.json).
pub fn exists(dir: &Path) -> bool {
    dir.join("state.json").is_file() || dir.join("model.safetensors").is_file()
}

/// The tokenizer stored in `dir`, or GPT-2's when the directory has none (a Hugging Face
/// GPT-2 directory).
pub fn load_tokenizer(dir: &Path) -> Result<Tokenizer, CheckpointError> {
    let path = dir.join("tokenizer.json");
    if !path.exists() {
        return Tokenizer::gpt2().map_err(|e| CheckpointError(e.to_string()));
    }
    let text = std::fs::read_to_string(&path).map_err(|e| err(&path, e))?;
    let v: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| err(&path, format!("not valid JSON: {e}")))?;
    Tokenizer::from_json(&v).map_err(|e| err(&path, e))
}

/// A model with its weights, from one of our checkpoints or a Hugging Face GPT-2 directory
/// (`model.safetensors` + `config.json`, keys with or without the `transformer.` prefix).
pub struct LoadedModel {
    pub model: Gpt,
    pub params: Vec<f32>,
    pub tokenizer: Tokenizer,
    pub metadata: HashMap<String, String>,
}

/// Loads the model, weights and tokenizer of `dir` (ours or HF's); the vocabulary is padded to
/// `pad_multiple` where config.json does not say.
pub fn load_model(dir: &Path, pad_multiple: usize) -> Result<LoadedModel, CheckpointError> {
    if !dir.is_dir() {
        return Err(err(dir, "no such checkpoint directory"));
    }
    let cfg = mc::load_config(dir, pad_multiple)?;
    let model = Gpt::new(cfg)?;
    let (params, metadata) = mc::load_weights(&dir.join("model.safetensors"), &model)?;
    let tokenizer = load_tokenizer(dir)?;
    if tokenizer.vocab_size() != model.config.vocab_size {
        return Err(err(
            &dir.join("tokenizer.json"),
            format!(
                "tokenizer has {} tokens, config.json says vocab_size {}",
                tokenizer.vocab_size(),
                model.config.vocab_size
            ),
        ));
    }
    Ok(LoadedModel {
        model,
        params,
        tokenizer,
        metadata,
    })
}

/// Everything a resumed run needs.
pub struct Resumed {
    pub loaded: LoadedModel,
    pub state: RunState,
    pub m: Vec<f32>,
    pub v: Vec<f32>,
}

/// Loads a complete checkpoint for resuming, checking that its files belong together.
pub fn load_for_resume(dir: &Path) -> Result<Resumed, CheckpointError> {
    let st = dir.join("state.json");
    if !st.is_file() {
        return Err(err(dir, "not a resumable checkpoint (no state.json)"));
    }
    let text = std::fs::read_to_string(&st).map_err(|e| err(&st, e))?;
    let state: RunState =
        serde_json::from_str(&text).map_err(|e| err(&st, format!("corrupt state ({e})")))?;
    if state.format != FORMAT {
        return Err(err(
            &st,
            format!("format '{}' is not '{FORMAT}'", state.format),
        ));
    }
    let loaded = load_model(dir, state.config.vocab_multiple)?;
    let opt_path = dir.join("optimizer.safetensors");
    let mut opt = mc::read_tensors(&opt_path)?;
    for (path, meta) in [
        (&dir.join("model.safetensors"), &loaded.metadata),
        (&opt_path, &opt.metadata),
    ] {
        let step = meta
            .get("ferrogpt_step")
            .map(String::as_str)
            .unwrap_or("none");
        let id = meta
            .get("ferrogpt_run_id")
            .map(String::as_str)
            .unwrap_or("none");
        if step != state.step.to_string() || id != state.run_id {
            return Err(err(
                path,
                format!(
                    "mismatched checkpoint: this file is from step {step} of run {id}, state.json from step {} of run {}",
                    state.step, state.run_id
                ),
            ));
        }
    }
    let n = loaded.model.layout.total;
    let mut take = |name: &str| -> Result<Vec<f32>, CheckpointError> {
        match opt.tensors.remove(name) {
            Some((_, d)) if d.len() == n => Ok(d),
            Some((_, d)) => Err(err(
                &opt_path,
                format!(
                    "moment '{name}' has {} values, the model has {n} parameters",
                    d.len()
                ),
            )),
            None => Err(err(&opt_path, format!("moment '{name}' is missing"))),
        }
    };
    let m = take("m")?;
    let v = if state.config.optimizer == crate::config::OptimizerKind::AdamW {
        take("v")?
    } else {
        Vec::new()
    };
    Ok(Resumed {
        loaded,
        state,
        m,
        v,
    })
}
