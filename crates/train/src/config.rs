//! A training run's settings and the presets.
//!
//! Every field can be set by a preset, then a TOML file (`--config`), then a command-line flag,
//! each overriding the last. The run's effective config is stored with its checkpoints.

use ferrogpt_model::config::{Family, Position, RopeScaling};
use ferrogpt_model::GptConfig;
use serde::{Deserialize, Serialize};

/// The learning-rate schedule after warmup ([`crate::schedule::learning_rate`] has the
/// formulas); `"constant"`, `"linear"` or `"cosine"` in a TOML file or the checkpoint's config.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Schedule {
    /// `lr` throughout.
    Constant,
    /// A straight line from `lr` down to `min_lr` at the last step.
    Linear,
    /// Half a cosine from `lr` down to `min_lr` at the last step (nanoGPT's).
    Cosine,
}

/// The optimizer ([`crate::optim`] has the update rules); `"adamw"` or `"sgd"` in a TOML file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OptimizerKind {
    /// AdamW, PyTorch's formulation: `beta1`, `beta2`, `eps`, decoupled `weight_decay`.
    AdamW,
    /// SGD with `momentum` and L2 `weight_decay`.
    Sgd,
}

/// Everything that defines a training run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrainConfig {
    // The model.
    /// L: transformer blocks.
    pub n_layer: usize,
    /// NH: attention (query) heads; must divide `n_embd`.
    pub n_head: usize,
    /// C: the model's width (channels).
    pub n_embd: usize,
    /// maxT: the model's longest context.
    pub block_size: usize,
    /// Dropout probability in [0, 1) on embeddings, attention weights and residual branches,
    /// while training only (0 = none).
    pub dropout: f64,
    /// Pad the vocabulary to a multiple of this (1 = none).
    pub vocab_multiple: usize,
    /// The model family: gpt2 or llama (see ferrogpt_model::config).
    pub family: Family,
    /// Learned or rotary positions (llama: rotary).
    pub pos: Position,
    /// RoPE's base.
    pub rope_theta: f64,
    /// Llama 3's rotary frequency scaling (from a model's config.json; None: plain RoPE).
    pub rope_scaling: Option<RopeScaling>,
    /// Key/value heads of grouped-query attention (0 = n_head).
    pub n_kv_head: usize,
    /// The MLP's hidden width (0 = 4 × n_embd).
    pub ffn_hidden: usize,
    /// RMSNorm's epsilon (llama).
    pub norm_eps: f64,
    /// The LM head shares the token embedding's weights (gpt2: always).
    pub tie_embeddings: bool,
    /// "char", "gpt2", or the path of a tokenizer (a tokenizer.json, a vocab.json with
    /// merges.txt beside it, or a directory holding either). A run started from `--init`
    /// records the tokenizer it took from there ("char", "gpt2", "hf" or "none").
    pub tokenizer: String,
    // The batches.
    /// B: windows per micro-batch, on each rank of a data-parallel run. A step sees
    /// `batch_size × seq_len × grad_accum × ranks` tokens.
    pub batch_size: usize,
    /// T of each training window; at most `block_size`.
    pub seq_len: usize,
    /// Micro-batches per optimizer step.
    pub grad_accum: usize,
    /// Consecutive windows (llm.c's loader) instead of random ones.
    pub sequential: bool,
    // The optimisation.
    /// AdamW or SGD.
    pub optimizer: OptimizerKind,
    /// The run's total number of optimizer steps.
    pub steps: usize,
    /// The peak learning rate, reached at the end of warmup.
    pub lr: f64,
    /// Where the linear and cosine schedules end, at the last step.
    pub min_lr: f64,
    /// The shape of the learning rate after warmup.
    pub lr_schedule: Schedule,
    /// Steps of linear warmup from `lr / (warmup + 1)` up to `lr` (0 = none).
    pub warmup: usize,
    /// AdamW's decoupled decay (`p -= lr·wd·p`) or SGD's L2 term (`g += wd·p`), on the 2-D
    /// tensors only (matrices and embeddings; not biases or norm weights), as nanoGPT.
    pub weight_decay: f64,
    /// AdamW's decay rate of the first moment (the presets: 0.9).
    pub beta1: f64,
    /// AdamW's decay rate of the second moment (the presets: 0.99 for the Shakespeare ones, 0.95
    /// for the larger).
    pub beta2: f64,
    /// AdamW's term added to √v̂ in the denominator.
    pub eps: f64,
    /// SGD momentum.
    pub momentum: f64,
    /// Clip gradients to this global norm (0 = off).
    pub grad_clip: f64,
    // Evaluation, logging, randomness.
    /// Evaluate (and checkpoint) every this many steps, and at the end (0 = only at the end).
    pub eval_interval: usize,
    /// Validation batches per evaluation.
    pub eval_batches: usize,
    /// The run's seed: initial weights, batch order and dropout masks follow from it (each its
    /// own stream, see [`crate::trainer`]), so the same seed and settings give the same run.
    pub seed: u64,
    /// Tokens sampled at the end of the run (0 = none).
    pub sample_tokens: usize,
    /// ZeRO stage of a data-parallel run: 0 (every rank holds the whole optimizer state) or 1
    /// (gradients reduce-scattered, the optimizer state and update sharded across the ranks,
    /// the parameters all-gathered).
    #[serde(default)]
    pub zero: u8,
    /// A multiple-choice eval file in llm.c's format (its HellaSwag file), scored at every
    /// evaluation; None: no such evaluation.
    #[serde(default)]
    pub eval_mc: Option<String>,
}

impl Default for TrainConfig {
    fn default() -> Self {
        preset("shakespeare-cpu").expect("the default preset exists")
    }
}

/// The names of the presets.
pub const PRESETS: &[&str] = &[
    "shakespeare-cpu",
    "shakespeare-char",
    "gpt2-124m",
    "gpt2-350m",
    "gpt2-774m",
    "gpt2-1558m",
    "llama-tiny",
    "smollm-135m",
];

/// A preset by name, or an error that lists the presets.
pub fn preset_or_err(name: &str) -> Result<TrainConfig, String> {
    preset(name).ok_or_else(|| {
        format!(
            "unknown preset '{name}' (expected one of: {})",
            PRESETS.join(", ")
        )
    })
}

/// A preset by name.
pub fn preset(name: &str) -> Option<TrainConfig> {
    // nanoGPT's Tiny Shakespeare recipe for a laptop CPU (its README's "shakespeare_char on a
    // MacBook" settings): val loss about 1.88 after 2000 steps.
    let cpu = TrainConfig {
        n_layer: 4,
        n_head: 4,
        n_embd: 128,
        block_size: 64,
        dropout: 0.0,
        vocab_multiple: 1,
        family: Family::Gpt2,
        pos: Position::Learned,
        rope_theta: 10_000.0,
        rope_scaling: None,
        n_kv_head: 0,
        ffn_hidden: 0,
        norm_eps: 1e-5,
        tie_embeddings: true,
        tokenizer: "char".into(),
        batch_size: 12,
        seq_len: 64,
        grad_accum: 1,
        sequential: false,
        optimizer: OptimizerKind::AdamW,
        steps: 2000,
        lr: 1e-3,
        min_lr: 1e-4,
        lr_schedule: Schedule::Cosine,
        warmup: 100,
        weight_decay: 0.1,
        beta1: 0.9,
        beta2: 0.99,
        eps: 1e-8,
        momentum: 0.9,
        grad_clip: 1.0,
        eval_interval: 250,
        eval_batches: 20,
        seed: 1337,
        sample_tokens: 200,
        zero: 0,
        eval_mc: None,
    };
    match name {
        "shakespeare-cpu" => Some(cpu),
        // nanoGPT's config/train_shakespeare_char.py: the GPU-sized run (val loss about 1.47).
        "shakespeare-char" => Some(TrainConfig {
            n_layer: 6,
            n_head: 6,
            n_embd: 384,
            block_size: 256,
            seq_len: 256,
            batch_size: 64,
            steps: 5000,
            dropout: 0.2,
            eval_interval: 250,
            eval_batches: 200,
            ..cpu
        }),
        // GPT-2 small with GPT-2's BPE; batch and length of llm.c's CPU reference (B=4, T=64).
        "gpt2-124m" => Some(TrainConfig {
            n_layer: 12,
            n_head: 12,
            n_embd: 768,
            block_size: 1024,
            vocab_multiple: 64,
            tokenizer: "gpt2".into(),
            batch_size: 4,
            seq_len: 64,
            steps: 100,
            lr: 6e-4,
            min_lr: 6e-5,
            warmup: 10,
            beta2: 0.95,
            eval_interval: 50,
            eval_batches: 10,
            ..cpu
        }),
        // GPT-2 medium, large and XL (OpenAI's shapes; llm.c's d24, d36, d48), sized for one
        // 80 GB GPU in bf16: batch 16 × 1024 (gpt2-1558m: 8 × 1024, or 16 with --recompute);
        // GPT-3's learning rates for these sizes, 10% at the end of the cosine.
        "gpt2-350m" | "gpt2-774m" | "gpt2-1558m" => {
            let (n_layer, n_head, n_embd, lr, batch_size) = match name {
                "gpt2-350m" => (24, 16, 1024, 3e-4, 16),
                "gpt2-774m" => (36, 20, 1280, 2.5e-4, 16),
                _ => (48, 25, 1600, 2e-4, 8),
            };
            Some(TrainConfig {
                n_layer,
                n_head,
                n_embd,
                block_size: 1024,
                vocab_multiple: 64,
                tokenizer: "gpt2".into(),
                batch_size,
                seq_len: 1024,
                steps: 100,
                lr,
                min_lr: lr / 10.0,
                warmup: 10,
                beta2: 0.95,
                eval_interval: 50,
                eval_batches: 10,
                ..cpu
            })
        }
        // A Llama of shakespeare-cpu's size (RMSNorm, SwiGLU with hidden 344 ≈ 8C/3 as Llama
        // sizes it, rotary positions, 2 key/value heads for 4 query heads, untied head):
        // trains on Tiny Shakespeare characters in a couple of minutes on two cores.
        "llama-tiny" => Some(TrainConfig {
            family: Family::Llama,
            pos: Position::Rope,
            n_kv_head: 2,
            ffn_hidden: 344,
            tie_embeddings: false,
            block_size: 128,
            seq_len: 128,
            batch_size: 8,
            ..cpu
        }),
        // HuggingFaceTB/SmolLM-135M's shape (its config.json): 30 layers, 576 channels, 9
        // heads sharing 3 key/value heads, SwiGLU 1536, tied head, vocab 49,152, θ 10,000,
        // RMSNorm ε 1e-5; batch 16 × 1024 for one GPU. Its own tokenizer comes with --init
        // or --tokenizer; with gpt2's the vocabulary is GPT-2's.
        "smollm-135m" => Some(TrainConfig {
            family: Family::Llama,
            pos: Position::Rope,
            n_layer: 30,
            n_head: 9,
            n_kv_head: 3,
            n_embd: 576,
            ffn_hidden: 1536,
            block_size: 1024,
            vocab_multiple: 64,
            tokenizer: "gpt2".into(),
            batch_size: 16,
            seq_len: 1024,
            steps: 100,
            lr: 3e-3,
            min_lr: 3e-4,
            warmup: 10,
            beta2: 0.95,
            eval_interval: 50,
            eval_batches: 10,
            ..cpu
        }),
        _ => None,
    }
}

impl TrainConfig {
    /// The model this run trains, for a tokenizer of `vocab_size` tokens.
    pub fn model_config(&self, vocab_size: usize) -> GptConfig {
        GptConfig {
            n_layer: self.n_layer,
            n_head: self.n_head,
            n_embd: self.n_embd,
            block_size: self.block_size,
            vocab_size,
            padded_vocab_size: GptConfig::pad_vocab(vocab_size, self.vocab_multiple),
            dropout: self.dropout,
            family: self.family,
            pos: self.pos,
            rope_theta: self.rope_theta,
            rope_scaling: self.rope_scaling,
            n_kv_head: (self.n_kv_head > 0).then_some(self.n_kv_head),
            ffn_hidden: (self.ffn_hidden > 0).then_some(self.ffn_hidden),
            norm_eps: self.norm_eps,
            tie_embeddings: self.tie_embeddings,
        }
    }

    /// Takes the shape of an existing model (a `--init` or resumed directory) for this run:
    /// every model field but dropout, which stays the run's.
    pub fn take_model(&mut self, m: &GptConfig) {
        self.n_layer = m.n_layer;
        self.n_head = m.n_head;
        self.n_embd = m.n_embd;
        self.block_size = m.block_size;
        self.family = m.family;
        self.pos = m.pos;
        self.rope_theta = m.rope_theta;
        self.rope_scaling = m.rope_scaling;
        self.n_kv_head = m.n_kv_head.unwrap_or(0);
        self.ffn_hidden = m.ffn_hidden.unwrap_or(0);
        self.norm_eps = m.norm_eps;
        self.tie_embeddings = m.tie_embeddings;
        self.seq_len = self.seq_len.min(self.block_size);
        if m.padded_vocab_size != self.model_config(m.vocab_size).padded_vocab_size {
            // Keep the stored padding: a multiple equal to it reproduces it exactly.
            self.vocab_multiple = m.padded_vocab_size;
        }
    }

    /// Checks the values that the model's own validation does not cover; names the field.
    pub fn validate(&self) -> Result<(), String> {
        let pos = |name: &str, v: usize| {
            if v == 0 {
                Err(format!("{name} must be positive"))
            } else {
                Ok(())
            }
        };
        pos("batch_size", self.batch_size)?;
        pos("seq_len", self.seq_len)?;
        pos("grad_accum", self.grad_accum)?;
        pos("vocab_multiple", self.vocab_multiple)?;
        if self.seq_len > self.block_size {
            return Err(format!(
                "seq_len {} is longer than block_size {}",
                self.seq_len, self.block_size
            ));
        }
        let finite_nonneg = |name: &str, v: f64| {
            if v.is_finite() && v >= 0.0 {
                Ok(())
            } else {
                Err(format!(
                    "{name} must be a finite non-negative number, got {v}"
                ))
            }
        };
        finite_nonneg("lr", self.lr)?;
        finite_nonneg("min_lr", self.min_lr)?;
        finite_nonneg("weight_decay", self.weight_decay)?;
        finite_nonneg("grad_clip", self.grad_clip)?;
        finite_nonneg("momentum", self.momentum)?;
        if !(self.eps.is_finite() && self.eps > 0.0) {
            return Err(format!("eps must be positive, got {}", self.eps));
        }
        for (name, b) in [("beta1", self.beta1), ("beta2", self.beta2)] {
            if !(0.0..1.0).contains(&b) {
                return Err(format!("{name} must be in [0, 1), got {b}"));
            }
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return Err(format!("dropout must be in [0, 1), got {}", self.dropout));
        }
        if self.zero > 1 {
            return Err(format!("zero must be 0 or 1, got {}", self.zero));
        }
        if self.tokenizer.is_empty() {
            return Err(
                "tokenizer must be char, gpt2 or the path of a tokenizer.json, got ''".into(),
            );
        }
        Ok(())
    }
}
