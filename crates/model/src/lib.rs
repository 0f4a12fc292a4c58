//! # ferrogpt-model: GPT-2
//!
//! * [`config`]: the model's hyperparameters ([`GptConfig`]).
//! * [`params`]: the flat parameter layout (one allocation, named views in HF GPT-2's names and
//!   layouts) and GPT-2 initialisation.
//! * [`gpt`]: the forward pass, written once on the tape; its backward follows.
//! * [`generate`]: sampling with temperature and top-k.
//! * [`checkpoint`]: safetensors weights and `config.json` in Hugging Face GPT-2's format.
//!
//! Dependency rule: depends on ferrogpt-core (ops, tape) and ferrogpt-gemm (levels) only.

pub mod checkpoint;
pub mod config;
pub mod generate;
pub mod gpt;
pub mod kvcache;
pub mod params;

pub use config::GptConfig;
pub use gpt::Gpt;
pub use params::ParamLayout;

/// Errors of model construction, loading and generation; each names the file or field at fault.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("invalid model config: {0}")]
    Config(String),
    #[error("{path}: {msg}")]
    File { path: String, msg: String },
    #[error("{0}")]
    Input(String),
    #[error(transparent)]
    Gemm(#[from] ferrogpt_gemm::GemmError),
}

impl ModelError {
    pub(crate) fn file(path: &std::path::Path, msg: impl std::fmt::Display) -> Self {
        ModelError::File {
            path: path.display().to_string(),
            msg: msg.to_string(),
        }
    }
}
