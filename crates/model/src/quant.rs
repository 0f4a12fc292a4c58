//! The decoder's weights: every linear layer's matrix and the LM head stored for the GEMV
//! kernels (`ferrogpt_gemm::gemv`) in f32, bf16 or int8, and quantized checkpoints.
//!
//! What is converted: the four matrices of each block (qkv, attention output, MLP in, MLP out)
//! and the LM head (for a tied head, a copy of the token embedding). What stays f32: the
//! token and position embeddings, the norms' weights and biases, the linear layers' biases.
//! Every converted matrix is stored (out, in) (GPT-2's Conv1D weights are transposed once
//! here), so int8 blocks run along the reduction dimension. f32 converts nothing: its products
//! read the parameters where they lie ([`Weight::InPlace`]), so decoding starts without a
//! conversion and without a second copy of the weights.
//!
//! ## Quantized checkpoints
//!
//! `model.safetensors` keeps every f32 tensor of the model under its usual name; each
//! converted matrix is written in its format:
//!
//! * bf16: the matrix under its own name and Hugging Face shape and layout, dtype BF16 (any
//!   safetensors reader widens it; transformers loads the file as it is). A tied head is not
//!   stored: it is rounded from the f32 embedding when loaded.
//! * int8: `NAME.q8_0` (I8, (out, in padded to 32)) and `NAME.q8_0_scale` (F32, (out, in/32)),
//!   (out, in) whatever the family's layout; a tied head as `lm_head.weight.q8_0`. The file's
//!   metadata `ferrogpt.weights` names the format and `ferrogpt.quantization` the scheme;
//!   `config.json` carries the same in its field `ferrogpt_weights`.

use crate::{Gpt, ParamLayout};
use ferrogpt_core::fsutil::write_atomic;
use ferrogpt_core::Param;
use ferrogpt_gemm::gemv::{self, F32View, Kernel, Layout, Matrix, WeightFormat};
use rayon::prelude::*;
use safetensors::tensor::{Dtype, SafeTensors, TensorView};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// Why converted weights could not be built, written or read; each names the file or tensor.
#[derive(Debug, thiserror::Error)]
pub enum QuantError {
    /// A file could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file at fault.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The weights file does not parse as safetensors.
    #[error("{}: not a valid safetensors file ({source})", path.display())]
    Safetensors {
        /// The file at fault.
        path: PathBuf,
        /// The underlying error.
        source: safetensors::SafeTensorError,
    },
    /// A header or `config.json` does not parse as JSON.
    #[error("{}: not valid JSON ({source})", path.display())]
    Json {
        /// The file at fault.
        path: PathBuf,
        /// The underlying error.
        source: serde_json::Error,
    },
    /// A tensor is missing, of the wrong dtype or shape, or holds non-finite values.
    #[error("{}: tensor '{name}' {problem}", path.display())]
    Tensor {
        /// The file at fault.
        path: PathBuf,
        /// The tensor's name in the file.
        name: String,
        /// What is wrong, in words.
        problem: String,
    },
    /// The file's `ferrogpt.weights` metadata names no format.
    #[error("{}: {META_WEIGHTS} '{found}' is not a weight format (f32, bf16, int8)", path.display())]
    Format {
        /// The file at fault.
        path: PathBuf,
        /// The value of the metadata.
        found: String,
    },
    /// A flat parameter buffer whose length is not the model's.
    #[error("{found} parameters for a model of {expected}")]
    ParamsLength {
        /// Length of the buffer given.
        found: usize,
        /// [`ParamLayout::total`] of the model.
        expected: usize,
    },
    /// Converted weights built for a model of another shape than the one given.
    #[error("decode weights of another model: {problem}")]
    OtherModel {
        /// What does not match, in words.
        problem: String,
    },
    /// The GEMV kernel cannot run here ([`GemmError::Unavailable`]), or a matrix cannot be
    /// stored in the format asked (int8 has no form for a NaN or an infinity).
    ///
    /// [`GemmError::Unavailable`]: ferrogpt_gemm::GemmError::Unavailable
    #[error(transparent)]
    Gemm(#[from] ferrogpt_gemm::GemmError),
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> QuantError + '_ {
    move |source| QuantError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn st_err(path: &Path) -> impl FnOnce(safetensors::SafeTensorError) -> QuantError + '_ {
    move |source| QuantError::Safetensors {
        path: path.to_path_buf(),
        source,
    }
}

fn tensor_err(path: &Path, name: &str, problem: String) -> QuantError {
    QuantError::Tensor {
        path: path.to_path_buf(),
        name: name.to_string(),
        problem,
    }
}

/// Metadata key (safetensors) naming the weight format: "bf16" or "int8".
pub const META_WEIGHTS: &str = "ferrogpt.weights";
/// Metadata key (safetensors) describing the quantization scheme.
pub const META_SCHEME: &str = "ferrogpt.quantization";
/// The field of `config.json` that describes a converted checkpoint.
pub const CONFIG_FIELD: &str = "ferrogpt_weights";
/// Name of the head in files (tied or not).
const HEAD: &str = "lm_head.weight";

/// One matrix of the decoder.
#[derive(Clone, Debug)]
pub enum Weight {
    /// Converted to bf16 or int8 and packed for the kernels.
    Stored(Matrix),
    /// f32, multiplied where it lies in the model's parameters, without a copy
    /// ([`ferrogpt_gemm::gemv::gemv_in_place`]): `rows` outputs × `cols` inputs at `offset`,
    /// in `layout` (GPT-2's Conv1D weights (in, out), Llama's and the head (out, in)).
    InPlace {
        /// Where the matrix starts in the flat parameters.
        offset: usize,
        /// Outputs.
        rows: usize,
        /// Inputs (the reduction dimension).
        cols: usize,
        /// How the `rows · cols` values lie there.
        layout: Layout,
    },
}

impl Weight {
    /// Outputs.
    pub fn rows(&self) -> usize {
        match self {
            Weight::Stored(m) => m.rows(),
            Weight::InPlace { rows, .. } => *rows,
        }
    }

    /// Inputs.
    pub fn cols(&self) -> usize {
        match self {
            Weight::Stored(m) => m.cols(),
            Weight::InPlace { cols, .. } => *cols,
        }
    }

    /// Bytes a product reads.
    pub fn bytes(&self) -> usize {
        match self {
            Weight::Stored(m) => m.bytes(),
            Weight::InPlace { rows, cols, .. } => 4 * rows * cols,
        }
    }

    /// The converted matrix, if this weight was converted.
    pub fn stored(&self) -> Option<&Matrix> {
        match self {
            Weight::Stored(m) => Some(m),
            Weight::InPlace { .. } => None,
        }
    }

    /// `y (+)= W·x (+ bias)` with `kernel` ([`ferrogpt_gemm::gemv::gemv`]'s contract);
    /// `params` is the model's flat buffer an in-place weight is read from.
    pub fn gemv(
        &self,
        kernel: Kernel,
        params: &[f32],
        x: &[f32],
        y: &mut [f32],
        bias: Option<&[f32]>,
        accumulate: bool,
    ) -> Result<(), ferrogpt_gemm::GemmError> {
        match *self {
            Weight::Stored(ref m) => gemv::gemv(kernel, m, x, y, bias, accumulate),
            Weight::InPlace {
                offset,
                rows,
                cols,
                layout,
            } => {
                let data = params.get(offset..offset + rows * cols).ok_or_else(|| {
                    ferrogpt_gemm::GemmError::Shape(format!(
                        "a {rows}x{cols} matrix at {offset} of {} parameters",
                        params.len()
                    ))
                })?;
                let view = F32View {
                    data,
                    rows,
                    cols,
                    layout,
                };
                gemv::gemv_in_place(kernel, view, x, y, bias, accumulate)
            }
        }
    }
}

/// One block's matrices, in the order of the forward pass.
#[derive(Clone, Debug)]
pub struct BlockMatrices {
    /// C → (NH + 2·KV)·HS.
    pub qkv: Weight,
    /// NH·HS → C.
    pub proj: Weight,
    /// C → F (GELU) or 2F, [gate | up] (SwiGLU).
    pub fc: Weight,
    /// F → C.
    pub fc_proj: Weight,
}

/// Every matrix the decoder multiplies by, in one format, and the kernel that multiplies. In
/// f32 the matrices are the parameters themselves ([`Weight::InPlace`]): nothing is converted
/// or copied, and the products read the parameters passed to them.
#[derive(Clone, Debug)]
pub struct DecodeWeights {
    format: WeightFormat,
    kernel: Kernel,
    /// The matrices of each block, L of them in order.
    pub blocks: Vec<BlockMatrices>,
    /// (V, C): the real vocabulary rows only.
    pub head: Weight,
}

/// A matrix of the model: where it lives in the flat buffer, its shape as (out, in), and the
/// layout of its f32 values there.
struct Slot {
    param: Param,
    rows: usize,
    cols: usize,
    layout: Layout,
}

/// The matrices of one block, as slots.
fn block_slots(model: &Gpt, li: usize) -> [Slot; 4] {
    let l = &model.layout;
    let b = &l.blocks[li];
    let slot = |p: Param| {
        if l.weights_out_in {
            Slot {
                param: p,
                rows: p.rows,
                cols: p.cols,
                layout: Layout::OutIn,
            }
        } else {
            Slot {
                param: p,
                rows: p.cols,
                cols: p.rows,
                layout: Layout::InOut,
            }
        }
    };
    [
        slot(b.attn_w),
        slot(b.attn_proj_w),
        slot(b.fc_w),
        slot(b.fc_proj_w),
    ]
}

/// The head as a slot: V real rows of (Vp, C).
fn head_slot(model: &Gpt) -> Slot {
    let h = model.layout.head();
    Slot {
        param: Param {
            rows: model.config.vocab_size,
            ..h
        },
        rows: model.config.vocab_size,
        cols: h.cols,
        layout: Layout::OutIn,
    }
}

fn all_slots(model: &Gpt) -> Vec<Slot> {
    let mut s: Vec<Slot> = (0..model.config.n_layer)
        .flat_map(|li| block_slots(model, li))
        .collect();
    s.push(head_slot(model));
    s
}

fn build(format: WeightFormat, kernel: Kernel, mut m: Vec<Weight>) -> DecodeWeights {
    let head = m.pop().expect("the head is the last matrix");
    let mut it = m.into_iter();
    let mut blocks = Vec::new();
    while let (Some(qkv), Some(proj), Some(fc), Some(fc_proj)) =
        (it.next(), it.next(), it.next(), it.next())
    {
        blocks.push(BlockMatrices {
            qkv,
            proj,
            fc,
            fc_proj,
        });
    }
    DecodeWeights {
        format,
        kernel,
        blocks,
        head,
    }
}

impl DecodeWeights {
    /// Converts the matrices of `params` (the model's flat f32 buffer) to `format`, for the
    /// kernel of the ladder's ISA ([`Kernel::active`]). Matrices convert in parallel; f32
    /// converts nothing (the products read `params` in place, so pass the same buffer to
    /// [`crate::kvcache::KvCache::decode`]). Errors: [`QuantError::ParamsLength`],
    /// [`QuantError::Gemm`] for an ISA forced by `FERROGPT_ISA` that this CPU lacks or, for
    /// int8, a matrix holding a NaN or an infinity.
    pub fn new(model: &Gpt, params: &[f32], format: WeightFormat) -> Result<Self, QuantError> {
        if params.len() != model.layout.total {
            return Err(QuantError::ParamsLength {
                found: params.len(),
                expected: model.layout.total,
            });
        }
        let kernel = Kernel::active()?;
        let m: Vec<Weight> = all_slots(model)
            .par_iter()
            .map(|s| match format {
                WeightFormat::F32 => Ok(Weight::InPlace {
                    offset: s.param.offset,
                    rows: s.rows,
                    cols: s.cols,
                    layout: s.layout,
                }),
                _ => {
                    let w = &params[s.param.offset..s.param.offset + s.rows * s.cols];
                    Matrix::from_f32(format, s.rows, s.cols, w, s.layout).map(Weight::Stored)
                }
            })
            .collect::<Result<_, _>>()?;
        Ok(build(format, kernel, m))
    }

    /// The same weights multiplied by `kernel` instead (tests: every kernel this CPU has).
    /// Errors: [`QuantError::Gemm`] when this CPU cannot run `kernel`.
    pub fn with_kernel(mut self, kernel: Kernel) -> Result<Self, QuantError> {
        if !kernel.supported() {
            return Err(QuantError::Gemm(ferrogpt_gemm::GemmError::Unavailable {
                level: "gemv",
                reason: format!("this CPU lacks the {kernel} kernel's instructions"),
            }));
        }
        self.kernel = kernel;
        Ok(self)
    }

    /// The format every matrix was converted to (f32: none converted, all in place).
    pub fn format(&self) -> WeightFormat {
        self.format
    }

    /// The GEMV kernel the products run on ([`Kernel::active`] unless
    /// [`DecodeWeights::with_kernel`] chose another).
    pub fn kernel(&self) -> Kernel {
        self.kernel
    }

    /// Bytes of matrix weights one decoded token reads.
    pub fn bytes(&self) -> usize {
        self.blocks
            .iter()
            .flat_map(|b| [&b.qkv, &b.proj, &b.fc, &b.fc_proj])
            .chain([&self.head])
            .map(Weight::bytes)
            .sum()
    }

    /// Checks that these weights were built for `model` and `params` is its flat buffer.
    /// Errors: [`QuantError::ParamsLength`], [`QuantError::OtherModel`] (another number of
    /// blocks, or a matrix of another shape).
    pub(crate) fn check(&self, model: &Gpt, params: &[f32]) -> Result<(), QuantError> {
        if params.len() != model.layout.total {
            return Err(QuantError::ParamsLength {
                found: params.len(),
                expected: model.layout.total,
            });
        }
        if self.blocks.len() != model.config.n_layer {
            return Err(QuantError::OtherModel {
                problem: format!(
                    "{} blocks, the model has {}",
                    self.blocks.len(),
                    model.config.n_layer
                ),
            });
        }
        for (i, (s, m)) in all_slots(model).iter().zip(self.matrices()).enumerate() {
            if (m.rows(), m.cols()) != (s.rows, s.cols) {
                return Err(QuantError::OtherModel {
                    problem: format!(
                        "matrix {i} is {}x{}, the model's is {}x{}",
                        m.rows(),
                        m.cols(),
                        s.rows,
                        s.cols
                    ),
                });
            }
        }
        Ok(())
    }

    fn matrices(&self) -> Vec<&Weight> {
        self.blocks
            .iter()
            .flat_map(|b| [&b.qkv, &b.proj, &b.fc, &b.fc_proj])
            .chain([&self.head])
            .collect()
    }

    /// Writes the values the matrices stand for (dequantized) into `params`, in the model's
    /// layout, so that the tape (prefill, evaluation) computes with the same weights. A tied
    /// head is left alone: the embedding keeps its f32 values, and the head's rounding shows in
    /// decoding only. In f32 nothing is written. Errors, before anything is written:
    /// [`QuantError::ParamsLength`] when `params` is not the model's [`ParamLayout::total`]
    /// long, [`QuantError::OtherModel`] for weights built for another model.
    pub fn dequantize_into(&self, model: &Gpt, params: &mut [f32]) -> Result<(), QuantError> {
        self.check(model, params)?;
        let tied = model.layout.lm_head.is_none();
        let slots = all_slots(model);
        // The matrices dequantize in parallel, then land in their places.
        let values: Vec<Option<Vec<f32>>> = slots
            .par_iter()
            .zip(self.matrices())
            .map(|(s, m)| {
                if tied && s.param.offset == model.layout.wte.offset {
                    return None;
                }
                // An in-place weight is the parameters' own values.
                let m = m.stored()?;
                let mut out = vec![0f32; s.rows * s.cols];
                m.dequantize_into(&mut out, s.layout);
                Some(out)
            })
            .collect();
        for (s, v) in slots.iter().zip(values) {
            if let Some(v) = v {
                params[s.param.offset..s.param.offset + v.len()].copy_from_slice(&v);
            }
        }
        Ok(())
    }
}

/// `params` with every converted matrix replaced by the values `format` stores (the weights a
/// quantized model has), and the converted matrices: what an engine holds for `--weights`.
/// Errors: those of [`DecodeWeights::new`].
pub fn quantize(
    model: &Gpt,
    mut params: Vec<f32>,
    format: WeightFormat,
) -> Result<(Vec<f32>, DecodeWeights), QuantError> {
    let w = DecodeWeights::new(model, &params, format)?;
    if format != WeightFormat::F32 {
        w.dequantize_into(model, &mut params)?;
    }
    Ok((params, w))
}

/// The named tensors of the model that belong to a converted matrix: (name, slot index, first
/// row of the matrix in (out, in) form, rows), the head last as `lm_head.weight`.
fn matrix_parts(model: &Gpt) -> Vec<(String, usize, usize, usize)> {
    let slots = all_slots(model);
    let l = &model.layout;
    let mut parts = Vec::new();
    for (si, s) in slots.iter().enumerate().take(slots.len() - 1) {
        for (name, p) in &l.named {
            let inside = p.offset >= s.param.offset && p.offset < s.param.offset + s.param.len();
            if !inside {
                continue;
            }
            // (out, in) stacks (Llama's q/k/v, gate/up) split by rows; (in, out) tensors are
            // whole matrices.
            let (r0, rows) = match s.layout {
                Layout::OutIn => ((p.offset - s.param.offset) / s.cols, p.rows),
                Layout::InOut => (0, s.rows),
            };
            parts.push((name.clone(), si, r0, rows));
        }
    }
    parts.push((
        HEAD.to_string(),
        slots.len() - 1,
        0,
        model.config.vocab_size,
    ));
    parts
}

/// The scheme, in words, for metadata and config.json.
fn scheme(format: WeightFormat) -> &'static str {
    match format {
        WeightFormat::F32 => "none",
        WeightFormat::Bf16 => "bf16 (round to nearest even) of every linear weight and the LM head",
        WeightFormat::Int8 => {
            "q8_0: blocks of 32 weights along the input dimension, one f32 scale max|w|/127 per \
             block, stored (out, in) as NAME.q8_0 (I8) and NAME.q8_0_scale (F32); every linear \
             weight and the LM head; embeddings, norms and biases f32"
        }
    }
}

/// Writes a converted checkpoint's weights to `path`: the f32 tensors of `params` and the
/// matrices of `w` in its format (module doc), with `metadata` plus the format's keys
/// ([`META_WEIGHTS`], [`META_SCHEME`]; none for f32), atomically. Errors, with nothing
/// written: [`QuantError::ParamsLength`] when `params` is not the model's
/// [`ParamLayout::total`] long, [`QuantError::OtherModel`] for `w` built for another model;
/// then [`QuantError::Io`], [`QuantError::Safetensors`].
pub fn save(
    path: &Path,
    model: &Gpt,
    params: &[f32],
    w: &DecodeWeights,
    mut metadata: HashMap<String, String>,
) -> Result<(), QuantError> {
    w.check(model, params)?;
    let format = w.format();
    let l = &model.layout;
    let v = model.config.vocab_size;
    let matrices = w.matrices();
    let parts = matrix_parts(model);
    let converted: HashMap<&str, _> = parts.iter().map(|p| (p.0.as_str(), p)).collect();
    // (name, dtype, shape, bytes)
    let mut out: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = Vec::new();
    let f32_bytes = |x: &[f32]| x.iter().flat_map(|v| v.to_le_bytes()).collect::<Vec<u8>>();
    for (name, p) in &l.named {
        if format != WeightFormat::F32 && converted.contains_key(name.as_str()) {
            continue;
        }
        let (shape, data) = if l.is_vocab_rows(p) {
            (vec![v, p.cols], &params[p.offset..p.offset + v * p.cols])
        } else {
            (ParamLayout::hf_shape(p), &params[p.range()])
        };
        out.push((name.clone(), Dtype::F32, shape, f32_bytes(data)));
    }
    let tied = l.lm_head.is_none();
    for (name, si, r0, rows) in &parts {
        let (m, cols) = (matrices[*si].stored(), matrices[*si].cols());
        match format {
            WeightFormat::F32 => {}
            WeightFormat::Bf16 => {
                if tied && name == HEAD {
                    continue;
                }
                let (_, p) = l
                    .named
                    .iter()
                    .find(|(n, _)| n == name)
                    .expect("a part is a named tensor");
                let bits = m.and_then(Matrix::bf16_rows).expect("bf16 weights");
                // Back to the file's layout: the rows of this part, transposed for Conv1D.
                let mut t: Vec<u16> = bits[r0 * cols..(r0 + rows) * cols].to_vec();
                if !l.weights_out_in {
                    t = (0..cols)
                        .flat_map(|c| (0..*rows).map(move |r| (r, c)))
                        .map(|(r, c)| bits[(r0 + r) * cols + c])
                        .collect();
                }
                let shape = if l.is_vocab_rows(p) {
                    vec![v, p.cols]
                } else {
                    ParamLayout::hf_shape(p)
                };
                let bytes = t.iter().flat_map(|h| h.to_le_bytes()).collect();
                out.push((name.clone(), Dtype::BF16, shape, bytes));
            }
            WeightFormat::Int8 => {
                let (q, d) = m.and_then(Matrix::q8_rows).expect("int8 weights");
                let (cp, nb) = (cols.next_multiple_of(32), cols.div_ceil(32));
                let qs: Vec<u8> = q[r0 * cp..(r0 + rows) * cp]
                    .iter()
                    .map(|&x| x as u8)
                    .collect();
                out.push((format!("{name}.q8_0"), Dtype::I8, vec![*rows, cp], qs));
                let ds = f32_bytes(&d[r0 * nb..(r0 + rows) * nb]);
                out.push((
                    format!("{name}.q8_0_scale"),
                    Dtype::F32,
                    vec![*rows, nb],
                    ds,
                ));
            }
        }
    }
    if format != WeightFormat::F32 {
        metadata.insert(META_WEIGHTS.into(), format.name().into());
        metadata.insert(META_SCHEME.into(), scheme(format).into());
    }
    let views: Vec<(String, TensorView)> = out
        .iter()
        .map(|(n, dt, s, b)| {
            TensorView::new(*dt, s.clone(), b)
                .map(|t| (n.clone(), t))
                .map_err(st_err(path))
        })
        .collect::<Result<_, _>>()?;
    let bytes = safetensors::serialize(views, &Some(metadata)).map_err(st_err(path))?;
    write_atomic(path, &bytes).map_err(io_err(path))
}

/// The format a checkpoint's weights file says it holds (its `ferrogpt.weights` metadata):
/// f32 when it says nothing. Reads only the file's header.
pub fn file_format(path: &Path) -> Result<WeightFormat, QuantError> {
    use std::io::Read;
    let mut f = std::fs::File::open(path).map_err(io_err(path))?;
    let mut n = [0u8; 8];
    f.read_exact(&mut n).map_err(io_err(path))?;
    // A header past 100 MiB is no safetensors header; the full read reports it.
    let len = u64::from_le_bytes(n).min(100 << 20);
    let mut header = vec![0u8; len as usize];
    f.read_exact(&mut header).map_err(io_err(path))?;
    let v: Value = serde_json::from_slice(&header).map_err(|source| QuantError::Json {
        path: path.to_path_buf(),
        source,
    })?;
    match v
        .get("__metadata__")
        .and_then(|m| m.get(META_WEIGHTS))
        .and_then(Value::as_str)
    {
        None => Ok(WeightFormat::F32),
        Some(s) => s.parse().map_err(|_| QuantError::Format {
            path: path.to_path_buf(),
            found: s.to_string(),
        }),
    }
}

/// Reads an int8 checkpoint (see the module doc) into the model's flat f32 buffer, with every
/// int8 matrix dequantized into its place, and the int8 matrices themselves. Every tensor
/// must be there with its shape; the error names the file and the tensor.
pub fn load_int8(path: &Path, model: &Gpt) -> Result<(Vec<f32>, DecodeWeights), QuantError> {
    let bytes = crate::checkpoint::map_file(path).map_err(io_err(path))?;
    let st = SafeTensors::deserialize(&bytes).map_err(st_err(path))?;
    let get = |name: &str, dtype: Dtype, shape: &[usize]| -> Result<&[u8], QuantError> {
        let t = st.tensor(name).map_err(|_| {
            tensor_err(
                path,
                name,
                "is missing (is this an int8 checkpoint of this model?)".into(),
            )
        })?;
        if t.dtype() != dtype || t.shape() != shape {
            return Err(tensor_err(
                path,
                name,
                format!(
                    "is {:?} {:?}, expected {dtype:?} {shape:?}",
                    t.dtype(),
                    t.shape()
                ),
            ));
        }
        Ok(t.data())
    };
    let to_f32 = |b: &[u8]| -> Vec<f32> {
        b.chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect()
    };
    let l = &model.layout;
    let v = model.config.vocab_size;
    let parts = matrix_parts(model);
    let converted: HashMap<&str, ()> = parts.iter().map(|p| (p.0.as_str(), ())).collect();
    let mut params = vec![0f32; l.total];
    for (name, p) in &l.named {
        if converted.contains_key(name.as_str()) {
            continue;
        }
        let rows = if l.is_vocab_rows(p) { v } else { p.rows };
        let shape = if l.is_vocab_rows(p) {
            vec![v, p.cols]
        } else {
            ParamLayout::hf_shape(p)
        };
        let data = to_f32(get(name, Dtype::F32, &shape)?);
        params[p.offset..p.offset + rows * p.cols].copy_from_slice(&data);
    }
    let slots = all_slots(model);
    let mut q: Vec<Vec<i8>> = slots.iter().map(|_| Vec::new()).collect();
    let mut d: Vec<Vec<f32>> = slots.iter().map(|_| Vec::new()).collect();
    for (name, si, _, rows) in &parts {
        let cp = slots[*si].cols.next_multiple_of(32);
        let qs = get(&format!("{name}.q8_0"), Dtype::I8, &[*rows, cp])?;
        q[*si].extend(qs.iter().map(|&b| b as i8));
        let ds = get(&format!("{name}.q8_0_scale"), Dtype::F32, &[*rows, cp / 32])?;
        d[*si].extend(to_f32(ds));
    }
    let matrices = slots
        .iter()
        .zip(q.into_iter().zip(d).zip(&parts))
        .map(|(s, ((q, d), part))| {
            Matrix::from_q8(s.rows, s.cols, q, d)
                .map(Weight::Stored)
                .map_err(|e| tensor_err(path, &format!("{}.q8_0", part.0), e.to_string()))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let w = build(WeightFormat::Int8, Kernel::active()?, matrices);
    w.dequantize_into(model, &mut params)?;
    if let Some((name, _)) = model
        .layout
        .named
        .iter()
        .find(|(_, p)| params[p.range()].iter().any(|x| !x.is_finite()))
    {
        return Err(tensor_err(path, name, "holds a non-finite value".into()));
    }
    Ok((params, w))
}

/// Adds the `ferrogpt_weights` field (format, scheme, and for int8 the block size 32) to
/// `dir/config.json`, rewriting it atomically. Errors: [`QuantError::Io`], [`QuantError::Json`].
pub fn mark_config(dir: &Path, format: WeightFormat) -> Result<(), QuantError> {
    let path = dir.join("config.json");
    let json_err = |source| QuantError::Json {
        path: path.clone(),
        source,
    };
    let text = std::fs::read_to_string(&path).map_err(io_err(&path))?;
    let mut v: Value = serde_json::from_str(&text).map_err(json_err)?;
    v[CONFIG_FIELD] = json!({
        "format": format.name(),
        "scheme": scheme(format),
        "block": (format == WeightFormat::Int8).then_some(32),
    });
    let text = serde_json::to_string_pretty(&v).map_err(json_err)?;
    write_atomic(&path, text.as_bytes()).map_err(io_err(&path))
}
