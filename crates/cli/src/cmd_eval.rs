//! `ferrogpt eval`: mean loss and perplexity of a checkpoint on a whole data file.
//!
//! With `--weights bf16|int8` the matrices hold the values that format stores (dequantized
//! once when loaded) and the forward pass runs on the tape as for f32: the loss of the
//! quantized weights with f32 activations. `--decode` computes every position through the
//! key/value-cache decoder instead, on the GEMV kernels in the chosen format (int8 also
//! quantizes each product's input), exactly what `sample` computes; one window at a time.

use crate::common::{Compute, DeviceArgs};
use ferrogpt_model::kvcache::{DecodeWeights, KvCache};
use ferrogpt_model::Gpt;
use ferrogpt_train::data::load_dataset;
use ferrogpt_train::trainer::evaluate_tokens;
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
    /// Weights of the matrices: f32, bf16 or int8 (Q8_0, blocks of 32) [default: the format
    /// the checkpoint stores]
    #[arg(long)]
    weights: Option<String>,
    /// Score each position with the key/value-cache decoder (the GEMV kernels `sample` uses)
    /// instead of the tape's forward pass
    #[arg(long)]
    decode: bool,
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
    a.device.is_cpu()?; // bad --device/--dtype before the checkpoint is read
    let requested = crate::cmd_quantize::parse_weights(a.weights.as_deref())?;
    let (loaded, _, decode, _) = crate::cmd_quantize::load(&a.checkpoint, requested, false)?;
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
    let format = decode
        .as_ref()
        .map_or(requested.unwrap_or_default(), |w| w.format());
    let (loss, windows) = if a.decode {
        let w = match decode {
            Some(w) => w,
            None => DecodeWeights::new(&loaded.model, &loaded.params, format)
                .map_err(|e| e.to_string())?,
        };
        decoded_loss(&loaded.model, &loaded.params, &w, &tokens, t, a.max_windows)?
    } else {
        let mut engine = crate::cmd_sample::inference_engine(
            level,
            &a.device,
            &loaded.model,
            loaded.params,
            requested,
            None,
        )?;
        evaluate_tokens(engine.as_mut(), &tokens, a.batch_size, t, a.max_windows)
            .map_err(|e| e.to_string())?
    };
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
            "weights": format.name(),
            "decode": a.decode,
        });
        println!("{v}");
    } else {
        println!(
            "loss {loss:.4}  perplexity {ppl:.3}  ({windows} windows of {t} tokens, {format} \
             weights{})",
            if a.decode { ", decoded" } else { "" }
        );
    }
    Ok(())
}

/// Mean loss over consecutive windows of `t` tokens (as `evaluate_tokens`), each position's
/// logits from the key/value-cache decoder (one position a call, the cache reused).
fn decoded_loss(
    model: &Gpt,
    params: &[f32],
    w: &DecodeWeights,
    tokens: &[u32],
    t: usize,
    max_windows: usize,
) -> Result<(f64, usize), String> {
    if tokens.len() < t + 1 {
        return Err(format!(
            "the data has {} tokens, a window needs {}",
            tokens.len(),
            t + 1
        ));
    }
    model
        .check_tokens(tokens, t)
        .map_err(|e| format!("the data: {e}"))?;
    let mut windows = (tokens.len() - 1) / t;
    if max_windows > 0 {
        windows = windows.min(max_windows);
    }
    let mut total = 0.0;
    for i in 0..windows {
        let x = &tokens[i * t..i * t + t];
        let mut cache = KvCache::new();
        for n in 1..=t {
            let logits = cache
                .decode(model, params, w, &x[..n])
                .map_err(|e| e.to_string())?;
            let mx = logits.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v)) as f64;
            let lse = mx
                + logits
                    .iter()
                    .map(|&v| (v as f64 - mx).exp())
                    .sum::<f64>()
                    .ln();
            total += lse - logits[tokens[i * t + n] as usize] as f64;
        }
    }
    Ok((total / (windows * t) as f64, windows))
}
