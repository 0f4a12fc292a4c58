//! Times the GPU model's training step by phase (forward + loss, backward, norm + AdamW) on
//! random tokens: a profiling aid beside `ferrogpt bench train --device cuda`.
//!
//! cargo run --release -p ferrogpt-gpu --example gpu_step -- MODEL B T fp32|tf32|bf16 STEPS [cuda-core,plain,r1,r2,decode]
//!
//! `decode`: times decoding instead: B sequences side by side after prompts of T tokens, STEPS
//! steps of one token each (`decode_next_many`, logits copied back included), with the
//! per-kernel profile under FERROGPT_GPU_PROFILE=1 (which turns the step's CUDA graph off).
//!
//! MODEL: gpt2 (124M), char, smollm, or any `ferrogpt train` preset (gpt2-350m, gpt2-774m,
//! gpt2-1558m, ...) with GPT-2's vocabulary. r1 / r2: `--recompute 1` / `2`.
//!
//! `smollm` is SmolLM-135M's shape (the `smollm-135m` preset) with its own vocabulary of 49,152
//! (random ids), as `bench/peers/pytorch_llama.py --preset smollm-135m` times it.

use ferrogpt_gpu::{Dtype, GpuModel, OptKind, OptState, Update};
use ferrogpt_model::config::{Family, Position};
use ferrogpt_model::{Gpt, GptConfig};
use rand::{Rng, SeedableRng};
use std::time::Instant;

fn main() {
    let a: Vec<String> = std::env::args().collect();
    let arg = |i: usize, d: &str| a.get(i).cloned().unwrap_or_else(|| d.to_string());
    let cfg = match arg(1, "gpt2").as_str() {
        "char" => GptConfig {
            n_layer: 6,
            n_head: 6,
            n_embd: 384,
            block_size: 256,
            vocab_size: 65,
            padded_vocab_size: 128,
            dropout: 0.2,
            ..GptConfig::default()
        },
        "smollm" => GptConfig {
            family: Family::Llama,
            pos: Position::Rope,
            n_layer: 30,
            n_head: 9,
            n_kv_head: Some(3),
            n_embd: 576,
            ffn_hidden: Some(1536),
            block_size: 1024,
            vocab_size: 49152,
            padded_vocab_size: 49152,
            ..GptConfig::default()
        },
        "gpt2" => GptConfig::default(),
        name => match ferrogpt_train::config::preset(name) {
            Some(p) => p.model_config(50_257),
            None => {
                eprintln!("error: unknown model '{name}'");
                std::process::exit(1)
            }
        },
    };
    let b: usize = arg(2, "16").parse().unwrap();
    let t: usize = arg(3, "1024").parse().unwrap();
    let dtype = Dtype::parse(&arg(4, "bf16")).unwrap();
    let steps: usize = arg(5, "10").parse().unwrap();
    let model = Gpt::new(cfg.clone()).unwrap();
    let mut rng = rand_xoshiro::Xoshiro256PlusPlus::seed_from_u64(1);
    let params: Vec<f32> = model.layout.init(&cfg, &mut rng);
    let n = model.layout.total;
    let opt = OptState {
        kind: OptKind::AdamW,
        m: vec![0.0; n],
        v: vec![0.0; n],
        t: 0,
        decay: model.layout.decay_mask(),
    };
    let gpu = ferrogpt_cuda::Gpu::new(0).unwrap_or_else(|e| {
        eprintln!("error: {e}");
        std::process::exit(1)
    });
    let mut g = GpuModel::new(gpu, dtype, cfg.clone(), &params, Some(opt)).unwrap();
    // Optional 6th argument: cuda-core (attention on CUDA cores), plain (no cuBLASLt epilogues).
    if arg(6, "").contains("cuda-core") {
        g.use_cuda_core_attention();
    }
    if arg(6, "").contains("plain") {
        g.use_plain_cublas();
    }
    for (flag, level) in [("r1", 1), ("r2", 2)] {
        if arg(6, "").split(',').any(|f| f == flag) {
            g.set_recompute(level).unwrap();
        }
    }
    if arg(6, "").split(',').any(|f| f == "decode") {
        decode(&mut g, &cfg, b, t, steps, &mut rng);
        return;
    }
    let u = Update {
        lr: 1e-4,
        beta1: 0.9,
        beta2: 0.95,
        eps: 1e-8,
        weight_decay: 0.1,
        momentum: 0.0,
    };
    let (mut fw, mut tot) = (Vec::new(), Vec::new());
    for s in 0..steps + 2 {
        let x: Vec<u32> = (0..b * t)
            .map(|_| rng.gen_range(0..cfg.vocab_size as u32))
            .collect();
        let y: Vec<u32> = (0..b * t)
            .map(|_| rng.gen_range(0..cfg.vocab_size as u32))
            .collect();
        g.synchronize().unwrap();
        let t0 = Instant::now();
        let _ = g.loss(&x, &y, t).unwrap(); // forward only (synchronises on the loss)
        let f = t0.elapsed().as_secs_f64();
        let t1 = Instant::now();
        g.zero_grads().unwrap();
        let loss = g.accumulate(&x, &y, t, 1.0, s as u64).unwrap();
        let norm = g.grad_norm().unwrap();
        g.update(&u, if norm > 1.0 { (1.0 / norm) as f32 } else { 1.0 })
            .unwrap();
        g.synchronize().unwrap();
        let st = t1.elapsed().as_secs_f64();
        if s == 1 {
            g.reset_profile();
        }
        if s >= 2 {
            fw.push(f);
            tot.push(st);
        }
        eprintln!(
            "step {s}: loss {loss:.4} norm {norm:.3} forward {:.2} ms, step {:.2} ms",
            f * 1e3,
            st * 1e3
        );
    }
    let prof = g.profile();
    if !prof.is_empty() {
        let total: f64 = prof.iter().map(|p| p.1).sum();
        let steps = steps as f64;
        println!("profile (per step, each launch synchronised; forward-only pass included):");
        for (name, sec, calls) in prof {
            println!(
                "  {:>8.3} ms {:>5.1}% {:>6} calls  {name}",
                sec / steps * 1e3,
                100.0 * sec / total,
                calls / steps as u64
            );
        }
    }
    let med = |v: &mut Vec<f64>| {
        v.sort_by(|a, b| a.partial_cmp(b).unwrap());
        v[v.len() / 2]
    };
    let (f, s) = (med(&mut fw), med(&mut tot));
    let toks = (b * t) as f64;
    let flops = cfg.flops_per_token(t) * toks;
    println!(
        "{} {:?} B={b} T={t}: step {:.2} ms ({:.0} tokens/s, {:.1} TFLOPS model), forward {:.2} ms, attention {}",
        g.describe(),
        arg(1, "gpt2"),
        s * 1e3,
        toks / s,
        flops / s / 1e12,
        f * 1e3,
        if g.tensor_core_attention() { "tensor cores" } else { "CUDA cores" }
    );
    println!("{}", g.memory().unwrap());
}

/// Times `steps` decoding steps of `b` sequences after prompts of `t` random tokens.
fn decode(g: &mut GpuModel, cfg: &GptConfig, b: usize, t: usize, steps: usize, rng: &mut impl Rng) {
    let v = cfg.vocab_size as u32;
    let prompts: Vec<Vec<u32>> = (0..b)
        .map(|_| (0..t).map(|_| rng.gen_range(0..v)).collect())
        .collect();
    let refs: Vec<&[u32]> = prompts.iter().map(Vec::as_slice).collect();
    g.decode_start_many(&refs).unwrap();
    let mut times = Vec::new();
    for s in 0..steps + 2 {
        let tokens: Vec<Option<u32>> = (0..b).map(|_| Some(rng.gen_range(0..v))).collect();
        let t0 = Instant::now();
        g.decode_next_many(&tokens).unwrap();
        if s == 1 {
            g.reset_profile();
        }
        if s >= 2 {
            times.push(t0.elapsed().as_secs_f64());
        }
    }
    let prof = g.profile();
    let total: f64 = prof.iter().map(|p| p.1).sum();
    for (name, sec, calls) in prof.iter().take(25) {
        println!(
            "  {:>8.4} ms {:>5.1}% {:>6} calls  {name}",
            sec / steps as f64 * 1e3,
            100.0 * sec / total,
            calls / steps as u64
        );
    }
    times.sort_by(f64::total_cmp);
    let med = times[times.len() / 2];
    println!(
        "{} decoding {b} sequences (prompts of {t}): median step {:.3} ms ({:.0} tokens/s), {} steps replayed from a CUDA graph",
        g.describe(),
        med * 1e3,
        b as f64 / med,
        g.decode_graph_replays()
    );
}
