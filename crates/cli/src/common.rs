//! What several subcommands share: compute settings (threads, matmul level), the engine per
//! `--device` and `--dtype`, data resolution.

use ferrogpt_core::Level;
use ferrogpt_train::{CpuEngine, EngineFactory};
use std::path::{Path, PathBuf};

/// Threads and matmul level, for every command that runs the model.
#[derive(Clone, Debug, clap::Args)]
pub struct Compute {
    /// Worker threads (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Matmul level of the ladder (default: the fastest f32 level on this machine).
    #[arg(long)]
    pub matmul: Option<String>,
}

impl Compute {
    /// Sets up the thread pool and returns the matmul level, checked to run here.
    pub fn setup(&self) -> Result<Level, String> {
        set_threads(self.threads)?;
        let level = match &self.matmul {
            Some(s) => s.parse::<Level>().map_err(|e| e.to_string())?,
            None => Level::fastest(),
        };
        level.available().map_err(|e| e.to_string())?;
        Ok(level)
    }
}

/// Where the model runs and in what precision, for every command that runs the model.
#[derive(Clone, Debug, clap::Args)]
pub struct DeviceArgs {
    /// cpu, or cuda[:N] (the N-th GPU; cuda is cuda:0).
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// fp32, or bf16 (CUDA only).
    #[arg(long, default_value = "fp32")]
    pub dtype: String,
}

/// A parsed `--device`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Device {
    Cpu,
    /// The GPU of this CUDA ordinal.
    Cuda(usize),
}

/// A parsed `--dtype`: the precision of the engine's arithmetic.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DType {
    F32,
    Bf16,
}

impl DeviceArgs {
    /// The device and dtype, checked to be a pair some engine supports.
    pub fn parse(&self) -> Result<(Device, DType), String> {
        let device = match self.device.as_str() {
            "cpu" => Device::Cpu,
            "cuda" => Device::Cuda(0),
            d => match d.strip_prefix("cuda:").map(str::parse::<usize>) {
                Some(Ok(n)) => Device::Cuda(n),
                _ => {
                    return Err(format!(
                        "--device must be cpu, cuda or cuda:N (N a GPU index), got '{d}'"
                    ))
                }
            },
        };
        let dtype = match self.dtype.as_str() {
            "fp32" => DType::F32,
            "bf16" => DType::Bf16,
            d => return Err(format!("--dtype must be fp32 or bf16, got '{d}'")),
        };
        if device == Device::Cpu && dtype != DType::F32 {
            return Err(format!(
                "--dtype {} needs --device cuda: the CPU engine computes in fp32",
                self.dtype
            ));
        }
        Ok((device, dtype))
    }
}

/// The engine factory for `--device` and `--dtype`: the CPU engine at matmul `level`, or a
/// CUDA GPU's. The one place that maps a device to an engine.
pub fn engine_factory(
    level: Level,
    dev: &DeviceArgs,
) -> Result<Box<EngineFactory<'static>>, String> {
    match dev.parse()? {
        (Device::Cpu, _) => Ok(CpuEngine::factory(level)),
        (Device::Cuda(ordinal), dtype) => cuda_engine_factory(ordinal, dtype),
    }
}

/// The engine factory of CUDA GPU `ordinal`, computing in `dtype`: where the GPU engine plugs in.
fn cuda_engine_factory(
    ordinal: usize,
    dtype: DType,
) -> Result<Box<EngineFactory<'static>>, String> {
    let dtype = match dtype {
        DType::F32 => ferrogpt_gpu::Dtype::F32,
        DType::Bf16 => ferrogpt_gpu::Dtype::Bf16,
    };
    Ok(ferrogpt_gpu::GpuEngine::factory(ordinal, dtype))
}

/// Sizes rayon's global pool (once per process).
pub fn set_threads(threads: Option<usize>) -> Result<(), String> {
    if let Some(n) = threads {
        if n == 0 {
            return Err("--threads must be at least 1".into());
        }
        rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .build_global()
            .map_err(|e| format!("cannot set up {n} threads: {e}"))?;
    }
    Ok(())
}

/// Where `train` looks for Tiny Shakespeare by default.
pub const DEFAULT_DATA: &str = "data/tinyshakespeare.txt";
const SHAKESPEARE_URL: &str =
    "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt";
const SHAKESPEARE_BYTES: u64 = 1_115_394;

/// The training data path: as given, or the default file, downloaded when it is missing.
pub fn resolve_data(data: Option<&Path>) -> Result<PathBuf, String> {
    if let Some(p) = data {
        return Ok(p.to_path_buf());
    }
    let path = PathBuf::from(DEFAULT_DATA);
    if !path.exists() {
        download_shakespeare(&path)?;
    }
    Ok(path)
}

fn download_shakespeare(path: &Path) -> Result<(), String> {
    use std::io::Read;
    eprintln!(
        "{} is missing; downloading Tiny Shakespeare from {SHAKESPEARE_URL}",
        path.display()
    );
    let offline = |e: &dyn std::fmt::Display| {
        format!(
            "cannot download {SHAKESPEARE_URL} ({e}); pass --data PATH to a local copy of Tiny Shakespeare (1,115,394 bytes) or any UTF-8 text"
        )
    };
    let resp = ureq::get(SHAKESPEARE_URL)
        .timeout(std::time::Duration::from_secs(30))
        .call()
        .map_err(|e| offline(&e))?;
    let len = resp
        .header("Content-Length")
        .and_then(|s| s.parse().ok())
        .unwrap_or(SHAKESPEARE_BYTES);
    let bar = indicatif::ProgressBar::new(len);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:40} {bytes}/{total_bytes} {bytes_per_sec}")
            .expect("static template"),
    );
    let mut bytes = Vec::with_capacity(len as usize);
    let mut reader = bar.wrap_read(resp.into_reader());
    reader.read_to_end(&mut bytes).map_err(|e| offline(&e))?;
    bar.finish_and_clear();
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    }
    ferrogpt_core::fsutil::write_atomic(path, &bytes)
        .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    eprintln!("saved {} ({} bytes)", path.display(), bytes.len());
    Ok(())
}
