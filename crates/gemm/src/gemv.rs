//! Matrix-vector products for decoding: `y = W·x (+ bias)` with W stored f32, bf16 or int8.
//!
//! Decoding one token multiplies every weight matrix of the model by one activation vector, so
//! each weight is read once per token and the product is bound by memory bandwidth, not by
//! arithmetic. What makes it fast is reading fewer bytes (bf16: 2 per weight, int8: 34/32 + the
//! scales) and streaming them at the bandwidth limit on every core; the arithmetic only has to
//! keep up.
//!
//! ## The contract
//!
//! ```text
//! y[r] (+)= Σ_{c < cols} W[r, c] · x[c]  (+ bias[r])        r < rows
//! ```
//!
//! A [`Matrix`] is stored (out, in): one row per output, the reduction dimension contiguous
//! (nn.Linear's layout). GPT-2's Conv1D weights, (in, out), are transposed once when the matrix
//! is built ([`Layout::InOut`]): the kernels then stream each row front to back, and the int8
//! blocks run along the reduction dimension as they must.
//!
//! f32 weights can also be multiplied where they lie, in either layout, with no copy and no
//! packing ([`gemv_in_place`] over an [`F32View`]): the decoder's f32 path, which then starts
//! without converting the model and holds no second copy of it. Its kernels read two streams a
//! thread as the packed ones do, and measured level with them or faster on GPT-2's shapes
//! (`examples/gemv_probe.rs`, docs/benchmarks.md).
//!
//! Formats ([`WeightFormat`]):
//! * `f32`: the weights as they are.
//! * `bf16`: the upper 16 bits of each f32, rounded to nearest even; widened to f32 (a shift) in
//!   the kernel, f32 FMAs.
//! * `int8`: llama.cpp's Q8_0: blocks of [`Q8_BLOCK`] = 32 weights along the row, one f32 scale
//!   `d = max|w| / 127` per block, `q = round(w / d)` in -127..=127 (rows are padded with zeros
//!   to a whole block). The product quantizes `x` the same way (per block of 32, its own scale)
//!   and sums `q_w · q_x` exactly in i32 per block, then `Σ_b d_w[b]·d_x[b]·dot_b` in f32.
//!
//! ## Kernels and ISA
//!
//! One kernel per [`Kernel`], chosen at run time from the ladder's ISA
//! ([`crate::simd::active_isa`], `FERROGPT_ISA` honoured) and the CPU's int8 dot products:
//!
//! | kernel | f32 / bf16 | int8 |
//! |---|---|---|
//! | `avx512-vnni` | AVX-512F, 16 lanes | `vpdpbusd` zmm (AVX512-VNNI), two blocks a step |
//! | `avx512` | AVX-512F, 16 lanes | the AVX2 int8 kernel (no VNNI) |
//! | `avx-vnni` | AVX2 + FMA | `vpdpbusd` ymm (AVX-VNNI, VEX) |
//! | `avx2` | AVX2 + FMA | `vpmaddubsw` + `vpmaddwd` |
//! | `scalar` | plain Rust | plain Rust, i32 per block |
//!
//! On aarch64 (the ladder's ISA is NEON) decoding uses `scalar`: no NEON GEMV kernel yet.
//!
//! `vpdpbusd` multiplies unsigned by signed bytes. The weights are made unsigned in the kernel
//! (`w ^ 0x80 = w + 128`), so each i32 lane sums `(w + 128)·x` over its four bytes; the kernel
//! starts each lane's sum at `-128·Σx` over the same four bytes (computed once per product,
//! [`QuantizedVector`]), and the sum comes out exactly `Σ w·x`. `vpmaddubsw` (no VNNI) would
//! saturate its i16 pairs with that offset, so the AVX2 kernel takes the sign trick instead:
//! `|x| · (w·sign(x))`, |x| once per block of x for every row (quants are -127..=127, so every
//! negation fits in i8).
//!
//! Every kernel computes four rows at a time (x loaded once for the four), from the packed
//! layout of [`Matrix`] (four rows interleaved chunk by chunk), the AVX2 kernels two such
//! groups at a time from two places (two sequential streams a thread).
//! bf16 is widened without a shuffle: a 32-bit lane holding two bf16 values gives the even one
//! by a shift left of 16 and the odd one by masking the low half, and `x` is reordered once per
//! product to match ([even positions | odd positions] per run of two vectors).
//!
//! Threads: rows are split into chunks (a multiple of 4 rows, several per thread, so that a
//! core slowed by another process is balanced by rayon's stealing), each chunk computed and its
//! epilogue (bias, accumulation) applied while it is in L1. Products below
//! [`PARALLEL_MIN_BYTES`] of weights, or inside [`crate::serial`], stay on the calling thread.
//!
//! The plain references ([`reference()`], [`reference_quantized_input`]) compute in f64 from the
//! stored (dequantized) weights; every kernel is tested against them (tests/gemv.rs).
//!
//! Precision: f32 and bf16 kernels accumulate in f32 (four or eight partial sums a row, then a
//! horizontal sum); int8 is exact per block, f32 across blocks. The int8 product differs from
//! the f64 product of the dequantized weights by the quantization of `x`: at most
//! `Σ_b d_x[b]/2 · Σ_{c∈b} |W[r,c]|` (tested).

mod portable;
mod quant;
#[cfg(target_arch = "x86_64")]
mod x86;

pub use quant::{bf16_to_f32, f32_to_bf16, quantize_q8_block, QuantizedVector};

use crate::simd::Isa;
use crate::GemmError;
use rayon::prelude::*;
use std::fmt;
use std::str::FromStr;

/// Weights per int8 block (one scale each), along the reduction dimension.
pub const Q8_BLOCK: usize = 32;

/// Below this many bytes of weights a product runs on one thread: waking the pool and joining
/// costs microseconds (tens when the cores are shared with other processes), about what 1 MiB
/// takes to stream. GPT-2 124M's int8 attention projection (0.66 MB) then runs on one thread,
/// every other matrix on all (docs/benchmarks.md, "Fast CPU decoding").
pub const PARALLEL_MIN_BYTES: usize = 1 << 20;

/// How a matrix's weights are stored.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum WeightFormat {
    /// 4 bytes a weight.
    #[default]
    F32,
    /// 2 bytes a weight (bfloat16: f32's exponent, 8 significant bits).
    Bf16,
    /// Q8_0: 1 byte a weight plus an f32 scale per 32 (1.125 bytes a weight).
    Int8,
}

impl WeightFormat {
    /// Every format, widest first.
    pub const ALL: [WeightFormat; 3] = [WeightFormat::F32, WeightFormat::Bf16, WeightFormat::Int8];

    /// The name the command line takes: "f32", "bf16", "int8".
    pub fn name(self) -> &'static str {
        match self {
            WeightFormat::F32 => "f32",
            WeightFormat::Bf16 => "bf16",
            WeightFormat::Int8 => "int8",
        }
    }
}

impl fmt::Display for WeightFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for WeightFormat {
    type Err = GemmError;
    fn from_str(s: &str) -> Result<Self, GemmError> {
        WeightFormat::ALL
            .into_iter()
            .find(|f| f.name() == s)
            .ok_or_else(|| {
                GemmError::Shape(format!(
                    "unknown weight format '{s}' (expected f32, bf16 or int8)"
                ))
            })
    }
}

/// The layout of the f32 weights a [`Matrix`] is built from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layout {
    /// (out, in): row r holds output r's weights (nn.Linear, Llama; the LM head).
    OutIn,
    /// (in, out): row c holds input c's weights (GPT-2's Conv1D); transposed when built.
    InOut,
}

/// One GEMV kernel family: the instruction set of its f32/bf16 and int8 loops (module doc).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kernel {
    /// AVX-512F (f32, bf16) and AVX512-VNNI `vpdpbusd` on zmm (int8); needs AVX512BW too.
    Avx512Vnni,
    /// AVX-512F for f32 and bf16; int8 runs the AVX2 kernel.
    Avx512,
    /// AVX2 + FMA (f32, bf16) and AVX-VNNI `vpdpbusd` on ymm (int8).
    AvxVnni,
    /// AVX2 + FMA; int8 with `vpmaddubsw` + `vpmaddwd`.
    Avx2,
    /// Plain Rust: every CPU, every target.
    Scalar,
}

impl Kernel {
    /// Every kernel, widest first.
    pub const ALL: [Kernel; 5] = [
        Kernel::Avx512Vnni,
        Kernel::Avx512,
        Kernel::AvxVnni,
        Kernel::Avx2,
        Kernel::Scalar,
    ];

    /// The kernel's name in reports and benchmarks: "avx512-vnni", "avx512", "avx-vnni",
    /// "avx2", "scalar".
    pub fn name(self) -> &'static str {
        match self {
            Kernel::Avx512Vnni => "avx512-vnni",
            Kernel::Avx512 => "avx512",
            Kernel::AvxVnni => "avx-vnni",
            Kernel::Avx2 => "avx2",
            Kernel::Scalar => "scalar",
        }
    }

    /// Whether the running CPU can execute this kernel.
    pub fn supported(self) -> bool {
        #[cfg(target_arch = "x86_64")]
        {
            use std::arch::is_x86_feature_detected as has;
            match self {
                Kernel::Avx512Vnni => {
                    Isa::Avx512.supported() && has!("avx512bw") && has!("avx512vnni")
                }
                Kernel::Avx512 => Isa::Avx512.supported(),
                Kernel::AvxVnni => Isa::Avx2.supported() && has!("avxvnni"),
                Kernel::Avx2 => Isa::Avx2.supported(),
                Kernel::Scalar => true,
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            self == Kernel::Scalar
        }
    }

    /// The best kernel this CPU has at the vector width of `isa`.
    pub fn for_isa(isa: Isa) -> Kernel {
        let pick = |a: Kernel, b: Kernel| if a.supported() { a } else { b };
        match isa {
            Isa::Avx512 => pick(Kernel::Avx512Vnni, Kernel::Avx512),
            Isa::Avx2 => pick(Kernel::AvxVnni, Kernel::Avx2),
            // No NEON GEMV kernel yet: the portable one (which the compiler vectorises).
            Isa::Neon | Isa::Scalar => Kernel::Scalar,
        }
    }

    /// The kernel for the ladder's ISA on this thread ([`crate::simd::active_isa`]); the
    /// portable kernel for NEON (no NEON GEMV kernel is written yet) and where no SIMD kernel
    /// is built for the architecture. Errors: an ISA forced by `FERROGPT_ISA` that this CPU
    /// lacks.
    pub fn active() -> Result<Kernel, GemmError> {
        match crate::simd::active_isa() {
            Ok(isa) => Ok(Kernel::for_isa(isa)),
            Err(_) if std::env::var_os("FERROGPT_ISA").is_none() => Ok(Kernel::Scalar),
            Err(e) => Err(e),
        }
    }

    fn check(self) -> Result<(), GemmError> {
        if self.supported() {
            Ok(())
        } else {
            Err(GemmError::Unavailable {
                level: "gemv",
                reason: format!("this CPU lacks the {} kernel's instructions", self.name()),
            })
        }
    }
}

impl fmt::Display for Kernel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Rows interleaved in the stored layout: the kernels compute this many rows at a time.
pub const GROUP: usize = 4;
/// Columns of one chunk of an f32 matrix (one AVX-512 vector, two AVX2 vectors).
const F32_CHUNK: usize = 16;
/// Columns of one chunk of a bf16 matrix (64 bytes a row).
const BF16_CHUNK: usize = 32;

/// The stored weights of a [`Matrix`], packed for the kernels (see [`Matrix`]).
#[derive(Clone, Debug)]
enum Data {
    F32(Vec<f32>),
    /// bf16 bit patterns.
    Bf16(Vec<u16>),
    /// `q`: the quants, packed with chunks of one block; `d`: one scale per block and row,
    /// `(g, b, i)` at `(g·nb + b)·GROUP + i`.
    Q8 {
        q: Vec<i8>,
        d: Vec<f32>,
    },
}

/// A weight matrix stored for [`gemv`]: `rows` outputs × `cols` inputs in one of the
/// [`WeightFormat`]s, packed so that each thread reads one sequential stream.
///
/// The rows are taken [`GROUP`] = 4 at a time (the last group padded with zero rows) and the
/// columns in chunks (16 for f32, 32 for bf16 and int8; the last padded with zeros); a group
/// stores its chunks in order, each chunk its four rows one after the other:
///
/// ```text
/// element (r, c):  g = r / 4, i = r % 4, ch = c / CHUNK
///                  at ((g · chunks + ch) · 4 + i) · CHUNK + c % CHUNK
/// ```
///
/// Four rows read side by side (one load of x serves four rows) are then one stream through
/// memory instead of four of a few hundred bytes each (too short for the hardware prefetcher
/// at int8). The AVX2 kernels take two groups at a time, one from each half of a thread's
/// rows: two long streams in flight read faster than one (docs/benchmarks.md, "Fast CPU
/// decoding").
#[derive(Clone, Debug)]
pub struct Matrix {
    rows: usize,
    cols: usize,
    data: Data,
}

/// Packs `rows × cols` values given row by row (`src`, row-major) into the layout of
/// [`Matrix`] with chunks of `chunk` columns.
fn pack<T: Copy + Default>(src: &[T], rows: usize, cols: usize, chunk: usize) -> Vec<T> {
    let nch = cols.div_ceil(chunk);
    let mut out = vec![T::default(); rows.div_ceil(GROUP) * nch * GROUP * chunk];
    for r in 0..rows {
        let (g, i) = (r / GROUP, r % GROUP);
        for (ch, part) in src[r * cols..(r + 1) * cols].chunks(chunk).enumerate() {
            let at = ((g * nch + ch) * GROUP + i) * chunk;
            out[at..at + part.len()].copy_from_slice(part);
        }
    }
    out
}

/// The inverse of [`pack`]: `rows × cols` row-major.
fn unpack<T: Copy>(src: &[T], rows: usize, cols: usize, chunk: usize) -> Vec<T> {
    let nch = cols.div_ceil(chunk);
    let mut out = Vec::with_capacity(rows * cols);
    for r in 0..rows {
        let (g, i) = (r / GROUP, r % GROUP);
        for ch in 0..nch {
            let at = ((g * nch + ch) * GROUP + i) * chunk;
            out.extend_from_slice(&src[at..at + chunk.min(cols - ch * chunk)]);
        }
    }
    out
}

impl Matrix {
    /// Converts f32 weights (`rows × cols` values in `layout`: (out, in) or (in, out)) to
    /// `format`. bf16 rounds to nearest even (NaN and infinities stay what they are); int8
    /// quantizes per block of 32 as Q8_0.
    ///
    /// Errors ([`GemmError::Shape`]): `w` not `rows · cols` long; for int8, a NaN or an
    /// infinity (Q8_0 has no scale for it: an infinity made a non-finite scale, a NaN
    /// quantized silently to 0).
    pub fn from_f32(
        format: WeightFormat,
        rows: usize,
        cols: usize,
        w: &[f32],
        layout: Layout,
    ) -> Result<Matrix, GemmError> {
        if w.len() != rows * cols {
            return Err(GemmError::Shape(format!(
                "a {rows}x{cols} matrix needs {} weights, found {}",
                rows * cols,
                w.len()
            )));
        }
        if format == WeightFormat::Int8 {
            if let Some(i) = w.iter().position(|v| !v.is_finite()) {
                let (r, c) = match layout {
                    Layout::OutIn => (i / cols, i % cols),
                    Layout::InOut => (i % rows, i / rows),
                };
                return Err(GemmError::Shape(format!(
                    "int8 weight ({r}, {c}) is {}: Q8_0 stores finite values only",
                    w[i]
                )));
            }
        }
        let transposed;
        let w = match layout {
            Layout::OutIn => w,
            Layout::InOut => {
                transposed = transpose(w, cols, rows);
                &transposed[..]
            }
        };
        let data = match format {
            WeightFormat::F32 => Data::F32(pack(w, rows, cols, F32_CHUNK)),
            WeightFormat::Bf16 => {
                let bits: Vec<u16> = w.iter().map(|&v| f32_to_bf16(v)).collect();
                Data::Bf16(pack(&bits, rows, cols, BF16_CHUNK))
            }
            WeightFormat::Int8 => {
                let cp = cols.next_multiple_of(Q8_BLOCK);
                let nb = cp / Q8_BLOCK;
                let mut q = vec![0i8; rows * cp];
                let mut d = vec![0f32; rows * nb];
                for r in 0..rows {
                    for b in 0..nb {
                        let c1 = ((b + 1) * Q8_BLOCK).min(cols);
                        let blk = &w[r * cols + b * Q8_BLOCK..r * cols + c1];
                        let out = &mut q[r * cp + b * Q8_BLOCK..][..blk.len()];
                        d[r * nb + b] = quantize_q8_block(blk, out);
                    }
                }
                return Matrix::from_q8(rows, cols, q, d);
            }
        };
        Ok(Matrix { rows, cols, data })
    }

    /// An int8 matrix from its parts row by row (a quantized checkpoint): `q` rows × padded
    /// cols (cols rounded up to 32; padding zero), `d` rows × padded cols / 32 finite scales.
    pub fn from_q8(rows: usize, cols: usize, q: Vec<i8>, d: Vec<f32>) -> Result<Matrix, GemmError> {
        let cp = cols.next_multiple_of(Q8_BLOCK);
        let nb = cp / Q8_BLOCK;
        if q.len() != rows * cp || d.len() != rows * nb {
            return Err(GemmError::Shape(format!(
                "an int8 {rows}x{cols} matrix needs {} quants and {} scales, found {} and {}",
                rows * cp,
                rows * nb,
                q.len(),
                d.len()
            )));
        }
        // -128 has no negation in i8 (the AVX2 kernel's sign trick); Q8_0 never makes it.
        if let Some(i) = q.iter().position(|&v| v == i8::MIN) {
            return Err(GemmError::Shape(format!(
                "int8 quant {i} is -128 (Q8_0 quants are -127..=127)"
            )));
        }
        if let Some(i) = d.iter().position(|s| !s.is_finite()) {
            return Err(GemmError::Shape(format!(
                "int8 scale {i} is not finite ({})",
                d[i]
            )));
        }
        Ok(Matrix {
            rows,
            cols,
            data: Data::Q8 {
                q: pack(&q, rows, cp, Q8_BLOCK),
                d: pack(&d, rows, nb, 1),
            },
        })
    }

    /// A bf16 matrix from its bit patterns row by row, (out, in), rows × cols.
    pub fn from_bf16(rows: usize, cols: usize, bits: Vec<u16>) -> Result<Matrix, GemmError> {
        if bits.len() != rows * cols {
            return Err(GemmError::Shape(format!(
                "a bf16 {rows}x{cols} matrix needs {} values, found {}",
                rows * cols,
                bits.len()
            )));
        }
        Ok(Matrix {
            rows,
            cols,
            data: Data::Bf16(pack(&bits, rows, cols, BF16_CHUNK)),
        })
    }

    /// Outputs: the length of `y` in [`gemv`].
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Inputs (the reduction dimension): the length of `x` in [`gemv`].
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// How the weights are stored.
    pub fn format(&self) -> WeightFormat {
        match self.data {
            Data::F32(_) => WeightFormat::F32,
            Data::Bf16(_) => WeightFormat::Bf16,
            Data::Q8 { .. } => WeightFormat::Int8,
        }
    }

    /// Bytes the stored weights take (what one product reads), padding included.
    pub fn bytes(&self) -> usize {
        match &self.data {
            Data::F32(w) => 4 * w.len(),
            Data::Bf16(w) => 2 * w.len(),
            Data::Q8 { q, d } => q.len() + 4 * d.len(),
        }
    }

    /// The int8 parts row by row: quants rows × padded cols, scales rows × padded cols / 32.
    pub fn q8_rows(&self) -> Option<(Vec<i8>, Vec<f32>)> {
        match &self.data {
            Data::Q8 { q, d } => {
                let cp = self.cols.next_multiple_of(Q8_BLOCK);
                Some((
                    unpack(q, self.rows, cp, Q8_BLOCK),
                    unpack(d, self.rows, cp / Q8_BLOCK, 1),
                ))
            }
            _ => None,
        }
    }

    /// The bf16 bit patterns row by row, (out, in).
    pub fn bf16_rows(&self) -> Option<Vec<u16>> {
        match &self.data {
            Data::Bf16(w) => Some(unpack(w, self.rows, self.cols, BF16_CHUNK)),
            _ => None,
        }
    }

    /// The weights the matrix stands for, as f32, (out, in) (`rows × cols`): exact for f32,
    /// widened bf16, `d·q` for int8.
    pub fn dequantize(&self) -> Vec<f32> {
        let (rows, cols) = (self.rows, self.cols);
        match &self.data {
            Data::F32(w) => unpack(w, rows, cols, F32_CHUNK),
            Data::Bf16(_) => {
                let bits = self.bf16_rows().expect("bf16");
                bits.iter().map(|&b| bf16_to_f32(b)).collect()
            }
            Data::Q8 { .. } => {
                let (q, d) = self.q8_rows().expect("int8");
                let cp = cols.next_multiple_of(Q8_BLOCK);
                let nb = cp / Q8_BLOCK;
                let mut out = Vec::with_capacity(rows * cols);
                for r in 0..rows {
                    out.extend((0..cols).map(|c| d[r * nb + c / Q8_BLOCK] * q[r * cp + c] as f32));
                }
                out
            }
        }
    }

    /// [`Matrix::dequantize`] written in `layout` into `out`. Panics if `out` is not
    /// `rows · cols` long.
    pub fn dequantize_into(&self, out: &mut [f32], layout: Layout) {
        let w = self.dequantize();
        match layout {
            Layout::OutIn => out.copy_from_slice(&w),
            Layout::InOut => out.copy_from_slice(&transpose(&w, self.rows, self.cols)),
        }
    }
}

/// `a` (r × c, row-major) transposed: c × r. Sixteen rows of `a` at a time, each read front to
/// back, so that every output row gets 16 consecutive values (one cache line) per pass.
fn transpose(a: &[f32], r: usize, c: usize) -> Vec<f32> {
    assert_eq!(a.len(), r * c);
    let mut t = vec![0f32; a.len()];
    const STRIP: usize = 16;
    for i0 in (0..r).step_by(STRIP) {
        let n = STRIP.min(r - i0);
        let src = &a[i0 * c..(i0 + n) * c];
        for (j, out) in t.chunks_exact_mut(r).enumerate() {
            let out = &mut out[i0..i0 + n];
            for (i, o) in out.iter_mut().enumerate() {
                *o = src[i * c + j];
            }
        }
    }
    t
}

/// The input vector as a kernel reads it.
enum Input {
    /// f32 weights: x padded with zeros to whole chunks.
    F32(Vec<f32>),
    /// bf16 weights: x padded to whole chunks and, for the vector kernels, each run of 2L
    /// values (L the lanes) reordered as [even positions | odd positions] (module doc of
    /// `x86.rs`).
    Bf16(Vec<f32>),
    Q8(QuantizedVector),
}

impl Input {
    fn new(kernel: Kernel, w: &Matrix, x: &[f32]) -> Input {
        let padded = |chunk: usize| {
            let mut v = x.to_vec();
            v.resize(x.len().next_multiple_of(chunk), 0.0);
            v
        };
        match w.data {
            Data::F32(_) => Input::F32(padded(F32_CHUNK)),
            Data::Q8 { .. } => Input::Q8(QuantizedVector::new(x)),
            Data::Bf16(_) => {
                let v = padded(BF16_CHUNK);
                let run = match kernel {
                    Kernel::Avx512Vnni | Kernel::Avx512 => 32,
                    Kernel::AvxVnni | Kernel::Avx2 => 16,
                    Kernel::Scalar => return Input::Bf16(v),
                };
                let mut out = Vec::with_capacity(v.len());
                for r in v.chunks_exact(run) {
                    out.extend(r.iter().step_by(2));
                    out.extend(r.iter().skip(1).step_by(2));
                }
                Input::Bf16(out)
            }
        }
    }
}

/// `y (+)= W·x (+ bias)` (module doc) with `kernel`, split over rayon's threads.
///
/// `x` has `w.cols()` values, `y` and `bias` `w.rows()`. `accumulate`: add to `y` (a residual
/// connection) instead of overwriting it. Errors, before `y` is touched:
/// [`GemmError::Unavailable`] for a kernel this CPU cannot run ([`Kernel::supported`]),
/// [`GemmError::Shape`] for lengths that do not match. The result does not depend on the
/// number of threads. An int8 product quantizes `x` first; a NaN or an infinity in `x` makes
/// its block's scale non-finite, so every output that reads it is not finite, as in f32.
pub fn gemv(
    kernel: Kernel,
    w: &Matrix,
    x: &[f32],
    y: &mut [f32],
    bias: Option<&[f32]>,
    accumulate: bool,
) -> Result<(), GemmError> {
    kernel.check()?;
    if x.len() != w.cols || y.len() != w.rows || bias.is_some_and(|b| b.len() != w.rows) {
        return Err(GemmError::Shape(format!(
            "gemv of a {}x{} matrix with x of {}, y of {} and a bias of {:?} values",
            w.rows,
            w.cols,
            x.len(),
            y.len(),
            bias.map(<[f32]>::len)
        )));
    }
    let input = Input::new(kernel, w, x);
    let threads = if w.bytes() < PARALLEL_MIN_BYTES || crate::in_serial() {
        1
    } else {
        rayon::current_num_threads().max(1)
    };
    // Four chunks a thread, each whole groups.
    let chunk = w
        .rows
        .div_ceil(4 * threads)
        .next_multiple_of(GROUP)
        .max(GROUP);
    let task = |(ci, yc): (usize, &mut [f32])| {
        let g0 = ci * chunk / GROUP;
        const SUB: usize = 16; // groups computed into `tmp` at a time
        let mut tmp = [0f32; SUB * GROUP];
        for (s, ys) in yc.chunks_mut(SUB * GROUP).enumerate() {
            let groups = ys.len().div_ceil(GROUP);
            let t = &mut tmp[..groups * GROUP];
            groups_into(kernel, w, g0 + s * SUB, &input, t);
            let r0 = (g0 + s * SUB) * GROUP;
            for (i, (yv, &v)) in ys.iter_mut().zip(t.iter()).enumerate() {
                let b = bias.map_or(0.0, |b| b[r0 + i]);
                *yv = if accumulate { *yv + v + b } else { v + b };
            }
        }
    };
    if threads > 1 {
        y.par_chunks_mut(chunk).enumerate().for_each(task);
    } else {
        y.chunks_mut(chunk).enumerate().for_each(task);
    }
    Ok(())
}

/// f32 weights multiplied where they lie, without a copy or packing: `rows` outputs × `cols`
/// inputs, stored in `layout` (a slice of a model's parameters). Decoding in f32 then needs no
/// conversion before its first product and no second copy of the weights; [`gemv_in_place`]
/// multiplies by it.
#[derive(Clone, Copy, Debug)]
pub struct F32View<'a> {
    /// `rows · cols` values in `layout`.
    pub data: &'a [f32],
    /// Outputs.
    pub rows: usize,
    /// Inputs (the reduction dimension).
    pub cols: usize,
    /// (out, in): one output's weights contiguous; (in, out): one input's.
    pub layout: Layout,
}

/// Inputs (rows of an (in, out) matrix) one task of [`gemv_in_place`] reduces into its own
/// partial sums of every output. Fixed, so the result does not depend on the thread count.
const IN_OUT_PIECE: usize = 128;

/// `y (+)= W·x (+ bias)` over an [`F32View`], split over rayon's threads; the contract of
/// [`gemv`] (the same errors), f32 accumulation.
///
/// (out, in): each task takes whole rows, four at a time against one load of `x`
/// ([`dot_rows`]). (in, out): each task takes `IN_OUT_PIECE` (128) consecutive rows of the stored
/// matrix (inputs) and streams them front to back, four at a time, into partial sums of all
/// outputs (in L1); the partial sums are then added in task order. Either way a thread reads
/// whole stretches of memory front to back, and the result is the same on any number of
/// threads.
pub fn gemv_in_place(
    kernel: Kernel,
    w: F32View<'_>,
    x: &[f32],
    y: &mut [f32],
    bias: Option<&[f32]>,
    accumulate: bool,
) -> Result<(), GemmError> {
    kernel.check()?;
    let (rows, cols) = (w.rows, w.cols);
    if w.data.len() != rows * cols
        || x.len() != cols
        || y.len() != rows
        || bias.is_some_and(|b| b.len() != rows)
    {
        return Err(GemmError::Shape(format!(
            "gemv of a {rows}x{cols} matrix of {} values with x of {}, y of {} and a bias of \
             {:?} values",
            w.data.len(),
            x.len(),
            y.len(),
            bias.map(<[f32]>::len)
        )));
    }
    if rows == 0 {
        return Ok(());
    }
    let parallel = 4 * rows * cols >= PARALLEL_MIN_BYTES && !crate::in_serial();
    let threads = if parallel {
        rayon::current_num_threads().max(1)
    } else {
        1
    };
    let finish = |r0: usize, ys: &mut [f32], v: &[f32]| {
        for (i, (yv, &v)) in ys.iter_mut().zip(v).enumerate() {
            let b = bias.map_or(0.0, |b| b[r0 + i]);
            *yv = if accumulate { *yv + v + b } else { v + b };
        }
    };
    match w.layout {
        Layout::OutIn => {
            let chunk = rows
                .div_ceil(4 * threads)
                .next_multiple_of(GROUP)
                .max(GROUP);
            let task = |(ci, yc): (usize, &mut [f32])| {
                const SUB: usize = 64; // rows computed into `tmp` at a time
                let mut tmp = [0f32; SUB];
                for (s, ys) in yc.chunks_mut(SUB).enumerate() {
                    let r0 = ci * chunk + s * SUB;
                    let t = &mut tmp[..ys.len()];
                    rows_stream(kernel, &w.data[r0 * cols..], cols, x, t);
                    finish(r0, ys, t);
                }
            };
            if threads > 1 {
                y.par_chunks_mut(chunk).enumerate().for_each(task);
            } else {
                y.chunks_mut(chunk).enumerate().for_each(task);
            }
        }
        Layout::InOut => {
            // Stored (cols, rows): input c's weights at data[c·rows..].

            let pieces = cols.div_ceil(IN_OUT_PIECE).max(1);
            let mut part = vec![0f32; pieces * rows];
            let task = |(p, out): (usize, &mut [f32])| {
                let c0 = p * IN_OUT_PIECE;
                let c1 = (c0 + IN_OUT_PIECE).min(cols);
                axpy_stream(kernel, &w.data[c0 * rows..c1 * rows], rows, &x[c0..c1], out);
            };
            let sum = |part: &[f32], (ci, ys): (usize, &mut [f32]), chunk: usize| {
                let r0 = ci * chunk;
                let mut tmp = part[r0..r0 + ys.len()].to_vec();
                for p in 1..pieces {
                    let src = &part[p * rows + r0..][..ys.len()];
                    tmp.iter_mut().zip(src).for_each(|(t, &s)| *t += s);
                }
                finish(r0, ys, &tmp);
            };
            if threads > 1 {
                part.par_chunks_mut(rows).enumerate().for_each(task);
                let chunk = rows.div_ceil(threads);
                y.par_chunks_mut(chunk)
                    .enumerate()
                    .for_each(|c| sum(&part, c, chunk));
            } else {
                part.chunks_mut(rows).enumerate().for_each(task);
                sum(&part, (0, y), rows);
            }
        }
    }
    Ok(())
}

/// Whether `rows` rows of `k` values at stride `ld` are there to read from `a` (false: no
/// rows, nothing to do). Panics, naming `what`, if `ld < k` or `a` is shorter than
/// `(rows - 1)·ld + k`: the kernels read through raw pointers on that promise.
fn strided_rows(what: &str, a: &[f32], ld: usize, rows: usize, k: usize) -> bool {
    if rows == 0 {
        return false;
    }
    assert!(
        ld >= k && a.len() >= (rows - 1) * ld + k,
        "{what}: a too short"
    );
    true
}

/// `out[j] = Σ_p a[j·ld + p]·x[p]` for long rows read front to back (an (out, in) matrix's
/// stretch of outputs): the two-stream kernel, one thread.
fn rows_stream(kernel: Kernel, a: &[f32], ld: usize, x: &[f32], out: &mut [f32]) {
    if !strided_rows("rows_stream", a, ld, out.len(), x.len()) {
        return;
    }
    match kernel {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the kernel is supported (checked by the caller: AVX2+FMA at least) and the
        // lengths are checked above.
        Kernel::Avx512Vnni | Kernel::Avx512 | Kernel::AvxVnni | Kernel::Avx2 => unsafe {
            x86::rows_stream_f32_avx2(a.as_ptr(), ld, x, out)
        },
        _ => portable::rows_f32(a, ld, x, out),
    }
}

/// `out[p] += Σ_j c[j]·a[j·ld + p]` for long rows read front to back (an (in, out) matrix's
/// stretch of inputs, `ld` = outputs): the streaming kernel, one thread.
fn axpy_stream(kernel: Kernel, a: &[f32], ld: usize, c: &[f32], out: &mut [f32]) {
    if !strided_rows("axpy_stream", a, ld, c.len(), out.len()) {
        return;
    }
    match kernel {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the kernel is supported (checked by the caller: AVX2+FMA at least) and the
        // lengths are checked above.
        Kernel::Avx512Vnni | Kernel::Avx512 | Kernel::AvxVnni | Kernel::Avx2 => unsafe {
            x86::axpy_stream_avx2(a.as_ptr(), ld, c, out)
        },
        _ => portable::axpy_rows(a, ld, c, out),
    }
}

/// `out[i] = Σ_c W[4·g0 + i, c]·x[c]` for the `out.len() / 4` groups from `g0` (padding rows
/// included) with `kernel` (checked by the caller).
fn groups_into(kernel: Kernel, w: &Matrix, g0: usize, x: &Input, out: &mut [f32]) {
    let groups = out.len() / GROUP;
    assert!(g0 + groups <= w.rows.div_ceil(GROUP));
    match (&w.data, x) {
        (Data::F32(a), Input::F32(x)) => {
            let g = x.len() * GROUP; // values a group
            let a = &a[g0 * g..(g0 + groups) * g];
            match kernel {
                #[cfg(target_arch = "x86_64")]
                // SAFETY: AVX-512F present (checked by `gemv`); `a` holds `groups` packed
                // groups of x.len() chunked columns, out 4 per group.
                Kernel::Avx512Vnni | Kernel::Avx512 => unsafe { x86::groups_f32_avx512(a, x, out) },
                #[cfg(target_arch = "x86_64")]
                // SAFETY: AVX2+FMA present; lengths as above (checked again inside).
                Kernel::AvxVnni | Kernel::Avx2 => unsafe { x86::groups_f32_avx2(a, x, out) },
                _ => portable::groups_f32(a, x, F32_CHUNK, out),
            }
        }
        (Data::Bf16(a), Input::Bf16(x)) => {
            let g = x.len() * GROUP;
            let a = &a[g0 * g..(g0 + groups) * g];
            match kernel {
                #[cfg(target_arch = "x86_64")]
                // SAFETY: AVX-512F present; x reordered for 16 lanes (Input::new).
                Kernel::Avx512Vnni | Kernel::Avx512 => unsafe {
                    x86::groups_bf16_avx512(a, x, out)
                },
                #[cfg(target_arch = "x86_64")]
                // SAFETY: AVX2+FMA present; x reordered for 8 lanes (Input::new).
                Kernel::AvxVnni | Kernel::Avx2 => unsafe { x86::groups_bf16_avx2(a, x, out) },
                _ => portable::groups_bf16(a, x, BF16_CHUNK, out),
            }
        }
        (Data::Q8 { q, d }, Input::Q8(xq)) => {
            let nb = xq.d.len();
            let q = &q[g0 * nb * GROUP * Q8_BLOCK..(g0 + groups) * nb * GROUP * Q8_BLOCK];
            let d = &d[g0 * nb * GROUP..(g0 + groups) * nb * GROUP];
            match kernel {
                #[cfg(target_arch = "x86_64")]
                // SAFETY: AVX-512F/BW/VNNI present; lengths checked inside.
                Kernel::Avx512Vnni => unsafe { x86::groups_q8_avx512vnni(q, d, xq, out) },
                #[cfg(target_arch = "x86_64")]
                // SAFETY: AVX2 + AVX-VNNI present; lengths checked inside.
                Kernel::AvxVnni => unsafe { x86::groups_q8_avxvnni(q, d, xq, out) },
                #[cfg(target_arch = "x86_64")]
                // SAFETY: AVX2+FMA present (every AVX-512 CPU has it); lengths checked inside.
                Kernel::Avx512 | Kernel::Avx2 => unsafe { x86::groups_q8_avx2(q, d, xq, out) },
                _ => portable::groups_q8(q, d, xq, out),
            }
        }
        _ => unreachable!("Input::new prepares x for the matrix's format"),
    }
}

/// Attention scores of one query over cached keys: `out[j] = Σ_p a[j·ld + p]·x[p]` for
/// `j < out.len()`, `p < x.len()` (one thread; `a` a strided slice of a (T, ld) cache).
/// A kernel this CPU lacks falls back to the plain loop. Panics if `ld < x.len()` or `a` is
/// shorter than `(out.len() - 1)·ld + x.len()`.
pub fn dot_rows(kernel: Kernel, a: &[f32], ld: usize, x: &[f32], out: &mut [f32]) {
    if !strided_rows("dot_rows", a, ld, out.len(), x.len()) {
        return;
    }
    match kernel {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the kernel is supported (AVX2+FMA at least) and the lengths are checked
        // above: row j is a[j·ld .. j·ld + k].
        Kernel::Avx512Vnni | Kernel::Avx512 | Kernel::AvxVnni | Kernel::Avx2
            if kernel.supported() =>
        unsafe {
            x86::rows_f32_avx2(
                a.as_ptr(),
                ld,
                out.len(),
                x.as_ptr(),
                x.len(),
                out.as_mut_ptr(),
            )
        },
        _ => portable::rows_f32(a, ld, x, out),
    }
}

/// The weighted sum of cached values: `out[p] += Σ_j c[j]·a[j·ld + p]` for `j < c.len()`,
/// `p < out.len()` (one thread; accumulates into `out`). A kernel this CPU lacks falls back
/// to the plain loop. Panics if `ld < out.len()` or `a` is shorter than
/// `(c.len() - 1)·ld + out.len()`.
pub fn add_weighted_rows(kernel: Kernel, a: &[f32], ld: usize, c: &[f32], out: &mut [f32]) {
    if !strided_rows("add_weighted_rows", a, ld, c.len(), out.len()) {
        return;
    }
    match kernel {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as `dot_rows`.
        Kernel::Avx512Vnni | Kernel::Avx512 | Kernel::AvxVnni | Kernel::Avx2
            if kernel.supported() =>
        unsafe { x86::axpy_rows_avx2(a.as_ptr(), ld, c, out) },
        _ => portable::axpy_rows(a, ld, c, out),
    }
}

/// The oracle: `W·x` in f64 from the weights `w` stands for ([`Matrix::dequantize`]) and `x`
/// as given.
pub fn reference(w: &Matrix, x: &[f32]) -> Vec<f64> {
    let a = w.dequantize();
    (0..w.rows)
        .map(|r| {
            a[r * w.cols..(r + 1) * w.cols]
                .iter()
                .zip(x)
                .map(|(&a, &b)| a as f64 * b as f64)
                .sum()
        })
        .collect()
}

/// The oracle of the int8 kernels: `W·x̂` in f64, where `x̂` is `x` quantized per block as the
/// kernels quantize it ([`QuantizedVector`]); equal to [`reference()`] for other formats.
pub fn reference_quantized_input(w: &Matrix, x: &[f32]) -> Vec<f64> {
    match w.data {
        Data::Q8 { .. } => reference(w, &QuantizedVector::new(x).dequantize()[..w.cols]),
        _ => reference(w, x),
    }
}
