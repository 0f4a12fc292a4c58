//! `ferrogpt plot`: training curves of one or more runs, from their `metrics.jsonl`, as SVG or
//! PNG.
//!
//! The top panel holds the loss: per run a line of training loss (raw, or an exponential moving
//! average over a faint raw line) and a dashed line with markers of validation loss, in the run's
//! colour, against step, training tokens or seconds. Optional panels below it share the x axis:
//! learning rate, gradient norm. A resumed run re-appends the steps after its checkpoint, so a
//! step's last record is the one kept.

use plotters::coord::ranged1d::{AsRangedCoord, ValueFormatter};
use plotters::coord::Shift;
use plotters::prelude::*;
use std::collections::BTreeMap;
use std::ops::Range;
use std::path::{Path, PathBuf};

/// Draw training and validation loss (and optionally learning rate and gradient norm) of runs.
#[derive(Clone, Debug, clap::Args)]
pub struct PlotArgs {
    /// Run directories holding metrics.jsonl, or metrics.jsonl files (at least one).
    #[arg(value_name = "RUN")]
    pub runs: Vec<PathBuf>,
    /// The image to write: FILE.svg or FILE.png (required, no default).
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
    /// X axis: step, tokens (training tokens seen) or seconds (the run's elapsed time).
    #[arg(long, default_value = "step")]
    pub x: String,
    /// Panels below the loss, comma-separated: lr, grad-norm (default: none).
    #[arg(long, value_delimiter = ',')]
    pub panels: Vec<String>,
    /// Legend names, comma-separated, one per run (default: each run directory's name).
    #[arg(long, value_delimiter = ',')]
    pub labels: Vec<String>,
    /// EMA factor in [0, 1) for the training loss, raw points drawn faint behind (0 = raw).
    #[arg(long, default_value_t = 0.0)]
    pub smooth: f64,
    /// Log scale for the loss axis (default: linear).
    #[arg(long)]
    pub log_y: bool,
    /// Image width in pixels.
    #[arg(long, default_value_t = 1000)]
    pub width: u32,
    /// Image height in pixels (default: 600, plus 200 per panel).
    #[arg(long)]
    pub height: Option<u32>,
}

/// One line of `metrics.jsonl`; other fields are ignored.
#[derive(serde::Deserialize)]
struct Record {
    step: u64,
    train_loss: f64,
    elapsed_s: f64,
    /// null when it was not finite.
    lr: Option<f64>,
    grad_norm: Option<f64>,
    /// On evaluation steps only.
    val_loss: Option<f64>,
    /// Cumulative training tokens after this step; absent in files written before it existed.
    tokens: Option<f64>,
}

/// A run's records, one per step in step order, with its legend name and x coordinates.
struct Run {
    label: String,
    records: Vec<Record>,
    /// One per record, in the unit of `--x`.
    xs: Vec<f64>,
}

#[derive(Clone, Copy, PartialEq)]
enum XAxis {
    Step,
    Tokens,
    Seconds,
}

#[derive(Clone, Copy, PartialEq)]
enum Panel {
    Lr,
    GradNorm,
}

/// A line in a panel, named in the legend or not.
struct Line {
    points: Vec<(f64, f64)>,
    style: ShapeStyle,
    /// Dashed, with a marker at each point (validation loss); else solid.
    val: bool,
    legend: Option<String>,
}

/// The largest `--width` and `--height`: a typo should not allocate gigabytes for a PNG.
const MAX_PIXELS: u32 = 16384;

/// Tableau's ten colours: distinct, and dark enough for thin lines on white.
const COLORS: [RGBColor; 10] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
];

/// Reads the runs and writes the chart to `--out`; every bad argument or input file is an
/// error of one line naming it.
pub fn run(a: PlotArgs) -> Result<(), String> {
    let svg = match a.out.extension().and_then(|e| e.to_str()) {
        Some(e) if e.eq_ignore_ascii_case("svg") => true,
        Some(e) if e.eq_ignore_ascii_case("png") => false,
        _ => {
            return Err(format!(
                "--out {}: expected a file name ending in .svg or .png",
                a.out.display()
            ))
        }
    };
    let x_axis = match a.x.as_str() {
        "step" => XAxis::Step,
        "tokens" => XAxis::Tokens,
        "seconds" => XAxis::Seconds,
        x => return Err(format!("--x must be step, tokens or seconds, got '{x}'")),
    };
    let panels = a
        .panels
        .iter()
        .map(|p| match p.trim() {
            "lr" => Ok(Panel::Lr),
            "grad-norm" => Ok(Panel::GradNorm),
            p => Err(format!(
                "--panels: unknown panel '{p}' (expected lr, grad-norm)"
            )),
        })
        .collect::<Result<Vec<_>, _>>()?;
    if a.runs.is_empty() {
        return Err(
            "no runs given: pass one or more run directories or metrics.jsonl files".into(),
        );
    }
    if !a.labels.is_empty() && a.labels.len() != a.runs.len() {
        return Err(format!(
            "--labels names {} run(s) but {} were given",
            a.labels.len(),
            a.runs.len()
        ));
    }
    if !(0.0..1.0).contains(&a.smooth) {
        return Err(format!("--smooth must be in [0, 1), got {}", a.smooth));
    }
    let height = a.height.unwrap_or(600 + 200 * panels.len() as u32);
    let min_height = 200 + 100 * panels.len() as u32;
    if !(300..=MAX_PIXELS).contains(&a.width) || !(min_height..=MAX_PIXELS).contains(&height) {
        return Err(format!(
            "--width and --height: between 300 x {min_height} (with {} panel(s)) and {MAX_PIXELS} x {MAX_PIXELS} pixels, got {} x {height}",
            panels.len(),
            a.width
        ));
    }

    let mut runs = Vec::with_capacity(a.runs.len());
    for (i, arg) in a.runs.iter().enumerate() {
        let (dir, file) = locate(arg)?;
        let records = read_metrics(&file)?;
        let xs = x_coords(&records, x_axis, &dir, &file)?;
        let label = match a.labels.get(i) {
            Some(l) => l.trim().to_string(),
            None => dir_name(&dir),
        };
        runs.push(Run { label, records, xs });
    }

    let mut charts = vec![loss_lines(&runs, a.smooth)];
    for &p in &panels {
        charts.push(panel_lines(&runs, p));
    }
    let x_desc = match x_axis {
        XAxis::Step => "step",
        XAxis::Tokens => "training tokens",
        XAxis::Seconds => "seconds",
    };
    let mut y_descs = vec!["loss"];
    y_descs.extend(panels.iter().map(|p| match p {
        Panel::Lr => "learning rate",
        Panel::GradNorm => "gradient norm",
    }));

    crate::common::register_font()?;
    let size = (a.width, height);
    let drawn = if svg {
        let root = SVGBackend::new(&a.out, size).into_drawing_area();
        draw(&root, &charts, &y_descs, x_desc, a.log_y)
            .and_then(|()| root.present().map_err(|e| e.to_string()))
    } else {
        let root = BitMapBackend::new(&a.out, size).into_drawing_area();
        draw(&root, &charts, &y_descs, x_desc, a.log_y)
            .and_then(|()| root.present().map_err(|e| e.to_string()))
    };
    drawn.map_err(|e| format!("cannot draw {}: {e}", a.out.display()))?;
    eprintln!("wrote {}", a.out.display());
    Ok(())
}

/// The run directory and the metrics file of a RUN argument: a directory holding
/// `metrics.jsonl`, or such a file itself (its directory is then the run's).
fn locate(arg: &Path) -> Result<(PathBuf, PathBuf), String> {
    if arg.is_dir() {
        let file = arg.join("metrics.jsonl");
        if !file.is_file() {
            return Err(format!(
                "{}: no metrics.jsonl in this directory (not a training run?)",
                arg.display()
            ));
        }
        return Ok((arg.to_path_buf(), file));
    }
    if arg.is_file() {
        let dir = match arg.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        return Ok((dir, arg.to_path_buf()));
    }
    Err(format!(
        "{}: no such run directory or metrics file",
        arg.display()
    ))
}

/// The default label: the directory's own name (of its absolute path, so `.` works too).
fn dir_name(dir: &Path) -> String {
    let abs = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
    match abs.file_name() {
        Some(n) => n.to_string_lossy().into_owned(),
        None => dir.display().to_string(),
    }
}

/// The records of `file`, one per step in step order, the last one of a repeated step.
/// Errors: unreadable, empty (no records), or a line that is not a record (named by number).
fn read_metrics(file: &Path) -> Result<Vec<Record>, String> {
    let text = std::fs::read_to_string(file)
        .map_err(|e| format!("cannot read {}: {e}", file.display()))?;
    let mut by_step = BTreeMap::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let r: Record = serde_json::from_str(line).map_err(|e| {
            // serde_json places the fault within the one line it was given; drop that.
            let msg = e.to_string();
            let why = msg.split(" at line ").next().unwrap_or_default();
            format!(
                "{} line {}: not a metrics record ({why})",
                file.display(),
                i + 1
            )
        })?;
        by_step.insert(r.step, r);
    }
    if by_step.is_empty() {
        return Err(format!("{}: no metrics (empty file)", file.display()));
    }
    Ok(by_step.into_values().collect())
}

/// Each record's x coordinate. Tokens come from the record's `tokens`, or else its step times
/// the tokens per step (batch_size × seq_len × grad_accum) of the `config` in `dir/state.json`.
fn x_coords(records: &[Record], axis: XAxis, dir: &Path, file: &Path) -> Result<Vec<f64>, String> {
    let per_step = if axis == XAxis::Tokens && records.iter().any(|r| r.tokens.is_none()) {
        Some(tokens_per_step(dir).ok_or_else(|| {
            format!(
                "--x tokens: {} has records without `tokens`, and {} gives no batch_size, seq_len and grad_accum to count them",
                file.display(),
                dir.join("state.json").display()
            )
        })?)
    } else {
        None
    };
    Ok(records
        .iter()
        .map(|r| match axis {
            XAxis::Step => r.step as f64,
            XAxis::Seconds => r.elapsed_s,
            XAxis::Tokens => r
                .tokens
                .unwrap_or_else(|| r.step as f64 * per_step.unwrap_or(0.0)),
        })
        .collect())
}

/// batch_size × seq_len × grad_accum from `dir/state.json`'s `config`, if all are there.
fn tokens_per_step(dir: &Path) -> Option<f64> {
    let text = std::fs::read_to_string(dir.join("state.json")).ok()?;
    let state: serde_json::Value = serde_json::from_str(&text).ok()?;
    let field = |k: &str| state["config"][k].as_f64();
    Some(field("batch_size")? * field("seq_len")? * field("grad_accum")?)
}

/// The loss panel's lines: per run, training loss (smoothed over a faint raw line when
/// `smooth` > 0) and validation loss dashed with markers, in the run's colour.
fn loss_lines(runs: &[Run], smooth: f64) -> Vec<Line> {
    let mut lines = vec![];
    for (i, run) in runs.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        let raw: Vec<(f64, f64)> = run
            .xs
            .iter()
            .zip(&run.records)
            .map(|(&x, r)| (x, r.train_loss))
            .collect();
        if smooth > 0.0 {
            let mut ema = raw[0].1;
            let smoothed = raw
                .iter()
                .map(|&(x, y)| {
                    ema = smooth * ema + (1.0 - smooth) * y;
                    (x, ema)
                })
                .collect();
            lines.push(Line {
                points: raw,
                style: color.mix(0.25).stroke_width(1),
                val: false,
                legend: None,
            });
            lines.push(Line {
                points: smoothed,
                style: color.stroke_width(2),
                val: false,
                legend: Some(format!("{} train (EMA {smooth})", run.label)),
            });
        } else {
            lines.push(Line {
                points: raw,
                style: color.stroke_width(1),
                val: false,
                legend: Some(format!("{} train", run.label)),
            });
        }
        let val: Vec<(f64, f64)> = run
            .xs
            .iter()
            .zip(&run.records)
            .filter_map(|(&x, r)| Some((x, r.val_loss?)))
            .collect();
        if !val.is_empty() {
            lines.push(Line {
                points: val,
                style: color.stroke_width(2),
                val: true,
                legend: Some(format!("{} val", run.label)),
            });
        }
    }
    lines
}

/// A lower panel's lines: one per run, in the run's colour (the loss panel's legend names them).
fn panel_lines(runs: &[Run], panel: Panel) -> Vec<Line> {
    let value = |r: &Record| match panel {
        Panel::Lr => r.lr,
        Panel::GradNorm => r.grad_norm,
    };
    let width = if panel == Panel::Lr { 2 } else { 1 };
    runs.iter()
        .enumerate()
        .map(|(i, run)| Line {
            points: run
                .xs
                .iter()
                .zip(&run.records)
                .filter_map(|(&x, r)| Some((x, value(r)?)))
                .collect(),
            style: COLORS[i % COLORS.len()].stroke_width(width),
            val: false,
            legend: None,
        })
        .collect()
}

/// Draws the panels top to bottom on `root`: the first (the loss, with the title and legend)
/// three units high, each other one unit, all over the x range of every point (from 0).
fn draw<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    charts: &[Vec<Line>],
    y_descs: &[&str],
    x_desc: &str,
    log_y: bool,
) -> Result<(), String> {
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let xs = charts.iter().flatten().flat_map(|l| &l.points).map(|p| p.0);
    let x = padded(xs, false, 0.0);
    let x = x.start.min(0.0)..x.end;
    let unit = root.dim_in_pixel().1 as i32 / (charts.len() as i32 + 2);
    let breaks: Vec<i32> = (0..charts.len() as i32 - 1)
        .map(|k| (3 + k) * unit)
        .collect();
    let areas = root.split_by_breakpoints::<i32, i32, _, _>([], &breaks);
    for (k, (area, lines)) in areas.iter().zip(charts).enumerate() {
        let ys = lines.iter().flat_map(|l| &l.points).map(|p| p.1);
        let last = k + 1 == charts.len();
        let x_desc = if last { x_desc } else { "" };
        if k == 0 && log_y {
            let y = padded(ys.filter(|&y| y > 0.0), true, 0.05);
            draw_panel(
                area,
                lines,
                x.clone(),
                y.clone().log_scale().with_key_points(log_ticks(&y)),
                x_desc,
                y_descs[k],
                true,
            )?;
        } else {
            let y = padded(ys, false, 0.05);
            draw_panel(area, lines, x.clone(), y, x_desc, y_descs[k], k == 0)?;
        }
    }
    Ok(())
}

/// The range of the finite `values` widened by `pad` of its span on each side (a factor of
/// 1 + `pad` when `log`); an empty or single-valued range is widened to a usable one.
fn padded(values: impl Iterator<Item = f64>, log: bool, pad: f64) -> Range<f64> {
    let (lo, hi) = values
        .filter(|v| v.is_finite())
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
            (lo.min(v), hi.max(v))
        });
    match (lo.is_finite(), log) {
        (false, true) => 0.1..1.0,
        (false, false) => 0.0..1.0,
        (true, true) if hi > lo => lo / (1.0 + pad)..hi * (1.0 + pad),
        (true, true) => lo / 2.0..hi * 2.0,
        (true, false) if hi > lo => lo - pad * (hi - lo)..hi + pad * (hi - lo),
        (true, false) => lo - 1.0..hi + 1.0,
    }
}

/// One panel: axes, grid, `lines` over `x` and `y`; the loss panel (`main`) also gets the
/// title and the legend.
fn draw_panel<DB, Y>(
    area: &DrawingArea<DB, Shift>,
    lines: &[Line],
    x: Range<f64>,
    y: Y,
    x_desc: &str,
    y_desc: &str,
    main: bool,
) -> Result<(), String>
where
    DB: DrawingBackend,
    Y: AsRangedCoord<Value = f64>,
    Y::CoordDescType: ValueFormatter<f64>,
{
    let err = |e: DrawingAreaErrorKind<DB::ErrorType>| e.to_string();
    let mut builder = ChartBuilder::on(area);
    builder
        .margin(10)
        .margin_right(24)
        .x_label_area_size(if x_desc.is_empty() { 28 } else { 48 })
        .y_label_area_size(76);
    if main {
        builder.caption("training and validation loss", ("sans-serif", 22));
    }
    let mut chart = builder.build_cartesian_2d(x, y).map_err(err)?;
    chart
        .configure_mesh()
        .x_desc(x_desc)
        .y_desc(y_desc)
        .x_labels((area.dim_in_pixel().0 as usize / 100).clamp(3, 10))
        .y_labels((area.dim_in_pixel().1 as usize / 40).clamp(3, 10))
        .x_label_formatter(&tick)
        .y_label_formatter(&tick)
        .label_style(("sans-serif", 14))
        .axis_desc_style(("sans-serif", 16))
        .light_line_style(RGBColor(244, 244, 244))
        .draw()
        .map_err(err)?;
    for line in lines {
        let style = line.style;
        let points = line.points.iter().copied();
        let series = if line.val {
            let marks = line
                .points
                .iter()
                .map(|&p| Circle::new(p, 4, style.filled()));
            chart.draw_series(marks).map_err(err)?;
            chart.draw_series(DashedLineSeries::new(points, 8, 5, style))
        } else {
            chart.draw_series(LineSeries::new(points, style))
        }
        .map_err(err)?;
        match (&line.legend, line.val) {
            (Some(name), true) => {
                series.label(name).legend(move |(x, y)| {
                    EmptyElement::at((x, y))
                        + PathElement::new(vec![(0, 0), (7, 0)], style)
                        + Circle::new((12, 0), 4, style.filled())
                        + PathElement::new(vec![(17, 0), (24, 0)], style)
                });
            }
            (Some(name), false) => {
                series
                    .label(name)
                    .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 24, y)], style));
            }
            (None, _) => {}
        }
    }
    if main {
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .label_font(("sans-serif", 14))
            .background_style(WHITE.mix(0.85))
            .border_style(RGBColor(160, 160, 160))
            .draw()
            .map_err(err)?;
    }
    Ok(())
}

/// Round values for the ticks of a log axis over `r`: 1, 2 and 5 times powers of ten when it
/// spans more than a decade, else about eight evenly spaced ones (plotters' own log ticks are the
/// powers of ten only, none at all within one decade).
fn log_ticks(r: &Range<f64>) -> Vec<f64> {
    let (lo, hi) = (r.start, r.end);
    if hi / lo > 10.0 {
        let decades = lo.log10().floor() as i32..=hi.log10().ceil() as i32;
        return decades
            .flat_map(|e| [1.0, 2.0, 5.0].map(|m| m * 10f64.powi(e)))
            .filter(|v| r.contains(v))
            .collect();
    }
    let raw = (hi - lo) / 8.0;
    let p = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0]
        .map(|m| m * p)
        .into_iter()
        .find(|&s| s >= raw)
        .unwrap_or(p);
    let first = (lo / step).ceil() as i64;
    let last = (hi / step).floor() as i64;
    (first..=last).map(|i| i as f64 * step).collect()
}

/// An axis label: in k, M, G from ten thousand, a million, a billion; scientific notation
/// below 0.01; at most three decimals, trailing zeros dropped.
fn tick(v: &f64) -> String {
    let a = v.abs();
    if a != 0.0 && a < 0.01 {
        return format!("{v:.1e}");
    }
    let (scaled, suffix) = match a {
        a if a >= 1e9 => (v / 1e9, "G"),
        a if a >= 1e6 => (v / 1e6, "M"),
        a if a >= 1e4 => (v / 1e3, "k"),
        _ => (*v, ""),
    };
    let s = format!("{scaled:.3}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    format!("{s}{suffix}")
}
