//! Every GPU level against the f64 oracle on fresh random inputs of odd shapes.
//!
//! Where there is no CUDA driver or GPU, each test prints "skipped: no CUDA driver (...)" and
//! passes, unless `FERROGPT_REQUIRE_GPU=1` (set by bench/gpu.sh): then it fails, so a broken
//! driver setup cannot pass silently. On a GPU machine they run for real.

use ferrogpt_cuda::reference::{matmul_f64, max_rel_err, round_bf16, Rng};
use ferrogpt_cuda::{Gpu, Input, Level};

/// Says why a test that needs the GPU did not run; fails instead under
/// `FERROGPT_REQUIRE_GPU=1`.
fn skip(why: impl std::fmt::Display) {
    if std::env::var("FERROGPT_REQUIRE_GPU").is_ok_and(|v| v == "1") {
        panic!("FERROGPT_REQUIRE_GPU=1, but {why}");
    }
    println!("skipped: {why}");
}

fn gpu() -> Option<Gpu> {
    match Gpu::new(0) {
        Ok(g) => Some(g),
        Err(e) => {
            // e reads "no CUDA driver: could not load ..." or "no CUDA device 0: ...".
            skip(e);
            None
        }
    }
}

/// Odd shapes (1, 7, 33, 127, 513, non-square) hit the `_edge` kernels; the tile multiples hit
/// the fast ones.
const SHAPES: [(usize, usize, usize); 14] = [
    (1, 1, 1),
    (7, 7, 7),
    (33, 33, 33),
    (127, 127, 127),
    (513, 513, 513),
    (7, 33, 127),
    (127, 1, 513),
    (33, 513, 7),
    (1, 300, 45),
    (128, 128, 128),
    (256, 384, 160),
    (512, 256, 1024),
    (256, 512, 96),
    (256, 512, 256),
];

fn check_level(gpu: &Gpu, level: Level, seed: u64) {
    if let Err(e) = gpu.supports(level) {
        println!("skipped: {e}");
        return;
    }
    let mut rng = Rng::new(seed);
    for &(m, n, k) in &SHAPES {
        let (a, b) = (rng.vec(m * k), rng.vec(k * n));
        let c = gpu
            .matmul_host(level, m, n, k, &a, &b)
            .unwrap_or_else(|e| panic!("{} {m}x{n}x{k}: {e}", level.name()));
        // The oracle sees the inputs the level reads: bf16-rounded for bf16 levels.
        let (ra, rb): (Vec<f32>, Vec<f32>) = match level.input() {
            Input::F32 => (a.clone(), b.clone()),
            Input::Bf16 => (
                a.iter().map(|&x| round_bf16(x)).collect(),
                b.iter().map(|&x| round_bf16(x)).collect(),
            ),
        };
        let exact = matmul_f64(m, n, k, &ra, &rb);
        let err = max_rel_err(c.iter().copied().zip(exact.iter().copied()));
        println!(
            "{:<17} {m:>4}x{n:>4}x{k:>4}  max rel err {err:.2e}",
            level.name()
        );
        assert!(
            err <= level.tolerance(),
            "{} {m}x{n}x{k}: max rel err {err:e} > {:e}",
            level.name(),
            level.tolerance()
        );
        if level.input() == Input::Bf16 {
            // Against the unrounded f32 inputs, only bf16's 8-bit mantissa separates them.
            let truth = matmul_f64(m, n, k, &a, &b);
            let err = max_rel_err(c.iter().copied().zip(truth.iter().copied()));
            assert!(
                err <= 2e-2,
                "{} {m}x{n}x{k}: vs f32 inputs {err:e}",
                level.name()
            );
        }
    }
}

macro_rules! level_tests {
    ($($name:ident => $level:expr),* $(,)?) => {$(
        #[test]
        fn $name() {
            let Some(gpu) = gpu() else { return };
            check_level(&gpu, $level, 0x1234 ^ $level as u64);
        }
    )*};
}

level_tests! {
    naive => Level::Naive,
    coalesced => Level::Coalesced,
    smem_tiled => Level::SharedTiled,
    blocktile_1d => Level::Blocktile1d,
    blocktile_2d => Level::Blocktile2d,
    vectorized => Level::Vectorized,
    warptile => Level::Warptile,
    warptile_db => Level::WarptileDb,
    tensor_core_bf16 => Level::TensorCore,
    tensor_core_tuned => Level::TensorCoreTuned,
    tensor_core_wgmma => Level::TensorCoreWgmma,
    cublas_f32 => Level::CublasF32,
    cublas_tf32 => Level::CublasTf32,
    cublas_bf16 => Level::CublasBf16,
}

/// Without a driver every entry point answers an error, never a panic; with one, a GPU index
/// that does not exist is an error too.
#[test]
fn missing_device_is_an_error() {
    let err = Gpu::new(4096).err().expect("there is no GPU 4096");
    let msg = err.to_string();
    assert!(msg.contains("no CUDA"), "unclear error: {msg}");
    println!("Gpu::new(4096): {msg}");
    match Gpu::device_count() {
        Ok(n) => println!("{n} CUDA device(s)"),
        Err(e) => skip(e),
    }
}

#[test]
fn level_names_round_trip() {
    for l in Level::ALL {
        assert_eq!(Level::from_name(l.name()).unwrap(), l);
    }
    assert!(Level::from_name("nope").is_err());
    assert_eq!(ferrogpt_cuda::parse_device("cuda").unwrap(), 0);
    assert_eq!(ferrogpt_cuda::parse_device("cuda:3").unwrap(), 3);
    assert!(ferrogpt_cuda::parse_device("gpu").is_err());
}

/// Bad shapes and operand types are errors, not panics (needs a GPU to reach the checks).
#[test]
fn bad_arguments_are_errors() {
    let Some(gpu) = gpu() else { return };
    assert!(gpu
        .matmul_host(Level::Warptile, 2, 2, 2, &[0.0; 3], &[0.0; 4])
        .is_err());
    assert!(gpu
        .matmul_host(Level::Warptile, 0, 2, 2, &[], &[0.0; 4])
        .is_err());
    let a = gpu.upload(&[1.0; 4]).unwrap();
    let mut c = gpu.zeros(4).unwrap();
    let r = gpu.matmul(
        Level::TensorCore,
        2,
        2,
        2,
        ferrogpt_cuda::Operand::F32(&a),
        ferrogpt_cuda::Operand::F32(&a),
        &mut c,
    );
    assert!(r.is_err());
}

/// Every tile of the tuned tensor-core rung, not only the default one.
#[test]
fn tensor_core_tuned_every_tile() {
    let Some(gpu) = gpu() else { return };
    for ferrogpt_cuda::TcTile { name, .. } in ferrogpt_cuda::TC_TUNED_VARIANTS {
        // Another test running tensor-core-tuned meanwhile may see this tile too: every tile
        // must pass, so that is harmless.
        std::env::set_var("FERROGPT_TC_TILE", name);
        println!("tile {name}");
        check_level(&gpu, Level::TensorCoreTuned, 0xbf16);
    }
    std::env::remove_var("FERROGPT_TC_TILE");
}
