//! `ferrogpt tokenize`: text → llm.c token file (uint16 ids, uint32 past 65,536 tokens). For
//! the char tokenizer, the vocabulary is built from the input and written beside the output as
//! `OUT.tokenizer.json`, in Hugging Face's format (the ids mean nothing without it; `train
//! --tokenizer OUT.tokenizer.json` reads it).

use ferrogpt_train::data::load_text;
use ferrogpt_train::tokenizer::{hf, Tokenizer};
use ferrogpt_train::tokfile::write_tokens;
use std::path::{Path, PathBuf};

#[derive(Clone, Debug, clap::Args)]
pub struct TokenizeArgs {
    /// char, gpt2, or the path of a tokenizer.json (or of vocab.json with merges.txt beside
    /// it, or of a directory holding either)
    #[arg(long, default_value = "gpt2")]
    tokenizer: String,
    /// The UTF-8 text to encode
    input: PathBuf,
    /// The token file to write
    #[arg(long)]
    out: PathBuf,
}

pub fn run(a: TokenizeArgs) -> Result<(), String> {
    let text = load_text(&a.input).map_err(|e| e.to_string())?;
    let tok = match a.tokenizer.as_str() {
        "gpt2" => Tokenizer::gpt2().map_err(|e| e.to_string())?,
        "char" => Tokenizer::from_corpus_char(&text),
        path => Tokenizer::load(Path::new(path)).map_err(|e| format!("--tokenizer: {e}"))?,
    };
    let ids = tok.encode(&text).map_err(|e| e.to_string())?;
    write_tokens(&a.out, &ids).map_err(|e| e.to_string())?;
    if a.tokenizer == "char" {
        let mut vocab_path = a.out.clone().into_os_string();
        vocab_path.push(".tokenizer.json");
        let vocab_path = PathBuf::from(vocab_path);
        let (json, _) = hf::to_files(&tok, 0)
            .map_err(|e| e.to_string())?
            .expect("a char tokenizer has files");
        ferrogpt_core::fsutil::write_atomic(&vocab_path, json.as_bytes())
            .map_err(|e| format!("cannot write {}: {e}", vocab_path.display()))?;
        eprintln!(
            "vocabulary ({} characters) written to {}",
            tok.vocab_size(),
            vocab_path.display()
        );
    }
    eprintln!("{} tokens written to {}", ids.len(), a.out.display());
    Ok(())
}
