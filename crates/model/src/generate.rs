//! Autoregressive sampling: temperature, top-k, a seeded generator.
//!
//! Each new token runs the forward pass over the last `block_size` tokens of the context (no KV
//! cache yet) and samples from the last position's distribution.

use crate::{Gpt, ModelError};
use ferrogpt_core::{Float, Tape};
use rand::Rng;

/// How to pick the next token.
#[derive(Clone, Copy, Debug)]
pub struct Sampling {
    /// Logits are divided by this; 0 picks the most likely token (greedy).
    pub temperature: f64,
    /// Keep only the k most likely tokens (0 = all).
    pub top_k: usize,
}

/// Picks a token from `logits` (V) with the given sampling settings.
pub fn sample_token(logits: &[f64], s: Sampling, rng: &mut impl Rng) -> u32 {
    let argmax = || {
        logits
            .iter()
            .enumerate()
            .fold(
                (0, f64::NEG_INFINITY),
                |a, (i, &x)| if x > a.1 { (i, x) } else { a },
            )
            .0 as u32
    };
    if s.temperature <= 0.0 {
        return argmax();
    }
    let mut scaled: Vec<f64> = logits.iter().map(|&x| x / s.temperature).collect();
    if s.top_k > 0 && s.top_k < scaled.len() {
        let mut sorted = scaled.clone();
        sorted.sort_unstable_by(|a, b| b.total_cmp(a));
        let kth = sorted[s.top_k - 1];
        scaled
            .iter_mut()
            .filter(|x| **x < kth)
            .for_each(|x| *x = f64::NEG_INFINITY);
    }
    let mx = scaled.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let probs: Vec<f64> = scaled.iter().map(|&x| (x - mx).exp()).collect();
    let total: f64 = probs.iter().sum();
    let mut u = rng.gen::<f64>() * total;
    for (i, &p) in probs.iter().enumerate() {
        if u < p {
            return i as u32;
        }
        u -= p;
    }
    argmax()
}

/// Generates `n` tokens after `prompt`, calling `emit` with each as it is produced (streaming).
/// Errors: an empty prompt, a prompt longer than the block size, or ids beyond the vocabulary.
pub fn generate<T: Float>(
    model: &Gpt,
    tape: &mut Tape<T>,
    params: &[T],
    prompt: &[u32],
    n: usize,
    sampling: Sampling,
    rng: &mut impl Rng,
    mut emit: impl FnMut(u32) -> Result<(), ModelError>,
) -> Result<Vec<u32>, ModelError> {
    let block = model.config.block_size;
    if prompt.is_empty() {
        return Err(ModelError::Input(
            "the prompt is empty: give at least one token".into(),
        ));
    }
    if prompt.len() > block {
        return Err(ModelError::Input(format!(
            "the prompt is {} tokens long, more than the model's block size of {block}",
            prompt.len()
        )));
    }
    model.check_tokens(prompt, prompt.len())?;
    let mut ctx = prompt.to_vec();
    let v = model.config.vocab_size;
    for _ in 0..n {
        let window = &ctx[ctx.len().saturating_sub(block)..];
        tape.reset(false);
        let logits = model.forward(tape, params, window, window.len(), true, rng);
        let row: Vec<f64> = tape.value(logits)[..v].iter().map(|x| x.to_f64()).collect();
        let next = sample_token(&row, sampling, rng);
        emit(next)?;
        ctx.push(next);
    }
    Ok(ctx[prompt.len()..].to_vec())
}
