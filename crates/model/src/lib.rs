//! # ferrogpt-model: GPT-2
//!
//! * [`config`]: the model's hyperparameters ([`GptConfig`]).
//! * [`params`]: the flat parameter layout (one allocation, named views in HF GPT-2's names and
//!   layouts) and GPT-2 initialisation.
//! * [`gpt`]: the forward pass, written once on the tape; its backward follows.
//! * [`generate`]: sampling with temperature, top-k and top-p; stop strings.
//! * [`checkpoint`]: safetensors weights and `config.json` in Hugging Face GPT-2's format.
//! * [`gguf`]: llama.cpp's GGUF files (gpt2 and llama architectures, F32/F16/Q8_0), both ways.
//! * [`kvcache`]: incremental decoding with the key/value cache (reference loops and GEMV).
//! * [`quant`]: the decoder's weights in f32, bf16 or int8 (Q8_0) and quantized checkpoints.
//!
//! The model is a value ([`Gpt`]: a validated [`GptConfig`] and its [`ParamLayout`]); the
//! parameters are one flat f32 (or f64) buffer that the caller owns, row-major tensors at the
//! layout's offsets, in Hugging Face's names and layouts. Both families, GPT-2 and Llama, are
//! the same code with a [`config::Family`].
//!
//! Dependency rule: depends on ferrogpt-core (ops, tape) and ferrogpt-gemm (levels, GEMV)
//! only. ferrogpt-train trains a [`Gpt`] (its CPU engine runs [`Gpt::loss`] on the tape, its
//! checkpoints hold [`checkpoint`]'s files); the GPU engines (ferrogpt-gpu, ferrogpt-wgpu)
//! read the same [`ParamLayout`] and are tested against [`Gpt::forward`]; the `ferrogpt`
//! binary samples with [`generate`] and [`kvcache`], and converts with [`gguf`] and [`quant`].
//!
//! # Example
//!
//! A small GPT-2, initialised: its loss starts at about ln V (uniform predictions); the
//! key/value cache's logits match the full forward pass; greedy generation slides its window
//! past the block size; the weights survive a checkpoint round trip bit for bit.
//!
//! ```
//! use ferrogpt_core::{Level, Tape};
//! use ferrogpt_model::generate::{generate, Sampling};
//! use ferrogpt_model::kvcache::KvCache;
//! use ferrogpt_model::{checkpoint, Gpt, GptConfig, ModelError};
//! use rand::SeedableRng;
//!
//! let cfg = GptConfig {
//!     n_layer: 2, n_head: 2, n_embd: 32, block_size: 16, // L, NH, C, maxT
//!     vocab_size: 50, padded_vocab_size: GptConfig::pad_vocab(50, 64), // V = 50, Vp = 64
//!     ..GptConfig::default() // GPT-2: learned positions, LayerNorm, GELU, tied head
//! };
//! let model = Gpt::new(cfg)?;
//! let mut rng = rand_xoshiro::Xoshiro256PlusPlus::seed_from_u64(1);
//! let params: Vec<f32> = model.layout.init(&model.config, &mut rng); // N(0, 0.02)
//! assert_eq!(params.len(), model.layout.total);
//! // The padding rows (V..Vp of the embedding) are zero and not counted.
//! assert_eq!(model.config.num_params(), model.layout.total - 14 * 32);
//!
//! // Loss at initialisation, B = 2 sequences of T = 16: about ln 50 = 3.91.
//! let (b, t) = (2, 16);
//! let tokens: Vec<u32> = (0..b * t).map(|i| (i * 7 % 50) as u32).collect(); // (B, T)
//! let targets: Vec<u32> = tokens.iter().map(|&x| (x + 1) % 50).collect(); // (B, T)
//! model.check_tokens(&tokens, t)?;
//! assert!(matches!(model.check_tokens(&[50], 1), Err(ModelError::TokenId { id: 50, .. })));
//! let mut tape = Tape::<f32>::new(Level::fastest())?;
//! let loss = model.loss(&mut tape, &params, &tokens, &targets, t, &mut rng)?;
//! assert!((loss - 50f32.ln()).abs() < 0.05, "{loss}");
//!
//! // The cache computes one position at a time; its last logits are the forward pass's.
//! let seq = &tokens[..t];
//! tape.reset(false);
//! let logits = model.forward(&mut tape, &params, seq, t, true, &mut rng)?; // (1, Vp)
//! let full = &tape.value(logits)[..50];
//! let mut cache = KvCache::new();
//! let cached = cache.logits(&model, &params, seq)?;
//! assert_eq!(cache.len(), t);
//! assert!(full.iter().zip(&cached).all(|(a, b)| (a - b).abs() < 1e-4));
//!
//! // Greedy: temperature 0 takes the most likely token; 20 tokens after a prompt of 3 run
//! // past the block size of 16 (the window keeps the last 16).
//! let greedy = Sampling { temperature: 0.0, top_k: 0, top_p: 1.0, allowed: None, stop: None };
//! let out = generate(&model, &mut tape, &params, &[1, 2, 3], 20, greedy, &mut rng, |_| Ok(()))?;
//! assert!(out.len() == 20 && out.iter().all(|&id| id < 50));
//! let empty = generate(&model, &mut tape, &params, &[], 1, greedy, &mut rng, |_| Ok(()));
//! assert!(matches!(empty, Err(ModelError::EmptyPrompt)));
//!
//! // config.json and model.safetensors in Hugging Face GPT-2's format, read back.
//! let dir = std::env::temp_dir().join(format!("ferrogpt-model-doc-{}", std::process::id()));
//! std::fs::create_dir_all(&dir)?;
//! checkpoint::save_config(&dir, &model.config, None)?;
//! checkpoint::save_weights(&dir.join("model.safetensors"), &model, &params, Default::default())?;
//! let again = Gpt::new(checkpoint::load_config(&dir, 64)?)?;
//! assert_eq!(again.config, model.config);
//! let (loaded, _metadata) = checkpoint::load_weights(&dir.join("model.safetensors"), &again)?;
//! assert!(loaded == params);
//! # std::fs::remove_dir_all(&dir)?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

#![warn(missing_docs)]

pub mod checkpoint;
pub mod config;
pub mod generate;
pub mod gguf;
pub mod gpt;
pub mod kvcache;
pub mod params;
pub mod quant;

pub use config::GptConfig;
pub use gpt::Gpt;
pub use params::ParamLayout;

use std::path::{Path, PathBuf};

/// Errors of model construction, loading and generation; each names the file, tensor or field
/// at fault and keeps the error it came from (io, JSON, safetensors) as its source.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    // Config values (GptConfig::validate).
    /// A config value is out of range or does not fit another; `field` is the one at fault.
    #[error("invalid model config: {problem}")]
    Config {
        /// The [`GptConfig`] field at fault.
        field: &'static str,
        /// What is wrong, in words.
        problem: String,
    },
    /// [`ModelError::Config`] for the config read from a file.
    #[error("{}: invalid model config: {problem}", path.display())]
    ConfigFile {
        /// The file at fault.
        path: PathBuf,
        /// The [`GptConfig`] field at fault.
        field: &'static str,
        /// What is wrong, in words.
        problem: String,
    },

    // Files: config.json, safetensors, shard indexes.
    /// A file could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file at fault.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A JSON file (config.json, a shard index) does not parse.
    #[error("{}: not valid JSON: {source}", path.display())]
    Json {
        /// The file at fault.
        path: PathBuf,
        /// The underlying error.
        source: serde_json::Error,
    },
    /// A required integer field of config.json is absent or not an integer.
    #[error("{}: missing or non-integer field '{field}'", path.display())]
    NotInteger {
        /// The file at fault.
        path: PathBuf,
        /// The JSON key (or GGUF metadata key).
        field: String,
    },
    /// A number field of config.json holds something else.
    #[error("{}: field '{field}' is not a number", path.display())]
    NotNumber {
        /// The file at fault.
        path: PathBuf,
        /// The JSON key.
        field: String,
    },
    /// A config.json value names something ferrogpt does not implement (an activation, a model
    /// type, a RoPE type, biases): `found` is the value, `expected` what is taken.
    #[error("{}: {field} '{found}' is not supported (expected {expected})", path.display())]
    Unsupported {
        /// The file at fault.
        path: PathBuf,
        /// The field (a JSON or GGUF metadata key, or a tensor's type).
        field: String,
        /// The value found.
        found: String,
        /// What ferrogpt takes there.
        expected: &'static str,
    },
    /// A Llama config's head_dim is not hidden_size / num_attention_heads.
    #[error("{}: head_dim {head_dim} × {n_head} heads is not hidden_size {n_embd} (not supported)", path.display())]
    HeadDim {
        /// The file at fault.
        path: PathBuf,
        /// `head_dim` as the file gives it.
        head_dim: usize,
        /// `num_attention_heads`.
        n_head: usize,
        /// `hidden_size`.
        n_embd: usize,
    },
    /// Llama 3 RoPE scaling without one of its parameters.
    #[error("{}: rope parameters of type llama3 lack '{field}'", path.display())]
    RopeScaling {
        /// The file at fault.
        path: PathBuf,
        /// The missing parameter (`factor`, `low_freq_factor`, ...).
        field: &'static str,
    },
    /// A safetensors file does not parse.
    #[error("{}: not a valid safetensors file ({source})", path.display())]
    Safetensors {
        /// The file at fault.
        path: PathBuf,
        /// The underlying error.
        source: safetensors::SafeTensorError,
    },
    /// Tensors could not be serialised to safetensors.
    #[error("{}: {source}", path.display())]
    Serialize {
        /// The file at fault.
        path: PathBuf,
        /// The underlying error.
        source: safetensors::SafeTensorError,
    },
    /// A stored tensor has a dtype other than F32, BF16 and F16.
    #[error("{}: tensor '{name}' has dtype {dtype:?}; only F32, BF16 and F16 are supported", path.display())]
    TensorDtype {
        /// The file at fault.
        path: PathBuf,
        /// The tensor's name in the file.
        name: String,
        /// Its stored dtype.
        dtype: safetensors::Dtype,
    },
    /// A sharded checkpoint's index (`*.index.json`) is malformed.
    #[error("{}: {problem}", path.display())]
    ShardIndex {
        /// The file at fault.
        path: PathBuf,
        /// What is wrong, in words.
        problem: String,
    },
    /// A shard holds a tensor its index places elsewhere.
    #[error("{}: tensor '{name}' is in {shard}, which the weight_map does not say", path.display())]
    MisplacedTensor {
        /// The file at fault.
        path: PathBuf,
        /// The tensor's name in the file.
        name: String,
        /// The shard file it was found in.
        shard: String,
    },
    /// A tensor of the model is not in the file.
    #[error("{}: tensor '{name}' is missing (is this a {family} checkpoint of this shape?)", path.display())]
    MissingTensor {
        /// The file at fault.
        path: PathBuf,
        /// The tensor's name in the file.
        name: String,
        /// The model family expected ("gpt2" or "llama").
        family: &'static str,
    },
    /// A tensor's shape is not the one the config needs.
    #[error("{}: tensor '{name}' has shape {found:?}, the config needs {expected:?}", path.display())]
    TensorShape {
        /// The file at fault.
        path: PathBuf,
        /// The tensor's name in the file.
        name: String,
        /// The shape in the file.
        found: Vec<usize>,
        /// The shape the config needs (the V real rows for embeddings).
        expected: Vec<usize>,
    },
    /// The file holds a tensor the model does not have.
    #[error("{}: unexpected tensor '{name}' (not part of a {family} model of this config)", path.display())]
    UnexpectedTensor {
        /// The file at fault.
        path: PathBuf,
        /// The tensor's name in the file.
        name: String,
        /// The model family expected ("gpt2" or "llama").
        family: &'static str,
    },
    /// A GGUF file is malformed: not GGUF, another version, truncated (`problem` says which).
    #[error("{}: {problem}", path.display())]
    Gguf {
        /// The file at fault.
        path: PathBuf,
        /// What is wrong, in words.
        problem: String,
    },
    /// The weights hold a NaN or an infinity (at `index` of the flat layout).
    #[error("{}: weights contain a non-finite value (flat index {index})", path.display())]
    NonFinite {
        /// The file at fault.
        path: PathBuf,
        /// The first non-finite value's index in the flat buffer.
        index: usize,
    },

    // Inputs: parameter buffers, token sequences and prompts.
    /// A flat parameter buffer whose length is not the model's.
    #[error("{found} parameters for a model of {expected}")]
    ParamsLength {
        /// Length of the buffer given.
        found: usize,
        /// [`ParamLayout::total`] of the model.
        expected: usize,
    },
    /// A sequence length T outside 1..=block size.
    #[error("sequence length {t} is outside 1..={max} (the model's block size)")]
    SequenceLength {
        /// The length given.
        t: usize,
        /// The block size.
        max: usize,
    },
    /// A batch of token ids that is not B ≥ 1 whole rows of T.
    #[error("a batch of {len} token ids is not B >= 1 rows of T = {t}")]
    Batch {
        /// Token ids given.
        len: usize,
        /// T, the sequence length.
        t: usize,
    },
    /// Targets of another count than the token ids.
    #[error("{found} targets for {expected} token ids")]
    Targets {
        /// Targets given.
        found: usize,
        /// Token ids given.
        expected: usize,
    },
    /// A token id at or beyond the vocabulary.
    #[error("token id {id} at position {position} is beyond the vocabulary ({vocab} tokens)")]
    TokenId {
        /// The id.
        id: u32,
        /// Its index in the token slice (from 0, across the batch).
        position: usize,
        /// V, the vocabulary size.
        vocab: usize,
    },
    /// Generation without a prompt.
    #[error("the prompt is empty: give at least one token")]
    EmptyPrompt,
    /// A prompt longer than the block size.
    #[error("the prompt is {len} tokens long, more than the model's block size of {max}")]
    PromptLength {
        /// Tokens in the prompt.
        len: usize,
        /// The block size.
        max: usize,
    },
    /// A logits row of the wrong length from an engine.
    #[error("the engine returned {found} logits, expected the vocabulary's {expected}")]
    LogitsLength {
        /// Values returned.
        found: usize,
        /// V, the vocabulary size.
        expected: usize,
    },

    /// Converted decode weights that do not fit the model ([`quant::QuantError`]).
    #[error(transparent)]
    Quant(#[from] quant::QuantError),
    /// A matrix product or GEMV kernel could not run ([`ferrogpt_gemm::GemmError`]).
    #[error(transparent)]
    Gemm(#[from] ferrogpt_gemm::GemmError),
}

impl ModelError {
    /// An io error at `path`, for `map_err`.
    pub(crate) fn io(path: &Path) -> impl FnOnce(std::io::Error) -> Self + '_ {
        move |source| ModelError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}
