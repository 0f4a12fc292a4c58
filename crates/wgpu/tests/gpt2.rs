//! The GPT-2 forward pass on wgpu (`ferrogpt_wgpu::gpt2`, `ferrogpt_wgpu::engine`) against the
//! CPU's: the tape's forward pass in f64 (the oracle) on small random models of odd sizes.
//!
//! Tolerance: max |logit − logit_ref| / max |logit_ref| ≤ 1e-4 (f32 throughout on the GPU,
//! sums in another order; seen on lavapipe: ≤ 2e-6). Skipped without an adapter unless
//! `FERROGPT_REQUIRE_WGPU=1`.

use ferrogpt_core::{Level, Tape};
use ferrogpt_model::config::{Family, Position};
use ferrogpt_model::{Gpt, GptConfig};
use ferrogpt_train::{Engine, EngineInit};
use ferrogpt_wgpu::engine::WgpuEngine;
use ferrogpt_wgpu::gpt2::{Gpt2, HeadRows};
use ferrogpt_wgpu::reference::max_rel_err;
use ferrogpt_wgpu::Gpu;
use rand::{Rng, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;

const TOL: f64 = 1e-4;

fn required() -> bool {
    std::env::var("FERROGPT_REQUIRE_WGPU").as_deref() == Ok("1")
}

fn gpu() -> Option<Gpu> {
    match Gpu::new(0) {
        Ok(g) => Some(g),
        Err(e) if required() => panic!("FERROGPT_REQUIRE_WGPU=1, but: {e}"),
        Err(e) => {
            println!("skipped: {e}");
            None
        }
    }
}

/// A GPT-2 of odd sizes (3 layers, 5 heads of 12, vocabulary 71 padded to 80, block 41) with
/// GPT-2's initialisation plus noise on every parameter, so that the norms' weights and biases
/// are not 1 and 0 and the logits are not all near zero.
fn model(seed: u64) -> (Gpt, Vec<f32>) {
    let cfg = GptConfig {
        n_layer: 3,
        n_head: 5,
        n_embd: 60,
        block_size: 41,
        vocab_size: 71,
        padded_vocab_size: 80,
        ..GptConfig::default()
    };
    let model = Gpt::new(cfg).unwrap();
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
    let mut params: Vec<f32> = model.layout.init(&model.config, &mut rng);
    for p in params.iter_mut() {
        *p += rng.gen_range(-0.1f32..0.1);
    }
    (model, params)
}

/// The oracle: every position's logits (T × V, padding dropped) from the tape in f64.
fn cpu_logits(model: &Gpt, params: &[f32], tokens: &[u32]) -> Vec<f64> {
    let p64: Vec<f64> = params.iter().map(|&x| x as f64).collect();
    let mut tape = Tape::<f64>::new(Level::Naive).unwrap();
    tape.reset(false);
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(0);
    let logits = model
        .forward(&mut tape, &p64, tokens, tokens.len(), false, &mut rng)
        .unwrap();
    let (vp, v) = (model.config.padded_vocab_size, model.config.vocab_size);
    tape.value(logits)
        .chunks_exact(vp)
        .flat_map(|row| row[..v].to_vec())
        .collect()
}

fn tokens(seed: u64, n: usize, v: usize) -> Vec<u32> {
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
    (0..n).map(|_| rng.gen_range(0..v as u32)).collect()
}

fn compare(what: &str, got: &[f32], want: &[f64]) {
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    let err = max_rel_err(got.iter().copied().zip(want.iter().copied()));
    println!("{what}: max rel err {err:.2e}");
    assert!(err <= TOL, "{what}: max rel err {err:e} > {TOL:e}");
}

#[test]
fn every_position_matches_the_cpu() {
    let Some(gpu) = gpu() else { return };
    let (model, params) = model(1);
    let mut g = Gpt2::new(gpu, &model.config, &model.layout, &params).unwrap();
    for (seed, n) in [(2, 1), (3, 7), (4, 41)] {
        let toks = tokens(seed, n, 71);
        let got = g.forward(&toks, 0, HeadRows::All).unwrap();
        compare(
            &format!("{n} positions"),
            &got,
            &cpu_logits(&model, &params, &toks),
        );
    }
}

#[test]
fn decoding_with_the_cache_matches_the_full_forward() {
    let Some(gpu) = gpu() else { return };
    let (model, params) = model(5);
    let mut g = Gpt2::new(gpu, &model.config, &model.layout, &params).unwrap();
    let toks = tokens(6, 41, 71);
    let want = cpu_logits(&model, &params, &toks);
    let v = 71;
    // Prefill 13 positions, then one position a call (the rest of the block), then 3 at once.
    let got = g.forward(&toks[..13], 0, HeadRows::Last).unwrap();
    compare("prefill 13", &got, &want[12 * v..13 * v]);
    for i in 13..38 {
        let got = g.forward(&toks[i..i + 1], i, HeadRows::Last).unwrap();
        compare(&format!("decode {i}"), &got, &want[i * v..(i + 1) * v]);
    }
    let got = g.forward(&toks[38..41], 38, HeadRows::All).unwrap();
    compare("3 rows at 38", &got, &want[38 * v..41 * v]);
    // Past the block size: an error, not a panic.
    assert!(g.forward(&toks[..2], 40, HeadRows::Last).is_err());
    assert!(g.forward(&[71], 0, HeadRows::Last).is_err());
}

#[test]
fn the_vocabulary_split_across_buffers_gives_the_same_logits() {
    let Some(gpu) = gpu() else { return };
    let (model, params) = model(7);
    // Buffers of at most 1500 values: the 80×60 embedding in 25-row chunks, the head's
    // logits in slices of the vocabulary.
    let mut g = Gpt2::with_max_elements(gpu, &model.config, &model.layout, &params, 1500).unwrap();
    let toks = tokens(8, 33, 71);
    let want = cpu_logits(&model, &params, &toks);
    let got = g.forward(&toks, 0, HeadRows::All).unwrap();
    compare("split vocabulary", &got, &want);
    // A few rows (head_rows.wgsl) over the same slices.
    let got = g.forward(&toks[..5], 0, HeadRows::Last).unwrap();
    compare("split vocabulary, last row", &got, &want[4 * 71..5 * 71]);
    let got = g.forward(&toks[5..8], 5, HeadRows::All).unwrap();
    compare("split vocabulary, 3 rows", &got, &want[5 * 71..8 * 71]);
}

#[test]
fn the_engine_samples_and_scores_like_the_cpu() {
    if gpu().is_none() {
        return;
    }
    let (model, params) = model(9);
    let init = || EngineInit {
        model: &model,
        params: params.clone(),
        train: None,
    };
    let mut gpu = WgpuEngine::new(init(), 0).unwrap();
    let mut cpu = ferrogpt_train::CpuEngine::new(init(), Level::Naive).unwrap();
    println!("{}", gpu.describe());
    // A growing window (the cache reused), then one that slides (recomputed from position 0).
    let toks = tokens(10, 60, 71);
    for (start, end) in [(0, 5), (0, 6), (0, 7), (0, 41), (19, 60), (3, 9)] {
        let w = &toks[start..end];
        let got = gpu.last_logits(w, w.len()).unwrap();
        let want = cpu.last_logits(w, w.len()).unwrap();
        let want: Vec<f64> = want.iter().map(|&x| x as f64).collect();
        compare(&format!("window {start}..{end}"), &got, &want);
    }
    // Mean losses of two (B = 2, T = 17) batches.
    let batches: Vec<(Vec<u32>, Vec<u32>)> = (0..2)
        .map(|b| (tokens(20 + b, 34, 71), tokens(30 + b, 34, 71)))
        .collect();
    let got = gpu.losses(&batches, 17).unwrap();
    let want = cpu.losses(&batches, 17).unwrap();
    for (g, w) in got.iter().zip(&want) {
        assert!((g - w).abs() <= 1e-4 * w.abs(), "loss {g} vs {w}");
    }
    // Inference only: training asks get an error.
    assert!(gpu
        .zero_grads()
        .unwrap_err()
        .to_string()
        .contains("inference only"));
    let train_cfg = ferrogpt_train::config::TrainConfig::default();
    let train = ferrogpt_train::TrainInit::fresh(&train_cfg, model.layout.total);
    let err = WgpuEngine::new(
        EngineInit {
            model: &model,
            params: params.clone(),
            train: Some(train),
        },
        0,
    )
    .err()
    .unwrap();
    assert!(err.to_string().contains("inference only"), "{err}");
}

#[test]
fn other_models_are_refused_in_one_line() {
    let Some(gpu) = gpu() else { return };
    let cfg = GptConfig {
        n_layer: 1,
        n_head: 2,
        n_embd: 16,
        block_size: 8,
        vocab_size: 10,
        padded_vocab_size: 16,
        family: Family::Gpt2,
        pos: Position::Rope,
        ..GptConfig::default()
    };
    let model = Gpt::new(cfg).unwrap();
    let params = vec![0.0; model.layout.total];
    let err = Gpt2::new(gpu, &model.config, &model.layout, &params)
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("learned positions") && !err.contains('\n'),
        "{err}"
    );
}
