//! The flat parameter layout.
//!
//! All parameters live in one buffer; [`ParamLayout`] names the view of each tensor, using the
//! names and layouts of Hugging Face's GPT-2 (linear weights in Conv1D layout, (in, out)):
//!
//! ```text
//! wte.weight                 (Vp, C)     token embedding, also the LM head (tied)
//! wpe.weight                 (maxT, C)   position embedding
//! h.{i}.ln_1.weight/.bias    (C)
//! h.{i}.attn.c_attn.weight   (C, 3C)     .bias (3C)
//! h.{i}.attn.c_proj.weight   (C, C)      .bias (C)
//! h.{i}.ln_2.weight/.bias    (C)
//! h.{i}.mlp.c_fc.weight      (C, 4C)     .bias (4C)
//! h.{i}.mlp.c_proj.weight    (4C, C)     .bias (C)
//! ln_f.weight/.bias          (C)
//! ```
//!
//! Gradients and the optimizer's moments use the same layout, so zeroing, AdamW and
//! checkpointing are loops over one buffer.

use crate::GptConfig;
use ferrogpt_core::{Float, Param};
use rand::Rng;
use rand_distr::{Distribution, Normal};

/// The views of one transformer block.
#[derive(Clone, Debug)]
pub struct BlockParams {
    pub ln_1_w: Param,
    pub ln_1_b: Param,
    pub attn_w: Param,
    pub attn_b: Param,
    pub attn_proj_w: Param,
    pub attn_proj_b: Param,
    pub ln_2_w: Param,
    pub ln_2_b: Param,
    pub fc_w: Param,
    pub fc_b: Param,
    pub fc_proj_w: Param,
    pub fc_proj_b: Param,
}

/// Where every tensor lives in the flat buffer.
#[derive(Clone, Debug)]
pub struct ParamLayout {
    pub wte: Param,
    pub wpe: Param,
    pub blocks: Vec<BlockParams>,
    pub ln_f_w: Param,
    pub ln_f_b: Param,
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
}

impl ParamLayout {
    pub fn new(cfg: &GptConfig) -> Self {
        let c = cfg.n_embd;
        let mut b = Builder {
            offset: 0,
            named: Vec::new(),
        };
        let wte = b.take("wte.weight".into(), cfg.padded_vocab_size, c);
        let wpe = b.take("wpe.weight".into(), cfg.block_size, c);
        let blocks = (0..cfg.n_layer)
            .map(|i| {
                let mut t = |s: &str, r, k| b.take(format!("h.{i}.{s}"), r, k);
                BlockParams {
                    ln_1_w: t("ln_1.weight", 1, c),
                    ln_1_b: t("ln_1.bias", 1, c),
                    attn_w: t("attn.c_attn.weight", c, 3 * c),
                    attn_b: t("attn.c_attn.bias", 1, 3 * c),
                    attn_proj_w: t("attn.c_proj.weight", c, c),
                    attn_proj_b: t("attn.c_proj.bias", 1, c),
                    ln_2_w: t("ln_2.weight", 1, c),
                    ln_2_b: t("ln_2.bias", 1, c),
                    fc_w: t("mlp.c_fc.weight", c, 4 * c),
                    fc_b: t("mlp.c_fc.bias", 1, 4 * c),
                    fc_proj_w: t("mlp.c_proj.weight", 4 * c, c),
                    fc_proj_b: t("mlp.c_proj.bias", 1, c),
                }
            })
            .collect();
        let ln_f_w = b.take("ln_f.weight".into(), 1, c);
        let ln_f_b = b.take("ln_f.bias".into(), 1, c);
        ParamLayout {
            wte,
            wpe,
            blocks,
            ln_f_w,
            ln_f_b,
            named: b.named,
            total: b.offset,
        }
    }

    /// The HF shape of a tensor: biases and LayerNorm parameters are 1-D.
    pub fn hf_shape(p: &Param) -> Vec<usize> {
        if p.rows == 1 {
            vec![p.cols]
        } else {
            vec![p.rows, p.cols]
        }
    }

    /// Per element of the flat buffer: whether AdamW's weight decay applies (2-D tensors:
    /// matrices and embeddings; not biases or LayerNorm parameters), as nanoGPT.
    pub fn decay_mask(&self) -> Vec<bool> {
        let mut mask = vec![false; self.total];
        for (_, p) in &self.named {
            if p.rows > 1 {
                mask[p.range()].fill(true);
            }
        }
        mask
    }

    /// GPT-2 initialisation: weights N(0, 0.02), the residual projections (attn.c_proj,
    /// mlp.c_proj) N(0, 0.02/sqrt(2L)), biases 0, LayerNorm weight 1 and bias 0. The padding rows
    /// of wte are zero.
    pub fn init<T: Float>(&self, cfg: &GptConfig, rng: &mut impl Rng) -> Vec<T> {
        let mut params = vec![T::ZERO; self.total];
        let std = 0.02;
        let proj_std = std / (2.0 * cfg.n_layer as f64).sqrt();
        let mut fill = |p: Param, s: f64, params: &mut [T]| {
            let d = Normal::new(0.0, s).expect("positive std");
            params[p.range()]
                .iter_mut()
                .for_each(|x| *x = T::from_f64(d.sample(rng)));
        };
        let real_wte = Param {
            rows: cfg.vocab_size,
            ..self.wte
        };
        fill(real_wte, std, &mut params);
        fill(self.wpe, std, &mut params);
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
