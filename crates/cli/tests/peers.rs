//! Peers beside ours in saved results (issue 21): `bench train --peer-json FILE` and
//! `--peer-llmc-log FILE` record PyTorch's and llm.c's training steps as peer rows of the saved
//! result, and `ferrogpt report` shows them with the ratio of ours to theirs. Bad peer files
//! fail in one line before anything runs, and nothing is saved.
//!
//! The fixtures are written here in the shapes the peers print: the JSON object of
//! `bench/peers/pytorch_gpt2.py` and `pytorch_llama.py` in step-timing mode (their keys, read
//! from the scripts), and a log of llm.c's `train_gpt2cu` (its parameter table and step lines,
//! from its printf formats). Their figures are made up for the test.

mod common;

use common::{fails_with_all, ok, run, s, tmp, verse_file};
use ferrogpt_report::peer::{PeerRun, RunShape};
use ferrogpt_report::schema::{Cuda, CudaDevice, TrainFigures, TrainRow};
use ferrogpt_report::svg::num;
use ferrogpt_report::{Figures, Machine, ResultFile, SCHEMA, SCHEMA_VERSION};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};

/// This machine's CPU model, as `ferrogpt info` (and so the saved machine record) names it.
fn cpu_model() -> String {
    let info: Value =
        serde_json::from_str(&ok(&["info", "--format", "json", "--no-peak"]).stdout).unwrap();
    info["model"].as_str().unwrap().to_string()
}

/// The distinct characters of the test text: the char vocabulary of a run on it.
fn vocab(text: &Path) -> usize {
    let t = std::fs::read_to_string(text).unwrap();
    t.chars().collect::<std::collections::BTreeSet<_>>().len()
}

/// What `python3 bench/peers/pytorch_gpt2.py --device cpu --threads 2 --n-layer 4 --n-head 4
/// --n-embd 128 --block-size 64 --vocab V --batch 2 --seq 16 --steps 50 --warmup 10` prints
/// (time_steps' result after setup_device's facts, then env and loadavg_at_end; on the CPU no
/// memory figures and no MFU).
fn pytorch_gpt2_json(device_name: &str, vocab: usize) -> Value {
    json!({
        "device": "cpu",
        "dtype": "fp32",
        "compile": false,
        "device_name": device_name,
        "mode": "step-timing",
        "preset": null,
        "config": {"n_layer": 4, "n_head": 4, "n_embd": 128, "block_size": 64, "vocab": vocab,
                   "batch": 2, "seq": 16},
        "dropout": 0.0,
        "params": 802_048,
        "optimizer": "AdamW (fused)",
        "steps": 50,
        "warmup": 10,
        "median_step_s": 0.008,
        "mean_step_s": 0.0082,
        "min_step_s": 0.0075,
        "max_step_s": 0.011,
        "first_step_s": 0.05,
        "tokens_per_s": 4000.0,
        "flops_per_token": 4_915_200,
        "achieved_tflops": 0.019_660_8,
        "peak_tflops": null,
        "peak_tflops_source": null,
        "mfu": null,
        "last_loss": 3.25,
        "env": {"torch": "2.15.0+cu132", "python": "3.11.7", "machine": "x86_64",
                "cpu": device_name, "cpu_count": 2, "threads": 2,
                "loadavg_at_start": [0.31, 0.2, 0.1], "time": "2026-12-08T10:00:00+00:00"},
        "loadavg_at_end": [0.5, 0.3, 0.1]
    })
}

/// What `python3 bench/peers/pytorch_llama.py --device cpu --compile --threads 2 --vocab V
/// --batch 2 --seq 32` prints (the llama-tiny preset otherwise).
fn pytorch_llama_json(device_name: &str, vocab: usize) -> Value {
    json!({
        "device": "cpu",
        "dtype": "fp32",
        "compile": true,
        "device_name": device_name,
        "mode": "step-timing",
        "model": "llama",
        "preset": null,
        "config": {"n_layer": 4, "n_embd": 128, "n_head": 4, "n_kv_head": 2, "ffn": 344,
                   "vocab": vocab, "seq": 32, "batch": 2, "tie": false,
                   "rope_theta": 10000.0, "rms_norm_eps": 1e-5},
        "gqa": "enable_gqa",
        "params": 700_000,
        "optimizer": "AdamW (fused)",
        "steps": 20,
        "warmup": 3,
        "median_step_s": 0.016,
        "median_step_ms": 16.0,
        "mean_step_s": 0.017,
        "min_step_s": 0.015,
        "max_step_s": 0.02,
        "first_step_s": 9.5,
        "tokens_per_s": 4000.0,
        "flops_per_token": 4_000_000,
        "achieved_tflops": 0.016,
        "peak_tflops": null,
        "peak_tflops_source": null,
        "mfu": null,
        "last_loss": 3.5,
        "env": {"torch": "2.11.0+cu128", "python": "3.12.3", "machine": "x86_64",
                "cpu": device_name, "cpu_count": 2, "threads": 2,
                "loadavg_at_start": [0.1, 0.1, 0.1], "time": "2026-12-08T10:05:00+00:00"},
        "loadavg_at_end": [0.2, 0.1, 0.1]
    })
}

/// The gpt2 run the PyTorch fixture timed: one simd step of shakespeare-cpu at B=2, T=16, after
/// `warmup` untimed ones.
fn gpt2_run<'a>(data: &'a str, saved: &'a str, warmup: &'a str) -> Vec<&'a str> {
    vec![
        "bench",
        "train",
        "--levels",
        "simd",
        "--steps",
        "1",
        "--warmup",
        warmup,
        "--threads",
        "1",
        "--batch-size",
        "2",
        "--seq-len",
        "16",
        "--data",
        data,
        "--save",
        saved,
        "--label",
        "here",
    ]
}

fn write_json(path: &Path, v: &Value) -> PathBuf {
    std::fs::write(path, serde_json::to_string_pretty(v).unwrap()).unwrap();
    path.to_path_buf()
}

/// The one result file in `dir`.
fn only_result(dir: &Path) -> ResultFile {
    let files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    ferrogpt_report::load(&files[0]).unwrap()
}

fn train_figures(r: &ResultFile) -> &TrainFigures {
    match &r.figures {
        Figures::Train { train } => train,
        Figures::Matmul { .. } => panic!("not a train result"),
    }
}

#[test]
fn pytorch_peer_rows_are_saved_and_reported_with_the_ratio() {
    let dir = tmp("pytorch");
    let text = verse_file(&dir);
    let model = cpu_model();
    let torch = write_json(
        &dir.join("torch-gpt2.json"),
        &pytorch_gpt2_json(&model, vocab(&text)),
    );
    let saved = dir.join("saved");
    let mut args = gpt2_run(s(&text), s(&saved), "0");
    args.extend(["--peer-json", s(&torch)]);
    let o = ok(&args);
    let r = only_result(&saved);
    let train = train_figures(&r);
    assert_eq!(train.rows.len(), 2);
    let (ours, peer) = (&train.rows[0], &train.rows[1]);
    assert!(!ours.peer && ours.peer_source.is_none());
    assert!(peer.peer);
    assert_eq!(peer.engine, "pytorch 2.15 eager fp32");
    assert_eq!(peer.step_s_median, 0.008);
    assert_eq!(peer.step_s_min, 0.0075);
    assert_eq!(peer.tokens_per_sec, 4000.0);
    assert_eq!(peer.final_loss, 3.25);
    assert_eq!(peer.threads, 2);
    assert!(peer.phases_median.is_none() && peer.mfu.is_none());
    // Model FLOP/s: our FLOPs per step over the peer's median step.
    let flops_per_step = ours.model_gflops * ours.step_s_median;
    assert!(
        (peer.model_gflops * peer.step_s_median - flops_per_step).abs() < 1e-9 * flops_per_step
    );
    let src = peer.peer_source.as_ref().unwrap();
    assert_eq!(src.file, s(&torch));
    assert_eq!(src.tool, "bench/peers/pytorch_gpt2.py");
    assert_eq!(src.version.as_deref(), Some("torch 2.15.0+cu132"));
    assert_eq!(src.device_name.as_deref(), Some(model.as_str()));
    assert_eq!((src.steps, src.warmup), (50, 10));
    let ratio = ours.tokens_per_sec / 4000.0;
    assert!(
        o.stdout.contains(&format!(
            "peer pytorch 2.15 eager fp32: 8.00 ms/step, 4000 tokens/s; our fastest over it {ratio:.2}x"
        )),
        "{}",
        o.stdout
    );
    // The saved file reads and writes back unchanged, peer_source included.
    let text_saved = r.to_json();
    assert_eq!(ResultFile::from_json(&text_saved).unwrap(), r);

    // The report: the peer's row, marked, and ours over it in the speedups table.
    let out = dir.join("report");
    ok(&["report", s(&saved), "--out", s(&out)]);
    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    let html = std::fs::read_to_string(out.join("index.html")).unwrap();
    let speedups = format!(
        "| here | simd | {} | 1.00× | pytorch 2.15 eager fp32 {} | {}× |",
        num(ours.tokens_per_sec),
        num(4000.0),
        num(ratio)
    );
    assert!(md.contains(&speedups), "{speedups} not in {md}");
    assert!(
        md.contains("| pytorch 2.15 eager fp32 (peer) | 4000 (8.00 ms) |"),
        "{md}"
    );
    assert!(
        md.contains("torch 2.15.0+cu132, median of 50 steps after 10 warm-up"),
        "{md}"
    );
    assert!(md.contains("torch-gpt2.json"), "{md}");
    assert!(html.contains("pytorch 2.15 eager fp32 (peer)"));
    assert!(html.contains(&format!("<td class=\"num\">{}×</td>", num(ratio))));

    // pytorch_llama.py prints the same shape: a Llama run takes it, and refuses GPT-2's.
    let llama = write_json(
        &dir.join("torch-llama.json"),
        &pytorch_llama_json(&model, vocab(&text)),
    );
    let saved_llama = dir.join("saved-llama");
    let llama_run = |peer: &Path| {
        vec![
            "bench".to_string(),
            "train".into(),
            "--preset".into(),
            "llama-tiny".into(),
            "--levels".into(),
            "simd".into(),
            "--steps".into(),
            "1".into(),
            "--warmup".into(),
            "0".into(),
            "--threads".into(),
            "1".into(),
            "--batch-size".into(),
            "2".into(),
            "--seq-len".into(),
            "32".into(),
            "--data".into(),
            s(&text).into(),
            "--save".into(),
            s(&saved_llama).into(),
            "--peer-json".into(),
            s(peer).into(),
        ]
    };
    let args = llama_run(&llama);
    ok(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let r = only_result(&saved_llama);
    let peer = &train_figures(&r).rows[1];
    assert_eq!(peer.engine, "pytorch 2.11 compiled fp32");
    let src = peer.peer_source.as_ref().unwrap();
    assert_eq!(src.tool, "bench/peers/pytorch_llama.py");
    assert_eq!(src.version.as_deref(), Some("torch 2.11.0+cu128"));
    let gpt2 = write_json(&dir.join("gpt2-b2-t32.json"), &{
        let mut v = pytorch_gpt2_json(&model, vocab(&text));
        v["config"]["seq"] = json!(32);
        v
    });
    let args = llama_run(&gpt2);
    fails_with_all(
        &args.iter().map(String::as_str).collect::<Vec<_>>(),
        &[
            "--peer-json",
            "gpt2-b2-t32.json",
            "model family is gpt2, this run's llama",
        ],
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// llm.c's parameter table line: `| name (21 wide) | value (50 wide) |`.
fn table_line(name: &str, value: &str) -> String {
    format!("| {name:<21} | {value:<50} |\n")
}

/// A train_gpt2cu log of `ms.len()` steps of GPT-2 124M (d12) at B=16, T=1024, bf16, with
/// `recompute`, on an H100: the parameter tables, a validation, the step lines (llm.c's printf
/// format), the sample at the end (here with bytes that are not UTF-8, as a random model's BPE
/// pieces can be) and the average line.
fn llmc_log(recompute: u32, ms: &[f64]) -> Vec<u8> {
    let rule = "+-----------------------+----------------------------------------------------+\n";
    let mut s = String::from("Multi-GPU support is disabled. Using a single GPU.\n");
    s += rule;
    s += &table_line("Parameter", "Value");
    s += rule;
    for (k, v) in [
        ("train data pattern", "/data/ts_train.bin"),
        ("val data pattern", "/data/ts_val.bin"),
        ("output log dir", "NULL"),
        ("checkpoint_every", "0"),
        ("resume", "0"),
        ("micro batch size B", "16"),
        ("sequence length T", "1024"),
        ("total batch size", "16384"),
        ("LR scheduler", "cosine"),
        ("learning rate (LR)", "3.000000e-04"),
        ("warmup iterations", "0"),
        ("max_steps", "30"),
        ("val_loss_every", "100000"),
        ("sample_every", "100000"),
        ("use_master_weights", "enabled"),
        ("gelu_fusion", "0"),
        ("recompute", &recompute.to_string()),
    ] {
        s += &table_line(k, v);
    }
    s += rule;
    s += &table_line("device", "NVIDIA H100 80GB HBM3");
    s += &table_line("peak TFlops", "989.4");
    s += &table_line("precision", "BF16");
    s += rule;
    for (k, v) in [
        ("weight init method", "random"),
        ("max_sequence_length T", "1024"),
        ("vocab_size V", "50257"),
        ("padded_vocab_size Vp", "50304"),
        ("num_layers L", "12"),
        ("num_heads NH", "12"),
        ("channels C", "768"),
        ("num_parameters", "124475904"),
    ] {
        s += &table_line(k, v);
    }
    s += rule;
    s += "num_parameters: 124475904 => bytes: 248951808\nallocated 237 MiB for model parameters\n";
    s += "batch_size B=16 * seq_len T=1024 * num_processes=1 and total_batch_size=16384\n";
    s += "=> setting grad_accum_steps=1\nallocating 1439 MiB for activations\nval loss 11.009766\n";
    for (i, m) in ms.iter().enumerate() {
        s += &format!(
            "step {:4}/{} | loss {:7.6} (+0.00z)| norm {:6.4} (+nanz)| lr 3.00e-04 | {m:.2} ms | \
             {:.1}% bf16 MFU | {:.0} tok/s\n",
            i + 1,
            ms.len(),
            11.0 - 0.1 * i as f64,
            1.5,
            40.0,
            16384.0 / m * 1e3
        );
    }
    s += "val loss 8.123456\ngenerating:\n---\n";
    let mut bytes = s.into_bytes();
    bytes.extend_from_slice(b"step by \xe2\x80 step\xff| 3 ms\n---\n");
    bytes.extend_from_slice(b"total average iteration time: 34.100000 ms\n");
    bytes
}

/// Five slow warm-up steps, then 25 whose median is 34.0 ms and fastest 33.0 ms.
fn llmc_ms() -> Vec<f64> {
    let mut ms = vec![210.93, 40.5, 35.9, 35.1, 34.8];
    for i in 0..25 {
        ms.push(33.0 + (i % 5) as f64 * 0.5); // 33.0 33.5 34.0 34.5 35.0, five times each
    }
    ms
}

#[test]
fn llmc_logs_become_peer_rows_the_report_shows() {
    let dir = tmp("llmc");
    let log = dir.join("llmc-d12-b16-r1.log");
    std::fs::write(&log, llmc_log(1, &llmc_ms())).unwrap();
    let text = String::from_utf8_lossy(&std::fs::read(&log).unwrap()).into_owned();
    let peer = PeerRun::from_llmc_log(&text, 5).unwrap();
    assert_eq!(peer.engine, "llm.c bf16 -r 1");
    assert_eq!((peer.steps, peer.warmup), (25, 5));
    assert!(
        (peer.step_s_median - 0.034).abs() < 1e-12,
        "{}",
        peer.step_s_median
    );
    assert!((peer.step_s_min - 0.033).abs() < 1e-12);
    // Tokens per step over the median step, not llm.c's moving average.
    assert!((peer.tokens_per_sec - 16384.0 / 0.034).abs() < 1e-6);
    assert!((peer.final_loss - 8.1).abs() < 1e-9, "{}", peer.final_loss);
    assert_eq!(peer.device_name.as_deref(), Some("NVIDIA H100 80GB HBM3"));
    assert_eq!(
        (peer.batch_size, peer.seq_len, peer.vocab),
        (16, 1024, Some(50304))
    );
    // It fits a gpt2-124m bf16 run at B=16, T=1024 on this H100, and nothing else.
    let gpus = ["NVIDIA H100 80GB HBM3".to_string()];
    let shape = RunShape {
        device: "cuda:0",
        dtype: "bf16",
        family: "gpt2",
        batch_size: 16,
        seq_len: 1024,
        n_layer: 12,
        n_head: 12,
        n_embd: 768,
        vocab: (50257, 50304),
        cpu_model: "Intel(R) Xeon(R) Platinum 8480+",
        gpus: &gpus,
    };
    peer.check(&shape).unwrap();
    for (shape, why) in [
        (
            RunShape {
                batch_size: 64,
                ..shape.clone()
            },
            "batch size is 16, this run's 64",
        ),
        (
            RunShape {
                dtype: "fp32",
                ..shape.clone()
            },
            "precision is bf16, this run's fp32",
        ),
        (
            RunShape {
                gpus: &["NVIDIA H200".to_string()],
                ..shape.clone()
            },
            "ran on NVIDIA H100 80GB HBM3, not on this machine (NVIDIA H200)",
        ),
    ] {
        let e = peer.check(&shape).unwrap_err().to_string();
        assert!(e.contains(why), "{e}");
    }

    // A saved GPU result with ours and the two llm.c rows (recompute 0 and 1): the report shows
    // both, marked, and divides ours by the faster of them.
    let log0 = dir.join("llmc-d12-b16-r0.log");
    let ms0: Vec<f64> = llmc_ms().iter().map(|m| m - 1.0).collect(); // median 33.0 ms
    std::fs::write(&log0, llmc_log(0, &ms0)).unwrap();
    let peer0 = PeerRun::from_llmc_log(&String::from_utf8_lossy(&std::fs::read(&log0).unwrap()), 5)
        .unwrap();
    assert_eq!(peer0.engine, "llm.c bf16 -r 0");
    let flops_per_step = 16384.0 * 0.76e9; // about GPT-2 124M's at T=1024
    let ours = TrainRow {
        engine: "cuda:0 NVIDIA H100 80GB HBM3 (bf16)".into(),
        peer: false,
        threads: 16,
        step_s_median: 0.0315,
        step_s_min: 0.031,
        tokens_per_sec: 16384.0 / 0.0315,
        model_gflops: flops_per_step / 0.0315 / 1e9,
        mfu: Some(flops_per_step / 0.0315 / 989e12),
        peak_tflops: Some(989.0),
        final_loss: 8.5,
        phases_median: None,
        peer_source: None,
    };
    let rows = vec![
        ours,
        peer0.row(s(&log0), flops_per_step, Some(989.0)),
        peer.row(s(&log), flops_per_step, Some(989.0)),
    ];
    assert!((rows[2].mfu.unwrap() - flops_per_step / 0.034 / 989e12).abs() < 1e-12);
    let file = ResultFile {
        schema: SCHEMA.into(),
        schema_version: SCHEMA_VERSION,
        ferrogpt_version: "0.1.0".into(),
        commit: "abc1234".into(),
        date: "2026-12-08T10:00:00Z".into(),
        host: "h100".into(),
        command: vec!["ferrogpt".into(), "bench".into(), "train".into()],
        machine: Machine {
            arch: "x86_64".into(),
            os: "linux".into(),
            vendor: "Intel".into(),
            model: "Intel(R) Xeon(R) Platinum 8480+".into(),
            logical_cores: 16,
            cuda: Cuda {
                driver_version: Some("13.0".into()),
                devices: vec![CudaDevice {
                    index: 0,
                    name: "NVIDIA H100 80GB HBM3".into(),
                    total_mem_bytes: 80 << 30,
                    compute_major: 9,
                    compute_minor: 0,
                    multiprocessors: Some(132),
                }],
                note: None,
            },
            ..Default::default()
        },
        figures: Figures::Train {
            train: TrainFigures {
                preset: "gpt2-124m".into(),
                device: "cuda:0".into(),
                dtype: "bf16".into(),
                batch_size: 16,
                seq_len: 1024,
                steps: 20,
                warmup: 5,
                rows,
            },
        },
    };
    let saved = dir.join("saved");
    file.save_in(&saved).unwrap();
    let out = dir.join("report");
    ok(&["report", s(&saved), "--out", s(&out)]);
    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    for needle in [
        "| cuda bf16 | 520127 (31.5 ms, MFU 40.0%) |",
        "| llm.c bf16 -r 0 (peer) | 496485 (33.0 ms, MFU 38.2%) |",
        "| llm.c bf16 -r 1 (peer) | 481882 (34.0 ms, MFU 37.0%) |",
        // Ours over the faster llm.c (33.0 ms): 33.0 / 31.5.
        "| h100 | cuda bf16 | 520127 | 1.00× | llm.c bf16 -r 0 496485 | 1.05× |",
        "llm.c bf16 -r 1 on h100: median of 25 steps after 5 warm-up on NVIDIA H100 80GB HBM3",
        "llmc-d12-b16-r1.log (llm.c train\\_gpt2cu)",
    ] {
        assert!(md.contains(needle), "{needle:?} not in {md}");
    }

    // On this machine bench train runs on the CPU: an llm.c log (a GPU run) is refused there,
    // after it has been read (the bytes that are not UTF-8 do not stop it), before the run.
    let text = verse_file(&dir);
    let saved_here = dir.join("saved-here");
    let mut args = gpt2_run(s(&text), s(&saved_here), "0");
    args.extend(["--peer-llmc-log", s(&log)]);
    fails_with_all(
        &args,
        &[
            "--peer-llmc-log",
            "llmc-d12-b16-r1.log",
            "device is cuda, this run's cpu",
        ],
    );
    assert!(!saved_here.exists());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bad_peer_files_fail_in_one_line_and_nothing_is_saved() {
    let dir = tmp("bad");
    let text = verse_file(&dir);
    let model = cpu_model();
    let good = pytorch_gpt2_json(&model, vocab(&text));
    let saved = dir.join("saved");
    let spoil = |f: &dyn Fn(&mut Value)| {
        let mut v = good.clone();
        f(&mut v);
        serde_json::to_string_pretty(&v).unwrap()
    };
    let mut json_cases: Vec<(&str, String, &str)> = vec![
        ("empty.json", String::new(), "not JSON"),
        (
            "truncated.json",
            spoil(&|_| {})[..40].to_string(),
            "not JSON",
        ),
        ("list.json", "[1, 2]".into(), "not an object"),
        (
            "no-median.json",
            spoil(&|v| {
                v.as_object_mut().unwrap().remove("median_step_s");
            }),
            "no \"median_step_s\" key",
        ),
        (
            "no-torch.json",
            spoil(&|v| {
                v["env"].as_object_mut().unwrap().remove("torch");
            }),
            "no \"env.torch\" key",
        ),
        (
            "string-batch.json",
            spoil(&|v| v["config"]["batch"] = json!("2")),
            "\"config.batch\" is not a whole number",
        ),
        (
            "shakespeare.json",
            spoil(&|v| v["mode"] = json!("train-shakespeare")),
            "a \"train-shakespeare\" run, not step timing",
        ),
        (
            "zero-median.json",
            spoil(&|v| v["median_step_s"] = json!(0.0)),
            "median_step_s is 0, not a finite positive number",
        ),
        (
            "batch.json",
            spoil(&|v| v["config"]["batch"] = json!(12)),
            "batch size is 12, this run's 2",
        ),
        (
            "layers.json",
            spoil(&|v| v["config"]["n_layer"] = json!(6)),
            "layer count is 6, this run's 4",
        ),
        (
            "bf16.json",
            spoil(&|v| v["dtype"] = json!("bf16")),
            "precision is bf16, this run's fp32",
        ),
        (
            "gpu.json",
            spoil(&|v| v["device"] = json!("cuda")),
            "device is cuda, this run's cpu",
        ),
    ];
    if model != "unknown" {
        json_cases.push((
            "elsewhere.json",
            spoil(&|v| v["device_name"] = json!("Imaginary CPU 9000")),
            "ran on Imaginary CPU 9000, not on this machine",
        ));
    }
    let mut cases: Vec<(&str, &str, Vec<u8>, &str)> = json_cases
        .into_iter()
        .map(|(name, body, why)| ("--peer-json", name, body.into_bytes(), why))
        .collect();
    cases.extend([
        (
            "--peer-llmc-log",
            "no-steps.log",
            {
                let mut log = llmc_log(1, &llmc_ms());
                let text = String::from_utf8_lossy(&log).into_owned();
                let cut = text.find("step    1/").unwrap();
                log.truncate(cut);
                log
            },
            "no llm.c step lines",
        ),
        (
            "--peer-llmc-log",
            "warmup-only.log",
            llmc_log(1, &[200.0, 40.0, 35.0]),
            "only 3 llm.c step line(s), all within the 3 warm-up step(s)",
        ),
        (
            "--peer-llmc-log",
            "no-table.log",
            b"step    1/2 | loss 11.0 (+nanz)| norm 1.0 (+nanz)| lr 3.00e-04 | 30.00 ms | 40.0% bf16 MFU | 5 tok/s\n"
                .to_vec(),
            "no \"| micro batch size B |\" line",
        ),
    ]);
    for (flag, name, body, why) in &cases {
        let path = dir.join(name);
        std::fs::write(&path, body).unwrap();
        let mut args = gpt2_run(s(&text), s(&saved), "3");
        args.extend([*flag, s(&path)]);
        fails_with_all(&args, &[flag, name, why]);
        assert!(!saved.exists(), "{name}: something was saved");
    }
    // A file that is not there; two peers of one engine name.
    let mut args = gpt2_run(s(&text), s(&saved), "3");
    let missing = dir.join("missing.json");
    args.extend(["--peer-json", s(&missing)]);
    fails_with_all(&args, &["--peer-json", "missing.json", "cannot read"]);
    let good_path = write_json(&dir.join("good.json"), &good);
    let again = write_json(&dir.join("again.json"), &good);
    let mut args = gpt2_run(s(&text), s(&saved), "3");
    args.extend(["--peer-json", s(&good_path), "--peer-json", s(&again)]);
    fails_with_all(
        &args,
        &[
            "again.json",
            "the same peer engine (pytorch 2.15 eager fp32) as",
            "good.json",
        ],
    );
    assert!(!saved.exists());
    // Without --save the flags are refused by the argument parser.
    let o = run(&["bench", "train", "--peer-json", s(&good_path)]);
    assert_eq!(o.code, 2, "{}", o.stderr);
    assert!(o.stderr.contains("--save"), "{}", o.stderr);
    let _ = std::fs::remove_dir_all(&dir);
}
