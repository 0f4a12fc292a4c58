//! Every wgpu level against the f64 oracle on fresh random inputs of odd shapes.
//!
//! Without an adapter each test prints "skipped: no wgpu adapter (...)" and passes. With
//! `FERROGPT_REQUIRE_WGPU=1` (set by `.ci/run`, which installs Mesa's software Vulkan driver,
//! lavapipe) a missing adapter, or one without shader-f16, fails the tests instead: CI must
//! really run them.

use ferrogpt_wgpu::reference::{matmul_f64, max_rel_err, random, round_f16};
use ferrogpt_wgpu::{adapters, bench, render_text, Gpu, Input, Level, WgpuError};

fn required() -> bool {
    std::env::var("FERROGPT_REQUIRE_WGPU").as_deref() == Ok("1")
}

fn gpu() -> Option<Gpu> {
    match Gpu::new(0) {
        Ok(g) => {
            println!("adapter: {}", g.name());
            Some(g)
        }
        Err(e) if required() => panic!("FERROGPT_REQUIRE_WGPU=1, but: {e}"),
        Err(e) => {
            println!("skipped: {e}");
            None
        }
    }
}

/// Odd shapes (1, 7, 33, 127, 513, non-square) hit every edge path, the tile multiples and the
/// multiples of 4 the whole-tile and whole-vec4 paths. (m, n, k).
const SHAPES: [(usize, usize, usize); 16] = [
    (1, 1, 1),
    (7, 7, 7),
    (33, 33, 33),
    (127, 127, 127),
    (513, 513, 513),
    (33, 127, 65),
    (7, 33, 127),
    (127, 1, 513),
    (33, 513, 7),
    (1, 300, 45),
    (4, 8, 12),
    (64, 130, 64),
    (130, 64, 68),
    (128, 128, 128),
    (256, 384, 160),
    (256, 512, 96),
];

fn check_level(gpu: &Gpu, level: Level, seed: u64) {
    if let Err(e) = gpu.supports(level) {
        assert!(!required(), "FERROGPT_REQUIRE_WGPU=1, but: {e}");
        println!("skipped: {e}");
        return;
    }
    for (s, &(m, n, k)) in SHAPES.iter().enumerate() {
        let seed = seed ^ ((s as u64) << 32);
        let (a, b) = (random(seed, m * k), random(seed + 1, k * n));
        let c = gpu
            .matmul_host(level, m, n, k, &a, &b)
            .unwrap_or_else(|e| panic!("{} {m}x{n}x{k}: {e}", level.name()));
        // The oracle sees the inputs the level reads: f16-rounded for the f16 level.
        let (ra, rb): (Vec<f32>, Vec<f32>) = match level.input() {
            Input::F32 => (a.clone(), b.clone()),
            Input::F16 => (
                a.iter().map(|&x| round_f16(x)).collect(),
                b.iter().map(|&x| round_f16(x)).collect(),
            ),
        };
        let exact = matmul_f64(m, n, k, &ra, &rb);
        let err = max_rel_err(c.iter().copied().zip(exact.iter().copied()));
        let truth = matmul_f64(m, n, k, &a, &b);
        let err_f32 = max_rel_err(c.iter().copied().zip(truth.iter().copied()));
        println!(
            "{:<13} {m:>4}x{n:>4}x{k:>4}  max rel err {err:.2e} (vs the f32 inputs {err_f32:.2e})",
            level.name()
        );
        assert!(
            err <= level.tolerance(),
            "{} {m}x{n}x{k}: max rel err {err:e} > {:e}",
            level.name(),
            level.tolerance()
        );
        assert!(
            err_f32 <= level.tolerance_vs_f32_inputs(),
            "{} {m}x{n}x{k}: max rel err vs f32 inputs {err_f32:e} > {:e}",
            level.name(),
            level.tolerance_vs_f32_inputs()
        );
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
    blocktile_2d => Level::Blocktile2d,
    vectorized => Level::Vectorized,
    f16 => Level::F16,
}

/// The macro above stamps one test per level; this fails when a level is added without one.
#[test]
fn every_level_has_a_test() {
    assert_eq!(Level::ALL.len(), 6);
}

/// Without an adapter every entry point answers an error, never a panic; with adapters, an
/// index past the list is an error too. Either way the message says "no wgpu adapter".
#[test]
fn missing_adapter_is_an_error() {
    let err = Gpu::new(4096).err().expect("there is no adapter 4096");
    let msg = err.to_string();
    assert!(msg.starts_with("no wgpu adapter"), "unclear error: {msg}");
    println!("Gpu::new(4096): {msg}");
    let list = adapters();
    let text = render_text(&list);
    print!("{text}");
    if list.is_empty() {
        assert!(
            !required(),
            "FERROGPT_REQUIRE_WGPU=1, but no adapter is listed"
        );
        assert_eq!(text.trim(), "wgpu         no wgpu adapter");
    } else {
        assert!(text.contains("wgpu 0") && text.contains(&list[0].name));
        assert!(list[0].limits.max_compute_invocations_per_workgroup >= 256);
    }
}

#[test]
fn level_names_round_trip() {
    for l in Level::ALL {
        assert_eq!(Level::from_name(l.name()).unwrap(), l);
    }
    assert!(matches!(
        Level::from_name("nope"),
        Err(WgpuError::UnknownLevel(..))
    ));
    assert_eq!(ferrogpt_wgpu::parse_device("wgpu").unwrap(), 0);
    assert_eq!(ferrogpt_wgpu::parse_device("wgpu:2").unwrap(), 2);
    assert!(ferrogpt_wgpu::parse_device("cuda").is_err());
}

/// Bad shapes and operand types are errors, not panics (needs an adapter to reach the checks).
#[test]
fn bad_arguments_are_errors() {
    let Some(gpu) = gpu() else { return };
    let shape = |r: Result<Vec<f32>, WgpuError>| matches!(r, Err(WgpuError::Shape(_)));
    assert!(shape(gpu.matmul_host(
        Level::Vectorized,
        2,
        2,
        2,
        &[0.0; 3],
        &[0.0; 4]
    )));
    assert!(shape(gpu.matmul_host(
        Level::Naive,
        0,
        2,
        2,
        &[],
        &[0.0; 4]
    )));
    let a = gpu.upload(&[1.0; 4]).unwrap();
    let mut c = gpu.zeros(4).unwrap();
    if gpu.supports(Level::F16).is_ok() {
        // f32 buffers handed to the f16 level.
        let r = gpu.matmul(Level::F16, 2, 2, 2, &a, &a, &mut c);
        assert!(matches!(r, Err(WgpuError::Shape(_))), "{r:?}");
    }
    // C of the wrong length.
    let mut short = gpu.zeros(3).unwrap();
    let r = gpu.matmul(Level::Naive, 2, 2, 2, &a, &a, &mut short);
    assert!(matches!(r, Err(WgpuError::Shape(_))), "{r:?}");
    // And the device still works afterwards.
    gpu.matmul(Level::Naive, 2, 2, 2, &a, &a, &mut c).unwrap();
    assert_eq!(gpu.download(&c).unwrap(), vec![2.0; 4]);
}

/// The benchmark runs every level, checks it and renders all three formats.
#[test]
fn a_small_benchmark_runs() {
    let Some(gpu) = gpu() else { return };
    let rows = bench::run(&gpu, &[33, 64], &[], |_| {}).unwrap();
    assert_eq!(rows.len(), 2 * Level::ALL.len());
    for r in &rows {
        if r.skipped.is_some() {
            assert!(r.level == Level::F16 && gpu.supports(Level::F16).is_err());
            continue;
        }
        let err = r.max_rel_err.unwrap();
        assert!(
            err <= r.level.tolerance_vs_f32_inputs(),
            "{} {}: {err:e}",
            r.level.name(),
            r.size
        );
        assert!(r.gflops.unwrap() > 0.0 && r.reps >= 3);
    }
    let (name, clock) = (gpu.name(), gpu.clock());
    let table = bench::render_table(&name, clock, &rows);
    print!("{table}");
    assert!(table.contains("vectorized") && table.contains("GFLOPS"));
    let json = bench::render_json(&name, clock, &rows);
    assert!(json.starts_with('[') && json.contains("\"max_rel_err\""));
    assert_eq!(
        bench::render_csv(&name, clock, &rows).lines().count(),
        rows.len() + 1
    );
}
