//! `ferrogpt bench gpu`: the GPU rungs of the matmul ladder beside cuBLAS on one CUDA GPU.
//!
//! Runs [`ferrogpt_cuda::bench::run`] over the requested levels and square sizes and prints
//! the table (level, size, median time from CUDA events, TFLOPS, % of cuBLAS f32, % of cuBLAS
//! bf16 for the bf16 levels, max relative error against f64) or JSON. Without a CUDA driver or
//! GPU it returns one error line. `--save DIR` also writes the run as a result file for
//! `ferrogpt report` (`cmd_report`).

use crate::cmd_bench_matmul::gpu_progress;
use ferrogpt_cuda::{bench, parse_device, Gpu, Level};
use ferrogpt_report::schema::{MatmulFigures, MatmulRow};

/// Output format of `ferrogpt bench gpu`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum GpuBenchFormat {
    /// The table.
    #[default]
    Table,
    /// An array of objects: gpu, level, m, n, k, seconds, reps, tflops, pct_cublas_f32,
    /// pct_cublas_bf16, max_rel_err, skipped.
    Json,
}

/// Time C = A·B at every GPU level of the matmul ladder, beside cuBLAS f32, TF32 and bf16.
#[derive(Clone, Debug, clap::Args)]
pub struct BenchGpuArgs {
    /// Comma-separated square sizes.
    #[arg(long, value_delimiter = ',', default_values_t = vec![1024usize, 2048, 4096, 8192])]
    pub sizes: Vec<usize>,
    /// Comma-separated levels: naive, coalesced, smem-tiled, blocktile-1d, blocktile-2d,
    /// vectorized, warptile, tensor-core-bf16, cublas-f32, cublas-tf32, cublas-bf16; cuBLAS
    /// f32 and bf16 are always measured, as the reference for the ratios [default: all]
    #[arg(long, value_delimiter = ',')]
    pub levels: Vec<String>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = GpuBenchFormat::Table)]
    pub format: GpuBenchFormat,
    /// The GPU: cuda or cuda:N.
    #[arg(long, default_value = "cuda")]
    pub device: String,
    #[command(flatten)]
    pub save: crate::cmd_report::SaveArgs,
}

/// Runs the benchmark and prints its result; errors come back as one line.
pub fn run(args: &BenchGpuArgs) -> Result<(), String> {
    let levels = args
        .levels
        .iter()
        .map(|s| Level::from_name(s))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| e.to_string())?;
    if args.sizes.is_empty() || args.sizes.contains(&0) {
        return Err("--sizes: give positive sizes, e.g. 1024,4096".into());
    }
    let ordinal = parse_device(&args.device).map_err(|e| e.to_string())?;
    let gpu = Gpu::new(ordinal).map_err(|e| e.to_string())?;
    let (major, minor) = gpu.compute_capability();
    let name = format!("{} (sm_{major}{minor})", gpu.name());
    let table = args.format == GpuBenchFormat::Table;
    if table {
        eprintln!("bench gpu on {name}: sizes {:?}", args.sizes);
        eprint!("{}", gpu.kernel_report().map_err(|e| e.to_string())?);
    }
    let rows = bench::run(&gpu, &args.sizes, &levels, |r| {
        if table {
            gpu_progress(17, r.level.name(), r.size, r.seconds, r.skipped.as_deref());
        }
    })
    .map_err(|e| e.to_string())?;
    match args.format {
        GpuBenchFormat::Table => print!("{}", bench::table(&name, &rows)),
        GpuBenchFormat::Json => print!("{}", bench::json(&name, &rows)),
    }
    let figures = MatmulFigures {
        device: "cuda".into(),
        device_name: name,
        dtype: "mixed".into(),
        threads: None,
        peak_gflops: None,
        rows: rows
            .iter()
            .map(|r| MatmulRow {
                level: r.level.name().into(),
                // cuBLAS f32, TF32 and bf16: NVIDIA's library, the peer of our kernels.
                peer: r.level.name().starts_with("cublas"),
                m: r.size,
                n: r.size,
                k: r.size,
                seconds: r.seconds,
                gflops: r.tflops.map(|t| t * 1e3),
                pct_of_peak: None,
                speedup_vs_naive: None,
                pct_cublas_f32: r.pct_cublas_f32,
                pct_cublas_bf16: r.pct_cublas_bf16,
                max_rel_err: r.max_rel_err,
                skipped: r.skipped.clone(),
            })
            .collect(),
    };
    args.save.save(crate::cmd_report::matmul(figures), None)
}
