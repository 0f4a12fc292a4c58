//! The Llama family through the CPU engine against PyTorch: ten AdamW steps on transformers'
//! random-init `LlamaForCausalLM` (tests/fixtures/llama-tiny, made by
//! scripts/make_llama_fixture.py) give PyTorch's losses, at every f32 matmul level this CPU
//! has.

use ferrogpt_core::Level;
use ferrogpt_model::{checkpoint, Gpt};
use ferrogpt_train::config::{preset, OptimizerKind, Schedule, TrainConfig};
use ferrogpt_train::{CpuEngine, EngineInit, TrainInit};
use serde_json::Value;
use std::path::PathBuf;

fn fixture() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/llama-tiny")
}

fn numbers(v: &Value) -> Vec<f64> {
    match v {
        Value::Array(a) => a.iter().flat_map(numbers).collect(),
        x => vec![x.as_f64().expect("a number")],
    }
}

#[test]
fn ten_adamw_steps_give_pytorch_losses() {
    let dir = fixture();
    let r: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("reference.json")).unwrap())
            .unwrap();
    let model = Gpt::new(checkpoint::load_config(&dir, 1).unwrap()).unwrap();
    let (params, _) = checkpoint::load_weights(&dir.join("model.safetensors"), &model).unwrap();
    let inputs: Vec<u32> = numbers(&r["inputs"]).iter().map(|&x| x as u32).collect();
    let targets: Vec<u32> = numbers(&r["targets"]).iter().map(|&x| x as u32).collect();
    let t = r["shape"][1].as_u64().unwrap() as usize;
    let train = &r["train"];
    let betas = numbers(&train["betas"]);
    // PyTorch's AdamW with ferrogpt's decay rule (matrices only), no clipping, constant lr.
    let cfg = TrainConfig {
        optimizer: OptimizerKind::AdamW,
        lr: train["lr"].as_f64().unwrap(),
        lr_schedule: Schedule::Constant,
        warmup: 0,
        beta1: betas[0],
        beta2: betas[1],
        eps: train["eps"].as_f64().unwrap(),
        weight_decay: train["weight_decay"].as_f64().unwrap(),
        grad_clip: 0.0,
        ..preset("llama-tiny").unwrap()
    };
    let want = numbers(&train["losses"]);
    let want_norm = train["grad_norm_step0"].as_f64().unwrap();
    for &level in Level::ALL {
        if level.available().is_err() || level.name() == "amx" {
            // amx multiplies in bf16: PyTorch's f32 losses are not its reference.
            eprintln!("skipped level {level} (not available here, or bf16)");
            continue;
        }
        let init = EngineInit {
            model: &model,
            params: params.clone(),
            train: Some(TrainInit::fresh(&cfg, params.len())),
        };
        let mut engine = CpuEngine::new(init, level).unwrap();
        use ferrogpt_train::Engine;
        for (step, &w) in want.iter().enumerate() {
            engine.zero_grads().unwrap();
            let loss = engine.accumulate(&inputs, &targets, t, 1.0, 0).unwrap();
            let norm = engine.clip_grads(0.0).unwrap();
            if step == 0 {
                assert!(
                    ((norm - want_norm) / want_norm).abs() < 1e-4,
                    "{level}: gradient norm {norm} vs PyTorch's {want_norm}"
                );
            }
            assert!(
                ((loss - w) / w).abs() < 1e-4,
                "{level}: step {step}: loss {loss} vs PyTorch's {w}"
            );
            engine.update(cfg.lr, &cfg).unwrap();
        }
    }
}
