//! Multiple-choice evaluation (llm.c's HellaSwag file): the file read back as written, bad
//! files named, per-token losses against the mean loss of single rows and against last_logits,
//! and the accuracy against a plain scorer built on last_logits.

mod common;

use ferrogpt_core::Level;
use ferrogpt_model::Gpt;
use ferrogpt_train::config::{preset, TrainConfig};
use ferrogpt_train::mc_eval::{self, McExample};
use ferrogpt_train::{CpuEngine, Engine, EngineInit};
use rand::{Rng, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus as Rng64;

const V: usize = 29;

fn model() -> (Gpt, Box<dyn Engine>) {
    let cfg = TrainConfig {
        n_layer: 2,
        n_head: 2,
        n_embd: 16,
        block_size: 12,
        seq_len: 12,
        ..preset("shakespeare-cpu").unwrap()
    };
    let model = Gpt::new(cfg.model_config(V)).unwrap();
    // Weights large enough that the completions' scores differ clearly.
    let mut rng = Rng64::seed_from_u64(11);
    let init: Vec<f32> = model.layout.init(&model.config, &mut rng);
    let params: Vec<f32> = init.iter().map(|x| x * 8.0).collect();
    let engine = CpuEngine::factory(Level::fastest())(EngineInit {
        model: &model,
        params,
        train: None,
    })
    .unwrap();
    (model, engine)
}

fn examples(n: usize, seed: u64) -> Vec<McExample> {
    let mut rng = Rng64::seed_from_u64(seed);
    let mut ids =
        |len: usize| -> Vec<u32> { (0..len).map(|_| rng.gen_range(0..V as u32)).collect() };
    (0..n)
        .map(|i| {
            let context = ids(1 + i % 5);
            let completions = (0..4).map(|c| ids(1 + (i + c) % 6)).collect();
            McExample {
                label: i % 4,
                context,
                completions,
            }
        })
        .collect()
}

/// The plain scorer: each completion token's loss from last_logits over its prefix.
fn plain_pick(engine: &mut dyn Engine, e: &McExample) -> usize {
    let mut best = (f64::INFINITY, 0);
    for (c, comp) in e.completions.iter().enumerate() {
        let mut sum = 0.0;
        for (j, &tok) in comp.iter().enumerate() {
            let prefix: Vec<u32> = e.context.iter().chain(&comp[..j]).copied().collect();
            let logits = engine.last_logits(&prefix, prefix.len()).unwrap();
            let mx = logits.iter().fold(f32::NEG_INFINITY, |m, &x| m.max(x)) as f64;
            let lse = mx
                + logits
                    .iter()
                    .map(|&x| (x as f64 - mx).exp())
                    .sum::<f64>()
                    .ln();
            sum += lse - logits[tok as usize] as f64;
        }
        let mean = sum / comp.len() as f64;
        if mean < best.0 {
            best = (mean, c);
        }
    }
    best.1
}

#[test]
fn the_file_reads_back_as_written() {
    let dir = common::tmp_dir("mc-roundtrip");
    let path = dir.join("eval.bin");
    let ex = examples(9, 1);
    mc_eval::write(&path, &ex).unwrap();
    assert_eq!(mc_eval::read(&path).unwrap(), ex);
    let bytes = std::fs::read(&path).unwrap();
    assert_eq!(&bytes[..4], &20240522i32.to_le_bytes());
    // Truncated, another magic, a label beyond the completions: errors naming the file.
    std::fs::write(&path, &bytes[..bytes.len() - 3]).unwrap();
    let e = mc_eval::read(&path).unwrap_err().to_string();
    assert!(e.contains("eval.bin") && e.contains("example 8"), "{e}");
    let mut b = bytes.clone();
    b[0] ^= 1;
    std::fs::write(&path, &b).unwrap();
    assert!(mc_eval::read(&path)
        .unwrap_err()
        .to_string()
        .contains("magic"));
    let mut bad = ex.clone();
    bad[0].label = 7;
    mc_eval::write(&path, &bad).unwrap();
    assert!(mc_eval::read(&path)
        .unwrap_err()
        .to_string()
        .contains("label"));
}

#[test]
fn token_losses_average_to_the_batch_loss() {
    let (_, mut engine) = model();
    let (b, t) = (3, 10);
    let mut rng = Rng64::seed_from_u64(5);
    let x: Vec<u32> = (0..b * t).map(|_| rng.gen_range(0..V as u32)).collect();
    let y: Vec<u32> = (0..b * t).map(|_| rng.gen_range(0..V as u32)).collect();
    let per = engine.token_losses(&x, &y, t).unwrap();
    assert_eq!(per.len(), b * t);
    let mean = per.iter().map(|&l| l as f64).sum::<f64>() / per.len() as f64;
    let whole = engine.losses(&[(x, y)], t).unwrap()[0];
    assert!(
        (mean - whole).abs() < 1e-4 * whole.abs(),
        "{mean} vs {whole}"
    );
}

#[test]
fn accuracy_matches_a_plain_scorer() {
    let (_, mut engine) = model();
    let mut ex = examples(40, 2);
    // Label half the examples with the plain scorer's pick, the rest with another completion.
    for (i, e) in ex.iter_mut().enumerate() {
        let pick = plain_pick(engine.as_mut(), e);
        e.label = if i % 2 == 0 { pick } else { (pick + 1) % 4 };
    }
    let (right, n) = mc_eval::score(engine.as_mut(), &ex).unwrap();
    assert_eq!((right, n), (20, 40));
}
