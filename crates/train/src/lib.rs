//! # ferrogpt-train: from text to a trained checkpoint
//!
//! * [`tokenizer`]: character-level and GPT-2 BPE tokenizers.
//! * [`tokfile`]: llm.c token files, read and written.
//! * [`data`]: text and token files, the 90/10 split, random or sequential batches.
//! * [`config`]: a run's settings and the presets.
//! * [`optim`], [`schedule`]: AdamW and SGD on the flat buffers, gradient clipping, LR schedules.
//! * [`checkpoint`]: a run's checkpoint directory (weights, optimizer, state), written atomically.
//! * [`engine`]: the [`Engine`] contract: where the arithmetic runs (parameters, gradients,
//!   optimizer state, forward, backward, update), and sampling on an engine.
//! * [`cpu_engine`]: [`CpuEngine`], the engine on the host: the tape, data parallel over threads.
//! * [`trainer`]: the training loop, metrics, evaluation, on any engine.
//! * [`mc_eval`]: multiple-choice evaluation (llm.c's HellaSwag file).
//! * [`dist`]: data-parallel training across ranks: the collectives (MPI behind the `mpi`
//!   feature).
//!
//! Dependency rule: builds on ferrogpt-model and ferrogpt-core; knows nothing of the terminal
//! (the CLI draws progress from the per-step callback).

pub mod checkpoint;
pub mod config;
pub mod cpu_engine;
pub mod data;
pub mod dist;
pub mod engine;
pub mod mc_eval;
pub mod optim;
pub mod schedule;
pub mod shards;
pub mod tokenizer;
pub mod tokfile;
pub mod trainer;

pub use cpu_engine::CpuEngine;
pub use engine::{Engine, EngineError, EngineFactory, EngineInit, TrainInit};
