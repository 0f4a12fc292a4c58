//! Shared helpers for the ladder tests: random operands and the f64 oracle.

#![allow(dead_code)]

use ferrogpt_gemm::{matmul, Element, GemmError, Level};

/// A small xorshift generator: fresh inputs per seed, no dependency.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    /// Uniform in [-1, 1).
    pub fn next(&mut self) -> f64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 11) as f64 / (1u64 << 52) as f64 - 1.0
    }
    pub fn fill<T: Element>(&mut self, len: usize) -> Vec<T> {
        (0..len).map(|_| T::from_f64(self.next())).collect()
    }
}

/// One test product: shapes, transposes, strides (with `pad` extra columns per row).
#[derive(Clone, Copy, Debug)]
pub struct Case {
    pub m: usize,
    pub n: usize,
    pub k: usize,
    pub ta: bool,
    pub tb: bool,
    pub accumulate: bool,
    pub pad: usize,
}

pub struct Operands<T> {
    pub a: Vec<T>,
    pub lda: usize,
    pub b: Vec<T>,
    pub ldb: usize,
    pub c0: Vec<T>,
    pub ldc: usize,
}

pub fn operands<T: Element>(c: &Case, seed: u64) -> Operands<T> {
    let mut rng = Rng::new(seed);
    let (ar, ac) = if c.ta { (c.k, c.m) } else { (c.m, c.k) };
    let (br, bc) = if c.tb { (c.n, c.k) } else { (c.k, c.n) };
    let (lda, ldb, ldc) = (ac + c.pad, bc + c.pad, c.n + c.pad);
    Operands {
        a: rng.fill(ar * lda),
        lda,
        b: rng.fill(br * ldb),
        ldb,
        c0: rng.fill(c.m * ldc),
        ldc,
    }
}

/// The oracle: `naive` in f64 on the same (upcast) operands, plus Σ|a·b| + |c0| per element
/// for the error bound.
pub fn oracle<T: Element>(c: &Case, o: &Operands<T>) -> (Vec<f64>, Vec<f64>) {
    let up = |v: &[T]| v.iter().map(|x| x.to_f64()).collect::<Vec<f64>>();
    let abs = |v: &[T]| v.iter().map(|x| x.to_f64().abs()).collect::<Vec<f64>>();
    let mut want = up(&o.c0);
    let mut mag: Vec<f64> = abs(&o.c0);
    if !c.accumulate {
        mag.iter_mut().for_each(|x| *x = 0.0);
    }
    let run = |a: &[f64], b: &[f64], out: &mut [f64]| {
        matmul(
            Level::Naive,
            c.ta,
            c.tb,
            c.m,
            c.n,
            c.k,
            a,
            o.lda,
            b,
            o.ldb,
            out,
            o.ldc,
            c.accumulate,
        )
        .unwrap()
    };
    run(&up(&o.a), &up(&o.b), &mut want);
    let mut absprod = mag.clone();
    matmul(
        Level::Naive,
        c.ta,
        c.tb,
        c.m,
        c.n,
        c.k,
        &abs(&o.a),
        o.lda,
        &abs(&o.b),
        o.ldb,
        &mut absprod,
        o.ldc,
        true,
    )
    .unwrap();
    (want, absprod)
}

/// Checks `got` against the oracle: |got − want| ≤ tol · (Σ|a·b| + |c0|) on every element of
/// C, and that the padding columns of C were not touched.
pub fn check<T: Element>(
    what: &str,
    c: &Case,
    o: &Operands<T>,
    got: &[T],
    want: &[f64],
    mag: &[f64],
    tol: f64,
) {
    for i in 0..c.m {
        for j in 0..o.ldc {
            let idx = i * o.ldc + j;
            if j >= c.n {
                assert!(
                    got[idx] == o.c0[idx],
                    "{what} {c:?}: wrote padding at ({i}, {j})"
                );
                continue;
            }
            let err = (got[idx].to_f64() - want[idx]).abs();
            let bound = tol * mag[idx] + 1e-300;
            assert!(
                err <= bound,
                "{what} {c:?}: C[{i}, {j}] = {} but the oracle says {} (error {err:.3e} > bound {bound:.3e})",
                got[idx],
                want[idx]
            );
        }
    }
}

/// Odd shapes (1, 7, 33, 127, 513 and non-square) plus a few that cross block boundaries
/// (KC, MC, the B̃ panel width NP = 4096, AMX's 32-blocks and KCA = 1024) and take each of
/// the `simd` level's nests with several KC blocks: few rows (m ≤ 512, n > 256: column blocks
/// with their own B̃) and the general one (m > 512, n > 256: shared B̃ panel, packed Ã); last,
/// one made only of whole tiles of the NEON kernels (8×12 f32, 8×6 f64), with no edge tile.
pub const SHAPES: &[(usize, usize, usize)] = &[
    (1, 1, 1),
    (1, 7, 33),
    (7, 1, 127),
    (33, 7, 1),
    (7, 33, 513),
    (127, 33, 7),
    (33, 127, 127),
    (513, 7, 33),
    (65, 513, 7),
    (127, 127, 33),
    (50, 70, 390),
    (13, 4100, 5),
    (20, 40, 1100),
    (100, 700, 400),
    (520, 260, 390),
    (48, 36, 17),
];

/// Every case: each shape × (ta, tb) × accumulate, tight and padded strides alternating.
pub fn cases() -> Vec<Case> {
    let mut out = vec![];
    for (s, &(m, n, k)) in SHAPES.iter().enumerate() {
        for t in 0..4 {
            for accumulate in [false, true] {
                out.push(Case {
                    m,
                    n,
                    k,
                    ta: t & 1 == 1,
                    tb: t & 2 == 2,
                    accumulate,
                    pad: (s + t) % 2 * 3,
                });
            }
        }
    }
    out
}

/// The oracle of every case for `T`, computed once per test binary and element type (the
/// operands are deterministic per seed, so every level sees the same ones).
fn oracles<T: Element>() -> std::sync::Arc<Vec<(Vec<f64>, Vec<f64>)>> {
    use std::collections::HashMap;
    use std::sync::{Arc, Mutex, OnceLock};
    type Cache = Mutex<HashMap<&'static str, Arc<Vec<(Vec<f64>, Vec<f64>)>>>>;
    static CACHE: OnceLock<Cache> = OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    let mut map = cache.lock().unwrap();
    map.entry(T::NAME)
        .or_insert_with(|| {
            let all = cases()
                .iter()
                .enumerate()
                .map(|(seed, case)| oracle(case, &operands::<T>(case, seed as u64 + 1)))
                .collect();
            Arc::new(all)
        })
        .clone()
}

/// `case` on `o` at `level`: C starts as `o.c0` (added to when `case.accumulate`).
pub fn product<T: Element>(
    level: Level,
    case: &Case,
    o: &Operands<T>,
) -> Result<Vec<T>, GemmError> {
    let mut c = o.c0.clone();
    matmul(
        level,
        case.ta,
        case.tb,
        case.m,
        case.n,
        case.k,
        &o.a,
        o.lda,
        &o.b,
        o.ldb,
        &mut c,
        o.ldc,
        case.accumulate,
    )?;
    Ok(c)
}

/// Runs every case at `level` for `T` and checks it against the oracle with `tol(k)`.
pub fn check_level<T: Element>(what: &str, level: Level, tol: impl Fn(usize) -> f64) {
    let oracles = oracles::<T>();
    for (seed, case) in cases().iter().enumerate() {
        let o = operands::<T>(case, seed as u64 + 1);
        let (want, mag) = &oracles[seed];
        let got = product(level, case, &o).unwrap_or_else(|e| panic!("{what} {case:?}: {e}"));
        check(what, case, &o, &got, want, mag, tol(case.k));
    }
}

/// Rigorous bound for a sum of k products in precision `eps` in any order: γ_k ≈ (k+1)·eps.
pub fn exact_tol<T: Element>(k: usize) -> f64 {
    let eps = if T::NAME == "f32" {
        f32::EPSILON as f64
    } else {
        f64::EPSILON
    };
    (k as f64 + 2.0) * eps
}

/// Runs every overwrite case as `matmul_bias` at `level` for `T`: C (filled with garbage
/// first) must become op(A)·op(B) + bias in every row, within `tol(k)`, padding untouched.
pub fn check_bias<T: Element>(what: &str, level: Level, tol: impl Fn(usize) -> f64) {
    for (seed, case) in cases().iter().enumerate().filter(|(_, c)| !c.accumulate) {
        let mut o = operands::<T>(case, seed as u64 + 1000);
        let bias: Vec<T> = Rng::new(seed as u64 + 2000).fill(case.n);
        // The oracle's view: C starts as the bias rows and the product is accumulated onto it.
        let garbage = o.c0.clone();
        for row in o.c0.chunks_mut(o.ldc) {
            row[..case.n].copy_from_slice(&bias);
        }
        let with_bias = Case {
            accumulate: true,
            ..*case
        };
        let (want, mag) = oracle(&with_bias, &o);
        let mut got = garbage;
        ferrogpt_gemm::matmul_bias(
            level, case.ta, case.tb, case.m, case.n, case.k, &o.a, o.lda, &o.b, o.ldb, &bias,
            &mut got, o.ldc,
        )
        .unwrap_or_else(|e| panic!("{what} bias {case:?}: {e}"));
        // Padding columns: `check` compares them with o.c0, whose padding is the garbage's.
        check(
            &format!("{what} bias"),
            &with_bias,
            &o,
            &got,
            &want,
            &mag,
            tol(case.k),
        );
    }
}
