//! The whole model: finite-difference gradients in f64, and Hugging Face GPT-2 compatibility
//! against logits computed by transformers (tests/fixtures/hf-tiny, made by
//! scripts/make_hf_fixture.py).

use ferrogpt_core::{Level, Tape};
use ferrogpt_model::config::{Family, Position};
use ferrogpt_model::{checkpoint, Gpt, GptConfig};
use rand::{Rng, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus as Rng64;
use std::path::PathBuf;

fn tiny() -> GptConfig {
    GptConfig {
        n_layer: 2,
        n_head: 2,
        n_embd: 8,
        block_size: 6,
        vocab_size: 11,
        padded_vocab_size: 16,
        dropout: 0.0,
        ..GptConfig::default()
    }
}

fn loss(model: &Gpt, params: &[f64], x: &[u32], y: &[u32], t: usize) -> f64 {
    let mut tape = Tape::new(Level::Naive).unwrap();
    tape.reset(false);
    let mut rng = Rng64::seed_from_u64(0);
    model.loss(&mut tape, params, x, y, t, &mut rng).unwrap()
}

/// The gradient of the whole model's loss against central differences, every tensor.
fn check_whole_model_gradient(cfg: GptConfig) {
    let model = Gpt::new(cfg).unwrap();
    let v = model.config.vocab_size;
    let mut rng = Rng64::seed_from_u64(3);
    // Larger-than-GPT-2 init so every path carries signal; padding rows stay zero.
    let mut params: Vec<f64> = model.layout.init(&model.config, &mut rng);
    for (_, p) in &model.layout.named {
        let rows = if model.layout.is_vocab_rows(p) {
            v
        } else {
            p.rows
        };
        for x in &mut params[p.offset..p.offset + rows * p.cols] {
            *x += rng.gen_range(-0.3..0.3);
        }
    }
    let (b, t) = (2, 5);
    let x: Vec<u32> = (0..b * t).map(|_| rng.gen_range(0..v as u32)).collect();
    let y: Vec<u32> = (0..b * t).map(|_| rng.gen_range(0..v as u32)).collect();
    let mut tape = Tape::new(Level::Naive).unwrap();
    let mut rng0 = Rng64::seed_from_u64(0);
    model
        .loss(&mut tape, &params, &x, &y, t, &mut rng0)
        .unwrap();
    let mut grads = vec![0.0; params.len()];
    tape.backward(&params, &mut grads);
    let h = 1e-5;
    let mut worst = (0.0f64, String::new());
    for (name, p) in &model.layout.named {
        let mut num = Vec::new();
        for i in p.range() {
            let mut a = params.clone();
            a[i] += h;
            let mut bm = params.clone();
            bm[i] -= h;
            num.push((loss(&model, &a, &x, &y, t) - loss(&model, &bm, &x, &y, t)) / (2.0 * h));
        }
        let ana = &grads[p.range()];
        let diff: f64 = ana
            .iter()
            .zip(&num)
            .map(|(a, n)| (a - n) * (a - n))
            .sum::<f64>()
            .sqrt();
        let norm: f64 = ana.iter().map(|a| a * a).sum::<f64>().sqrt()
            + num.iter().map(|a| a * a).sum::<f64>().sqrt();
        let rel = if norm == 0.0 { 0.0 } else { diff / norm };
        if rel > worst.0 {
            worst = (rel, name.clone());
        }
        // The key bias of c_attn provably has zero gradient (softmax is shift-invariant).
        if !name.ends_with("attn.c_attn.bias") {
            assert!(norm > 0.0, "{name}: gradient is identically zero");
        }
    }
    assert!(
        worst.0 < 1e-6,
        "worst relative error {:e} in {}",
        worst.0,
        worst.1
    );
    // Padding rows of the embedding (and an untied head) receive no gradient.
    for p in [Some(model.layout.wte), model.layout.lm_head]
        .into_iter()
        .flatten()
    {
        let pad = &grads[p.offset + v * p.cols..p.offset + p.len()];
        assert!(!pad.is_empty() && pad.iter().all(|&g| g == 0.0));
    }
}

#[test]
fn whole_model_gradient_matches_finite_differences() {
    check_whole_model_gradient(tiny());
}

#[test]
fn whole_gpt2_with_rotary_positions_gradient_matches_finite_differences() {
    check_whole_model_gradient(GptConfig {
        pos: Position::Rope,
        ..tiny()
    });
}

/// A Llama at gradient-check size: 4 query heads sharing 2 key/value heads, SwiGLU 12 wide,
/// rotary positions, untied head.
fn tiny_llama() -> GptConfig {
    GptConfig {
        family: Family::Llama,
        pos: Position::Rope,
        n_head: 4,
        n_kv_head: Some(2),
        ffn_hidden: Some(12),
        tie_embeddings: false,
        ..tiny()
    }
}

#[test]
fn whole_llama_gradient_matches_finite_differences() {
    check_whole_model_gradient(tiny_llama());
    // Tied, and every head its own key/value head.
    check_whole_model_gradient(GptConfig {
        n_kv_head: None,
        tie_embeddings: true,
        ..tiny_llama()
    });
}

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures")
        .join(name)
}

fn floats(v: &serde_json::Value) -> Vec<f64> {
    v.as_array()
        .unwrap()
        .iter()
        .flat_map(|r| r.as_array().unwrap().iter().map(|x| x.as_f64().unwrap()))
        .collect()
}

/// The Llama fixture (tests/fixtures/llama-tiny, made by scripts/make_llama_fixture.py):
/// transformers' sharded `LlamaForCausalLM` with grouped-query attention and an untied head.
fn llama_fixture() -> (Gpt, Vec<f64>, serde_json::Value) {
    let dir = fixture("llama-tiny");
    let reference: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("reference.json")).unwrap())
            .unwrap();
    let cfg = checkpoint::load_config(&dir, 1).unwrap();
    assert_eq!(cfg.family, Family::Llama);
    assert_eq!(
        (
            cfg.n_layer,
            cfg.n_head,
            cfg.kv_heads(),
            cfg.n_embd,
            cfg.ffn()
        ),
        (2, 4, 2, 64, 176)
    );
    assert!(!cfg.tie_embeddings);
    let model = Gpt::new(cfg).unwrap();
    // No model.safetensors: the index and its four shards.
    assert!(!dir.join("model.safetensors").exists());
    let (params, _) = checkpoint::load_weights(&dir.join("model.safetensors"), &model).unwrap();
    (model, params.iter().map(|&x| x as f64).collect(), reference)
}

/// Our forward (f64 and f32) against a reference's logits for `inputs` (B, T): within 1e-4
/// of the largest logit, relative.
fn check_logits(model: &Gpt, params: &[f64], inputs: &[u32], t: usize, want: &[f64], what: &str) {
    let v = model.config.vocab_size;
    let vp = model.config.padded_vocab_size;
    let scale = want.iter().fold(0.0f64, |m, x| m.max(x.abs()));
    let p32: Vec<f32> = params.iter().map(|&x| x as f32).collect();
    let mut tape = Tape::<f64>::new(Level::Naive).unwrap();
    tape.reset(false);
    let mut r = Rng64::seed_from_u64(0);
    let lg = model
        .forward(&mut tape, params, inputs, t, false, &mut r)
        .unwrap();
    let got64: Vec<f64> = tape.value(lg).to_vec();
    let mut tape = Tape::<f32>::new(Level::Naive).unwrap();
    tape.reset(false);
    let lg = model
        .forward(&mut tape, &p32, inputs, t, false, &mut r)
        .unwrap();
    let got32: Vec<f64> = tape.value(lg).iter().map(|&x| x as f64).collect();
    assert_eq!(want.len(), inputs.len() * v, "{what}: reference size");
    for (name, got) in [("f64", &got64), ("f32", &got32)] {
        let worst = (0..inputs.len())
            .flat_map(|row| (0..v).map(move |j| (row, j)))
            .map(|(row, j)| (got[row * vp + j] - want[row * v + j]).abs() / scale)
            .fold(0.0, f64::max);
        assert!(
            worst < 1e-4,
            "{what} ({name}): worst relative error {worst:e}"
        );
    }
}

fn flat_ids(v: &serde_json::Value) -> Vec<u32> {
    floats(v).iter().map(|&x| x as u32).collect()
}

/// transformers' Llama logits: plain RoPE at T = 24 and at an odd T = 7, and with Llama 3's
/// frequency scaling (read from the hub's legacy `rope_scaling` form and from transformers 5's
/// `rope_parameters`).
#[test]
fn hugging_face_llama_gives_transformers_logits() {
    let (model, params, r) = llama_fixture();
    let inputs = flat_ids(&r["inputs"]);
    check_logits(
        &model,
        &params,
        &inputs,
        24,
        &r["logits_f64"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap())
            .collect::<Vec<_>>(),
        "llama",
    );
    let short = flat_ids(&r["short_inputs"]);
    check_logits(
        &model,
        &params,
        &short,
        7,
        &r["logits_short"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap())
            .collect::<Vec<_>>(),
        "llama, T = 7",
    );
    // Our rotary frequencies are HF's.
    let ours = model.config.rope_inv_freq();
    for (key, cfg) in [
        ("inv_freq", model.config.clone()),
        ("inv_freq_llama3", scaled_config(&model.config, &r)),
    ] {
        let want: Vec<f64> = r[key]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap())
            .collect();
        let got = cfg.rope_inv_freq();
        for (g, w) in got.iter().zip(&want) {
            assert!(((g - w) / w).abs() < 1e-6, "{key}: {g} vs {w}");
        }
        assert_eq!(got.len(), want.len());
    }
    assert_eq!(ours.len(), 8);
    let scaled = Gpt::new(scaled_config(&model.config, &r)).unwrap();
    check_logits(
        &scaled,
        &params,
        &inputs,
        24,
        &r["logits_llama3_f64"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap())
            .collect::<Vec<_>>(),
        "llama3 rope scaling",
    );
}

/// The fixture's config with Llama 3's rope scaling, parsed by `load_config` from both forms
/// a config.json may hold it in.
fn scaled_config(plain: &GptConfig, r: &serde_json::Value) -> GptConfig {
    let mut seen = Vec::new();
    for form in ["hub", "transformers5"] {
        let dir =
            std::env::temp_dir().join(format!("ferrogpt-llama3-{form}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut c = r["config"].clone();
        c["model_type"] = serde_json::json!("llama");
        match form {
            "hub" => {
                c.as_object_mut().unwrap().remove("rope_parameters");
                for (k, v) in r["rope_llama3_hub_form"].as_object().unwrap() {
                    c[k] = v.clone();
                }
            }
            _ => c["rope_parameters"] = r["rope_parameters_llama3"].clone(),
        }
        std::fs::write(dir.join("config.json"), c.to_string()).unwrap();
        let cfg = checkpoint::load_config(&dir, 1).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(
            cfg.rope_scaling.unwrap().original_max_position_embeddings,
            32
        );
        assert_eq!(
            GptConfig {
                rope_scaling: None,
                ..cfg.clone()
            },
            *plain
        );
        seen.push(cfg);
    }
    assert_eq!(seen[0], seen[1]);
    seen.pop().unwrap()
}

/// A Llama written by us reads back identically (config and weights), and transformers' own
/// config round-trips through our writer.
#[test]
fn llama_checkpoint_round_trips() {
    let (model, params, _) = llama_fixture();
    let dir = std::env::temp_dir().join(format!("ferrogpt-llama-rt-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p32: Vec<f32> = params.iter().map(|&x| x as f32).collect();
    checkpoint::save_config(&dir, &model.config, Some(2)).unwrap();
    let path = dir.join("model.safetensors");
    checkpoint::save_weights(&path, &model, &p32, Default::default()).unwrap();
    let cfg = checkpoint::load_config(&dir, 1).unwrap();
    assert_eq!(cfg, model.config);
    let (back, _) = checkpoint::load_weights(&path, &model).unwrap();
    assert_eq!(back, p32);
    // An untied model refuses a file without its head (a tied model's); a tied model skips
    // the copy of the head that some tied checkpoints store.
    let tied = Gpt::new(GptConfig {
        tie_embeddings: true,
        ..model.config.clone()
    })
    .unwrap();
    let tied_path = dir.join("tied.safetensors");
    let n = tied.layout.total;
    checkpoint::save_weights(&tied_path, &tied, &p32[..n], Default::default()).unwrap();
    match checkpoint::load_weights(&tied_path, &model) {
        Ok(_) => panic!("an untied model loaded a file without lm_head.weight"),
        Err(e) => assert!(e.to_string().contains("'lm_head.weight' is missing"), "{e}"),
    }
    let (from_untied, _) = checkpoint::load_weights(&path, &tied).unwrap();
    assert_eq!(from_untied, p32[..n]);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Our forward on HF's weights gives transformers' logits and loss (float64 reference).
#[test]
fn hugging_face_checkpoint_gives_transformers_logits() {
    let expected: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixture("hf-tiny/expected.json")).unwrap())
            .unwrap();
    let ids = |k: &str| -> Vec<u32> {
        expected[k]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_u64().unwrap() as u32)
            .collect()
    };
    let (inputs, targets) = (ids("inputs"), ids("targets"));
    let want_logits = floats(&expected["logits"]);
    let want_loss = expected["loss"].as_f64().unwrap();
    // The transformers layout (transformer. prefix) and the hub's legacy one (no prefix, mask buffers).
    for dir in ["hf-tiny", "hf-tiny-legacy"] {
        let dir = fixture(dir);
        let cfg = checkpoint::load_config(&dir, 1).unwrap();
        assert_eq!(
            (
                cfg.n_layer,
                cfg.n_head,
                cfg.n_embd,
                cfg.block_size,
                cfg.vocab_size
            ),
            (2, 2, 16, 32, 50)
        );
        let model = Gpt::new(cfg).unwrap();
        let (params, _) = checkpoint::load_weights(&dir.join("model.safetensors"), &model).unwrap();
        let params: Vec<f64> = params.iter().map(|&x| x as f64).collect();
        let mut tape = Tape::new(Level::Naive).unwrap();
        tape.reset(false);
        let mut rng = Rng64::seed_from_u64(0);
        let t = inputs.len();
        let logits = model
            .forward(&mut tape, &params, &inputs, t, false, &mut rng)
            .unwrap();
        let got = tape.value(logits);
        let worst = got
            .iter()
            .zip(&want_logits)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f64::max);
        assert!(
            worst < 1e-9,
            "{}: logits differ from transformers' by {worst:e}",
            dir.display()
        );
        let l = model
            .loss(&mut tape, &params, &inputs, &targets, t, &mut rng)
            .unwrap();
        assert!((l - want_loss).abs() < 1e-9, "loss {l} vs {want_loss}");
    }
}

/// Our own save → load round trip is exact, and a wrong-shaped config is refused by name.
#[test]
fn weights_round_trip_and_mismatch_is_refused() {
    let dir = std::env::temp_dir().join(format!("ferrogpt-model-rt-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let model = Gpt::new(tiny()).unwrap();
    let mut rng = Rng64::seed_from_u64(5);
    let params: Vec<f32> = model.layout.init(&model.config, &mut rng);
    checkpoint::save_config(&dir, &model.config, None).unwrap();
    checkpoint::save_weights(
        &dir.join("model.safetensors"),
        &model,
        &params,
        Default::default(),
    )
    .unwrap();
    let cfg = checkpoint::load_config(&dir, 64).unwrap();
    assert_eq!(cfg, model.config);
    let (back, _) = checkpoint::load_weights(&dir.join("model.safetensors"), &model).unwrap();
    assert_eq!(back, params);
    let other = Gpt::new(GptConfig {
        n_embd: 12,
        ..tiny()
    })
    .unwrap();
    let err = checkpoint::load_weights(&dir.join("model.safetensors"), &other)
        .unwrap_err()
        .to_string();
    assert!(err.contains("wte.weight") && err.contains("shape"), "{err}");
    std::fs::write(dir.join("model.safetensors"), b"garbage").unwrap();
    let err = checkpoint::load_weights(&dir.join("model.safetensors"), &model)
        .unwrap_err()
        .to_string();
    assert!(err.contains("not a valid safetensors"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Greedy sampling is deterministic and a too-long prompt is an error.
#[test]
fn generation_checks_prompt() {
    use ferrogpt_model::generate::{generate, Sampling};
    let model = Gpt::new(tiny()).unwrap();
    let mut rng = Rng64::seed_from_u64(5);
    let params: Vec<f32> = model.layout.init(&model.config, &mut rng);
    let mut tape = Tape::new(Level::Naive).unwrap();
    let s = Sampling {
        temperature: 0.0,
        top_k: 0,
        top_p: 1.0,
        allowed: None,
        stop: None,
    };
    let a = generate(&model, &mut tape, &params, &[1, 2], 10, s, &mut rng, |_| {
        Ok(())
    })
    .unwrap();
    let b = generate(&model, &mut tape, &params, &[1, 2], 10, s, &mut rng, |_| {
        Ok(())
    })
    .unwrap();
    assert_eq!(a, b);
    assert_eq!(a.len(), 10);
    let err = generate(&model, &mut tape, &params, &[1; 7], 1, s, &mut rng, |_| {
        Ok(())
    })
    .unwrap_err()
    .to_string();
    assert!(err.contains("block size"), "{err}");
    let err = generate(
        &model,
        &mut tape,
        &params,
        &[11],
        1,
        s,
        &mut rng,
        |_| Ok(()),
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("beyond the vocabulary"), "{err}");
}

/// A model big enough for every kernel's full and edge tiles: block 33 (T = 33 is an odd edge;
/// T = 29 leaves positions no op reaches), vocabulary 67 padded to 128.
fn small() -> GptConfig {
    GptConfig {
        n_layer: 2,
        n_head: 4,
        n_embd: 64,
        block_size: 33,
        vocab_size: 67,
        padded_vocab_size: 128,
        dropout: 0.0,
        ..GptConfig::default()
    }
}

/// A training step (loss and every gradient) at each f32 matmul level available here, with the
/// fast f32 exp/tanh, agrees with the f64 naive reference on the same weights and batch.
#[test]
fn every_level_matches_the_f64_reference() {
    every_level_matches(small());
    every_level_matches(GptConfig {
        family: Family::Llama,
        pos: Position::Rope,
        n_kv_head: Some(1),
        ffn_hidden: Some(43),
        tie_embeddings: false,
        ..small()
    });
}

fn every_level_matches(cfg: GptConfig) {
    let model = Gpt::new(cfg).unwrap();
    let mut rng = Rng64::seed_from_u64(9);
    let p64: Vec<f64> = model.layout.init(&model.config, &mut rng);
    let p32: Vec<f32> = p64.iter().map(|&x| x as f32).collect();
    let (b, t) = (3, 33);
    let x: Vec<u32> = (0..b * t).map(|_| rng.gen_range(0..67)).collect();
    let y: Vec<u32> = (0..b * t).map(|_| rng.gen_range(0..67)).collect();
    let mut tape = Tape::new(Level::Naive).unwrap();
    let l64 = model.loss(&mut tape, &p64, &x, &y, t, &mut rng).unwrap();
    let mut g64 = vec![0.0; p64.len()];
    tape.backward(&p64, &mut g64);
    for &level in Level::ALL {
        if level.available().is_err() {
            eprintln!("skipped level {level}: {}", level.available().unwrap_err());
            continue;
        }
        let mut tape = Tape::<f32>::new(level).unwrap();
        let l32 = model.loss(&mut tape, &p32, &x, &y, t, &mut rng).unwrap();
        let mut g32 = vec![0.0f32; p32.len()];
        tape.backward(&p32, &mut g32);
        // bf16 inputs (amx) keep about 3 significant digits; f32 about 7.
        let tol = if level.name() == "amx" { 2e-2 } else { 1e-4 };
        assert!(
            ((l32 as f64 - l64) / l64).abs() < tol,
            "{level}: loss {l32} vs {l64}"
        );
        let diff: f64 = g32
            .iter()
            .zip(&g64)
            .map(|(&a, &b)| (a as f64 - b) * (a as f64 - b))
            .sum::<f64>()
            .sqrt();
        let norm: f64 = g64.iter().map(|g| g * g).sum::<f64>().sqrt();
        assert!(
            diff / norm < tol,
            "{level}: gradient relative error {:e}",
            diff / norm
        );
    }
}

/// Incremental decoding with the key/value cache gives the logits of the full forward pass,
/// growing one token at a time, after the sequence diverges, and when a window slides.
/// Every family: GPT-2 (learned and rotary positions), Llama with grouped-query attention and
/// an untied head, with Llama 3's frequency scaling.
#[test]
fn kv_cache_matches_the_full_forward() {
    let cfg = GptConfig {
        n_layer: 2,
        n_head: 2,
        n_embd: 16,
        block_size: 24,
        vocab_size: 11,
        padded_vocab_size: 16,
        dropout: 0.0,
        ..GptConfig::default()
    };
    let llama = GptConfig {
        family: Family::Llama,
        pos: Position::Rope,
        n_head: 4,
        n_kv_head: Some(2),
        ffn_hidden: Some(20),
        tie_embeddings: false,
        ..cfg.clone()
    };
    let scaled = GptConfig {
        rope_scaling: Some(ferrogpt_model::config::RopeScaling {
            factor: 8.0,
            low_freq_factor: 1.0,
            high_freq_factor: 4.0,
            original_max_position_embeddings: 8,
        }),
        ..llama.clone()
    };
    let rope = GptConfig {
        pos: Position::Rope,
        ..cfg.clone()
    };
    for c in [cfg, rope, llama, scaled] {
        kv_cache_matches(c);
    }
}

fn kv_cache_matches(cfg: GptConfig) {
    use ferrogpt_model::kvcache::KvCache;
    let model = Gpt::new(cfg).unwrap();
    let mut rng = Rng64::seed_from_u64(5);
    let mut p: Vec<f32> = model.layout.init(&model.config, &mut rng);
    for x in p.iter_mut() {
        *x += rng.gen_range(-0.2..0.2);
    }
    let full = |toks: &[u32]| -> Vec<f32> {
        let mut tape = Tape::<f32>::new(Level::Naive).unwrap();
        tape.reset(false);
        let mut r = Rng64::seed_from_u64(0);
        let lg = model
            .forward(&mut tape, &p, toks, toks.len(), true, &mut r)
            .unwrap();
        tape.value(lg)[..11].to_vec()
    };
    let seq: Vec<u32> = (0..30).map(|_| rng.gen_range(0..11)).collect();
    let mut cache = KvCache::new();
    let check = |got: Vec<f32>, toks: &[u32]| {
        let want = full(toks);
        for (a, b) in got.iter().zip(&want) {
            assert!(
                (a - b).abs() < 1e-4,
                "{:?}: {} tokens: {a} vs {b}",
                model.config.family,
                toks.len()
            );
        }
    };
    for n in 1..=24 {
        check(cache.logits(&model, &p, &seq[..n]).unwrap(), &seq[..n]);
        assert_eq!(cache.len(), n);
    }
    // Another continuation of the first 10 tokens, then a sliding window (every position moves).
    let mut other = seq[..10].to_vec();
    other.extend([3, 1, 4]);
    check(cache.logits(&model, &p, &other).unwrap(), &other);
    assert_eq!(cache.len(), other.len());
    check(cache.logits(&model, &p, &seq[5..29]).unwrap(), &seq[5..29]);
}

/// The tape keeps its buffers between steps and never zeroes activation gradients (the first
/// write overwrites): a reused tape must give exactly the gradients of a fresh one, with
/// dropout on (its masks go through the same buffers) and at a multithreaded level.
#[test]
fn a_reused_tape_matches_a_fresh_one_bit_for_bit() {
    let cfg = GptConfig {
        dropout: 0.2,
        ..tiny()
    };
    let model = Gpt::new(cfg).unwrap();
    let mut rng = Rng64::seed_from_u64(5);
    let params: Vec<f32> = model.layout.init(&model.config, &mut rng);
    let (b, t) = (3, 6);
    let batch = |rng: &mut Rng64| -> (Vec<u32>, Vec<u32>) {
        (
            (0..b * t).map(|_| rng.gen_range(0..11)).collect(),
            (0..b * t).map(|_| rng.gen_range(0..11)).collect(),
        )
    };
    let grads_of = |tape: &mut Tape<f32>, x: &[u32], y: &[u32], seed: u64| {
        tape.reset(true);
        let mut r = Rng64::seed_from_u64(seed);
        let loss = model.loss(tape, &params, x, y, t, &mut r).unwrap();
        let mut g = vec![0.0f32; params.len()];
        tape.backward(&params, &mut g);
        (loss, g)
    };
    let level = Level::fastest();
    let mut reused = Tape::new(level).unwrap();
    for step in 0..4u64 {
        let (x, y) = batch(&mut rng);
        let got = grads_of(&mut reused, &x, &y, step);
        let want = grads_of(&mut Tape::new(level).unwrap(), &x, &y, step);
        assert_eq!(got.0.to_bits(), want.0.to_bits(), "loss, step {step}");
        assert!(
            got.1
                .iter()
                .zip(&want.1)
                .all(|(a, b)| a.to_bits() == b.to_bits()),
            "gradients differ at step {step}"
        );
        assert!(got.1.iter().any(|&g| g != 0.0));
    }
}

/// The two ways of writing parameter gradients agree bit for bit at every level: a backward
/// pass that overwrites a buffer full of NaN equals one that accumulates into zeros (so every
/// element is written and none is read; wpe's rows past T are reached by no product).
#[test]
fn overwriting_gradients_equals_accumulating_into_zeros() {
    overwriting_equals_accumulating(small());
    overwriting_equals_accumulating(GptConfig {
        family: Family::Llama,
        pos: Position::Rope,
        n_kv_head: Some(2),
        ffn_hidden: Some(40),
        tie_embeddings: false,
        ..small()
    });
}

fn overwriting_equals_accumulating(cfg: GptConfig) {
    use ferrogpt_core::Write;
    let model = Gpt::new(cfg).unwrap();
    let mut rng = Rng64::seed_from_u64(21);
    let params: Vec<f32> = model.layout.init(&model.config, &mut rng);
    let (b, t) = (3, 29);
    let x: Vec<u32> = (0..b * t).map(|_| rng.gen_range(0..67)).collect();
    let y: Vec<u32> = (0..b * t).map(|_| rng.gen_range(0..67)).collect();
    for &level in Level::ALL {
        if level.available().is_err() {
            eprintln!("skipped level {level}: {}", level.available().unwrap_err());
            continue;
        }
        let run = |into: Write| {
            let mut tape = Tape::<f32>::new(level).unwrap();
            let mut r = Rng64::seed_from_u64(0);
            let loss = model.loss(&mut tape, &params, &x, &y, t, &mut r).unwrap();
            let mut g = vec![if into == Write::Set { f32::NAN } else { 0.0 }; params.len()];
            tape.backward_scaled(&params, &mut g, 0.5, into);
            (
                loss.to_bits(),
                g.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
            )
        };
        let base = run(Write::Add);
        assert!(
            base.1.iter().all(|&v| f32::from_bits(v).is_finite()),
            "{level}"
        );
        assert_eq!(run(Write::Set), base, "{level}: overwriting differs");
    }
}

/// Nucleus sampling keeps the most likely tokens until their probabilities reach top_p (the
/// crossing token included), and draws among them in proportion.
#[test]
fn top_p_keeps_the_nucleus() {
    use ferrogpt_model::generate::{sample_token, Sampling};
    let logits: Vec<f64> = [0.5f64, 0.3, 0.15, 0.05].iter().map(|p| p.ln()).collect();
    let draw = |top_p: f64| -> [usize; 4] {
        let s = Sampling {
            temperature: 1.0,
            top_k: 0,
            top_p,
            allowed: None,
            stop: None,
        };
        let mut rng = Rng64::seed_from_u64(11);
        let mut counts = [0; 4];
        for _ in 0..20_000 {
            counts[sample_token(&logits, s, &mut rng) as usize] += 1;
        }
        counts
    };
    assert_eq!(draw(0.5)[1..], [0, 0, 0], "p = 0.5: the top token alone");
    let c = draw(0.7);
    assert_eq!(c[2..], [0, 0], "p = 0.7: the two most likely");
    let share = c[0] as f64 / 20_000.0;
    assert!(
        (share - 0.5 / 0.8).abs() < 0.02,
        "renormalised share {share}"
    );
    assert!(draw(1.0).iter().all(|&n| n > 0), "p = 1: every token");
}

/// The forward pass and the loss check their input once per call and return an error, where
/// an id past V read a padding row (or, past Vp, another tensor's), T past the block size
/// read past the position table, and a short buffer or a ragged batch panicked.
#[test]
fn forward_and_loss_refuse_what_they_cannot_read() {
    use ferrogpt_model::ModelError;
    let model = Gpt::new(tiny()).unwrap(); // V = 11, Vp = 16, block size 6
    let mut rng = Rng64::seed_from_u64(3);
    let p: Vec<f32> = model.layout.init(&model.config, &mut rng);
    let mut tape = Tape::<f32>::new(Level::Naive).unwrap();
    let mut fwd = |params: &[f32], tokens: &[u32], t: usize| {
        tape.reset(false);
        model
            .forward(&mut tape, params, tokens, t, false, &mut rng)
            .map(|_| ())
    };
    fwd(&p, &[1, 2, 3, 4, 5, 6], 3).unwrap();
    for (id, at) in [(11, 4), (15, 0), (16, 5), (u32::MAX, 2)] {
        let mut toks = vec![1u32, 2, 3, 4, 5, 6];
        toks[at] = id;
        let e = fwd(&p, &toks, 3).unwrap_err();
        assert!(
            matches!(e, ModelError::TokenId { id: i, position, vocab: 11 } if i == id && position == at),
            "{e:?}"
        );
    }
    let e = fwd(&p, &[1; 7], 7).unwrap_err();
    assert!(
        matches!(e, ModelError::SequenceLength { t: 7, max: 6 }),
        "{e:?}"
    );
    let e = fwd(&p, &[1; 7], 3).unwrap_err();
    assert!(matches!(e, ModelError::Batch { len: 7, t: 3 }), "{e:?}");
    let e = fwd(&p, &[], 3).unwrap_err();
    assert!(matches!(e, ModelError::Batch { len: 0, t: 3 }), "{e:?}");
    let e = fwd(&p, &[1; 3], 0).unwrap_err();
    assert!(
        matches!(e, ModelError::SequenceLength { t: 0, .. }),
        "{e:?}"
    );
    let e = fwd(&p[..p.len() - 1], &[1; 3], 3).unwrap_err();
    assert!(matches!(e, ModelError::ParamsLength { .. }), "{e:?}");

    let mut tape = Tape::<f32>::new(Level::Naive).unwrap();
    let mut loss = |tokens: &[u32], targets: &[u32]| {
        tape.reset(true);
        model.loss(&mut tape, &p, tokens, targets, 3, &mut rng)
    };
    assert!(loss(&[1, 2, 3], &[2, 3, 4]).unwrap().is_finite());
    let e = loss(&[1, 2, 3], &[2, 3]).unwrap_err();
    assert!(
        matches!(
            e,
            ModelError::Targets {
                found: 2,
                expected: 3
            }
        ),
        "{e:?}"
    );
    let e = loss(&[1, 2, 3], &[2, 11, 4]).unwrap_err();
    assert!(
        matches!(
            e,
            ModelError::TokenId {
                id: 11,
                position: 1,
                ..
            }
        ),
        "{e:?}"
    );
    let e = loss(&[1, 12, 3], &[2, 3, 4]).unwrap_err();
    assert!(
        matches!(
            e,
            ModelError::TokenId {
                id: 12,
                position: 1,
                ..
            }
        ),
        "{e:?}"
    );
}
