//! The CPU ladder's `wgpu` level (`ferrogpt_gemm::Level::Wgpu`, registered by
//! `ferrogpt_wgpu::offload::register`) against the f64 oracle: odd shapes, every transpose,
//! row strides wider than the rows, accumulation, a bias, and operands split into blocks.
//!
//! Skipped without an adapter unless `FERROGPT_REQUIRE_WGPU=1` (as `tests/ladder.rs`).

use ferrogpt_gemm::offload::Offload;
use ferrogpt_gemm::{matmul, matmul_bias, serial, GemmError, Level};
use ferrogpt_wgpu::offload::{register, WgpuOffload};
use ferrogpt_wgpu::reference::{max_rel_err, random};

/// f32 products of k ≤ 513 terms of values in [-1, 1): the kernels' order of summation differs
/// from the oracle's by a few f32 roundings, far below this.
const TOL: f64 = 1e-5;

fn required() -> bool {
    std::env::var("FERROGPT_REQUIRE_WGPU").as_deref() == Ok("1")
}

/// Registers the engine; `false` (after saying why) when the level cannot run here.
fn ready() -> bool {
    register();
    match Level::Wgpu.available() {
        Ok(()) => true,
        Err(e) if required() => panic!("FERROGPT_REQUIRE_WGPU=1, but: {e}"),
        Err(e) => {
            println!("skipped: {e}");
            false
        }
    }
}

/// op(A)·op(B) in f64 from strided storage, plus `c0` (accumulate) or the bias.
#[allow(clippy::too_many_arguments)]
fn oracle(
    ta: bool,
    tb: bool,
    m: usize,
    n: usize,
    k: usize,
    a: &[f32],
    lda: usize,
    b: &[f32],
    ldb: usize,
    add: impl Fn(usize, usize) -> f64,
) -> Vec<f64> {
    let at = |i: usize, p: usize| if ta { a[p * lda + i] } else { a[i * lda + p] } as f64;
    let bt = |p: usize, j: usize| if tb { b[j * ldb + p] } else { b[p * ldb + j] } as f64;
    (0..m * n)
        .map(|e| {
            let (i, j) = (e / n, e % n);
            add(i, j) + (0..k).map(|p| at(i, p) * bt(p, j)).sum::<f64>()
        })
        .collect()
}

const SHAPES: [(usize, usize, usize); 9] = [
    (1, 1, 1),
    (7, 7, 7),
    (33, 127, 65),
    (7, 33, 127),
    (127, 1, 513),
    (33, 513, 7),
    (1, 300, 45),
    (130, 64, 68),
    (64, 192, 48),
];

#[test]
fn every_transpose_stride_and_accumulation_matches_the_oracle() {
    if !ready() {
        return;
    }
    let mut seed = 100;
    for &(m, n, k) in &SHAPES {
        for (ta, tb) in [(false, false), (false, true), (true, false), (true, true)] {
            for accumulate in [false, true] {
                seed += 10;
                // Row strides 3 wider than the rows: the packing must honour them.
                let (ar, ac) = if ta { (k, m) } else { (m, k) };
                let (br, bc) = if tb { (n, k) } else { (k, n) };
                let (lda, ldb, ldc) = (ac + 3, bc + 3, n + 3);
                let a = random(seed, ar * lda);
                let b = random(seed + 1, br * ldb);
                let c0 = random(seed + 2, m * ldc);
                let mut c = c0.clone();
                matmul(
                    Level::Wgpu,
                    ta,
                    tb,
                    m,
                    n,
                    k,
                    &a,
                    lda,
                    &b,
                    ldb,
                    &mut c,
                    ldc,
                    accumulate,
                )
                .unwrap_or_else(|e| panic!("{m}x{n}x{k} ta={ta} tb={tb}: {e}"));
                let want = oracle(ta, tb, m, n, k, &a, lda, &b, ldb, |i, j| {
                    if accumulate {
                        c0[i * ldc + j] as f64
                    } else {
                        0.0
                    }
                });
                let got = (0..m * n).map(|e| c[(e / n) * ldc + e % n]);
                let err = max_rel_err(got.zip(want.iter().copied()));
                assert!(
                    err <= TOL,
                    "{m}x{n}x{k} ta={ta} tb={tb} acc={accumulate}: max rel err {err:e}"
                );
                // The padding between rows of C is never written.
                for i in 0..m {
                    assert_eq!(
                        &c[i * ldc + n..i * ldc + ldc],
                        &c0[i * ldc + n..i * ldc + ldc]
                    );
                }
            }
        }
        println!("wgpu level {m}x{n}x{k}: every transpose, overwrite and accumulate, ok");
    }
}

#[test]
fn bias_and_contiguous_products_match_the_oracle() {
    if !ready() {
        return;
    }
    for (s, &(m, n, k)) in SHAPES.iter().enumerate() {
        let s = s as u64 * 7;
        let (a, b, bias) = (random(s, m * k), random(s + 1, k * n), random(s + 2, n));
        let mut c = vec![f32::NAN; m * n];
        matmul_bias(
            Level::Wgpu,
            false,
            false,
            m,
            n,
            k,
            &a,
            k,
            &b,
            n,
            &bias,
            &mut c,
            n,
        )
        .unwrap();
        let want = oracle(false, false, m, n, k, &a, k, &b, n, |_, j| bias[j] as f64);
        let err = max_rel_err(c.iter().copied().zip(want));
        assert!(err <= TOL, "{m}x{n}x{k} with bias: max rel err {err:e}");
    }
}

#[test]
fn large_operands_are_split_into_blocks() {
    if !ready() {
        return;
    }
    // Buffers of at most 1000 values: B splits into column blocks, A and C into row blocks.
    let engine = WgpuOffload::with_max_elements(0, 1000);
    for &(m, n, k) in &[(130, 64, 68), (33, 513, 7), (7, 33, 127), (1, 300, 45)] {
        let (a, b) = (random(m as u64, m * k), random(n as u64, k * n));
        let mut c = vec![f32::NAN; m * n];
        engine.gemm(m, n, k, &a, &b, &mut c).unwrap();
        let want = oracle(false, false, m, n, k, &a, k, &b, n, |_, _| 0.0);
        let err = max_rel_err(c.iter().copied().zip(want));
        assert!(err <= TOL, "{m}x{n}x{k} in blocks: max rel err {err:e}");
    }
    // A row of A longer than a buffer is an error, not a panic.
    let mut c = vec![0.0; 2];
    let err = engine
        .gemm(1, 2, 1001, &[0.0; 1001], &[0.0; 2002], &mut c)
        .unwrap_err();
    assert!(err.contains("past this adapter's limit"), "{err}");
}

#[test]
fn f64_and_serial_products() {
    if !ready() {
        return;
    }
    // The WGSL kernels have no f64 product: an error that says so.
    let mut c = [0f64; 4];
    let err = matmul(
        Level::Wgpu,
        false,
        false,
        2,
        2,
        2,
        &[1.0; 4],
        2,
        &[1.0; 4],
        2,
        &mut c,
        2,
        false,
    )
    .unwrap_err();
    assert!(
        matches!(&err, GemmError::Unavailable { level: "wgpu", reason } if reason.contains("f64")),
        "{err}"
    );
    // Inside `serial` (attention's per-head products) the level computes on the CPU: same
    // contract, same answer.
    let (m, n, k) = (33, 17, 29);
    let (a, b) = (random(5, m * k), random(6, k * n));
    let mut c = vec![0f32; m * n];
    serial(|| {
        matmul(
            Level::Wgpu,
            false,
            false,
            m,
            n,
            k,
            &a,
            k,
            &b,
            n,
            &mut c,
            n,
            false,
        )
    })
    .unwrap();
    let want = oracle(false, false, m, n, k, &a, k, &b, n, |_, _| 0.0);
    assert!(max_rel_err(c.iter().copied().zip(want)) <= TOL);
}
