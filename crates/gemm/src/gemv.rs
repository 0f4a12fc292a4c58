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
//! `vpdpbusd` multiplies unsigned by signed bytes. The weights are made unsigned in the kernel
//! (`w ^ 0x80 = w + 128`), so each i32 lane sums `(w + 128)·x` over its four bytes; the kernel
//! starts each lane's sum at `-128·Σx` over the same four bytes (computed once per product,
//! [`QuantizedVector`]), and the sum comes out exactly `Σ w·x`. `vpmaddubsw` (no VNNI) would
//! saturate its i16 pairs with that offset, so the AVX2 kernel takes llama.cpp's sign trick:
//! `|w| · (x·sign(w))`.
//!
//! The f32 and bf16 kernels compute four rows at a time (x loaded once for the four), two
//! accumulators a row with AVX2; int8 likewise four rows sharing each block of `x`.
//!
//! Threads: rows are split into chunks (a multiple of 4 rows, several per thread, so that a
//! core slowed by another process is balanced by rayon's stealing), each chunk computed and its
//! epilogue (bias, accumulation) applied while it is in L1. Products below
//! [`PARALLEL_MIN_BYTES`] of weights, or inside [`crate::serial`], stay on the calling thread.
//!
//! The plain references ([`reference`], [`reference_quantized_input`]) compute in f64 from the
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

/// Below this many bytes of weights a product runs on one thread (a rayon fork costs a few
/// microseconds; 64 KiB stream in about that time).
pub const PARALLEL_MIN_BYTES: usize = 64 << 10;

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
    Avx512Vnni,
    Avx512,
    AvxVnni,
    Avx2,
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
            Isa::Scalar => Kernel::Scalar,
        }
    }

    /// The kernel for the ladder's ISA on this thread ([`crate::simd::active_isa`]). Errors as
    /// that function (an ISA forced by `FERROGPT_ISA` that this CPU lacks).
    pub fn active() -> Result<Kernel, GemmError> {
        Ok(Kernel::for_isa(crate::simd::active_isa()?))
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

/// The stored weights of a [`Matrix`], row-major (out, in).
#[derive(Clone, Debug)]
enum Data {
    /// rows × cols.
    F32(Vec<f32>),
    /// rows × cols bf16 bit patterns.
    Bf16(Vec<u16>),
    /// `q`: rows × padded cols (a multiple of [`Q8_BLOCK`]; padding zero); `d`: one scale per
    /// block, rows × padded cols / 32.
    Q8 { q: Vec<i8>, d: Vec<f32> },
}

/// A weight matrix stored for [`gemv`]: `rows` outputs × `cols` inputs, (out, in) row-major, in
/// one of the [`WeightFormat`]s.
#[derive(Clone, Debug)]
pub struct Matrix {
    rows: usize,
    cols: usize,
    data: Data,
}

impl Matrix {
    /// Converts f32 weights (`rows × cols` values in `layout`: (out, in) or (in, out)) to
    /// `format`. bf16 rounds to nearest even; int8 quantizes per block of 32 as Q8_0.
    /// Panics if `w` is not `rows · cols` long.
    pub fn from_f32(
        format: WeightFormat,
        rows: usize,
        cols: usize,
        w: &[f32],
        layout: Layout,
    ) -> Matrix {
        assert_eq!(w.len(), rows * cols, "weights of a {rows}x{cols} matrix");
        let at = |r: usize, c: usize| match layout {
            Layout::OutIn => w[r * cols + c],
            Layout::InOut => w[c * rows + r],
        };
        let data = match format {
            WeightFormat::F32 => Data::F32(match layout {
                Layout::OutIn => w.to_vec(),
                Layout::InOut => crate::gemv::transpose(w, cols, rows),
            }),
            WeightFormat::Bf16 => Data::Bf16(match layout {
                Layout::OutIn => w.iter().map(|&v| f32_to_bf16(v)).collect(),
                Layout::InOut => {
                    let t = crate::gemv::transpose(w, cols, rows);
                    t.iter().map(|&v| f32_to_bf16(v)).collect()
                }
            }),
            WeightFormat::Int8 => {
                let cp = cols.next_multiple_of(Q8_BLOCK);
                let nb = cp / Q8_BLOCK;
                let mut q = vec![0i8; rows * cp];
                let mut d = vec![0f32; rows * nb];
                let mut row = vec![0f32; cp];
                for r in 0..rows {
                    for (c, v) in row.iter_mut().enumerate().take(cols) {
                        *v = at(r, c);
                    }
                    for b in 0..nb {
                        let blk = &row[b * Q8_BLOCK..(b + 1) * Q8_BLOCK];
                        let out = &mut q[r * cp + b * Q8_BLOCK..][..Q8_BLOCK];
                        d[r * nb + b] = quantize_q8_block(blk, out);
                    }
                }
                Data::Q8 { q, d }
            }
        };
        Matrix { rows, cols, data }
    }

    /// An int8 matrix from its stored parts (a quantized checkpoint): `q` rows × padded cols
    /// (cols rounded up to 32; padding zero), `d` rows × padded cols / 32 finite scales.
    pub fn from_q8(rows: usize, cols: usize, q: Vec<i8>, d: Vec<f32>) -> Result<Matrix, GemmError> {
        let cp = cols.next_multiple_of(Q8_BLOCK);
        if q.len() != rows * cp || d.len() != rows * cp / Q8_BLOCK {
            return Err(GemmError::Shape(format!(
                "an int8 {rows}x{cols} matrix needs {} quants and {} scales, found {} and {}",
                rows * cp,
                rows * cp / Q8_BLOCK,
                q.len(),
                d.len()
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
            data: Data::Q8 { q, d },
        })
    }

    /// A bf16 matrix from its stored bit patterns, (out, in), rows × cols.
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
            data: Data::Bf16(bits),
        })
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    pub fn cols(&self) -> usize {
        self.cols
    }

    pub fn format(&self) -> WeightFormat {
        match self.data {
            Data::F32(_) => WeightFormat::F32,
            Data::Bf16(_) => WeightFormat::Bf16,
            Data::Q8 { .. } => WeightFormat::Int8,
        }
    }

    /// Bytes the weights take (what one product reads).
    pub fn bytes(&self) -> usize {
        match &self.data {
            Data::F32(w) => 4 * w.len(),
            Data::Bf16(w) => 2 * w.len(),
            Data::Q8 { q, d } => q.len() + 4 * d.len(),
        }
    }

    /// The int8 parts (quants, rows × padded cols; scales, rows × padded cols / 32).
    pub fn q8_parts(&self) -> Option<(&[i8], &[f32])> {
        match &self.data {
            Data::Q8 { q, d } => Some((q, d)),
            _ => None,
        }
    }

    /// The bf16 bit patterns, (out, in).
    pub fn bf16_bits(&self) -> Option<&[u16]> {
        match &self.data {
            Data::Bf16(w) => Some(w),
            _ => None,
        }
    }

    /// The weights the matrix stands for, as f32, (out, in) (`rows × cols`): exact for f32,
    /// widened bf16, `d·q` for int8.
    pub fn dequantize(&self) -> Vec<f32> {
        let (rows, cols) = (self.rows, self.cols);
        match &self.data {
            Data::F32(w) => w.clone(),
            Data::Bf16(w) => w.iter().map(|&b| bf16_to_f32(b)).collect(),
            Data::Q8 { q, d } => {
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

    /// [`Matrix::dequantize`] written in `layout` into `out` (`rows · cols` values).
    pub fn dequantize_into(&self, out: &mut [f32], layout: Layout) {
        let w = self.dequantize();
        match layout {
            Layout::OutIn => out.copy_from_slice(&w),
            Layout::InOut => out.copy_from_slice(&transpose(&w, self.rows, self.cols)),
        }
    }
}

/// `a` (r × c, row-major) transposed: c × r.
fn transpose(a: &[f32], r: usize, c: usize) -> Vec<f32> {
    let mut t = vec![0f32; a.len()];
    // Tiles of 32×32 keep both sides in cache.
    const TILE: usize = 32;
    for i0 in (0..r).step_by(TILE) {
        for j0 in (0..c).step_by(TILE) {
            for i in i0..(i0 + TILE).min(r) {
                for j in j0..(j0 + TILE).min(c) {
                    t[j * r + i] = a[i * c + j];
                }
            }
        }
    }
    t
}

/// `y (+)= W·x (+ bias)` (module doc) with `kernel`, split over rayon's threads.
///
/// `x` has `w.cols()` values, `y` and `bias` `w.rows()`. `accumulate`: add to `y` (a residual
/// connection) instead of overwriting it. Errors: a kernel this CPU cannot run, or lengths that
/// do not match.
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
    let xq = match w.data {
        Data::Q8 { .. } => Some(QuantizedVector::new(x)),
        _ => None,
    };
    let threads = if w.bytes() < PARALLEL_MIN_BYTES || crate::in_serial() {
        1
    } else {
        rayon::current_num_threads().max(1)
    };
    // Four chunks a thread, each a multiple of 4 rows.
    let chunk = w.rows.div_ceil(4 * threads).next_multiple_of(4).max(4);
    let task = |(ci, yc): (usize, &mut [f32])| {
        let r0 = ci * chunk;
        let mut tmp = [0f32; 64];
        for (s, ys) in yc.chunks_mut(tmp.len()).enumerate() {
            let rs = r0 + s * tmp.len();
            let t = &mut tmp[..ys.len()];
            rows_into(kernel, w, rs, x, xq.as_ref(), t);
            for (i, (yv, &v)) in ys.iter_mut().zip(t.iter()).enumerate() {
                let b = bias.map_or(0.0, |b| b[rs + i]);
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

/// `out[i] = Σ_c W[r0 + i, c]·x[c]` for `i < out.len()` with `kernel` (checked by the caller).
fn rows_into(
    kernel: Kernel,
    w: &Matrix,
    r0: usize,
    x: &[f32],
    xq: Option<&QuantizedVector>,
    out: &mut [f32],
) {
    let (rows, k) = (out.len(), w.cols);
    assert!(r0 + rows <= w.rows);
    match &w.data {
        Data::F32(a) => {
            let a = &a[r0 * k..(r0 + rows) * k];
            match kernel {
                #[cfg(target_arch = "x86_64")]
                // SAFETY: AVX-512F present (checked by `gemv`); `a` holds rows × k values, x k,
                // out rows.
                Kernel::Avx512Vnni | Kernel::Avx512 => unsafe {
                    x86::rows_f32_avx512(a.as_ptr(), k, rows, x.as_ptr(), k, out.as_mut_ptr())
                },
                #[cfg(target_arch = "x86_64")]
                // SAFETY: AVX2+FMA present; lengths as above.
                Kernel::AvxVnni | Kernel::Avx2 => unsafe {
                    x86::rows_f32_avx2(a.as_ptr(), k, rows, x.as_ptr(), k, out.as_mut_ptr())
                },
                _ => portable::rows_f32(a, k, x, out),
            }
        }
        Data::Bf16(a) => {
            let a = &a[r0 * k..(r0 + rows) * k];
            match kernel {
                #[cfg(target_arch = "x86_64")]
                // SAFETY: AVX-512F present; lengths as for f32.
                Kernel::Avx512Vnni | Kernel::Avx512 => unsafe {
                    x86::rows_bf16_avx512(a.as_ptr(), k, rows, x.as_ptr(), k, out.as_mut_ptr())
                },
                #[cfg(target_arch = "x86_64")]
                // SAFETY: AVX2+FMA present; lengths as for f32.
                Kernel::AvxVnni | Kernel::Avx2 => unsafe {
                    x86::rows_bf16_avx2(a.as_ptr(), k, rows, x.as_ptr(), k, out.as_mut_ptr())
                },
                _ => portable::rows_bf16(a, k, x, out),
            }
        }
        Data::Q8 { q, d } => {
            let xq = xq.expect("an int8 product quantizes x first");
            let cp = k.next_multiple_of(Q8_BLOCK);
            let nb = cp / Q8_BLOCK;
            let q = &q[r0 * cp..(r0 + rows) * cp];
            let d = &d[r0 * nb..(r0 + rows) * nb];
            match kernel {
                #[cfg(target_arch = "x86_64")]
                // SAFETY: AVX-512F/BW/VNNI present; q holds rows × cp quants, d rows × nb
                // scales, xq cp quants, nb scales and cp/4 corrections.
                Kernel::Avx512Vnni => unsafe { x86::rows_q8_avx512vnni(q, d, nb, xq, out) },
                #[cfg(target_arch = "x86_64")]
                // SAFETY: AVX2 + AVX-VNNI present; lengths as above.
                Kernel::AvxVnni => unsafe { x86::rows_q8_avxvnni(q, d, nb, xq, out) },
                #[cfg(target_arch = "x86_64")]
                // SAFETY: AVX2+FMA present (every AVX-512 CPU has it); lengths as above.
                Kernel::Avx512 | Kernel::Avx2 => unsafe { x86::rows_q8_avx2(q, d, nb, xq, out) },
                _ => portable::rows_q8(q, d, nb, xq, out),
            }
        }
    }
}

/// Attention scores of one query over cached keys: `out[j] = Σ_p a[j·ld + p]·x[p]` for
/// `j < out.len()`, `p < x.len()` (one thread; `a` a strided slice of a (T, ld) cache).
pub fn dot_rows(kernel: Kernel, a: &[f32], ld: usize, x: &[f32], out: &mut [f32]) {
    let (rows, k) = (out.len(), x.len());
    if rows == 0 {
        return;
    }
    assert!(
        ld >= k && a.len() >= (rows - 1) * ld + k,
        "dot_rows: a too short"
    );
    match kernel {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the kernel is supported (AVX2+FMA at least) and the lengths are checked
        // above: row j is a[j·ld .. j·ld + k].
        Kernel::Avx512Vnni | Kernel::Avx512 | Kernel::AvxVnni | Kernel::Avx2
            if kernel.supported() =>
        unsafe { x86::rows_f32_avx2(a.as_ptr(), ld, rows, x.as_ptr(), k, out.as_mut_ptr()) },
        _ => portable::rows_f32(a, ld, x, out),
    }
}

/// The weighted sum of cached values: `out[p] += Σ_j c[j]·a[j·ld + p]` for `j < c.len()`,
/// `p < out.len()` (one thread).
pub fn add_weighted_rows(kernel: Kernel, a: &[f32], ld: usize, c: &[f32], out: &mut [f32]) {
    let (rows, k) = (c.len(), out.len());
    if rows == 0 {
        return;
    }
    assert!(
        ld >= k && a.len() >= (rows - 1) * ld + k,
        "add_weighted_rows: a too short"
    );
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
/// kernels quantize it ([`QuantizedVector`]); equal to [`reference`] for other formats.
pub fn reference_quantized_input(w: &Matrix, x: &[f32]) -> Vec<f64> {
    match w.data {
        Data::Q8 { .. } => reference(w, &QuantizedVector::new(x).dequantize()[..w.cols]),
        _ => reference(w, x),
    }
}
