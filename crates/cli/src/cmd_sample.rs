//! `ferrogpt sample`: stream generated text from a checkpoint (ours or Hugging Face GPT-2's).
//!
//! The prompt comes from `--prompt` or `--prompt-file`; tokens are drawn by the engine (on the
//! CPU: the prompt's forward pass on the tape, then one position a step with the key/value
//! cache) or, with `--no-kv-cache`, by the tape's full forward pass for every token. The text
//! ends after `--tokens`, at the end-of-text token, or where a `--stop` string appears (not
//! printed: see [`StopText`]).

use crate::common::{engine_factory, Compute, Device, DeviceArgs};
use ferrogpt_core::Tape;
use ferrogpt_model::generate::{generate_many, generate_with, Sampling, StopText};
use ferrogpt_train::checkpoint::WeightsCheck;
use ferrogpt_train::data::DataError;
use ferrogpt_train::tokenizer::{StreamDecoder, Tokenizer};
use ferrogpt_train::{CpuEngine, Engine, EngineError, EngineInit};
use rand::SeedableRng;
use rand_xoshiro::Xoshiro256PlusPlus as Rng64;
use std::io::Write;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};

#[derive(Clone, Debug, clap::Args)]
pub struct SampleArgs {
    /// A run directory of ours or a Hugging Face GPT-2 directory
    #[arg(long)]
    checkpoint: PathBuf,
    /// Text to continue [default: a newline for char models, the end-of-text token
    /// (<|endoftext|>) for others]
    #[arg(long)]
    prompt: Option<String>,
    /// Read the text to continue from this file (UTF-8, used as it is, a final newline
    /// included); instead of --prompt
    #[arg(long)]
    prompt_file: Option<PathBuf>,
    /// Tokens to generate
    #[arg(long, default_value_t = 300)]
    tokens: usize,
    /// Softmax temperature (0 = always the most likely token)
    #[arg(long, default_value_t = 0.8, allow_negative_numbers = true)]
    temperature: f64,
    /// Sample among the k most likely tokens (0 = all)
    #[arg(long, default_value_t = 40)]
    top_k: usize,
    /// Nucleus sampling: sample among the most likely tokens whose probabilities sum to at
    /// least p (after --top-k; 1 = off)
    #[arg(long, default_value_t = 1.0, allow_negative_numbers = true)]
    top_p: f64,
    /// Samples to draw from the same prompt, separated by a line of dashes; sample i draws
    /// from its own stream of the seeded generator (the seed's stream jumped i times), so the
    /// text of each is the same however they are batched
    #[arg(long, default_value_t = 1)]
    num_samples: usize,
    /// Samples generated at once, each with its own key/value cache: on the GPU one step runs
    /// them all (one product of B rows per weight); on the CPU they take turns (no faster
    /// than one after the other); on wgpu one after the other. The same text however they are
    /// batched. A batch's samples are printed when all of it has ended, not streamed
    #[arg(long, default_value_t = 1)]
    batch: usize,
    /// Seed of the sampling
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Weights of the matrices while decoding on the CPU: f32, bf16 or int8 (Q8_0, blocks of
    /// 32) [default: the format the checkpoint stores]. Embeddings, norms and biases stay f32.
    #[arg(long)]
    weights: Option<String>,
    /// Print the time to the first token and the decoding speed to stderr
    #[arg(long)]
    timing: bool,
    /// Keep generating past the tokenizer's end-of-text token [default: stop after it, as
    /// transformers' generate does]
    #[arg(long)]
    no_stop: bool,
    /// End the text where this string appears in the generated text (not printed, nor what
    /// follows it); repeat for several
    #[arg(long = "stop", value_name = "STR")]
    stops: Vec<String>,
    /// Run the full forward pass over the window for every token instead of decoding with the
    /// key/value cache (the slow reference path, in f32 on the values --weights stores; CPU
    /// only)
    #[arg(long)]
    no_kv_cache: bool,
    #[command(flatten)]
    compute: Compute,
    #[command(flatten)]
    device: DeviceArgs,
}

pub fn run(a: SampleArgs) -> Result<(), String> {
    if a.num_samples == 0 {
        return Err("--num-samples must be at least 1".into());
    }
    if a.batch == 0 {
        return Err("--batch must be at least 1".into());
    }
    if !(a.top_p > 0.0 && a.top_p <= 1.0) {
        return Err(format!("--top-p must be in (0, 1], got {}", a.top_p));
    }
    if !(a.temperature.is_finite() && a.temperature >= 0.0) {
        return Err(format!(
            "--temperature must be a non-negative number, got {}",
            a.temperature
        ));
    }
    if a.stops.iter().any(String::is_empty) {
        return Err("--stop must not be empty".into());
    }
    let text = match (&a.prompt, &a.prompt_file) {
        (Some(_), Some(_)) => return Err("give --prompt or --prompt-file, not both".into()),
        (Some(p), None) => Some(p.clone()),
        (None, Some(f)) => Some(read_prompt(f)?),
        (None, None) => None,
    };
    let level = a.compute.setup()?;
    // Bad --device/--dtype before the checkpoint is read.
    if !a.device.is_cpu()? && a.no_kv_cache {
        return Err("--no-kv-cache runs on the CPU engine only (--device cpu)".into());
    }
    let requested = crate::cmd_quantize::parse_weights(a.weights.as_deref())?;
    let t_load = std::time::Instant::now();
    // The weights' checksum is taken while the first tokens are computed (at the lowest
    // priority, so it takes the cores they leave); generation stops at the first token after
    // it fails, and the command fails with it.
    let (loaded, _, decode, mut check) = crate::cmd_quantize::load(&a.checkpoint, requested, true)?;
    let load_s = t_load.elapsed().as_secs_f64();
    let tok = &loaded.tokenizer;
    let prompt = match &text {
        Some(p) => tok.encode(p).map_err(|e| format!("prompt: {e}"))?,
        None => start_ids(tok)?,
    };
    let t_engine = std::time::Instant::now();
    let model = &loaded.model;
    let mut logits = if a.no_kv_cache {
        Logits::Tape {
            tape: Box::new(Tape::new(level).map_err(|e| e.to_string())?),
            params: loaded.params,
        }
    } else {
        Logits::Engine(inference_engine(
            level,
            &a.device,
            model,
            loaded.params,
            requested,
            Some(decode),
        )?)
    };
    // One stream of the seeded generator a sample.
    let rngs: Vec<Rng64> = std::iter::successors(Some(Rng64::seed_from_u64(a.seed)), |r| {
        let mut r = r.clone();
        r.jump();
        Some(r)
    })
    .take(a.num_samples)
    .collect();
    let sampling = Sampling {
        temperature: a.temperature,
        top_k: a.top_k,
        top_p: a.top_p,
        allowed: Some(tok.vocab_size()),
        stop: if a.no_stop { None } else { tok.eot() },
    };
    let engine_s = t_engine.elapsed().as_secs_f64();
    if let Logits::Engine(engine) = &mut logits {
        if a.batch > 1 && a.num_samples > 1 && engine.decodes_many() {
            let b = Batch {
                engine: engine.as_mut(),
                model,
                tok,
                prompt: &prompt,
                print_prompt: text.is_some(),
                sampling,
                stops: &a.stops,
                check: &mut check,
            };
            return b.run(a.tokens, a.batch, rngs, a.timing, (load_s, engine_s));
        }
    }
    let mut out = std::io::stdout().lock();
    for (i, mut rng) in rngs.into_iter().enumerate() {
        if i > 0 {
            // nanoGPT's separator between samples.
            let _ = writeln!(out, "---------------");
        }
        let mut dec = StreamDecoder::new(tok);
        let mut stop = StopText::new(a.stops.clone());
        if text.is_some() {
            // The prompt as the tokenizer reads it back, through the same decoder, so the text
            // joins the continuation as decoding the whole sequence would (a word's leading
            // space, a normalised prompt).
            for &id in &prompt {
                let s = dec.push(id).map_err(|e| e.to_string())?;
                let _ = out.write_all(s.as_bytes());
            }
        }
        // When each token arrived (the first after the prompt's prefill).
        let start = std::time::Instant::now();
        let mut times = Vec::with_capacity(a.tokens);
        let mut first_at = f64::NAN; // the first token, seconds after the process started
        let mut print = |s: &str| {
            out.write_all(s.as_bytes())
                .and_then(|_| out.flush())
                .map_err(|e| EngineError(format!("stdout: {e}")))
        };
        generate_with(
            model,
            |window: &[u32]| logits.last(model, window),
            &prompt,
            a.tokens,
            sampling,
            &mut rng,
            |id| {
                if let Some(e) = check.failed() {
                    return Err(EngineError(damaged(e, !times.is_empty())));
                }
                if times.is_empty() {
                    first_at = crate::common::since_start();
                }
                times.push(start.elapsed().as_secs_f64());
                let piece = dec.push(id).map_err(|e| EngineError(e.to_string()))?;
                let (s, flow) = stop.push(&piece);
                print(&s)?;
                Ok::<ControlFlow<()>, EngineError>(flow)
            },
        )
        .map_err(|e| e.to_string())?;
        let mut tail = String::new();
        if !stop.stopped() {
            tail += &stop.push(&dec.finish()).0;
            tail += &stop.finish();
        }
        let _ = print(&(tail + "\n"));
        if i + 1 == a.num_samples {
            std::mem::replace(&mut check, WeightsCheck::none())
                .wait()
                .map_err(|e| damaged(e, true))?;
        }
        if a.timing {
            eprintln!(
                "{}; before it: loading {:.0} ms, the engine {:.0} ms; the first token {:.0} ms \
                 after the process started",
                timing_line(logits.describe(), prompt.len(), &times),
                load_s * 1e3,
                engine_s * 1e3,
                first_at * 1e3
            );
        }
    }
    Ok(())
}

/// Samples generated side by side, `batch` at a time, on an engine that decodes several
/// sequences at once ([`Engine::decodes_many`]): each batch's texts printed in order once it
/// has ended.
struct Batch<'a> {
    engine: &'a mut dyn Engine,
    model: &'a ferrogpt_model::Gpt,
    tok: &'a Tokenizer,
    prompt: &'a [u32],
    /// Whether the prompt's text starts each sample (it was given, not the default start).
    print_prompt: bool,
    sampling: Sampling,
    stops: &'a [String],
    check: &'a mut WeightsCheck,
}

impl Batch<'_> {
    fn run(
        self,
        tokens: usize,
        batch: usize,
        mut rngs: Vec<Rng64>,
        timing: bool,
        (load_s, engine_s): (f64, f64),
    ) -> Result<(), String> {
        let Batch {
            engine,
            model,
            tok,
            prompt,
            print_prompt,
            sampling,
            stops,
            check,
        } = self;
        let mut out = std::io::stdout().lock();
        let total = rngs.len();
        for (g, group) in rngs.chunks_mut(batch).enumerate() {
            let nb = group.len();
            let mut texts: Vec<(StreamDecoder, StopText, String)> = (0..nb)
                .map(|_| {
                    (
                        StreamDecoder::new(tok),
                        StopText::new(stops.to_vec()),
                        String::new(),
                    )
                })
                .collect();
            if print_prompt {
                for (dec, _, text) in &mut texts {
                    for &id in prompt {
                        *text += &dec.push(id).map_err(|e| e.to_string())?;
                    }
                }
            }
            let prompts = vec![prompt; nb];
            // When each step's logits arrived (the first after the prompts' prefill).
            let start = std::time::Instant::now();
            let mut times = Vec::with_capacity(tokens);
            let made = generate_many(
                model,
                |wins: &[&[u32]]| {
                    let rows = engine.last_logits_many(wins);
                    times.push(start.elapsed().as_secs_f64());
                    rows
                },
                &prompts,
                tokens,
                sampling,
                group,
                |b, id| {
                    if let Some(e) = check.failed() {
                        return Err(EngineError(damaged(e, g > 0)));
                    }
                    let (dec, stop, text) = &mut texts[b];
                    let piece = dec.push(id).map_err(|e| EngineError(e.to_string()))?;
                    let (s, flow) = stop.push(&piece);
                    *text += &s;
                    Ok::<ControlFlow<()>, EngineError>(flow)
                },
            )
            .map_err(|e| e.to_string())?;
            if g + 1 == total.div_ceil(batch) {
                std::mem::replace(check, WeightsCheck::none())
                    .wait()
                    .map_err(|e| damaged(e, g > 0))?;
            }
            for (i, (dec, mut stop, mut text)) in texts.into_iter().enumerate() {
                if !stop.stopped() {
                    text += &stop.push(&dec.finish()).0;
                    text += &stop.finish();
                }
                if g * batch + i > 0 {
                    let _ = writeln!(out, "---------------");
                }
                let _ = writeln!(out, "{text}");
            }
            let _ = out.flush();
            if timing {
                let n: usize = made.iter().map(Vec::len).sum();
                eprintln!(
                    "{}; before it: loading {:.0} ms, the engine {:.0} ms",
                    batch_timing_line(engine.describe(), nb, n, &times),
                    load_s * 1e3,
                    engine_s * 1e3,
                );
            }
        }
        Ok(())
    }
}

/// One line for a batch of `nb` sequences that made `n` tokens in all: the engine, the time to
/// the first step (the prompts' prefill and one step) and the median step after it, with the
/// tokens a second the batch makes at that pace.
fn batch_timing_line(engine: String, nb: usize, n: usize, times: &[f64]) -> String {
    let Some(&first) = times.first() else {
        return format!("timing: {engine}: no tokens");
    };
    let mut steps: Vec<f64> = times.windows(2).map(|w| w[1] - w[0]).collect();
    steps.sort_by(f64::total_cmp);
    let median = steps.get(steps.len() / 2).copied().unwrap_or(f64::NAN);
    format!(
        "timing: {engine}: {nb} sequences side by side, {n} tokens; first step {:.1} ms, then \
         median {:.2} ms/step over {} steps ({:.1} tokens/s over the batch)",
        first * 1e3,
        median * 1e3,
        steps.len(),
        nb as f64 / median
    )
}

/// The error of a checksum that failed while tokens were being generated (`printed`: some
/// were printed already).
fn damaged(e: ferrogpt_train::checkpoint::CheckpointError, printed: bool) -> String {
    if printed {
        format!("{e} (the text printed above came from these weights)")
    } else {
        e.to_string()
    }
}

/// Reads `--prompt-file`: its text exactly. Errors, in one line: the file cannot be read, or
/// it is not UTF-8 (with the offset of the first bad byte).
fn read_prompt(path: &Path) -> Result<String, String> {
    let bytes =
        std::fs::read(path).map_err(|e| format!("--prompt-file {}: {e}", path.display()))?;
    String::from_utf8(bytes).map_err(|e| {
        format!(
            "--prompt-file {}: not UTF-8 text (invalid byte at offset {})",
            path.display(),
            e.utf8_error().valid_up_to()
        )
    })
}

/// Where the last position's logits come from: the engine (its key/value cache on the CPU), or
/// the tape's full forward pass over the window for every token (`--no-kv-cache`).
enum Logits {
    Engine(Box<dyn Engine>),
    Tape {
        tape: Box<Tape<f32>>,
        params: Vec<f32>,
    },
}

impl Logits {
    /// The vocab_size logits of the window's last position.
    fn last(
        &mut self,
        model: &ferrogpt_model::Gpt,
        window: &[u32],
    ) -> Result<Vec<f32>, EngineError> {
        match self {
            Logits::Engine(e) => e.last_logits(window, window.len()),
            Logits::Tape { tape, params } => {
                // Inference: the tape records nothing, so no dropout draws from this generator.
                let mut unused = rand_xoshiro::Xoshiro256PlusPlus::seed_from_u64(0);
                tape.reset(false);
                let logits =
                    model.forward(tape, params, window, window.len(), true, &mut unused)?;
                Ok(tape.value(logits)[..model.config.vocab_size].to_vec())
            }
        }
    }

    fn describe(&self) -> String {
        match self {
            Logits::Engine(e) => e.describe(),
            Logits::Tape { tape, .. } => format!(
                "cpu ({}, {} threads, full forward a token, no kv cache)",
                tape.level(),
                rayon::current_num_threads()
            ),
        }
    }
}

/// One line: the engine, the time to the first token (prefill + first step) and the median
/// time of the later tokens.
fn timing_line(engine: String, prompt: usize, times: &[f64]) -> String {
    let Some(&first) = times.first() else {
        return format!("timing: {engine}: no tokens");
    };
    let mut steps: Vec<f64> = times.windows(2).map(|w| w[1] - w[0]).collect();
    steps.sort_by(f64::total_cmp);
    let Some(&median) = steps.get(steps.len() / 2) else {
        return format!(
            "timing: {engine}: prompt {prompt} tokens, first token {:.1} ms",
            first * 1e3
        );
    };
    format!(
        "timing: {engine}: prompt {prompt} tokens, first token {:.1} ms, then median {:.2} ms/token \
         over {} tokens ({:.1} tokens/s)",
        first * 1e3,
        median * 1e3,
        steps.len(),
        1.0 / median
    )
}

/// The engine for `sample` and `eval`: for `sample` (`decoding` is Some) the CPU engine
/// decoding with the given matrices (or the parameters converted to `requested`), for `eval`
/// (None) the CPU engine's tape alone; else the device's engine. `--weights` other than f32
/// needs the CPU engine.
pub fn inference_engine(
    level: ferrogpt_core::Level,
    device: &DeviceArgs,
    model: &ferrogpt_model::Gpt,
    params: Vec<f32>,
    requested: Option<ferrogpt_gemm::gemv::WeightFormat>,
    decoding: Option<Option<ferrogpt_model::kvcache::DecodeWeights>>,
) -> Result<Box<dyn Engine>, String> {
    let init = EngineInit {
        model,
        params,
        train: None,
    };
    if let Some(index) = device.wgpu()? {
        return crate::common::wgpu_engine(index, requested, init);
    }
    let (dev, _) = device.parse()?;
    if dev == Device::Cpu {
        let engine = CpuEngine::new(init, level).map_err(|e| e.to_string())?;
        let Some(decode) = decoding else {
            return Ok(Box::new(engine));
        };
        let format = decode
            .as_ref()
            .map_or(requested.unwrap_or_default(), |w| w.format());
        let engine = engine
            .with_weights(format, decode)
            .map_err(|e| e.to_string())?;
        return Ok(Box::new(engine));
    }
    if let Some(f) = requested.filter(|f| *f != ferrogpt_gemm::gemv::WeightFormat::F32) {
        return Err(format!(
            "--weights {f} runs on the CPU engine only (--device cpu); the GPU engine computes \
             in its --dtype"
        ));
    }
    engine_factory(level, device, 0)?(init).map_err(|e| e.to_string())
}

/// What generation starts from without a prompt: a newline for a char model (nanoGPT starts
/// there), else the tokenizer's end-of-text token, as a new document. Errors: a model without
/// a tokenizer, or one without an end-of-text token.
pub fn start_ids(tok: &Tokenizer) -> Result<Vec<u32>, String> {
    match tok {
        Tokenizer::Char(_) => Ok(tok.encode("\n").unwrap_or_else(|_| vec![0])),
        Tokenizer::IdsOnly { vocab_size } => Err(DataError::NoTokenizer {
            vocab_size: *vocab_size,
        }
        .to_string()),
        _ => tok.eot().map(|id| vec![id]).ok_or_else(|| {
            "the tokenizer has no end-of-text token to start from; pass --prompt".to_string()
        }),
    }
}
