//! Autoregressive sampling: temperature, top-k, top-p, a seeded generator, stop strings.
//!
//! Each new token takes the last position's logits of the last `block_size` tokens of the
//! context and samples from its distribution. [`generate`] runs the full forward pass on a tape
//! for every token (the reference); [`generate_with`] takes the logits from any source (a
//! training engine with its key/value cache, CPU or GPU) through a closure. Both share the
//! checks and the loop. The `emit` closure sees each token as it is drawn and may end the
//! generation there ([`Emitted`]); [`StopText`] is the text-side check for stop strings.

use crate::{Gpt, ModelError};
use ferrogpt_core::{Float, Tape};
use rand::Rng;
use rayon::prelude::*;
use std::ops::ControlFlow;

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

/// What `emit` returns for a token: `()` (go on) or a [`ControlFlow`]
/// (`Break` ends the generation after this token, as a stop string does).
pub trait Emitted {
    /// Whether the generation ends here.
    fn ends(&self) -> bool;
}

impl Emitted for () {
    fn ends(&self) -> bool {
        false
    }
}

impl Emitted for ControlFlow<()> {
    fn ends(&self) -> bool {
        self.is_break()
    }
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

/// Generates `n` tokens after `prompt`, calling `emit` with each as it is produced (streaming);
/// fewer when `emit` says to end ([`Emitted`]) or the stop token comes. Errors: an empty
/// prompt ([`ModelError::EmptyPrompt`]), a prompt longer than the block size
/// ([`ModelError::PromptLength`]), ids beyond the vocabulary ([`ModelError::TokenId`]), or
/// `params` not the model's length ([`ModelError::ParamsLength`]).
#[allow(clippy::too_many_arguments)]
pub fn generate<T: Float, F: Emitted>(
    model: &Gpt,
    tape: &mut Tape<T>,
    params: &[T],
    prompt: &[u32],
    n: usize,
    sampling: Sampling,
    rng: &mut impl Rng,
    emit: impl FnMut(u32) -> Result<F, ModelError>,
) -> Result<Vec<u32>, ModelError> {
    let v = model.config.vocab_size;
    // The tape's forward takes the generator (for dropout, the identity here); sampling needs it
    // too, so the loop hands it to the closure.
    sample_loop(
        model,
        |window, rng| {
            tape.reset(false);
            let logits = model.forward(tape, params, window, window.len(), true, rng)?;
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
pub fn generate_with<E: From<ModelError>, F: Emitted>(
    model: &Gpt,
    mut last_logits: impl FnMut(&[u32]) -> Result<Vec<f32>, E>,
    prompt: &[u32],
    n: usize,
    sampling: Sampling,
    rng: &mut impl Rng,
    emit: impl FnMut(u32) -> Result<F, E>,
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
fn sample_loop<E: From<ModelError>, R: Rng, F: Emitted>(
    model: &Gpt,
    mut logits: impl FnMut(&[u32], &mut R) -> Result<Vec<f64>, E>,
    prompt: &[u32],
    n: usize,
    sampling: Sampling,
    rng: &mut R,
    mut emit: impl FnMut(u32) -> Result<F, E>,
) -> Result<Vec<u32>, E> {
    let block = model.config.block_size;
    check_prompt(model, prompt)?;
    let mut ctx = prompt.to_vec();
    for _ in 0..n {
        let window = &ctx[ctx.len().saturating_sub(block)..];
        let mut row = logits(window, rng)?;
        if let Some(a) = sampling.allowed.filter(|&a| a > 0 && a < row.len()) {
            row[a..].fill(f64::NEG_INFINITY);
        }
        let next = sample_token(&row, sampling, rng);
        let ends = emit(next)?.ends();
        ctx.push(next);
        if ends || sampling.stop == Some(next) {
            break;
        }
    }
    Ok(ctx[prompt.len()..].to_vec())
}

/// Generates up to `n` tokens after each of several prompts at once, sequence b drawn with
/// its own generator `rngs[b]`: each sequence gets exactly the tokens [`generate_with`] would
/// give it alone with that generator (the same checks, the same end at the stop token or
/// where `emit(b, token)` says). `last_logits` gets every sequence's window (its last
/// `block_size` tokens) and returns the last position's vocab_size logits of each, B × V; a
/// sequence that has ended keeps its last window until the others end (an engine holds it
/// where it is). Errors: as [`generate_with`], for any prompt. Panics unless `rngs` has one
/// generator a prompt.
pub fn generate_many<E, F, R>(
    model: &Gpt,
    mut last_logits: impl FnMut(&[&[u32]]) -> Result<Vec<f32>, E>,
    prompts: &[&[u32]],
    n: usize,
    sampling: Sampling,
    rngs: &mut [R],
    mut emit: impl FnMut(usize, u32) -> Result<F, E>,
) -> Result<Vec<Vec<u32>>, E>
where
    E: From<ModelError>,
    F: Emitted,
    R: Rng + Send,
{
    let (block, v) = (model.config.block_size, model.config.vocab_size);
    assert_eq!(
        rngs.len(),
        prompts.len(),
        "generate_many: one generator a prompt"
    );
    for p in prompts {
        check_prompt(model, p)?;
    }
    let mut ctx: Vec<Vec<u32>> = prompts.iter().map(|p| p.to_vec()).collect();
    let mut made = vec![0usize; prompts.len()];
    let mut ended = vec![n == 0; prompts.len()];
    while ended.iter().any(|e| !e) {
        let windows: Vec<&[u32]> = ctx
            .iter()
            .map(|c| &c[c.len().saturating_sub(block)..])
            .collect();
        let rows = last_logits(&windows)?;
        if rows.len() != v * prompts.len() {
            return Err(ModelError::LogitsLength {
                found: rows.len(),
                expected: v * prompts.len(),
            }
            .into());
        }
        // Each sequence's draw from its own generator: the rows in parallel, the same tokens.
        let picks: Vec<Option<u32>> = rows
            .par_chunks(v)
            .zip(rngs.par_iter_mut())
            .zip(ended.par_iter())
            .map(|((row, rng), &done)| {
                (!done).then(|| {
                    if sampling.temperature <= 0.0 {
                        // Greedy: sample_token's argmax (the first largest, over the allowed
                        // ids) on the f32 row itself, without widening it.
                        let allowed = sampling.allowed.filter(|&a| a > 0).unwrap_or(row.len());
                        let best = row[..allowed.min(row.len())].iter().enumerate().fold(
                            (0, f32::NEG_INFINITY),
                            |a, (i, &x)| if x > a.1 { (i, x) } else { a },
                        );
                        return best.0 as u32;
                    }
                    let mut row: Vec<f64> = row.iter().map(|&x| x as f64).collect();
                    if let Some(a) = sampling.allowed.filter(|&a| a > 0 && a < row.len()) {
                        row[a..].fill(f64::NEG_INFINITY);
                    }
                    sample_token(&row, sampling, rng)
                })
            })
            .collect();
        for (b, next) in picks.into_iter().enumerate() {
            let Some(next) = next else { continue };
            let ends = emit(b, next)?.ends();
            ctx[b].push(next);
            made[b] += 1;
            ended[b] = ends || sampling.stop == Some(next) || made[b] == n;
        }
    }
    Ok(ctx
        .into_iter()
        .zip(prompts)
        .map(|(c, p)| c[p.len()..].to_vec())
        .collect())
}

/// A prompt generation can start from: not empty, within the block size, ids within the
/// vocabulary.
fn check_prompt(model: &Gpt, prompt: &[u32]) -> Result<(), ModelError> {
    let block = model.config.block_size;
    if prompt.is_empty() {
        return Err(ModelError::EmptyPrompt);
    }
    if prompt.len() > block {
        return Err(ModelError::PromptLength {
            len: prompt.len(),
            max: block,
        });
    }
    model.check_tokens(prompt, prompt.len())
}

/// Stop strings on streamed text: the generated text is pushed piece by piece, and what may be
/// printed comes back. Generation ends at the first place where any stop string occurs in the
/// generated text (the prompt not included); the stop string and whatever came after it in the
/// same piece are not printed (as llama.cpp's server cuts its output; transformers'
/// `stop_strings` keep it in the tokens). Text that could still become the start of a stop
/// string is held back until it cannot, or until [`StopText::finish`].
#[derive(Clone, Debug, Default)]
pub struct StopText {
    stops: Vec<String>,
    /// Generated text not printed yet: the longest end of the text that begins a stop string.
    held: String,
    stopped: bool,
}

impl StopText {
    /// A filter for `stops` (each non-empty; none at all passes everything through).
    pub fn new(stops: Vec<String>) -> Self {
        StopText {
            stops,
            ..Default::default()
        }
    }

    /// Adds a piece of generated text; returns the text that can be printed now and whether a
    /// stop string has ended the generation (nothing more is printed after that).
    pub fn push(&mut self, piece: &str) -> (String, ControlFlow<()>) {
        if self.stopped {
            return (String::new(), ControlFlow::Break(()));
        }
        self.held.push_str(piece);
        // The earliest place where a stop string starts (earlier text held no complete one).
        let hit = self
            .stops
            .iter()
            .filter_map(|s| self.held.find(s.as_str()))
            .min();
        if let Some(at) = hit {
            self.stopped = true;
            let out = self.held[..at].to_string();
            self.held.clear();
            return (out, ControlFlow::Break(()));
        }
        // Hold back the longest end of the text that is the beginning of a stop string.
        let longest = self.stops.iter().map(String::len).max().unwrap_or(0);
        let keep = (1..=self.held.len().min(longest.saturating_sub(1)))
            .rev()
            .filter(|&k| self.held.is_char_boundary(self.held.len() - k))
            .find(|&k| {
                let end = &self.held[self.held.len() - k..];
                self.stops.iter().any(|s| s.len() > k && s.starts_with(end))
            })
            .unwrap_or(0);
        let out = self.held[..self.held.len() - keep].to_string();
        self.held.drain(..self.held.len() - keep);
        (out, ControlFlow::Continue(()))
    }

    /// The end of the generation without a stop string: the text still held back.
    pub fn finish(&mut self) -> String {
        std::mem::take(&mut self.held)
    }

    /// Whether a stop string has ended the generation.
    pub fn stopped(&self) -> bool {
        self.stopped
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Pushes `pieces` one after the other; returns what was printed and whether it stopped.
    fn run(stops: &[&str], pieces: &[&str]) -> (String, bool) {
        let mut f = StopText::new(stops.iter().map(|s| s.to_string()).collect());
        let mut out = String::new();
        for p in pieces {
            let (text, flow) = f.push(p);
            out += &text;
            if flow.is_break() {
                assert!(f.stopped());
                return (out, true);
            }
        }
        out += &f.finish();
        (out, false)
    }

    #[test]
    fn stop_strings_cut_the_text_where_they_start() {
        // Within one piece, the rest of the piece dropped.
        assert_eq!(run(&["END"], &["ab", "cENDd", "e"]), ("abc".into(), true));
        // Across pieces: the beginning is held back, then dropped.
        assert_eq!(run(&["\n\n"], &["a\n", "\nb"]), ("a".into(), true));
        assert_eq!(run(&["xyz"], &["ax", "y", "z!"]), ("a".into(), true));
        // A false start is printed once it cannot begin a stop string.
        assert_eq!(run(&["xyz"], &["ax", "yq", "r"]), ("axyqr".into(), false));
        // A held beginning is printed at the end.
        assert_eq!(run(&["xyz"], &["a", "xy"]), ("axy".into(), false));
        // The earliest of several.
        assert_eq!(run(&["cd", "b"], &["abcd"]), ("a".into(), true));
        // None: everything passes.
        assert_eq!(run(&[], &["a", "b"]), ("ab".into(), false));
        // Multi-byte text is cut at character boundaries.
        assert_eq!(run(&["é!"], &["aé", "é", "!"]), ("aé".into(), true));
        assert_eq!(run(&["éx"], &["añé", "b"]), ("añéb".into(), false));
    }

    #[test]
    fn emit_can_end_the_generation() {
        let model = Gpt::new(crate::GptConfig {
            n_layer: 1,
            n_head: 2,
            n_embd: 8,
            block_size: 8,
            vocab_size: 5,
            padded_vocab_size: 8,
            ..crate::GptConfig::default()
        })
        .unwrap();
        let s = Sampling {
            temperature: 0.0,
            top_k: 0,
            top_p: 1.0,
            allowed: None,
            stop: None,
        };
        let mut rng = <rand_xoshiro::Xoshiro256PlusPlus as rand::SeedableRng>::seed_from_u64(0);
        let mut seen = 0;
        let out = generate_with(
            &model,
            |_: &[u32]| Ok::<_, ModelError>(vec![0.0, 0.0, 1.0, 0.0, 0.0]),
            &[1],
            10,
            s,
            &mut rng,
            |_| {
                seen += 1;
                Ok(if seen == 3 {
                    ControlFlow::Break(())
                } else {
                    ControlFlow::Continue(())
                })
            },
        )
        .unwrap();
        assert_eq!(out, vec![2, 2, 2]);
    }
}
