//! Model weights and config in Hugging Face GPT-2's format.
//!
//! * `model.safetensors`: f32 tensors named as in [`crate::params`] (`wte.weight`,
//!   `h.{i}.attn.c_attn.weight` in Conv1D (in, out) layout, ..., `ln_f.bias`). `wte.weight` holds
//!   the V real rows only; the padding rows are zero and are not stored. Loading also accepts
//!   the `transformer.` prefix of `GPT2LMHeadModel` files and skips what is derived or
//!   constant there (`lm_head.weight`, tied to wte; the `attn.bias`/`attn.masked_bias` masks).
//! * `config.json`: HF `GPT2Config` fields (`n_layer`, `n_head`, `n_embd`, `n_positions`,
//!   `vocab_size`, ...) plus ferrogpt's `padded_vocab_size` and `dropout`.
//!
//! Files are written atomically (temp file + rename); loading checks every name, shape and
//! length and names the file and tensor at fault.

use crate::{Gpt, GptConfig, ModelError, ParamLayout};
use ferrogpt_core::fsutil::write_atomic;
use safetensors::tensor::{Dtype, SafeTensors, TensorView};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::path::Path;

/// Writes `config.json` for `cfg` into `dir`; `eot` is the tokenizer's end-of-text id (HF's
/// `bos_token_id` and `eos_token_id`), if it has one.
pub fn save_config(dir: &Path, cfg: &GptConfig, eot: Option<u32>) -> Result<(), ModelError> {
    let v = json!({
        "model_type": "gpt2",
        "architectures": ["GPT2LMHeadModel"],
        "n_layer": cfg.n_layer,
        "n_head": cfg.n_head,
        "n_embd": cfg.n_embd,
        "n_positions": cfg.block_size,
        "n_ctx": cfg.block_size,
        "vocab_size": cfg.vocab_size,
        "layer_norm_epsilon": ferrogpt_core::ops::layernorm::EPS,
        "activation_function": "gelu_new",
        "tie_word_embeddings": true,
        "padded_vocab_size": cfg.padded_vocab_size,
        "dropout": cfg.dropout,
        "bos_token_id": eot,
        "eos_token_id": eot,
    });
    let path = dir.join("config.json");
    let text = serde_json::to_string_pretty(&v).expect("json of plain values");
    write_atomic(&path, text.as_bytes()).map_err(|e| ModelError::file(&path, e))
}

/// Reads `config.json` (ours or Hugging Face's). Without `padded_vocab_size`, the vocabulary
/// is padded to a multiple of `pad_multiple`.
pub fn load_config(dir: &Path, pad_multiple: usize) -> Result<GptConfig, ModelError> {
    let path = dir.join("config.json");
    let text = std::fs::read_to_string(&path).map_err(|e| ModelError::file(&path, e))?;
    let v: Value = serde_json::from_str(&text)
        .map_err(|e| ModelError::file(&path, format!("not valid JSON: {e}")))?;
    let field = |name: &str| -> Result<usize, ModelError> {
        v.get(name)
            .and_then(Value::as_u64)
            .map(|x| x as usize)
            .ok_or_else(|| {
                ModelError::file(&path, format!("missing or non-integer field '{name}'"))
            })
    };
    if let Some(act) = v.get("activation_function").and_then(Value::as_str) {
        if act != "gelu_new" && act != "gelu_pytorch_tanh" {
            return Err(ModelError::file(
                &path,
                format!("activation_function '{act}' is not supported (expected gelu_new)"),
            ));
        }
    }
    let vocab_size = field("vocab_size")?;
    let cfg = GptConfig {
        n_layer: field("n_layer")?,
        n_head: field("n_head")?,
        n_embd: field("n_embd")?,
        block_size: field("n_positions")?,
        vocab_size,
        padded_vocab_size: match v.get("padded_vocab_size") {
            Some(_) => field("padded_vocab_size")?,
            None => GptConfig::pad_vocab(vocab_size, pad_multiple),
        },
        dropout: v.get("dropout").and_then(Value::as_f64).unwrap_or(0.0),
    };
    cfg.validate().map_err(|e| ModelError::file(&path, e))?;
    Ok(cfg)
}

fn f32_bytes(x: &[f32]) -> Vec<u8> {
    x.iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// Serialises named f32 tensors (name, shape, data) with string metadata, atomically.
pub fn write_tensors(
    path: &Path,
    tensors: &[(String, Vec<usize>, &[f32])],
    metadata: HashMap<String, String>,
) -> Result<(), ModelError> {
    let bytes: Vec<(String, Vec<u8>, Vec<usize>)> = tensors
        .iter()
        .map(|(n, s, d)| (n.clone(), f32_bytes(d), s.clone()))
        .collect();
    let views: Vec<(String, TensorView)> = bytes
        .iter()
        .map(|(n, b, s)| {
            Ok((
                n.clone(),
                TensorView::new(Dtype::F32, s.clone(), b).map_err(|e| ModelError::file(path, e))?,
            ))
        })
        .collect::<Result<_, ModelError>>()?;
    let out =
        safetensors::serialize(views, &Some(metadata)).map_err(|e| ModelError::file(path, e))?;
    write_atomic(path, &out).map_err(|e| ModelError::file(path, e))
}

/// Named f32 tensors read from a safetensors file, and its metadata.
pub struct TensorFile {
    pub tensors: HashMap<String, (Vec<usize>, Vec<f32>)>,
    pub metadata: HashMap<String, String>,
}

/// Reads every tensor of a safetensors file as f32 (F32 stored; BF16 widened).
pub fn read_tensors(path: &Path) -> Result<TensorFile, ModelError> {
    let bytes = std::fs::read(path).map_err(|e| ModelError::file(path, e))?;
    let (_, meta) = SafeTensors::read_metadata(&bytes)
        .map_err(|e| ModelError::file(path, format!("not a valid safetensors file ({e})")))?;
    let st = SafeTensors::deserialize(&bytes)
        .map_err(|e| ModelError::file(path, format!("not a valid safetensors file ({e})")))?;
    let mut tensors = HashMap::new();
    for (name, view) in st.tensors() {
        let data: Vec<f32> = match view.dtype() {
            Dtype::F32 => view
                .data()
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect(),
            Dtype::BF16 => view
                .data()
                .chunks_exact(2)
                .map(|b| f32::from_bits((u16::from_le_bytes([b[0], b[1]]) as u32) << 16))
                .collect(),
            other => {
                return Err(ModelError::file(
                    path,
                    format!("tensor '{name}' has dtype {other:?}; only F32 and BF16 are supported"),
                ))
            }
        };
        tensors.insert(name, (view.shape().to_vec(), data));
    }
    Ok(TensorFile {
        tensors,
        metadata: meta.metadata().clone().unwrap_or_default(),
    })
}

/// Writes the model's weights to `path` (HF names and layouts) with `metadata`.
pub fn save_weights(
    path: &Path,
    model: &Gpt,
    params: &[f32],
    metadata: HashMap<String, String>,
) -> Result<(), ModelError> {
    let v = model.config.vocab_size;
    let tensors: Vec<(String, Vec<usize>, &[f32])> = model
        .layout
        .named
        .iter()
        .map(|(name, p)| {
            if *p == model.layout.wte {
                let real = &params[p.offset..p.offset + v * p.cols];
                (name.clone(), vec![v, p.cols], real)
            } else {
                (name.clone(), ParamLayout::hf_shape(p), &params[p.range()])
            }
        })
        .collect();
    write_tensors(path, &tensors, metadata)
}

/// Reads the weights at `path` into the flat layout of `model`; returns them and the file's
/// metadata. Every tensor of the model must be present with its exact shape.
pub fn load_weights(
    path: &Path,
    model: &Gpt,
) -> Result<(Vec<f32>, HashMap<String, String>), ModelError> {
    let file = read_tensors(path)?;
    let mut by_name = HashMap::new();
    for (name, t) in file.tensors {
        let short = name
            .strip_prefix("transformer.")
            .unwrap_or(&name)
            .to_string();
        if short == "lm_head.weight"
            || short.ends_with(".attn.bias")
            || short.ends_with(".attn.masked_bias")
        {
            continue;
        }
        by_name.insert(short, (name, t));
    }
    let mut params = vec![0.0f32; model.layout.total];
    for (name, p) in &model.layout.named {
        let (_, (shape, data)) = by_name.remove(name).ok_or_else(|| {
            ModelError::file(
                path,
                format!("tensor '{name}' is missing (is this a GPT-2 checkpoint of this shape?)"),
            )
        })?;
        let want = if *p == model.layout.wte {
            vec![model.config.vocab_size, p.cols]
        } else {
            ParamLayout::hf_shape(p)
        };
        if shape != want {
            return Err(ModelError::file(
                path,
                format!("tensor '{name}' has shape {shape:?}, the config needs {want:?}"),
            ));
        }
        params[p.offset..p.offset + data.len()].copy_from_slice(&data);
    }
    if let Some((name, _)) = by_name.into_values().next() {
        return Err(ModelError::file(
            path,
            format!("unexpected tensor '{name}' (not part of a GPT-2 of this config)"),
        ));
    }
    if let Some(i) = params.iter().position(|x| !x.is_finite()) {
        return Err(ModelError::file(
            path,
            format!("weights contain a non-finite value (flat index {i})"),
        ));
    }
    Ok((params, file.metadata))
}
