//! The training loop.
//!
//! One optimizer step: `grad_accum` micro-batches of (B, T) windows, each a forward and backward
//! (parameter gradients accumulate, each scaled by 1/grad_accum into the mean), clipping to the
//! global norm, an optimizer update at the scheduled learning rate. Every `eval_interval` steps
//! and at the end: the validation loss and a checkpoint. A loss that is not finite stops the run
//! before anything is saved, so the last checkpoint stays the last good one.
//!
//! The arithmetic and the numbers it works on (parameters, gradients, optimizer state) live in
//! an [`Engine`] (the CPU's or a GPU's); the trainer owns the run: data, batches, random
//! streams, schedule, evaluation, checkpoints.
//!
//! Randomness is three seeded streams, all checkpointed: the batcher's, the dropout's, and the
//! initialisation's (used once). Evaluation draws from its own fixed-seed stream, so it never
//! changes the training trajectory: a resumed run continues bit for bit.

mod checks;

pub use checks::evaluate_tokens;
use checks::{check_data, check_sources, read_mc};

use crate::checkpoint::{self, CheckpointError, RunState, Tensors};
use crate::config::TrainConfig;
use crate::data::{BatchMode, Batcher, DataError, DataRole, DataSource, Dataset};
use crate::dist::{Collective, DistError, Solo, Watchdog};
use crate::engine::{Engine, EngineError, EngineFactory, EngineInit, TrainInit};
use crate::mc_eval::McExample;
use crate::schedule::learning_rate;
use crate::shards::ShardLoader;
use crate::tokenizer::Tokenizer;
use ferrogpt_model::{Gpt, ModelError};
use rand::{RngCore, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;
use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

/// Why a run stopped early or could not start.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// The run's config does not hold together ([`TrainConfig::validate`]'s message).
    #[error("{0}")]
    Config(String),
    /// The model the config describes cannot be built.
    #[error(transparent)]
    Model(#[from] ModelError),
    /// The data (too short, unreadable, not the run's) or the multiple-choice eval file.
    #[error(transparent)]
    Data(#[from] DataError),
    /// A collective of a data-parallel run failed.
    #[error(transparent)]
    Dist(#[from] DistError),
    /// A checkpoint could not be written, or a resumed one read.
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    /// The engine could not be built or failed during a step (a GPU error, out of memory).
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// The tokenizer has more ids than the model's vocabulary.
    #[error("the tokenizer has {tokenizer} tokens, more than the model's vocabulary of {model}")]
    TokenizerVocab {
        /// The tokenizer's ids.
        tokenizer: usize,
        /// The model's vocabulary (unpadded).
        model: usize,
    },
    /// `--init` weights of another size than the model's.
    #[error("initial weights have {found} values, the model needs {expected}")]
    InitLength {
        /// Values in the `--init` weights.
        found: usize,
        /// Values in the model's flat layout.
        expected: usize,
    },
    /// A new run's output directory holds a checkpoint already.
    #[error("{} already holds a checkpoint; continue it with --resume {} or choose another --out", dir.display(), dir.display())]
    CheckpointExists {
        /// The `--out` directory.
        dir: PathBuf,
    },
    /// A resumed run's micro-batches a step (`ranks × grad_accum` of the run before) cannot be
    /// split over `world` ranks.
    #[error("this run takes {micro} micro-batches a step ({ranks} ranks x grad_accum {grad_accum}); {world} ranks do not divide them: resume on a number of ranks that does")]
    Ranks {
        /// Micro-batches a step: `ranks × grad_accum`.
        micro: usize,
        /// Ranks the run was trained on.
        ranks: usize,
        /// Its gradient accumulation.
        grad_accum: usize,
        /// Ranks it is resumed on.
        world: usize,
    },
    /// A multiple-choice example longer than the model's block size + 1.
    #[error("{path}: example {example} needs {tokens} tokens, more than the model's block size {block} + 1")]
    McTooLong {
        /// The eval file (`eval_mc`).
        path: String,
        /// The example's index in the file, from 0.
        example: usize,
        /// Its longest row: context and completion.
        tokens: usize,
        /// The model's block size.
        block: usize,
    },
    /// A multiple-choice example holds an id beyond the vocabulary.
    #[error(
        "{path}: example {example} holds token id {id}, beyond the model's vocabulary of {vocab}"
    )]
    McTokenId {
        /// The eval file (`eval_mc`).
        path: String,
        /// The example's index in the file, from 0.
        example: usize,
        /// The id.
        id: u32,
        /// The model's vocabulary.
        vocab: usize,
    },
    /// The data holds an id beyond the vocabulary (`role`: training or validation).
    #[error("the {role} data holds token id {id}, beyond the model's vocabulary of {vocab}")]
    TokenId {
        /// Training or validation data.
        role: DataRole,
        /// The id.
        id: u32,
        /// The model's vocabulary.
        vocab: usize,
    },
    /// A resumed run was given no data of a role it was trained with (`recorded`: its first
    /// file).
    #[error("this run was trained with {} data {} ({} bytes), and none was given", recorded.role, recorded.path.display(), recorded.bytes)]
    MissingData {
        /// The first file of that role the run recorded.
        recorded: Box<DataSource>,
    },
    /// A resumed run was given another number of files of a role than it was trained on.
    #[error("this run was trained on {recorded} {role} files, {given} were given")]
    DataFiles {
        /// Training or validation data.
        role: DataRole,
        /// Files of that role the run recorded.
        recorded: usize,
        /// Files given now.
        given: usize,
    },
    /// The loss or the gradient norm is not finite.
    #[error("the loss became {loss} at step {step}; stopped without saving (the last checkpoint in {} is the last good one; try a lower --lr or --grad-clip)", dir.display())]
    NonFinite {
        /// Optimizer steps completed before the failing one (its 0-based index).
        step: usize,
        /// The value that is not finite: the loss, or the gradient norm where the loss was
        /// finite.
        loss: f32,
        /// The run's directory, whose checkpoint is left as it was.
        dir: PathBuf,
    },
    /// The output directory or its metrics.jsonl could not be created or written.
    #[error("cannot write {}: {source}", path.display())]
    Io {
        /// The directory or file.
        path: PathBuf,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// The thread writing a checkpoint into `dir` panicked (`message`: its panic's).
    #[error("cannot write {}: the checkpoint writer panicked: {message}", dir.display())]
    WriterPanicked {
        /// The checkpoint's directory.
        dir: PathBuf,
        /// The panic's message.
        message: String,
    },
}

/// What one step measured: one line of `metrics.jsonl` (the fields' names are its keys), and
/// what [`Trainer::run`]'s callback sees.
#[derive(Clone, Debug, serde::Serialize)]
pub struct StepMetrics {
    /// Optimizer steps done, this one included (1 after the first step).
    pub step: usize,
    /// Mean cross-entropy (nats per token) over the step's micro-batches, on every rank.
    pub train_loss: f32,
    /// The learning rate this step used ([`crate::schedule::learning_rate`]).
    pub lr: f64,
    /// The global L2 norm of the gradients, before clipping.
    pub grad_norm: f64,
    /// Training tokens of this step (`B·T·grad_accum·ranks`) over its wall time (forward,
    /// backward and update; not evaluation or checkpointing).
    pub tokens_per_sec: f64,
    /// Wall seconds of the run so far, sessions before a resume included (evaluations and
    /// checkpoints too).
    pub elapsed_s: f64,
    /// Training tokens seen by the run so far, this step's included.
    pub tokens: u64,
    /// The validation loss ([`Trainer::evaluate`]) on evaluation steps (every
    /// `eval_interval` and the last); None on other steps and without validation data.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub val_loss: Option<f64>,
    /// Accuracy on the multiple-choice eval file (`eval_mc`), on evaluation steps.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mc_acc: Option<f64>,
    /// On the first step of each session only, the engine's memory line ([`Engine::memory`]):
    /// after a step the engine holds everything it will hold.
    #[serde(skip)]
    pub engine_memory: Option<String>,
}

/// Starting weights for a new run (`--init`).
pub struct InitWeights {
    /// Flat, in the layout of the model (`vocab_size` real rows of wte, then the padding).
    pub params: Vec<f32>,
    /// The model's vocabulary.
    pub vocab_size: usize,
}

/// How the run ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// All `steps` done.
    Finished,
    /// Stopped by the stop flag (Ctrl-C) or `max_seconds`; a checkpoint was saved.
    Interrupted,
}

/// A training run in progress.
pub struct Trainer {
    /// The run's settings (a resumed run's as recorded, `steps` as given to
    /// [`Trainer::resume`]); saved with every checkpoint.
    pub cfg: TrainConfig,
    /// The model the run trains (its config and parameter layout).
    pub model: Gpt,
    /// The run's tokenizer, saved with every checkpoint.
    pub tokenizer: Tokenizer,
    /// Parameters, gradients and optimizer state, and the arithmetic on them. Sampling may use
    /// it between steps (`last_logits` leaves the training state alone).
    pub engine: Box<dyn Engine>,
    /// Optimizer steps done (0 at a fresh start); the run ends at `cfg.steps`.
    pub step: usize,
    batcher: Batcher,
    /// The windows of sharded training data (llm.c's loader; the shard order shuffled per
    /// epoch from the run's seed); unused for data in memory.
    shard_loader: ShardLoader,
    rng: Xoshiro256PlusPlus,
    data: Dataset,
    elapsed_before: f64,
    tokens_seen: u64,
    run_id: String,
    /// The run's directory: checkpoint, `metrics.jsonl`, `best/`.
    pub out_dir: PathBuf,
    /// The validation loss of the latest evaluation (None before the first, or without
    /// validation data).
    pub last_val_loss: Option<f64>,
    /// The lowest validation loss so far; its weights are in `out_dir/best/`.
    pub best_val_loss: Option<f64>,
    /// The current weights are the best so far and `best/` does not hold them yet.
    best_pending: bool,
    /// The checkpoint being written in the background, if any (see `save_in_background`).
    writer: Option<std::thread::JoinHandle<Result<(), CheckpointError>>>,
    /// Where the last `train_step` spent its time.
    pub last_phases: StepPhases,
    /// The ranks of a data-parallel run ([`Solo`] for one); only rank 0 writes files.
    comm: Rc<dyn Collective>,
    /// The examples of the multiple-choice evaluation (`cfg.eval_mc`), if any.
    mc: Option<Vec<McExample>>,
    /// Watches the step's collectives (data-parallel runs; see [`Trainer::watch_collectives`]).
    watchdog: Option<Watchdog>,
}

/// Wall time of the parts of one optimizer step, in seconds, measured on the host around the
/// engine's calls. Exact for the CPU engine; a GPU engine returns from a call before its
/// kernels finish, so there a phase holds whatever work the call waited for.
#[derive(Clone, Copy, Debug, Default, PartialEq, serde::Serialize)]
pub struct StepPhases {
    /// Forward and backward passes of every micro-batch (`Engine::accumulate`), with the
    /// batches drawn for them.
    pub forward_backward: f64,
    /// The gradient norm and the clip (`Engine::clip_grads`).
    pub norm: f64,
    /// The optimizer update (`Engine::update`).
    pub update: f64,
}

impl Drop for Trainer {
    /// A checkpoint still being written is finished before the trainer goes away.
    fn drop(&mut self) {
        if let Err(e) = self.wait_for_writer() {
            eprintln!("error: {e}");
        }
    }
}

impl Trainer {
    /// A new run on an engine from `make_engine`. `init` gives starting weights (from
    /// `--init`) and their model's vocabulary, which may be larger than the tokenizer's;
    /// otherwise the vocabulary is the tokenizer's and the weights GPT-2's initialisation from
    /// the seed. `out_dir` is created (once the data and the engine are ready); it must not
    /// hold a checkpoint already.
    pub fn new(
        cfg: TrainConfig,
        tokenizer: Tokenizer,
        data: Dataset,
        make_engine: &EngineFactory,
        out_dir: &Path,
        init: Option<InitWeights>,
    ) -> Result<Self, TrainError> {
        Self::new_on(
            cfg,
            tokenizer,
            data,
            make_engine,
            out_dir,
            init,
            Rc::new(Solo),
        )
    }

    /// [`Trainer::new`] for one rank of a data-parallel run over `comm` (see [`crate::dist`]):
    /// every rank calls it with the same arguments; rank 0 alone creates the directory and
    /// writes in it.
    pub fn new_on(
        cfg: TrainConfig,
        tokenizer: Tokenizer,
        data: Dataset,
        make_engine: &EngineFactory,
        out_dir: &Path,
        init: Option<InitWeights>,
        comm: Rc<dyn Collective>,
    ) -> Result<Self, TrainError> {
        cfg.validate().map_err(TrainError::Config)?;
        let vocab = init
            .as_ref()
            .map_or(tokenizer.vocab_size(), |i| i.vocab_size);
        if tokenizer.vocab_size() > vocab {
            return Err(TrainError::TokenizerVocab {
                tokenizer: tokenizer.vocab_size(),
                model: vocab,
            });
        }
        let model = Gpt::new(cfg.model_config(vocab))?;
        let params = match init {
            Some(i) => i.params,
            None => {
                let mut rng = Xoshiro256PlusPlus::seed_from_u64(cfg.seed);
                model.layout.init(&model.config, &mut rng)
            }
        };
        if params.len() != model.layout.total {
            return Err(TrainError::InitLength {
                found: params.len(),
                expected: model.layout.total,
            });
        }
        if checkpoint::exists(out_dir) {
            return Err(TrainError::CheckpointExists {
                dir: out_dir.to_path_buf(),
            });
        }
        check_data(&cfg, &model, &data)?;
        let mc = read_mc(&cfg, &model)?;
        let engine = make_engine(EngineInit {
            model: &model,
            params,
            train: Some(TrainInit {
                zero: zero_over(&cfg, &comm),
                ..TrainInit::fresh(&cfg, model.layout.total)
            }),
        })?;
        if comm.rank() == 0 {
            std::fs::create_dir_all(out_dir).map_err(|source| TrainError::Io {
                path: out_dir.to_path_buf(),
                source,
            })?;
        }
        let mode = if cfg.sequential {
            BatchMode::Sequential
        } else {
            BatchMode::Random
        };
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_micros() as u64);
        // Rank 0's clock names the run on every rank (exact in f64: below 2^53 µs).
        let mut t0 = [if comm.rank() == 0 { now as f64 } else { 0.0 }];
        comm.all_reduce_sum_f64(&mut t0)?;
        let run_id = format!("{:016x}", cfg.seed ^ (t0[0] as u64));
        let mut t = Self::assemble(cfg, model, tokenizer, engine, data, out_dir, run_id, comm);
        t.mc = mc;
        t.batcher = Batcher::new(mode, t.cfg.seed.wrapping_add(1));
        t.rng = Xoshiro256PlusPlus::seed_from_u64(t.cfg.seed.wrapping_add(2));
        Ok(t)
    }

    /// Continues the run checkpointed in `dir`, on `data`, on an engine from `make_engine`, up
    /// to `steps` total steps (None: the run's own). The checkpoint directory is also the
    /// output directory. Where the checkpoint records its data files, `data` must come from
    /// files with the same contents (SHA-256), wherever they are now.
    pub fn resume(
        dir: &Path,
        data: Dataset,
        make_engine: &EngineFactory,
        steps: Option<usize>,
    ) -> Result<Self, TrainError> {
        Self::resume_on(dir, data, make_engine, steps, Rc::new(Solo))
    }

    /// [`Trainer::resume`] for one rank of a data-parallel run over `comm`; every rank reads
    /// the checkpoint. The number of ranks may differ from the run's before: the step
    /// continues with `ranks × grad_accum` micro-batches of the same stream.
    pub fn resume_on(
        dir: &Path,
        data: Dataset,
        make_engine: &EngineFactory,
        steps: Option<usize>,
        comm: Rc<dyn Collective>,
    ) -> Result<Self, TrainError> {
        // Rank 0 alone finishes a save that was interrupted while moving its files; the
        // others wait for it before they read.
        if comm.rank() == 0 {
            checkpoint::finish_pending(dir)?;
        }
        comm.all_reduce_sum_f64(&mut [0.0])?;
        let r = checkpoint::load_for_resume(dir)?;
        check_sources(&r.state.data, &data.sources)?;
        let mut cfg = r.state.config.clone();
        // Another number of ranks takes the same micro-batches a step: the accumulation
        // changes so that ranks × grad_accum stays the run's.
        let micro = r.state.world * cfg.grad_accum;
        let world = comm.world();
        if world != r.state.world {
            if !micro.is_multiple_of(world) {
                return Err(TrainError::Ranks {
                    micro,
                    ranks: r.state.world,
                    grad_accum: cfg.grad_accum,
                    world,
                });
            }
            cfg.grad_accum = micro / world;
        }
        if let Some(s) = steps {
            cfg.steps = s;
        }
        let model = r.loaded.model;
        check_data(&cfg, &model, &data)?;
        let engine = make_engine(EngineInit {
            model: &model,
            params: r.loaded.params,
            train: Some(TrainInit {
                cfg: &cfg,
                m: r.m,
                v: r.v,
                opt_t: r.state.opt_t,
                zero: zero_over(&cfg, &comm),
            }),
        })?;
        let mut t = Self::assemble(
            cfg,
            model,
            r.loaded.tokenizer,
            engine,
            data,
            dir,
            r.state.run_id,
            comm,
        );
        t.step = r.state.step;
        t.batcher = Batcher::from_state(r.state.batcher);
        if let Some(st) = r.state.shard_loader {
            t.shard_loader = ShardLoader::from_state(t.cfg.seed, true, st);
        }
        t.rng = r.state.rng;
        t.elapsed_before = r.state.elapsed_s;
        t.tokens_seen = r.state.tokens_seen;
        t.last_val_loss = r.state.last_val_loss;
        t.best_val_loss = r.state.best_val_loss;
        t.mc = read_mc(&t.cfg, &t.model)?;
        Ok(t)
    }

    #[allow(clippy::too_many_arguments)]
    fn assemble(
        cfg: TrainConfig,
        model: Gpt,
        tokenizer: Tokenizer,
        engine: Box<dyn Engine>,
        data: Dataset,
        out_dir: &Path,
        run_id: String,
        comm: Rc<dyn Collective>,
    ) -> Self {
        let cfg_seed = cfg.seed;
        Trainer {
            cfg,
            model,
            tokenizer,
            engine,
            step: 0,
            batcher: Batcher::new(BatchMode::Random, 0),
            shard_loader: ShardLoader::new(cfg_seed, true),
            rng: Xoshiro256PlusPlus::seed_from_u64(0),
            data,
            elapsed_before: 0.0,
            tokens_seen: 0,
            run_id,
            out_dir: out_dir.to_path_buf(),
            last_val_loss: None,
            best_val_loss: None,
            best_pending: false,
            writer: None,
            last_phases: StepPhases::default(),
            comm,
            mc: None,
            watchdog: None,
        }
    }

    /// Watches every collective of the steps from now on with `watchdog` (which ends the rank
    /// when the others do not answer in time).
    pub fn watch_collectives(&mut self, watchdog: Watchdog) {
        self.watchdog = Some(watchdog);
    }

    /// Marks a wait in a collective for the watchdog, if there is one.
    fn waiting(&self, what: &'static str) -> Option<crate::dist::WatchGuard<'_>> {
        self.watchdog.as_ref().map(|w| w.guard(what))
    }

    /// Accuracy on the multiple-choice examples, split across the ranks (rank r scores those
    /// with index ≡ r mod ranks); None without them.
    pub fn evaluate_mc(&mut self) -> Result<Option<f64>, TrainError> {
        let Some(examples) = &self.mc else {
            return Ok(None);
        };
        let (rank, world) = (self.comm.rank(), self.comm.world());
        let mine: Vec<McExample> = examples.iter().skip(rank).step_by(world).cloned().collect();
        let (right, n) = crate::mc_eval::score(self.engine.as_mut(), &mine)?;
        let mut counts = [right as f64, n as f64];
        let _watch = self.waiting("summing multiple-choice scores");
        self.comm.all_reduce_sum_f64(&mut counts)?;
        Ok((counts[1] > 0.0).then(|| counts[0] / counts[1]))
    }

    /// This process's rank and the number of ranks (0 and 1 without data parallelism).
    pub fn rank_and_world(&self) -> (usize, usize) {
        (self.comm.rank(), self.comm.world())
    }

    /// The collectives' description, e.g. "MPI (Open MPI v4.1.4), rank 0 of 2".
    pub fn describe_ranks(&self) -> String {
        self.comm.describe()
    }

    /// A host copy of the current parameters (flat, layout order).
    pub fn params(&self) -> Result<Vec<f32>, TrainError> {
        Ok(self.engine.params()?)
    }

    /// Whether there is validation data to evaluate on.
    pub fn has_val(&self) -> bool {
        !self.data.val.is_empty() || self.data.val_shards.is_some()
    }

    /// One optimizer step; returns (mean training loss, gradient norm before clipping, lr).
    ///
    /// Each of the step's `ranks × grad_accum` micro-batches draws its windows from the
    /// batcher and its dropout seed from the run's generator, in that order, on every rank;
    /// rank `r` runs those with index `≡ r (mod ranks)`, and the engine adds their gradients
    /// scaled by `1 / (ranks × grad_accum)`, summed across the ranks before clipping. A loss or
    /// gradient norm that is not finite stops before the update (on every rank: both are the
    /// same everywhere).
    pub fn train_step(&mut self) -> Result<(f32, f64, f64), TrainError> {
        let (b, t) = (self.cfg.batch_size, self.cfg.seq_len);
        let (rank, world) = (self.comm.rank(), self.comm.world());
        let micro = self.cfg.grad_accum * world;
        let lr = learning_rate(&self.cfg, self.step);
        let scale = 1.0 / micro as f32;
        let t0 = Instant::now();
        self.engine.zero_grads()?;
        let mut loss_sum = 0.0f64;
        let (mut inputs, mut targets) = (Vec::with_capacity(b * t), Vec::with_capacity(b * t));
        match self.data.train_shards.clone() {
            None => {
                for i in 0..micro {
                    self.batcher
                        .next_batch(&self.data.train, b, t, &mut inputs, &mut targets)?;
                    let seed = self.rng.next_u64();
                    if i % world == rank {
                        loss_sum += self.engine.accumulate(&inputs, &targets, t, scale, seed)?;
                    }
                }
            }
            // The same order from shards: each call covers `world` windows, this rank's is the
            // `rank`-th; the seeds are drawn for all of them.
            Some(set) => {
                for _ in 0..self.cfg.grad_accum {
                    self.shard_loader.next_batch(
                        &set,
                        rank,
                        world,
                        b,
                        t,
                        &mut inputs,
                        &mut targets,
                    )?;
                    let seeds: Vec<u64> = (0..world).map(|_| self.rng.next_u64()).collect();
                    loss_sum += self
                        .engine
                        .accumulate(&inputs, &targets, t, scale, seeds[rank])?;
                }
            }
        }
        if self.comm.distributed() {
            let watch = self.watchdog.as_ref().map(|w| w.guard("summing gradients"));
            self.engine.all_reduce_grads(self.comm.as_ref())?;
            let mut l = [loss_sum];
            self.comm.all_reduce_sum_f64(&mut l)?;
            loss_sum = l[0];
            drop(watch);
        }
        let loss = (loss_sum / micro as f64) as f32;
        if !loss.is_finite() {
            return Err(TrainError::NonFinite {
                step: self.step,
                loss,
                dir: self.out_dir.clone(),
            });
        }
        let t1 = Instant::now();
        let norm = self.engine.clip_grads(self.cfg.grad_clip)?;
        let t2 = Instant::now();
        if !norm.is_finite() {
            return Err(TrainError::NonFinite {
                step: self.step,
                loss: norm as f32,
                dir: self.out_dir.clone(),
            });
        }
        self.engine.update(lr, &self.cfg)?;
        self.last_phases = StepPhases {
            forward_backward: (t1 - t0).as_secs_f64(),
            norm: (t2 - t1).as_secs_f64(),
            update: t2.elapsed().as_secs_f64(),
        };
        self.step += 1;
        self.tokens_seen += (b * t * micro) as u64;
        Ok((loss, norm, lr))
    }

    /// Mean validation loss over `eval_batches` windows, drawn the same way at every
    /// evaluation (a fixed seed), without touching the training state. None without val data.
    pub fn evaluate(&mut self) -> Result<Option<f64>, TrainError> {
        if !self.has_val() {
            return Ok(None);
        }
        let (b, t) = (self.cfg.batch_size, self.cfg.seq_len);
        let n = self.cfg.eval_batches.max(1);
        // Draw every batch first (one stream, so the batches do not depend on the engine), then
        // evaluate them all at once; sum in batch order. Shards: the first n windows, as llm.c.
        let mut batcher = Batcher::new(BatchMode::Random, self.cfg.seed ^ 0x5eed_e7a1);
        let mut loader = ShardLoader::new(self.cfg.seed, false);
        let mut batches = Vec::with_capacity(n);
        for _ in 0..n {
            let (mut x, mut y) = (Vec::new(), Vec::new());
            let drawn = match &self.data.val_shards {
                Some(set) => loader.next_batch(set, 0, 1, b, t, &mut x, &mut y),
                None => batcher.next_batch(&self.data.val, b, t, &mut x, &mut y),
            };
            if drawn.is_err() {
                return Ok(None);
            }
            batches.push((x, y));
        }
        // Rank r evaluates the batches with index ≡ r (mod ranks); the sum is gathered.
        let (rank, world) = (self.comm.rank(), self.comm.world());
        let mine: Vec<_> = batches.into_iter().skip(rank).step_by(world).collect();
        let mut sum = [self.engine.losses(&mine, t)?.iter().sum::<f64>()];
        let _watch = self.waiting("summing validation losses");
        self.comm.all_reduce_sum_f64(&mut sum)?;
        Ok(Some(sum[0] / n as f64))
    }

    /// Writes a checkpoint of the current state into the output directory.
    pub fn save(&mut self, elapsed_s: f64) -> Result<(), TrainError> {
        self.save_in_background(elapsed_s)?;
        self.wait_for_writer()
    }

    /// Waits for the checkpoint being written in the background, and reports its error.
    pub fn wait_for_writer(&mut self) -> Result<(), TrainError> {
        match self.writer.take().map(|h| h.join()) {
            None | Some(Ok(Ok(()))) => Ok(()),
            Some(Ok(Err(e))) => Err(e.into()),
            Some(Err(p)) => Err(TrainError::WriterPanicked {
                dir: self.out_dir.clone(),
                message: p
                    .downcast_ref::<String>()
                    .map(String::as_str)
                    .or_else(|| p.downcast_ref::<&str>().copied())
                    .unwrap_or("?")
                    .to_string(),
            }),
        }
    }

    /// Takes host copies of the current state and writes the checkpoint on another thread, so
    /// training goes on meanwhile (a GPU run's step is shorter than a file write). The
    /// previous background write is waited for first, so at most one is in flight; every file
    /// is still written atomically (temp name + rename).
    pub fn save_in_background(&mut self, elapsed_s: f64) -> Result<(), TrainError> {
        // Every rank takes part in gathering a sharded optimizer state; rank 0 writes.
        let watch = self.waiting("gathering the optimizer state");
        let (m, v, opt_t) = self.engine.optimizer_state()?;
        drop(watch);
        if self.comm.rank() != 0 {
            self.best_pending = false;
            return Ok(());
        }
        self.wait_for_writer()?;
        let params = self.engine.params()?;
        let state = RunState {
            format: checkpoint::FORMAT.into(),
            step: self.step,
            run_id: self.run_id.clone(),
            config: self.cfg.clone(),
            batcher: self.batcher.state(),
            rng: self.rng.clone(),
            opt_t,
            elapsed_s,
            tokens_seen: self.tokens_seen,
            last_val_loss: self.last_val_loss,
            best_val_loss: self.best_val_loss,
            data: self.data.sources.clone(),
            shard_loader: self
                .data
                .train_shards
                .is_some()
                .then(|| self.shard_loader.state()),
            world: self.comm.world(),
        };
        let (dir, model, tokenizer) = (
            self.out_dir.clone(),
            self.model.clone(),
            self.tokenizer.clone(),
        );
        let best = std::mem::take(&mut self.best_pending);
        self.writer = Some(std::thread::spawn(move || {
            let t = Tensors {
                params: &params,
                m: &m,
                v: &v,
            };
            // best/ first: state.json, written last by `save`, names a best loss whose
            // weights are already on disk.
            if best {
                let meta = HashMap::from([
                    ("format".to_string(), "pt".to_string()),
                    ("ferrogpt_step".to_string(), state.step.to_string()),
                    ("ferrogpt_run_id".to_string(), state.run_id.clone()),
                    (
                        "ferrogpt_val_loss".to_string(),
                        state.best_val_loss.map_or(String::new(), |v| v.to_string()),
                    ),
                ]);
                checkpoint::save_model(&dir.join("best"), &model, &tokenizer, &params, meta)?;
            }
            checkpoint::save(&dir, &model, &tokenizer, &state, t)
        }));
        Ok(())
    }

    /// Runs to `cfg.steps`, or until `stop` is set or `max_seconds` of this session pass. Calls
    /// `on_step` after every step; appends each step's metrics to `metrics.jsonl`. Saves at
    /// every evaluation and when stopping.
    pub fn run(
        &mut self,
        max_seconds: Option<f64>,
        stop: &AtomicBool,
        on_step: impl FnMut(&StepMetrics),
    ) -> Result<Outcome, TrainError> {
        let r = self.run_steps(max_seconds, stop, on_step);
        // Whatever happened, the checkpoint on disk is whole when `run` returns.
        let w = self.wait_for_writer();
        let outcome = r?;
        w.map(|()| outcome)
    }

    fn run_steps(
        &mut self,
        max_seconds: Option<f64>,
        stop: &AtomicBool,
        mut on_step: impl FnMut(&StepMetrics),
    ) -> Result<Outcome, TrainError> {
        let metrics_path = self.out_dir.join("metrics.jsonl");
        let io = |source: std::io::Error| TrainError::Io {
            path: metrics_path.clone(),
            source,
        };
        let mut metrics = match self.comm.rank() {
            0 => Some(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&metrics_path)
                    .map_err(io)?,
            ),
            _ => None,
        };
        let start = Instant::now();
        let mut first = true;
        while self.step < self.cfg.steps {
            let mut stopping = [(stop.load(Ordering::Relaxed)
                || max_seconds.is_some_and(|m| start.elapsed().as_secs_f64() >= m))
                as u8 as f64];
            if self.comm.distributed() {
                // Every rank stops at the same step when any rank is asked to.
                let _watch = self.waiting("agreeing on a stop");
                self.comm.all_reduce_sum_f64(&mut stopping)?;
            }
            if stopping[0] > 0.0 {
                self.save(self.elapsed_before + start.elapsed().as_secs_f64())?;
                return Ok(Outcome::Interrupted);
            }
            let t0 = Instant::now();
            let (loss, grad_norm, lr) = self.train_step()?;
            let dt = t0.elapsed().as_secs_f64();
            let tokens =
                (self.cfg.batch_size * self.cfg.seq_len * self.cfg.grad_accum * self.comm.world())
                    as f64;
            let last = self.step == self.cfg.steps;
            let eval_now = last
                || (self.cfg.eval_interval > 0 && self.step.is_multiple_of(self.cfg.eval_interval));
            let val_loss = if eval_now { self.evaluate()? } else { None };
            let mc_acc = if eval_now { self.evaluate_mc()? } else { None };
            if let Some(v) = val_loss {
                self.last_val_loss = val_loss;
                if self.best_val_loss.is_none_or(|b| v < b) {
                    self.best_val_loss = val_loss;
                    self.best_pending = true;
                }
            }
            let m = StepMetrics {
                step: self.step,
                train_loss: loss,
                lr,
                grad_norm,
                tokens_per_sec: tokens / dt,
                elapsed_s: self.elapsed_before + start.elapsed().as_secs_f64(),
                tokens: self.tokens_seen,
                val_loss,
                mc_acc,
                engine_memory: if first { self.engine.memory() } else { None },
            };
            first = false;
            if let Some(f) = metrics.as_mut() {
                writeln!(f, "{}", serde_json::to_string(&m).expect("plain values")).map_err(io)?;
            }
            if eval_now {
                if let Some(f) = metrics.as_mut() {
                    f.flush().map_err(io)?;
                }
                if last {
                    self.save(m.elapsed_s)?;
                } else {
                    self.save_in_background(m.elapsed_s)?;
                }
            }
            on_step(&m);
        }
        self.wait_for_writer()?;
        Ok(Outcome::Finished)
    }
}

/// The ranks to shard the optimizer state over: `comm` under ZeRO-1 with several ranks.
fn zero_over(cfg: &TrainConfig, comm: &Rc<dyn Collective>) -> Option<Rc<dyn Collective>> {
    (cfg.zero == 1 && comm.world() > 1).then(|| comm.clone())
}
