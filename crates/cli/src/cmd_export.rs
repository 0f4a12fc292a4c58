//! `ferrogpt export --gguf OUT.gguf --checkpoint DIR [--type f32|f16|q8_0]`: a run (or Hugging Face)
//! directory as llama.cpp's GGUF file, with its tokenizer's metadata
//! (`ferrogpt_model::gguf` holds the names, layouts and metadata keys).

use ferrogpt_model::gguf::{self, TensorType, Vocab};
use ferrogpt_train::checkpoint as ck;
use ferrogpt_train::tokenizer::{hf, Tokenizer};
use std::path::PathBuf;

#[derive(Clone, Debug, clap::Args)]
pub struct ExportArgs {
    /// The GGUF file to write
    #[arg(long)]
    gguf: PathBuf,
    /// A run directory of ours or a Hugging Face directory
    #[arg(long)]
    checkpoint: PathBuf,
    /// The matrices' type: f32, f16 or q8_0 (norms and biases stay f32; a q8_0 matrix whose
    /// rows are not whole blocks of 32 is f16)
    #[arg(long = "type", default_value = "f32")]
    ty: String,
}

pub fn run(a: ExportArgs) -> Result<(), String> {
    let ty = TensorType::parse(&a.ty)
        .ok_or_else(|| format!("--type: '{}' is not f32, f16 or q8_0", a.ty))?;
    let loaded = ck::load_model(&a.checkpoint, 64).map_err(|e| e.to_string())?;
    let cfg = &loaded.model.config;
    let vocab = match &loaded.tokenizer {
        Tokenizer::IdsOnly { .. } => {
            eprintln!("note: the checkpoint has no tokenizer: the GGUF has none (llama.cpp needs one to load it)");
            None
        }
        tok => {
            let (json, _) = hf::to_files(tok, cfg.block_size)
                .map_err(|e| e.to_string())?
                .ok_or("the tokenizer has no tokenizer.json form")?;
            Some(Vocab::from_tokenizer_json(&json, cfg.vocab_size)?)
        }
    };
    let name = a
        .checkpoint
        .file_name()
        .map_or("ferrogpt".into(), |n| n.to_string_lossy().into_owned());
    let file = gguf::export(&loaded.model, &loaded.params, vocab.as_ref(), ty, &name)
        .map_err(|e| e.to_string())?;
    ferrogpt_core::fsutil::write_atomic(&a.gguf, &file.to_bytes())
        .map_err(|e| format!("{}: {e}", a.gguf.display()))?;
    println!(
        "wrote {} (architecture {}, {} tensors, {})",
        a.gguf.display(),
        cfg.family.name(),
        file.tensors.len(),
        a.ty.to_lowercase()
    );
    Ok(())
}
