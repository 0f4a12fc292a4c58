//! What several subcommands share: compute settings (threads, matmul level), the engine per
//! `--device` and `--dtype`, data resolution, the font for charts.

use ferrogpt_core::Level;
use ferrogpt_train::{CpuEngine, EngineFactory};
use std::path::{Path, PathBuf};

/// Threads and matmul level, for every command that runs the model.
#[derive(Clone, Debug, clap::Args)]
pub struct Compute {
    /// Worker threads [default: all cores]
    #[arg(long)]
    pub threads: Option<usize>,
    /// Matmul level of the ladder: naive, parallel, blocked, blocked-parallel, simd, library,
    /// blas, amx, or wgpu (each product on the GPU through wgpu, data moved per call)
    /// [default: the fastest f32 level on this machine]
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
    /// cpu, or cuda[:N] (the N-th GPU; cuda is cuda:0); for sample and eval also wgpu[:N]
    /// (the N-th adapter of `ferrogpt info`, GPT-2 models)
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// fp32; or, on CUDA only, tf32 (fp32 with TF32 tensor-core products) or bf16
    #[arg(long, default_value = "fp32")]
    pub dtype: String,
}

/// Activation recomputation, for the commands that train.
#[derive(Clone, Debug, clap::Args)]
pub struct RecomputeArg {
    /// Recompute activations in the backward pass instead of keeping them, to fit a bigger
    /// model or batch on the GPU (--device cuda): 1 the MLP's activation output, 2 (given
    /// without a level) also the norms' outputs. Same results, a little more time
    #[arg(long, num_args = 0..=1, default_value_t = 0, default_missing_value = "2", value_name = "LEVEL")]
    pub recompute: u8,
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
    Tf32,
    Bf16,
}

impl DeviceArgs {
    /// `--device wgpu[:N]` (sample and eval only): the adapter index, checked with `--dtype`;
    /// None for any other device.
    pub fn wgpu(&self) -> Result<Option<usize>, String> {
        if !self.device.starts_with("wgpu") {
            return Ok(None);
        }
        let index = ferrogpt_wgpu::parse_device(&self.device).map_err(|e| e.to_string())?;
        if self.dtype != "fp32" {
            return Err(format!(
                "--dtype {} needs --device cuda: the wgpu engine computes in fp32",
                self.dtype
            ));
        }
        Ok(Some(index))
    }

    /// Whether the model runs on the CPU engine, with `--device` and `--dtype` checked
    /// (`wgpu` accepted: for the commands that run inference).
    pub fn is_cpu(&self) -> Result<bool, String> {
        if self.wgpu()?.is_some() {
            return Ok(false);
        }
        Ok(self.parse()?.0 == Device::Cpu)
    }

    /// The device and dtype, checked to be a pair some engine supports (`wgpu`, which only
    /// sample and eval take, is refused here: see [`DeviceArgs::wgpu`]).
    pub fn parse(&self) -> Result<(Device, DType), String> {
        if self.device.starts_with("wgpu") {
            return Err(format!(
                "--device {} runs sample and eval only (GPT-2's forward pass); train on cpu or \
                 cuda (--matmul wgpu sends the CPU engine's products to the GPU)",
                self.device
            ));
        }
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
            "tf32" => DType::Tf32,
            "bf16" => DType::Bf16,
            d => return Err(format!("--dtype must be fp32, tf32 or bf16, got '{d}'")),
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
/// CUDA GPU's, recomputing activations at level `recompute` (GPU only; 0 for inference). The
/// one place that maps a device to an engine.
pub fn engine_factory(
    level: Level,
    dev: &DeviceArgs,
    recompute: u8,
) -> Result<Box<EngineFactory<'static>>, String> {
    match dev.parse()? {
        (Device::Cpu, _) if recompute > 0 => Err(
            "--recompute is for the GPU engine (--device cuda); the CPU engine keeps its activations"
                .into(),
        ),
        (Device::Cpu, _) => Ok(CpuEngine::factory(level)),
        (Device::Cuda(ordinal), dtype) => cuda_engine_factory(ordinal, dtype, recompute),
    }
}

/// The inference engine of wgpu adapter `index` (sample, eval): the GPT-2 forward pass in our
/// WGSL kernels, in f32. `--weights` other than f32 is refused.
pub fn wgpu_engine(
    index: usize,
    requested: Option<ferrogpt_gemm::gemv::WeightFormat>,
    init: ferrogpt_train::EngineInit<'_>,
) -> Result<Box<dyn ferrogpt_train::Engine>, String> {
    if let Some(f) = requested.filter(|f| *f != ferrogpt_gemm::gemv::WeightFormat::F32) {
        return Err(format!(
            "--weights {f} runs on the CPU engine only (--device cpu); the wgpu engine computes in f32"
        ));
    }
    let engine = ferrogpt_wgpu::engine::WgpuEngine::new(init, index).map_err(|e| e.to_string())?;
    Ok(Box::new(engine))
}

/// The engine factory of CUDA GPU `ordinal`, computing in `dtype`: where the GPU engine plugs in.
fn cuda_engine_factory(
    ordinal: usize,
    dtype: DType,
    recompute: u8,
) -> Result<Box<EngineFactory<'static>>, String> {
    let dtype = match dtype {
        DType::F32 => ferrogpt_gpu::Dtype::F32,
        DType::Tf32 => ferrogpt_gpu::Dtype::Tf32,
        DType::Bf16 => ferrogpt_gpu::Dtype::Bf16,
    };
    Ok(ferrogpt_gpu::GpuEngine::factory(ordinal, dtype, recompute))
}

/// When `main` started (see [`since_start`]).
static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();

/// Marks the process's start; `main` calls it first.
pub fn mark_start() {
    START.get_or_init(std::time::Instant::now);
}

/// Seconds since [`mark_start`] (the time a user waited, for "time to first step" lines).
pub fn since_start() -> f64 {
    START
        .get_or_init(std::time::Instant::now)
        .elapsed()
        .as_secs_f64()
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
/// Tiny Shakespeare (char-rnn's copy, 1,115,394 bytes), gzip-compressed into the binary.
const SHAKESPEARE_GZ: &[u8] = include_bytes!("../data/tinyshakespeare.txt.gz");
const SHAKESPEARE_BYTES: usize = 1_115_394;
/// SHA-256 of Tiny Shakespeare.
pub const SHAKESPEARE_SHA256: &str =
    "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed";

/// The training data path: as given, or the default file, written from the copy inside the
/// binary when it is missing (no network).
pub fn resolve_data(data: Option<&Path>) -> Result<PathBuf, String> {
    if let Some(p) = data {
        return Ok(p.to_path_buf());
    }
    let path = PathBuf::from(DEFAULT_DATA);
    if !path.exists() {
        write_shakespeare(&path)?;
    }
    Ok(path)
}

/// Tiny Shakespeare, from the copy inside the binary.
pub fn shakespeare() -> Vec<u8> {
    use std::io::Read;
    let mut text = Vec::with_capacity(SHAKESPEARE_BYTES);
    flate2::read::GzDecoder::new(SHAKESPEARE_GZ)
        .read_to_end(&mut text)
        .expect("the bundled Tiny Shakespeare is a valid gzip stream (checked by a test)");
    text
}

fn write_shakespeare(path: &Path) -> Result<(), String> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    }
    let text = shakespeare();
    ferrogpt_core::fsutil::write_atomic(path, &text)
        .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    eprintln!(
        "wrote Tiny Shakespeare ({} bytes, the copy inside ferrogpt) to {}",
        text.len(),
        path.display()
    );
    Ok(())
}

/// TrueType fonts tried for charts' text, after `FERROGPT_FONT`.
const FONTS: &[&str] = &[
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
    "/Library/Fonts/Arial Unicode.ttf",
];

/// Registers a system font as plotters' "sans-serif", once per process: the file named by
/// `FERROGPT_FONT`, else the first of [`FONTS`] that loads. Every chart (`bench matmul --plot`,
/// `plot`) calls it before drawing; the error names the files tried.
pub fn register_font() -> Result<(), String> {
    static DONE: std::sync::OnceLock<Result<(), String>> = std::sync::OnceLock::new();
    DONE.get_or_init(|| {
        let env = std::env::var("FERROGPT_FONT").ok();
        let candidates = env.iter().map(String::as_str).chain(FONTS.iter().copied());
        for path in candidates {
            if let Ok(bytes) = std::fs::read(path) {
                // plotters keeps the font for the life of the process.
                let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
                if plotters::style::register_font(
                    "sans-serif",
                    plotters::style::FontStyle::Normal,
                    bytes,
                )
                .is_ok()
                {
                    return Ok(());
                }
            }
        }
        Err(format!(
            "no TrueType font found for the chart's text (tried {}; set FERROGPT_FONT=FILE.ttf)",
            FONTS.join(", ")
        ))
    })
    .clone()
}
