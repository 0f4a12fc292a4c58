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
use crate::data::DataError;
use crate::data::{hex, BatcherState, DataSource};
use crate::tokenizer::{hf, Tokenizer};
use ferrogpt_core::fsutil::write_atomic;
use ferrogpt_model::{checkpoint as mc, Gpt, ModelError};
use rand_xoshiro::Xoshiro256PlusPlus;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// Why a checkpoint could not be written or read. Each names the file at fault and keeps the
/// error it came from.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    /// The weights or config.json (read or written by [`ferrogpt_model::checkpoint`]).
    #[error(transparent)]
    Model(#[from] ModelError),
    /// The tokenizer files.
    #[error(transparent)]
    Tokenizer(#[from] DataError),
    /// A file or folder could not be read, written, moved or removed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// state.json could not be serialised.
    #[error("{}: {source}", path.display())]
    Serialize {
        /// The state.json being written.
        path: PathBuf,
        /// serde_json's error.
        source: serde_json::Error,
    },
    /// state.json does not parse as a run state.
    #[error("{}: corrupt state ({source})", path.display())]
    CorruptState {
        /// The state.json.
        path: PathBuf,
        /// serde_json's error (line, column, what it expected).
        source: serde_json::Error,
    },
    /// state.json is of another format than [`FORMAT`].
    #[error("{}: format '{found}' is not '{FORMAT}'", path.display())]
    Format {
        /// The state.json.
        path: PathBuf,
        /// Its `format` field.
        found: String,
    },
    /// The directory to load does not exist.
    #[error("{}: no such checkpoint directory", dir.display())]
    NoCheckpoint {
        /// The directory, as given.
        dir: PathBuf,
    },
    /// The directory has no state.json (weights alone, e.g. `best/` or a HF directory).
    #[error("{}: not a resumable checkpoint (no state.json)", dir.display())]
    NotResumable {
        /// The directory, as given.
        dir: PathBuf,
    },
    /// checksums.sha256 has a line that is not `SHA256  NAME` (`line` counts from 1).
    #[error("{}: line {line} is not `SHA256  NAME`: the checksum list is damaged", path.display())]
    ChecksumList {
        /// The checksums.sha256.
        path: PathBuf,
        /// The damaged line, from 1.
        line: usize,
    },
    /// A file to check is not in checksums.sha256.
    #[error("{}: not listed in {MANIFEST}, so it cannot be checked{}", path.display(), hint(*interrupted))]
    Unlisted {
        /// The file.
        path: PathBuf,
        /// A save was interrupted (a `.pending` folder is there), which `--resume` finishes.
        interrupted: bool,
    },
    /// A file checksums.sha256 lists is not there.
    #[error("{}: missing (listed in {MANIFEST}){}", path.display(), hint(*interrupted))]
    Missing {
        /// Where the file should be.
        path: PathBuf,
        /// A save was interrupted (a `.pending` folder is there), which `--resume` finishes.
        interrupted: bool,
    },
    /// A file's SHA-256 is not the one checksums.sha256 records. `interrupted`: a save was
    /// interrupted (a `.pending` folder is there), which `--resume` finishes.
    #[error("{}: damaged: its SHA-256 is {found}, {MANIFEST} records {recorded} (one of the two was changed after the checkpoint was written){}", path.display(), hint(*interrupted))]
    Damaged {
        /// The file.
        path: PathBuf,
        /// Its SHA-256 now, lowercase hex.
        found: String,
        /// The SHA-256 checksums.sha256 records.
        recorded: String,
        /// A save was interrupted (see above).
        interrupted: bool,
    },
    /// The tokenizer has more ids than the model's vocabulary.
    #[error("{}: the tokenizer has {tokenizer} tokens, more than config.json's vocab_size {model}", dir.display())]
    TokenizerVocab {
        /// The checkpoint directory.
        dir: PathBuf,
        /// The tokenizer's ids.
        tokenizer: usize,
        /// config.json's `vocab_size`.
        model: usize,
    },
    /// A safetensors file's step or run id (its metadata; "none" where absent) is not
    /// state.json's: files copied from different runs or steps.
    #[error("{}: mismatched checkpoint: this file is from step {step} of run {run_id}, state.json from step {state_step} of run {state_run_id}", path.display())]
    Mismatched {
        /// The safetensors file.
        path: PathBuf,
        /// Its `ferrogpt_step` metadata, or "none".
        step: String,
        /// Its `ferrogpt_run_id` metadata, or "none".
        run_id: String,
        /// state.json's step.
        state_step: usize,
        /// state.json's run id.
        state_run_id: String,
    },
    /// An optimizer moment of another length than the model's parameters.
    #[error("{}: moment '{name}' has {found} values, the model has {expected} parameters", path.display())]
    MomentLength {
        /// The optimizer.safetensors.
        path: PathBuf,
        /// `"m"` or `"v"`.
        name: &'static str,
        /// Its values.
        found: usize,
        /// The model's parameters.
        expected: usize,
    },
    /// An optimizer moment the run's optimizer needs is not in optimizer.safetensors.
    #[error("{}: moment '{name}' is missing", path.display())]
    MissingMoment {
        /// The optimizer.safetensors.
        path: PathBuf,
        /// `"m"` or `"v"`.
        name: &'static str,
    },
}

/// What a damaged checkpoint's message adds when a save was interrupted.
fn hint(interrupted: bool) -> &'static str {
    if interrupted {
        " (a save was interrupted: `ferrogpt train --resume` finishes it)"
    } else {
        ""
    }
}

/// An io error at `path`, for `map_err`.
fn io(path: &Path) -> impl FnOnce(std::io::Error) -> CheckpointError + '_ {
    move |source| CheckpointError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The small part of the run's state, as `state.json`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RunState {
    /// [`FORMAT`]; loading refuses anything else.
    pub format: String,
    /// Optimizer steps done when the checkpoint was written.
    pub step: usize,
    /// 16 hex digits from the seed and the start time; the safetensors files carry it too, so that
    /// files of different runs are not mixed.
    pub run_id: String,
    /// The run's effective settings.
    pub config: TrainConfig,
    /// Where the in-memory training data's batches stand.
    pub batcher: BatcherState,
    /// The dropout generator.
    pub rng: Xoshiro256PlusPlus,
    /// Optimizer steps taken (AdamW's bias correction).
    pub opt_t: u64,
    /// Wall seconds of training so far, every session's.
    pub elapsed_s: f64,
    /// Training tokens seen so far, on all ranks.
    pub tokens_seen: u64,
    /// The latest validation loss (None: no evaluation yet, or no validation data).
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

/// The `format` of state.json this version writes and reads.
pub const FORMAT: &str = "ferrogpt-run-v1";

/// The large part: weights and optimizer moments.
/// Each is flat, in the model's parameter layout.
pub struct Tensors<'a> {
    /// The weights (`model.layout.total` values).
    pub params: &'a [f32],
    /// AdamW's first moment or SGD's momentum.
    pub m: &'a [f32],
    /// AdamW's second moment; empty for SGD.
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
        std::fs::remove_dir_all(&pending).map_err(io(&pending))?;
    }
    let stage = dir.join(format!(".staging-{}", std::process::id()));
    let r = (|| {
        std::fs::create_dir_all(&stage).map_err(io(&stage))?;
        write_files(&stage, model, tokenizer, state, t)?;
        // The commit point: one rename makes the complete set `.pending`; moving its files
        // into place can then always be finished ([`finish_pending`]), whatever stops it.
        std::fs::rename(&stage, &pending).map_err(io(&pending))?;
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
            std::fs::remove_dir_all(&pending).map_err(io(&pending))?;
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
            let to = dir.join(name);
            std::fs::rename(&from, &to).map_err(io(&to))?;
        }
    }
    sync_dir(dir);
    std::fs::remove_dir_all(&pending).map_err(io(&pending))
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
    let mut f = std::fs::File::open(path).map_err(io(path))?;
    let mut h = sha2::Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        match f.read(&mut buf).map_err(io(path))? {
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
    write_atomic(&path, text.as_bytes()).map_err(io(&path))
}

/// Checks the files `names` of `dir` against its checksums.sha256: each one it lists must be
/// there with that SHA-256. Without a checksums.sha256 (checkpoints of earlier versions,
/// Hugging Face directories) there is nothing to check. Errors name the damaged file:
/// [`CheckpointError::Unlisted`], [`CheckpointError::Missing`], [`CheckpointError::Damaged`]
/// (and [`CheckpointError::ChecksumList`] for a damaged list).
pub fn verify(dir: &Path, names: &[&str]) -> Result<(), CheckpointError> {
    let path = dir.join(MANIFEST);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io(&path)(e)),
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
            None => return Err(CheckpointError::ChecksumList { path, line: i + 1 }),
        }
    }
    let interrupted = dir.join(PENDING).exists();
    for name in names {
        let file = dir.join(name);
        let Some(want) = listed.get(name) else {
            if file.exists() {
                return Err(CheckpointError::Unlisted {
                    path: file,
                    interrupted,
                });
            }
            continue;
        };
        if !file.exists() {
            return Err(CheckpointError::Missing {
                path: file,
                interrupted,
            });
        }
        let got = sha256_file(&file)?;
        if got != *want {
            return Err(CheckpointError::Damaged {
                path: file,
                found: got,
                recorded: want.to_string(),
                interrupted,
            });
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
    let text =
        serde_json::to_string_pretty(state).map_err(|source| CheckpointError::Serialize {
            path: st.clone(),
            source,
        })?;
    write_atomic(&st, text.as_bytes()).map_err(io(&st))?;
    names.push("state.json");
    write_manifest(dir, &names)?;
    Ok(names)
}

fn save_tokenizer(
    dir: &Path,
    tokenizer: &Tokenizer,
    block_size: usize,
) -> Result<Vec<&'static str>, CheckpointError> {
    Ok(hf::save(tokenizer, dir, block_size)?)
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
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    // The old checksums go first: a crash in between leaves files without a list, not files
    // that contradict it.
    match std::fs::remove_file(dir.join(MANIFEST)) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(io(dir)(e)),
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
        return Ok(Tokenizer::load(dir)?);
    }
    // ferrogpt's config.json has padded_vocab_size: its runs always write their tokenizer.
    let ours = std::fs::read_to_string(dir.join("config.json"))
        .is_ok_and(|t| t.contains("\"padded_vocab_size\""));
    if !ours && vocab_size == crate::tokenizer::GPT2_VOCAB_SIZE {
        return Ok(Tokenizer::gpt2()?);
    }
    Ok(Tokenizer::IdsOnly { vocab_size })
}

/// A model with its weights, from one of our checkpoints or a Hugging Face GPT-2 directory
/// (`model.safetensors` + `config.json`, keys with or without the `transformer.` prefix).
pub struct LoadedModel {
    /// The model its config.json (or GGUF header) describes, vocabulary padded.
    pub model: Gpt,
    /// The weights, flat in `model`'s layout.
    pub params: Vec<f32>,
    /// The tokenizer of the directory, or [`Tokenizer::IdsOnly`] where it has none.
    pub tokenizer: Tokenizer,
    /// model.safetensors' metadata (ours: `format`, `ferrogpt_step`, `ferrogpt_run_id`);
    /// `format = gguf` for a GGUF file.
    pub metadata: HashMap<String, String>,
}

/// Loads the model, weights and tokenizer of `dir` (ours or HF's), checked against its
/// checksums.sha256; the vocabulary is padded to `pad_multiple` where config.json does not say.
/// A tokenizer may have fewer ids than the model's vocabulary (a padded embedding table), not
/// more.
///
/// A path ending in `.gguf` is a llama.cpp file ([`ferrogpt_model::gguf::import`]); its
/// tokenizer metadata becomes a Hugging Face byte-level BPE where it is one ("gpt2"), else the
/// model is ids-only.
pub fn load_model(dir: &Path, pad_multiple: usize) -> Result<LoadedModel, CheckpointError> {
    let (loaded, check) = load_model_checking(dir, pad_multiple, false)?;
    check.wait()?;
    Ok(loaded)
}

/// The check of a checkpoint's weights against checksums.sha256, running on a thread of its
/// own ([`load_model_checking`]); a no-op where there is nothing to check (a Hugging Face
/// directory, a GGUF file). Dropping it waits for the thread.
#[derive(Debug)]
pub struct WeightsCheck(Option<std::thread::JoinHandle<Result<(), CheckpointError>>>);

impl WeightsCheck {
    /// Nothing to check.
    pub fn none() -> Self {
        WeightsCheck(None)
    }

    /// Starts checking the files `names` of `dir` against its checksums.sha256 ([`verify`])
    /// on a thread of its own, at the lowest scheduling priority if `background` (see
    /// [`load_model_checking`]).
    pub fn spawn(dir: &Path, names: &[&str], background: bool) -> Self {
        let dir = dir.to_path_buf();
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        WeightsCheck(Some(std::thread::spawn(move || {
            if background {
                lower_this_threads_priority();
            }
            let names: Vec<&str> = names.iter().map(String::as_str).collect();
            verify(&dir, &names)
        })))
    }

    /// The check's failure if it has finished and failed; None while it runs, or once it has
    /// passed. Never blocks.
    pub fn failed(&mut self) -> Option<CheckpointError> {
        if !self.0.as_ref().is_some_and(|h| h.is_finished()) {
            return None;
        }
        self.take_result().err()
    }

    /// Waits for the check and returns its result.
    pub fn wait(mut self) -> Result<(), CheckpointError> {
        self.take_result()
    }

    fn take_result(&mut self) -> Result<(), CheckpointError> {
        match self.0.take() {
            Some(h) => h
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic)),
            None => Ok(()),
        }
    }
}

impl Drop for WeightsCheck {
    fn drop(&mut self) {
        if let Some(h) = self.0.take() {
            let _ = h.join();
        }
    }
}

/// [`load_model`], but the weights' checksum (the largest file: about a third of a second for
/// GPT-2 124M, at the 1.6 GB/s of SHA-256 with the CPU's SHA instructions) is still being
/// taken when this returns: the caller polls or waits on the returned [`WeightsCheck`] and must
/// not trust what it computed from the weights before the check has passed. The small files
/// (config.json, the tokenizer's) are checked before anything is read.
///
/// `background`: the check runs at the lowest scheduling priority (Linux), so that on a
/// machine with few cores the loading and the first computations come first, and the check
/// takes the cores they leave (`sample`: the first token does not wait for it). Otherwise it
/// runs beside the loading at the usual priority.
pub fn load_model_checking(
    dir: &Path,
    pad_multiple: usize,
    background: bool,
) -> Result<(LoadedModel, WeightsCheck), CheckpointError> {
    if dir
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("gguf"))
    {
        return Ok((load_gguf(dir, pad_multiple)?, WeightsCheck::none()));
    }
    if !dir.is_dir() {
        return Err(CheckpointError::NoCheckpoint {
            dir: dir.to_path_buf(),
        });
    }
    verify(dir, &["config.json", hf::FILES[0], hf::FILES[1]])?;
    let cfg = mc::load_config(dir, pad_multiple)?;
    let model = Gpt::new(cfg)?;
    let mut check = WeightsCheck::spawn(dir, &["model.safetensors"], background);
    let loaded = (|| {
        let (params, metadata) = mc::load_weights(&dir.join("model.safetensors"), &model)?;
        let tokenizer = load_tokenizer(dir, model.config.vocab_size)?;
        if tokenizer.vocab_size() > model.config.vocab_size {
            return Err(CheckpointError::TokenizerVocab {
                dir: dir.to_path_buf(),
                tokenizer: tokenizer.vocab_size(),
                model: model.config.vocab_size,
            });
        }
        Ok(LoadedModel {
            model,
            params,
            tokenizer,
            metadata,
        })
    })();
    match loaded {
        Ok(loaded) => Ok((loaded, check)),
        // A damaged file is reported as such before the error it caused while loading.
        Err(e) => Err(check.take_result().err().unwrap_or(e)),
    }
}

/// Gives the calling thread the lowest scheduling priority (nice 19), where the OS allows it.
fn lower_this_threads_priority() {
    #[cfg(target_os = "linux")]
    // SAFETY: plain system calls on the calling thread's own id; a failure changes nothing.
    unsafe {
        let param = libc::sched_param { sched_priority: 0 };
        if libc::sched_setscheduler(0, libc::SCHED_IDLE, &param) != 0 {
            let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
            libc::setpriority(libc::PRIO_PROCESS, tid, 19);
        }
    }
}

/// [`load_model`] for a GGUF file.
fn load_gguf(path: &Path, pad_multiple: usize) -> Result<LoadedModel, CheckpointError> {
    let g = ferrogpt_model::gguf::import(path, pad_multiple)?;
    let vocab_size = g.config.vocab_size;
    let tokenizer = match g.vocab.as_ref().and_then(|v| v.to_tokenizer_json()) {
        Some(json) => {
            let inner: tokenizers::Tokenizer = json.parse().map_err(|e| {
                DataError::Tokenizer(format!(
                    "{}: its tokenizer metadata does not make a tokenizer: {e}",
                    path.display()
                ))
            })?;
            Tokenizer::Hf(crate::tokenizer::HfTokenizer::new(inner, Some(json), None))
        }
        None => Tokenizer::IdsOnly { vocab_size },
    };
    let mut metadata = HashMap::new();
    metadata.insert("format".to_string(), "gguf".to_string());
    Ok(LoadedModel {
        model: Gpt::new(g.config)?,
        params: g.params,
        tokenizer,
        metadata,
    })
}

/// The run's `state.json`, checked against checksums.sha256.
pub fn read_state(dir: &Path) -> Result<RunState, CheckpointError> {
    let st = dir.join("state.json");
    if !st.is_file() {
        return Err(CheckpointError::NotResumable {
            dir: dir.to_path_buf(),
        });
    }
    verify(dir, &["state.json"])?;
    let text = std::fs::read_to_string(&st).map_err(io(&st))?;
    let state: RunState =
        serde_json::from_str(&text).map_err(|source| CheckpointError::CorruptState {
            path: st.clone(),
            source,
        })?;
    if state.format != FORMAT {
        return Err(CheckpointError::Format {
            path: st,
            found: state.format,
        });
    }
    Ok(state)
}

/// Everything a resumed run needs.
pub struct Resumed {
    /// The model, weights and tokenizer.
    pub loaded: LoadedModel,
    /// state.json.
    pub state: RunState,
    /// The optimizer's first moment (AdamW) or momentum (SGD), flat in the layout.
    pub m: Vec<f32>,
    /// AdamW's second moment; empty for SGD.
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
            return Err(CheckpointError::Mismatched {
                path: path.clone(),
                step: step.into(),
                run_id: id.into(),
                state_step: state.step,
                state_run_id: state.run_id,
            });
        }
    }
    let n = loaded.model.layout.total;
    let mut take = |name: &'static str| -> Result<Vec<f32>, CheckpointError> {
        match opt.tensors.remove(name) {
            Some((_, d)) if d.len() == n => Ok(d),
            Some((_, d)) => Err(CheckpointError::MomentLength {
                path: opt_path.clone(),
                name,
                found: d.len(),
                expected: n,
            }),
            None => Err(CheckpointError::MissingMoment {
                path: opt_path.clone(),
                name,
            }),
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

#[cfg(test)]
mod tests {
    use super::*;
    use ferrogpt_model::GptConfig;

    #[test]
    fn load_errors_keep_their_structure() {
        let model = Gpt::new(GptConfig {
            n_layer: 1,
            n_head: 2,
            n_embd: 8,
            block_size: 4,
            vocab_size: 10,
            padded_vocab_size: 16,
            ..GptConfig::default()
        })
        .unwrap();
        let tok = Tokenizer::IdsOnly { vocab_size: 10 };
        let dir = std::env::temp_dir().join(format!("ferrogpt-ckpt-errors-{}", std::process::id()));
        let mut rng = <Xoshiro256PlusPlus as rand::SeedableRng>::seed_from_u64(1);
        let params = model.layout.init(&model.config, &mut rng);
        save_model(&dir, &model, &tok, &params, HashMap::new()).unwrap();
        assert_eq!(load_model(&dir, 1).unwrap().params, params);

        let err = load_model(&dir.join("absent"), 1).err().unwrap();
        assert!(
            matches!(err, CheckpointError::NoCheckpoint { .. }),
            "{err:?}"
        );
        let err = read_state(&dir).unwrap_err();
        assert!(
            matches!(err, CheckpointError::NotResumable { .. }),
            "{err:?}"
        );

        // Weights without one tensor: a damaged file while checksums.sha256 lists it, the
        // model's own error (naming the tensor) once the list is gone.
        let weights = dir.join("model.safetensors");
        let mut file = mc::read_tensors(&weights).unwrap();
        let name = &model.layout.named[1].0;
        file.tensors.remove(name).unwrap();
        let kept: Vec<(String, Vec<usize>, &[f32])> = file
            .tensors
            .iter()
            .map(|(n, (shape, data))| (n.clone(), shape.clone(), data.as_slice()))
            .collect();
        mc::write_tensors(&weights, &kept, HashMap::new()).unwrap();
        let err = load_model(&dir, 1).err().unwrap();
        match &err {
            CheckpointError::Damaged {
                path, interrupted, ..
            } => assert_eq!((path, *interrupted), (&weights, false)),
            other => panic!("expected Damaged, got {other:?}"),
        }
        std::fs::remove_file(dir.join(MANIFEST)).unwrap();
        let err = load_model(&dir, 1).err().unwrap();
        assert!(
            matches!(&err, CheckpointError::Model(ModelError::MissingTensor { name: n, .. }) if n == name),
            "{err:?}"
        );
        assert!(
            err.to_string()
                .contains(&format!("tensor '{name}' is missing")),
            "{err}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
