//! Timing the wgpu ladder: every level at every square size, in one run.
//!
//! Per size: A and B are drawn once (uniform in [-1, 1)) and uploaded as f32 and, where a level
//! reads f16, as f16. Per level: one run into a NaN-poisoned C, every element of which must be
//! written, checked against f64 dot products of the f32 inputs at [`SAMPLES`] random entries (so
//! the f16 row shows the error of its rounded inputs); one warm-up; then repeated runs timed by
//! [`Gpu::time_matmul`] (GPU timestamps where the adapter has them, else the wall clock around
//! each submission) and the median kept. Repeats: enough for about 0.3 s, at least 3 and at
//! most 50. A level is skipped at a size when its time at the previous size, scaled by the cube
//! of the size ratio, predicts more than 2 s a run.
//!
//! GFLOPS = 2·m·n·k / time; `vs naive` is naive's time over the level's at the same size.

use crate::device::{Clock, Gpu};
use crate::ladder::{Input, Level};
use crate::reference::{entry_f64, max_rel_err, random};
use crate::WgpuError;
use ferrogpt_gemm::bench::fmt_time;
use std::fmt::Write as _;

/// Entries of C checked against the f64 reference per level and size.
pub const SAMPLES: usize = 256;
const TARGET_SECONDS: f64 = 0.3;
const SKIP_SECONDS: f64 = 2.0;

/// One line of the table.
#[derive(Clone, Debug)]
pub struct BenchRow {
    /// The rung measured.
    pub level: Level,
    /// m = n = k.
    pub size: usize,
    /// Median seconds of one product; `None` when skipped.
    pub seconds: Option<f64>,
    /// Timed runs behind the median (3 to 50; 0 when skipped).
    pub reps: usize,
    /// 2·size³ / `seconds` / 10⁹; `None` when skipped.
    pub gflops: Option<f64>,
    /// Naive's time over this level's at the same size, where naive ran at that size.
    pub speedup_vs_naive: Option<f64>,
    /// max |C − C_ref| / max |C_ref| over [`SAMPLES`] entries against f64 products of the f32
    /// inputs (so the f16 rung shows the error of its rounded inputs); `None` when skipped.
    pub max_rel_err: Option<f64>,
    /// Why this size was not measured.
    pub skipped: Option<String>,
}

/// Runs the ladder on `gpu`. `levels` empty means every level. `progress` sees each row as it
/// is measured. Errors: the first error of wgpu (a level that does not compile, a buffer past
/// the adapter's limits); a level the adapter cannot run is a skipped row instead.
pub fn run(
    gpu: &Gpu,
    sizes: &[usize],
    levels: &[Level],
    mut progress: impl FnMut(&BenchRow),
) -> Result<Vec<BenchRow>, WgpuError> {
    let levels: Vec<Level> = if levels.is_empty() {
        Level::ALL.to_vec()
    } else {
        levels.to_vec()
    };
    gpu.compile_all()?;
    let wants_f16 = levels
        .iter()
        .any(|&l| l.input() == Input::F16 && gpu.supports(l).is_ok());
    let mut rows: Vec<BenchRow> = Vec::new();
    let mut last: Vec<(Level, usize, f64)> = Vec::new();
    for &size in sizes {
        let (m, n, k) = (size, size, size);
        let seed = size as u64 ^ 0x5eed;
        let (ha, hb) = (random(seed, m * k), random(seed + 1, k * n));
        let (da, db) = (gpu.upload(&ha)?, gpu.upload(&hb)?);
        let half = if wants_f16 {
            Some((
                gpu.upload_as(Input::F16, &ha)?,
                gpu.upload_as(Input::F16, &hb)?,
            ))
        } else {
            None
        };
        let nan = gpu.upload(&vec![f32::NAN; m * n])?;
        let mut c = gpu.zeros(m * n)?;
        let picks = random(seed + 2, 2 * SAMPLES);
        let picks: Vec<(usize, usize)> = picks
            .chunks_exact(2)
            .map(|p| (index(p[0], m), index(p[1], n)))
            .collect();
        let refs: Vec<f64> = picks
            .iter()
            .map(|&(i, j)| entry_f64(n, k, &ha, &hb, i, j))
            .collect();
        let first = rows.len();
        for &level in &levels {
            let mut row = BenchRow {
                level,
                size,
                seconds: None,
                reps: 0,
                gflops: None,
                speedup_vs_naive: None,
                max_rel_err: None,
                skipped: None,
            };
            let predicted = last
                .iter()
                .find(|(l, _, _)| *l == level)
                .map(|&(_, s, t)| t * (size as f64 / s as f64).powi(3));
            let operands = match (level.input(), &half) {
                (Input::F32, _) => Some((&da, &db)),
                (Input::F16, Some((ha, hb))) => Some((ha, hb)),
                (Input::F16, None) => None,
            };
            let why = match (gpu.supports(level), operands, predicted) {
                (Err(e), _, _) => Some(e.to_string()),
                (Ok(()), None, _) => Some("no f16 operands".into()),
                (Ok(()), _, Some(p)) if p > SKIP_SECONDS => Some(format!("about {p:.0} s a run")),
                _ => None,
            };
            let (Some((a, b)), None) = (operands, why.clone()) else {
                row.skipped = why;
                progress(&row);
                rows.push(row);
                continue;
            };
            // Correctness: poisoned C, one run, sampled entries against f64.
            gpu.copy(&nan, &mut c)?;
            gpu.matmul(level, m, n, k, a, b, &mut c)?;
            let hc = gpu.download(&c)?;
            let err = if hc.iter().any(|x| !x.is_finite()) {
                f64::INFINITY
            } else {
                max_rel_err(
                    picks
                        .iter()
                        .zip(&refs)
                        .map(|(&(i, j), &r)| (hc[i * n + j], r)),
                )
            };
            row.max_rel_err = Some(err);
            // Timing: a warm-up, a probe for the repeat count, then the repeats.
            gpu.time_matmul(level, m, n, k, a, b, &mut c, 1)?;
            let once = gpu.time_matmul(level, m, n, k, a, b, &mut c, 1)?[0].max(1e-9);
            let reps = ((TARGET_SECONDS / once) as usize).clamp(3, 50);
            let mut times = gpu.time_matmul(level, m, n, k, a, b, &mut c, reps)?;
            times.sort_by(f64::total_cmp);
            let t = times[times.len() / 2];
            row.seconds = Some(t);
            row.reps = times.len();
            row.gflops = Some(2.0 * (m * n * k) as f64 / t / 1e9);
            last.retain(|(l, _, _)| *l != level);
            last.push((level, size, t));
            progress(&row);
            rows.push(row);
        }
        let naive = rows[first..]
            .iter()
            .find(|r| r.level == Level::Naive)
            .and_then(|r| r.seconds);
        for row in &mut rows[first..] {
            row.speedup_vs_naive = naive.zip(row.seconds).map(|(n, t)| n / t);
        }
    }
    Ok(rows)
}

/// A uniform value in [-1, 1) as an index below `n`.
fn index(u: f32, n: usize) -> usize {
    (((u as f64 + 1.0) / 2.0 * n as f64) as usize).min(n - 1)
}

fn dtype(level: Level) -> &'static str {
    match level.input() {
        Input::F32 => "f32",
        Input::F16 => "f16",
    }
}

/// The table: level, input type, size, median time, GFLOPS, speedup over naive, max relative
/// error, under a line naming the adapter and the clock.
pub fn render_table(device: &str, clock: Clock, rows: &[BenchRow]) -> String {
    let header = [
        "level",
        "inputs",
        "size",
        "time",
        "GFLOPS",
        "vs naive",
        "max rel err",
    ];
    let dash = || "-".to_string();
    let cells: Vec<[String; 7]> = rows
        .iter()
        .map(|r| {
            let (time, gflops, vs, err) = match &r.skipped {
                Some(why) => (dash(), dash(), dash(), format!("skipped: {why}")),
                None => (
                    r.seconds.map_or_else(dash, fmt_time),
                    r.gflops.map_or_else(dash, |g| format!("{g:.1}")),
                    r.speedup_vs_naive.map_or_else(dash, |s| {
                        if s < 10.0 {
                            format!("{s:.1}x")
                        } else {
                            format!("{s:.0}x")
                        }
                    }),
                    r.max_rel_err.map_or_else(dash, |e| format!("{e:.1e}")),
                ),
            };
            [
                r.level.name().into(),
                dtype(r.level).into(),
                r.size.to_string(),
                time,
                gflops,
                vs,
                err,
            ]
        })
        .collect();
    let mut width = header.map(|h| h.chars().count());
    for row in &cells {
        for (w, c) in width.iter_mut().zip(row) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |out: &mut String, row: &[String]| {
        let mut s = String::from("|");
        for (i, c) in row.iter().enumerate() {
            let pad = " ".repeat(width[i] - c.chars().count());
            // Numbers right-aligned, words left-aligned.
            if (2..6).contains(&i) {
                s += &format!(" {pad}{c} |");
            } else {
                s += &format!(" {c}{pad} |");
            }
        }
        out.push_str(s.trim_end_matches(' '));
        out.push('\n');
    };
    let mut out = format!(
        "matmul on wgpu (C = A·B, square, f32 accumulation): {device}; timed by {}\n",
        clock.name()
    );
    line(&mut out, &header.map(String::from));
    line(&mut out, &width.map(|w| "-".repeat(w)));
    for row in &cells {
        line(&mut out, row);
    }
    out
}

fn num(x: Option<f64>) -> String {
    match x {
        Some(v) if v.is_finite() => format!("{v}"),
        _ => "null".into(),
    }
}

fn escape(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"")
}

/// A JSON array: one object per row with `level`, `dtype`, `m`, `n`, `k`, `device`, `clock`,
/// `seconds`, `gflops`, `speedup_vs_naive`, `max_rel_err` (null when not measured) and, for
/// skipped rows, `skipped`.
pub fn render_json(device: &str, clock: Clock, rows: &[BenchRow]) -> String {
    let mut out = String::from("[\n");
    for (i, r) in rows.iter().enumerate() {
        let _ = write!(
            out,
            "  {{\"level\": \"{}\", \"dtype\": \"{}\", \"m\": {s}, \"n\": {s}, \"k\": {s}, \"device\": \"{}\", \
             \"clock\": \"{}\", \"seconds\": {}, \"gflops\": {}, \"speedup_vs_naive\": {}, \"max_rel_err\": {}",
            r.level.name(),
            dtype(r.level),
            escape(device),
            clock.name(),
            num(r.seconds),
            num(r.gflops),
            num(r.speedup_vs_naive),
            num(r.max_rel_err),
            s = r.size,
        );
        if let Some(why) = &r.skipped {
            let _ = write!(out, ", \"skipped\": \"{}\"", escape(why));
        }
        out.push('}');
        out.push_str(if i + 1 < rows.len() { ",\n" } else { "\n" });
    }
    out.push_str("]\n");
    out
}

/// One line per row, with a header: level, dtype, m, n, k, device, clock, seconds, gflops,
/// speedup_vs_naive, max_rel_err, skipped (empty fields where not measured).
pub fn render_csv(device: &str, clock: Clock, rows: &[BenchRow]) -> String {
    let mut out = String::from(
        "level,dtype,m,n,k,device,clock,seconds,gflops,speedup_vs_naive,max_rel_err,skipped\n",
    );
    let opt = |x: Option<f64>| x.map_or(String::new(), |v| format!("{v}"));
    for r in rows {
        let _ = writeln!(
            out,
            "{},{},{s},{s},{s},{},{},{},{},{},{},{}",
            r.level.name(),
            dtype(r.level),
            device.replace(',', ";"),
            clock.name(),
            opt(r.seconds),
            opt(r.gflops),
            opt(r.speedup_vs_naive),
            opt(r.max_rel_err),
            r.skipped.as_deref().unwrap_or("").replace(',', ";"),
            s = r.size,
        );
    }
    out
}
