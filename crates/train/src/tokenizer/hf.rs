//! Tokenizers in Hugging Face's format, read and written through its `tokenizers` library.
//!
//! - [`load`] reads `tokenizer.json` (any model the library supports), the older `vocab.json` +
//!   `merges.txt` pair of a byte-level BPE (as `GPT2Tokenizer` reads it), or the `{"kind": ...}`
//!   files of earlier ferrogpt versions; the `tokenizer_config.json` beside it is kept.
//! - [`save`] writes `tokenizer.json` and `tokenizer_config.json` for every tokenizer:
//!   - GPT-2: the BPE of `r50k_base` in the library's form: byte-level pre-tokenizer and decoder,
//!     the 50,257 tokens spelled in GPT-2's byte-to-unicode alphabet, and the 50,000 merges
//!     recovered from tiktoken's ranks (the merge that makes a token is the split that BPE over
//!     the lower ranks leaves), `<|endoftext|>` as a special token: what OpenAI's
//!     `vocab.json` + `merges.txt` hold;
//!   - a character vocabulary: a BPE with one token per character and no merges, no
//!     pre-tokenizer (the whole text is one word, split into characters), and the `Fuse` decoder
//!     (tokens joined as they are);
//!   - a library tokenizer: as the library serialises it, with its own tokenizer_config.json.
//! - [`classify`] turns a library tokenizer that is exactly GPT-2's BPE or a character
//!   vocabulary of that form back into the gpt2 or char variant.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::OnceLock;

use serde_json::{json, Value};

use super::{gpt2_token_bytes, CharTokenizer, HfTokenizer, Tokenizer, GPT2_EOT};
use crate::data::{DataError, Result};
use ferrogpt_core::fsutil::write_atomic;

/// The files [`save`] writes (none for a model without a tokenizer).
pub const FILES: [&str; 2] = ["tokenizer.json", "tokenizer_config.json"];

const EOT_TEXT: &str = "<|endoftext|>";

fn bad(path: &Path, e: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> DataError {
    DataError::BadTokenizer {
        path: path.into(),
        source: e.into(),
    }
}

fn read(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(|source| DataError::Read {
        path: path.into(),
        source,
    })
}

/// Whether `dir` holds tokenizer files [`load`] reads.
pub fn has_tokenizer(dir: &Path) -> bool {
    dir.join("tokenizer.json").is_file()
        || (dir.join("vocab.json").is_file() && dir.join("merges.txt").is_file())
}

/// Reads the tokenizer at `path` (a file or a directory); see the module doc.
pub fn load(path: &Path) -> Result<Tokenizer> {
    let file: PathBuf = if path.is_dir() {
        if path.join("tokenizer.json").is_file() {
            path.join("tokenizer.json")
        } else if path.join("vocab.json").is_file() {
            path.join("vocab.json")
        } else {
            return Err(bad(
                path,
                "the directory holds no tokenizer.json, nor vocab.json + merges.txt",
            ));
        }
    } else {
        path.into()
    };
    let text = read(&file)?;
    let v: Value = serde_json::from_str(&text).map_err(|e| bad(&file, e))?;
    let dir = file.parent().unwrap_or(Path::new("."));
    let config = std::fs::read_to_string(dir.join("tokenizer_config.json")).ok();
    // A vocab.json (token → id, every value an integer): its merges are in merges.txt beside
    // it. Tokens may be any text, "kind" and "model" included.
    let is_vocab = v
        .as_object()
        .is_some_and(|o| !o.is_empty() && o.values().all(Value::is_u64));
    if is_vocab {
        let merges = dir.join("merges.txt");
        if !merges.is_file() {
            return Err(bad(
                &file,
                format!(
                    "a vocab.json needs merges.txt beside it ({} is missing)",
                    merges.display()
                ),
            ));
        }
        let inner = byte_level_bpe(&file, &merges, config.as_deref())?;
        return classify(inner, None, config).map_err(|e| located(&file, e));
    }
    // ferrogpt's own files before it wrote the library's format.
    let legacy = v.as_object().is_some_and(|o| {
        o.get("kind").is_some_and(Value::is_string) && o.keys().all(|k| k == "kind" || k == "vocab")
    });
    if legacy {
        return Tokenizer::from_legacy_json(&v).map_err(|e| bad(&file, e));
    }
    // GPT-2's tokenizer.json exactly as ferrogpt's runs write it: known by its SHA-256 (a few
    // milliseconds), without the library building its BPE and the checks below (half a second
    // before the first sampled token).
    if sha256_hex(text.as_bytes()) == GPT2_JSON_SHA256 {
        return Tokenizer::gpt2();
    }
    let inner = tokenizers::Tokenizer::from_str(&text).map_err(|e| bad(&file, e))?;
    classify(inner, Some(text), config).map_err(|e| located(&file, e))
}

fn located(file: &Path, e: DataError) -> DataError {
    match e {
        DataError::Tokenizer(msg) => bad(file, msg),
        e => e,
    }
}

/// A byte-level BPE from `vocab.json` + `merges.txt`, set up as transformers' GPT2Tokenizer:
/// byte-level pre-tokenizer and decoder, and as special tokens the bos/eos/unk/pad tokens of
/// `config` (tokenizer_config.json), or GPT2Tokenizer's default `<|endoftext|>` without one.
fn byte_level_bpe(
    vocab: &Path,
    merges: &Path,
    config: Option<&str>,
) -> Result<tokenizers::Tokenizer> {
    let (v, m) = (vocab.to_string_lossy(), merges.to_string_lossy());
    let bpe = tokenizers::models::bpe::BPE::from_file(&v, &m)
        .build()
        .map_err(|e| bad(vocab, e))?;
    let byte_level = tokenizers::pre_tokenizers::byte_level::ByteLevel::new(false, true, true);
    let mut tok = tokenizers::Tokenizer::new(bpe);
    tok.with_pre_tokenizer(Some(byte_level));
    tok.with_decoder(Some(byte_level));
    let config: Option<Value> = config.and_then(|c| serde_json::from_str(c).ok());
    let specials: Vec<String> = match &config {
        Some(c) => ["bos_token", "eos_token", "unk_token", "pad_token"]
            .iter()
            .filter_map(|k| match &c[*k] {
                Value::String(s) => Some(s.clone()),
                v => v["content"].as_str().map(String::from),
            })
            .collect(),
        None => vec![EOT_TEXT.to_string()],
    };
    let specials: Vec<tokenizers::AddedToken> = specials
        .into_iter()
        .filter(|s| tok.token_to_id(s).is_some())
        .map(|s| tokenizers::AddedToken::from(s, true))
        .collect();
    tok.add_special_tokens(&specials);
    Ok(tok)
}

/// The library tokenizer as the char or gpt2 variant when it is exactly one of them (the same
/// ids for every text), otherwise as it is, with its source files (`json`, `config`).
pub fn classify(
    inner: tokenizers::Tokenizer,
    json: Option<String>,
    config: Option<String>,
) -> Result<Tokenizer> {
    // A vocabulary with holes in its ids is neither (and the library prints a complaint to
    // stdout whenever it serialises one): keep it as it is.
    let ids: std::collections::HashSet<u32> = inner.get_vocab(true).into_values().collect();
    let contiguous = ids.iter().all(|&id| (id as usize) < ids.len());
    if !contiguous {
        return Ok(Tokenizer::Hf(HfTokenizer::new(inner, json, config)));
    }
    let v: Value = serde_json::from_str(
        &inner
            .to_string(false)
            .map_err(|e| DataError::Tokenizer(e.to_string()))?,
    )
    .map_err(|e| DataError::Tokenizer(e.to_string()))?;
    if let Some(vocab) = char_vocab(&v) {
        return Ok(Tokenizer::Char(CharTokenizer::from_vocab(&vocab)?));
    }
    if is_gpt2(&v)? {
        let gpt2 = Tokenizer::gpt2()?;
        // The structure says GPT-2; make sure the ids say so too.
        let probe = "Hello world's 123 4567  \n\n\tÇa va? 東京 🦀 <|endoftext|> x<|endoftext|";
        let theirs = inner
            .encode_fast(probe, false)
            .map_err(|e| DataError::Tokenizer(e.to_string()))?;
        if theirs.get_ids() == gpt2.encode(probe)?.as_slice() {
            return Ok(gpt2);
        }
    }
    Ok(Tokenizer::Hf(HfTokenizer::new(inner, json, config)))
}

/// The characters by id, if `v` (a serialised tokenizer) is a character vocabulary as [`save`]
/// writes it.
fn char_vocab(v: &Value) -> Option<String> {
    let m = &v["model"];
    let plain = v["normalizer"].is_null()
        && v["pre_tokenizer"].is_null()
        && v["post_processor"].is_null()
        && v["added_tokens"].as_array().is_some_and(Vec::is_empty)
        && v["decoder"]["type"] == "Fuse"
        && m["type"] == "BPE"
        && m["merges"].as_array().is_some_and(Vec::is_empty)
        && m["byte_fallback"] != true
        && m["dropout"].is_null()
        && m["continuing_subword_prefix"].is_null()
        && m["end_of_word_suffix"].is_null();
    if !plain {
        return None;
    }
    let vocab = m["vocab"].as_object()?;
    let mut chars = vec![None; vocab.len()];
    for (token, id) in vocab {
        let mut cs = token.chars();
        let (c, id) = (cs.next()?, id.as_u64()? as usize);
        if cs.next().is_some() || id >= chars.len() || chars[id].is_some() {
            return None;
        }
        chars[id] = Some(c);
    }
    chars.into_iter().collect()
}

/// Whether `v` (a serialised tokenizer) is GPT-2's byte-level BPE.
fn is_gpt2(v: &Value) -> Result<bool> {
    let m = &v["model"];
    let pre = &v["pre_tokenizer"];
    let plain = v["normalizer"].is_null()
        && pre["type"] == "ByteLevel"
        && pre["add_prefix_space"] == false
        && pre["use_regex"] != false
        && v["decoder"]["type"] == "ByteLevel"
        && m["type"] == "BPE"
        && m["dropout"].is_null()
        && m["byte_fallback"] != true
        && m["ignore_merges"] != true
        && [&m["continuing_subword_prefix"], &m["end_of_word_suffix"]]
            .iter()
            .all(|x| x.is_null() || **x == "")
        && m["vocab"].as_object().map(|o| o.len()) == Some(super::GPT2_VOCAB_SIZE);
    let extra_added = v["added_tokens"].as_array().is_some_and(|a| {
        a.iter()
            .any(|t| !(t["id"] == GPT2_EOT && t["content"] == EOT_TEXT))
    });
    if !plain || extra_added {
        return Ok(false);
    }
    let reference = gpt2_reference()?;
    Ok(m["vocab"] == reference.model["vocab"] && m["merges"] == reference.model["merges"])
}

/// SHA-256 of GPT-2's tokenizer.json as [`save`] writes it (`gpt2_reference().json`; a test
/// holds the two together, so a library that serialises differently fails it rather than
/// only making loading slower).
pub(crate) const GPT2_JSON_SHA256: &str =
    "11e818f948f43497f364722def50c13f419158554961ee4bb095fbd3350895c3";

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// GPT-2's tokenizer in the library's form, built once per process.
struct Gpt2Reference {
    /// tokenizer.json as the library serialises it.
    json: String,
    /// Its "model" object (vocab and merges), to compare with.
    model: Value,
}

fn gpt2_reference() -> Result<&'static Gpt2Reference> {
    static REF: OnceLock<std::result::Result<Gpt2Reference, String>> = OnceLock::new();
    REF.get_or_init(|| build_gpt2().map_err(|e| e.to_string()))
        .as_ref()
        .map_err(|e| DataError::Tokenizer(format!("cannot express GPT-2's BPE: {e}")))
}

/// GPT-2's byte-to-unicode alphabet: printable bytes stand for themselves, the others for
/// the code points from 256 up, in byte order (so that every token is printable text).
fn byte_alphabet() -> [char; 256] {
    let printable = |b: u8| matches!(b, b'!'..=b'~' | 0xA1..=0xAC | 0xAE..=0xFF);
    let mut table = ['\0'; 256];
    let mut next = 256u32;
    for b in 0..=255u8 {
        table[b as usize] = if printable(b) {
            b as char
        } else {
            next += 1;
            char::from_u32(next - 1).expect("below the surrogates")
        };
    }
    table
}

fn build_gpt2() -> Result<Gpt2Reference> {
    let tokens = gpt2_token_bytes()?;
    let alphabet = byte_alphabet();
    let spell = |b: &[u8]| -> String { b.iter().map(|&x| alphabet[x as usize]).collect() };
    let eot = GPT2_EOT as usize;
    let rank: HashMap<&[u8], u32> = tokens[..eot]
        .iter()
        .enumerate()
        .map(|(id, b)| (b.as_slice(), id as u32))
        .collect();
    // The merge that makes token r: run BPE on its bytes with the ranks below r; what is left
    // is two tokens.
    let mut merges = Vec::new();
    for (r, bytes) in tokens[..eot].iter().enumerate() {
        if bytes.len() < 2 {
            continue;
        }
        // parts[i] = (start, end) of the i-th piece of `bytes`.
        let mut parts: Vec<(usize, usize)> = (0..bytes.len()).map(|i| (i, i + 1)).collect();
        while let Some((_, i)) = parts
            .windows(2)
            .enumerate()
            .filter_map(|(i, w)| {
                let k = *rank.get(&bytes[w[0].0..w[1].1])?;
                ((k as usize) < r).then_some((k, i))
            })
            .min()
        {
            parts[i].1 = parts[i + 1].1;
            parts.remove(i + 1);
        }
        if parts.len() != 2 {
            return Err(DataError::Tokenizer(format!(
                "token {r} does not come from one merge ({} parts left)",
                parts.len()
            )));
        }
        let [(a0, a1), (b0, b1)] = [parts[0], parts[1]];
        merges.push(json!([spell(&bytes[a0..a1]), spell(&bytes[b0..b1])]));
    }
    let vocab: serde_json::Map<String, Value> = tokens[..eot]
        .iter()
        .enumerate()
        .map(|(id, b)| (spell(b), json!(id)))
        .chain([(EOT_TEXT.to_string(), json!(GPT2_EOT))])
        .collect();
    let byte_level = |prefix: bool, trim: bool| json!({"type": "ByteLevel", "add_prefix_space": prefix, "trim_offsets": trim, "use_regex": true});
    let doc = json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": [{"id": GPT2_EOT, "content": EOT_TEXT, "single_word": false,
            "lstrip": false, "rstrip": false, "normalized": true, "special": true}],
        "normalizer": null,
        "pre_tokenizer": byte_level(false, true),
        "post_processor": byte_level(true, false),
        "decoder": byte_level(true, true),
        "model": {"type": "BPE", "dropout": null, "unk_token": null,
            "continuing_subword_prefix": "", "end_of_word_suffix": "", "fuse_unk": false,
            "byte_fallback": false, "ignore_merges": false, "vocab": vocab, "merges": merges},
    });
    canonical(&doc).map(|(json, v)| Gpt2Reference {
        json,
        model: v["model"].clone(),
    })
}

/// `doc` through the library: the text it writes, and that text parsed.
fn canonical(doc: &Value) -> Result<(String, Value)> {
    let lib = |e: tokenizers::Error| DataError::Tokenizer(e.to_string());
    let tok = tokenizers::Tokenizer::from_str(&doc.to_string()).map_err(lib)?;
    let json = tok.to_string(false).map_err(lib)?;
    let v = serde_json::from_str(&json).map_err(|e| DataError::Tokenizer(e.to_string()))?;
    Ok((json, v))
}

/// A character vocabulary as the library's tokenizer.json (see the module doc).
fn char_json(c: &CharTokenizer) -> Result<String> {
    let vocab: serde_json::Map<String, Value> = c
        .vocab()
        .chars()
        .enumerate()
        .map(|(id, ch)| (ch.to_string(), json!(id)))
        .collect();
    let doc = json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": [],
        "normalizer": null,
        "pre_tokenizer": null,
        "post_processor": null,
        "decoder": {"type": "Fuse"},
        "model": {"type": "BPE", "dropout": null, "unk_token": null,
            "continuing_subword_prefix": null, "end_of_word_suffix": null, "fuse_unk": false,
            "byte_fallback": false, "ignore_merges": false, "vocab": vocab, "merges": []},
    });
    canonical(&doc).map(|(json, _)| json)
}

/// The library's form of `tok`: (tokenizer.json, tokenizer_config.json), or None for a model
/// without a tokenizer. `model_max_length` is the model's context.
pub fn to_files(tok: &Tokenizer, model_max_length: usize) -> Result<Option<(String, String)>> {
    let mut config = json!({
        "tokenizer_class": "PreTrainedTokenizerFast",
        "model_max_length": model_max_length,
        "clean_up_tokenization_spaces": false,
    });
    let json = match tok {
        Tokenizer::IdsOnly { .. } => return Ok(None),
        Tokenizer::Char(c) => char_json(c)?,
        Tokenizer::Gpt2(_) => {
            for k in ["bos_token", "eos_token", "unk_token"] {
                config[k] = json!(EOT_TEXT);
            }
            config["add_prefix_space"] = json!(false);
            gpt2_reference()?.json.clone()
        }
        Tokenizer::Hf(h) => {
            let json = match h.source_json() {
                Some(j) => j.to_string(),
                None => h
                    .inner()
                    .to_string(false)
                    .map_err(|e| DataError::Tokenizer(e.to_string()))?,
            };
            if let Some(c) = &h.config {
                return Ok(Some((json, c.clone())));
            }
            json
        }
    };
    let config = serde_json::to_string_pretty(&config).expect("plain values");
    Ok(Some((json, config)))
}

/// Writes `tok` into `dir` as [`FILES`] (each atomically); returns the names written (none
/// for a model without a tokenizer).
pub fn save(tok: &Tokenizer, dir: &Path, model_max_length: usize) -> Result<Vec<&'static str>> {
    let Some((json, config)) = to_files(tok, model_max_length)? else {
        return Ok(Vec::new());
    };
    for (name, text) in FILES.iter().zip([json, config]) {
        let path = dir.join(name);
        write_atomic(&path, text.as_bytes()).map_err(|source| DataError::Write { path, source })?;
    }
    Ok(FILES.to_vec())
}

#[cfg(test)]
mod tests {
    /// The constant that lets `load` know GPT-2's tokenizer.json without parsing it is the
    /// hash of what `save` writes.
    #[test]
    fn gpt2_json_sha256_is_what_save_writes() {
        let reference = super::gpt2_reference().unwrap();
        assert_eq!(
            super::sha256_hex(reference.json.as_bytes()),
            super::GPT2_JSON_SHA256
        );
    }
}
