//! `ferrogpt quantize`: write a checkpoint whose matrices are stored in bf16 or int8 (Q8_0), and
//! the loading that `sample` and `eval` share for `--weights`.
//!
//! Converted: every linear weight and the LM head; kept f32: embeddings, norms, biases (the
//! format is described in `ferrogpt_model::kvcache::quant`). The new directory holds the
//! converted `model.safetensors` (its metadata names the format), `config.json` with a
//! `ferrogpt_weights` field saying the same, the tokenizer, and fresh checksums.

use ferrogpt_gemm::gemv::WeightFormat;
use ferrogpt_model::checkpoint as mc;
use ferrogpt_model::kvcache::{quant, DecodeWeights};
use ferrogpt_model::Gpt;
use ferrogpt_train::checkpoint::{self as ck, LoadedModel};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

#[derive(Clone, Debug, clap::Args)]
pub struct QuantizeArgs {
    /// A run directory of ours or a Hugging Face directory (f32 or bf16 weights)
    #[arg(long)]
    checkpoint: PathBuf,
    /// The format of the matrices: int8 (Q8_0, blocks of 32, f32 scales) or bf16
    #[arg(long)]
    weights: String,
    /// The directory to write (created; its files are replaced)
    #[arg(long)]
    out: PathBuf,
}

pub fn run(a: QuantizeArgs) -> Result<(), String> {
    let format: WeightFormat = a.weights.parse().map_err(|e| format!("--weights: {e}"))?;
    if format == WeightFormat::F32 {
        return Err("--weights must be int8 or bf16 (f32 is what a checkpoint already is)".into());
    }
    if a.out == a.checkpoint {
        return Err("--out must be another directory than --checkpoint".into());
    }
    let (loaded, stored, _, _) = load(&a.checkpoint, Some(WeightFormat::F32), false)?;
    if stored != WeightFormat::F32 {
        return Err(format!(
            "{} holds {stored} weights already; quantize an f32 checkpoint",
            a.checkpoint.display()
        ));
    }
    let (params, w) =
        quant::quantize(&loaded.model, loaded.params, format).map_err(|e| e.to_string())?;
    // The tokenizer, config.json and checksums as any saved model, then the converted weights
    // over model.safetensors, the format added to config.json, and the checksums again.
    ck::save_model(
        &a.out,
        &loaded.model,
        &loaded.tokenizer,
        &params,
        HashMap::new(),
    )
    .map_err(|e| e.to_string())?;
    let mut meta = loaded.metadata;
    meta.insert(
        "ferrogpt.quantized_from".into(),
        a.checkpoint.display().to_string(),
    );
    quant::save(
        &a.out.join("model.safetensors"),
        &loaded.model,
        &params,
        &w,
        meta,
    )
    .map_err(|e| e.to_string())?;
    quant::mark_config(&a.out, format).map_err(|e| e.to_string())?;
    rewrite_manifest(&a.out)?;
    let f32_bytes = 4 * matrix_values(&w);
    println!(
        "wrote {} ({format}: matrices {:.1} MB, {:.1} MB as f32)",
        a.out.display(),
        w.bytes() as f64 / 1e6,
        f32_bytes as f64 / 1e6
    );
    Ok(())
}

/// Weights in the converted matrices.
fn matrix_values(w: &DecodeWeights) -> usize {
    w.blocks
        .iter()
        .flat_map(|b| [&b.qkv, &b.proj, &b.fc, &b.fc_proj])
        .chain([&w.head])
        .map(|m| m.rows() * m.cols())
        .sum()
}

/// Recomputes `dir/checksums.sha256` for the files it lists.
fn rewrite_manifest(dir: &Path) -> Result<(), String> {
    let path = dir.join(ck::MANIFEST);
    let text = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut out = String::new();
    for name in text
        .lines()
        .filter_map(|l| l.split_once("  ").map(|(_, n)| n))
    {
        let sum = ck::sha256_file(&dir.join(name)).map_err(|e| e.to_string())?;
        out += &format!("{sum}  {name}\n");
    }
    ferrogpt_core::fsutil::write_atomic(&path, out.as_bytes())
        .map_err(|e| format!("{}: {e}", path.display()))
}

/// Loads the model of `dir` for inference with its matrices in `requested` format (default:
/// the format the checkpoint stores). Returns the model with `params` holding the values the
/// format stores (dequantized), the format the checkpoint stored, and the converted matrices
/// (None for f32: the engine converts when it first decodes).
///
/// An int8 checkpoint is read by `kvcache::quant::load_int8` (its matrices as stored); asked
/// for f32 or bf16, its dequantized weights are the starting point. Other checkpoints go
/// through the usual loader (bf16 tensors widened), then convert.
///
/// `background_check`: the weights' checksum is still being taken when this returns, at the
/// lowest priority ([`ck::load_model_checking`]); the caller must wait on the returned check
/// before it trusts what it computed. Otherwise the check has passed when this returns.
pub fn load(
    dir: &Path,
    requested: Option<WeightFormat>,
    background_check: bool,
) -> Result<
    (
        LoadedModel,
        WeightFormat,
        Option<DecodeWeights>,
        ck::WeightsCheck,
    ),
    String,
> {
    let file = dir.join("model.safetensors");
    let stored = if file.is_file() {
        quant::file_format(&file).map_err(|e| e.to_string())?
    } else {
        WeightFormat::F32 // sharded: a Hugging Face directory
    };
    let (mut loaded, prebuilt, check) = if stored == WeightFormat::Int8 {
        let (l, w, check) = load_int8(dir, background_check)?;
        (l, Some(w), check)
    } else {
        let (l, check) =
            ck::load_model_checking(dir, 64, background_check).map_err(|e| e.to_string())?;
        (l, None, check)
    };
    let check = if background_check {
        check
    } else {
        check.wait().map_err(|e| e.to_string())?;
        ck::WeightsCheck::none()
    };
    let want = requested.unwrap_or(stored);
    let decode = match (want, prebuilt) {
        (WeightFormat::F32, _) => None,
        (WeightFormat::Int8, Some(w)) => Some(w),
        (format, _) => {
            let params = std::mem::take(&mut loaded.params);
            let (params, w) =
                quant::quantize(&loaded.model, params, format).map_err(|e| e.to_string())?;
            loaded.params = params;
            Some(w)
        }
    };
    Ok((loaded, stored, decode, check))
}

/// An int8 checkpoint of ours: checked against its checksums, config.json and tokenizer read
/// as for any checkpoint, the weights by `kvcache::quant::load_int8`.
fn load_int8(
    dir: &Path,
    background_check: bool,
) -> Result<(LoadedModel, DecodeWeights, ck::WeightsCheck), String> {
    let tok = ferrogpt_train::tokenizer::hf::FILES;
    ck::verify(dir, &["config.json", tok[0], tok[1]]).map_err(|e| e.to_string())?;
    let mut check = ck::WeightsCheck::spawn(dir, &["model.safetensors"], background_check);
    // A damaged file is reported as such before the error it caused while loading.
    let damaged = |e: String, check: &mut ck::WeightsCheck| -> String {
        match std::mem::replace(check, ck::WeightsCheck::none()).wait() {
            Err(d) => d.to_string(),
            Ok(()) => e,
        }
    };
    let cfg = mc::load_config(dir, 64).map_err(|e| e.to_string())?;
    let model = Gpt::new(cfg).map_err(|e| e.to_string())?;
    let (params, w) = quant::load_int8(&dir.join("model.safetensors"), &model)
        .map_err(|e| damaged(e.to_string(), &mut check))?;
    let tokenizer = ck::load_tokenizer(dir, model.config.vocab_size).map_err(|e| e.to_string())?;
    Ok((
        LoadedModel {
            model,
            params,
            tokenizer,
            metadata: HashMap::new(),
        },
        w,
        check,
    ))
}

/// Parses `--weights`.
pub fn parse_weights(s: Option<&str>) -> Result<Option<WeightFormat>, String> {
    s.map(|s| s.parse().map_err(|e| format!("--weights: {e}")))
        .transpose()
}
