//! Every level of the ladder against the naive oracle (computed in f64) on fresh random inputs
//! of odd shapes, every transpose, accumulate and overwrite, tight and padded strides, f32 and
//! f64; the `simd` level once per ISA this CPU has; `amx` within bf16 tolerance.

mod common;

use common::*;
use ferrogpt_gemm::{matmul, simd, GemmError, Isa, Level};

/// The `exact` levels (all but amx) in f32 and f64.
fn check_exact(level: Level) {
    if let Err(e) = level.available() {
        eprintln!("SKIPPED: level {level} is not available here: {e}");
        return;
    }
    check_level::<f32>(&format!("{level} f32"), level, exact_tol::<f32>);
    check_level::<f64>(&format!("{level} f64"), level, exact_tol::<f64>);
    check_bias::<f32>(&format!("{level} f32"), level, exact_tol::<f32>);
    check_bias::<f64>(&format!("{level} f64"), level, exact_tol::<f64>);
}

#[test]
fn naive() {
    check_exact(Level::Naive);
}

#[test]
fn parallel() {
    check_exact(Level::Parallel);
}

#[test]
fn blocked() {
    check_exact(Level::Blocked);
}

#[test]
fn blocked_parallel() {
    check_exact(Level::BlockedParallel);
}

#[test]
fn simd_default_isa() {
    check_exact(Level::Simd);
}

#[test]
fn simd_every_isa() {
    for isa in Isa::ALL {
        if !isa.supported() {
            eprintln!("SKIPPED: simd with {isa}: this CPU lacks it");
            continue;
        }
        simd::with_isa(isa, || {
            assert_eq!(simd::active_isa(), Ok(isa));
            check_level::<f32>(&format!("simd/{isa} f32"), Level::Simd, exact_tol::<f32>);
            check_level::<f64>(&format!("simd/{isa} f64"), Level::Simd, exact_tol::<f64>);
            check_bias::<f32>(&format!("simd/{isa} f32"), Level::Simd, exact_tol::<f32>);
            check_bias::<f64>(&format!("simd/{isa} f64"), Level::Simd, exact_tol::<f64>);
        })
        .unwrap();
    }
}

/// Without `FERROGPT_ISA`, the `simd` level runs the architecture's vector kernel (NEON on
/// aarch64, never an ISA of the other architecture) and is the default training level.
#[test]
fn simd_default_isa_fits_the_architecture() {
    if std::env::var_os("FERROGPT_ISA").is_some() {
        eprintln!("SKIPPED: FERROGPT_ISA is set, the default is not detected");
        return;
    }
    let isa = simd::active_isa().unwrap();
    if cfg!(target_arch = "aarch64") {
        assert_eq!(isa, Isa::Neon);
        assert!(!Isa::Avx512.supported() && !Isa::Avx2.supported());
    } else {
        assert_ne!(isa, Isa::Neon);
        assert!(!Isa::Neon.supported());
    }
    assert_eq!(Level::fastest(), Level::Simd);
}

#[test]
fn library() {
    check_exact(Level::Library);
}

#[test]
fn blas() {
    check_exact(Level::Blas);
    if cfg!(not(feature = "blas")) {
        assert!(matches!(
            Level::Blas.available(),
            Err(GemmError::Unavailable { .. })
        ));
    }
}

#[test]
fn amx_within_bf16_tolerance() {
    if let Err(e) = Level::Amx.available() {
        eprintln!("SKIPPED: level amx is not available here: {e}");
        return;
    }
    // Each input is rounded to bf16 (8 significant bits: relative error ≤ 2⁻⁸), so each
    // product is off by at most about 2⁻⁷ relative; the f32 accumulation adds the usual γ_k.
    let tol = |k| 2f64.powi(-7) * 1.01 + exact_tol::<f32>(k);
    check_level::<f32>("amx f32", Level::Amx, tol);
    check_bias::<f32>("amx f32", Level::Amx, tol);
    let mut c = [0f64; 1];
    let err = matmul(
        Level::Amx,
        false,
        false,
        1,
        1,
        1,
        &[1.0],
        1,
        &[1.0],
        1,
        &mut c,
        1,
        false,
    );
    assert!(
        matches!(err, Err(GemmError::Unavailable { level: "amx", .. })),
        "{err:?}"
    );
}

#[test]
fn amx_bf16_rounding_is_nearest_even() {
    use ferrogpt_gemm::amx::{bf16_to_f32, f32_to_bf16};
    assert_eq!(f32_to_bf16(1.0), 0x3f80);
    // 1 + 2⁻⁸ is halfway between two bf16 values: ties go to the even one (1.0).
    assert_eq!(bf16_to_f32(f32_to_bf16(1.0 + 2f32.powi(-8))), 1.0);
    // 1 + 3·2⁻⁸ is halfway too: the even neighbour is 1 + 2⁻⁶.
    assert_eq!(
        bf16_to_f32(f32_to_bf16(1.0 + 3.0 * 2f32.powi(-8))),
        1.0 + 2f32.powi(-6)
    );
    assert!(bf16_to_f32(f32_to_bf16(f32::NAN)).is_nan());
    assert_eq!(bf16_to_f32(f32_to_bf16(f32::INFINITY)), f32::INFINITY);
}

#[test]
fn levels_parse_and_list_in_ladder_order() {
    let names: Vec<&str> = Level::ALL.iter().map(|l| l.name()).collect();
    assert_eq!(
        names,
        [
            "naive",
            "parallel",
            "blocked",
            "blocked-parallel",
            "simd",
            "library",
            "blas",
            "amx"
        ]
    );
    for &l in Level::ALL {
        assert_eq!(l.name().parse::<Level>(), Ok(l));
        assert!(!l.strategy().is_empty());
    }
    assert!(matches!(
        "fast".parse::<Level>(),
        Err(GemmError::UnknownLevel(_))
    ));
    // The GPU level parses by name, stays out of the default lists, and without a registered
    // engine (ferrogpt-wgpu registers one in the ferrogpt binary) says why it cannot run.
    assert_eq!(Level::OFFLOADED, [Level::Wgpu]);
    assert_eq!("wgpu".parse::<Level>(), Ok(Level::Wgpu));
    assert!(!Level::available_levels().contains(&Level::Wgpu));
    let err = Level::Wgpu.available().unwrap_err().to_string();
    assert!(err.contains("wgpu") && err.contains("registered"), "{err}");
    let unknown = "fast".parse::<Level>().unwrap_err().to_string();
    assert!(unknown.contains("amx, wgpu"), "{unknown}");
    assert!(Level::fastest().available().is_ok());
    assert!(Level::fastest().exact());
}

#[test]
fn shape_errors_are_values() {
    let mut c = [0f32; 3];
    let err = matmul(
        Level::Simd,
        false,
        false,
        2,
        2,
        2,
        &[0.0; 4],
        2,
        &[0.0; 4],
        2,
        &mut c,
        2,
        false,
    );
    assert!(matches!(err, Err(GemmError::Shape(_))), "{err:?}");
    // matmul_bias: a bias of the wrong length, a C too short (every level, no panic).
    for level in [Level::Simd, Level::Naive] {
        for (bias, clen) in [(&[0.0f32; 3][..], 4), (&[0.0f32; 2][..], 3)] {
            let mut c = vec![0f32; clen];
            let err = ferrogpt_gemm::matmul_bias(
                level, false, false, 2, 2, 2, &[0.0; 4], 2, &[0.0; 4], 2, bias, &mut c, 2,
            );
            assert!(matches!(err, Err(GemmError::Shape(_))), "{level} {err:?}");
        }
    }
}

/// Products started from inside rayon tasks, several at once (as the training loop does):
/// the per-thread packing buffers and AMX tile state must not be shared between them.
#[test]
fn concurrent_products_from_rayon_tasks() {
    use rayon::prelude::*;
    for level in [Level::Simd, Level::Amx, Level::Parallel] {
        if level.available().is_err() {
            eprintln!("SKIPPED: concurrent {level}: not available here");
            continue;
        }
        let tol = if level.exact() {
            exact_tol::<f32>(300)
        } else {
            2f64.powi(-7) * 1.01 + exact_tol::<f32>(300)
        };
        (0..8u64).into_par_iter().for_each(|seed| {
            let case = Case {
                m: 70 + seed as usize,
                n: 90,
                k: 300,
                ta: seed % 2 == 1,
                tb: seed % 3 == 0,
                accumulate: seed % 4 == 0,
                pad: 1,
            };
            let o = operands::<f32>(&case, 100 + seed);
            let (want, mag) = oracle(&case, &o);
            let got = product(level, &case, &o).unwrap();
            check(
                &format!("concurrent {level}"),
                &case,
                &o,
                &got,
                &want,
                &mag,
                tol,
            );
        });
    }
}

/// A stored operand of one row never uses its stride, and the contract lets it be anything
/// (0 included). Every level must compute the product: `blas` used to hand such a stride to
/// CBLAS, which refused it with a message on stderr and left C as it was (no error), and
/// `parallel` / `blocked-parallel` panicked on `ldc = 0` with one row.
#[test]
fn one_row_operands_take_any_stride() {
    // (ta, tb, m, n, k): A of one stored row (m = 1, or k = 1 transposed), B of one stored row
    // (k = 1, or n = 1 transposed), C of one row.
    let shapes = [
        (false, false, 1, 5, 3),
        (true, false, 4, 5, 1),
        (false, true, 3, 1, 6),
        (false, false, 1, 1, 1),
    ];
    for (ta, tb, m, n, k) in shapes {
        let a: Vec<f32> = (0..m * k).map(|i| i as f32 * 0.5 - 1.0).collect();
        let b: Vec<f32> = (0..k * n).map(|i| 2.0 - i as f32 * 0.25).collect();
        // The tight strides, and each one-row operand's stride 0 instead.
        let tight = |t: bool, rows: usize, cols: usize| if t { rows } else { cols };
        let (lda, ldb, ldc) = (tight(ta, m, k), tight(tb, k, n), n);
        let one = |t: bool, rows: usize, cols: usize| if t { cols } else { rows } == 1;
        let zero_if = |one_row: bool, ld: usize| if one_row { 0 } else { ld };
        let lda0 = zero_if(one(ta, m, k), lda);
        let ldb0 = zero_if(one(tb, k, n), ldb);
        let ldc0 = zero_if(m == 1, ldc);
        let mut want = vec![0f32; m * n];
        matmul(
            Level::Naive,
            ta,
            tb,
            m,
            n,
            k,
            &a,
            lda,
            &b,
            ldb,
            &mut want,
            ldc,
            false,
        )
        .unwrap();
        for level in Level::available_levels() {
            let mut got = vec![7f32; m * n];
            matmul(
                level, ta, tb, m, n, k, &a, lda0, &b, ldb0, &mut got, ldc0, false,
            )
            .unwrap_or_else(|e| panic!("{level} {ta} {tb} {m}x{n}x{k}: {e}"));
            let tol = if level.exact() { 1e-5 } else { 0.05 };
            for (g, w) in got.iter().zip(&want) {
                assert!(
                    (g - w).abs() <= tol * (1.0 + w.abs()),
                    "{level} {ta} {tb} {m}x{n}x{k}: {got:?}, want {want:?}"
                );
            }
        }
    }
}

/// The hidden per-level entry points (`Element::*_gemm`, `library::*`) are safe functions
/// that take a `Problem` anyone can build: they check it before their unsafe code reads
/// through it (a panic, or the level's error), and the `simd` one checks the ISA.
#[test]
fn hidden_entry_points_check_their_problem() {
    use ferrogpt_gemm::{Element, Problem};
    let a = [1.0f32; 4];
    let bad = Problem {
        m: 64,
        n: 64,
        k: 64,
        a: &a,
        lda: 64,
        ta: false,
        b: &a,
        ldb: 64,
        tb: false,
        ldc: 64,
        accumulate: false,
    };
    let panics = |f: &dyn Fn()| std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).is_err();
    assert!(panics(&|| <f32 as Element>::library_gemm(
        &bad,
        &mut [0.0; 4096]
    )));
    assert!(panics(&|| ferrogpt_gemm::library::gemm_crate(
        &bad,
        &mut [0.0; 4096]
    )));
    assert!(panics(&|| {
        <f32 as Element>::simd_gemm(&bad, &mut [0.0; 4096], Isa::Scalar, None)
    }));
    assert!(<f32 as Element>::blas_gemm(&bad, &mut [0.0; 4096]).is_err());
    assert!(<f32 as Element>::amx_gemm(&bad, &mut [0.0; 4096]).is_err());
    // An ISA this CPU lacks is refused before any of its instructions run.
    let ok = Problem {
        m: 1,
        n: 1,
        k: 1,
        a: &a,
        lda: 1,
        ta: false,
        b: &a,
        ldb: 1,
        tb: false,
        ldc: 1,
        accumulate: false,
    };
    for isa in Isa::ALL.into_iter().filter(|i| !i.supported()) {
        assert!(panics(&|| {
            <f32 as Element>::simd_gemm(&ok, &mut [0.0; 1], isa, None)
        }));
    }
}
