//! The oracle's own pieces, on the CPU (run everywhere).

use ferrogpt_cuda::reference::{bf16_bits, matmul_f64, max_rel_err, round_bf16, Rng};

#[test]
fn bf16_rounding_is_nearest_even() {
    assert_eq!(bf16_bits(1.0), 0x3f80);
    // 1 + 2^-8 is halfway between 1 and 1 + 2^-7: ties to even (1.0).
    assert_eq!(round_bf16(1.0 + 1.0 / 256.0), 1.0);
    // 1 + 3·2^-8 is halfway between 1 + 2^-7 and 1 + 2^-6: ties to even (1 + 2^-6).
    assert_eq!(round_bf16(1.0 + 3.0 / 256.0), 1.0 + 1.0 / 64.0);
    assert!(round_bf16(f32::NAN).is_nan());
    let mut rng = Rng::new(7);
    for _ in 0..1000 {
        let x = rng.next_f32();
        assert!(((round_bf16(x) - x) / x).abs() <= 1.0 / 256.0);
    }
}

#[test]
fn f64_reference_and_error_measure() {
    // [1 2; 3 4] · [5 6; 7 8] = [19 22; 43 50]
    let c = matmul_f64(2, 2, 2, &[1.0, 2.0, 3.0, 4.0], &[5.0, 6.0, 7.0, 8.0]);
    assert_eq!(c, vec![19.0, 22.0, 43.0, 50.0]);
    assert_eq!(max_rel_err([(19.0f32, 19.0), (45.0, 50.0)]), 5.0 / 50.0);
    assert!(max_rel_err([(f32::NAN, 1.0)]).is_infinite());
}

/// Every kernel compiles with NVRTC (which needs no GPU); skipped where NVRTC is absent.
/// `FERROGPT_PTX_DIR=dir` also writes the PTX there, to read the instructions NVRTC chose.
#[test]
fn kernels_compile_with_nvrtc() {
    match ferrogpt_cuda::compile_kernels((9, 0)) {
        Err(ferrogpt_cuda::CudaError::NoLibrary { library }) => {
            // A GPU run (bench/gpu.sh sets FERROGPT_REQUIRE_GPU=1) must have NVRTC.
            let required = std::env::var("FERROGPT_REQUIRE_GPU").is_ok_and(|v| v == "1");
            assert!(
                !required,
                "FERROGPT_REQUIRE_GPU=1, but NVRTC could not be loaded ({library})"
            );
            println!("skipped: no CUDA driver: could not load {library}")
        }
        Err(e) => panic!("{e}"),
        Ok(ptx) => {
            for (file, src) in &ptx {
                assert!(src.contains(".entry"), "{file}: no kernel in the PTX");
                if let Ok(dir) = std::env::var("FERROGPT_PTX_DIR") {
                    std::fs::write(format!("{dir}/{file}.ptx"), src).unwrap();
                }
            }
            println!("{} kernel files compiled for compute_90", ptx.len());
        }
    }
}

/// The table and JSON of `bench gpu`, from made-up rows (no GPU needed).
#[test]
fn bench_table_and_json() {
    use ferrogpt_cuda::bench::{json, table, BenchRow};
    use ferrogpt_cuda::Level;
    let row = |level, seconds: Option<f64>, skipped: Option<&str>| BenchRow {
        level,
        size: 4096,
        seconds,
        reps: 10,
        tflops: seconds.map(|t| 2.0 * 4096f64.powi(3) / t / 1e12),
        pct_cublas_f32: seconds.map(|_| 88.0),
        pct_cublas_bf16: None,
        max_rel_err: seconds.map(|_| 1.3e-6),
        skipped: skipped.map(String::from),
    };
    let rows = [
        row(Level::WarptileDb, Some(3.061e-3), None),
        row(Level::Naive, None, Some("about 2 s a run")),
    ];
    let t = table("Test GPU", &rows);
    assert!(
        t.contains("warptile-db")
            && t.contains("3.061")
            && t.contains("44.9")
            && t.contains("88.0%")
    );
    assert!(t.contains("skipped: about 2 s a run"));
    let j = json("Test GPU", &rows);
    assert!(
        j.starts_with('[')
            && j.contains("\"level\": \"warptile-db\"")
            && j.contains("\"seconds\": null")
    );
    assert!(j.contains("\"skipped\": \"about 2 s a run\""));
}
