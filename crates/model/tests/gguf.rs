//! GGUF (llama.cpp's file): our export read back, files of llama.cpp's `gguf` Python package
//! read, ours read by that package, and bad files refused in one line.

use ferrogpt_model::config::Family;
use ferrogpt_model::gguf::{self, GgufFile, TensorType, Value, Vocab};
use ferrogpt_model::{Gpt, GptConfig, ModelError};
use std::path::{Path, PathBuf};
use std::process::Command;

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("ferrogpt-gguf-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn gpt2() -> GptConfig {
    GptConfig {
        n_layer: 2,
        n_head: 2,
        n_embd: 8,
        block_size: 6,
        vocab_size: 11,
        padded_vocab_size: 16,
        ..GptConfig::default()
    }
}

fn llama(kv: usize, tied: bool) -> GptConfig {
    GptConfig {
        n_layer: 2,
        n_head: 4,
        n_embd: 32,
        block_size: 10,
        vocab_size: 12,
        padded_vocab_size: 16,
        family: Family::Llama,
        pos: ferrogpt_model::config::Position::Rope,
        n_kv_head: Some(kv),
        ffn_hidden: Some(64),
        rope_theta: 500_000.0,
        norm_eps: 1e-6,
        tie_embeddings: tied,
        ..GptConfig::default()
    }
}

/// Distinct values everywhere but the embedding's padding rows (zero, as training keeps them).
fn params(model: &Gpt) -> Vec<f32> {
    let l = &model.layout;
    let mut p: Vec<f32> = (0..l.total)
        .map(|i| ((i as f32) * 0.731).sin() * 0.5)
        .collect();
    for (_, t) in &l.named {
        if l.is_vocab_rows(t) {
            let c = t.cols;
            p[t.offset + model.config.vocab_size * c..t.offset + t.rows * c].fill(0.0);
        }
    }
    p
}

fn vocab(v: usize) -> Vocab {
    let json = r#"{"model": {"type": "BPE", "vocab": {"a": 0, "b": 1, "ab": 2, "Ġ": 3},
        "merges": ["a b"]}, "pre_tokenizer": {"type": "ByteLevel"},
        "added_tokens": [{"id": 4, "content": "<|endoftext|>", "special": true}]}"#;
    Vocab::from_tokenizer_json(json, v).unwrap()
}

fn write(cfg: &GptConfig, ty: TensorType, path: &Path) -> (Gpt, Vec<f32>) {
    let model = Gpt::new(cfg.clone()).unwrap();
    let p = params(&model);
    let f = gguf::export(&model, &p, Some(&vocab(cfg.vocab_size)), ty, "t").unwrap();
    std::fs::write(path, f.to_bytes()).unwrap();
    (model, p)
}

#[test]
fn round_trip_gives_the_same_config_and_weights() {
    let dir = tmp("rt");
    for (name, cfg) in [
        ("gpt2", gpt2()),
        ("llama-gqa-untied", llama(2, false)),
        ("llama-tied", llama(4, true)),
    ] {
        let path = dir.join(format!("{name}.gguf"));
        let (_, p) = write(&cfg, TensorType::F32, &path);
        let back = gguf::import(&path, 16).unwrap();
        assert_eq!(back.config, cfg, "{name}");
        assert_eq!(back.params, p, "{name}");
        let v = back.vocab.unwrap();
        assert_eq!(v, vocab(cfg.vocab_size), "{name}");
        let last = cfg.vocab_size - 1;
        assert_eq!(v.tokens[last], format!("[PAD{last}]"));
        assert_eq!((v.bos, v.eos), (Some(4), Some(4)));

        // F16: each weight within half an f16 ulp; norms and biases exact (kept F32).
        let (_, p) = write(&cfg, TensorType::F16, &path);
        let back = gguf::import(&path, 16).unwrap();
        assert_eq!(back.config, cfg, "{name} f16");
        for (a, b) in p.iter().zip(&back.params) {
            assert!(
                (a - b).abs() <= a.abs() * 4.9e-4 + 3e-8,
                "{name}: {a} vs {b}"
            );
        }

        // Q8_0: each weight within 0.57 of its block's step max|x| / 127 (half a step, and the
        // scale's own f16 rounding); rows of other lengths than whole blocks are F16.
        let (_, p) = write(&cfg, TensorType::Q8_0, &path);
        let f = GgufFile::read(&path).unwrap();
        let q8 = f.tensors.iter().filter(|t| t.ty == 8).count();
        assert!(q8 >= cfg.n_layer, "{name}: {q8} Q8_0 tensors");
        let back = gguf::import(&path, 16).unwrap();
        assert_eq!(back.config, cfg, "{name} q8_0");
        for (a, b) in p.iter().zip(&back.params) {
            // Blocks run along rows, whose max|x| is at most 0.5 here.
            assert!((a - b).abs() <= 0.5 / 127.0 * 0.57, "{name}: {a} vs {b}");
        }
    }
}

#[test]
fn llama_q_and_k_rows_are_interleaved_in_the_file() {
    let cfg = llama(2, false);
    let path = tmp("perm").join("l.gguf");
    let (model, p) = write(&cfg, TensorType::F32, &path);
    let f = GgufFile::read(&path).unwrap();
    let t = f
        .tensors
        .iter()
        .find(|t| t.name == "blk.0.attn_k.weight")
        .unwrap();
    assert_eq!(t.ne, vec![32, 16]);
    let (_, k) = model
        .layout
        .named
        .iter()
        .find(|(n, _)| n == "model.layers.0.self_attn.k_proj.weight")
        .unwrap();
    let row = |r: usize| -> Vec<f32> {
        let at = t.offset as usize + r * 32 * 4;
        f.data[at..at + 128]
            .chunks(4)
            .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
            .collect()
    };
    // HS = 8: file rows 0,1,2,3,... of a head are HF rows 0,4,1,5,...
    for (file, hf) in [(0, 0), (1, 4), (2, 1), (3, 5), (7, 7), (9, 12)] {
        let at = k.offset + hf * 32;
        assert_eq!(row(file), p[at..at + 32].to_vec(), "file row {file}");
    }
}

/// The interpreter for the checks with llama.cpp's `gguf` package: `FERROGPT_PYTHON`, else
/// `python3`; None (skipped, unless `FERROGPT_REQUIRE_HF_PYTHON` is set) without the package.
fn python() -> Option<String> {
    let py = std::env::var("FERROGPT_PYTHON").unwrap_or_else(|_| "python3".into());
    let ok = Command::new(&py)
        .args(["-c", "import gguf, numpy"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        assert!(
            std::env::var_os("FERROGPT_REQUIRE_HF_PYTHON").is_none(),
            "FERROGPT_REQUIRE_HF_PYTHON is set but {py} has no gguf package (pip install gguf)"
        );
        eprintln!("skipped: no Python with the gguf package (pip install gguf)");
        return None;
    }
    Some(py)
}

fn script(py: &str, args: &[&str]) -> String {
    let s = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../scripts/make_gguf_fixture.py");
    let o = Command::new(py).arg(s).args(args).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8(o.stdout).unwrap()
}

#[test]
fn reads_files_written_by_the_gguf_package() {
    let Some(py) = python() else { return };
    let dir = tmp("py-write");
    script(&py, &["write", dir.to_str().unwrap()]);
    let expected: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("expected.json")).unwrap()).unwrap();
    for arch in ["gpt2", "llama"] {
        let back = gguf::import(&dir.join(format!("{arch}.gguf")), 8).unwrap();
        let e = &expected[arch];
        let c = &back.config;
        let n = |k: &str| e["config"][k].as_u64().unwrap() as usize;
        assert_eq!(
            (c.n_layer, c.n_head, c.n_embd, c.block_size, c.vocab_size),
            (
                n("n_layer"),
                n("n_head"),
                n("n_embd"),
                n("block_size"),
                n("vocab_size")
            )
        );
        assert_eq!(c.padded_vocab_size, 16);
        if arch == "llama" {
            assert_eq!(c.kv_heads(), 2);
            assert_eq!(c.ffn(), 24);
            assert_eq!((c.rope_theta, c.norm_eps), (500_000.0, 1e-6));
            assert!(!c.tie_embeddings);
        }
        let model = Gpt::new(c.clone()).unwrap();
        let tensors = e["tensors"].as_object().unwrap();
        assert_eq!(tensors.len(), model.layout.named.len(), "{arch}");
        for (name, p) in &model.layout.named {
            let want: Vec<f32> = tensors[name]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap() as f32)
                .collect();
            let got = &back.params[p.offset..p.offset + want.len()];
            let f16 = name.contains("o_proj") || name.contains("attn.c_proj");
            let q8 = name.contains("up_proj");
            for (a, b) in want.iter().zip(got) {
                let tol = match (f16, q8) {
                    (true, _) => a.abs() * 4.9e-4 + 3e-8,
                    (_, true) => 0.5 / 127.0 * 0.57,
                    _ => 0.0,
                };
                assert!((a - b).abs() <= tol, "{arch} {name}: {a} vs {b}");
            }
        }
        let v = back.vocab.unwrap();
        assert_eq!(v.merges, ["a b", "Ġ ab"]);
        assert_eq!((v.eos, v.tokens[8].as_str()), (Some(8), "<|endoftext|>"));
    }
}

#[test]
fn the_gguf_package_reads_our_files() {
    let Some(py) = python() else { return };
    let dir = tmp("py-read");
    for (arch, cfg) in [("gpt2", gpt2()), ("llama", llama(2, false))] {
        let path = dir.join(format!("{arch}.gguf"));
        let (model, p) = write(&cfg, TensorType::F16, &path);
        let q8 = dir.join(format!("{arch}-q8.gguf"));
        write(&cfg, TensorType::Q8_0, &q8);
        let r: serde_json::Value =
            serde_json::from_str(&script(&py, &["read", q8.to_str().unwrap()])).unwrap();
        let t = &r["tensors"]["blk.0.ffn_down.weight"];
        assert_eq!(t["type"], "Q8_0", "{arch}");
        assert_eq!(r["metadata"]["general.file_type"], 7);
        let out = script(&py, &["read", path.to_str().unwrap()]);
        let r: serde_json::Value = serde_json::from_str(&out).unwrap();
        let meta = r["metadata"].as_object().unwrap();
        assert_eq!(meta["general.architecture"], arch);
        let mut keys = vec![
            "context_length",
            "embedding_length",
            "block_count",
            "feed_forward_length",
            "attention.head_count",
        ];
        if arch == "gpt2" {
            keys.push("attention.layer_norm_epsilon");
        } else {
            keys.extend([
                "attention.head_count_kv",
                "rope.dimension_count",
                "rope.freq_base",
                "attention.layer_norm_rms_epsilon",
            ]);
        }
        for k in keys {
            assert!(meta.contains_key(&format!("{arch}.{k}")), "{arch}.{k}");
        }
        assert_eq!(meta[&format!("{arch}.block_count")], 2);
        assert_eq!(meta["tokenizer.ggml.model"], "gpt2");
        assert_eq!(meta["tokenizer.ggml.tokens"]["len"], cfg.vocab_size);
        assert_eq!(meta["tokenizer.ggml.merges"]["len"], 1);
        assert_eq!(meta["tokenizer.ggml.eos_token_id"], 4);
        let t = r["tensors"].as_object().unwrap();
        let c = cfg.n_embd;
        let (want, count): (&[Expected], usize) = if arch == "gpt2" {
            (
                &[
                    ("token_embd.weight", &[c, 11], "F16"),
                    ("position_embd.weight", &[c, 6], "F16"),
                    ("blk.1.attn_qkv.weight", &[c, 3 * c], "F16"),
                    ("blk.1.attn_qkv.bias", &[3 * c], "F32"),
                    ("blk.0.ffn_up.weight", &[c, 4 * c], "F16"),
                    ("blk.0.ffn_down.weight", &[4 * c, c], "F16"),
                    ("output_norm.bias", &[c], "F32"),
                ],
                2 + 12 * 2 + 2,
            )
        } else {
            (
                &[
                    ("token_embd.weight", &[c, 12], "F16"),
                    ("blk.0.attn_q.weight", &[c, c], "F16"),
                    ("blk.0.attn_k.weight", &[c, 16], "F16"),
                    ("blk.0.attn_v.weight", &[c, 16], "F16"),
                    ("blk.1.ffn_gate.weight", &[c, 64], "F16"),
                    ("blk.1.ffn_down.weight", &[64, c], "F16"),
                    ("blk.1.ffn_norm.weight", &[c], "F32"),
                    ("output.weight", &[c, 12], "F16"),
                ],
                1 + 9 * 2 + 2,
            )
        };
        assert_eq!(t.len(), count, "{arch}: {:?}", t.keys());
        for (name, shape, ty) in want {
            let got = &t[*name];
            assert_eq!(got["shape"], serde_json::json!(shape), "{name}");
            assert_eq!(got["type"], *ty, "{name}");
        }
        // GPT-2's c_attn is stored transposed: the file's first row is column 0 of Conv1D.
        if arch == "gpt2" {
            let (_, w) = model
                .layout
                .named
                .iter()
                .find(|(n, _)| n == "h.1.attn.c_attn.weight")
                .unwrap();
            let first = t["blk.1.attn_qkv.weight"]["first"].as_array().unwrap();
            for (j, x) in first.iter().enumerate() {
                let want = p[w.offset + j * w.cols];
                assert!(
                    (x.as_f64().unwrap() as f32 - want).abs() < 1e-3,
                    "{x} vs {want}"
                );
            }
        }
    }
}

/// A tensor as GGUFReader reports it: name, shape (`ne`), type.
type Expected<'a> = (&'a str, &'a [usize], &'a str);

fn one_line(e: &ModelError) -> String {
    let s = e.to_string();
    assert!(!s.contains('\n'), "{s}");
    s
}

#[test]
fn bad_files_get_one_line() {
    let dir = tmp("bad");
    let good = dir.join("good.gguf");
    write(&llama(2, false), TensorType::F16, &good);
    let bytes = std::fs::read(&good).unwrap();
    let at = |name: &str, b: &[u8]| {
        let p = dir.join(name);
        std::fs::write(&p, b).unwrap();
        gguf::import(&p, 16).err().unwrap()
    };

    let mut b = bytes.clone();
    b[..4].copy_from_slice(b"GGML");
    let e = at("magic.gguf", &b);
    assert!(matches!(e, ModelError::Gguf { .. }), "{e}");
    assert!(one_line(&e).contains("not a GGUF file"));

    let e = at("empty.gguf", &[]);
    assert!(one_line(&e).contains("not a GGUF file"), "{e}");

    // Cut anywhere: in the header, the metadata, the tensor infos, the data.
    for cut in [6, 20, 100, 1000, bytes.len() / 2, bytes.len() - 1] {
        let e = at("cut.gguf", &bytes[..cut]);
        assert!(
            matches!(&e, ModelError::Gguf { problem, .. } if problem.contains("truncated")),
            "cut at {cut}: {e}"
        );
        one_line(&e);
    }

    let mut f = GgufFile::parse(&bytes).unwrap();
    f.metadata[0].1 = Value::Str("falcon".into());
    let e = at("arch.gguf", &f.to_bytes());
    assert!(
        matches!(&e, ModelError::Unsupported { found, .. } if found == "falcon"),
        "{e}"
    );
    assert!(one_line(&e).contains("general.architecture 'falcon' is not supported"));

    let mut f = GgufFile::parse(&bytes).unwrap();
    f.tensors[3].ty = 12;
    let e = at("type.gguf", &f.to_bytes());
    assert!(matches!(e, ModelError::Unsupported { .. }), "{e}");
    assert!(one_line(&e).contains("Q4_K (12)"), "{e}");

    let mut f = GgufFile::parse(&bytes).unwrap();
    f.tensors.retain(|t| t.name != "blk.1.ffn_up.weight");
    let e = at("missing.gguf", &f.to_bytes());
    assert!(
        matches!(&e, ModelError::MissingTensor { name, .. } if name == "blk.1.ffn_up.weight"),
        "{e}"
    );
    one_line(&e);

    let mut f = GgufFile::parse(&bytes).unwrap();
    f.tensors[2].ne = vec![8, 16];
    let e = at("shape.gguf", &f.to_bytes());
    assert!(matches!(e, ModelError::TensorShape { .. }), "{e}");
    one_line(&e);

    let e = gguf::import(&dir.join("absent.gguf"), 16).err().unwrap();
    assert!(matches!(e, ModelError::Io { .. }), "{e}");
}

#[test]
fn export_refuses_what_llama_cpp_cannot_express() {
    let mut cfg = gpt2();
    cfg.pos = ferrogpt_model::config::Position::Rope;
    let model = Gpt::new(cfg).unwrap();
    let p = vec![0.0; model.layout.total];
    let e = gguf::export(&model, &p, None, TensorType::F32, "t")
        .err()
        .unwrap();
    assert!(matches!(e, ModelError::Unsupported { .. }), "{e}");
    one_line(&e);
    let r = Vocab::from_tokenizer_json(r#"{"model": {"type": "WordPiece"}}"#, 4);
    assert!(r.unwrap_err().contains("not BPE"));
}

/// `push_tensor` refuses values that do not fill `ne` (a corrupt file) and Q8_0 rows that are
/// not whole blocks of 32 (a lost tail), and adds nothing then; what it takes reads back.
#[test]
fn push_tensor_refuses_values_that_do_not_fit() {
    let mut f = GgufFile::default();
    let v: Vec<f32> = (0..64).map(|i| i as f32 / 64.0).collect();
    for (ne, n, ty, what) in [
        (vec![8, 8], 63, TensorType::F32, "63 values"),
        (vec![8, 8], 64, TensorType::F16, ""),
        (vec![4, 4, 4], 64, TensorType::F32, ""),
        (vec![4, 4, 4], 48, TensorType::F16, "48 values"),
        (vec![40], 40, TensorType::Q8_0, "blocks of 32"),
        (vec![16, 2], 32, TensorType::Q8_0, "blocks of 32"),
        (vec![32, 2], 32, TensorType::Q8_0, "32 values"),
        (vec![32, 2], 64, TensorType::Q8_0, ""),
        (vec![2, 2, 2, 2, 4], 64, TensorType::F32, "5 dimensions"),
        (vec![u64::MAX, 2], 64, TensorType::F32, "64 values"),
    ] {
        let (tensors, bytes) = (f.tensors.len(), f.data.len());
        let r = f.push_tensor("t", ne.clone(), &v[..n], ty);
        if what.is_empty() {
            r.unwrap();
            assert_eq!(f.tensors.len(), tensors + 1);
        } else {
            let e = r.unwrap_err();
            assert!(e.contains(what) && e.contains("'t'"), "{ne:?} {ty:?}: {e}");
            assert_eq!((f.tensors.len(), f.data.len()), (tensors, bytes), "{e}");
        }
    }
    let back = GgufFile::parse(&f.to_bytes()).unwrap();
    assert_eq!(back.tensors, f.tensors);
}

/// A parameter buffer of another length than the model's is an error (a shorter one used to
/// panic).
#[test]
fn export_refuses_a_buffer_of_the_wrong_length() {
    let model = Gpt::new(gpt2()).unwrap();
    let n = model.layout.total;
    for len in [0, n - 1, n + 1] {
        let e = gguf::export(&model, &vec![0.0; len], None, TensorType::F32, "t")
            .err()
            .unwrap();
        assert!(
            matches!(e, ModelError::ParamsLength { found, expected } if found == len && expected == n),
            "{e}"
        );
        one_line(&e);
    }
}
