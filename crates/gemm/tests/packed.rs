//! `PackedB` + `matmul_packed` against the same level's `matmul` / `matmul_bias` on every case
//! of the ladder tests (odd shapes, every transpose, accumulate and overwrite, padded strides):
//! the packed path runs the same kernel on the same packed data, so C must match bit for bit
//! (and the level itself is checked against the oracle in ladder.rs).

mod common;

use common::*;
use ferrogpt_gemm::{
    matmul, matmul_bias, matmul_packed, simd, Element, GemmError, Isa, Level, PackedB,
};

fn check_packed<T: Element>(what: &str, level: Level) {
    for (seed, case) in cases().iter().enumerate() {
        let o = operands::<T>(case, seed as u64 + 7);
        let pb = PackedB::new(level, case.tb, case.k, case.n, &o.b, o.ldb)
            .unwrap_or_else(|e| panic!("{what} {case:?}: {e}"))
            .expect("simd and amx have a packed form");
        assert_eq!((pb.k(), pb.n(), pb.level()), (case.k, case.n, level));
        let mut want = o.c0.clone();
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
            &mut want,
            o.ldc,
            case.accumulate,
        )
        .unwrap();
        let mut got = o.c0.clone();
        matmul_packed(
            case.ta,
            case.m,
            &o.a,
            o.lda,
            &pb,
            &mut got,
            o.ldc,
            case.accumulate,
            None,
        )
        .unwrap_or_else(|e| panic!("{what} {case:?}: {e}"));
        assert!(
            got.iter()
                .zip(&want)
                .all(|(g, w)| g.to_f64().to_bits() == w.to_f64().to_bits()),
            "{what} {case:?}: packed and unpacked products differ"
        );
        if !case.accumulate {
            let bias: Vec<T> = Rng::new(seed as u64 + 99).fill(case.n);
            let mut want = o.c0.clone();
            matmul_bias(
                level, case.ta, case.tb, case.m, case.n, case.k, &o.a, o.lda, &o.b, o.ldb, &bias,
                &mut want, o.ldc,
            )
            .unwrap();
            let mut got = o.c0.clone();
            matmul_packed(
                case.ta,
                case.m,
                &o.a,
                o.lda,
                &pb,
                &mut got,
                o.ldc,
                false,
                Some(&bias),
            )
            .unwrap();
            assert!(
                got.iter()
                    .zip(&want)
                    .all(|(g, w)| g.to_f64().to_bits() == w.to_f64().to_bits()),
                "{what} {case:?}: packed and unpacked products with a bias differ"
            );
        }
    }
}

#[test]
fn simd_packed_matches_unpacked_on_every_isa() {
    for isa in Isa::ALL {
        if !isa.supported() {
            eprintln!("SKIPPED: simd with {isa}: this CPU lacks it");
            continue;
        }
        simd::with_isa(isa, || {
            check_packed::<f32>(&format!("simd/{isa} f32"), Level::Simd);
            check_packed::<f64>(&format!("simd/{isa} f64"), Level::Simd);
        })
        .unwrap();
    }
}

#[test]
fn amx_packed_matches_unpacked() {
    if let Err(e) = Level::Amx.available() {
        eprintln!("SKIPPED: amx is not available here: {e}");
        return;
    }
    check_packed::<f32>("amx f32", Level::Amx);
    let e = PackedB::<f64>::new(Level::Amx, false, 4, 4, &[0.0; 16], 4).err();
    assert!(matches!(e, Some(GemmError::Unavailable { .. })), "{e:?}");
}

#[test]
fn levels_that_read_b_in_place_have_no_packed_form() {
    let b = vec![1.0f32; 12];
    for &level in Level::ALL {
        if matches!(level, Level::Simd | Level::Amx) || level.available().is_err() {
            continue;
        }
        assert!(
            PackedB::new(level, false, 3, 4, &b, 4).unwrap().is_none(),
            "{level}"
        );
    }
}

#[test]
fn packed_errors_are_values() {
    if Level::Simd.available().is_err() {
        eprintln!("SKIPPED: simd is not available here");
        return;
    }
    // B too short for its stated shape.
    let e = PackedB::new(Level::Simd, false, 3, 4, &[0.0f32; 11], 4).err();
    assert!(matches!(e, Some(GemmError::Shape(_))), "{e:?}");
    let pb = PackedB::new(Level::Simd, false, 3, 4, &[1.0f32; 12], 4)
        .unwrap()
        .unwrap();
    let a = [1.0f32; 6];
    let mut c = [0.0f32; 8];
    // A bias of the wrong length, or with accumulate.
    let e = matmul_packed(false, 2, &a, 3, &pb, &mut c, 4, false, Some(&[0.0; 3]));
    assert!(matches!(e, Err(GemmError::Shape(_))), "{e:?}");
    let e = matmul_packed(false, 2, &a, 3, &pb, &mut c, 4, true, Some(&[0.0; 4]));
    assert!(matches!(e, Err(GemmError::Shape(_))), "{e:?}");
    // C too short.
    let e = matmul_packed(false, 2, &a, 3, &pb, &mut c[..7], 4, false, None);
    assert!(matches!(e, Err(GemmError::Shape(_))), "{e:?}");
    // Used with another ISA than the one it was packed for.
    let other = Isa::ALL
        .into_iter()
        .find(|&i| i.supported() && Ok(i) != simd::active_isa());
    if let Some(isa) = other {
        let e = simd::with_isa(isa, || {
            matmul_packed(false, 2, &a, 3, &pb, &mut c, 4, false, None)
        })
        .unwrap();
        assert!(matches!(e, Err(GemmError::Unavailable { .. })), "{e:?}");
    }
    // k = 0: C zeroed (overwrite) like matmul.
    let empty = PackedB::new(Level::Simd, false, 0, 4, &[0.0f32; 0], 4)
        .unwrap()
        .unwrap();
    let mut c = [5.0f32; 8];
    matmul_packed(false, 2, &[], 0, &empty, &mut c, 4, false, None).unwrap();
    assert_eq!(c, [0.0; 8]);
}
