//! The flat parameter layout.
//!
//! All parameters live in one buffer; [`ParamLayout`] names the view of each tensor with the
//! names and layouts of the family's Hugging Face checkpoints, so a checkpoint is one write per
//! tensor and no transposes.
//!
//! GPT-2 (`GPT2LMHeadModel`; linear weights in Conv1D layout, (in, out)):
//!
//! ```text
//! wte.weight                 (Vp, C)     token embedding, also the LM head (tied)
//! wpe.weight                 (maxT, C)   position embedding (absent with rotary positions)
//! h.{i}.ln_1.weight/.bias    (C)
//! h.{i}.attn.c_attn.weight   (C, 3C)     .bias (3C)
//! h.{i}.attn.c_proj.weight   (C, C)      .bias (C)
//! h.{i}.ln_2.weight/.bias    (C)
//! h.{i}.mlp.c_fc.weight      (C, F)      .bias (F)
//! h.{i}.mlp.c_proj.weight    (F, C)      .bias (C)
//! ln_f.weight/.bias          (C)
//! ```
//!
//! Llama (`LlamaForCausalLM`; linear weights in PyTorch's (out, in) layout, no biases):
//!
//! ```text
//! model.embed_tokens.weight                    (Vp, C)
//! model.layers.{i}.input_layernorm.weight      (C)
//! model.layers.{i}.self_attn.q_proj.weight     (NH·HS, C)  ┐ adjacent: one (NH+2KV)·HS × C
//! model.layers.{i}.self_attn.k_proj.weight     (KV·HS, C)  │ matrix, the packed qkv
//! model.layers.{i}.self_attn.v_proj.weight     (KV·HS, C)  ┘ projection
//! model.layers.{i}.self_attn.o_proj.weight     (C, NH·HS)
//! model.layers.{i}.post_attention_layernorm.weight (C)
//! model.layers.{i}.mlp.gate_proj.weight        (F, C)      ┐ adjacent: one 2F × C matrix,
//! model.layers.{i}.mlp.up_proj.weight          (F, C)      ┘ [gate | up] for SwiGLU
//! model.layers.{i}.mlp.down_proj.weight        (C, F)
//! model.norm.weight                            (C)
//! lm_head.weight                               (Vp, C)     absent when tied
//! ```
//!
//! Gradients and the optimizer's moments use the same layout, so zeroing, AdamW and
//! checkpointing are loops over one buffer.

use crate::config::{Family, GptConfig};
use ferrogpt_core::{Float, Param};
use rand::Rng;
use rand_distr::{Distribution, Normal};

/// The views of one transformer block. Matrices are (in, out) when the layout's
/// `weights_out_in` is false (GPT-2) and (out, in) when it is true (Llama).
#[derive(Clone, Debug)]
pub struct BlockParams {
    /// The first norm (LayerNorm weight and bias, or RMSNorm weight).
    pub ln_1_w: Param,
    /// The first LayerNorm's bias (C); None for RMSNorm.
    pub ln_1_b: Option<Param>,
    /// The packed query/key/value projection, C → (NH + 2·KV)·HS.
    pub attn_w: Param,
    /// Its bias ((NH + 2·KV)·HS); None in Llama.
    pub attn_b: Option<Param>,
    /// The attention output projection, NH·HS → C.
    pub attn_proj_w: Param,
    /// Its bias (C); None in Llama.
    pub attn_proj_b: Option<Param>,
    /// The second norm's weight (C), before the MLP.
    pub ln_2_w: Param,
    /// The second LayerNorm's bias (C); None for RMSNorm.
    pub ln_2_b: Option<Param>,
    /// The MLP's input projection: C → F (GELU) or C → 2F, [gate | up] (SwiGLU).
    pub fc_w: Param,
    /// Its bias (F); None in Llama.
    pub fc_b: Option<Param>,
    /// The MLP's output projection, F → C.
    pub fc_proj_w: Param,
    /// Its bias (C); None in Llama.
    pub fc_proj_b: Option<Param>,
}

/// Where every tensor lives in the flat buffer.
#[derive(Clone, Debug)]
pub struct ParamLayout {
    /// Token embedding (Vp, C).
    pub wte: Param,
    /// Learned positions (maxT, C); None with rotary positions.
    pub wpe: Option<Param>,
    /// The L transformer blocks, in order.
    pub blocks: Vec<BlockParams>,
    /// The final norm's weight (C).
    pub ln_f_w: Param,
    /// The final LayerNorm's bias (C); None for RMSNorm.
    pub ln_f_b: Option<Param>,
    /// An untied LM head (Vp, C); None: the head is `wte`.
    pub lm_head: Option<Param>,
    /// Linear weights are stored (out, in) (PyTorch's nn.Linear, Llama) rather than (in, out)
    /// (GPT-2's Conv1D).
    pub weights_out_in: bool,
    /// Every tensor with its HF name, in buffer order.
    pub named: Vec<(String, Param)>,
    /// Length of the flat buffer.
    pub total: usize,
}

struct Builder {
    offset: usize,
    named: Vec<(String, Param)>,
}

impl Builder {
    fn take(&mut self, name: String, rows: usize, cols: usize) -> Param {
        let p = Param {
            offset: self.offset,
            rows,
            cols,
        };
        self.offset += rows * cols;
        self.named.push((name, p));
        p
    }

    /// Consecutive (rows_i, cols) tensors taken in order, as one (Σ rows_i, cols) view.
    fn stacked(&mut self, parts: &[(String, usize)], cols: usize) -> Param {
        let offset = self.offset;
        let rows = parts
            .iter()
            .map(|(n, r)| self.take(n.clone(), *r, cols).rows)
            .sum();
        Param { offset, rows, cols }
    }
}

impl ParamLayout {
    /// The layout of `cfg`'s family, tensors in the order of the module doc, from offset 0.
    /// Expects a validated config ([`GptConfig::validate`]; [`crate::Gpt::new`] checks it):
    /// a Llama with `n_head` 0 panics.
    pub fn new(cfg: &GptConfig) -> Self {
        match cfg.family {
            Family::Gpt2 => Self::gpt2(cfg),
            Family::Llama => Self::llama(cfg),
        }
    }

    fn gpt2(cfg: &GptConfig) -> Self {
        let (c, f) = (cfg.n_embd, cfg.ffn());
        let mut b = Builder {
            offset: 0,
            named: Vec::new(),
        };
        let wte = b.take("wte.weight".into(), cfg.padded_vocab_size, c);
        let wpe = (!cfg.rotary()).then(|| b.take("wpe.weight".into(), cfg.block_size, c));
        let blocks = (0..cfg.n_layer)
            .map(|i| {
                let mut t = |s: &str, r, k| b.take(format!("h.{i}.{s}"), r, k);
                BlockParams {
                    ln_1_w: t("ln_1.weight", 1, c),
                    ln_1_b: Some(t("ln_1.bias", 1, c)),
                    attn_w: t("attn.c_attn.weight", c, 3 * c),
                    attn_b: Some(t("attn.c_attn.bias", 1, 3 * c)),
                    attn_proj_w: t("attn.c_proj.weight", c, c),
                    attn_proj_b: Some(t("attn.c_proj.bias", 1, c)),
                    ln_2_w: t("ln_2.weight", 1, c),
                    ln_2_b: Some(t("ln_2.bias", 1, c)),
                    fc_w: t("mlp.c_fc.weight", c, f),
                    fc_b: Some(t("mlp.c_fc.bias", 1, f)),
                    fc_proj_w: t("mlp.c_proj.weight", f, c),
                    fc_proj_b: Some(t("mlp.c_proj.bias", 1, c)),
                }
            })
            .collect();
        let ln_f_w = b.take("ln_f.weight".into(), 1, c);
        let ln_f_b = Some(b.take("ln_f.bias".into(), 1, c));
        ParamLayout {
            wte,
            wpe,
            blocks,
            ln_f_w,
            ln_f_b,
            lm_head: None,
            weights_out_in: false,
            named: b.named,
            total: b.offset,
        }
    }

    fn llama(cfg: &GptConfig) -> Self {
        let (c, f, hs) = (cfg.n_embd, cfg.ffn(), cfg.head_size());
        let (q, kv) = (cfg.n_head * hs, cfg.kv_heads() * hs);
        let mut b = Builder {
            offset: 0,
            named: Vec::new(),
        };
        let wte = b.take("model.embed_tokens.weight".into(), cfg.padded_vocab_size, c);
        let blocks = (0..cfg.n_layer)
            .map(|i| {
                let n = |s: &str| format!("model.layers.{i}.{s}");
                let ln_1_w = b.take(n("input_layernorm.weight"), 1, c);
                let attn_w = b.stacked(
                    &[
                        (n("self_attn.q_proj.weight"), q),
                        (n("self_attn.k_proj.weight"), kv),
                        (n("self_attn.v_proj.weight"), kv),
                    ],
                    c,
                );
                let attn_proj_w = b.take(n("self_attn.o_proj.weight"), c, q);
                let ln_2_w = b.take(n("post_attention_layernorm.weight"), 1, c);
                let fc_w = b.stacked(
                    &[(n("mlp.gate_proj.weight"), f), (n("mlp.up_proj.weight"), f)],
                    c,
                );
                let fc_proj_w = b.take(n("mlp.down_proj.weight"), c, f);
                BlockParams {
                    ln_1_w,
                    ln_1_b: None,
                    attn_w,
                    attn_b: None,
                    attn_proj_w,
                    attn_proj_b: None,
                    ln_2_w,
                    ln_2_b: None,
                    fc_w,
                    fc_b: None,
                    fc_proj_w,
                    fc_proj_b: None,
                }
            })
            .collect();
        let ln_f_w = b.take("model.norm.weight".into(), 1, c);
        let lm_head = (!cfg.tie_embeddings)
            .then(|| b.take("lm_head.weight".into(), cfg.padded_vocab_size, c));
        ParamLayout {
            wte,
            wpe: None,
            blocks,
            ln_f_w,
            ln_f_b: None,
            lm_head,
            weights_out_in: true,
            named: b.named,
            total: b.offset,
        }
    }

    /// The LM head: (Vp, C), logits = x · headᵀ.
    pub fn head(&self) -> Param {
        self.lm_head.unwrap_or(self.wte)
    }

    /// Whether `p` has a row per vocabulary entry (the token embedding, an untied head): such
    /// tensors are stored with their V real rows only.
    pub fn is_vocab_rows(&self, p: &Param) -> bool {
        *p == self.wte || Some(*p) == self.lm_head
    }

    /// The HF shape of a tensor: biases and norm parameters are 1-D.
    pub fn hf_shape(p: &Param) -> Vec<usize> {
        if p.rows == 1 {
            vec![p.cols]
        } else {
            vec![p.rows, p.cols]
        }
    }

    /// Per element of the flat buffer: whether AdamW's weight decay applies (2-D tensors:
    /// matrices and embeddings; not biases or norm parameters), as nanoGPT.
    pub fn decay_mask(&self) -> Vec<bool> {
        let mut mask = vec![false; self.total];
        for (_, p) in &self.named {
            if p.rows > 1 {
                mask[p.range()].fill(true);
            }
        }
        mask
    }

    /// Initialisation. GPT-2: weights N(0, 0.02), the residual projections (attn.c_proj,
    /// mlp.c_proj) N(0, 0.02/sqrt(2L)), biases 0, LayerNorm weight 1 and bias 0. Llama (as
    /// HF's `LlamaPreTrainedModel`): every matrix and embedding N(0, 0.02), RMSNorm weights 1.
    /// The padding rows of the embedding and head are zero.
    pub fn init<T: Float>(&self, cfg: &GptConfig, rng: &mut impl Rng) -> Vec<T> {
        let mut params = vec![T::ZERO; self.total];
        let std = 0.02;
        let proj_std = match cfg.family {
            Family::Gpt2 => std / (2.0 * cfg.n_layer as f64).sqrt(),
            Family::Llama => std,
        };
        let mut fill = |p: Param, s: f64, params: &mut [T]| {
            let d = Normal::new(0.0, s).expect("positive std");
            params[p.range()]
                .iter_mut()
                .for_each(|x| *x = T::from_f64(d.sample(rng)));
        };
        for vocab in [Some(self.wte), self.lm_head].into_iter().flatten() {
            let real = Param {
                rows: cfg.vocab_size,
                ..vocab
            };
            fill(real, std, &mut params);
        }
        if let Some(wpe) = self.wpe {
            fill(wpe, std, &mut params);
        }
        for blk in &self.blocks {
            fill(blk.attn_w, std, &mut params);
            fill(blk.attn_proj_w, proj_std, &mut params);
            fill(blk.fc_w, std, &mut params);
            fill(blk.fc_proj_w, proj_std, &mut params);
            params[blk.ln_1_w.range()].fill(T::ONE);
            params[blk.ln_2_w.range()].fill(T::ONE);
        }
        params[self.ln_f_w.range()].fill(T::ONE);
        params
    }
}
