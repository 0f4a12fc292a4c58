//! Timing the GPU ladder: every level at every square size, beside cuBLAS, in one run.
//!
//! Per size: A and B are drawn once (uniform in [-1, 1)), copied to the device, and converted to
//! bf16 on the device for the bf16 levels. Per level: one run into a NaN-poisoned C, checked
//! against f64 dot products of the f32 inputs at [`SAMPLES`] random entries (so the bf16 and
//! TF32 levels show the error of their rounded inputs); one warm-up; then repeated runs, each
//! timed with CUDA events around the launch, and the median kept. Repeats: enough for about
//! 0.3 s, at least 3 and at most 50. A level is skipped at a size when its time at the
//! previous size, scaled by the cube of the size ratio, predicts more than 2 s a run.
//!
//! TFLOPS = 2·m·n·k / time. `% cuBLAS f32` and `% cuBLAS bf16` compare with those peers
//! measured in the same run at the same size (they are always measured).

use crate::device::{Gpu, Operand};
use crate::ladder::{Input, Level};
use crate::reference::{entry_f64, max_rel_err, Rng};
use crate::CudaError;

/// Entries of C checked against the f64 reference per level and size.
pub const SAMPLES: usize = 256;
const TARGET_SECONDS: f64 = 0.3;
const SKIP_SECONDS: f64 = 2.0;

/// One line of the table.
#[derive(Clone, Debug)]
pub struct BenchRow {
    /// The rung or peer measured.
    pub level: Level,
    /// m = n = k.
    pub size: usize,
    /// Median seconds of one product; `None` when skipped.
    pub seconds: Option<f64>,
    /// Timed runs behind the median (3 to 50; 0 when skipped).
    pub reps: usize,
    /// 2·size³ / `seconds` / 10¹²; `None` when skipped.
    pub tflops: Option<f64>,
    /// cuBLAS f32's time over this one's at the same size, in percent; `None` when either was
    /// not measured.
    pub pct_cublas_f32: Option<f64>,
    /// cuBLAS bf16's time over this one's, in percent; bf16 levels only.
    pub pct_cublas_bf16: Option<f64>,
    /// max |C − C_ref| / max |C_ref| over [`SAMPLES`] entries against f64 products of the f32
    /// inputs (infinite if any element of C was left unwritten or is not finite); `None` when
    /// skipped.
    pub max_rel_err: Option<f64>,
    /// Why the level was not run at this size: the GPU cannot run it, or the previous size
    /// predicts more than 2 s a run.
    pub skipped: Option<String>,
}

/// Runs the ladder. `levels` empty means every level; the cuBLAS f32 and bf16 peers are added
/// when missing. `progress` sees each row as it is measured.
pub fn run(
    gpu: &Gpu,
    sizes: &[usize],
    levels: &[Level],
    mut progress: impl FnMut(&BenchRow),
) -> Result<Vec<BenchRow>, CudaError> {
    let mut levels: Vec<Level> = if levels.is_empty() {
        Level::ALL.to_vec()
    } else {
        levels.to_vec()
    };
    for peer in [Level::CublasF32, Level::CublasBf16] {
        if !levels.contains(&peer) {
            levels.push(peer);
        }
    }
    gpu.compile_all()?;
    let mut rows: Vec<BenchRow> = Vec::new();
    let mut last: Vec<(Level, usize, f64)> = Vec::new();
    for &size in sizes {
        let (m, n, k) = (size, size, size);
        let mut rng = Rng::new(size as u64 ^ 0x5eed);
        let (ha, hb) = (rng.vec(m * k), rng.vec(k * n));
        let (da, db) = (gpu.upload(&ha)?, gpu.upload(&hb)?);
        let (ba, bb) = (gpu.to_bf16(&da)?, gpu.to_bf16(&db)?);
        let nan = gpu.upload(&vec![f32::NAN; m * n])?;
        let mut c = gpu.zeros(m * n)?;
        let picks: Vec<(usize, usize)> = (0..SAMPLES)
            .map(|_| (pick(&mut rng, m), pick(&mut rng, n)))
            .collect();
        let refs: Vec<f64> = picks
            .iter()
            .map(|&(i, j)| entry_f64(n, k, &ha, &hb, i, j))
            .collect();
        let first = rows.len();
        for &level in &levels {
            let (a, b) = match level.input() {
                Input::F32 => (Operand::F32(&da), Operand::F32(&db)),
                Input::Bf16 => (Operand::Bf16(&ba), Operand::Bf16(&bb)),
            };
            let predicted = last
                .iter()
                .find(|(l, _, _)| *l == level)
                .map(|&(_, s, t)| t * (size as f64 / s as f64).powi(3));
            let mut row = BenchRow {
                level,
                size,
                seconds: None,
                reps: 0,
                tflops: None,
                pct_cublas_f32: None,
                pct_cublas_bf16: None,
                max_rel_err: None,
                skipped: None,
            };
            if let Err(e) = gpu.supports(level) {
                row.skipped = Some(e.to_string());
                progress(&row);
                rows.push(row);
                continue;
            }
            if let Some(p) = predicted.filter(|&p| p > SKIP_SECONDS) {
                row.skipped = Some(format!("about {p:.0} s a run"));
                progress(&row);
                rows.push(row);
                continue;
            }
            // Correctness: poisoned C, one run, sampled entries against f64.
            gpu.stream()
                .memcpy_dtod(&nan, &mut c)
                .map_err(|e| CudaError::Driver {
                    during: "poisoning C".into(),
                    message: e.to_string(),
                })?;
            gpu.matmul(level, m, n, k, a, b, &mut c)?;
            let hc = gpu.download(&c)?;
            let unwritten = hc.iter().any(|x| !x.is_finite());
            let err = if unwritten {
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
            let once = time_one(gpu, level, m, n, k, a, b, &mut c)?;
            let reps = ((TARGET_SECONDS / once) as usize).clamp(3, 50);
            let mut times = Vec::with_capacity(reps);
            for _ in 0..reps {
                times.push(time_one(gpu, level, m, n, k, a, b, &mut c)?);
            }
            times.sort_by(f64::total_cmp);
            let t = times[reps / 2];
            row.seconds = Some(t);
            row.reps = reps;
            row.tflops = Some(2.0 * (m * n * k) as f64 / t / 1e12);
            last.retain(|(l, _, _)| *l != level);
            last.push((level, size, t));
            progress(&row);
            rows.push(row);
        }
        let time_of = |l: Level, rows: &[BenchRow]| {
            rows.iter().find(|r| r.level == l).and_then(|r| r.seconds)
        };
        let (f32_t, bf16_t) = (
            time_of(Level::CublasF32, &rows[first..]),
            time_of(Level::CublasBf16, &rows[first..]),
        );
        for row in &mut rows[first..] {
            if let Some(t) = row.seconds {
                row.pct_cublas_f32 = f32_t.map(|p| 100.0 * p / t);
                if row.level.input() == Input::Bf16 {
                    row.pct_cublas_bf16 = bf16_t.map(|p| 100.0 * p / t);
                }
            }
        }
    }
    Ok(rows)
}

fn pick(rng: &mut Rng, n: usize) -> usize {
    (((rng.next_f32() as f64 + 1.0) / 2.0 * n as f64) as usize).min(n - 1)
}

#[allow(clippy::too_many_arguments)]
fn time_one(
    gpu: &Gpu,
    level: Level,
    m: usize,
    n: usize,
    k: usize,
    a: Operand<'_>,
    b: Operand<'_>,
    c: &mut cudarc::driver::CudaSlice<f32>,
) -> Result<f64, CudaError> {
    let start = gpu.event()?;
    gpu.matmul(level, m, n, k, a, b, c)?;
    let end = gpu.event()?;
    // elapsed_ms waits for both events, so a failed launch surfaces here.
    start
        .elapsed_ms(&end)
        .map(|ms| ms as f64 / 1e3)
        .map_err(|e| CudaError::Driver {
            during: "timing with events".into(),
            message: e.to_string(),
        })
}

fn opt(x: Option<f64>, f: impl Fn(f64) -> String) -> String {
    x.map(f).unwrap_or_else(|| "-".into())
}

/// The table: level, size, median time, TFLOPS, % of cuBLAS f32, % of cuBLAS bf16, error.
pub fn table(gpu_name: &str, rows: &[BenchRow]) -> String {
    let mut s = format!("GPU: {gpu_name}\n");
    s += &format!(
        "{:<17} {:>6} {:>11} {:>8} {:>10} {:>11} {:>12}\n",
        "level", "size", "time (ms)", "TFLOPS", "% cuBLAS", "% cuBLAS", "max rel err"
    );
    s += &format!(
        "{:<17} {:>6} {:>11} {:>8} {:>10} {:>11} {:>12}\n",
        "", "", "median", "", "f32", "bf16", ""
    );
    for r in rows {
        if let Some(why) = &r.skipped {
            s += &format!("{:<17} {:>6}   skipped: {why}\n", r.level.name(), r.size);
            continue;
        }
        s += &format!(
            "{:<17} {:>6} {:>11} {:>8} {:>10} {:>11} {:>12}\n",
            r.level.name(),
            r.size,
            opt(r.seconds, |t| format!("{:.3}", t * 1e3)),
            opt(r.tflops, |t| format!("{t:.1}")),
            opt(r.pct_cublas_f32, |p| format!("{p:.1}%")),
            opt(r.pct_cublas_bf16, |p| format!("{p:.1}%")),
            opt(r.max_rel_err, |e| format!("{e:.1e}")),
        );
    }
    s
}

/// JSON: an array of objects with level, m, n, k, seconds, reps, tflops, pct_cublas_f32,
/// pct_cublas_bf16, max_rel_err (null where not measured) and skipped (a reason or null).
pub fn json(gpu_name: &str, rows: &[BenchRow]) -> String {
    let num = |x: Option<f64>| match x {
        Some(v) if v.is_finite() => format!("{v:e}"),
        _ => "null".into(),
    };
    let items: Vec<String> = rows
        .iter()
        .map(|r| {
            format!(
                "{{\"gpu\": \"{}\", \"level\": \"{}\", \"m\": {s}, \"n\": {s}, \"k\": {s}, \"seconds\": {}, \"reps\": {}, \
                 \"tflops\": {}, \"pct_cublas_f32\": {}, \"pct_cublas_bf16\": {}, \"max_rel_err\": {}, \"skipped\": {}}}",
                gpu_name.replace('"', "'"),
                r.level.name(),
                num(r.seconds),
                r.reps,
                num(r.tflops),
                num(r.pct_cublas_f32),
                num(r.pct_cublas_bf16),
                num(r.max_rel_err),
                r.skipped.as_ref().map(|w| format!("\"{w}\"")).unwrap_or_else(|| "null".into()),
                s = r.size,
            )
        })
        .collect();
    format!("[\n  {}\n]\n", items.join(",\n  "))
}
