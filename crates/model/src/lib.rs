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
//! Dependency rule: depends on ferrogpt-core (ops, tape) and ferrogpt-gemm (levels) only.

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
        field: &'static str,
        problem: String,
    },
    /// [`ModelError::Config`] for the config read from a file.
    #[error("{}: invalid model config: {problem}", path.display())]
    ConfigFile {
        path: PathBuf,
        field: &'static str,
        problem: String,
    },

    // Files: config.json, safetensors, shard indexes.
    /// A file could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// A JSON file (config.json, a shard index) does not parse.
    #[error("{}: not valid JSON: {source}", path.display())]
    Json {
        path: PathBuf,
        source: serde_json::Error,
    },
    /// A required integer field of config.json is absent or not an integer.
    #[error("{}: missing or non-integer field '{field}'", path.display())]
    NotInteger { path: PathBuf, field: String },
    /// A number field of config.json holds something else.
    #[error("{}: field '{field}' is not a number", path.display())]
    NotNumber { path: PathBuf, field: String },
    /// A config.json value names something ferrogpt does not implement (an activation, a model
    /// type, a RoPE type, biases): `found` is the value, `expected` what is taken.
    #[error("{}: {field} '{found}' is not supported (expected {expected})", path.display())]
    Unsupported {
        path: PathBuf,
        field: String,
        found: String,
        expected: &'static str,
    },
    /// A Llama config's head_dim is not hidden_size / num_attention_heads.
    #[error("{}: head_dim {head_dim} × {n_head} heads is not hidden_size {n_embd} (not supported)", path.display())]
    HeadDim {
        path: PathBuf,
        head_dim: usize,
        n_head: usize,
        n_embd: usize,
    },
    /// Llama 3 RoPE scaling without one of its parameters.
    #[error("{}: rope parameters of type llama3 lack '{field}'", path.display())]
    RopeScaling { path: PathBuf, field: &'static str },
    /// A safetensors file does not parse.
    #[error("{}: not a valid safetensors file ({source})", path.display())]
    Safetensors {
        path: PathBuf,
        source: safetensors::SafeTensorError,
    },
    /// Tensors could not be serialised to safetensors.
    #[error("{}: {source}", path.display())]
    Serialize {
        path: PathBuf,
        source: safetensors::SafeTensorError,
    },
    /// A stored tensor has a dtype other than F32, BF16 and F16.
    #[error("{}: tensor '{name}' has dtype {dtype:?}; only F32, BF16 and F16 are supported", path.display())]
    TensorDtype {
        path: PathBuf,
        name: String,
        dtype: safetensors::Dtype,
    },
    /// A sharded checkpoint's index (`*.index.json`) is malformed.
    #[error("{}: {problem}", path.display())]
    ShardIndex { path: PathBuf, problem: String },
    /// A shard holds a tensor its index places elsewhere.
    #[error("{}: tensor '{name}' is in {shard}, which the weight_map does not say", path.display())]
    MisplacedTensor {
        path: PathBuf,
        name: String,
        shard: String,
    },
    /// A tensor of the model is not in the file.
    #[error("{}: tensor '{name}' is missing (is this a {family} checkpoint of this shape?)", path.display())]
    MissingTensor {
        path: PathBuf,
        name: String,
        family: &'static str,
    },
    /// A tensor's shape is not the one the config needs.
    #[error("{}: tensor '{name}' has shape {found:?}, the config needs {expected:?}", path.display())]
    TensorShape {
        path: PathBuf,
        name: String,
        found: Vec<usize>,
        expected: Vec<usize>,
    },
    /// The file holds a tensor the model does not have.
    #[error("{}: unexpected tensor '{name}' (not part of a {family} model of this config)", path.display())]
    UnexpectedTensor {
        path: PathBuf,
        name: String,
        family: &'static str,
    },
    /// A GGUF file is malformed: not GGUF, another version, truncated (`problem` says which).
    #[error("{}: {problem}", path.display())]
    Gguf { path: PathBuf, problem: String },
    /// The weights hold a NaN or an infinity (at `index` of the flat layout).
    #[error("{}: weights contain a non-finite value (flat index {index})", path.display())]
    NonFinite { path: PathBuf, index: usize },

    // Inputs: token sequences and prompts.
    /// A sequence length T outside 1..=block size.
    #[error("sequence length {t} is outside 1..={max} (the model's block size)")]
    SequenceLength { t: usize, max: usize },
    /// A token id at or beyond the vocabulary.
    #[error("token id {id} at position {position} is beyond the vocabulary ({vocab} tokens)")]
    TokenId {
        id: u32,
        position: usize,
        vocab: usize,
    },
    /// Generation without a prompt.
    #[error("the prompt is empty: give at least one token")]
    EmptyPrompt,
    /// A prompt longer than the block size.
    #[error("the prompt is {len} tokens long, more than the model's block size of {max}")]
    PromptLength { len: usize, max: usize },
    /// A logits row of the wrong length from an engine.
    #[error("the engine returned {found} logits, expected the vocabulary's {expected}")]
    LogitsLength { found: usize, expected: usize },

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
