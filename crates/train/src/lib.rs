//! # ferrogpt-train: from text to a trained checkpoint
//!
//! * [`tokenizer`]: character-level, GPT-2 BPE and Hugging Face tokenizers.
//! * [`tokfile`]: llm.c token files, read and written.
//! * [`data`]: text and token files, the 90/10 split, random or sequential batches.
//! * [`shards`]: web-scale token data as memory-mapped shards, read in a shuffled order per
//!   epoch.
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
//! (the CLI draws progress from the per-step callback). The GPU crates (ferrogpt-gpu,
//! ferrogpt-wgpu) implement [`Engine`] (and ferrogpt-gpu a [`dist::Collective`] over NCCL), so
//! the same [`trainer::Trainer`] runs on them; the `ferrogpt` binary turns flags into a
//! [`config::TrainConfig`] and calls it.
//!
//! # Example
//!
//! A small GPT-2 trained on the CPU for 150 steps on a character-level text: the loss starts
//! near ln V (uniform over the vocabulary) and falls (the text repeats, so 16 characters of context predict the next); every step is a line of `metrics.jsonl`;
//! the run then resumes from its checkpoint and goes on to step 160.
//!
//! ```
//! use ferrogpt_core::Level;
//! use ferrogpt_train::config::{preset, TrainConfig};
//! use ferrogpt_train::data::Dataset;
//! use ferrogpt_train::tokenizer::Tokenizer;
//! use ferrogpt_train::trainer::{Outcome, Trainer};
//! use ferrogpt_train::CpuEngine;
//! use std::sync::atomic::AtomicBool;
//!
//! let text = "To be, or not to be, that is the question.\n".repeat(40);
//! let tok = Tokenizer::from_corpus_char(&text);
//! assert_eq!(tok.vocab_size(), 17); // its distinct characters
//! assert_eq!(tok.decode(&tok.encode("not to be")?)?, "not to be");
//! let ids = tok.encode(&text)?;
//! let n = ids.len() * 9 / 10; // nanoGPT's split: the first 90% train
//! let data = || Dataset {
//!     train: ids[..n].to_vec(),
//!     val: ids[n..].to_vec(),
//!     ..Default::default()
//! };
//! let cfg = TrainConfig {
//!     n_layer: 1, n_head: 2, n_embd: 16, block_size: 16, // the model
//!     batch_size: 8, seq_len: 16, steps: 150, warmup: 5, lr: 1e-2, // the run
//!     eval_interval: 0, eval_batches: 2, sample_tokens: 0, // evaluate at the end only
//!     ..preset("shakespeare-cpu").expect("a preset")
//! };
//! let dir = std::env::temp_dir().join(format!("ferrogpt-train-doc-{}", std::process::id()));
//! let _ = std::fs::remove_dir_all(&dir);
//! let cpu = CpuEngine::factory(Level::fastest());
//!
//! let mut run = Trainer::new(cfg, tok, data(), &*cpu, &dir, None)?;
//! let mut losses = vec![];
//! let outcome = run.run(None, &AtomicBool::new(false), |m| losses.push(m.train_loss))?;
//! assert_eq!((outcome, run.step, losses.len()), (Outcome::Finished, 150, 150));
//! assert!((losses[0] - 17f32.ln()).abs() < 0.3, "first loss {}", losses[0]);
//! assert!(losses[149] < 1.0, "last loss {}", losses[149]);
//! assert!(run.last_val_loss.is_some()); // evaluated at the last step
//! let lines = std::fs::read_to_string(dir.join("metrics.jsonl"))?;
//! assert_eq!(lines.lines().count(), 150);
//! drop(run); // waits for a checkpoint still being written
//!
//! // The checkpoint holds the optimizer state, the data position and the random streams:
//! // the run continues where it stopped.
//! let mut resumed = Trainer::resume(&dir, data(), &*cpu, Some(160))?;
//! assert_eq!(resumed.step, 150);
//! resumed.run(None, &AtomicBool::new(false), |_| {})?;
//! assert_eq!(resumed.step, 160);
//! # drop(resumed);
//! # std::fs::remove_dir_all(&dir)?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

#![warn(missing_docs)]

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
