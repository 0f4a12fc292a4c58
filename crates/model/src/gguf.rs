//! GGUF, llama.cpp's model file: read and write GPT-2 and Llama models with F32, F16 or Q8_0
//! tensors.
//!
//! The container (version 3, little-endian), written by hand here (see
//! docs/models.md for why no crate):
//!
//! ```text
//! "GGUF" u32 version=3  u64 n_tensors  u64 n_kv
//! n_kv × (string key, u32 value type, value)          metadata; strings are u64 length + UTF-8
//! n_tensors × (string name, u32 n_dims, u64 ne[n_dims], u32 type, u64 offset)
//! padding to `general.alignment` (default 32), then the data; each tensor at an aligned offset
//! ```
//!
//! `ne[0]` is the fastest-varying dimension: a row-major (rows, cols) matrix has `ne = [cols,
//! rows]`. llama.cpp's matrices are (out, in) (PyTorch's nn.Linear), so GPT-2's Conv1D weights
//! (in, out) are transposed both ways. Llama's q and k rows are permuted: Hugging Face's "rotate
//! half" pairs dimension i with i + HS/2, llama.cpp (Meta's layout) pairs 2i with 2i + 1; per
//! head, row `j·HS/2 + i` of HF's weight is row `2i + j` of the GGUF's ([`rope_permute`]).
//!
//! Tensor names and metadata are llama.cpp's for its `gpt2` and `llama` architectures; only
//! `vocab_size` rows of the embedding (and untied head) are written, and `pad_multiple` pads
//! them again on reading. Types: F32, F16 and Q8_0 (the k-quants and others are refused).

use crate::config::{Family, GptConfig, Position};
use crate::{Gpt, ModelError};
use std::path::{Path, PathBuf};

/// GGUF's tensor types that ferrogpt reads and writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TensorType {
    /// 4 bytes a value.
    F32,
    /// IEEE half precision, 2 bytes a value (rounded to nearest even when written).
    F16,
    /// Blocks of 32 weights along a row: one f16 scale `d` = max|x| / 127 and 32 int8 `q`,
    /// x ≈ d·q (34 bytes a block).
    Q8_0,
}

impl TensorType {
    /// GGML's type id.
    pub fn id(self) -> u32 {
        match self {
            TensorType::F32 => 0,
            TensorType::F16 => 1,
            TensorType::Q8_0 => 8,
        }
    }

    /// llama.cpp's `general.file_type` of a file whose matrices are of this type.
    fn file_type(self) -> u32 {
        match self {
            TensorType::F32 => 0,
            TensorType::F16 => 1,
            TensorType::Q8_0 => 7,
        }
    }

    /// Parses "f32", "f16" or "q8_0" (or their upper-case names); None otherwise.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "f32" | "F32" => Some(TensorType::F32),
            "f16" | "F16" => Some(TensorType::F16),
            "q8_0" | "Q8_0" => Some(TensorType::Q8_0),
            _ => None,
        }
    }

    /// Bytes of `n` values (a whole number of blocks for Q8_0).
    fn bytes(self, n: usize) -> usize {
        match self {
            TensorType::F32 => 4 * n,
            TensorType::F16 => 2 * n,
            TensorType::Q8_0 => n / Q8_BLOCK * 34,
        }
    }

    fn from_id(id: u32) -> Option<Self> {
        match id {
            0 => Some(TensorType::F32),
            1 => Some(TensorType::F16),
            8 => Some(TensorType::Q8_0),
            _ => None,
        }
    }
}

/// Weights per Q8_0 block.
pub const Q8_BLOCK: usize = 32;

/// Appends `x` (a multiple of 32 values) as Q8_0 blocks, rounding as llama.cpp's reference
/// quantizer does (d = max|x| / 127, q = round(x / d)).
fn quantize_q8_0(x: &[f32], out: &mut Vec<u8>) {
    for block in x.chunks_exact(Q8_BLOCK) {
        let amax = block.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        let d = amax / 127.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        out.extend_from_slice(&f32_to_f16(d).to_le_bytes());
        out.extend(block.iter().map(|v| (v * id).round() as i8 as u8));
    }
}

/// Q8_0 blocks back to f32: x = d·q.
fn dequantize_q8_0(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(34)
        .flat_map(|b| {
            let d = f16_to_f32(u16::from_le_bytes([b[0], b[1]]));
            b[2..].iter().map(move |&q| d * q as i8 as f32)
        })
        .collect()
}

/// GGML's name of a type id, for error messages.
fn ggml_type_name(id: u32) -> String {
    const NAMES: [&str; 16] = [
        "F32", "F16", "Q4_0", "Q4_1", "?", "?", "Q5_0", "Q5_1", "Q8_0", "Q8_1", "Q2_K", "Q3_K",
        "Q4_K", "Q5_K", "Q6_K", "Q8_K",
    ];
    match id {
        30 => "BF16 (30)".into(),
        _ => format!("{} ({id})", NAMES.get(id as usize).unwrap_or(&"?")),
    }
}

/// A metadata value.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    /// GGUF type 0.
    U8(u8),
    /// GGUF type 1.
    I8(i8),
    /// GGUF type 2.
    U16(u16),
    /// GGUF type 3.
    I16(i16),
    /// GGUF type 4.
    U32(u32),
    /// GGUF type 5.
    I32(i32),
    /// GGUF type 6.
    F32(f32),
    /// GGUF type 7 (one byte, nonzero is true).
    Bool(bool),
    /// GGUF type 8: UTF-8.
    Str(String),
    /// GGUF type 9: elements of one type (not nested); written empty as an array of strings.
    Array(Vec<Value>),
    /// GGUF type 10.
    U64(u64),
    /// GGUF type 11.
    I64(i64),
    /// GGUF type 12.
    F64(f64),
}

impl Value {
    fn type_id(&self) -> u32 {
        match self {
            Value::U8(_) => 0,
            Value::I8(_) => 1,
            Value::U16(_) => 2,
            Value::I16(_) => 3,
            Value::U32(_) => 4,
            Value::I32(_) => 5,
            Value::F32(_) => 6,
            Value::Bool(_) => 7,
            Value::Str(_) => 8,
            Value::Array(_) => 9,
            Value::U64(_) => 10,
            Value::I64(_) => 11,
            Value::F64(_) => 12,
        }
    }

    /// The value as an unsigned integer, if it is a non-negative integer.
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            Value::U8(v) => Some(v.into()),
            Value::U16(v) => Some(v.into()),
            Value::U32(v) => Some(v.into()),
            Value::U64(v) => Some(v),
            Value::I8(v) => u64::try_from(v).ok(),
            Value::I16(v) => u64::try_from(v).ok(),
            Value::I32(v) => u64::try_from(v).ok(),
            Value::I64(v) => u64::try_from(v).ok(),
            _ => None,
        }
    }

    /// The value as a float. An f32 is read through its shortest decimal form, so 1e-5 stored
    /// as f32 reads back as the f64 1e-5.
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            Value::F32(v) => v.to_string().parse().ok(),
            Value::F64(v) => Some(v),
            _ => self.as_u64().map(|v| v as f64),
        }
    }

    /// The text of a [`Value::Str`].
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }
}

/// One tensor's entry of the header.
#[derive(Clone, Debug, PartialEq)]
pub struct TensorInfo {
    /// llama.cpp's tensor name ("blk.0.attn_qkv.weight").
    pub name: String,
    /// GGML's `ne`: the fastest-varying dimension first.
    pub ne: Vec<u64>,
    /// GGML's type id (0 F32, 1 F16, 8 Q8_0, ...).
    pub ty: u32,
    /// Bytes from the start of the data section.
    pub offset: u64,
}

/// A GGUF file in memory.
#[derive(Clone, Debug, Default)]
pub struct GgufFile {
    /// Key-value metadata in file order ("general.architecture", ...).
    pub metadata: Vec<(String, Value)>,
    /// The tensor entries in file order; their offsets point into `data`.
    pub tensors: Vec<TensorInfo>,
    /// The data section.
    pub data: Vec<u8>,
}

const ALIGNMENT: usize = 32;

fn bad(path: &Path, problem: impl Into<String>) -> ModelError {
    ModelError::Gguf {
        path: path.to_path_buf(),
        problem: problem.into(),
    }
}

/// A reader over bytes whose every read checks the length (a truncated file is an error).
struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        if self.bytes.len() - self.pos < n {
            return Err(format!(
                "truncated: needs {n} bytes at offset {}, the file has {}",
                self.pos,
                self.bytes.len()
            ));
        }
        self.pos += n;
        Ok(&self.bytes[self.pos - n..self.pos])
    }
    fn arr<const N: usize>(&mut self) -> Result<[u8; N], String> {
        Ok(self.take(N)?.try_into().expect("N bytes"))
    }
    fn u32(&mut self) -> Result<u32, String> {
        Ok(u32::from_le_bytes(self.arr()?))
    }
    fn u64(&mut self) -> Result<u64, String> {
        Ok(u64::from_le_bytes(self.arr()?))
    }
    /// A count of items of at least `min_size` bytes each, checked against what is left.
    fn count(&mut self, min_size: usize, what: &str) -> Result<usize, String> {
        let n = self.u64()?;
        let left = (self.bytes.len() - self.pos) as u64;
        if n.saturating_mul(min_size as u64) > left {
            return Err(format!(
                "truncated: {n} {what} at offset {} cannot fit in the {left} bytes left",
                self.pos - 8
            ));
        }
        Ok(n as usize)
    }
    fn string(&mut self) -> Result<String, String> {
        let n = self.count(1, "string bytes")?;
        String::from_utf8(self.take(n)?.to_vec())
            .map_err(|_| format!("a string at offset {} is not UTF-8", self.pos - n))
    }
    fn value(&mut self, ty: u32) -> Result<Value, String> {
        Ok(match ty {
            0 => Value::U8(self.arr::<1>()?[0]),
            1 => Value::I8(self.arr::<1>()?[0] as i8),
            2 => Value::U16(u16::from_le_bytes(self.arr()?)),
            3 => Value::I16(i16::from_le_bytes(self.arr()?)),
            4 => Value::U32(self.u32()?),
            5 => Value::I32(i32::from_le_bytes(self.arr()?)),
            6 => Value::F32(f32::from_le_bytes(self.arr()?)),
            7 => Value::Bool(self.arr::<1>()?[0] != 0),
            8 => Value::Str(self.string()?),
            9 => {
                let ety = self.u32()?;
                if ety == 9 {
                    return Err("nested metadata arrays are not supported".into());
                }
                let n = self.count(1, "array elements")?;
                (0..n)
                    .map(|_| self.value(ety))
                    .collect::<Result<_, _>>()
                    .map(Value::Array)?
            }
            10 => Value::U64(self.u64()?),
            11 => Value::I64(i64::from_le_bytes(self.arr()?)),
            12 => Value::F64(f64::from_le_bytes(self.arr()?)),
            _ => return Err(format!("unknown metadata value type {ty}")),
        })
    }
}

impl GgufFile {
    /// Parses GGUF bytes (version 2 or 3). Errors: the problem in one line (bad magic, an
    /// unsupported version, truncation, a tensor beyond the end of the data).
    pub fn parse(bytes: &[u8]) -> Result<GgufFile, String> {
        let (mut file, start) = GgufFile::parse_index(bytes)?;
        file.data = bytes.get(start..).unwrap_or(&[]).to_vec();
        Ok(file)
    }

    /// [`GgufFile::parse`] without copying the data: the metadata and tensor entries (`data`
    /// left empty, every tensor checked to lie inside the data), and where the data starts in
    /// `bytes`.
    fn parse_index(bytes: &[u8]) -> Result<(GgufFile, usize), String> {
        let mut c = Cursor { bytes, pos: 0 };
        let magic = c
            .take(4)
            .map_err(|_| "not a GGUF file (shorter than its magic)".to_string())?;
        if magic != b"GGUF" {
            return Err(format!(
                "not a GGUF file (magic {:?}, expected \"GGUF\")",
                String::from_utf8_lossy(magic)
            ));
        }
        let version = c.u32()?;
        if !(2..=3).contains(&version) {
            return Err(format!(
                "GGUF version {version} is not supported (expected 3)"
            ));
        }
        let n_tensors = c.u64()?;
        let n_kv = c.count(13, "metadata entries")?;
        let mut metadata = Vec::with_capacity(n_kv);
        for _ in 0..n_kv {
            let key = c.string()?;
            let ty = c.u32()?;
            let v = c.value(ty).map_err(|e| format!("metadata '{key}': {e}"))?;
            metadata.push((key, v));
        }
        let left = (bytes.len() - c.pos) as u64;
        if n_tensors.saturating_mul(24) > left {
            return Err(format!(
                "truncated: {n_tensors} tensor entries cannot fit in the {left} bytes left"
            ));
        }
        let mut tensors = Vec::with_capacity(n_tensors as usize);
        for _ in 0..n_tensors {
            let name = c.string()?;
            let n_dims = c.u32()?;
            if n_dims > 4 {
                return Err(format!(
                    "tensor '{name}' has {n_dims} dimensions (at most 4)"
                ));
            }
            let ne = (0..n_dims).map(|_| c.u64()).collect::<Result<_, _>>()?;
            let ty = c.u32()?;
            let offset = c.u64()?;
            tensors.push(TensorInfo {
                name,
                ne,
                ty,
                offset,
            });
        }
        let file = GgufFile {
            metadata,
            tensors,
            data: Vec::new(),
        };
        let align = match file.get("general.alignment") {
            None => ALIGNMENT,
            Some(v) => match v.as_u64() {
                Some(a) if a > 0 && a.is_power_of_two() => a as usize,
                _ => return Err(format!("general.alignment {v:?} is not a power of two")),
            },
        };
        let start = c.pos.div_ceil(align) * align;
        let data_len = bytes.len().saturating_sub(start);
        // Each F32/F16/Q8_0 tensor must lie inside the data (others are refused when read).
        for t in &file.tensors {
            let elems = t.ne.iter().try_fold(1u64, |a, &d| a.checked_mul(d));
            let Some(ty) = TensorType::from_id(t.ty) else {
                continue;
            };
            if ty == TensorType::Q8_0 && t.ne.first().is_none_or(|d| d % Q8_BLOCK as u64 != 0) {
                return Err(format!(
                    "tensor '{}' is Q8_0 but its rows ({:?}) are not whole blocks of 32",
                    t.name, t.ne
                ));
            }
            let size = elems
                .and_then(|e| usize::try_from(e).ok())
                .filter(|&e| e <= usize::MAX / 4)
                .map(|e| ty.bytes(e) as u64);
            let end = size.and_then(|s| s.checked_add(t.offset));
            if end.is_none_or(|e| e > data_len as u64) {
                return Err(format!(
                    "truncated: tensor '{}' ends beyond the file's data ({data_len} bytes)",
                    t.name,
                ));
            }
        }
        Ok((file, start.min(bytes.len())))
    }

    /// Reads and parses the file at `path`. Errors: [`ModelError::Io`], [`ModelError::Gguf`].
    /// The file is mapped into memory, so its data is copied once, into [`GgufFile::data`].
    pub fn read(path: &Path) -> Result<GgufFile, ModelError> {
        let bytes = crate::checkpoint::map_file(path).map_err(ModelError::io(path))?;
        GgufFile::parse(&bytes).map_err(|p| bad(path, p))
    }

    /// A metadata value by key.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.metadata.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    /// Appends a metadata entry (the file's metadata keeps this order).
    pub fn push_metadata(&mut self, key: impl Into<String>, value: Value) {
        self.metadata.push((key.into(), value));
    }

    /// Adds a tensor of `ne` (fastest dimension first) from row-major f32 `values`, stored as
    /// `ty` at the next 32-byte aligned offset of `data`. Errors (the problem in one line, as
    /// [`GgufFile::parse`]; nothing is added): `ne` of no or more than 4 dimensions, Q8_0
    /// rows (`ne[0]`) that are not whole blocks of 32, `values` not the product of `ne` long.
    pub fn push_tensor(
        &mut self,
        name: &str,
        ne: Vec<u64>,
        values: &[f32],
        ty: TensorType,
    ) -> Result<(), String> {
        if ne.is_empty() || ne.len() > 4 {
            return Err(format!(
                "tensor '{name}' has {} dimensions (1 to 4)",
                ne.len()
            ));
        }
        if ty == TensorType::Q8_0 && !ne[0].is_multiple_of(Q8_BLOCK as u64) {
            return Err(format!(
                "tensor '{name}' is Q8_0 but its rows ({ne:?}) are not whole blocks of 32"
            ));
        }
        let elems = ne.iter().try_fold(1u64, |a, &d| a.checked_mul(d));
        if elems != Some(values.len() as u64) {
            return Err(format!(
                "tensor '{name}' of ne {ne:?} does not hold the {} values given",
                values.len()
            ));
        }
        let pad = self.data.len().div_ceil(ALIGNMENT) * ALIGNMENT;
        self.data.resize(pad, 0);
        self.tensors.push(TensorInfo {
            name: name.into(),
            ne,
            ty: ty.id(),
            offset: pad as u64,
        });
        self.data.reserve(ty.bytes(values.len()));
        match ty {
            TensorType::F32 => values
                .iter()
                .for_each(|v| self.data.extend_from_slice(&v.to_le_bytes())),
            TensorType::F16 => values
                .iter()
                .for_each(|v| self.data.extend_from_slice(&f32_to_f16(*v).to_le_bytes())),
            TensorType::Q8_0 => quantize_q8_0(values, &mut self.data),
        }
        Ok(())
    }

    /// The file's bytes (version 3, alignment 32).
    pub fn to_bytes(&self) -> Vec<u8> {
        fn string(out: &mut Vec<u8>, s: &str) {
            out.extend_from_slice(&(s.len() as u64).to_le_bytes());
            out.extend_from_slice(s.as_bytes());
        }
        fn value(out: &mut Vec<u8>, v: &Value) {
            match v {
                Value::U8(x) => out.push(*x),
                Value::I8(x) => out.push(*x as u8),
                Value::U16(x) => out.extend_from_slice(&x.to_le_bytes()),
                Value::I16(x) => out.extend_from_slice(&x.to_le_bytes()),
                Value::U32(x) => out.extend_from_slice(&x.to_le_bytes()),
                Value::I32(x) => out.extend_from_slice(&x.to_le_bytes()),
                Value::F32(x) => out.extend_from_slice(&x.to_le_bytes()),
                Value::Bool(x) => out.push(*x as u8),
                Value::Str(s) => string(out, s),
                Value::Array(a) => {
                    // An empty array has no element to give its type: it is written as one of
                    // strings, the only list ferrogpt may write empty (the merges of a
                    // tokenizer without any, which llama.cpp wants present and of strings).
                    let ety = a.first().map_or(8, Value::type_id);
                    out.extend_from_slice(&ety.to_le_bytes());
                    out.extend_from_slice(&(a.len() as u64).to_le_bytes());
                    a.iter().for_each(|e| value(out, e));
                }
                Value::U64(x) => out.extend_from_slice(&x.to_le_bytes()),
                Value::I64(x) => out.extend_from_slice(&x.to_le_bytes()),
                Value::F64(x) => out.extend_from_slice(&x.to_le_bytes()),
            }
        }
        let mut out = b"GGUF".to_vec();
        out.extend_from_slice(&3u32.to_le_bytes());
        out.extend_from_slice(&(self.tensors.len() as u64).to_le_bytes());
        let metadata: Vec<_> = self
            .metadata
            .iter()
            .filter(|(k, _)| k != "general.alignment")
            .collect();
        out.extend_from_slice(&(metadata.len() as u64).to_le_bytes());
        for (k, v) in metadata {
            string(&mut out, k);
            out.extend_from_slice(&v.type_id().to_le_bytes());
            value(&mut out, v);
        }
        for t in &self.tensors {
            string(&mut out, &t.name);
            out.extend_from_slice(&(t.ne.len() as u32).to_le_bytes());
            t.ne.iter()
                .for_each(|d| out.extend_from_slice(&d.to_le_bytes()));
            out.extend_from_slice(&t.ty.to_le_bytes());
            out.extend_from_slice(&t.offset.to_le_bytes());
        }
        out.resize(out.len().div_ceil(ALIGNMENT) * ALIGNMENT, 0);
        out.extend_from_slice(&self.data);
        out
    }

    /// A tensor's values as f32, row-major, with its `ne`, read from `data` (this file's data
    /// section). Errors: missing, or a type other than F32, F16 and Q8_0.
    fn tensor(
        &self,
        data: &[u8],
        path: &Path,
        name: &str,
        family: &'static str,
    ) -> Result<(Vec<u64>, Vec<f32>), ModelError> {
        let t = self
            .tensors
            .iter()
            .find(|t| t.name == name)
            .ok_or_else(|| ModelError::MissingTensor {
                path: path.to_path_buf(),
                name: name.into(),
                family,
            })?;
        let n: u64 = t.ne.iter().product();
        let at = t.offset as usize;
        let values = match t.ty {
            0 => data[at..at + 4 * n as usize]
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes(b.try_into().expect("4 bytes")))
                .collect(),
            1 => data[at..at + 2 * n as usize]
                .chunks_exact(2)
                .map(|b| f16_to_f32(u16::from_le_bytes([b[0], b[1]])))
                .collect(),
            8 => dequantize_q8_0(&data[at..at + TensorType::Q8_0.bytes(n as usize)]),
            ty => {
                return Err(ModelError::Unsupported {
                    path: path.to_path_buf(),
                    field: format!("tensor '{name}' type"),
                    found: ggml_type_name(ty),
                    expected: "F32 (0), F16 (1) or Q8_0 (8)",
                })
            }
        };
        Ok((t.ne.clone(), values))
    }
}

/// f32 to IEEE half precision, rounding to nearest even (overflow to infinity).
pub fn f32_to_f16(x: f32) -> u16 {
    let b = x.to_bits();
    let sign = ((b >> 16) & 0x8000) as u16;
    let exp = ((b >> 23) & 0xff) as i32;
    let man = b & 0x7f_ffff;
    if exp == 0xff {
        return sign | 0x7c00 | if man != 0 { 0x200 } else { 0 };
    }
    let e = exp - 127 + 15;
    if e >= 31 {
        return sign | 0x7c00;
    }
    if e <= 0 {
        if e < -10 {
            return sign;
        }
        let m = man | 0x80_0000;
        let shift = (14 - e) as u32;
        let half = m >> shift;
        let rem = m & ((1 << shift) - 1);
        let mid = 1 << (shift - 1);
        let round = (rem > mid || (rem == mid && half & 1 == 1)) as u32;
        return sign | (half + round) as u16;
    }
    let half = ((e as u32) << 10) | (man >> 13);
    let rem = man & 0x1fff;
    let round = (rem > 0x1000 || (rem == 0x1000 && half & 1 == 1)) as u32;
    sign | (half + round) as u16 // a carry into the exponent is the right rounding
}

/// IEEE half precision to f32 (exact).
pub fn f16_to_f32(h: u16) -> f32 {
    let sign = ((h as u32) & 0x8000) << 16;
    let exp = ((h >> 10) & 0x1f) as u32;
    let man = (h & 0x3ff) as u32;
    let bits = match exp {
        0 if man == 0 => sign,
        0 => {
            let v = man as f32 * (1.0 / (1 << 24) as f32);
            return if sign != 0 { -v } else { v };
        }
        31 => sign | 0x7f80_0000 | (man << 13),
        _ => sign | ((exp + 127 - 15) << 23) | (man << 13),
    };
    f32::from_bits(bits)
}

/// Reorders the rows of a (heads·HS, C) q or k weight between Hugging Face's rotate-half
/// order and llama.cpp's interleaved order: `to_gguf` moves HF row `h·HS + j·HS/2 + i` to row
/// `h·HS + 2i + j`; `!to_gguf` is the inverse. `w` holds `heads · HS` rows of `cols` values
/// (HS even); panics if `heads` or `cols` is 0.
pub fn rope_permute(w: &[f32], heads: usize, cols: usize, to_gguf: bool) -> Vec<f32> {
    let hs = w.len() / cols / heads;
    let mut out = vec![0.0; w.len()];
    for h in 0..heads {
        for j in 0..2 {
            for i in 0..hs / 2 {
                let hf = h * hs + j * hs / 2 + i;
                let gg = h * hs + 2 * i + j;
                let (src, dst) = if to_gguf { (hf, gg) } else { (gg, hf) };
                out[dst * cols..(dst + 1) * cols].copy_from_slice(&w[src * cols..(src + 1) * cols]);
            }
        }
    }
    out
}

fn transpose(w: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut out = vec![0.0; w.len()];
    for r in 0..rows {
        for c in 0..cols {
            out[c * rows + r] = w[r * cols + c];
        }
    }
    out
}

/// The tokenizer as GGUF stores it (`tokenizer.ggml.*`): byte-level BPE (`model` "gpt2").
#[derive(Clone, Debug, PartialEq)]
pub struct Vocab {
    /// `tokenizer.ggml.model`: "gpt2" for byte-level BPE.
    pub model: String,
    /// `tokenizer.ggml.pre`: the pre-tokenizer's regex family in llama.cpp's names ("gpt-2" for
    /// GPT-2's regex, "llama-bpe", ...); llama.cpp refuses a name it does not know.
    pub pre: String,
    /// Token texts by id, in the byte-level alphabet (a space is "Ġ").
    pub tokens: Vec<String>,
    /// llama.cpp's token types: 1 normal, 3 control, 4 user-defined, 5 unused.
    pub token_type: Vec<i32>,
    /// Merges as "a b", by priority.
    pub merges: Vec<String>,
    /// `tokenizer.ggml.bos_token_id`, if any.
    pub bos: Option<u32>,
    /// `tokenizer.ggml.eos_token_id`, if any.
    pub eos: Option<u32>,
}

/// GPT-2's byte-to-character table (`bytes_to_unicode`): printable bytes are themselves,
/// the others are mapped to 256 + n in order.
fn byte_chars() -> [char; 256] {
    let mut table = ['\0'; 256];
    let mut n = 0;
    for b in 0..256u32 {
        let printable =
            (33..=126).contains(&b) || (161..=172).contains(&b) || (174..=255).contains(&b);
        table[b as usize] = if printable {
            char::from_u32(b).expect("a Latin-1 char")
        } else {
            n += 1;
            char::from_u32(255 + n).expect("a char")
        };
    }
    table
}

impl Vocab {
    /// The GGUF form of a Hugging Face tokenizer.json holding a BPE model. Byte-level ones are
    /// taken as they are; a BPE without a byte-level pre-tokenizer and without merges (ferrogpt's
    /// character tokenizers) has its tokens spelled in the byte-level alphabet, so that
    /// llama.cpp's byte-level BPE finds every ASCII character (a character of several UTF-8
    /// bytes decodes, but llama.cpp cannot encode it: there are no merges to build it).
    /// `vocab_size`: ids past the tokenizer's are `[PAD{id}]`, unused. Errors: one line.
    pub fn from_tokenizer_json(text: &str, vocab_size: usize) -> Result<Vocab, String> {
        let v: serde_json::Value =
            serde_json::from_str(text).map_err(|e| format!("tokenizer.json: {e}"))?;
        let model = &v["model"];
        if model["type"].as_str() != Some("BPE") {
            return Err(format!(
                "tokenizer.json: model type {} is not BPE (only byte-level BPE and character tokenizers export)",
                model["type"]
            ));
        }
        let merges: Vec<String> = model["merges"]
            .as_array()
            .map(|m| {
                m.iter()
                    .filter_map(|x| match x {
                        serde_json::Value::String(s) => Some(s.clone()),
                        serde_json::Value::Array(p) => {
                            Some(format!("{} {}", p.first()?.as_str()?, p.get(1)?.as_str()?))
                        }
                        _ => None,
                    })
                    .collect()
            })
            .unwrap_or_default();
        let byte_level = text.contains("\"ByteLevel\"");
        if !byte_level && !merges.is_empty() {
            return Err("tokenizer.json: a BPE with merges but no byte-level pre-tokenizer has no GGUF form".into());
        }
        let table = byte_chars();
        let spell = |s: &str| -> String {
            if byte_level {
                s.to_string()
            } else {
                s.bytes().map(|b| table[b as usize]).collect()
            }
        };
        let mut tokens: Vec<Option<(String, i32)>> = vec![None; vocab_size];
        let mut put = |id: u64, s: &str, ty: i32| -> Result<(), String> {
            let slot = tokens.get_mut(id as usize).ok_or_else(|| {
                format!(
                    "tokenizer.json: token id {id} is beyond the model's vocabulary ({vocab_size})"
                )
            })?;
            *slot = Some((s.to_string(), ty));
            Ok(())
        };
        for (s, id) in model["vocab"].as_object().into_iter().flatten() {
            put(id.as_u64().unwrap_or(u64::MAX), &spell(s), 1)?;
        }
        for t in v["added_tokens"].as_array().into_iter().flatten() {
            let (Some(id), Some(s)) = (t["id"].as_u64(), t["content"].as_str()) else {
                continue;
            };
            let ty = if t["special"].as_bool() == Some(true) {
                3
            } else {
                4
            };
            put(id, s, ty)?;
        }
        let (tokens, token_type): (Vec<_>, Vec<_>) = tokens
            .into_iter()
            .enumerate()
            .map(|(i, t)| t.unwrap_or((format!("[PAD{i}]"), 5)))
            .unzip();
        let find = |names: &[&str]| {
            names
                .iter()
                .find_map(|n| tokens.iter().position(|t| t == n))
                .map(|i| i as u32)
        };
        let eos = find(&["<|endoftext|>", "</s>", "<eos>", "<|end_of_text|>"]);
        let bos = find(&["<s>", "<bos>", "<|begin_of_text|>"]).or(eos);
        Ok(Vocab {
            model: "gpt2".into(),
            pre: "gpt-2".into(),
            tokens,
            token_type,
            merges,
            bos,
            eos,
        })
    }

    /// A Hugging Face tokenizer.json (byte-level BPE, GPT-2's pre-tokenizer) holding this
    /// vocabulary; None for a `model` other than "gpt2" (SentencePiece "llama" and others are
    /// not converted). Unused `[PAD]` tokens are left out.
    pub fn to_tokenizer_json(&self) -> Option<String> {
        if self.model != "gpt2" {
            return None;
        }
        let mut vocab = serde_json::Map::new();
        let mut added = Vec::new();
        for (id, (t, ty)) in self.tokens.iter().zip(&self.token_type).enumerate() {
            match ty {
                5 => {}
                3 | 4 => added.push(serde_json::json!({"id": id, "content": t,
                    "single_word": false, "lstrip": false, "rstrip": false,
                    "normalized": *ty == 4, "special": *ty == 3})),
                _ => {
                    vocab.insert(t.clone(), id.into());
                }
            }
        }
        let byte_level = serde_json::json!({"type": "ByteLevel", "add_prefix_space": false,
            "trim_offsets": true, "use_regex": true});
        let doc = serde_json::json!({
            "version": "1.0", "truncation": null, "padding": null,
            "added_tokens": added, "normalizer": null,
            "pre_tokenizer": byte_level, "post_processor": null, "decoder": byte_level,
            "model": {"type": "BPE", "dropout": null, "unk_token": null,
                "continuing_subword_prefix": null, "end_of_word_suffix": null, "fuse_unk": false,
                "byte_fallback": false, "ignore_merges": false, "vocab": vocab,
                "merges": self.merges},
        });
        Some(doc.to_string())
    }

    fn write(&self, f: &mut GgufFile) {
        let strs = |v: &[String]| Value::Array(v.iter().cloned().map(Value::Str).collect());
        let mut put = |key: &str, v: Value| f.push_metadata(format!("tokenizer.ggml.{key}"), v);
        put("model", Value::Str(self.model.clone()));
        put("pre", Value::Str(self.pre.clone()));
        put("tokens", strs(&self.tokens));
        let types = self.token_type.iter().map(|&t| Value::I32(t)).collect();
        put("token_type", Value::Array(types));
        // Written even when empty (character tokenizers): llama.cpp's byte-level BPE refuses a
        // file without the key.
        put("merges", strs(&self.merges));
        if let Some(b) = self.bos {
            put("bos_token_id", Value::U32(b));
        }
        if let Some(e) = self.eos {
            put("eos_token_id", Value::U32(e));
        }
    }

    fn read(f: &GgufFile) -> Option<Vocab> {
        let strs = |k: &str| -> Option<Vec<String>> {
            match f.get(k)? {
                Value::Array(a) => a.iter().map(|v| v.as_str().map(String::from)).collect(),
                _ => None,
            }
        };
        let tokens = strs("tokenizer.ggml.tokens")?;
        let token_type = match f.get("tokenizer.ggml.token_type") {
            Some(Value::Array(a)) => a
                .iter()
                .map(|v| match v {
                    Value::I32(t) => *t,
                    v => v.as_u64().map_or(1, |t| t as i32),
                })
                .collect(),
            _ => vec![1; tokens.len()],
        };
        let id = |k: &str| f.get(k).and_then(Value::as_u64).map(|v| v as u32);
        Some(Vocab {
            model: f.get("tokenizer.ggml.model")?.as_str()?.to_string(),
            pre: f
                .get("tokenizer.ggml.pre")
                .and_then(Value::as_str)
                .unwrap_or("default")
                .to_string(),
            merges: strs("tokenizer.ggml.merges").unwrap_or_default(),
            bos: id("tokenizer.ggml.bos_token_id"),
            eos: id("tokenizer.ggml.eos_token_id"),
            tokens,
            token_type,
        })
    }
}

/// One tensor of the GGUF and where it comes from in our layout.
struct Mapped {
    gguf: String,
    /// Our HF name.
    ours: String,
    /// How the data is reordered: our layout → GGUF's row-major (out, in).
    how: Reorder,
}

#[derive(Clone, Copy)]
enum Reorder {
    Same,
    /// GPT-2's Conv1D (in, out) to (out, in).
    Transpose,
    /// Llama q or k with this many heads.
    Rope(usize),
}

/// The GGUF names of the model's tensors, in layout order.
fn mapping(cfg: &GptConfig) -> Vec<Mapped> {
    let m = |g: String, o: String, how| Mapped {
        gguf: g,
        ours: o,
        how,
    };
    let mut out = Vec::new();
    use Reorder::*;
    match cfg.family {
        Family::Gpt2 => {
            out.push(m("token_embd.weight".into(), "wte.weight".into(), Same));
            out.push(m("position_embd.weight".into(), "wpe.weight".into(), Same));
            for i in 0..cfg.n_layer {
                for (g, o, how) in [
                    ("attn_norm.weight", "ln_1.weight", Same),
                    ("attn_norm.bias", "ln_1.bias", Same),
                    ("attn_qkv.weight", "attn.c_attn.weight", Transpose),
                    ("attn_qkv.bias", "attn.c_attn.bias", Same),
                    ("attn_output.weight", "attn.c_proj.weight", Transpose),
                    ("attn_output.bias", "attn.c_proj.bias", Same),
                    ("ffn_norm.weight", "ln_2.weight", Same),
                    ("ffn_norm.bias", "ln_2.bias", Same),
                    ("ffn_up.weight", "mlp.c_fc.weight", Transpose),
                    ("ffn_up.bias", "mlp.c_fc.bias", Same),
                    ("ffn_down.weight", "mlp.c_proj.weight", Transpose),
                    ("ffn_down.bias", "mlp.c_proj.bias", Same),
                ] {
                    out.push(m(format!("blk.{i}.{g}"), format!("h.{i}.{o}"), how));
                }
            }
            out.push(m("output_norm.weight".into(), "ln_f.weight".into(), Same));
            out.push(m("output_norm.bias".into(), "ln_f.bias".into(), Same));
        }
        Family::Llama => {
            out.push(m(
                "token_embd.weight".into(),
                "model.embed_tokens.weight".into(),
                Same,
            ));
            for i in 0..cfg.n_layer {
                for (g, o, how) in [
                    ("attn_norm.weight", "input_layernorm.weight", Same),
                    ("attn_q.weight", "self_attn.q_proj.weight", Rope(cfg.n_head)),
                    (
                        "attn_k.weight",
                        "self_attn.k_proj.weight",
                        Rope(cfg.kv_heads()),
                    ),
                    ("attn_v.weight", "self_attn.v_proj.weight", Same),
                    ("attn_output.weight", "self_attn.o_proj.weight", Same),
                    ("ffn_norm.weight", "post_attention_layernorm.weight", Same),
                    ("ffn_gate.weight", "mlp.gate_proj.weight", Same),
                    ("ffn_up.weight", "mlp.up_proj.weight", Same),
                    ("ffn_down.weight", "mlp.down_proj.weight", Same),
                ] {
                    out.push(m(
                        format!("blk.{i}.{g}"),
                        format!("model.layers.{i}.{o}"),
                        how,
                    ));
                }
            }
            out.push(m(
                "output_norm.weight".into(),
                "model.norm.weight".into(),
                Same,
            ));
            if !cfg.tie_embeddings {
                out.push(m("output.weight".into(), "lm_head.weight".into(), Same));
            }
        }
    }
    out
}

/// The GGUF of `model` with `params` (its flat buffer) stored as `ty`, with the tokenizer's
/// `vocab` (None: no tokenizer metadata; llama.cpp cannot load such a file). Errors
/// ([`ModelError::Unsupported`]): a GPT-2 with rotary positions, Llama 3 rope scaling (no
/// llama.cpp form written yet); [`ModelError::ParamsLength`] when `params` is not the model's
/// [`crate::ParamLayout::total`] long; [`ModelError::Gguf`] (path `name`) for a tensor
/// [`GgufFile::push_tensor`] refuses.
pub fn export(
    model: &Gpt,
    params: &[f32],
    vocab: Option<&Vocab>,
    ty: TensorType,
    name: &str,
) -> Result<GgufFile, ModelError> {
    let cfg = &model.config;
    if params.len() != model.layout.total {
        return Err(ModelError::ParamsLength {
            found: params.len(),
            expected: model.layout.total,
        });
    }
    let unsupported = |field: &str, found: &str, expected| ModelError::Unsupported {
        path: PathBuf::from(name),
        field: field.into(),
        found: found.into(),
        expected,
    };
    if cfg.family == Family::Gpt2 && cfg.pos == Position::Rope {
        return Err(unsupported(
            "pos",
            "rope",
            "learned positions: llama.cpp's gpt2 has no rotary form",
        ));
    }
    if cfg.rope_scaling.is_some() {
        return Err(unsupported(
            "rope_scaling",
            "llama3",
            "none (its GGUF form, rope_freqs, is not written yet)",
        ));
    }
    let arch = cfg.family.name();
    let u32v = |v: usize| Value::U32(v as u32);
    let mut f = GgufFile::default();
    f.push_metadata("general.architecture", Value::Str(arch.into()));
    f.push_metadata("general.name", Value::Str(name.into()));
    f.push_metadata("general.file_type", Value::U32(ty.file_type()));
    f.push_metadata("general.alignment", u32v(ALIGNMENT));
    let mut put = |key: &str, v: Value| f.push_metadata(format!("{arch}.{key}"), v);
    put("context_length", u32v(cfg.block_size));
    put("embedding_length", u32v(cfg.n_embd));
    put("block_count", u32v(cfg.n_layer));
    put("feed_forward_length", u32v(cfg.ffn()));
    put("attention.head_count", u32v(cfg.n_head));
    match cfg.family {
        Family::Gpt2 => put("attention.layer_norm_epsilon", Value::F32(1e-5)),
        Family::Llama => {
            put("attention.head_count_kv", u32v(cfg.kv_heads()));
            put("rope.dimension_count", u32v(cfg.head_size()));
            put("rope.freq_base", Value::F32(cfg.rope_theta as f32));
            put(
                "attention.layer_norm_rms_epsilon",
                Value::F32(cfg.norm_eps as f32),
            );
            put("vocab_size", u32v(cfg.vocab_size));
        }
    }
    if let Some(v) = vocab {
        v.write(&mut f);
    }
    let l = &model.layout;
    for t in mapping(cfg) {
        let p = l
            .named
            .iter()
            .find(|(n, _)| *n == t.ours)
            .map(|(_, p)| *p)
            .expect("the mapping names the layout's tensors");
        let (rows, cols) = if l.is_vocab_rows(&p) {
            (cfg.vocab_size, p.cols)
        } else {
            (p.rows, p.cols)
        };
        let w = &params[p.offset..p.offset + rows * cols];
        let (data, out_rows, in_cols) = match t.how {
            Reorder::Same => (w.to_vec(), rows, cols),
            Reorder::Transpose => (transpose(w, rows, cols), cols, rows),
            Reorder::Rope(heads) => (rope_permute(w, heads, cols, true), rows, cols),
        };
        let ne = if out_rows == 1 {
            vec![in_cols as u64]
        } else {
            vec![in_cols as u64, out_rows as u64]
        };
        // Norms and biases stay F32, as llama.cpp's converter keeps 1-D tensors; a Q8_0
        // matrix whose rows are not whole blocks is F16.
        let tty = match ty {
            _ if ne.len() == 1 => TensorType::F32,
            TensorType::Q8_0 if in_cols % Q8_BLOCK != 0 => TensorType::F16,
            ty => ty,
        };
        f.push_tensor(&t.gguf, ne, &data, tty)
            .map_err(|p| bad(Path::new(name), p))?;
    }
    Ok(f)
}

/// A model read from a GGUF file.
pub struct Imported {
    /// The model's shape, from the file's metadata (vocabulary padded to `pad_multiple`).
    pub config: GptConfig,
    /// The flat f32 buffer in [`crate::ParamLayout`] of `config` (Q8_0 and F16 widened, the
    /// padding rows zero).
    pub params: Vec<f32>,
    /// The tokenizer metadata, if the file has it.
    pub vocab: Option<Vocab>,
}

/// Reads a GGUF of architecture `gpt2` or `llama` with F32, F16 or Q8_0 tensors; the embedding's rows
/// are padded to a multiple of `pad_multiple`. Errors: [`ModelError::Gguf`] (not GGUF,
/// truncated), [`ModelError::Unsupported`] (another architecture, tensor type or rope scaling),
/// [`ModelError::NotInteger`] (a missing size), [`ModelError::MissingTensor`],
/// [`ModelError::TensorShape`], [`ModelError::UnexpectedTensor`], [`ModelError::Config`].
pub fn import(path: &Path, pad_multiple: usize) -> Result<Imported, ModelError> {
    // The file mapped: tensors are read from it in place.
    let map = crate::checkpoint::map_file(path).map_err(ModelError::io(path))?;
    let (f, start) = GgufFile::parse_index(&map).map_err(|p| bad(path, p))?;
    let data = &map[start..];
    let arch = f
        .get("general.architecture")
        .and_then(Value::as_str)
        .unwrap_or("(none)")
        .to_string();
    let family = match arch.as_str() {
        "gpt2" => Family::Gpt2,
        "llama" => Family::Llama,
        _ => {
            return Err(ModelError::Unsupported {
                path: path.into(),
                field: "general.architecture".into(),
                found: arch,
                expected: "gpt2 or llama",
            })
        }
    };
    let int = |s: &str| -> Result<usize, ModelError> {
        let key = format!("{arch}.{s}");
        f.get(&key)
            .and_then(Value::as_u64)
            .map(|v| v as usize)
            .ok_or(ModelError::NotInteger {
                path: path.into(),
                field: key,
            })
    };
    let float = |s: &str| f.get(&format!("{arch}.{s}")).and_then(Value::as_f64);
    if let Some(t) = f
        .get(&format!("{arch}.rope.scaling.type"))
        .and_then(Value::as_str)
    {
        if t != "none" {
            return Err(ModelError::Unsupported {
                path: path.into(),
                field: format!("{arch}.rope.scaling.type"),
                found: t.into(),
                expected: "none",
            });
        }
    }
    let (n_embd, n_head) = (int("embedding_length")?, int("attention.head_count")?);
    let embd = f
        .tensors
        .iter()
        .find(|t| t.name == "token_embd.weight")
        .ok_or_else(|| ModelError::MissingTensor {
            path: path.into(),
            name: "token_embd.weight".into(),
            family: family.name(),
        })?;
    let vocab_size = embd.ne.get(1).copied().unwrap_or(0) as usize;
    let mut cfg = GptConfig {
        n_layer: int("block_count")?,
        n_head,
        n_embd,
        block_size: int("context_length")?,
        vocab_size,
        padded_vocab_size: GptConfig::pad_vocab(vocab_size, pad_multiple),
        dropout: 0.0,
        family,
        ffn_hidden: Some(int("feed_forward_length")?),
        ..GptConfig::default()
    };
    if family == Family::Llama {
        cfg.pos = Position::Rope;
        cfg.n_kv_head = Some(int("attention.head_count_kv").unwrap_or(n_head));
        cfg.rope_theta = float("rope.freq_base").unwrap_or(10_000.0);
        cfg.norm_eps = float("attention.layer_norm_rms_epsilon").unwrap_or(1e-5);
        cfg.tie_embeddings = !f.tensors.iter().any(|t| t.name == "output.weight");
        if let Ok(d) = int("rope.dimension_count") {
            if d != n_embd / n_head.max(1) {
                return Err(ModelError::HeadDim {
                    path: path.into(),
                    head_dim: d,
                    n_head,
                    n_embd,
                });
            }
        }
    }
    // GPT-2 keeps F = 4C as None, as its config.json does.
    if family == Family::Gpt2 && cfg.ffn_hidden == Some(4 * n_embd) {
        cfg.ffn_hidden = None;
    }
    cfg.validate().map_err(|e| match e {
        ModelError::Config { field, problem } => ModelError::ConfigFile {
            path: path.into(),
            field,
            problem,
        },
        e => e,
    })?;
    let model = Gpt::new(cfg.clone())?;
    let l = &model.layout;
    let mut params = vec![0.0f32; l.total];
    let maps = mapping(&cfg);
    for t in &maps {
        let p = l
            .named
            .iter()
            .find(|(n, _)| *n == t.ours)
            .map(|(_, p)| *p)
            .expect("the mapping names the layout's tensors");
        let rows = if l.is_vocab_rows(&p) {
            vocab_size
        } else {
            p.rows
        };
        let (out_rows, in_cols) = match t.how {
            Reorder::Transpose => (p.cols, rows),
            _ => (rows, p.cols),
        };
        let want: Vec<u64> = if out_rows == 1 {
            vec![in_cols as u64]
        } else {
            vec![in_cols as u64, out_rows as u64]
        };
        let (ne, data) = f.tensor(data, path, &t.gguf, family.name())?;
        if ne != want {
            let rev = |v: &[u64]| v.iter().rev().map(|&d| d as usize).collect();
            return Err(ModelError::TensorShape {
                path: path.into(),
                name: t.gguf.clone(),
                found: rev(&ne),
                expected: rev(&want),
            });
        }
        let data = match t.how {
            Reorder::Same => data,
            Reorder::Transpose => transpose(&data, out_rows, in_cols),
            Reorder::Rope(heads) => rope_permute(&data, heads, in_cols, false),
        };
        params[p.offset..p.offset + data.len()].copy_from_slice(&data);
    }
    // A tied model may carry a copy of the embedding as output.weight (GPT-2 files do).
    let skip = |n: &str| n == "output.weight" && cfg.tie_embeddings;
    if let Some(t) = f
        .tensors
        .iter()
        .find(|t| !skip(&t.name) && !maps.iter().any(|m| m.gguf == t.name))
    {
        return Err(ModelError::UnexpectedTensor {
            path: path.into(),
            name: t.name.clone(),
            family: family.name(),
        });
    }
    if let Some(index) = params.iter().position(|x| !x.is_finite()) {
        return Err(ModelError::NonFinite {
            path: path.into(),
            index,
        });
    }
    Ok(Imported {
        config: cfg,
        params,
        vocab: Vocab::read(&f),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn f16_round_trips_and_rounds_to_nearest_even() {
        for h in 0..=u16::MAX {
            let x = f16_to_f32(h);
            if x.is_nan() {
                continue;
            }
            assert_eq!(f32_to_f16(x), h, "{h:#x}");
        }
        assert_eq!(f32_to_f16(1.0 + 1.0 / 2048.0), 0x3c00); // a tie: even
        assert_eq!(f32_to_f16(1.0 + 3.0 / 2048.0), 0x3c02);
        assert_eq!(f32_to_f16(1e6), 0x7c00);
        assert_eq!(f32_to_f16(65519.0), 0x7bff);
    }

    #[test]
    fn a_character_vocabulary_has_what_llama_cpp_needs() {
        // llama.cpp's byte-level BPE refuses a file without `tokenizer.ggml.merges` (an array
        // of strings, empty here) and a `tokenizer.ggml.pre` it does not know ("gpt-2" is its
        // name for GPT-2's pre-tokenizer).
        let json = serde_json::json!({
            "model": {"type": "BPE", "vocab": {"a": 0, "b": 1, "\n": 2}, "merges": []},
            "added_tokens": [],
        })
        .to_string();
        let vocab = Vocab::from_tokenizer_json(&json, 4).unwrap();
        assert!(vocab.merges.is_empty());
        let mut f = GgufFile::default();
        vocab.write(&mut f);
        let bytes = f.to_bytes();
        let key = b"tokenizer.ggml.merges";
        let at = bytes.windows(key.len()).position(|w| w == key).unwrap() + key.len();
        let array = 9u32.to_le_bytes();
        let string = 8u32.to_le_bytes();
        assert_eq!(&bytes[at..at + 16], [&array[..], &string, &[0; 8]].concat());
        let back = GgufFile::parse(&bytes).unwrap();
        assert_eq!(
            back.get("tokenizer.ggml.pre").and_then(Value::as_str),
            Some("gpt-2")
        );
        assert_eq!(Vocab::read(&back).unwrap(), vocab);
    }

    #[test]
    fn rope_permute_inverts() {
        let w: Vec<f32> = (0..2 * 8 * 3).map(|x| x as f32).collect();
        let g = rope_permute(&w, 2, 3, true);
        // head 0: HF rows 0..8 in order 0,4,1,5,2,6,3,7
        assert_eq!(&g[3..6], &w[12..15]);
        assert_eq!(rope_permute(&g, 2, 3, false), w);
    }
}
