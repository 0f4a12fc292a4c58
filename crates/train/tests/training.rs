//! Training end to end on small models: overfitting one batch, and exact resume.

use ferrogpt_core::{Level, Tape};
use ferrogpt_model::Gpt;
use ferrogpt_train::config::{preset, TrainConfig};
use ferrogpt_train::data::Dataset;
use ferrogpt_train::optim::{clip_grad_norm, Optimizer};
use ferrogpt_train::tokenizer::Tokenizer;
use ferrogpt_train::trainer::{Outcome, Trainer};
use ferrogpt_train::CpuEngine;
use rand::SeedableRng;
use rand_xoshiro::Xoshiro256PlusPlus as Rng64;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;

fn small_cfg() -> TrainConfig {
    TrainConfig {
        n_layer: 2,
        n_head: 2,
        n_embd: 16,
        block_size: 16,
        seq_len: 16,
        batch_size: 4,
        steps: 20,
        warmup: 3,
        eval_interval: 5,
        eval_batches: 2,
        dropout: 0.1,
        sample_tokens: 0,
        ..preset("shakespeare-cpu").unwrap()
    }
}

fn corpus() -> String {
    "First Citizen:\nBefore we proceed any further, hear me speak.\nAll:\nSpeak, speak.\n"
        .repeat(40)
}

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("ferrogpt-train-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

fn dataset(tok: &Tokenizer) -> Dataset {
    let ids = tok.encode(&corpus()).unwrap();
    let n = ids.len() * 9 / 10;
    Dataset {
        train: ids[..n].to_vec(),
        val: ids[n..].to_vec(),
        sources: Vec::new(),
        ..Default::default()
    }
}

#[test]
fn overfits_one_batch() {
    let tok = Tokenizer::from_corpus_char(&corpus());
    let cfg = TrainConfig {
        dropout: 0.0,
        ..small_cfg()
    };
    let model = Gpt::new(cfg.model_config(tok.vocab_size())).unwrap();
    let mut rng = Rng64::seed_from_u64(1);
    let mut params: Vec<f32> = model.layout.init(&model.config, &mut rng);
    let mut grads = vec![0.0; params.len()];
    let mut opt = Optimizer::new(cfg.optimizer, params.len(), model.layout.decay_mask());
    let ids = tok.encode(&corpus()).unwrap();
    let (x, y): (Vec<u32>, Vec<u32>) = (ids[..64].to_vec(), ids[1..65].to_vec());
    let mut tape = Tape::new(Level::fastest()).unwrap();
    let mut first = 0.0;
    let mut last = 0.0;
    for step in 0..300 {
        grads.fill(0.0);
        tape.reset(true);
        let loss = model
            .loss(&mut tape, &params, &x, &y, 16, &mut rng)
            .unwrap();
        tape.backward(&params, &mut grads);
        clip_grad_norm(&mut grads, 1.0);
        opt.step(
            &mut params,
            &grads,
            1.0,
            3e-3,
            &TrainConfig {
                weight_decay: 0.0,
                ..cfg.clone()
            },
        );
        if step == 0 {
            first = loss;
        }
        last = loss;
    }
    assert!(first > 2.5, "initial loss {first} should be near ln(V)");
    assert!(last < 0.05, "loss after 300 steps on one batch: {last}");
}

fn run_to(t: &mut Trainer) -> Outcome {
    t.run(None, &AtomicBool::new(false), |_| {}).unwrap()
}

/// N steps in one go equal N/2 + save + resume + N/2, bit for bit (dropout on, so the RNG
/// state must survive the checkpoint too).
#[test]
fn resume_is_exact() {
    let tok = Tokenizer::from_corpus_char(&corpus());
    let cpu = CpuEngine::factory(Level::fastest());
    let (a_dir, b_dir) = (tmp("resume-a"), tmp("resume-b"));
    let mut a = Trainer::new(small_cfg(), tok.clone(), dataset(&tok), &*cpu, &a_dir, None).unwrap();
    assert_eq!(run_to(&mut a), Outcome::Finished);

    // The same run, interrupted after step 10 (as Ctrl-C does: the flag is seen before step 11).
    let mut b = Trainer::new(small_cfg(), tok.clone(), dataset(&tok), &*cpu, &b_dir, None).unwrap();
    let stop = AtomicBool::new(false);
    let out = b
        .run(None, &stop, |m| {
            stop.store(m.step == 10, std::sync::atomic::Ordering::Relaxed)
        })
        .unwrap();
    assert_eq!(out, Outcome::Interrupted);
    drop(b);
    let mut b = Trainer::resume(&b_dir, dataset(&tok), &*cpu, Some(20)).unwrap();
    assert_eq!(b.step, 10);
    run_to(&mut b);
    assert_eq!(b.step, 20);
    assert!(
        a.params().unwrap() == b.params().unwrap(),
        "parameters differ after resume"
    );
    let losses = |d: &PathBuf| -> Vec<String> {
        std::fs::read_to_string(d.join("metrics.jsonl"))
            .unwrap()
            .lines()
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).unwrap();
                format!("{} {} {}", v["step"], v["train_loss"], v["val_loss"])
            })
            .collect()
    };
    assert_eq!(losses(&a_dir), losses(&b_dir));
    assert_eq!(losses(&a_dir).len(), 20);
    std::fs::remove_dir_all(&a_dir).unwrap();
    std::fs::remove_dir_all(&b_dir).unwrap();
}

/// A run refuses to write into a directory that holds a checkpoint, and a loss that turns
/// non-finite stops the run and keeps the last good checkpoint.
#[test]
fn keeps_existing_checkpoints() {
    let tok = Tokenizer::from_corpus_char(&corpus());
    let dir = tmp("keep");
    let cpu = CpuEngine::factory(Level::fastest());
    let cfg = TrainConfig {
        steps: 5,
        dropout: 0.0,
        ..small_cfg()
    };
    let mut t = Trainer::new(cfg.clone(), tok.clone(), dataset(&tok), &*cpu, &dir, None).unwrap();
    run_to(&mut t);
    let before = std::fs::read(dir.join("model.safetensors")).unwrap();
    let err = Trainer::new(cfg, tok.clone(), dataset(&tok), &*cpu, &dir, None)
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("already holds a checkpoint"), "{err}");
    // Resume with a learning rate that blows up: the run must stop with an error, saving nothing.
    let mut r = Trainer::resume(&dir, dataset(&tok), &*cpu, Some(60)).unwrap();
    r.cfg.lr = 1e12;
    r.cfg.min_lr = 1e12;
    r.cfg.grad_clip = 0.0;
    r.cfg.eval_interval = 1;
    let res = r.run(None, &AtomicBool::new(false), |_| {});
    let err = res.expect_err("the loss must turn non-finite").to_string();
    assert!(err.contains("last good"), "{err}");
    // Every eval step saved before the blow-up; the files on disk are a consistent checkpoint.
    let resumed = Trainer::resume(&dir, dataset(&tok), &*cpu, None).unwrap();
    assert!(resumed.params().unwrap().iter().all(|x| x.is_finite()));
    assert!(resumed.step >= 5);
    let _ = before;
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The weights of the lowest validation loss are kept in `best/`, readable as a checkpoint,
/// and the best loss survives a resume.
#[test]
fn keeps_the_best_weights() {
    let tok = Tokenizer::from_corpus_char(&corpus());
    let dir = tmp("best");
    let cpu = CpuEngine::factory(Level::fastest());
    let mut t = Trainer::new(small_cfg(), tok.clone(), dataset(&tok), &*cpu, &dir, None).unwrap();
    run_to(&mut t);
    let best = t.best_val_loss.expect("evaluated");
    let vals: Vec<f64> = std::fs::read_to_string(dir.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["val_loss"].as_f64())
        .collect();
    let lowest = vals.iter().copied().fold(f64::INFINITY, f64::min);
    assert!((best - lowest).abs() < 1e-12, "{best} vs {lowest}");
    let loaded = ferrogpt_train::checkpoint::load_model(&dir.join("best"), 64).unwrap();
    assert_eq!(loaded.params.len(), t.params().unwrap().len());
    drop(t);
    let mut r = Trainer::resume(&dir, dataset(&tok), &*cpu, Some(25)).unwrap();
    assert_eq!(r.best_val_loss, Some(best));
    // Checkpoints are staged and moved into place: no staging folder stays behind, and one a
    // killed process left is cleaned up by the next save.
    let staging = |d: &PathBuf| {
        std::fs::read_dir(d)
            .unwrap()
            .flatten()
            .any(|e| e.file_name().to_string_lossy().starts_with(".staging-"))
    };
    assert!(!staging(&dir));
    std::fs::create_dir(dir.join(".staging-1")).unwrap();
    r.save(0.0).unwrap();
    assert!(!staging(&dir));
    drop(r);
    Trainer::resume(&dir, dataset(&tok), &*cpu, Some(25)).unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The GPT-2 presets are OpenAI's four sizes: with GPT-2's vocabulary (50,257, unpadded) their
/// parameter counts are those Hugging Face's GPT2LMHeadModel reports for gpt2, gpt2-medium,
/// gpt2-large and gpt2-xl (the head tied to the token embedding, so counted once).
#[test]
fn gpt2_presets_have_openai_parameter_counts() {
    for (name, params) in [
        ("gpt2-124m", 124_439_808),
        ("gpt2-350m", 354_823_168),
        ("gpt2-774m", 774_030_080),
        ("gpt2-1558m", 1_557_611_200),
    ] {
        let cfg = preset(name).expect("preset exists");
        cfg.validate().unwrap();
        let model = cfg.model_config(50_257);
        assert_eq!(model.num_params(), params, "{name}");
        assert_eq!(
            model.head_size(),
            64,
            "{name}: the tensor-core attention's head size"
        );
    }
}
