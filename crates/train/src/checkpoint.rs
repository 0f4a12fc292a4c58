//! A run's checkpoint: everything needed to sample from it, evaluate it, or resume it exactly.
//!
//! ```text
//! runs/<name>/
//!   model.safetensors       weights, HF GPT-2 names and layouts (ferrogpt_model::checkpoint)
//!   config.json             HF GPT2Config fields + padded_vocab_size, dropout
//!   tokenizer.json          the tokenizer in Hugging Face's format (absent for a model
//!   tokenizer_config.json   without one; see crate::tokenizer::hf)
//!   optimizer.safetensors   flat moments "m" (and "v" for AdamW), parameter layout
//!   state.json              step, run config, data files (path, size, SHA-256), data
//!                           position, RNG states, elapsed time
//!   checksums.sha256        SHA-256 of each file above, as `sha256sum` writes them
//!   metrics.jsonl           one line per step (appended by the trainer)
//!   best/                   the weights of the best validation loss (model, config,
//!                           tokenizer files, checksums.sha256)
//! ```
//!
//! Every file is written to a staging folder, which one rename then makes `.pending` (the
//! commit point: the new checkpoint is whole on disk), and its files are moved into place,
//! `state.json` and then `checksums.sha256` last; a save interrupted during the moves is
//! finished by the next `--resume` or save. Loading checks each file it reads against `checksums.sha256` (where
//! there is one: checkpoints of earlier versions and Hugging Face directories have none) and
//! names a damaged file. The safetensors files also carry the step and a run id in their
//! metadata, and loading refuses a set whose files disagree (files copied from different runs).

use crate::config::TrainConfig;
use crate::data::{hex, BatcherState, DataSource};
use crate::tokenizer::{hf, Tokenizer};
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
    /// The data files of the run; empty in checkpoints written before they were recorded.
    #[serde(default)]
    pub data: Vec<DataSource>,
    /// Where the loader of sharded training data stands (absent for data in memory).
    #[serde(default)]
    pub shard_loader: Option<crate::shards::ShardLoaderState>,
    /// Ranks of the run (data parallel); 1 in checkpoints written before it was recorded.
    #[serde(default = "one")]
    pub world: usize,
}

fn one() -> usize {
    1
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
    // Staging folders a killed process left behind hold nothing the checkpoint needs, and an
    // interrupted move is superseded by this newer checkpoint.
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_name().to_string_lossy().starts_with(".staging-") {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    }
    let pending = dir.join(PENDING);
    if pending.exists() {
        std::fs::remove_dir_all(&pending).map_err(|e| err(&pending, e))?;
    }
    let stage = dir.join(format!(".staging-{}", std::process::id()));
    let r = (|| {
        std::fs::create_dir_all(&stage).map_err(|e| err(&stage, e))?;
        write_files(&stage, model, tokenizer, state, t)?;
        // The commit point: one rename makes the complete set `.pending`; moving its files
        // into place can then always be finished ([`finish_pending`]), whatever stops it.
        std::fs::rename(&stage, &pending).map_err(|e| err(&pending, e))?;
        finish_pending(dir)
    })();
    let _ = std::fs::remove_dir_all(&stage);
    r
}

/// Where a complete new checkpoint waits while its files move into place.
const PENDING: &str = ".pending";

/// Moves the files of an interrupted save (`.pending`, complete: it became `.pending` only
/// once every file was written) into place, checksums last, and removes it. Nothing to do
/// without one.
pub fn finish_pending(dir: &Path) -> Result<(), CheckpointError> {
    let pending = dir.join(PENDING);
    let list = pending.join(MANIFEST);
    let Ok(text) = std::fs::read_to_string(&list) else {
        // No list: nothing is pending, or every file has moved and only the folder is left.
        if pending.exists() {
            std::fs::remove_dir_all(&pending).map_err(|e| err(&pending, e))?;
        }
        return Ok(());
    };
    let mut names: Vec<&str> = text
        .lines()
        .filter_map(|l| l.split_once("  ").map(|(_, n)| n))
        .filter(|n| *n != "state.json")
        .collect();
    // state.json, then the checksums last: a checkpoint is complete once they name it.
    names.extend(["state.json", MANIFEST]);
    for name in names {
        let from = pending.join(name);
        if from.exists() {
            std::fs::rename(&from, dir.join(name)).map_err(|e| err(&dir.join(name), e))?;
        }
    }
    sync_dir(dir);
    std::fs::remove_dir_all(&pending).map_err(|e| err(&pending, e))
}

/// Flushes a directory's entries (the renames) to disk, where the platform can.
fn sync_dir(dir: &Path) {
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
}

/// The checkpoint's list of SHA-256 sums, in `sha256sum`'s format.
pub const MANIFEST: &str = "checksums.sha256";

/// SHA-256 of the file at `path`, lowercase hex, read in pieces.
pub fn sha256_file(path: &Path) -> Result<String, CheckpointError> {
    use sha2::Digest;
    use std::io::Read;
    let mut f = std::fs::File::open(path).map_err(|e| err(path, e))?;
    let mut h = sha2::Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        match f.read(&mut buf).map_err(|e| err(path, e))? {
            0 => break,
            n => h.update(&buf[..n]),
        }
    }
    Ok(hex(&h.finalize()))
}

/// Writes `dir/checksums.sha256` for the files `names` of `dir`.
fn write_manifest(dir: &Path, names: &[&str]) -> Result<(), CheckpointError> {
    let mut text = String::new();
    for name in names {
        text += &format!("{}  {name}\n", sha256_file(&dir.join(name))?);
    }
    let path = dir.join(MANIFEST);
    write_atomic(&path, text.as_bytes()).map_err(|e| err(&path, e))
}

/// Checks the files `names` of `dir` against its checksums.sha256: each one it lists must be
/// there with that SHA-256. Without a checksums.sha256 (checkpoints of earlier versions,
/// Hugging Face directories) there is nothing to check. Errors name the damaged file.
pub fn verify(dir: &Path, names: &[&str]) -> Result<(), CheckpointError> {
    let path = dir.join(MANIFEST);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(err(&path, e)),
    };
    let mut listed = HashMap::new();
    for (i, line) in text.lines().enumerate() {
        // `sha256sum` writes "SUM  NAME", or "SUM *NAME" in binary mode.
        let entry = line
            .split_once("  ")
            .or_else(|| line.split_once(" *"))
            .filter(|(sum, _)| sum.len() == 64 && sum.bytes().all(|b| b.is_ascii_hexdigit()));
        match entry {
            Some((sum, name)) => {
                listed.insert(name, sum);
            }
            None => {
                return Err(err(
                    &path,
                    format!(
                        "line {} is not `SHA256  NAME`: the checksum list is damaged",
                        i + 1
                    ),
                ))
            }
        }
    }
    let hint = if dir.join(PENDING).exists() {
        " (a save was interrupted: `ferrogpt train --resume` finishes it)"
    } else {
        ""
    };
    for name in names {
        let file = dir.join(name);
        let Some(want) = listed.get(name) else {
            if file.exists() {
                return Err(err(
                    &file,
                    format!("not listed in {MANIFEST}, so it cannot be checked{hint}"),
                ));
            }
            continue;
        };
        if !file.exists() {
            return Err(err(&file, format!("missing (listed in {MANIFEST}){hint}")));
        }
        let got = sha256_file(&file)?;
        if got != *want {
            return Err(err(
                &file,
                format!(
                    "damaged: its SHA-256 is {got}, {MANIFEST} records {want} (one of the two was changed after the checkpoint was written){hint}"
                ),
            ));
        }
    }
    Ok(())
}

/// Writes the checkpoint's files and their checksums into `dir`; returns the names of the
/// files (checksums.sha256 not included).
fn write_files(
    dir: &Path,
    model: &Gpt,
    tokenizer: &Tokenizer,
    state: &RunState,
    t: Tensors,
) -> Result<Vec<&'static str>, CheckpointError> {
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
    let mut names = vec!["model.safetensors", "optimizer.safetensors", "config.json"];
    mc::save_config(dir, &model.config, tokenizer.eot())?;
    names.extend(save_tokenizer(dir, tokenizer, model.config.block_size)?);
    let st = dir.join("state.json");
    let text = serde_json::to_string_pretty(state).map_err(|e| err(&st, e))?;
    write_atomic(&st, text.as_bytes()).map_err(|e| err(&st, e))?;
    names.push("state.json");
    write_manifest(dir, &names)?;
    Ok(names)
}

fn save_tokenizer(
    dir: &Path,
    tokenizer: &Tokenizer,
    block_size: usize,
) -> Result<Vec<&'static str>, CheckpointError> {
    hf::save(tokenizer, dir, block_size).map_err(|e| CheckpointError(e.to_string()))
}

/// The weights alone, as `sample` and `eval` read them (model.safetensors, config.json,
/// the tokenizer files, checksums.sha256), into `dir` (created): the run's best model so far,
/// in `<run>/best/`.
pub fn save_model(
    dir: &Path,
    model: &Gpt,
    tokenizer: &Tokenizer,
    params: &[f32],
    meta: HashMap<String, String>,
) -> Result<(), CheckpointError> {
    std::fs::create_dir_all(dir).map_err(|e| err(dir, e))?;
    // The old checksums go first: a crash in between leaves files without a list, not files
    // that contradict it.
    match std::fs::remove_file(dir.join(MANIFEST)) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(err(dir, e)),
        _ => {}
    }
    mc::save_weights(&dir.join("model.safetensors"), model, params, meta)?;
    mc::save_config(dir, &model.config, tokenizer.eot())?;
    let mut names = vec!["model.safetensors", "config.json"];
    names.extend(save_tokenizer(dir, tokenizer, model.config.block_size)?);
    write_manifest(dir, &names)
}

/// Whether `dir` holds a checkpoint (of ours: a state.json).
pub fn exists(dir: &Path) -> bool {
    dir.join("state.json").is_file() || dir.join("model.safetensors").is_file()
}

/// The tokenizer stored in `dir`. A directory without tokenizer files holds GPT-2's when it
/// is a Hugging Face directory whose vocabulary is GPT-2's size (models saved without their
/// tokenizer), and no tokenizer otherwise ([`Tokenizer::IdsOnly`], `vocab_size` ids).
pub fn load_tokenizer(dir: &Path, vocab_size: usize) -> Result<Tokenizer, CheckpointError> {
    if hf::has_tokenizer(dir) {
        return Tokenizer::load(dir).map_err(|e| CheckpointError(e.to_string()));
    }
    // ferrogpt's config.json has padded_vocab_size: its runs always write their tokenizer.
    let ours = std::fs::read_to_string(dir.join("config.json"))
        .is_ok_and(|t| t.contains("\"padded_vocab_size\""));
    if !ours && vocab_size == crate::tokenizer::GPT2_VOCAB_SIZE {
        return Tokenizer::gpt2().map_err(|e| CheckpointError(e.to_string()));
    }
    Ok(Tokenizer::IdsOnly { vocab_size })
}

/// A model with its weights, from one of our checkpoints or a Hugging Face GPT-2 directory
/// (`model.safetensors` + `config.json`, keys with or without the `transformer.` prefix).
pub struct LoadedModel {
    pub model: Gpt,
    pub params: Vec<f32>,
    pub tokenizer: Tokenizer,
    pub metadata: HashMap<String, String>,
}

/// Loads the model, weights and tokenizer of `dir` (ours or HF's), checked against its
/// checksums.sha256; the vocabulary is padded to `pad_multiple` where config.json does not say.
/// A tokenizer may have fewer ids than the model's vocabulary (a padded embedding table), not
/// more.
pub fn load_model(dir: &Path, pad_multiple: usize) -> Result<LoadedModel, CheckpointError> {
    if !dir.is_dir() {
        return Err(err(dir, "no such checkpoint directory"));
    }
    verify(
        dir,
        &[
            "config.json",
            "model.safetensors",
            hf::FILES[0],
            hf::FILES[1],
        ],
    )?;
    let cfg = mc::load_config(dir, pad_multiple)?;
    let model = Gpt::new(cfg)?;
    let (params, metadata) = mc::load_weights(&dir.join("model.safetensors"), &model)?;
    let tokenizer = load_tokenizer(dir, model.config.vocab_size)?;
    if tokenizer.vocab_size() > model.config.vocab_size {
        return Err(err(
            dir,
            format!(
                "the tokenizer has {} tokens, more than config.json's vocab_size {}",
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

/// The run's `state.json`, checked against checksums.sha256.
pub fn read_state(dir: &Path) -> Result<RunState, CheckpointError> {
    let st = dir.join("state.json");
    if !st.is_file() {
        return Err(err(dir, "not a resumable checkpoint (no state.json)"));
    }
    verify(dir, &["state.json"])?;
    let text = std::fs::read_to_string(&st).map_err(|e| err(&st, e))?;
    let state: RunState =
        serde_json::from_str(&text).map_err(|e| err(&st, format!("corrupt state ({e})")))?;
    if state.format != FORMAT {
        return Err(err(
            &st,
            format!("format '{}' is not '{FORMAT}'", state.format),
        ));
    }
    Ok(state)
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
    let state = read_state(dir)?;
    verify(dir, &["optimizer.safetensors"])?;
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
