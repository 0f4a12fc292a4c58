//! `ferrogpt eval`: mean loss and perplexity of a checkpoint on a whole data file.

use crate::common::{engine_factory, Compute, DeviceArgs};
use ferrogpt_train::checkpoint::load_model;
use ferrogpt_train::data::load_dataset;
use ferrogpt_train::trainer::evaluate_tokens;
use ferrogpt_train::EngineInit;
use std::path::PathBuf;

#[derive(Clone, Debug, clap::Args)]
pub struct EvalArgs {
    /// A run directory of ours or a Hugging Face GPT-2 directory
    #[arg(long)]
    checkpoint: PathBuf,
    /// Text (encoded whole with the checkpoint's tokenizer) or an llm.c token file.
    #[arg(long)]
    data: PathBuf,
    /// Window length [default: the model's block size]
    #[arg(long)]
    seq_len: Option<usize>,
    /// Windows per forward pass
    #[arg(long, default_value_t = 8)]
    batch_size: usize,
    /// Evaluate at most this many windows (0 = all)
    #[arg(long, default_value_t = 0)]
    max_windows: usize,
    /// Print one JSON object instead of text
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    compute: Compute,
    #[command(flatten)]
    device: DeviceArgs,
}

pub fn run(a: EvalArgs) -> Result<(), String> {
    let level = a.compute.setup()?;
    let make_engine = engine_factory(level, &a.device)?;
    let loaded = load_model(&a.checkpoint, 64).map_err(|e| e.to_string())?;
    let block = loaded.model.config.block_size;
    let t = a.seq_len.unwrap_or(block);
    if t == 0 || t > block {
        return Err(format!(
            "--seq-len must be in 1..={block} (the model's block size), got {t}"
        ));
    }
    if a.batch_size == 0 {
        return Err("--batch-size must be at least 1".into());
    }
    // The whole file is the evaluation set: rejoin text's 90/10 split (a token file has no split).
    let ds = load_dataset(&a.data, None, &loaded.tokenizer).map_err(|e| e.to_string())?;
    let mut tokens = ds.train;
    tokens.extend(ds.val);
    let mut engine = make_engine(EngineInit {
        model: &loaded.model,
        params: loaded.params,
        train: None,
    })
    .map_err(|e| e.to_string())?;
    let (loss, windows) =
        evaluate_tokens(engine.as_mut(), &tokens, a.batch_size, t, a.max_windows)?;
    let ppl = loss.exp();
    if a.json {
        let v = serde_json::json!({
            "checkpoint": a.checkpoint.display().to_string(),
            "data": a.data.display().to_string(),
            "tokens": windows * t,
            "windows": windows,
            "seq_len": t,
            "loss": loss,
            "perplexity": ppl,
        });
        println!("{v}");
    } else {
        println!("loss {loss:.4}  perplexity {ppl:.3}  ({windows} windows of {t} tokens)");
    }
    Ok(())
}
