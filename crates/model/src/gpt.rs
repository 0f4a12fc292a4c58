//! The GPT-2 forward pass, recorded on the tape.
//!
//! ```text
//! x = dropout(wte[tokens] + wpe[0..T])                     (B*T, C)
//! for each block:
//!     x = x + dropout(c_proj(attention(c_attn(ln_1(x)))))  attention: causal, NH heads
//!     x = x + dropout(mlp.c_proj(gelu(mlp.c_fc(ln_2(x)))))  MLP hidden width 4C
//! logits = ln_f(x) · wteᵀ                                    (B*T, Vp), tied LM head
//! ```

use crate::{GptConfig, ModelError, ParamLayout};
use ferrogpt_core::{Float, Tape, Var};
use rand::Rng;

/// A GPT-2 model: its shape and parameter layout. The parameters themselves are a flat buffer
/// the caller owns (see [`ParamLayout`]).
#[derive(Clone, Debug)]
pub struct Gpt {
    pub config: GptConfig,
    pub layout: ParamLayout,
}

impl Gpt {
    pub fn new(config: GptConfig) -> Result<Self, ModelError> {
        config.validate()?;
        let layout = ParamLayout::new(&config);
        Ok(Gpt { config, layout })
    }

    /// Checks a batch of token ids against the model: T within the block size, ids within V.
    pub fn check_tokens(&self, tokens: &[u32], t: usize) -> Result<(), ModelError> {
        if t == 0 || t > self.config.block_size {
            return Err(ModelError::Input(format!(
                "sequence length {t} is outside 1..={} (the model's block size)",
                self.config.block_size
            )));
        }
        if let Some((i, &id)) = tokens
            .iter()
            .enumerate()
            .find(|(_, &id)| id as usize >= self.config.vocab_size)
        {
            return Err(ModelError::Input(format!(
                "token id {id} at position {i} is beyond the vocabulary ({} tokens)",
                self.config.vocab_size
            )));
        }
        Ok(())
    }

    /// Records the forward pass of `tokens` (B, T) on the tape and returns the logits
    /// (B*T, Vp); with `last_only` (forward only), the logits of each sequence's last
    /// position (B, Vp). Dropout applies when the tape is recording.
    pub fn forward<T: Float>(
        &self,
        tape: &mut Tape<T>,
        params: &[T],
        tokens: &[u32],
        t: usize,
        last_only: bool,
        rng: &mut impl Rng,
    ) -> Var {
        self.forward_keeping_qkv(tape, params, tokens, t, last_only, rng, &mut Vec::new())
    }

    /// [`Gpt::forward`], also pushing each block's qkv activation (B·T, 3C) onto `qkv` (for a
    /// key/value cache).
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
    ) -> Var {
        let cfg = &self.config;
        let l = &self.layout;
        let b = tokens.len() / t;
        let p = cfg.dropout;
        let mut x = tape.embedding(params, tokens, l.wte, l.wpe, t); // (B*T, C)
        x = tape.dropout(x, p, rng);
        for blk in &l.blocks {
            let h = tape.layernorm(params, x, blk.ln_1_w, blk.ln_1_b);
            let qkv = tape.linear(params, h, blk.attn_w, Some(blk.attn_b), false); // (B*T, 3C)
            qkv_out.push(qkv);
            let a = tape.attention(qkv, b, cfg.n_head, p, rng); // (B*T, C)
            let a = tape.linear(params, a, blk.attn_proj_w, Some(blk.attn_proj_b), false);
            let a = tape.dropout(a, p, rng);
            x = tape.add(x, a);
            let h = tape.layernorm(params, x, blk.ln_2_w, blk.ln_2_b);
            let h = tape.linear(params, h, blk.fc_w, Some(blk.fc_b), false); // (B*T, 4C)
            let h = tape.gelu(h);
            let h = tape.linear(params, h, blk.fc_proj_w, Some(blk.fc_proj_b), false); // (B*T, C)
            let h = tape.dropout(h, p, rng);
            x = tape.add(x, h);
        }
        if last_only {
            x = tape.last_rows(x, t); // (B, C)
        }
        let x = tape.layernorm(params, x, l.ln_f_w, l.ln_f_b);
        tape.linear(params, x, l.wte, None, true) // (B*T or B, Vp)
    }

    /// Forward + mean cross-entropy loss of predicting `targets` (B, T).
    pub fn loss<T: Float>(
        &self,
        tape: &mut Tape<T>,
        params: &[T],
        tokens: &[u32],
        targets: &[u32],
        t: usize,
        rng: &mut impl Rng,
    ) -> T {
        let logits = self.forward(tape, params, tokens, t, false, rng);
        tape.softmax_cross_entropy(logits, targets, self.config.vocab_size)
    }
}
