//! Autoregressive sampling: temperature, top-k, a seeded generator.
//!
//! Each new token runs the forward pass over the last `block_size` tokens of the context (no KV
//! cache yet) and samples from the last position's distribution.
//! [`generate`] runs the forward pass on a tape; [`generate_with`] takes the logits from any
//! source (a training engine, CPU or GPU) through a closure. Both share the checks and the loop.

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
    /// Nucleus sampling: after top-k, keep the smallest set of most likely tokens whose
    /// probabilities sum to at least p (1 = all), as transformers' `top_p`.
    pub top_p: f64,
    /// Only ids below this are drawn (a tokenizer with fewer ids than the model's vocabulary);
    /// None: every id of the vocabulary.
    pub allowed: Option<usize>,
    /// Generation ends after this token (the tokenizer's end of text), as transformers'
    /// `generate` ends at `eos_token_id`; None: always `n` tokens.
    pub stop: Option<u32>,
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
    let mut probs: Vec<f64> = scaled.iter().map(|&x| (x - mx).exp()).collect();
    if s.top_p < 1.0 {
        keep_nucleus(&mut probs, s.top_p);
    }
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

/// Zeroes every weight outside the nucleus: the most likely tokens, in order, until their
/// share of the total reaches `p` (the token that crosses it included; at least one kept).
fn keep_nucleus(weights: &mut [f64], p: f64) {
    let total: f64 = weights.iter().sum();
    let mut order: Vec<usize> = (0..weights.len()).collect();
    order.sort_unstable_by(|&a, &b| weights[b].total_cmp(&weights[a]).then(a.cmp(&b)));
    let mut acc = 0.0;
    let mut kept = order.len();
    for (i, &j) in order.iter().enumerate() {
        acc += weights[j];
        if acc >= p * total {
            kept = i + 1;
            break;
        }
    }
    for &j in &order[kept..] {
        weights[j] = 0.0;
    }
}

/// Generates `n` tokens after `prompt`, calling `emit` with each as it is produced (streaming).
/// Errors: an empty prompt ([`ModelError::EmptyPrompt`]), a prompt longer than the block size
/// ([`ModelError::PromptLength`]), or ids beyond the vocabulary ([`ModelError::TokenId`]).
#[allow(clippy::too_many_arguments)]
pub fn generate<T: Float>(
    model: &Gpt,
    tape: &mut Tape<T>,
    params: &[T],
    prompt: &[u32],
    n: usize,
    sampling: Sampling,
    rng: &mut impl Rng,
    emit: impl FnMut(u32) -> Result<(), ModelError>,
) -> Result<Vec<u32>, ModelError> {
    let v = model.config.vocab_size;
    // The tape's forward takes the generator (for dropout, the identity here); sampling needs it
    // too, so the loop hands it to the closure.
    sample_loop(
        model,
        |window, rng| {
            tape.reset(false);
            let logits = model.forward(tape, params, window, window.len(), true, rng);
            Ok(tape.value(logits)[..v].iter().map(|x| x.to_f64()).collect())
        },
        prompt,
        n,
        sampling,
        rng,
        emit,
    )
}

/// [`generate`] with the logits from `last_logits(window)`: the vocab_size (unpadded) logits
/// of the window's last position (B = 1, T = the window's length, at most the block size),
/// e.g. from a training engine. Same checks and errors as [`generate`], plus a logits row of
/// the wrong length ([`ModelError::LogitsLength`]); `last_logits`' and `emit`'s errors pass
/// through.
pub fn generate_with<E: From<ModelError>>(
    model: &Gpt,
    mut last_logits: impl FnMut(&[u32]) -> Result<Vec<f32>, E>,
    prompt: &[u32],
    n: usize,
    sampling: Sampling,
    rng: &mut impl Rng,
    emit: impl FnMut(u32) -> Result<(), E>,
) -> Result<Vec<u32>, E> {
    let v = model.config.vocab_size;
    sample_loop(
        model,
        |window, _| {
            let row = last_logits(window)?;
            if row.len() != v {
                return Err(ModelError::LogitsLength {
                    found: row.len(),
                    expected: v,
                }
                .into());
            }
            Ok(row.iter().map(|&x| x as f64).collect())
        },
        prompt,
        n,
        sampling,
        rng,
        emit,
    )
}

/// The sampling loop behind [`generate`] and [`generate_with`]: checks the prompt, then per
/// token the last-position logits (V, f64) of the last `block_size` tokens, a sample, `emit`.
fn sample_loop<E: From<ModelError>, R: Rng>(
    model: &Gpt,
    mut logits: impl FnMut(&[u32], &mut R) -> Result<Vec<f64>, E>,
    prompt: &[u32],
    n: usize,
    sampling: Sampling,
    rng: &mut R,
    mut emit: impl FnMut(u32) -> Result<(), E>,
) -> Result<Vec<u32>, E> {
    let block = model.config.block_size;
    if prompt.is_empty() {
        return Err(ModelError::EmptyPrompt.into());
    }
    if prompt.len() > block {
        return Err(ModelError::PromptLength {
            len: prompt.len(),
            max: block,
        }
        .into());
    }
    model.check_tokens(prompt, prompt.len())?;
    let mut ctx = prompt.to_vec();
    for _ in 0..n {
        let window = &ctx[ctx.len().saturating_sub(block)..];
        let mut row = logits(window, rng)?;
        if let Some(a) = sampling.allowed.filter(|&a| a > 0 && a < row.len()) {
            row[a..].fill(f64::NEG_INFINITY);
        }
        let next = sample_token(&row, sampling, rng);
        emit(next)?;
        ctx.push(next);
        if sampling.stop == Some(next) {
            break;
        }
    }
    Ok(ctx[prompt.len()..].to_vec())
}
