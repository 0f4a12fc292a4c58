//! `--device wgpu` for `sample` and `eval`: [`WgpuEngine`], the [`Engine`] contract over the
//! GPT-2 forward pass of [`crate::gpt2`]. Inference only: the training methods answer with an
//! error that says so.
//!
//! Sampling asks for the last position's logits of a window that grows by one token a step;
//! the engine remembers which tokens its key/value cache holds and runs only the new ones
//! (positions cached.len()..). A window that is not an extension of the cached tokens (a new
//! prompt, or the window sliding past the block size) runs whole from position 0.

use crate::gpt2::{Gpt2, HeadRows};
use crate::Gpu;
use ferrogpt_train::config::TrainConfig;
use ferrogpt_train::engine::extension;
use ferrogpt_train::{Engine, EngineError, EngineFactory, EngineInit};

/// The GPT-2 forward pass on a wgpu adapter, for inference.
pub struct WgpuEngine {
    model: Gpt2,
    index: usize,
    params: Vec<f32>,
    /// The tokens whose keys and values the cache holds, positions 0.. .
    cached: Vec<u32>,
}

fn err(e: impl std::fmt::Display) -> EngineError {
    EngineError(e.to_string())
}

impl WgpuEngine {
    /// The model of `init` on adapter `index` (see [`crate::adapters`]). Errors, in one line: no
    /// adapter, a model the kernels do not run (not GPT-2 with learned positions), an engine
    /// asked to train.
    pub fn new(init: EngineInit<'_>, index: usize) -> Result<WgpuEngine, EngineError> {
        if init.train.is_some() {
            return Err(EngineError(
                "--device wgpu runs inference only (sample, eval); train with --device cpu \
                 (--matmul wgpu sends its products to the GPU) or cuda"
                    .into(),
            ));
        }
        let gpu = Gpu::new(index).map_err(err)?;
        let model =
            Gpt2::new(gpu, &init.model.config, &init.model.layout, &init.params).map_err(err)?;
        Ok(WgpuEngine {
            model,
            index,
            params: init.params,
            cached: Vec::new(),
        })
    }

    /// The factory the CLI uses for `--device wgpu[:N]`.
    pub fn factory(index: usize) -> Box<EngineFactory<'static>> {
        Box::new(move |init| Ok(Box::new(WgpuEngine::new(init, index)?) as Box<dyn Engine>))
    }

    /// Splits (B, T) ids into B rows, checking the shape.
    fn rows(tokens: &[u32], t: usize) -> Result<std::slice::ChunksExact<'_, u32>, EngineError> {
        if t == 0 || tokens.is_empty() || !tokens.len().is_multiple_of(t) {
            return Err(EngineError(format!(
                "{} token ids do not make rows of {t}",
                tokens.len()
            )));
        }
        Ok(tokens.chunks_exact(t))
    }

    /// Logits (T × vocab_size) of every position of one sequence, from position 0.
    fn all_logits(&mut self, seq: &[u32]) -> Result<Vec<f32>, EngineError> {
        // The cache is overwritten from position 0: it then holds exactly `seq`.
        self.cached.clear();
        let logits = self.model.forward(seq, 0, HeadRows::All).map_err(err)?;
        self.cached = seq.to_vec();
        Ok(logits)
    }

    /// -log p(target) at every position of (B, T) ids, in f64.
    fn nll(&mut self, inputs: &[u32], targets: &[u32], t: usize) -> Result<Vec<f64>, EngineError> {
        if targets.len() != inputs.len() {
            return Err(EngineError(format!(
                "{} inputs and {} targets",
                inputs.len(),
                targets.len()
            )));
        }
        let v = self.model_vocab();
        let mut out = Vec::with_capacity(inputs.len());
        for (b, seq) in Self::rows(inputs, t)?.enumerate() {
            let logits = self.all_logits(seq)?;
            for (i, row) in logits.chunks_exact(v).enumerate() {
                let target = targets[b * t + i] as usize;
                if target >= v {
                    return Err(EngineError(format!(
                        "target id {target} is past the vocabulary ({v})"
                    )));
                }
                let max = row.iter().fold(f32::NEG_INFINITY, |m, &x| m.max(x)) as f64;
                let sum: f64 = row.iter().map(|&x| (x as f64 - max).exp()).sum();
                out.push(max + sum.ln() - row[target] as f64);
            }
        }
        Ok(out)
    }

    fn model_vocab(&self) -> usize {
        self.model.vocab_size()
    }

    fn inference_only(&self, what: &str) -> EngineError {
        EngineError(format!(
            "{} runs inference only: it cannot {what} (train with --device cpu or cuda)",
            self.describe()
        ))
    }
}

impl Engine for WgpuEngine {
    fn describe(&self) -> String {
        let info = self.model.gpu().info();
        format!("wgpu:{} {} ({}, fp32)", self.index, info.name, info.backend)
    }

    fn zero_grads(&mut self) -> Result<(), EngineError> {
        Err(self.inference_only("hold gradients"))
    }

    fn accumulate(
        &mut self,
        _inputs: &[u32],
        _targets: &[u32],
        _t: usize,
        _scale: f32,
        _seed: u64,
    ) -> Result<f64, EngineError> {
        Err(self.inference_only("run a backward pass"))
    }

    fn clip_grads(&mut self, _max_norm: f64) -> Result<f64, EngineError> {
        Err(self.inference_only("clip gradients"))
    }

    fn update(&mut self, _lr: f64, _cfg: &TrainConfig) -> Result<(), EngineError> {
        Err(self.inference_only("update weights"))
    }

    fn losses(
        &mut self,
        batches: &[(Vec<u32>, Vec<u32>)],
        t: usize,
    ) -> Result<Vec<f64>, EngineError> {
        batches
            .iter()
            .map(|(x, y)| {
                let nll = self.nll(x, y, t)?;
                Ok(nll.iter().sum::<f64>() / nll.len() as f64)
            })
            .collect()
    }

    fn token_losses(
        &mut self,
        inputs: &[u32],
        targets: &[u32],
        t: usize,
    ) -> Result<Vec<f32>, EngineError> {
        Ok(self
            .nll(inputs, targets, t)?
            .into_iter()
            .map(|x| x as f32)
            .collect())
    }

    fn last_logits(&mut self, tokens: &[u32], t: usize) -> Result<Vec<f32>, EngineError> {
        let mut out = Vec::new();
        for window in Self::rows(tokens, t)? {
            let (new, pos0) = match extension(&self.cached, window) {
                Some(new) => (new, self.cached.len()),
                None => (window, 0),
            };
            // On an error the cache's contents are unknown.
            self.cached.clear();
            out.extend(self.model.forward(new, pos0, HeadRows::Last).map_err(err)?);
            self.cached = window.to_vec();
        }
        Ok(out)
    }

    fn params(&self) -> Result<Vec<f32>, EngineError> {
        Ok(self.params.clone())
    }

    fn optimizer_state(&self) -> Result<(Vec<f32>, Vec<f32>, u64), EngineError> {
        Err(self.inference_only("hold optimizer state"))
    }
}
