//! GPT-2 hyperparameters.

use crate::ModelError;
use serde::{Deserialize, Serialize};

/// The shape of a GPT-2 model. Defaults are GPT-2 small (124M).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GptConfig {
    /// L: transformer blocks.
    pub n_layer: usize,
    /// NH: attention heads; must divide `n_embd`.
    pub n_head: usize,
    /// C: channels.
    pub n_embd: usize,
    /// maxT: the longest context (rows of the position embedding).
    pub block_size: usize,
    /// V: tokens the tokenizer can produce.
    pub vocab_size: usize,
    /// Vp >= V: rows of the token embedding. Padding rows stay zero and take no part in the
    /// softmax; a multiple of 64 makes the LM-head product faster (50257 → 50304 for GPT-2).
    pub padded_vocab_size: usize,
    /// Dropout probability on embeddings, attention weights and residual branches (training only).
    pub dropout: f64,
}

impl Default for GptConfig {
    fn default() -> Self {
        GptConfig {
            n_layer: 12,
            n_head: 12,
            n_embd: 768,
            block_size: 1024,
            vocab_size: 50257,
            padded_vocab_size: 50304,
            dropout: 0.0,
        }
    }
}

impl GptConfig {
    /// Rounds `v` up to a multiple of `multiple` (1 = no padding).
    pub fn pad_vocab(v: usize, multiple: usize) -> usize {
        v.div_ceil(multiple.max(1)) * multiple.max(1)
    }

    pub fn head_size(&self) -> usize {
        self.n_embd / self.n_head
    }

    /// Checks that the shape is buildable; names the field at fault.
    pub fn validate(&self) -> Result<(), ModelError> {
        let err = |m: String| Err(ModelError::Config(m));
        for (name, v) in [
            ("n_layer", self.n_layer),
            ("n_head", self.n_head),
            ("n_embd", self.n_embd),
            ("block_size", self.block_size),
            ("vocab_size", self.vocab_size),
        ] {
            if v == 0 {
                return err(format!("{name} must be positive"));
            }
        }
        if !self.n_embd.is_multiple_of(self.n_head) {
            return err(format!(
                "n_embd {} is not a multiple of n_head {}",
                self.n_embd, self.n_head
            ));
        }
        if self.padded_vocab_size < self.vocab_size {
            return err(format!(
                "padded_vocab_size {} is smaller than vocab_size {}",
                self.padded_vocab_size, self.vocab_size
            ));
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return err(format!("dropout {} is outside [0, 1)", self.dropout));
        }
        Ok(())
    }

    /// Parameters that take part in the model (padding rows excluded).
    pub fn num_params(&self) -> usize {
        let c = self.n_embd;
        self.vocab_size * c + self.block_size * c + self.n_layer * (12 * c * c + 13 * c) + 2 * c
    }

    /// FLOPs of one training step (forward + backward) per token, counting a multiply-add as 2:
    /// 6 per parameter in a matrix product (PaLM's estimate) plus attention's 12·L·C·T.
    pub fn flops_per_token(&self, t: usize) -> f64 {
        let c = self.n_embd as f64;
        let matmul_params = self.n_layer as f64 * 12.0 * c * c + self.padded_vocab_size as f64 * c;
        6.0 * matmul_params + 12.0 * self.n_layer as f64 * c * t as f64
    }
}
