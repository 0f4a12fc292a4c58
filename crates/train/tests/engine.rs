//! The CPU engine against the tape it wraps: logits, losses, gradient accumulation across shards,
//! sampling, and the errors of the contract.

use ferrogpt_core::{Level, Tape};
use ferrogpt_model::generate::{generate, Sampling};
use ferrogpt_model::Gpt;
use ferrogpt_train::config::{preset, TrainConfig};
use ferrogpt_train::{CpuEngine, Engine, EngineInit, TrainInit};
use rand::{Rng, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus as Rng64;

const V: usize = 23;

fn cfg() -> TrainConfig {
    TrainConfig {
        n_layer: 2,
        n_head: 2,
        n_embd: 16,
        block_size: 8,
        seq_len: 8,
        batch_size: 5,
        dropout: 0.1,
        ..preset("shakespeare-cpu").unwrap()
    }
}

fn model_and_params() -> (Gpt, Vec<f32>) {
    let model = Gpt::new(cfg().model_config(V)).unwrap();
    let params = model
        .layout
        .init(&model.config, &mut Rng64::seed_from_u64(7));
    (model, params)
}

fn ids(n: usize, seed: u64) -> Vec<u32> {
    let mut rng = Rng64::seed_from_u64(seed);
    (0..n).map(|_| rng.gen_range(0..V as u32)).collect()
}

/// One batch of the config's shape (inputs, targets) and its sequence length.
fn batch(c: &TrainConfig) -> (Vec<u32>, Vec<u32>, usize) {
    let (b, t) = (c.batch_size, c.seq_len);
    (ids(b * t, 3), ids(b * t, 4), t)
}

fn inference(model: &Gpt, params: &[f32]) -> Box<dyn Engine> {
    let init = EngineInit {
        model,
        params: params.to_vec(),
        train: None,
    };
    CpuEngine::factory(Level::fastest())(init).unwrap()
}

fn training(model: &Gpt, params: &[f32], cfg: &TrainConfig) -> Box<dyn Engine> {
    let init = EngineInit {
        model,
        params: params.to_vec(),
        train: Some(TrainInit::fresh(cfg, params.len())),
    };
    CpuEngine::factory(Level::fastest())(init).unwrap()
}

#[test]
fn logits_and_losses_match_the_tape() {
    let (model, params) = model_and_params();
    let mut e = inference(&model, &params);
    let (b, t) = (3, 8);
    let x = ids(b * t, 1);
    let mut tape = Tape::<f32>::new(Level::fastest()).unwrap();
    let mut rng = Rng64::seed_from_u64(0);
    tape.reset(false);
    let logits = model
        .forward(&mut tape, &params, &x, t, true, &mut rng)
        .unwrap();
    let vp = model.config.padded_vocab_size;
    let want: Vec<f32> = (0..b)
        .flat_map(|r| tape.value(logits)[r * vp..r * vp + V].to_vec())
        .collect();
    assert_eq!(e.last_logits(&x, t).unwrap(), want);
    // Three batches, spread over the shards: each equals its own loss on one tape.
    let batches: Vec<(Vec<u32>, Vec<u32>)> = (0..3)
        .map(|i| (ids(b * t, 10 + i), ids(b * t, 20 + i)))
        .collect();
    let got = e.losses(&batches, t).unwrap();
    for ((bx, by), l) in batches.iter().zip(&got) {
        tape.reset(false);
        let want = model.loss(&mut tape, &params, bx, by, t, &mut rng).unwrap() as f64;
        assert_eq!(*l, want);
    }
}

#[test]
fn sampling_on_the_engine_equals_the_tape() {
    let (model, params) = model_and_params();
    let mut e = inference(&model, &params);
    let s = Sampling {
        temperature: 0.9,
        top_k: 5,
        top_p: 1.0,
        allowed: None,
        stop: None,
    };
    let mut tape = Tape::<f32>::new(Level::fastest()).unwrap();
    let a = generate(
        &model,
        &mut tape,
        &params,
        &[1, 2, 3],
        12,
        s,
        &mut Rng64::seed_from_u64(4),
        |_| Ok(()),
    )
    .unwrap();
    let b = ferrogpt_train::engine::generate(
        e.as_mut(),
        &model,
        &[1, 2, 3],
        12,
        s,
        &mut Rng64::seed_from_u64(4),
        |_| Ok(()),
    )
    .unwrap();
    assert_eq!(a, b);
    let err = ferrogpt_train::engine::generate(
        e.as_mut(),
        &model,
        &[1; 9],
        1,
        s,
        &mut Rng64::seed_from_u64(4),
        |_| Ok(()),
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("block size"), "{err}");
}

/// One-row logits as sampling asks for them (a prompt, then one more token at a time, then a
/// sliding window and a new prompt) equal the tape's full forward: the key/value cache is
/// filled by the tape and extended one position at a time.
#[test]
fn one_row_logits_through_the_kv_cache_match_the_tape() {
    let (model, params) = model_and_params();
    let mut e = inference(&model, &params);
    let seq = ids(14, 21);
    let full = |toks: &[u32]| -> Vec<f32> {
        let mut tape = Tape::<f32>::new(Level::Naive).unwrap();
        tape.reset(false);
        let lg = model
            .forward(
                &mut tape,
                &params,
                toks,
                toks.len(),
                true,
                &mut Rng64::seed_from_u64(0),
            )
            .unwrap();
        tape.value(lg)[..V].to_vec()
    };
    let windows: Vec<&[u32]> = vec![
        &seq[..3],
        &seq[..4],
        &seq[..5],
        &seq[..8],
        &seq[1..9],
        &seq[2..10],
        &seq[9..12],
        &seq[9..13],
    ];
    for w in windows {
        let got = e.last_logits(w, w.len()).unwrap();
        for (a, b) in got.iter().zip(full(w)) {
            assert!(
                (a - b).abs() < 1e-4,
                "{} tokens from {:?}: {a} vs {b}",
                w.len(),
                &w[..1]
            );
        }
    }
}

/// The same micro-batch accumulated at scale 1, or twice at scale ½ (with the gradients
/// reduced in between, as a clip does): the same gradient norm and the same update.
#[test]
fn accumulation_scales_and_sums_across_shards() {
    let (model, params) = model_and_params();
    let c = cfg();
    let (x, y, t) = batch(&c);
    let mut one = training(&model, &params, &c);
    one.zero_grads().unwrap();
    let l1 = one.accumulate(&x, &y, t, 1.0, 9).unwrap();
    let n1 = one.clip_grads(0.0).unwrap();
    let mut two = training(&model, &params, &c);
    two.zero_grads().unwrap();
    let la = two.accumulate(&x, &y, t, 0.5, 9).unwrap();
    two.clip_grads(0.0).unwrap();
    let lb = two.accumulate(&x, &y, t, 0.5, 9).unwrap();
    let n2 = two.clip_grads(0.0).unwrap();
    assert_eq!(
        (l1, l1),
        (la, lb),
        "the loss is unscaled and the seed fixes dropout"
    );
    assert!((n1 - n2).abs() <= 1e-6 * n1, "{n1} vs {n2}");
    one.update(1e-3, &c).unwrap();
    two.update(1e-3, &c).unwrap();
    let (p1, p2) = (one.params().unwrap(), two.params().unwrap());
    let worst = p1
        .iter()
        .zip(&p2)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    assert!(worst < 1e-6, "parameters differ by {worst}");
    assert_ne!(p1, params, "the update moved nothing");
    let (m, v, steps) = one.optimizer_state().unwrap();
    assert_eq!((m.len(), v.len(), steps), (params.len(), params.len(), 1));
    // Clipping to half the norm halves it.
    two.zero_grads().unwrap();
    two.accumulate(&x, &y, t, 1.0, 9).unwrap();
    let n = two.clip_grads(0.0).unwrap();
    two.clip_grads(n / 2.0).unwrap();
    let half = two.clip_grads(0.0).unwrap();
    assert!((half - n / 2.0).abs() <= 1e-5 * n, "{half} vs {}", n / 2.0);
    // A clip applies to the gradients accumulated so far, not to later ones: half of g plus
    // the same g again has 1.5 times g's norm.
    two.accumulate(&x, &y, t, 1.0, 9).unwrap();
    let more = two.clip_grads(0.0).unwrap();
    assert!((more - 1.5 * n).abs() <= 1e-5 * n, "{more} vs {}", 1.5 * n);
}

/// With one shard the backward pass measures the gradient norm itself
/// (`Tape::backward_with_norm`); it agrees with the pass over the buffer that a second
/// micro-batch needs, and half the gradient has half the norm.
#[test]
fn one_shard_measures_the_norm_in_the_backward_pass() {
    let (model, params) = model_and_params();
    let c = cfg();
    let (x, y, t) = batch(&c);
    // Run on one thread: one shard.
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap();
    let (fused, half, summed) = pool.install(|| {
        let mut whole = training(&model, &params, &c);
        whole.zero_grads().unwrap();
        whole.accumulate(&x, &y, t, 1.0, 9).unwrap();
        let fused = whole.clip_grads(0.0).unwrap();
        let mut halves = training(&model, &params, &c);
        halves.zero_grads().unwrap();
        halves.accumulate(&x, &y, t, 0.5, 9).unwrap();
        let half = halves.clip_grads(0.0).unwrap();
        // The second micro-batch adds to the buffer: its norm is a pass over the buffer.
        halves.accumulate(&x, &y, t, 0.5, 9).unwrap();
        (fused, half, halves.clip_grads(0.0).unwrap())
    });
    assert!(fused > 0.0);
    assert!(
        (2.0 * half - fused).abs() <= 1e-6 * fused,
        "{half} vs {fused}"
    );
    assert!(
        (summed - fused).abs() <= 1e-6 * fused,
        "{summed} vs {fused}"
    );
}

#[test]
fn errors_of_the_contract() {
    let (model, params) = model_and_params();
    let c = cfg();
    let mut inf = inference(&model, &params);
    let err = inf.zero_grads().unwrap_err().to_string();
    assert!(err.contains("inference only"), "{err}");
    assert!(inf.optimizer_state().is_err());
    let mut e = training(&model, &params, &c);
    e.zero_grads().unwrap();
    let err = e.accumulate(&[1; 10], &[1; 10], 8, 1.0, 0).unwrap_err();
    assert!(err.to_string().contains("T = 8"), "{err}");
    let err = e
        .accumulate(&[1; 8], &[V as u32; 8], 8, 1.0, 0)
        .unwrap_err();
    assert!(err.to_string().contains("beyond the vocabulary"), "{err}");
    let err = e.last_logits(&[1; 18], 9).unwrap_err();
    assert!(err.to_string().contains("block size"), "{err}");
    let sgd = TrainConfig {
        optimizer: ferrogpt_train::config::OptimizerKind::Sgd,
        ..c.clone()
    };
    assert!(e.update(1e-3, &sgd).is_err());
    // Wrong lengths at construction.
    let init = EngineInit {
        model: &model,
        params: params[1..].to_vec(),
        train: None,
    };
    let err = CpuEngine::new(init, Level::fastest()).err().unwrap();
    assert!(err.to_string().contains("the model needs"), "{err}");
    let mut tr = TrainInit::fresh(&sgd, params.len());
    tr.v = vec![0.0; params.len()];
    let init = EngineInit {
        model: &model,
        params: params.clone(),
        train: Some(tr),
    };
    assert!(CpuEngine::new(init, Level::fastest()).is_err());
    assert!(e.describe().starts_with("cpu ("), "{}", e.describe());
}

/// Data-parallel shards while a gradient buffer fits in half the last-level cache, else one.
#[test]
fn shards_follow_the_size_of_the_gradients() {
    use ferrogpt_train::cpu_engine::shards_for;
    assert_eq!(shards_for(2, 8, 1000), 2);
    assert_eq!(shards_for(4, 3, 1000), 3);
    assert_eq!(shards_for(2, 0, 1000), 1);
    // 124M parameters (0.5 GB of gradients) is beyond any last-level cache we know.
    assert_eq!(shards_for(16, 8, 124_000_000), 1);
}
