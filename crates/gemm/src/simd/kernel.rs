//! The microkernel contract and the portable scalar kernel.
//!
//! A microkernel computes one MR×NR tile of C from one Ã sliver and one B̃ sliver (layouts in
//! `pack.rs`):
//!
//! ```text
//! C[i, j] (+)= Σ_{p < kc} ã[p*astep + i] · b̃[p*NR + j]        i < MR, j < NR
//! ```
//!
//! `astep` is MR for a packed Ã sliver; op(A) = Aᵀ can be read in place with `astep` = lda.
//! `run_direct` reads op(A) = A in place (row-major, one row per i) instead.
//!
//! C is row-major with row stride `ldc` and column stride 1; `accumulate == false` overwrites,
//! adding `bias[j]` to column j when `bias` is not null (`accumulate` and a bias never come
//! together).
//! The x86 kernels keep the whole MR×NR tile in vector registers (x86.rs); this one is plain
//! Rust that the compiler may vectorise, the fallback where no vector ISA is available and the
//! path `FERROGPT_ISA=scalar` tests.

use super::Blocking;
use crate::Element;

/// One register-blocked microkernel for one ISA and element type.
pub(crate) trait Microkernel<T: Element> {
    /// The block sizes this kernel is tuned for (`Blocking::mr`, `Blocking::nr` are its tile).
    const BLOCKING: Blocking;

    /// Computes one MR×NR tile of C (see the module doc); element (i, p) of the tile's A block
    /// is `a[p * astep + i]`.
    ///
    /// # Safety
    /// `a[p * astep + i]` is readable for p < kc, i < MR, `b` points to `NR * kc` readable
    /// elements, and `c` to an MR×NR tile
    /// with row stride `ldc` that is valid for reads and writes and that no other thread
    /// touches during the call; `bias` is null or points to NR readable elements. The
    /// kernel's ISA must be supported by the running CPU.
    #[allow(clippy::too_many_arguments)]
    unsafe fn run(
        kc: usize,
        a: *const T,
        astep: usize,
        b: *const T,
        c: *mut T,
        ldc: usize,
        accumulate: bool,
        bias: *const T,
    );

    /// [`Microkernel::run`] with A read in place instead of from a packed Ã sliver: element
    /// (i, p) of the tile's A block is `a[i * lda + p]` (op(A) = A, row-major). Only the first
    /// `rows` (1 ≤ rows ≤ MR) rows are read; the tile's rows past them are garbage, for the
    /// caller to discard.
    ///
    /// # Safety
    /// As `run`, with `a[i * lda + p]` readable for i < rows, p < kc.
    #[allow(clippy::too_many_arguments)]
    unsafe fn run_direct(
        kc: usize,
        a: *const T,
        lda: usize,
        rows: usize,
        b: *const T,
        c: *mut T,
        ldc: usize,
        accumulate: bool,
        bias: *const T,
    );
}

/// The portable kernel: a 4×8 tile of scalars.
pub(crate) struct Scalar;

const SMR: usize = 4;
const SNR: usize = 8;

impl<T: Element> Microkernel<T> for Scalar {
    const BLOCKING: Blocking = super::SCALAR;

    unsafe fn run(
        kc: usize,
        a: *const T,
        astep: usize,
        b: *const T,
        c: *mut T,
        ldc: usize,
        accumulate: bool,
        bias: *const T,
    ) {
        // SAFETY: the caller guarantees the extents stated in the trait doc.
        let (a, b) = unsafe {
            (
                std::slice::from_raw_parts(a, kc.saturating_sub(1) * astep + SMR),
                std::slice::from_raw_parts(b, SNR * kc),
            )
        };
        let acc = scalar_tile(b, |p, i| a[p * astep + i]);
        // SAFETY: forwarded contract.
        unsafe { store(&acc, c, ldc, accumulate, bias) }
    }

    unsafe fn run_direct(
        kc: usize,
        a: *const T,
        lda: usize,
        rows: usize,
        b: *const T,
        c: *mut T,
        ldc: usize,
        accumulate: bool,
        bias: *const T,
    ) {
        // SAFETY: the caller guarantees rows ≥ 1 readable rows of kc elements, and NR·kc of b.
        let (arows, b): ([&[T]; SMR], &[T]) = unsafe {
            (
                std::array::from_fn(|i| {
                    std::slice::from_raw_parts(a.add(i.min(rows - 1) * lda), kc)
                }),
                std::slice::from_raw_parts(b, SNR * kc),
            )
        };
        let acc = scalar_tile(b, |p, i| arows[i][p]);
        // SAFETY: forwarded contract.
        unsafe { store(&acc, c, ldc, accumulate, bias) }
    }
}

/// The scalar kernel's k loop: Σ_p a_at(p, i) · b̃[p*NR + j] for the SMR×SNR tile.
#[inline(always)]
fn scalar_tile<T: Element>(b: &[T], a_at: impl Fn(usize, usize) -> T) -> [[T; SNR]; SMR] {
    let mut acc = [[T::ZERO; SNR]; SMR];
    for (p, bp) in b.chunks_exact(SNR).enumerate() {
        for (i, row) in acc.iter_mut().enumerate() {
            let ai = a_at(p, i);
            for (c, &bj) in row.iter_mut().zip(bp) {
                *c += ai * bj;
            }
        }
    }
    acc
}

/// The scalar kernel's epilogue: the tile into C (see the trait's contract).
///
/// # Safety
/// `c` is an SMR×SNR tile with row stride `ldc`, valid for reads and writes; `bias` is null or
/// holds SNR elements.
unsafe fn store<T: Element>(
    acc: &[[T; SNR]; SMR],
    c: *mut T,
    ldc: usize,
    accumulate: bool,
    bias: *const T,
) {
    // SAFETY: per the contract above.
    let bias = unsafe { (!bias.is_null()).then(|| std::slice::from_raw_parts(bias, SNR)) };
    for (i, row) in acc.iter().enumerate() {
        for (j, &v) in row.iter().enumerate() {
            // SAFETY: (i, j) is inside the MR×NR tile the caller handed us.
            unsafe {
                let dst = c.add(i * ldc + j);
                *dst = match bias {
                    _ if accumulate => *dst + v,
                    Some(bias) => v + bias[j],
                    None => v,
                };
            }
        }
    }
}
