//! The fast decoder (`KvCache::decode`, GEMV kernels over f32/bf16/int8 matrices) against the
//! tape's full forward pass and against the plain reference decoder, for every family, every
//! weight format and every GEMV kernel this CPU has (the others are named as SKIPPED).
//!
//! Tolerances, relative to the largest |logit| of the position (the models are scaled up so
//! that logits are O(1–10)): f32 1e-4 (summation order only); bf16 1e-4 where the head is its
//! own matrix, 1e-2 with a tied head (the tape multiplies by the f32 embedding, the decoder by
//! its bf16 rounding, 2⁻⁹ relative per weight; measured 2.4e-3); int8 6e-2 (each product's
//! input quantized to 8 bits per block of 32, through every layer; measured up to 3.1e-2 on
//! these models, with the AVX2 and the plain kernels alike).

use ferrogpt_core::{Level, Tape};
use ferrogpt_gemm::gemv::{Kernel, WeightFormat};
use ferrogpt_model::config::{Family, Position};
use ferrogpt_model::generate::{generate_many, generate_with, Sampling};
use ferrogpt_model::kvcache::{quant, DecodeWeights, KvCache};
use ferrogpt_model::{Gpt, GptConfig};
use rand::{Rng, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus as Rng64;

/// GPT-2 (learned and rotary positions) and Llama (GQA, tied and untied head), with widths
/// that are not multiples of the int8 block or the vector lanes.
fn configs() -> Vec<(&'static str, GptConfig)> {
    let gpt2 = GptConfig {
        n_layer: 2,
        n_head: 3,
        n_embd: 48,
        block_size: 24,
        vocab_size: 61,
        padded_vocab_size: 64,
        ..GptConfig::default()
    };
    let llama = GptConfig {
        n_layer: 2,
        n_head: 4,
        n_kv_head: Some(2),
        n_embd: 64,
        ffn_hidden: Some(88),
        block_size: 24,
        vocab_size: 67,
        padded_vocab_size: 128,
        family: Family::Llama,
        pos: Position::Rope,
        tie_embeddings: false,
        norm_eps: 1e-5,
        ..GptConfig::default()
    };
    vec![
        ("gpt2", gpt2.clone()),
        (
            "gpt2-rope",
            GptConfig {
                pos: Position::Rope,
                ..gpt2
            },
        ),
        ("llama", llama.clone()),
        (
            "llama-tied",
            GptConfig {
                tie_embeddings: true,
                ..llama
            },
        ),
    ]
}

/// The model with weights large enough (N(0, 0.02) + U(±0.15)) that logits spread and every
/// path matters; padding rows stay zero.
fn model_and_params(cfg: GptConfig, seed: u64) -> (Gpt, Vec<f32>) {
    let model = Gpt::new(cfg).unwrap();
    let mut rng = Rng64::seed_from_u64(seed);
    let mut params: Vec<f32> = model.layout.init(&model.config, &mut rng);
    let v = model.config.vocab_size;
    for (_, p) in &model.layout.named {
        let rows = if model.layout.is_vocab_rows(p) {
            v
        } else {
            p.rows
        };
        for x in &mut params[p.offset..p.offset + rows * p.cols] {
            *x += rng.gen_range(-0.15..0.15);
        }
    }
    (model, params)
}

fn kernels() -> Vec<Kernel> {
    Kernel::ALL
        .into_iter()
        .filter(|k| {
            if !k.supported() {
                eprintln!("SKIPPED: gemv kernel {k} (this CPU lacks its instructions)");
            }
            k.supported()
        })
        .collect()
}

/// Every position's logits of the tape's forward pass, (T, V).
fn full_forward(model: &Gpt, params: &[f32], tokens: &[u32]) -> Vec<Vec<f32>> {
    let mut tape = Tape::new(Level::Naive).unwrap();
    tape.reset(false);
    let mut rng = Rng64::seed_from_u64(0);
    let t = tokens.len();
    let logits = model
        .forward(&mut tape, params, tokens, t, false, &mut rng)
        .unwrap();
    let (v, vp) = (model.config.vocab_size, model.config.padded_vocab_size);
    let all = tape.value(logits);
    (0..t).map(|i| all[i * vp..i * vp + v].to_vec()).collect()
}

/// max |a - b| / max |b|.
fn rel_err(a: &[f32], b: &[f32]) -> f64 {
    let scale = b.iter().fold(0f32, |m, x| m.max(x.abs())) as f64;
    let diff = a
        .iter()
        .zip(b)
        .fold(0f64, |m, (x, y)| m.max((x - y).abs() as f64));
    diff / scale.max(1e-6)
}

fn tolerance(format: WeightFormat, tied: bool) -> f64 {
    match (format, tied) {
        (WeightFormat::F32, _) => 1e-4,
        (WeightFormat::Bf16, false) => 1e-4,
        (WeightFormat::Bf16, true) => 1e-2,
        (WeightFormat::Int8, _) => 6e-2,
    }
}

#[test]
fn decoding_equals_the_full_forward_every_family_format_kernel() {
    let kernels = kernels();
    for (name, cfg) in configs() {
        let (model, params) = model_and_params(cfg, 1);
        let tied = model.layout.lm_head.is_none();
        let mut rng = Rng64::seed_from_u64(2);
        let tokens: Vec<u32> = (0..20)
            .map(|_| rng.gen_range(0..model.config.vocab_size as u32))
            .collect();
        for format in WeightFormat::ALL {
            // The tape sees the values the format stores.
            let (pq, w) = quant::quantize(&model, params.clone(), format).unwrap();
            let want = full_forward(&model, &pq, &tokens);
            for &kernel in &kernels {
                let w = w.clone().with_kernel(kernel).unwrap();
                let mut cache = KvCache::new();
                let mut worst = 0f64;
                for n in 1..=tokens.len() {
                    let got = cache.decode(&model, &pq, &w, &tokens[..n]).unwrap();
                    assert_eq!(cache.len(), n);
                    worst = worst.max(rel_err(&got, &want[n - 1]));
                }
                let tol = tolerance(format, tied);
                eprintln!(
                    "{name} {format} {kernel}: worst relative error {worst:.2e} (tol {tol:.0e})"
                );
                assert!(
                    worst <= tol,
                    "{name} {format} {kernel}: decoded logits off the full forward by {worst:.2e} (tol {tol:.0e})"
                );
            }
        }
    }
}

#[test]
fn cache_reuse_divergence_and_sliding_window_match_the_reference() {
    for (name, cfg) in configs() {
        let (model, params) = model_and_params(cfg, 3);
        let w = DecodeWeights::new(&model, &params, WeightFormat::F32).unwrap();
        let mut rng = Rng64::seed_from_u64(4);
        let v = model.config.vocab_size as u32;
        let seq: Vec<u32> = (0..30).map(|_| rng.gen_range(0..v)).collect();
        let mut fast = KvCache::new();
        let check = |fast: &mut KvCache, tokens: &[u32]| {
            let got = fast.decode(&model, &params, &w, tokens).unwrap();
            let want = KvCache::new().logits(&model, &params, tokens).unwrap();
            let e = rel_err(&got, &want);
            assert!(
                e <= 1e-5,
                "{name}: {} tokens: off the reference by {e:.2e}",
                tokens.len()
            );
        };
        // Growing one token at a time (reuse), a prompt of several at once, a diverging
        // sequence (recomputes from the first difference), a slid window (from scratch).
        for n in [1, 2, 3, 8, 9, 20] {
            check(&mut fast, &seq[..n]);
        }
        let mut other = seq[..20].to_vec();
        other[12] = (other[12] + 1) % v;
        check(&mut fast, &other);
        assert_eq!(fast.reusable(&other), 19);
        check(&mut fast, &seq[5..24]);
        check(&mut fast, &seq[6..24]);
    }
}

#[test]
fn greedy_text_is_the_same_with_and_without_the_fast_path() {
    for (name, cfg) in configs() {
        let (model, params) = model_and_params(cfg, 5);
        let w = DecodeWeights::new(&model, &params, WeightFormat::F32).unwrap();
        let greedy = Sampling {
            temperature: 0.0,
            top_k: 0,
            top_p: 1.0,
            allowed: None,
            stop: None,
        };
        let prompt = [1u32, 2, 3];
        let n = model.config.block_size + 10; // past the block: the window slides
        let block = model.config.block_size;
        let mut rng = Rng64::seed_from_u64(0);
        let mut plain = KvCache::new();
        let reference = generate_with(
            &model,
            |win: &[u32]| plain.logits(&model, &params, &win[win.len().saturating_sub(block)..]),
            &prompt,
            n,
            greedy,
            &mut rng,
            |_| Ok(()),
        )
        .unwrap();
        let mut fast = KvCache::new();
        let got = generate_with(
            &model,
            |win: &[u32]| fast.decode(&model, &params, &w, &win[win.len().saturating_sub(block)..]),
            &prompt,
            n,
            greedy,
            &mut rng,
            |_| Ok(()),
        )
        .unwrap();
        assert_eq!(got, reference, "{name}: greedy tokens differ");
    }
}

/// Sequences generated side by side (`generate_many`) get each the tokens `generate_with` gives
/// it alone with the same generator: prompts of different lengths, sampling with top-k and
/// top-p, a stop token that ends some early, `emit` ending one, windows that slide past the
/// block size; the ended sequences' windows stay as they were.
#[test]
fn sequences_generated_side_by_side_are_the_ones_generated_alone() {
    for (name, cfg) in configs() {
        let (model, params) = model_and_params(cfg, 9);
        let (block, v) = (model.config.block_size, model.config.vocab_size);
        let mut rng = Rng64::seed_from_u64(3);
        let prompts: Vec<Vec<u32>> = [1usize, 5, 17, block, 2]
            .iter()
            .map(|&n| (0..n).map(|_| rng.gen_range(0..v as u32)).collect())
            .collect();
        let refs: Vec<&[u32]> = prompts.iter().map(Vec::as_slice).collect();
        let mut sampling = Sampling {
            temperature: 1.3,
            top_k: 20,
            top_p: 0.9,
            allowed: Some(v - 3),
            stop: None,
        };
        let n = block + 6;
        let gens = || -> Vec<Rng64> { (0..5).map(|i| Rng64::seed_from_u64(40 + i)).collect() };
        // Sequence 4 ends after its third token (emit says so).
        let cut = |b: usize, k: usize| match b == 4 && k == 3 {
            true => std::ops::ControlFlow::Break(()),
            false => std::ops::ControlFlow::Continue(()),
        };
        let alone = |sampling: Sampling| -> Vec<Vec<u32>> {
            let mut out = Vec::new();
            for (b, (p, mut g)) in refs.iter().zip(gens()).enumerate() {
                let mut cache = KvCache::new();
                let mut k = 0;
                out.push(
                    generate_with(
                        &model,
                        |win: &[u32]| cache.logits(&model, &params, win),
                        p,
                        n,
                        sampling,
                        &mut g,
                        |_| {
                            k += 1;
                            Ok::<_, ferrogpt_model::ModelError>(cut(b, k))
                        },
                    )
                    .unwrap(),
                );
            }
            out
        };
        // The stop token: one that sequence 1 draws after its fifth token and another
        // sequence never draws, so that one ends early and one runs to n.
        let free = alone(sampling);
        let stop = free[1][5..]
            .iter()
            .copied()
            .find(|t| free[..4].iter().any(|s| !s.contains(t)))
            .expect("a token some sequence never draws");
        sampling.stop = Some(stop);
        let alone = alone(sampling);
        let mut caches: Vec<KvCache> = (0..5).map(|_| KvCache::new()).collect();
        let mut counts = [0usize; 5];
        let mut held = vec![Vec::new(); 5];
        let mut rngs = gens();
        let together = generate_many(
            &model,
            |wins: &[&[u32]]| {
                let mut out = Vec::new();
                for (b, (w, c)) in wins.iter().zip(&mut caches).enumerate() {
                    assert!(w.len() <= block);
                    held[b].push(w.to_vec());
                    out.extend(c.logits(&model, &params, w)?);
                }
                Ok::<_, ferrogpt_model::ModelError>(out)
            },
            &refs,
            n,
            sampling,
            &mut rngs,
            |b, _| {
                counts[b] += 1;
                Ok::<_, ferrogpt_model::ModelError>(cut(b, counts[b]))
            },
        )
        .unwrap();
        assert_eq!(together, alone, "{name}");
        assert!(
            alone.iter().any(|t| t.len() < n),
            "{name}: nothing ended early"
        );
        assert!(
            alone.iter().any(|t| t.len() == n),
            "{name}: everything ended early"
        );
        assert_eq!(alone[4].len(), 3, "{name}");
        // After sequence 4 ended, it was offered its last window again and again.
        let ended = &held[4][3..];
        assert!(ended.windows(2).all(|w| w[0] == w[1]), "{name}");
        // Greedy (its own path: the argmax of the f32 rows) over the allowed ids.
        let greedy = Sampling {
            temperature: 0.0,
            top_k: 0,
            top_p: 1.0,
            allowed: Some(v - 3),
            stop: None,
        };
        let mut caches: Vec<KvCache> = (0..5).map(|_| KvCache::new()).collect();
        let together = generate_many(
            &model,
            |wins: &[&[u32]]| {
                let mut out = Vec::new();
                for (w, c) in wins.iter().zip(&mut caches) {
                    out.extend(c.logits(&model, &params, w)?);
                }
                Ok::<_, ferrogpt_model::ModelError>(out)
            },
            &refs,
            n,
            greedy,
            &mut gens(),
            |_, _| Ok::<_, ferrogpt_model::ModelError>(()),
        )
        .unwrap();
        for (p, got) in refs.iter().zip(&together) {
            let mut cache = KvCache::new();
            let want = generate_with(
                &model,
                |win: &[u32]| cache.logits(&model, &params, win),
                p,
                n,
                greedy,
                &mut Rng64::seed_from_u64(0),
                |_| Ok::<_, ferrogpt_model::ModelError>(()),
            )
            .unwrap();
            assert_eq!(got, &want, "{name}: greedy");
            assert!(got.iter().all(|&t| (t as usize) < v - 3), "{name}");
        }
        // A prompt longer than the block size is refused, as generate_with refuses it.
        let long = vec![1u32; block + 1];
        let e = generate_many(
            &model,
            |_: &[&[u32]]| Ok::<_, ferrogpt_model::ModelError>(vec![]),
            &[&[1u32][..], &long],
            3,
            sampling,
            &mut gens()[..2],
            |_, _| Ok::<_, ferrogpt_model::ModelError>(()),
        )
        .unwrap_err();
        assert!(e.to_string().contains("block"), "{name}: {e}");
    }
}

#[test]
fn converted_weights_survive_a_checkpoint_round_trip() {
    let dir = std::env::temp_dir().join(format!("ferrogpt-decode-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for (name, cfg) in configs() {
        let (model, params) = model_and_params(cfg, 7);
        for format in [WeightFormat::Bf16, WeightFormat::Int8] {
            let (pq, w) = quant::quantize(&model, params.clone(), format).unwrap();
            let path = dir.join(format!("{name}-{format}.safetensors"));
            quant::save(&path, &model, &pq, &w, Default::default()).unwrap();
            assert_eq!(quant::file_format(&path).unwrap(), format);
            let (back, wb) = match format {
                WeightFormat::Int8 => quant::load_int8(&path, &model).unwrap(),
                // bf16 files are read by the usual loader (bf16 widened), then converted.
                _ => {
                    let (p, _) = ferrogpt_model::checkpoint::load_weights(&path, &model).unwrap();
                    quant::quantize(&model, p, format).unwrap()
                }
            };
            assert_eq!(back, pq, "{name} {format}: parameters");
            let tokens = [3u32, 1, 4, 1, 5];
            let a = KvCache::new().decode(&model, &pq, &w, &tokens).unwrap();
            let b = KvCache::new().decode(&model, &back, &wb, &tokens).unwrap();
            assert_eq!(a, b, "{name} {format}: logits after the round trip");
        }
    }
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn a_damaged_int8_file_is_an_error() {
    let (model, params) = model_and_params(configs()[0].1.clone(), 9);
    let (pq, w) = quant::quantize(&model, params, WeightFormat::Int8).unwrap();
    let dir = std::env::temp_dir().join(format!("ferrogpt-decode-bad-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("m.safetensors");
    quant::save(&path, &model, &pq, &w, Default::default()).unwrap();
    // A model of another shape does not fit the file.
    let other = Gpt::new(GptConfig {
        n_embd: 51,
        ..model.config.clone()
    })
    .unwrap();
    let e = quant::load_int8(&path, &other).unwrap_err().to_string();
    assert!(e.contains("tensor"), "{e}");
    // A truncated file.
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
    let e = quant::load_int8(&path, &model).unwrap_err().to_string();
    assert!(e.contains("safetensors"), "{e}");
    std::fs::remove_dir_all(&dir).ok();
}

/// Weights that diverged to infinity or NaN cannot be quantized to int8: `quantize` answers
/// with an error (it used to panic inside the matrix conversion), and bf16 still converts.
#[test]
fn quantizing_non_finite_weights_is_an_error() {
    let (model, mut params) = model_and_params(configs()[0].1.clone(), 10);
    let fc = model.layout.blocks[0].fc_w;
    params[fc.offset + 5] = f32::INFINITY;
    let e = quant::quantize(&model, params.clone(), WeightFormat::Int8)
        .unwrap_err()
        .to_string();
    assert!(e.contains("inf") && e.contains("Q8_0"), "{e}");
    params[fc.offset + 5] = f32::NAN;
    assert!(quant::quantize(&model, params.clone(), WeightFormat::Int8).is_err());
    assert!(quant::quantize(&model, params, WeightFormat::Bf16).is_ok());
}

/// A parameter buffer of the wrong length, or converted weights of another model, are errors
/// of `quant::save` and `DecodeWeights::dequantize_into` (they used to panic), and nothing is
/// written.
#[test]
fn saving_or_dequantizing_with_the_wrong_buffer_is_an_error() {
    let (model, params) = model_and_params(configs()[0].1.clone(), 11);
    let (other, other_params) = model_and_params(configs()[2].1.clone(), 11);
    let dir = std::env::temp_dir().join(format!("ferrogpt-decode-short-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("m.safetensors");
    for format in WeightFormat::ALL {
        let (pq, w) = quant::quantize(&model, params.clone(), format).unwrap();
        let n = pq.len();
        for len in [0, n / 2, n - 1, n + 1] {
            let mut buf = pq.clone();
            buf.resize(len, 0.0);
            let e = quant::save(&path, &model, &buf, &w, Default::default()).unwrap_err();
            assert!(
                matches!(e, quant::QuantError::ParamsLength { found, expected } if found == len && expected == n),
                "{format} {len}: {e}"
            );
            assert!(!path.exists(), "{format} {len}: a file was written");
            let before = buf.clone();
            let e = w.dequantize_into(&model, &mut buf).unwrap_err();
            assert!(
                matches!(e, quant::QuantError::ParamsLength { .. }),
                "{format} {len}: {e}"
            );
            assert!(buf == before, "{format} {len}: the buffer changed");
        }
        // Weights converted from another model.
        let (_, wo) = quant::quantize(&other, other_params.clone(), format).unwrap();
        let e = quant::save(&path, &model, &pq, &wo, Default::default()).unwrap_err();
        assert!(e.to_string().contains("another model"), "{format}: {e}");
        assert!(!path.exists(), "{format}: a file was written");
        let mut buf = pq.clone();
        let e = wo.dequantize_into(&model, &mut buf).unwrap_err();
        assert!(e.to_string().contains("another model"), "{format}: {e}");
        // The right buffer still works.
        w.dequantize_into(&model, &mut buf).unwrap();
        assert!(buf == pq, "{format}");
    }
    std::fs::remove_dir_all(&dir).ok();
}

/// Both decoders check the positions they are to compute once per call, before the cache
/// changes: an id past V (which read a padding row, or past Vp another tensor's), more tokens
/// than the block size (past a learned position table), a buffer of the wrong length, and for
/// the fast one weights of another model, are errors; the cache then still serves its
/// sequence.
#[test]
fn decoders_refuse_what_they_cannot_read() {
    use ferrogpt_model::ModelError;
    for (name, cfg) in configs() {
        let (model, params) = model_and_params(cfg.clone(), 13);
        let (other, other_params) = model_and_params(
            GptConfig {
                n_layer: 1,
                ..cfg.clone()
            },
            13,
        );
        let (v, vp, block) = (
            model.config.vocab_size as u32,
            model.config.padded_vocab_size as u32,
            model.config.block_size,
        );
        let seq: Vec<u32> = (0..8).map(|i| (i * 5 % v as usize) as u32).collect();
        for format in [WeightFormat::F32, WeightFormat::Int8] {
            let w = DecodeWeights::new(&model, &params, format).unwrap();
            let wo = DecodeWeights::new(&other, &other_params, format).unwrap();
            for fast in [false, true] {
                let what = format!("{name} {format} fast={fast}");
                let run = |cache: &mut KvCache, p: &[f32], w: &DecodeWeights, t: &[u32]| {
                    if fast {
                        cache.decode(&model, p, w, t)
                    } else {
                        cache.logits(&model, p, t)
                    }
                };
                let mut cache = KvCache::new();
                let want = run(&mut cache, &params, &w, &seq).unwrap();
                for (id, at) in [(v, 8), (vp, 8), (u32::MAX, 8), (v, 3)] {
                    let mut toks = seq.clone();
                    toks.push(1);
                    toks[at] = id;
                    let e = run(&mut cache, &params, &w, &toks).unwrap_err();
                    assert!(
                        matches!(e, ModelError::TokenId { id: i, position, .. } if i == id && position == at),
                        "{what}: {e:?}"
                    );
                    assert_eq!(cache.len(), seq.len(), "{what}: the cache changed");
                }
                let long: Vec<u32> = (0..block as u32 + 1).map(|i| i % v).collect();
                let e = run(&mut cache, &params, &w, &long).unwrap_err();
                assert!(
                    matches!(e, ModelError::SequenceLength { t, max } if t == block + 1 && max == block),
                    "{what}: {e:?}"
                );
                let e = run(&mut cache, &params[1..], &w, &seq).unwrap_err();
                assert!(
                    matches!(e, ModelError::ParamsLength { .. }),
                    "{what}: {e:?}"
                );
                if fast {
                    let e = run(&mut cache, &params, &wo, &seq).unwrap_err();
                    assert!(
                        matches!(e, ModelError::Quant(quant::QuantError::OtherModel { .. })),
                        "{what}: {e:?}"
                    );
                }
                assert_eq!(cache.len(), seq.len(), "{what}: the cache changed");
                // The cache still holds its sequence: the same logits, nothing recomputed
                // wrongly.
                assert_eq!(run(&mut cache, &params, &w, &seq).unwrap(), want, "{what}");
            }
        }
    }
}
