//! op(B) packed once, for many products that share it.
//!
//! The `simd` and `amx` levels copy op(B) into their kernels' order before multiplying (B̃
//! panels of f32 or f64; bf16 VNNI slivers). When the same B serves many products — a layer's
//! weights are the B of every forward product, and their transpose the B of every input-gradient
//! product, in every data-parallel shard — packing it once per optimizer step instead of once
//! per product removes that copy from all but one of them. At gpt2-124m size (B = 4, T = 64,
//! two shards) the amx level spent ~24% of a step in `pack_b_wide` (perf on the development
//! machine, 2026-11-26, 54bb771).
//!
//! A [`PackedB`] is a snapshot: it does not follow later changes to the matrix it was packed
//! from. Levels that read B in place (every level but `simd` and `amx`) have no packed form;
//! [`PackedB::new`] answers `None` for them and callers use [`crate::matmul`].

use crate::{amx, product, simd, Element, GemmError, Isa, Level, Operand, Problem};

/// op(B) (k×n) packed for one level's kernels. Made by [`PackedB::new`], used by
/// [`matmul_packed`].
pub struct PackedB<T> {
    level: Level,
    tb: bool,
    k: usize,
    n: usize,
    form: Form<T>,
}

enum Form<T> {
    /// The `simd` level's B̃ panels for one ISA's kernel (`simd::pack_b_panels`).
    Simd { isa: Isa, panels: Vec<T> },
    /// The `amx` level's bf16 slivers (`amx::pack_b`).
    Amx(Vec<amx::Line>),
    /// k or n is 0: nothing to pack (products of this B only zero or keep C).
    Empty,
}

impl<T: Element> PackedB<T> {
    /// Packs op(B) for `level`: B stored k×n with row stride `ldb` (`tb == false`) or n×k
    /// (`tb == true`), as in [`crate::matmul`]. `Ok(None)`: the level reads B in place and has
    /// no packed form. Errors: the level is unavailable here (with `simd`, for the ISA active
    /// on this thread now, which the products must use too), `amx` with f64, or `b` too short.
    pub fn new(
        level: Level,
        tb: bool,
        k: usize,
        n: usize,
        b: &[T],
        ldb: usize,
    ) -> Result<Option<Self>, GemmError> {
        if !matches!(level, Level::Simd | Level::Amx) {
            return Ok(None);
        }
        level.available()?;
        let form = if k == 0 || n == 0 {
            Form::Empty
        } else if level == Level::Simd {
            Form::Simd {
                isa: simd::active_isa()?,
                panels: Vec::new(),
            }
        } else {
            Form::Amx(Vec::new())
        };
        let mut pb = PackedB {
            level,
            tb,
            k,
            n,
            form,
        };
        pb.repack(b, ldb)?;
        Ok(Some(pb))
    }

    /// Packs new values of the same op(B) (same shape and layout, stored at stride `ldb`)
    /// into this packing's buffers. Errors: `b` too short.
    pub fn repack(&mut self, b: &[T], ldb: usize) -> Result<(), GemmError> {
        let p = Problem {
            m: 0,
            n: self.n,
            k: self.k,
            a: &[],
            lda: 0,
            ta: false,
            b,
            ldb,
            tb: self.tb,
            ldc: 0,
            accumulate: false,
        };
        p.validate(0, true)?;
        match &mut self.form {
            Form::Simd { isa, panels } => simd::pack_b_panels(&p, *isa, panels),
            Form::Amx(lines) => T::amx_pack_b(&p, lines)?,
            Form::Empty => {}
        }
        Ok(())
    }

    /// The level whose kernels this packing is for.
    pub fn level(&self) -> Level {
        self.level
    }

    /// Rows of op(B) (the products' shared dimension).
    pub fn k(&self) -> usize {
        self.k
    }

    /// Columns of op(B) (and of C).
    pub fn n(&self) -> usize {
        self.n
    }

    /// Bytes held by the packed copy.
    pub fn bytes(&self) -> usize {
        match &self.form {
            Form::Simd { panels, .. } => std::mem::size_of_val(&panels[..]),
            Form::Amx(lines) => std::mem::size_of_val(&lines[..]),
            Form::Empty => 0,
        }
    }

    /// The level's kernel on `p` (validated, k ≥ 1, m, n ≥ 1) with this B.
    pub(crate) fn run(
        &self,
        p: &Problem<'_, T>,
        c: &mut [T],
        bias: Option<&[T]>,
    ) -> Result<(), GemmError> {
        match &self.form {
            Form::Simd { isa, panels } => {
                let active = simd::active_isa()?;
                if active != *isa {
                    return Err(GemmError::Unavailable {
                        level: "simd",
                        reason: format!("B was packed for {isa}, the active ISA is {active}"),
                    });
                }
                T::simd_gemm(p, c, active, bias, Some(panels));
                Ok(())
            }
            Form::Amx(lines) => T::amx_gemm(p, c, Some(lines)),
            Form::Empty => unreachable!("products with k = 0 or n = 0 return before the kernel"),
        }
    }
}

/// Computes `C = op(A)·B̃ (+ biasᵀ in every row)` or `C += op(A)·B̃` with a packed op(B): the
/// same contract as [`crate::matmul`] (and [`crate::matmul_bias`] when `bias` is given) at the
/// level `b` was packed for, with k and n taken from `b`. Errors: as `matmul`, a bias that is
/// not n long or given with `accumulate`, and (`simd`) an active ISA other than the packing's.
#[allow(clippy::too_many_arguments)]
pub fn matmul_packed<T: Element>(
    ta: bool,
    m: usize,
    a: &[T],
    lda: usize,
    b: &PackedB<T>,
    c: &mut [T],
    ldc: usize,
    accumulate: bool,
    bias: Option<&[T]>,
) -> Result<(), GemmError> {
    if let Some(bias) = bias {
        if bias.len() != b.n || accumulate {
            return Err(GemmError::Shape(format!(
                "a bias of {} values for {} columns{}",
                bias.len(),
                b.n,
                if accumulate { ", with accumulate" } else { "" }
            )));
        }
    }
    product(
        b.level,
        ta,
        m,
        b.n,
        b.k,
        a,
        lda,
        Operand::Packed(b),
        c,
        ldc,
        accumulate,
        bias,
    )
}
