//! `ferrogpt sample`: stream generated text from a checkpoint (ours or Hugging Face GPT-2's).

use crate::common::{engine_factory, Compute, DeviceArgs};
use ferrogpt_model::generate::Sampling;
use ferrogpt_train::checkpoint::load_model;
use ferrogpt_train::data::DataError;
use ferrogpt_train::engine::generate;
use ferrogpt_train::tokenizer::{StreamDecoder, Tokenizer};
use ferrogpt_train::{EngineError, EngineInit};
use rand::SeedableRng;
use std::io::Write;
use std::path::PathBuf;

#[derive(Clone, Debug, clap::Args)]
pub struct SampleArgs {
    /// A run directory of ours or a Hugging Face GPT-2 directory
    #[arg(long)]
    checkpoint: PathBuf,
    /// Text to continue [default: a newline for char models, the end-of-text token
    /// (<|endoftext|>) for others]
    #[arg(long)]
    prompt: Option<String>,
    /// Tokens to generate
    #[arg(long, default_value_t = 300)]
    tokens: usize,
    /// Softmax temperature (0 = always the most likely token)
    #[arg(long, default_value_t = 0.8, allow_negative_numbers = true)]
    temperature: f64,
    /// Sample among the k most likely tokens (0 = all)
    #[arg(long, default_value_t = 40)]
    top_k: usize,
    /// Seed of the sampling
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Keep generating past the tokenizer's end-of-text token [default: stop after it, as
    /// transformers' generate does]
    #[arg(long)]
    no_stop: bool,
    #[command(flatten)]
    compute: Compute,
    #[command(flatten)]
    device: DeviceArgs,
}

pub fn run(a: SampleArgs) -> Result<(), String> {
    if !(a.temperature.is_finite() && a.temperature >= 0.0) {
        return Err(format!(
            "--temperature must be a non-negative number, got {}",
            a.temperature
        ));
    }
    let level = a.compute.setup()?;
    let make_engine = engine_factory(level, &a.device)?;
    let loaded = load_model(&a.checkpoint, 64).map_err(|e| e.to_string())?;
    let tok = &loaded.tokenizer;
    let prompt = match &a.prompt {
        Some(p) => tok.encode(p).map_err(|e| format!("prompt: {e}"))?,
        None => start_ids(tok)?,
    };
    let mut engine = make_engine(EngineInit {
        model: &loaded.model,
        params: loaded.params,
        train: None,
    })
    .map_err(|e| e.to_string())?;
    let mut rng = rand_xoshiro::Xoshiro256PlusPlus::seed_from_u64(a.seed);
    let mut dec = StreamDecoder::new(tok);
    let mut out = std::io::stdout().lock();
    if a.prompt.is_some() {
        // The prompt as the tokenizer reads it back, through the same decoder, so the text
        // joins the continuation as decoding the whole sequence would (a word's leading
        // space, a normalised prompt).
        for &id in &prompt {
            let s = dec.push(id).map_err(|e| e.to_string())?;
            let _ = out.write_all(s.as_bytes());
        }
    }
    let sampling = Sampling {
        temperature: a.temperature,
        top_k: a.top_k,
        allowed: Some(tok.vocab_size()),
        stop: if a.no_stop { None } else { tok.eot() },
    };
    generate(
        engine.as_mut(),
        &loaded.model,
        &prompt,
        a.tokens,
        sampling,
        &mut rng,
        |id| {
            let s = dec.push(id).map_err(|e| EngineError(e.to_string()))?;
            out.write_all(s.as_bytes())
                .and_then(|_| out.flush())
                .map_err(|e| EngineError(format!("stdout: {e}")))
        },
    )
    .map_err(|e| e.to_string())?;
    let _ = writeln!(out, "{}", dec.finish());
    Ok(())
}

/// What generation starts from without a prompt: a newline for a char model (nanoGPT starts
/// there), else the tokenizer's end-of-text token, as a new document. Errors: a model without
/// a tokenizer, or one without an end-of-text token.
pub fn start_ids(tok: &Tokenizer) -> Result<Vec<u32>, String> {
    match tok {
        Tokenizer::Char(_) => Ok(tok.encode("\n").unwrap_or_else(|_| vec![0])),
        Tokenizer::IdsOnly { vocab_size } => Err(DataError::NoTokenizer {
            vocab_size: *vocab_size,
        }
        .to_string()),
        _ => tok.eot().map(|id| vec![id]).ok_or_else(|| {
            "the tokenizer has no end-of-text token to start from; pass --prompt".to_string()
        }),
    }
}
