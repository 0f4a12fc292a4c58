//! The engine: where the model's arithmetic runs, behind one contract.
//!
//! The trainer owns the run (config, data, batches, random streams, schedule, checkpoints); an
//! [`Engine`] owns the numbers (parameters, gradients, optimizer state) and does the forward,
//! backward, clipping and update. The CPU engine is [`crate::cpu_engine::CpuEngine`]; a GPU
//! engine implements the same trait in its own crate. The CLI picks one per `--device` through an
//! [`EngineFactory`].
//!
//! One optimizer step, as the trainer drives it:
//!
//! ```text
//! zero_grads
//! for each micro-batch:  loss = accumulate(inputs, targets, t, 1/grad_accum, seed)
//! all_reduce_grads(comm)          (data-parallel runs only; see crate::dist)
//! norm = clip_grads(grad_clip)
//! update(lr, cfg)
//! ```
//!
//! Parameters, gradients and optimizer moments are flat, in [`ferrogpt_model::ParamLayout`]
//! order, as in checkpoints; `params` and `optimizer_state` copy them out for saving.

use crate::config::TrainConfig;
use crate::dist::Collective;
use ferrogpt_model::generate::{generate_with, Sampling};
use ferrogpt_model::{Gpt, ModelError};
use rand::Rng;
use std::rc::Rc;

/// An engine failure (e.g. a CUDA error), as one line.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct EngineError(pub String);

impl From<ModelError> for EngineError {
    fn from(e: ModelError) -> Self {
        EngineError(e.to_string())
    }
}

/// What an engine starts from.
pub struct EngineInit<'a> {
    /// The model: its config, parameter layout and tape forward.
    pub model: &'a Gpt,
    /// Flat, in layout order (`model.layout.total` values).
    pub params: Vec<f32>,
    /// None: inference only (eval, sample): no gradients or optimizer state are allocated.
    pub train: Option<TrainInit<'a>>,
}

/// The training half of [`EngineInit`]: the run's config and the optimizer state.
pub struct TrainInit<'a> {
    /// The run's settings: the optimizer, its hyperparameters, dropout, ZeRO stage.
    pub cfg: &'a TrainConfig,
    /// First moment (AdamW) or momentum (SGD), layout order; zeros at a fresh start.
    pub m: Vec<f32>,
    /// Second moment (AdamW), layout order; empty for SGD.
    pub v: Vec<f32>,
    /// Optimizer steps taken (AdamW's bias correction).
    pub opt_t: u64,
    /// ZeRO-1 over these ranks: the engine keeps only its block of the optimizer state
    /// ([`crate::dist::block_of`]), updates only its block of the parameters and all-gathers
    /// the rest; `m` and `v` above are still whole. None: the whole state on every rank.
    pub zero: Option<Rc<dyn Collective>>,
}

impl<'a> TrainInit<'a> {
    /// The optimizer state of a fresh start: zero moments (no `v` for SGD), no steps taken.
    pub fn fresh(cfg: &'a TrainConfig, n: usize) -> Self {
        let v = match cfg.optimizer {
            crate::config::OptimizerKind::AdamW => vec![0.0; n],
            crate::config::OptimizerKind::Sgd => Vec::new(),
        };
        TrainInit {
            cfg,
            m: vec![0.0; n],
            v,
            opt_t: 0,
            zero: None,
        }
    }
}

/// Where the model's arithmetic runs. Parameters, gradients and optimizer state live inside.
///
/// Token ids are row-major (B, T) with `t` = T; B·T ids in all, each below the model's
/// `vocab_size`, T within its block size (an engine answers bad shapes or ids with an error).
/// The training methods error on an engine made without [`TrainInit`].
pub trait Engine {
    /// e.g. "cpu (simd, 2 threads)" or "cuda:0 NVIDIA H100 (bf16)".
    fn describe(&self) -> String;

    /// One line on where the engine's device memory goes (weights, gradients, optimizer
    /// state, activations, in use), for engines that hold their own; None elsewhere.
    fn memory(&self) -> Option<String> {
        None
    }

    /// Sets every parameter gradient to zero.
    fn zero_grads(&mut self) -> Result<(), EngineError>;

    /// Forward and backward of one micro-batch: `inputs`, `targets` are B·T ids, row-major
    /// (B, T). Adds `scale` × ∂(mean loss)/∂params into the gradients. `seed` drives dropout.
    /// Returns the mean loss (unscaled).
    fn accumulate(
        &mut self,
        inputs: &[u32],
        targets: &[u32],
        t: usize,
        scale: f32,
        seed: u64,
    ) -> Result<f64, EngineError>;

    /// The global L2 norm of the gradients, then clips them to `max_norm` (0 = off; PyTorch's
    /// rule: scale by `max_norm / (norm + 1e-6)` when that is below 1). Returns the norm before
    /// clipping.
    fn clip_grads(&mut self, max_norm: f64) -> Result<f64, EngineError>;

    /// One optimizer update at learning rate `lr` (AdamW or SGD per `cfg.optimizer`, which must
    /// be the optimizer the engine was made with; the other hyperparameters are read here).
    fn update(&mut self, lr: f64, cfg: &TrainConfig) -> Result<(), EngineError>;

    /// Mean loss of each (inputs, targets) batch, without dropout or gradients.
    fn losses(
        &mut self,
        batches: &[(Vec<u32>, Vec<u32>)],
        t: usize,
    ) -> Result<Vec<f64>, EngineError>;

    /// The cross-entropy of every position of a (B, T) batch: `-log p(targets[i] | inputs up
    /// to i)`, B·T values, without dropout or gradients (multiple-choice evaluation). An engine
    /// that cannot answers with an error.
    fn token_losses(
        &mut self,
        inputs: &[u32],
        targets: &[u32],
        t: usize,
    ) -> Result<Vec<f32>, EngineError> {
        let _ = (inputs, targets, t);
        Err(EngineError(format!(
            "{} cannot score tokens one by one yet (multiple-choice evaluation)",
            self.describe()
        )))
    }

    /// Logits of the last position of each of the B rows of `tokens` (B·T ids), as
    /// B × vocab_size (not padded) f32 values. Used by sampling.
    fn last_logits(&mut self, tokens: &[u32], t: usize) -> Result<Vec<f32>, EngineError>;

    /// Logits of the last position of each of several sequences of any lengths, as
    /// B × vocab_size (not padded) f32 values: batched generation. An engine that decodes
    /// sequences side by side ([`Engine::decodes_many`]) continues them when each extends the
    /// last call's by one token or stays as it was (one that has ended); this default runs
    /// them one after the other through [`Engine::last_logits`] (right, but an engine with one
    /// cache starts it over for each).
    fn last_logits_many(&mut self, seqs: &[&[u32]]) -> Result<Vec<f32>, EngineError> {
        let mut out = Vec::new();
        for s in seqs {
            out.extend(self.last_logits(s, s.len())?);
        }
        Ok(out)
    }

    /// Whether [`Engine::last_logits_many`] keeps a cache per sequence, so that generating
    /// several samples at once costs no more than one after the other (on the GPU, one step
    /// runs them all).
    fn decodes_many(&self) -> bool {
        false
    }

    /// Sums the gradients across the ranks of `comm` (data-parallel training; the trainer
    /// scales each micro-batch by `1 / (ranks × grad_accum)`, so the sum is the mean), between
    /// the last `accumulate` of a step and `clip_grads`. An engine that cannot answers with an
    /// error; with one rank it does nothing.
    fn all_reduce_grads(&mut self, comm: &dyn Collective) -> Result<(), EngineError> {
        if !comm.distributed() {
            return Ok(());
        }
        Err(EngineError(format!(
            "{} does not train data-parallel yet (over {})",
            self.describe(),
            comm.describe()
        )))
    }

    /// Host copy of the parameters (flat, layout order).
    fn params(&self) -> Result<Vec<f32>, EngineError>;

    /// Host copy of the optimizer state: (m, v, t), whole (gathered from the ranks under
    /// ZeRO-1, so every rank must call it at the same point). v is empty for SGD.
    fn optimizer_state(&self) -> Result<(Vec<f32>, Vec<f32>, u64), EngineError>;
}

/// The tokens a key/value cache that holds the positions of `cached` still has to compute for
/// `window` when the window extends it (the next step of sampling): `window[cached.len()..]`,
/// one token or more. None when the cache has nothing to offer and the window starts it over:
/// an empty cache, a window no longer than it (the same tokens again) or one that diverges
/// from it (another prompt, a window that slid past the block size).
///
/// The GPU engines decode with it; the CPU engine's cache answers a wider question itself
/// ([`ferrogpt_model::kvcache::KvCache::reusable`]: any shared prefix).
pub fn extension<'w>(cached: &[u32], window: &'w [u32]) -> Option<&'w [u32]> {
    let n = cached.len();
    (n > 0 && window.len() > n && window.starts_with(cached)).then(|| &window[n..])
}

/// Makes an engine; the CLI picks one per `--device`.
pub type EngineFactory<'f> = dyn Fn(EngineInit<'_>) -> Result<Box<dyn Engine>, EngineError> + 'f;

/// Generates `n` tokens after `prompt` on `engine`, one [`Engine::last_logits`] per token over
/// the last `block_size` tokens, calling `emit` with each as it is produced. Errors as
/// [`ferrogpt_model::generate::generate`]: an empty prompt, one longer than the block size, ids
/// beyond the vocabulary; and the engine's own.
pub fn generate(
    engine: &mut dyn Engine,
    model: &Gpt,
    prompt: &[u32],
    n: usize,
    sampling: Sampling,
    rng: &mut impl Rng,
    emit: impl FnMut(u32) -> Result<(), EngineError>,
) -> Result<Vec<u32>, EngineError> {
    generate_with(
        model,
        |window: &[u32]| engine.last_logits(window, window.len()),
        prompt,
        n,
        sampling,
        rng,
        emit,
    )
}

#[cfg(test)]
mod tests {
    use super::extension;

    #[test]
    fn an_empty_cache_offers_nothing() {
        assert_eq!(extension(&[], &[1, 2, 3]), None);
        assert_eq!(extension(&[], &[]), None);
    }

    #[test]
    fn the_same_tokens_or_fewer_are_not_an_extension() {
        assert_eq!(extension(&[1, 2, 3], &[1, 2, 3]), None);
        assert_eq!(extension(&[1, 2, 3], &[1, 2]), None);
        assert_eq!(extension(&[1, 2, 3], &[]), None);
    }

    #[test]
    fn a_window_grown_by_one_or_two_tokens_extends() {
        assert_eq!(extension(&[1, 2, 3], &[1, 2, 3, 4]), Some(&[4][..]));
        assert_eq!(extension(&[1, 2, 3], &[1, 2, 3, 4, 5]), Some(&[4, 5][..]));
        assert_eq!(extension(&[7], &[7, 7]), Some(&[7][..]));
    }

    #[test]
    fn a_diverging_or_slid_window_starts_over() {
        // Another prompt, differing in the middle or at the first token.
        assert_eq!(extension(&[1, 2, 3], &[1, 9, 3, 4]), None);
        assert_eq!(extension(&[1, 2, 3], &[9, 2, 3, 4]), None);
        // A block of 3 full: the next window drops the first token.
        assert_eq!(extension(&[1, 2, 3], &[2, 3, 4]), None);
        // Slid, but repeating tokens make it look the same: still as long, so no extension.
        assert_eq!(extension(&[5, 5, 5], &[5, 5, 5]), None);
    }
}
