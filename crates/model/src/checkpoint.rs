//! Model weights and config in Hugging Face's formats: `GPT2LMHeadModel` for the GPT-2 family,
//! `LlamaForCausalLM` for the Llama family.
//!
//! * `model.safetensors`: f32 tensors named as in [`crate::params`] (`wte.weight`,
//!   `h.{i}.attn.c_attn.weight` in Conv1D (in, out) layout, ..., or `model.embed_tokens.weight`,
//!   `model.layers.{i}.self_attn.q_proj.weight` in (out, in) layout, ...). The token embedding
//!   and an untied head hold their V real rows only; the padding rows are zero and are not
//!   stored. Loading also accepts the `transformer.` prefix of `GPT2LMHeadModel` files, skips
//!   what is derived or constant there (`lm_head.weight` when tied; the `attn.bias` /
//!   `attn.masked_bias` masks, `rotary_emb.inv_freq`), widens BF16 and F16 to f32, and reads
//!   checkpoints sharded over several files (`model.safetensors.index.json`).
//! * `config.json`: HF `GPT2Config` or `LlamaConfig` fields plus ferrogpt's
//!   `padded_vocab_size` and `dropout`. A GPT-2 with rotary positions has no HF class: its
//!   config says `model_type: "ferrogpt-gpt2-rope"`, which transformers refuses rather than
//!   loading it wrong.
//!
//! Files are written atomically (temp file + rename); loading checks every name, shape and
//! length and names the file and tensor at fault. Weights are read from the file mapped into
//! memory, each tensor widened straight into its place in the parameters (one copy, spread
//! over the thread pool).

use crate::config::{Family, Position, RopeScaling};
use crate::{Gpt, GptConfig, ModelError, ParamLayout};
use ferrogpt_core::fsutil::write_atomic;
use memmap2::{Mmap, MmapOptions};
use rayon::prelude::*;
use safetensors::tensor::{Dtype, SafeTensors, TensorView};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// `model_type` of a GPT-2 with rotary positions (no transformers class exists for it).
pub const GPT2_ROPE_TYPE: &str = "ferrogpt-gpt2-rope";

/// Writes `config.json` for `cfg` into `dir` (atomically), in HF's `GPT2Config` or
/// `LlamaConfig` fields plus ferrogpt's; `eot` is the tokenizer's end-of-text id (HF's
/// `bos_token_id` and `eos_token_id`; None writes null). Errors: [`ModelError::Io`].
pub fn save_config(dir: &Path, cfg: &GptConfig, eot: Option<u32>) -> Result<(), ModelError> {
    let v = match cfg.family {
        Family::Gpt2 => {
            let mut v = json!({
                "model_type": "gpt2",
                "architectures": ["GPT2LMHeadModel"],
                "n_layer": cfg.n_layer,
                "n_head": cfg.n_head,
                "n_embd": cfg.n_embd,
                "n_positions": cfg.block_size,
                "n_ctx": cfg.block_size,
                "n_inner": cfg.ffn_hidden,
                "vocab_size": cfg.vocab_size,
                "layer_norm_epsilon": ferrogpt_core::ops::layernorm::EPS,
                "activation_function": "gelu_new",
                "tie_word_embeddings": true,
                "padded_vocab_size": cfg.padded_vocab_size,
                "dropout": cfg.dropout,
                "bos_token_id": eot,
                "eos_token_id": eot,
            });
            if cfg.rotary() {
                v["model_type"] = json!(GPT2_ROPE_TYPE);
                v["architectures"] = json!([]);
                v["position_embedding_type"] = json!("rope");
                v["rope_theta"] = json!(cfg.rope_theta);
            }
            v
        }
        Family::Llama => {
            let rope_parameters = match cfg.rope_scaling {
                None => json!({"rope_type": "default", "rope_theta": cfg.rope_theta}),
                Some(s) => json!({
                    "rope_type": "llama3",
                    "rope_theta": cfg.rope_theta,
                    "factor": s.factor,
                    "low_freq_factor": s.low_freq_factor,
                    "high_freq_factor": s.high_freq_factor,
                    "original_max_position_embeddings": s.original_max_position_embeddings,
                }),
            };
            json!({
                "model_type": "llama",
                "architectures": ["LlamaForCausalLM"],
                "num_hidden_layers": cfg.n_layer,
                "num_attention_heads": cfg.n_head,
                "num_key_value_heads": cfg.kv_heads(),
                "hidden_size": cfg.n_embd,
                "head_dim": cfg.head_size(),
                "intermediate_size": cfg.ffn(),
                "max_position_embeddings": cfg.block_size,
                "vocab_size": cfg.vocab_size,
                "rms_norm_eps": cfg.norm_eps,
                "hidden_act": "silu",
                "attention_bias": false,
                "mlp_bias": false,
                "attention_dropout": 0.0,
                "tie_word_embeddings": cfg.tie_embeddings,
                "rope_theta": cfg.rope_theta,
                "rope_scaling": cfg.rope_scaling.map(|_| rope_parameters.clone()),
                "rope_parameters": rope_parameters,
                "padded_vocab_size": cfg.padded_vocab_size,
                "dropout": cfg.dropout,
                "bos_token_id": eot,
                "eos_token_id": eot,
            })
        }
    };
    let path = dir.join("config.json");
    let text = serde_json::to_string_pretty(&v).expect("json of plain values");
    write_atomic(&path, text.as_bytes()).map_err(ModelError::io(&path))
}

/// Reads `config.json` (ours or Hugging Face's: GPT-2 or Llama). Without `padded_vocab_size`,
/// the vocabulary is padded to a multiple of `pad_multiple`. Errors name the file and the
/// field: [`ModelError::Io`], [`ModelError::Json`], [`ModelError::NotInteger`],
/// [`ModelError::NotNumber`], [`ModelError::Unsupported`], [`ModelError::HeadDim`],
/// [`ModelError::RopeScaling`], [`ModelError::ConfigFile`].
pub fn load_config(dir: &Path, pad_multiple: usize) -> Result<GptConfig, ModelError> {
    let path = dir.join("config.json");
    let text = std::fs::read_to_string(&path).map_err(ModelError::io(&path))?;
    let v: Value = serde_json::from_str(&text).map_err(|source| ModelError::Json {
        path: path.clone(),
        source,
    })?;
    let unsupported =
        |field: &str, found: &dyn std::fmt::Display, expected| ModelError::Unsupported {
            path: path.clone(),
            field: field.into(),
            found: found.to_string(),
            expected,
        };
    let field = |name: &str| -> Result<usize, ModelError> {
        v.get(name)
            .and_then(Value::as_u64)
            .map(|x| x as usize)
            .ok_or_else(|| ModelError::NotInteger {
                path: path.clone(),
                field: name.into(),
            })
    };
    let opt_field = |name: &str| -> Result<Option<usize>, ModelError> {
        match v.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(_) => field(name).map(Some),
        }
    };
    let float = |name: &str, default: f64| -> Result<f64, ModelError> {
        match v.get(name) {
            None | Some(Value::Null) => Ok(default),
            Some(x) => x.as_f64().ok_or_else(|| ModelError::NotNumber {
                path: path.clone(),
                field: name.into(),
            }),
        }
    };
    let model_type = v
        .get("model_type")
        .and_then(Value::as_str)
        .unwrap_or("gpt2");
    let vocab_size = field("vocab_size")?;
    let padded_vocab_size = match v.get("padded_vocab_size") {
        Some(_) => field("padded_vocab_size")?,
        None => GptConfig::pad_vocab(vocab_size, pad_multiple),
    };
    let dropout = float("dropout", 0.0)?;
    let cfg = match model_type {
        "gpt2" | GPT2_ROPE_TYPE => {
            if let Some(act) = v.get("activation_function").and_then(Value::as_str) {
                if act != "gelu_new" && act != "gelu_pytorch_tanh" {
                    return Err(unsupported("activation_function", &act, "gelu_new"));
                }
            }
            let rope = v.get("position_embedding_type").and_then(Value::as_str) == Some("rope");
            GptConfig {
                n_layer: field("n_layer")?,
                n_head: field("n_head")?,
                n_embd: field("n_embd")?,
                block_size: field("n_positions")?,
                vocab_size,
                padded_vocab_size,
                dropout,
                pos: if rope {
                    Position::Rope
                } else {
                    Position::Learned
                },
                rope_theta: float("rope_theta", 10_000.0)?,
                ffn_hidden: opt_field("n_inner")?,
                ..GptConfig::default()
            }
        }
        "llama" => {
            let c = field("hidden_size")?;
            let nh = field("num_attention_heads")?;
            if let Some(hd) = opt_field("head_dim")? {
                if nh * hd != c {
                    return Err(ModelError::HeadDim {
                        path: path.clone(),
                        head_dim: hd,
                        n_head: nh,
                        n_embd: c,
                    });
                }
            }
            if let Some(act) = v.get("hidden_act").and_then(Value::as_str) {
                if act != "silu" {
                    return Err(unsupported("hidden_act", &act, "silu"));
                }
            }
            for flag in ["attention_bias", "mlp_bias"] {
                if v.get(flag).and_then(Value::as_bool) == Some(true) {
                    return Err(unsupported(flag, &true, "false"));
                }
            }
            let (rope_theta, rope_scaling) = llama_rope(&path, &v)?;
            GptConfig {
                n_layer: field("num_hidden_layers")?,
                n_head: nh,
                n_embd: c,
                block_size: field("max_position_embeddings")?,
                vocab_size,
                padded_vocab_size,
                dropout,
                family: Family::Llama,
                pos: Position::Rope,
                rope_theta,
                rope_scaling,
                n_kv_head: Some(opt_field("num_key_value_heads")?.unwrap_or(nh)),
                ffn_hidden: Some(field("intermediate_size")?),
                norm_eps: float("rms_norm_eps", 1e-6)?,
                tie_embeddings: v
                    .get("tie_word_embeddings")
                    .and_then(Value::as_bool)
                    .unwrap_or(true),
            }
        }
        other => return Err(unsupported("model_type", &other, "gpt2 or llama")),
    };
    cfg.validate().map_err(|e| match e {
        ModelError::Config { field, problem } => ModelError::ConfigFile {
            path: path.clone(),
            field,
            problem,
        },
        e => e,
    })?;
    Ok(cfg)
}

/// RoPE's base and scaling from a Llama config: transformers 5's `rope_parameters`, or the
/// older `rope_theta` + `rope_scaling`, from the config.json at `path`.
fn llama_rope(path: &Path, v: &Value) -> Result<(f64, Option<RopeScaling>), ModelError> {
    let params = v
        .get("rope_parameters")
        .filter(|p| p.is_object())
        .or_else(|| v.get("rope_scaling").filter(|p| p.is_object()));
    let theta = params
        .and_then(|p| p.get("rope_theta"))
        .or_else(|| v.get("rope_theta"))
        .and_then(Value::as_f64)
        .unwrap_or(10_000.0);
    let Some(p) = params else {
        return Ok((theta, None));
    };
    let kind = p
        .get("rope_type")
        .or_else(|| p.get("type"))
        .and_then(Value::as_str)
        .unwrap_or("default");
    match kind {
        "default" => Ok((theta, None)),
        "llama3" => {
            let num = |k: &'static str| {
                p.get(k)
                    .and_then(Value::as_f64)
                    .ok_or_else(|| ModelError::RopeScaling {
                        path: path.to_path_buf(),
                        field: k,
                    })
            };
            Ok((
                theta,
                Some(RopeScaling {
                    factor: num("factor")?,
                    low_freq_factor: num("low_freq_factor")?,
                    high_freq_factor: num("high_freq_factor")?,
                    original_max_position_embeddings: num("original_max_position_embeddings")?
                        as usize,
                }),
            ))
        }
        other => Err(ModelError::Unsupported {
            path: path.to_path_buf(),
            field: "rope_type".into(),
            found: other.into(),
            expected: "default or llama3",
        }),
    }
}

fn f32_bytes(x: &[f32]) -> Vec<u8> {
    x.iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// Serialises named f32 tensors (name, shape, data) with string metadata, atomically. Errors:
/// [`ModelError::Serialize`] (a shape that does not fit its data), [`ModelError::Io`].
pub fn write_tensors(
    path: &Path,
    tensors: &[(String, Vec<usize>, &[f32])],
    metadata: HashMap<String, String>,
) -> Result<(), ModelError> {
    let bytes: Vec<(String, Vec<u8>, Vec<usize>)> = tensors
        .iter()
        .map(|(n, s, d)| (n.clone(), f32_bytes(d), s.clone()))
        .collect();
    let serialize = |source| ModelError::Serialize {
        path: path.to_path_buf(),
        source,
    };
    let views: Vec<(String, TensorView)> = bytes
        .iter()
        .map(|(n, b, s)| Ok((n.clone(), TensorView::new(Dtype::F32, s.clone(), b)?)))
        .collect::<Result<_, _>>()
        .map_err(serialize)?;
    let out = safetensors::serialize(views, &Some(metadata)).map_err(serialize)?;
    write_atomic(path, &out).map_err(ModelError::io(path))
}

/// A safetensors file's string metadata.
type Metadata = HashMap<String, String>;

/// A tensor viewed in its mapped file: its name, the view, the file's path.
type Located<'a> = (String, TensorView<'a>, &'a Path);

/// Named f32 tensors read from a safetensors file, and its metadata.
pub struct TensorFile {
    /// Name → (shape as stored, values widened to f32, row-major).
    pub tensors: HashMap<String, (Vec<usize>, Vec<f32>)>,
    /// The file's `__metadata__` (of every shard, merged); empty when it has none.
    pub metadata: HashMap<String, String>,
}

/// Maps `path` into memory, read-only, its pages read ahead. Loading reads tensors in place
/// from the map and copies each once, into its final buffer, instead of reading the whole file
/// into memory first.
pub(crate) fn map_file(path: &Path) -> std::io::Result<Mmap> {
    let file = std::fs::File::open(path)?;
    // SAFETY: the map is read-only and lives only while the loader copies out of it. Its
    // bytes would change under us only if another process wrote into this very file
    // meanwhile; ferrogpt never does (it writes a new file and renames it over the old one,
    // which leaves the mapped file as it was).
    unsafe { MmapOptions::new().populate().map(&file) }
}

/// A tensor's data widened to f32, written into `out` (its length: the tensor's element
/// count). Errors: a dtype other than F32, BF16, F16 ([`ModelError::TensorDtype`]).
fn widen_into(
    path: &Path,
    name: &str,
    dtype: Dtype,
    data: &[u8],
    out: &mut [f32],
) -> Result<(), ModelError> {
    match dtype {
        Dtype::F32 => {
            for (o, b) in out.iter_mut().zip(data.chunks_exact(4)) {
                *o = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
            }
        }
        Dtype::BF16 => {
            for (o, b) in out.iter_mut().zip(data.chunks_exact(2)) {
                *o = f32::from_bits((u16::from_le_bytes([b[0], b[1]]) as u32) << 16);
            }
        }
        Dtype::F16 => {
            for (o, b) in out.iter_mut().zip(data.chunks_exact(2)) {
                *o = f16_to_f32(u16::from_le_bytes([b[0], b[1]]));
            }
        }
        dtype => {
            return Err(ModelError::TensorDtype {
                path: path.to_path_buf(),
                name: name.to_string(),
                dtype,
            })
        }
    }
    Ok(())
}

/// The tensors of a mapped safetensors file, viewed in place, and its metadata. Errors:
/// [`ModelError::Safetensors`].
fn views<'a>(
    path: &Path,
    bytes: &'a [u8],
) -> Result<(Vec<(String, TensorView<'a>)>, Metadata), ModelError> {
    let invalid = |source| ModelError::Safetensors {
        path: path.to_path_buf(),
        source,
    };
    let (_, meta) = SafeTensors::read_metadata(bytes).map_err(invalid)?;
    let st = SafeTensors::deserialize(bytes).map_err(invalid)?;
    Ok((st.tensors(), meta.metadata().clone().unwrap_or_default()))
}

/// Reads every tensor of a safetensors file as f32 (F32 stored; BF16 and F16 widened).
/// Errors: [`ModelError::Io`], [`ModelError::Safetensors`], [`ModelError::TensorDtype`].
pub fn read_tensors(path: &Path) -> Result<TensorFile, ModelError> {
    let map = map_file(path).map_err(ModelError::io(path))?;
    let (views, metadata) = views(path, &map)?;
    let mut tensors = HashMap::new();
    for (name, view) in views {
        let mut data = vec![0.0f32; view.shape().iter().product()];
        widen_into(path, &name, view.dtype(), view.data(), &mut data)?;
        tensors.insert(name, (view.shape().to_vec(), data));
    }
    Ok(TensorFile { tensors, metadata })
}

/// IEEE half precision to f32 (exact: every f16 is an f32).
fn f16_to_f32(h: u16) -> f32 {
    let sign = ((h >> 15) as u32) << 31;
    let exp = ((h >> 10) & 0x1f) as i32;
    let frac = (h & 0x3ff) as u32;
    let bits = match exp {
        0 if frac == 0 => sign,
        // Subnormal: frac · 2^-24.
        0 => {
            let m = frac as f32 * 2f32.powi(-24);
            return if sign != 0 { -m } else { m };
        }
        0x1f => sign | 0x7f80_0000 | (frac << 13),
        _ => sign | (((exp - 15 + 127) as u32) << 23) | (frac << 13),
    };
    f32::from_bits(bits)
}

/// The index of a sharded checkpoint beside `path` (`model.safetensors` →
/// `model.safetensors.index.json`).
fn shard_index(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".index.json");
    path.with_file_name(name)
}

/// The files holding the weights at `path`, mapped: the file itself or, where it does not
/// exist, the shards its index (`<path>.index.json`, HF's `weight_map`) lists, each tensor
/// checked to be in the shard the index names. Errors: [`ModelError::Io`], and of the index:
/// [`ModelError::Json`], [`ModelError::ShardIndex`].
struct WeightFiles {
    files: Vec<(PathBuf, Mmap)>,
    /// The index's path and weight_map, when sharded.
    index: Option<(PathBuf, serde_json::Map<String, Value>)>,
}

impl WeightFiles {
    fn open(path: &Path) -> Result<Self, ModelError> {
        let index = shard_index(path);
        if path.exists() || !index.exists() {
            return Ok(WeightFiles {
                files: vec![(
                    path.to_path_buf(),
                    map_file(path).map_err(ModelError::io(path))?,
                )],
                index: None,
            });
        }
        let text = std::fs::read_to_string(&index).map_err(ModelError::io(&index))?;
        let v: Value = serde_json::from_str(&text).map_err(|source| ModelError::Json {
            path: index.clone(),
            source,
        })?;
        let bad_index = |problem: String| ModelError::ShardIndex {
            path: index.clone(),
            problem,
        };
        let map = v
            .get("weight_map")
            .and_then(Value::as_object)
            .ok_or_else(|| bad_index("no 'weight_map' object".into()))?;
        let mut shards: Vec<&str> = map.values().filter_map(Value::as_str).collect();
        if shards.len() != map.len() {
            return Err(bad_index("a weight_map entry is not a file name".into()));
        }
        shards.sort_unstable();
        shards.dedup();
        let mut files = Vec::new();
        for shard in shards {
            if shard.contains('/') || shard.contains('\\') {
                return Err(bad_index(format!(
                    "shard '{shard}' is not a file name in this directory"
                )));
            }
            let file = path.with_file_name(shard);
            let map = map_file(&file).map_err(ModelError::io(&file))?;
            files.push((file, map));
        }
        Ok(WeightFiles {
            files,
            index: Some((index, map.clone())),
        })
    }

    /// Every tensor of every file, viewed in place, with the file it is in; and the files'
    /// metadata merged. Errors: [`ModelError::Safetensors`], [`ModelError::MisplacedTensor`].
    fn tensors(&self) -> Result<(Vec<Located<'_>>, Metadata), ModelError> {
        let mut all = Vec::new();
        let mut metadata = HashMap::new();
        for (file, map) in &self.files {
            let (views, meta) = views(file, map)?;
            for (name, view) in views {
                if let Some((index, weight_map)) = &self.index {
                    let shard = file.file_name().and_then(|n| n.to_str()).unwrap_or("");
                    if weight_map.get(&name).and_then(Value::as_str) != Some(shard) {
                        return Err(ModelError::MisplacedTensor {
                            path: index.clone(),
                            name,
                            shard: shard.into(),
                        });
                    }
                }
                all.push((name, view, file.as_path()));
            }
            metadata.extend(meta);
        }
        Ok((all, metadata))
    }
}

/// Reads the weights at `path`, or, where that file does not exist, the shards its index
/// (`<path>.index.json`, HF's `weight_map`) lists, merged into one [`TensorFile`]. Errors: those
/// of [`read_tensors`], and of the index: [`ModelError::Io`], [`ModelError::Json`],
/// [`ModelError::ShardIndex`], [`ModelError::MisplacedTensor`].
pub fn read_weights_file(path: &Path) -> Result<TensorFile, ModelError> {
    let files = WeightFiles::open(path)?;
    let (views, metadata) = files.tensors()?;
    let mut tensors = HashMap::new();
    for (name, view, file) in views {
        let mut data = vec![0.0f32; view.shape().iter().product()];
        widen_into(file, &name, view.dtype(), view.data(), &mut data)?;
        tensors.insert(name, (view.shape().to_vec(), data));
    }
    Ok(TensorFile { tensors, metadata })
}

/// Writes the model's weights to `path` (HF names and layouts, f32; the V real rows of the
/// embedding) with `metadata`, atomically. Errors: [`ModelError::ParamsLength`] when `params`
/// is not the model's [`ParamLayout::total`] long (nothing written), those of
/// [`write_tensors`].
pub fn save_weights(
    path: &Path,
    model: &Gpt,
    params: &[f32],
    metadata: HashMap<String, String>,
) -> Result<(), ModelError> {
    let v = model.config.vocab_size;
    let l = &model.layout;
    if params.len() != l.total {
        return Err(ModelError::ParamsLength {
            found: params.len(),
            expected: l.total,
        });
    }
    let tensors: Vec<(String, Vec<usize>, &[f32])> = l
        .named
        .iter()
        .map(|(name, p)| {
            if l.is_vocab_rows(p) {
                let real = &params[p.offset..p.offset + v * p.cols];
                (name.clone(), vec![v, p.cols], real)
            } else {
                (name.clone(), ParamLayout::hf_shape(p), &params[p.range()])
            }
        })
        .collect();
    write_tensors(path, &tensors, metadata)
}

/// Whether a tensor of a HF checkpoint is derived or constant rather than a parameter (the
/// causal-mask buffers of old GPT-2 files, rotary frequency buffers, a tied head's copy).
fn derived(model: &Gpt, name: &str) -> bool {
    (name == "lm_head.weight" && model.layout.lm_head.is_none())
        || name.ends_with(".attn.bias")
        || name.ends_with(".attn.masked_bias")
        || name.ends_with("rotary_emb.inv_freq")
}

/// Reads the weights at `path` (or its shards, see [`read_weights_file`]) into the flat layout
/// of `model`; returns them and the file's metadata. Every tensor of the model must be present
/// ([`ModelError::MissingTensor`]) with its exact shape ([`ModelError::TensorShape`]), and
/// nothing else ([`ModelError::UnexpectedTensor`]) nor a non-finite value
/// ([`ModelError::NonFinite`]); the file's own errors are [`read_weights_file`]'s.
///
/// The files are mapped into memory and each tensor is widened straight into its place in the
/// parameters: one copy of the weights, no buffer the size of the file.
pub fn load_weights(
    path: &Path,
    model: &Gpt,
) -> Result<(Vec<f32>, HashMap<String, String>), ModelError> {
    let files = WeightFiles::open(path)?;
    let (views, metadata) = files.tensors()?;
    let family = model.config.family.name();
    let mut by_name = HashMap::new();
    for (name, view, file) in views {
        let short = match model.config.family {
            Family::Gpt2 => name.strip_prefix("transformer.").unwrap_or(&name),
            Family::Llama => &name,
        }
        .to_string();
        if derived(model, &short) {
            continue;
        }
        by_name.insert(short, (name, view, file));
    }
    let l = &model.layout;
    // Every tensor found and of its shape first, then nothing left over; then the copies.
    let mut jobs = Vec::with_capacity(l.named.len());
    for (name, p) in &l.named {
        let (_, view, file) = by_name
            .remove(name)
            .ok_or_else(|| ModelError::MissingTensor {
                path: path.to_path_buf(),
                name: name.clone(),
                family,
            })?;
        let want = if l.is_vocab_rows(p) {
            vec![model.config.vocab_size, p.cols]
        } else {
            ParamLayout::hf_shape(p)
        };
        if view.shape() != want {
            return Err(ModelError::TensorShape {
                path: path.to_path_buf(),
                name: name.clone(),
                found: view.shape().to_vec(),
                expected: want,
            });
        }
        jobs.push((p.offset, name.as_str(), view, file));
    }
    if let Some((name, _, _)) = by_name.into_values().next() {
        return Err(ModelError::UnexpectedTensor {
            path: path.to_path_buf(),
            name,
            family,
        });
    }
    // The copies in pieces of at most PIECE values, on the thread pool: each piece is a
    // disjoint part of the parameters (tensors do not overlap in the layout).
    const PIECE: usize = 1 << 20;
    jobs.sort_by_key(|j| j.0);
    let mut params = ferrogpt_core::mem::zeroed_large(l.total);
    let mut pieces = Vec::new();
    let mut rest = params.as_mut_slice();
    let mut at = 0; // offset of rest[0] in the parameters
    for (offset, name, view, file) in &jobs {
        let n: usize = view.shape().iter().product();
        let width = view.data().len() / n.max(1); // bytes a value
        let (_, tail) = std::mem::take(&mut rest).split_at_mut(offset - at);
        let (mut dst, tail) = tail.split_at_mut(n);
        rest = tail;
        at = offset + n;
        let mut start = 0;
        while !dst.is_empty() {
            let (piece, more) = dst.split_at_mut(dst.len().min(PIECE));
            let bytes = &view.data()[start * width..(start + piece.len()) * width];
            pieces.push((offset + start, *name, view.dtype(), bytes, *file, piece));
            start += PIECE;
            dst = more;
        }
    }
    // The first non-finite value, as an index into the parameters.
    let non_finite = pieces
        .into_par_iter()
        .map(|(offset, name, dtype, bytes, file, out)| {
            widen_into(file, name, dtype, bytes, out)?;
            Ok::<_, ModelError>(out.iter().position(|x| !x.is_finite()).map(|i| offset + i))
        })
        .try_reduce(|| None, |a, b| Ok(a.into_iter().chain(b).min()))?;
    if let Some(index) = non_finite {
        return Err(ModelError::NonFinite {
            path: path.to_path_buf(),
            index,
        });
    }
    Ok((params, metadata))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny() -> Gpt {
        Gpt::new(GptConfig {
            n_layer: 1,
            n_head: 2,
            n_embd: 8,
            block_size: 4,
            vocab_size: 10,
            padded_vocab_size: 16,
            ..GptConfig::default()
        })
        .unwrap()
    }

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("ferrogpt-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    /// The model's tensors as `save_weights` writes them, but for those `edit` changes.
    fn write_edited(path: &Path, model: &Gpt, edit: impl Fn(&mut Vec<(String, Vec<usize>)>)) {
        let mut named: Vec<(String, Vec<usize>)> = model
            .layout
            .named
            .iter()
            .map(|(name, p)| {
                let shape = if model.layout.is_vocab_rows(p) {
                    vec![model.config.vocab_size, p.cols]
                } else {
                    ParamLayout::hf_shape(p)
                };
                (name.clone(), shape)
            })
            .collect();
        edit(&mut named);
        let data: Vec<Vec<f32>> = named
            .iter()
            .map(|(_, s)| vec![0.0; s.iter().product()])
            .collect();
        let tensors: Vec<(String, Vec<usize>, &[f32])> = named
            .iter()
            .zip(&data)
            .map(|((n, s), d)| (n.clone(), s.clone(), d.as_slice()))
            .collect();
        write_tensors(path, &tensors, HashMap::new()).unwrap();
    }

    #[test]
    fn load_errors_name_the_tensor() {
        let model = tiny();
        let dir = scratch("model-errors");
        let path = dir.join("model.safetensors");

        write_edited(&path, &model, |t| {
            t.retain(|(n, _)| n != "h.0.attn.c_proj.weight")
        });
        match load_weights(&path, &model) {
            Err(ModelError::MissingTensor {
                path: p,
                name,
                family,
            }) => {
                assert_eq!(
                    (p.as_path(), name.as_str(), family),
                    (path.as_path(), "h.0.attn.c_proj.weight", "gpt2")
                );
            }
            other => panic!("expected MissingTensor, got {:?}", other.map(|_| ())),
        }

        write_edited(&path, &model, |t| t[0].1 = vec![3, 3]);
        match load_weights(&path, &model) {
            Err(ModelError::TensorShape {
                name,
                found,
                expected,
                ..
            }) => {
                assert_eq!(name, model.layout.named[0].0);
                assert_eq!(found, [3, 3]);
                assert_ne!(expected, found);
            }
            other => panic!("expected TensorShape, got {:?}", other.map(|_| ())),
        }

        write_edited(&path, &model, |t| t.push(("extra.weight".into(), vec![2])));
        let err = load_weights(&path, &model).unwrap_err();
        assert!(
            matches!(&err, ModelError::UnexpectedTensor { name, .. } if name == "extra.weight"),
            "{err:?}"
        );

        std::fs::write(&path, b"garbage").unwrap();
        let err = load_weights(&path, &model).unwrap_err();
        assert!(matches!(err, ModelError::Safetensors { .. }), "{err:?}");
        // The safetensors error stays reachable as the source.
        assert!(std::error::Error::source(&err).is_some());
        assert!(
            err.to_string().contains("not a valid safetensors file"),
            "{err}"
        );

        std::fs::remove_file(&path).unwrap();
        let err = load_weights(&path, &model).unwrap_err();
        assert!(
            matches!(&err, ModelError::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound),
            "{err:?}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn tensors_longer_than_a_piece_load_whole() {
        // The embedding (2100, 512) spans three pieces of the parallel copy.
        let model = Gpt::new(GptConfig {
            n_layer: 1,
            n_head: 2,
            n_embd: 512,
            block_size: 8,
            vocab_size: 2100,
            padded_vocab_size: 2112,
            ..GptConfig::default()
        })
        .unwrap();
        let dir = scratch("pieces");
        let path = dir.join("model.safetensors");
        let mut params: Vec<f32> = (0..model.layout.total)
            .map(|i| (i % 1009) as f32 * 1e-3 - 0.5)
            .collect();
        let wte = &model.layout.named[0].1;
        assert_eq!(model.layout.named[0].0, "wte.weight");
        params[wte.offset + 2100 * 512..wte.offset + 2112 * 512].fill(0.0); // padding rows
        save_weights(&path, &model, &params, HashMap::new()).unwrap();
        let (back, _) = load_weights(&path, &model).unwrap();
        assert!(back == params, "the weights come back as saved");
        // The first non-finite value is named by its index, wherever its piece is.
        let late = wte.offset + (1 << 20) + 7;
        params[late] = f32::NAN;
        params[model.layout.total - 3] = f32::INFINITY;
        save_weights(&path, &model, &params, HashMap::new()).unwrap();
        match load_weights(&path, &model) {
            Err(ModelError::NonFinite { index, .. }) => assert_eq!(index, late),
            other => panic!("expected NonFinite, got {:?}", other.map(|_| ())),
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A parameter buffer of another length than the model's is an error (a shorter one used
    /// to panic), and no file is written.
    #[test]
    fn save_weights_refuses_a_buffer_of_the_wrong_length() {
        let model = tiny();
        let dir = scratch("wrong-length");
        let path = dir.join("model.safetensors");
        let n = model.layout.total;
        for len in [0, n - 1, n + 1] {
            let err = save_weights(&path, &model, &vec![0.0; len], HashMap::new()).unwrap_err();
            assert!(
                matches!(err, ModelError::ParamsLength { found, expected } if found == len && expected == n),
                "{err:?}"
            );
            assert!(!path.exists(), "{len}: a file was written");
        }
        save_weights(&path, &model, &vec![0.0; n], HashMap::new()).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_bad_rope_scaling_in_config_json_names_its_key() {
        let cfg = GptConfig {
            n_layer: 1,
            n_head: 2,
            n_embd: 16,
            block_size: 8,
            vocab_size: 10,
            padded_vocab_size: 16,
            family: Family::Llama,
            pos: Position::Rope,
            rope_scaling: Some(RopeScaling {
                factor: 8.0,
                low_freq_factor: 1.0,
                high_freq_factor: 4.0,
                original_max_position_embeddings: 4,
            }),
            n_kv_head: Some(2),
            ffn_hidden: Some(64),
            ..GptConfig::default()
        };
        let dir = scratch("rope-scaling");
        save_config(&dir, &cfg, None).unwrap();
        assert_eq!(load_config(&dir, 1).unwrap(), cfg);
        let path = dir.join("config.json");
        let mut v: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        v["rope_parameters"]["factor"] = json!(0.0);
        std::fs::write(&path, v.to_string()).unwrap();
        let err = load_config(&dir, 1).unwrap_err();
        assert!(
            matches!(
                err,
                ModelError::ConfigFile {
                    field: "rope_scaling.factor",
                    ..
                }
            ),
            "{err:?}"
        );
        assert!(
            err.to_string()
                .contains("factor must be a positive finite number, got 0"),
            "{err}"
        );
        v["rope_parameters"]["factor"] = json!(8.0);
        v["rope_parameters"]["high_freq_factor"] = json!(1.0);
        std::fs::write(&path, v.to_string()).unwrap();
        let err = load_config(&dir, 1).unwrap_err();
        assert!(
            err.to_string().contains("high_freq_factor must differ"),
            "{err}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn config_errors_name_the_field() {
        let model = tiny();
        let dir = scratch("config-errors");
        save_config(&dir, &model.config, None).unwrap();
        let path = dir.join("config.json");
        let edit = |f: &dyn Fn(&mut Value)| {
            let mut v: Value =
                serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
            f(&mut v);
            std::fs::write(&path, v.to_string()).unwrap();
        };
        assert_eq!(load_config(&dir, 1).unwrap(), model.config);

        edit(&|v| v["n_head"] = json!(3));
        let err = load_config(&dir, 1).unwrap_err();
        assert!(
            matches!(
                err,
                ModelError::ConfigFile {
                    field: "n_embd",
                    ..
                }
            ),
            "{err:?}"
        );
        assert!(
            err.to_string()
                .contains("invalid model config: n_embd 8 is not a multiple of n_head 3"),
            "{err}"
        );

        edit(&|v| v["n_layer"] = json!("two"));
        let err = load_config(&dir, 1).unwrap_err();
        assert!(
            matches!(&err, ModelError::NotInteger { field, .. } if field == "n_layer"),
            "{err:?}"
        );

        edit(&|v| v["activation_function"] = json!("relu"));
        let err = load_config(&dir, 1).unwrap_err();
        assert!(
            matches!(&err, ModelError::Unsupported { field, found, .. } if field == "activation_function" && found == "relu"),
            "{err:?}"
        );

        std::fs::write(&path, "{").unwrap();
        let err = load_config(&dir, 1).unwrap_err();
        assert!(matches!(err, ModelError::Json { .. }), "{err:?}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
