//! `ferrogpt bench matmul`: the matmul ladder side by side on this machine.
//!
//! Runs [`ferrogpt_gemm::bench::run`] over the requested levels and square sizes and prints
//! the table (with an ASCII bar chart under it), JSON or CSV. `% of peak` is against the FMA
//! peak that [`ferrogpt_gemm::hw::measure_peak_on`] measures first on the same number of
//! threads (at most one per logical core). `--plot FILE.svg|png`
//! also draws GFLOPS against size, one line per level. `--device cuda[:N]` runs the CUDA rungs
//! instead (as `bench gpu`), `--device wgpu[:N]` the WGSL rungs of `ferrogpt_wgpu::bench`.
//! `--save DIR` also writes the run as a result file for `ferrogpt report` (`cmd_report`).

use ferrogpt_gemm::bench::{self, BenchOptions, BenchRow, Dtype};
use ferrogpt_gemm::{hw, Level};
use ferrogpt_report::schema::{MatmulFigures, MatmulRow};

/// Output format of `ferrogpt bench matmul`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum BenchFormat {
    /// The table and an ASCII bar chart.
    #[default]
    Table,
    /// An array of objects: level, dtype, m, n, k, threads, seconds, gflops, max_rel_err.
    Json,
    /// One line per row, with a header.
    Csv,
}

/// Time C = A·B at every level of the matmul ladder.
#[derive(Clone, Debug, clap::Args)]
pub struct BenchMatmulArgs {
    /// Comma-separated levels, e.g. naive,simd,blas [default: every level available here]
    #[arg(long, value_delimiter = ',')]
    pub levels: Vec<String>,
    /// Comma-separated square sizes [default: 128,256,512,1024,2048; with cuda
    /// 1024,2048,4096,8192; with wgpu 1024,2048,4096]
    #[arg(long, value_delimiter = ',')]
    pub sizes: Option<Vec<usize>>,
    /// Element type: f32 or f64.
    #[arg(long, default_value = "f32")]
    pub dtype: String,
    /// Threads for the parallel levels [default: one per logical core]
    #[arg(long)]
    pub threads: Option<usize>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = BenchFormat::Table)]
    pub format: BenchFormat,
    /// Also draw GFLOPS against size per level into FILE (.svg or .png) [default: no chart]
    #[arg(long, value_name = "FILE")]
    pub plot: Option<std::path::PathBuf>,
    /// cpu (the CPU ladder); cuda[:N]: the GPU rungs beside cuBLAS, as `bench gpu`; wgpu[:N]:
    /// the WGSL rungs on adapter N of `ferrogpt info` (0, the best, by default).
    #[arg(long, default_value = "cpu")]
    pub device: String,
    #[command(flatten)]
    pub save: crate::cmd_report::SaveArgs,
}

/// Runs the benchmark and prints it; errors name the bad argument.
pub fn run(args: &BenchMatmulArgs) -> Result<(), String> {
    if args.device.starts_with("wgpu") {
        return run_wgpu(args);
    }
    if args.device != "cpu" {
        ferrogpt_cuda::parse_device(&args.device).map_err(|e| e.to_string())?;
        let format = match args.format {
            BenchFormat::Table => crate::cmd_bench_gpu::GpuBenchFormat::Table,
            BenchFormat::Json => crate::cmd_bench_gpu::GpuBenchFormat::Json,
            BenchFormat::Csv => {
                return Err("--format csv: the GPU benchmark writes table or json".into())
            }
        };
        if args.dtype != "f32" || args.threads.is_some() || args.plot.is_some() {
            return Err("--dtype, --threads and --plot are for the CPU ladder; the GPU table has every precision".into());
        }
        return crate::cmd_bench_gpu::run(&crate::cmd_bench_gpu::BenchGpuArgs {
            sizes: args
                .sizes
                .clone()
                .unwrap_or_else(|| vec![1024, 2048, 4096, 8192]),
            levels: args.levels.clone(),
            format,
            device: args.device.clone(),
            save: args.save.clone(),
        });
    }
    let sizes = args
        .sizes
        .clone()
        .unwrap_or_else(|| vec![128, 256, 512, 1024, 2048]);
    let dtype: Dtype = args.dtype.parse()?;
    let levels: Vec<Level> = if args.levels.is_empty() {
        Level::available_levels()
    } else {
        args.levels
            .iter()
            .map(|s| s.trim().parse::<Level>().map_err(|e| e.to_string()))
            .collect::<Result<_, _>>()?
    };
    if sizes.is_empty() || sizes.contains(&0) {
        return Err("--sizes: expected positive sizes, e.g. 128,256,512".into());
    }
    let cores = hw::logical_cores();
    let threads = args.threads.unwrap_or(cores);
    if threads == 0 {
        return Err("--threads: expected at least 1".into());
    }
    if let Some(path) = &args.plot {
        plot_kind(path)?;
    }
    // The library level's crate (matrixmultiply) sizes its own pool once per process from
    // this variable; set it before the first product so `--threads` applies to it too.
    if std::env::var_os("MATMUL_NUM_THREADS").is_none() {
        std::env::set_var("MATMUL_NUM_THREADS", threads.to_string());
    }
    // The peak on exactly `threads` threads (with fewer threads than cores, one core's figure
    // times the threads would overstate it where cores share a clock budget).
    let peak = hw::measure_peak_on(threads.min(cores));
    let peak_gflops = match dtype {
        Dtype::F32 => peak.f32_all,
        Dtype::F64 => peak.f64_all,
    };
    let opts = BenchOptions {
        levels,
        sizes: sizes.clone(),
        dtype,
        threads,
    };
    let rows = bench::run(&opts, Some(peak_gflops));
    match args.format {
        BenchFormat::Table => {
            print!("{}", bench::render_table(&rows));
            println!(
                "peak: {peak_gflops:.0} GFLOPS {} ({} FMA, {threads} thread(s), measured now)",
                dtype.name(),
                peak.isa
            );
        }
        BenchFormat::Json => print!("{}", bench::render_json(&rows)),
        BenchFormat::Csv => print!("{}", bench::render_csv(&rows)),
    }
    if let Some(path) = &args.plot {
        plot(&rows, path)?;
        eprintln!("wrote {}", path.display());
    }
    let figures = MatmulFigures {
        device: "cpu".into(),
        device_name: hw::detect().model,
        dtype: dtype.name().into(),
        threads: Some(threads),
        peak_gflops: Some(peak_gflops),
        rows: rows
            .iter()
            .map(|r| {
                let measured = r.skipped.is_none();
                MatmulRow {
                    level: r.level.name().into(),
                    // Another project's code: the matrixmultiply crate, the system BLAS.
                    peer: matches!(r.level, Level::Library | Level::Blas),
                    m: r.m,
                    n: r.n,
                    k: r.k,
                    seconds: measured.then_some(r.seconds),
                    gflops: measured.then_some(r.gflops),
                    pct_of_peak: r.pct_of_peak.filter(|_| measured),
                    speedup_vs_naive: r.speedup_vs_naive,
                    pct_cublas_f32: None,
                    pct_cublas_bf16: None,
                    max_rel_err: measured.then_some(r.max_rel_err),
                    skipped: r.skipped.clone(),
                }
            })
            .collect(),
    };
    args.save
        .save(crate::cmd_report::matmul(figures), Some(peak))
}

/// The line on stderr as a GPU rung is measured at a size (wgpu's here, CUDA's in `bench
/// gpu`): its median time, or why it was skipped; the level's name padded to `width`.
pub fn gpu_progress(
    width: usize,
    level: &str,
    size: usize,
    seconds: Option<f64>,
    skipped: Option<&str>,
) {
    match (seconds, skipped) {
        (Some(t), _) => eprintln!("  {level:<width$} {size:>6}  {:.3} ms", t * 1e3),
        (None, Some(why)) => eprintln!("  {level:<width$} {size:>6}  skipped: {why}"),
        _ => {}
    }
}

/// `--device wgpu[:N]`: every WGSL rung (or `--levels`) at every size, checked against the
/// f64 oracle; the table, JSON or CSV of `ferrogpt_wgpu::bench`.
fn run_wgpu(args: &BenchMatmulArgs) -> Result<(), String> {
    use ferrogpt_wgpu::{bench, Gpu, Level};
    let index = ferrogpt_wgpu::parse_device(&args.device).map_err(|e| e.to_string())?;
    if args.dtype != "f32" || args.threads.is_some() || args.plot.is_some() {
        return Err("--dtype, --threads and --plot are for the CPU ladder; the wgpu table has its f32 and f16 rungs".into());
    }
    let levels = args
        .levels
        .iter()
        .map(|s| Level::from_name(s))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| e.to_string())?;
    let sizes = args.sizes.clone().unwrap_or_else(|| vec![1024, 2048, 4096]);
    if sizes.is_empty() || sizes.contains(&0) {
        return Err("--sizes: expected positive sizes, e.g. 256,1024".into());
    }
    let gpu = Gpu::new(index).map_err(|e| e.to_string())?;
    let (name, clock) = (gpu.name(), gpu.clock());
    let table = args.format == BenchFormat::Table;
    if table {
        eprintln!("bench matmul on wgpu adapter {index}: {name}; sizes {sizes:?}");
    }
    let rows = bench::run(&gpu, &sizes, &levels, |r| {
        if table {
            gpu_progress(13, r.level.name(), r.size, r.seconds, r.skipped.as_deref());
        }
    })
    .map_err(|e| e.to_string())?;
    match args.format {
        BenchFormat::Table => print!("{}", bench::render_table(&name, clock, &rows)),
        BenchFormat::Json => print!("{}", bench::render_json(&name, clock, &rows)),
        BenchFormat::Csv => print!("{}", bench::render_csv(&name, clock, &rows)),
    }
    let figures = MatmulFigures {
        device: "wgpu".into(),
        device_name: name,
        dtype: "mixed".into(),
        threads: None,
        peak_gflops: None,
        rows: rows
            .iter()
            .map(|r| MatmulRow {
                level: r.level.name().into(),
                peer: false,
                m: r.size,
                n: r.size,
                k: r.size,
                seconds: r.seconds,
                gflops: r.gflops,
                pct_of_peak: None,
                speedup_vs_naive: r.speedup_vs_naive,
                pct_cublas_f32: None,
                pct_cublas_bf16: None,
                max_rel_err: r.max_rel_err,
                skipped: r.skipped.clone(),
            })
            .collect(),
    };
    args.save.save(crate::cmd_report::matmul(figures), None)
}

#[derive(Clone, Copy, PartialEq)]
enum PlotKind {
    Svg,
    Png,
}

fn plot_kind(path: &std::path::Path) -> Result<PlotKind, String> {
    match path
        .extension()
        .and_then(|e| e.to_str())
        .map(|e| e.to_ascii_lowercase())
        .as_deref()
    {
        Some("svg") => Ok(PlotKind::Svg),
        Some("png") => Ok(PlotKind::Png),
        _ => Err(format!(
            "--plot {}: expected a .svg or .png file name",
            path.display()
        )),
    }
}

/// GFLOPS against size, one line per level (skipped sizes are left out).
fn plot(rows: &[BenchRow], path: &std::path::Path) -> Result<(), String> {
    use plotters::prelude::*;
    crate::common::register_font().map_err(|e| format!("--plot: {e}"))?;
    match plot_kind(path)? {
        PlotKind::Svg => draw(rows, SVGBackend::new(path, (900, 560)).into_drawing_area()),
        PlotKind::Png => draw(
            rows,
            BitMapBackend::new(path, (900, 560)).into_drawing_area(),
        ),
    }
    .map_err(|e| format!("--plot {}: {e}", path.display()))
}

fn draw<DB: plotters::prelude::DrawingBackend>(
    rows: &[BenchRow],
    root: plotters::prelude::DrawingArea<DB, plotters::coord::Shift>,
) -> Result<(), String> {
    use plotters::prelude::*;
    let err = |e: &dyn std::fmt::Debug| format!("{e:?}");
    let measured: Vec<&BenchRow> = rows.iter().filter(|r| r.skipped.is_none()).collect();
    let lo = measured.iter().map(|r| r.m).min().unwrap_or(1) as f64;
    let hi = measured.iter().map(|r| r.m).max().unwrap_or(2) as f64;
    let top = measured.iter().map(|r| r.gflops).fold(1.0, f64::max) * 1.1;
    let mut levels: Vec<Level> = vec![];
    for r in &measured {
        if !levels.contains(&r.level) {
            levels.push(r.level);
        }
    }
    let title = match rows.first() {
        Some(r) => format!("matmul {} GFLOPS, {} thread(s)", r.dtype.name(), r.threads),
        None => "matmul GFLOPS".into(),
    };
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(&title, ("sans-serif", 22))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d((lo..hi.max(lo * 2.0)).log_scale(), 0.0..top)
        .map_err(|e| err(&e))?;
    chart
        .configure_mesh()
        .x_desc("size (n = m = k)")
        .y_desc("GFLOPS")
        .x_label_formatter(&|x| format!("{x:.0}"))
        .draw()
        .map_err(|e| err(&e))?;
    for (i, &level) in levels.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        let pts: Vec<(f64, f64)> = measured
            .iter()
            .filter(|r| r.level == level)
            .map(|r| (r.m as f64, r.gflops))
            .collect();
        chart
            .draw_series(LineSeries::new(pts.clone(), color.stroke_width(2)))
            .map_err(|e| err(&e))?
            .label(level.name())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2))
            });
        chart
            .draw_series(pts.into_iter().map(|p| Circle::new(p, 3, color.filled())))
            .map_err(|e| err(&e))?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(|e| err(&e))?;
    root.present().map_err(|e| err(&e))
}
