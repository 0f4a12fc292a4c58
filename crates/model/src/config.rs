//! The model's hyperparameters: one description for every family ferrogpt trains.
//!
//! A family ([`Family`]) fixes the layer kinds and the checkpoint names; the shape fields size
//! them. Both families are decoder-only transformers with pre-normalisation:
//!
//! | | GPT-2 (`gpt2`) | Llama (`llama`) |
//! |---|---|---|
//! | positions | learned table (`--pos rope`: rotary) | rotary (RoPE) |
//! | normalisation | LayerNorm with bias | RMSNorm, no bias |
//! | MLP | GELU (tanh), hidden F = 4C | SwiGLU, hidden F |
//! | attention | NH heads | NH query heads sharing KV key/value heads (GQA) |
//! | biases | every linear layer | none |
//! | LM head | tied to the token embedding | tied or its own (`tie_embeddings`) |
//! | checkpoint names | HF `GPT2LMHeadModel` | HF `LlamaForCausalLM` |

use crate::ModelError;
use serde::{Deserialize, Serialize};

/// A model family: which layers a block is made of, and how its tensors are named on disk.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Family {
    /// GPT-2: learned positions (or RoPE), LayerNorm, GELU, biases, a tied head.
    #[default]
    Gpt2,
    /// Llama: RoPE, RMSNorm, SwiGLU, grouped-query attention, no biases.
    Llama,
}

impl Family {
    /// "gpt2" or "llama": the serde name, and llama.cpp's architecture.
    pub fn name(self) -> &'static str {
        match self {
            Family::Gpt2 => "gpt2",
            Family::Llama => "llama",
        }
    }
}

/// How the model knows where a token is.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Position {
    /// A learned table of `block_size` position vectors added to the token embedding (GPT-2).
    #[default]
    Learned,
    /// Rotary embeddings (Su et al., RoFormer): each query and key head is rotated by angles
    /// proportional to its position, in HF Llama's "rotate half" pairing.
    Rope,
}

/// Llama 3's rescaling of the rotary frequencies for contexts longer than it was trained on
/// (HF `rope_type: "llama3"`): long wavelengths are slowed by `factor`, short ones kept, the
/// band between interpolated.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct RopeScaling {
    /// How much slower the long wavelengths turn (8 for Llama 3.1).
    pub factor: f64,
    /// Wavelengths above `original_max_position_embeddings / low_freq_factor` are divided by
    /// `factor`.
    pub low_freq_factor: f64,
    /// Wavelengths below `original_max_position_embeddings / high_freq_factor` are kept; must
    /// differ from `low_freq_factor` (the band between is interpolated over their difference).
    pub high_freq_factor: f64,
    /// The context length the model was trained at, in positions.
    pub original_max_position_embeddings: usize,
}

impl RopeScaling {
    /// Checks that the frequencies come out finite: `factor`, `low_freq_factor` and
    /// `high_freq_factor` positive and finite, the last two different,
    /// `original_max_position_embeddings` positive. Errors: [`ModelError::Config`] whose field
    /// is `rope_scaling.KEY`, KEY the parameter's config.json key.
    fn validate(&self) -> Result<(), ModelError> {
        let err = |field: &'static str, problem: String| Err(ModelError::Config { field, problem });
        for (field, key, v) in [
            ("rope_scaling.factor", "factor", self.factor),
            (
                "rope_scaling.low_freq_factor",
                "low_freq_factor",
                self.low_freq_factor,
            ),
            (
                "rope_scaling.high_freq_factor",
                "high_freq_factor",
                self.high_freq_factor,
            ),
        ] {
            if !(v.is_finite() && v > 0.0) {
                return err(
                    field,
                    format!("rope scaling {key} must be a positive finite number, got {v}"),
                );
            }
        }
        if self.high_freq_factor == self.low_freq_factor {
            return err(
                "rope_scaling.high_freq_factor",
                format!(
                    "rope scaling high_freq_factor must differ from low_freq_factor (both {})",
                    self.low_freq_factor
                ),
            );
        }
        if self.original_max_position_embeddings == 0 {
            return err(
                "rope_scaling.original_max_position_embeddings",
                "rope scaling original_max_position_embeddings must be positive".into(),
            );
        }
        Ok(())
    }
}

fn default_theta() -> f64 {
    10_000.0
}

fn default_eps() -> f64 {
    1e-5
}

fn default_true() -> bool {
    true
}

/// The shape of a model. Defaults are GPT-2 small (124M).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GptConfig {
    /// L: transformer blocks.
    pub n_layer: usize,
    /// NH: attention (query) heads; must divide `n_embd`.
    pub n_head: usize,
    /// C: channels.
    pub n_embd: usize,
    /// maxT: the longest context (rows of a learned position table).
    pub block_size: usize,
    /// V: tokens the tokenizer can produce.
    pub vocab_size: usize,
    /// Vp >= V: rows of the token embedding (and of an untied LM head). Padding rows stay zero
    /// and take no part in the softmax; a multiple of 64 makes the LM-head product faster
    /// (50257 → 50304 for GPT-2).
    pub padded_vocab_size: usize,
    /// Dropout probability on embeddings, attention weights and residual branches (training only).
    pub dropout: f64,
    /// The layer kinds and checkpoint names.
    #[serde(default)]
    pub family: Family,
    /// Learned or rotary positions (Llama: always rotary).
    #[serde(default)]
    pub pos: Position,
    /// RoPE's base: head dimension pair i turns at `theta^(-2i/HS)` radians per position.
    #[serde(default = "default_theta")]
    pub rope_theta: f64,
    /// Llama 3's frequency rescaling; None: plain RoPE.
    #[serde(default)]
    pub rope_scaling: Option<RopeScaling>,
    /// KV: key/value heads (grouped-query attention); None: NH (every head its own).
    #[serde(default)]
    pub n_kv_head: Option<usize>,
    /// F: the MLP's hidden width; None: 4C (GPT-2's).
    #[serde(default)]
    pub ffn_hidden: Option<usize>,
    /// ε of RMSNorm (Llama). GPT-2's LayerNorm uses its own fixed 1e-5.
    #[serde(default = "default_eps")]
    pub norm_eps: f64,
    /// The LM head is the token embedding (GPT-2 always; Llama models choose).
    #[serde(default = "default_true")]
    pub tie_embeddings: bool,
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
            family: Family::Gpt2,
            pos: Position::Learned,
            rope_theta: default_theta(),
            rope_scaling: None,
            n_kv_head: None,
            ffn_hidden: None,
            norm_eps: default_eps(),
            tie_embeddings: true,
        }
    }
}

impl GptConfig {
    /// Rounds `v` up to a multiple of `multiple` (1 or 0 = no padding).
    pub fn pad_vocab(v: usize, multiple: usize) -> usize {
        v.div_ceil(multiple.max(1)) * multiple.max(1)
    }

    /// HS: channels per head. Panics if `n_head` is 0 (see [`GptConfig::validate`]).
    pub fn head_size(&self) -> usize {
        self.n_embd / self.n_head
    }

    /// KV: key/value heads.
    pub fn kv_heads(&self) -> usize {
        self.n_kv_head.unwrap_or(self.n_head)
    }

    /// F: the MLP's hidden width.
    pub fn ffn(&self) -> usize {
        self.ffn_hidden.unwrap_or(4 * self.n_embd)
    }

    /// Width of the packed query/key/value activation: (NH + 2·KV)·HS.
    pub fn qkv_width(&self) -> usize {
        (self.n_head + 2 * self.kv_heads()) * self.head_size()
    }

    /// Whether positions are rotary ([`Position::Rope`]).
    pub fn rotary(&self) -> bool {
        self.pos == Position::Rope
    }

    /// RoPE's inverse frequencies, HS/2 of them: `theta^(-2i/HS)`, rescaled as Llama 3 does
    /// when [`GptConfig::rope_scaling`] is set (HF's `_compute_llama3_parameters`).
    pub fn rope_inv_freq(&self) -> Vec<f64> {
        let hs = self.head_size();
        let plain = (0..hs / 2).map(|i| self.rope_theta.powf(-((2 * i) as f64) / hs as f64));
        let Some(s) = self.rope_scaling else {
            return plain.collect();
        };
        let old = s.original_max_position_embeddings as f64;
        let (low_wavelen, high_wavelen) = (old / s.low_freq_factor, old / s.high_freq_factor);
        plain
            .map(|f| {
                let wavelen = 2.0 * std::f64::consts::PI / f;
                if wavelen < high_wavelen {
                    f
                } else if wavelen > low_wavelen {
                    f / s.factor
                } else {
                    let smooth = (old / wavelen - s.low_freq_factor)
                        / (s.high_freq_factor - s.low_freq_factor);
                    (1.0 - smooth) * f / s.factor + smooth * f
                }
            })
            .collect()
    }

    /// Checks that the shape is buildable and its rotary frequencies finite. Errors:
    /// [`ModelError::Config`], naming the field at fault (`rope_scaling.factor` and the like
    /// for [`RopeScaling`]'s parameters, by their config.json keys).
    pub fn validate(&self) -> Result<(), ModelError> {
        let err = |field: &'static str, problem: String| Err(ModelError::Config { field, problem });
        for (name, v) in [
            ("n_layer", self.n_layer),
            ("n_head", self.n_head),
            ("n_embd", self.n_embd),
            ("block_size", self.block_size),
            ("vocab_size", self.vocab_size),
            ("n_kv_head", self.kv_heads()),
            ("ffn_hidden", self.ffn()),
        ] {
            if v == 0 {
                return err(name, format!("{name} must be positive"));
            }
        }
        if !self.n_embd.is_multiple_of(self.n_head) {
            return err(
                "n_embd",
                format!(
                    "n_embd {} is not a multiple of n_head {}",
                    self.n_embd, self.n_head
                ),
            );
        }
        if !self.n_head.is_multiple_of(self.kv_heads()) {
            return err(
                "n_kv_head",
                format!(
                    "n_head {} is not a multiple of n_kv_head {}",
                    self.n_head,
                    self.kv_heads()
                ),
            );
        }
        if self.padded_vocab_size < self.vocab_size {
            return err(
                "padded_vocab_size",
                format!(
                    "padded_vocab_size {} is smaller than vocab_size {}",
                    self.padded_vocab_size, self.vocab_size
                ),
            );
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return err(
                "dropout",
                format!("dropout {} is outside [0, 1)", self.dropout),
            );
        }
        if self.rotary() && !self.head_size().is_multiple_of(2) {
            return err(
                "n_head",
                format!(
                    "rotary positions need an even head size, got {}",
                    self.head_size()
                ),
            );
        }
        if self.rotary() && !(self.rope_theta.is_finite() && self.rope_theta > 1.0) {
            return err(
                "rope_theta",
                format!("rope_theta must be above 1, got {}", self.rope_theta),
            );
        }
        if let Some(s) = self.rope_scaling {
            s.validate()?;
        }
        if !(self.norm_eps.is_finite() && self.norm_eps > 0.0) {
            return err(
                "norm_eps",
                format!("norm_eps must be positive, got {}", self.norm_eps),
            );
        }
        match self.family {
            Family::Gpt2 => {
                if self.kv_heads() != self.n_head {
                    return err(
                        "n_kv_head",
                        "grouped-query attention (n_kv_head) needs the llama family".into(),
                    );
                }
                if !self.tie_embeddings {
                    return err(
                        "tie_embeddings",
                        "GPT-2's LM head is always tied to its token embedding".into(),
                    );
                }
            }
            Family::Llama => {
                if !self.rotary() {
                    return err(
                        "pos",
                        "the llama family uses rotary positions (pos = rope)".into(),
                    );
                }
            }
        }
        Ok(())
    }

    /// Matrix-product weights of one block (the 6·N of the FLOPs estimate).
    fn block_matrix_params(&self) -> usize {
        let c = self.n_embd;
        let mlp = match self.family {
            Family::Gpt2 => 2 * c * self.ffn(),
            Family::Llama => 3 * c * self.ffn(),
        };
        c * self.qkv_width() + c * c + mlp
    }

    /// Parameters that take part in the model (padding rows excluded).
    pub fn num_params(&self) -> usize {
        let c = self.n_embd;
        let (block_vectors, final_vectors) = match self.family {
            // Two LayerNorms (weight, bias), the qkv, projection and MLP biases.
            Family::Gpt2 => (4 * c + self.qkv_width() + c + self.ffn() + c, 2 * c),
            // Two RMSNorm weights.
            Family::Llama => (2 * c, c),
        };
        let pos = if self.rotary() {
            0
        } else {
            self.block_size * c
        };
        let head = if self.tie_embeddings {
            0
        } else {
            self.vocab_size * c
        };
        self.vocab_size * c
            + pos
            + head
            + self.n_layer * (self.block_matrix_params() + block_vectors)
            + final_vectors
    }

    /// FLOPs of one training step (forward + backward) per token, counting a multiply-add as 2:
    /// 6 per parameter in a matrix product (PaLM's estimate) plus attention's 12·L·C·T.
    pub fn flops_per_token(&self, t: usize) -> f64 {
        let c = self.n_embd as f64;
        let matmul_params = self.n_layer as f64 * self.block_matrix_params() as f64
            + self.padded_vocab_size as f64 * c;
        6.0 * matmul_params + 12.0 * self.n_layer as f64 * c * t as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn llama3() -> GptConfig {
        GptConfig {
            n_layer: 1,
            n_head: 2,
            n_embd: 16,
            block_size: 8,
            vocab_size: 10,
            padded_vocab_size: 16,
            family: Family::Llama,
            pos: Position::Rope,
            rope_scaling: Some(RopeScaling {
                factor: 8.0,
                low_freq_factor: 1.0,
                high_freq_factor: 4.0,
                original_max_position_embeddings: 4,
            }),
            ..GptConfig::default()
        }
    }

    /// A rope scaling that would make an infinite or NaN frequency is refused, naming its
    /// config.json key; a valid one gives finite frequencies.
    #[test]
    fn rope_scaling_is_validated() {
        let ok = llama3();
        ok.validate().unwrap();
        assert!(ok.rope_inv_freq().iter().all(|f| f.is_finite() && *f > 0.0));
        let bad = |edit: &dyn Fn(&mut RopeScaling), key: &str| {
            let mut cfg = llama3();
            edit(cfg.rope_scaling.as_mut().unwrap());
            match cfg.validate() {
                Err(ModelError::Config { field, problem }) => {
                    assert_eq!(field, format!("rope_scaling.{key}"), "{problem}");
                    assert!(problem.contains(key), "{problem}");
                }
                other => panic!("{key}: expected a config error, got {other:?}"),
            }
        };
        for v in [0.0, -2.0, f64::NAN, f64::INFINITY] {
            bad(&|s| s.factor = v, "factor");
            bad(&|s| s.low_freq_factor = v, "low_freq_factor");
            bad(&|s| s.high_freq_factor = v, "high_freq_factor");
        }
        bad(
            &|s| s.high_freq_factor = s.low_freq_factor,
            "high_freq_factor",
        );
        bad(
            &|s| s.original_max_position_embeddings = 0,
            "original_max_position_embeddings",
        );
    }
}
