//! The matmul benchmark behind `ferrogpt bench matmul`: every requested level on square
//! products of each size, timed, checked against an f64 reference, rendered as a table, an
//! ASCII bar chart, JSON or CSV.
//!
//! Method: operands are uniform in [-1, 1); the reference C is computed once per size in f64
//! by the `library` level. Each level runs once as a warm-up, then enough timed runs to fill
//! about half a second (at least 3, at most 50); the reported time is the median. A level is
//! skipped at a size when its previous size predicts more than [`MAX_RUN_SECONDS`] for a single
//! run (time grows as size³), and the row says so.
//!
//! Levels run one after another; after each, the benchmark pauses briefly (longer after
//! `blas`, whose OpenBLAS threads busy-wait after a call) so that the next level has the cores.
//!
//! `max_rel_err` = max |C − C_ref| / max |C_ref|: the largest error relative to the size of C's
//! entries (an elementwise ratio would blow up on entries that cancel to near zero).

use crate::{matmul, Element, Level};
use std::fmt::Write as _;
use std::time::Instant;

/// A single run predicted to take longer than this skips the size.
pub const MAX_RUN_SECONDS: f64 = 1.0;
/// Timed runs fill about this long (at least 3 runs, at most 50).
const TARGET_SECONDS: f64 = 0.5;

/// Element type of a benchmark.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dtype {
    /// Products in f32.
    F32,
    /// Products in f64.
    F64,
}

impl Dtype {
    /// "f32" or "f64", as `--dtype` takes it.
    pub fn name(self) -> &'static str {
        match self {
            Dtype::F32 => "f32",
            Dtype::F64 => "f64",
        }
    }
}

impl std::str::FromStr for Dtype {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "f32" => Ok(Dtype::F32),
            "f64" => Ok(Dtype::F64),
            _ => Err(format!("unknown dtype '{s}' (expected f32 or f64)")),
        }
    }
}

/// What to measure.
#[derive(Clone, Debug)]
pub struct BenchOptions {
    /// Levels, in the order the table lists them.
    pub levels: Vec<Level>,
    /// Square sizes: each row multiplies size×size by size×size.
    pub sizes: Vec<usize>,
    /// The element type of every product.
    pub dtype: Dtype,
    /// Threads for the parallel levels (a rayon pool of this size; OpenBLAS's own pool too;
    /// 0 counts as 1). `library` keeps its own pool, sized by `MATMUL_NUM_THREADS`.
    pub threads: usize,
}

/// One measured (or skipped) level at one size.
#[derive(Clone, Debug)]
pub struct BenchRow {
    /// The level measured.
    pub level: Level,
    /// [`Level::strategy`].
    pub strategy: &'static str,
    /// The element type.
    pub dtype: Dtype,
    /// Rows of A and C (the size: the benchmark's products are square).
    pub m: usize,
    /// Columns of B and C.
    pub n: usize,
    /// The reduction dimension.
    pub k: usize,
    /// [`BenchOptions::threads`] as asked.
    pub threads: usize,
    /// Median seconds of the timed runs (0 when skipped).
    pub seconds: f64,
    /// 2·m·n·k / `seconds` / 10⁹ (0 when skipped).
    pub gflops: f64,
    /// Naive's time over this level's at the same size, where naive ran at that size before
    /// this level (list `naive` first to get it for every level).
    pub speedup_vs_naive: Option<f64>,
    /// GFLOPS as a percentage of the peak handed to [`run`].
    pub pct_of_peak: Option<f64>,
    /// max |C − C_ref| / max |C_ref| (module doc; 0 when skipped).
    pub max_rel_err: f64,
    /// Why this size was not measured.
    pub skipped: Option<String>,
}

/// Runs the benchmark: one row per level and size, sizes outer, levels in the order given.
/// `peak_gflops` (the machine's measured FMA peak for `dtype` and `threads`, see
/// [`crate::hw::measure_peak_on`]) fills `pct_of_peak`; None leaves it empty. A level that
/// is unavailable or fails is a skipped row with the error, never a panic. Sets OpenBLAS's
/// thread count (process-wide) to `threads`. Panics only if rayon cannot start a pool.
pub fn run(opts: &BenchOptions, peak_gflops: Option<f64>) -> Vec<BenchRow> {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(opts.threads.max(1))
        .build()
        .expect("a rayon pool");
    crate::blas::set_threads(opts.threads.max(1));
    pool.install(|| match opts.dtype {
        Dtype::F32 => run_typed::<f32>(opts, peak_gflops),
        Dtype::F64 => run_typed::<f64>(opts, peak_gflops),
    })
}

fn run_typed<T: Element>(opts: &BenchOptions, peak: Option<f64>) -> Vec<BenchRow> {
    let mut rows = vec![];
    // Last measured (size, seconds) per level, to predict the next size.
    let mut last: Vec<Option<(usize, f64)>> = vec![None; opts.levels.len()];
    for &size in &opts.sizes {
        let (m, n, k) = (size, size, size);
        let mut state = 0x2545_f491_4f6c_dd1du64 ^ size as u64;
        let mut rnd = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 11) as f64 / (1u64 << 52) as f64 - 1.0
        };
        let a64: Vec<f64> = (0..m * k).map(|_| rnd()).collect();
        let b64: Vec<f64> = (0..k * n).map(|_| rnd()).collect();
        let a: Vec<T> = a64.iter().map(|&x| T::from_f64(x)).collect();
        let b: Vec<T> = b64.iter().map(|&x| T::from_f64(x)).collect();
        // The reference: the operands as rounded to T, multiplied in f64.
        let a_ref: Vec<f64> = a.iter().map(|x| x.to_f64()).collect();
        let b_ref: Vec<f64> = b.iter().map(|x| x.to_f64()).collect();
        let mut c_ref = vec![0f64; m * n];
        matmul(
            Level::Library,
            false,
            false,
            m,
            n,
            k,
            &a_ref,
            k,
            &b_ref,
            n,
            &mut c_ref,
            n,
            false,
        )
        .expect("the library level always runs");
        let ref_max = c_ref
            .iter()
            .fold(0f64, |acc, x| acc.max(x.abs()))
            .max(f64::MIN_POSITIVE);
        let flops = 2.0 * (m * n * k) as f64;
        let mut naive_seconds = None;
        for (li, &level) in opts.levels.iter().enumerate() {
            let mut row = BenchRow {
                level,
                strategy: level.strategy(),
                dtype: opts.dtype,
                m,
                n,
                k,
                threads: opts.threads,
                seconds: 0.0,
                gflops: 0.0,
                speedup_vs_naive: None,
                pct_of_peak: None,
                max_rel_err: 0.0,
                skipped: None,
            };
            if let Some((s0, t0)) = last[li] {
                let predicted = t0 * (size as f64 / s0 as f64).powi(3);
                if predicted > MAX_RUN_SECONDS {
                    row.skipped = Some(format!(
                        "one run would take about {predicted:.1} s (limit {MAX_RUN_SECONDS} s)"
                    ));
                    rows.push(row);
                    continue;
                }
            }
            let mut c = vec![T::ZERO; m * n];
            let once = |c: &mut [T]| {
                let t = Instant::now();
                let r = matmul(level, false, false, m, n, k, &a, k, &b, n, c, n, false);
                (r, t.elapsed().as_secs_f64())
            };
            let (r, warm) = once(&mut c);
            if let Err(e) = r {
                row.skipped = Some(e.to_string());
                rows.push(row);
                continue;
            }
            let reps = ((TARGET_SECONDS / warm.max(1e-9)) as usize).clamp(3, 50);
            let mut times: Vec<f64> = (0..reps).map(|_| once(&mut c).1).collect();
            times.sort_by(|x, y| x.total_cmp(y));
            let seconds = times[times.len() / 2];
            last[li] = Some((size, seconds));
            row.seconds = seconds;
            row.gflops = flops / seconds / 1e9;
            row.max_rel_err = c
                .iter()
                .zip(&c_ref)
                .fold(0f64, |acc, (x, y)| acc.max((x.to_f64() - y).abs()))
                / ref_max;
            row.pct_of_peak = peak.map(|p| 100.0 * row.gflops / p);
            if level == Level::Naive {
                naive_seconds = Some(seconds);
            }
            row.speedup_vs_naive = naive_seconds.map(|t| t / seconds);
            rows.push(row);
            // Let this level's worker threads go idle before the next level is timed: OpenBLAS's
            // threads busy-wait for a while after a call and would steal the cores.
            std::thread::sleep(std::time::Duration::from_millis(if level == Level::Blas {
                300
            } else {
                20
            }));
        }
    }
    rows
}

/// A time in seconds for a table: "1.25 s", "3.40 ms", "12.5 µs" (also the wgpu bench's).
pub fn fmt_time(s: f64) -> String {
    if s >= 1.0 {
        format!("{s:.2} s")
    } else if s >= 1e-3 {
        format!("{:.2} ms", s * 1e3)
    } else {
        format!("{:.1} µs", s * 1e6)
    }
}

fn size_label(r: &BenchRow) -> String {
    if r.m == r.n && r.n == r.k {
        r.m.to_string()
    } else {
        format!("{}x{}x{}", r.m, r.n, r.k)
    }
}

/// The table of the original project: level, strategy, size, time, GFLOPS, speedup over
/// naive, % of peak, max relative error; then an ASCII bar chart of GFLOPS.
pub fn render_table(rows: &[BenchRow]) -> String {
    let header = [
        "level",
        "strategy",
        "size",
        "time",
        "GFLOPS",
        "vs naive",
        "% peak",
        "max rel err",
    ];
    let cells: Vec<[String; 8]> = rows
        .iter()
        .map(|r| {
            if let Some(why) = &r.skipped {
                let dash = || "-".to_string();
                [
                    r.level.name().into(),
                    r.strategy.into(),
                    size_label(r),
                    dash(),
                    dash(),
                    dash(),
                    dash(),
                    format!("skipped: {why}"),
                ]
            } else {
                [
                    r.level.name().into(),
                    r.strategy.into(),
                    size_label(r),
                    fmt_time(r.seconds),
                    format!("{:.1}", r.gflops),
                    r.speedup_vs_naive
                        .map_or("-".into(), |s| format!("{s:.0}x")),
                    r.pct_of_peak.map_or("-".into(), |p| format!("{p:.0}%")),
                    format!("{:.1e}", r.max_rel_err),
                ]
            }
        })
        .collect();
    let mut width = header.map(|h| h.chars().count());
    for row in &cells {
        for (w, c) in width.iter_mut().zip(row) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut out = String::new();
    let line = |out: &mut String, row: &[String]| {
        let mut s = String::from("|");
        for (i, c) in row.iter().enumerate() {
            let pad = width[i] - c.chars().count();
            // Numbers right-aligned, words left-aligned.
            if (3..7).contains(&i) {
                s += &format!(" {}{c} |", " ".repeat(pad));
            } else {
                s += &format!(" {c}{} |", " ".repeat(pad));
            }
        }
        out.push_str(s.trim_end_matches(' '));
        out.push('\n');
    };
    if let Some(r) = rows.first() {
        let _ = writeln!(
            out,
            "matmul {} (C = A·B, square), {} thread(s)",
            r.dtype.name(),
            r.threads
        );
    }
    line(&mut out, &header.map(String::from));
    let sep: Vec<String> = width.iter().map(|&w| "-".repeat(w)).collect();
    line(&mut out, &sep);
    for row in &cells {
        line(&mut out, row);
    }
    out.push('\n');
    out.push_str(&render_bars(rows));
    out
}

/// GFLOPS per level and size as ASCII bars, scaled to the fastest row.
pub fn render_bars(rows: &[BenchRow]) -> String {
    const WIDTH: usize = 50;
    let max = rows.iter().map(|r| r.gflops).fold(0f64, f64::max).max(1e-9);
    let name_w = rows.iter().map(|r| r.level.name().len()).max().unwrap_or(5);
    let size_w = rows.iter().map(|r| size_label(r).len()).max().unwrap_or(4);
    let mut out = String::from("GFLOPS\n");
    for r in rows {
        let label = format!("{:<name_w$} {:>size_w$}", r.level.name(), size_label(r));
        if r.skipped.is_some() {
            let _ = writeln!(out, "{label} | (skipped)");
        } else {
            let n = ((r.gflops / max) * WIDTH as f64).round() as usize;
            let _ = writeln!(out, "{label} |{} {:.1}", "#".repeat(n.max(1)), r.gflops);
        }
    }
    out
}

fn json_num(x: f64) -> String {
    if x.is_finite() {
        format!("{x}")
    } else {
        "null".into()
    }
}

/// A JSON array: one object per row with `level`, `dtype`, `m`, `n`, `k`, `threads`,
/// `seconds`, `gflops`, `max_rel_err` (null when skipped) and, for skipped rows, `skipped`.
pub fn render_json(rows: &[BenchRow]) -> String {
    let mut out = String::from("[\n");
    for (i, r) in rows.iter().enumerate() {
        let (secs, gf, err) = if r.skipped.is_some() {
            ("null".into(), "null".into(), "null".into())
        } else {
            (
                json_num(r.seconds),
                json_num(r.gflops),
                json_num(r.max_rel_err),
            )
        };
        let _ = write!(
            out,
            "  {{\"level\": \"{}\", \"dtype\": \"{}\", \"m\": {}, \"n\": {}, \"k\": {}, \"threads\": {}, \
             \"seconds\": {secs}, \"gflops\": {gf}, \"max_rel_err\": {err}",
            r.level.name(),
            r.dtype.name(),
            r.m,
            r.n,
            r.k,
            r.threads
        );
        if let Some(why) = &r.skipped {
            let esc = why.replace('\\', "\\\\").replace('"', "\\\"");
            let _ = write!(out, ", \"skipped\": \"{esc}\"");
        }
        out.push('}');
        out.push_str(if i + 1 < rows.len() { ",\n" } else { "\n" });
    }
    out.push(']');
    out.push('\n');
    out
}

/// CSV with a header line; skipped rows have empty numbers and the reason in `skipped`.
pub fn render_csv(rows: &[BenchRow]) -> String {
    let mut out = String::from(
        "level,dtype,m,n,k,threads,seconds,gflops,speedup_vs_naive,pct_of_peak,max_rel_err,skipped\n",
    );
    for r in rows {
        let opt = |x: Option<f64>| x.map_or(String::new(), |v| format!("{v}"));
        let measured = r.skipped.is_none();
        let num = |x: f64| {
            if measured {
                format!("{x}")
            } else {
                String::new()
            }
        };
        let _ = writeln!(
            out,
            "{},{},{},{},{},{},{},{},{},{},{},{}",
            r.level.name(),
            r.dtype.name(),
            r.m,
            r.n,
            r.k,
            r.threads,
            num(r.seconds),
            num(r.gflops),
            opt(r.speedup_vs_naive),
            opt(r.pct_of_peak),
            num(r.max_rel_err),
            r.skipped.as_deref().unwrap_or("").replace(',', ";")
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_small_run_renders() {
        let opts = BenchOptions {
            levels: vec![Level::Naive, Level::Simd, Level::Amx],
            sizes: vec![16, 32],
            dtype: Dtype::F32,
            threads: 2,
        };
        let rows = run(&opts, Some(100.0));
        assert_eq!(rows.len(), 6);
        let simd = &rows[1];
        assert!(simd.skipped.is_none() && simd.gflops > 0.0 && simd.max_rel_err < 1e-5);
        assert!(simd.speedup_vs_naive.is_some() && simd.pct_of_peak.is_some());
        let table = render_table(&rows);
        assert!(table.contains("simd") && table.contains("GFLOPS"));
        let json = render_json(&rows);
        assert!(json.starts_with('[') && json.contains("\"max_rel_err\""));
        assert_eq!(render_csv(&rows).lines().count(), 7);
    }
}
