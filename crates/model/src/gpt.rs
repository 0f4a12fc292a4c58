//! The forward pass, recorded on the tape, written once for every family (see
//! [`crate::config`] for what a family fixes).
//!
//! ```text
//! x = dropout(wte[tokens] (+ wpe[0..T] with learned positions))       (B*T, C)
//! for each block:
//!     qkv = c_attn(norm_1(x))                              (B*T, (NH+2KV)*HS)
//!     qkv = rope(qkv)                                      rotary positions only
//!     x = x + dropout(c_proj(attention(qkv)))              causal, NH query heads over KV
//!     x = x + dropout(mlp.c_proj(act(mlp.c_fc(norm_2(x)))))
//!                          act: GELU on (B*T, F), or SwiGLU on (B*T, 2F) → (B*T, F)
//! logits = norm_f(x) · headᵀ                               (B*T, Vp); head = wte when tied
//! ```
//!
//! norm: LayerNorm (GPT-2) or RMSNorm (Llama).

use crate::config::Family;
use crate::{GptConfig, ModelError, ParamLayout};
use ferrogpt_core::Param;
use ferrogpt_core::{Float, Tape, Var};
use rand::Rng;

/// A model: its shape and parameter layout. The parameters themselves are a flat buffer
/// the caller owns (see [`ParamLayout`]).
#[derive(Clone, Debug)]
pub struct Gpt {
    /// The shape (validated).
    pub config: GptConfig,
    /// Where each tensor lives in the flat buffer (`layout.total` values).
    pub layout: ParamLayout,
}

impl Gpt {
    /// The model of `config` and its layout. Errors: [`ModelError::Config`], from
    /// [`GptConfig::validate`].
    pub fn new(config: GptConfig) -> Result<Self, ModelError> {
        config.validate()?;
        let layout = ParamLayout::new(&config);
        Ok(Gpt { config, layout })
    }

    /// Checks a batch of token ids against the model: T within the block size
    /// ([`ModelError::SequenceLength`]), ids within V ([`ModelError::TokenId`]).
    pub fn check_tokens(&self, tokens: &[u32], t: usize) -> Result<(), ModelError> {
        if t == 0 || t > self.config.block_size {
            return Err(ModelError::SequenceLength {
                t,
                max: self.config.block_size,
            });
        }
        if let Some((i, &id)) = tokens
            .iter()
            .enumerate()
            .find(|(_, &id)| id as usize >= self.config.vocab_size)
        {
            return Err(ModelError::TokenId {
                id,
                position: i,
                vocab: self.config.vocab_size,
            });
        }
        Ok(())
    }

    /// Checks what [`Gpt::forward`] reads, once per call: `params` of [`ParamLayout::total`]
    /// values ([`ModelError::ParamsLength`]), then [`Gpt::check_tokens`], then `tokens` B ≥ 1
    /// whole rows of T ([`ModelError::Batch`]).
    pub fn check_input<T>(&self, params: &[T], tokens: &[u32], t: usize) -> Result<(), ModelError> {
        if params.len() != self.layout.total {
            return Err(ModelError::ParamsLength {
                found: params.len(),
                expected: self.layout.total,
            });
        }
        self.check_tokens(tokens, t)?;
        if tokens.is_empty() || !tokens.len().is_multiple_of(t) {
            return Err(ModelError::Batch {
                len: tokens.len(),
                t,
            });
        }
        Ok(())
    }

    /// Records the forward pass of `tokens` (B, T) on the tape and returns the logits
    /// (B*T, Vp), row-major; with `last_only` (forward only), the logits of each sequence's
    /// last position (B, Vp). Columns V.. (the padding) are not part of the vocabulary.
    /// Dropout applies when the tape is recording. `params` is the flat buffer of
    /// [`Gpt::layout`] (`layout.total` values); B = `tokens.len() / t`. Errors, before
    /// anything is recorded: those of [`Gpt::check_input`] (an id past V, or T past the block
    /// size, would read other parameters' rows or panic).
    pub fn forward<T: Float>(
        &self,
        tape: &mut Tape<T>,
        params: &[T],
        tokens: &[u32],
        t: usize,
        last_only: bool,
        rng: &mut impl Rng,
    ) -> Result<Var, ModelError> {
        self.forward_keeping_qkv(tape, params, tokens, t, last_only, rng, &mut Vec::new())
    }

    /// [`Gpt::forward`], also pushing each block's qkv activation (B·T, (NH+2KV)·HS; keys
    /// rotated where positions are rotary) onto `qkv_out` (for a key/value cache). The same
    /// errors.
    #[allow(clippy::too_many_arguments)]
    pub fn forward_keeping_qkv<T: Float>(
        &self,
        tape: &mut Tape<T>,
        params: &[T],
        tokens: &[u32],
        t: usize,
        last_only: bool,
        rng: &mut impl Rng,
        qkv_out: &mut Vec<Var>,
    ) -> Result<Var, ModelError> {
        self.check_input(params, tokens, t)?;
        let cfg = &self.config;
        let l = &self.layout;
        let b = tokens.len() / t;
        let p = cfg.dropout;
        let (nh, kv) = (cfg.n_head, cfg.kv_heads());
        let out_in = l.weights_out_in;
        let inv_freq = if cfg.rotary() {
            cfg.rope_inv_freq()
        } else {
            Vec::new()
        };
        let mut x = tape.embedding(params, tokens, l.wte, l.wpe, t); // (B*T, C)
        x = tape.dropout(x, p, rng);
        for blk in &l.blocks {
            let h = self.norm(tape, params, x, blk.ln_1_w, blk.ln_1_b);
            let mut qkv = tape.linear(params, h, blk.attn_w, blk.attn_b, out_in); // (B*T, (NH+2KV)*HS)
            if cfg.rotary() {
                qkv = tape.rope(qkv, t, nh, kv, &inv_freq);
            }
            qkv_out.push(qkv);
            let a = tape.attention_gqa(qkv, b, nh, kv, p, rng); // (B*T, C)
            let a = tape.linear(params, a, blk.attn_proj_w, blk.attn_proj_b, out_in);
            let a = tape.dropout(a, p, rng);
            x = tape.add(x, a);
            let h = self.norm(tape, params, x, blk.ln_2_w, blk.ln_2_b);
            let h = tape.linear(params, h, blk.fc_w, blk.fc_b, out_in); // (B*T, F or 2F)
            let h = match cfg.family {
                Family::Gpt2 => tape.gelu(h),
                Family::Llama => tape.swiglu(h), // (B*T, F)
            };
            let h = tape.linear(params, h, blk.fc_proj_w, blk.fc_proj_b, out_in); // (B*T, C)
            let h = tape.dropout(h, p, rng);
            x = tape.add(x, h);
        }
        if last_only {
            x = tape.last_rows(x, t); // (B, C)
        }
        let x = self.norm(tape, params, x, l.ln_f_w, l.ln_f_b);
        Ok(tape.linear(params, x, l.head(), None, true)) // (B*T or B, Vp)
    }

    /// The family's normalisation: LayerNorm with a bias, RMSNorm without.
    fn norm<T: Float>(
        &self,
        tape: &mut Tape<T>,
        params: &[T],
        x: Var,
        w: Param,
        b: Option<Param>,
    ) -> Var {
        match b {
            Some(b) => tape.layernorm(params, x, w, b),
            None => tape.rmsnorm(params, x, w, self.config.norm_eps),
        }
    }

    /// Forward + mean cross-entropy loss (in nats) of predicting `targets` (B, T) over the V
    /// real tokens; `tape.backward` then gives the gradients. Errors, before anything is
    /// recorded: [`Gpt::forward`]'s, [`ModelError::Targets`] for targets of another count
    /// than the tokens, [`ModelError::TokenId`] for a target id past V.
    pub fn loss<T: Float>(
        &self,
        tape: &mut Tape<T>,
        params: &[T],
        tokens: &[u32],
        targets: &[u32],
        t: usize,
        rng: &mut impl Rng,
    ) -> Result<T, ModelError> {
        if targets.len() != tokens.len() {
            return Err(ModelError::Targets {
                found: targets.len(),
                expected: tokens.len(),
            });
        }
        self.check_tokens(targets, t)?;
        let logits = self.forward(tape, params, tokens, t, false, rng)?;
        Ok(tape.softmax_cross_entropy(logits, targets, self.config.vocab_size))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_tokens_names_length_and_id() {
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
        let err = model.check_tokens(&[0; 5], 5).unwrap_err();
        assert!(
            matches!(err, ModelError::SequenceLength { t: 5, max: 4 }),
            "{err:?}"
        );
        let err = model.check_tokens(&[1, 2, 10, 3], 4).unwrap_err();
        assert!(
            matches!(
                err,
                ModelError::TokenId {
                    id: 10,
                    position: 2,
                    vocab: 10
                }
            ),
            "{err:?}"
        );
        let err = Gpt::new(GptConfig {
            dropout: 1.0,
            ..model.config.clone()
        })
        .unwrap_err();
        assert!(
            matches!(
                err,
                ModelError::Config {
                    field: "dropout",
                    ..
                }
            ),
            "{err:?}"
        );
    }
}
