//! `ferrogpt plot` end to end on synthetic runs: an SVG names every run and series and draws a
//! line per run; a PNG has the requested size; `--x tokens` works from `tokens` or from
//! state.json; a resumed run's repeated steps count once; and every bad input is one line on
//! stderr with exit status 1.

mod common;
use common::tmp;
use std::path::{Path, PathBuf};
use std::process::Command;

struct Out {
    code: i32,
    stderr: String,
}

fn plot(args: &[&str]) -> Out {
    let o = Command::new(env!("CARGO_BIN_EXE_ferrogpt"))
        .arg("plot")
        .args(args)
        .output()
        .expect("run ferrogpt");
    Out {
        code: o.status.code().unwrap_or(-1),
        stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
    }
}

fn ok(args: &[&str]) {
    let o = plot(args);
    assert_eq!(o.code, 0, "{args:?} failed: {}", o.stderr);
}

/// Exit status 1 and one line on stderr: `ferrogpt: error: ...` containing `needle`.
fn fails_with(args: &[&str], needle: &str) {
    let o = plot(args);
    assert_eq!(o.code, 1, "{args:?}: expected exit 1; stderr: {}", o.stderr);
    let lines: Vec<&str> = o.stderr.lines().collect();
    assert_eq!(lines.len(), 1, "{args:?}: expected one line: {}", o.stderr);
    assert!(
        lines[0].starts_with("ferrogpt: error:") && lines[0].contains(needle),
        "{args:?}: '{}' lacks '{needle}'",
        lines[0]
    );
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// One metrics line as the trainer writes it; `tokens` when given, `val_loss` every 10 steps.
fn record(step: u64, loss: f64, tokens: Option<u64>) -> String {
    let mut r = format!(
        r#"{{"step":{step},"train_loss":{loss},"lr":{lr},"grad_norm":{gn},"tokens_per_sec":1000.0,"elapsed_s":{t}"#,
        lr = 1e-3 * (step as f64 / 50.0).min(1.0),
        gn = 1.0 + 1.0 / step as f64,
        t = 0.05 * step as f64,
    );
    if let Some(t) = tokens {
        r += &format!(r#","tokens":{t}"#);
    }
    if step.is_multiple_of(10) {
        r += &format!(r#","val_loss":{}"#, loss + 0.1);
    }
    r + "}\n"
}

/// A run directory with `metrics.jsonl` of `text`, and `state.json` when `state` is given.
fn run_dir(root: &Path, name: &str, text: &str, state: Option<&str>) -> PathBuf {
    let d = root.join(name);
    std::fs::create_dir_all(&d).unwrap();
    std::fs::write(d.join("metrics.jsonl"), text).unwrap();
    if let Some(st) = state {
        std::fs::write(d.join("state.json"), st).unwrap();
    }
    d
}

/// A falling loss curve.
fn loss(step: u64) -> f64 {
    4.0 * (-(step as f64) / 40.0).exp() + 1.0
}

/// `config` of a state.json: 4 × 8 × 2 = 64 tokens per step.
const STATE: &str = r#"{"step":60,"config":{"batch_size":4,"seq_len":8,"grad_accum":2}}"#;

/// Three runs of 60 steps: `fresh` (with `tokens`), `resumed` (steps 31..=40 written twice,
/// the second time 0.2 lower, as after a resume from step 30), `old` (no `tokens`), the last
/// two with [`STATE`].
fn three_runs(root: &Path) -> [PathBuf; 3] {
    let fresh: String = (1..=60).map(|i| record(i, loss(i), Some(i * 64))).collect();
    let mut resumed: String = (1..=40).map(|i| record(i, loss(i), None)).collect();
    resumed += &(31..=60)
        .map(|i| record(i, loss(i) - 0.2, None))
        .collect::<String>();
    let old: String = (1..=60).map(|i| record(i, loss(i) + 0.3, None)).collect();
    [
        run_dir(root, "fresh", &fresh, None),
        run_dir(root, "resumed", &resumed, Some(STATE)),
        run_dir(root, "old", &old, Some(STATE)),
    ]
}

#[test]
fn svg_names_every_run_and_series() {
    let root = tmp("svg");
    let [a, b, c] = three_runs(&root);
    let out = root.join("loss.svg");
    ok(&[
        s(&a),
        s(&b),
        s(&c),
        "--out",
        s(&out),
        "--panels",
        "lr,grad-norm",
        "--smooth",
        "0.9",
    ]);
    let svg = std::fs::read_to_string(&out).unwrap();
    assert!(svg.trim_start().starts_with("<svg"), "not an SVG");
    assert!(svg.trim_end().ends_with("</svg>"), "unterminated SVG");
    for label in ["fresh", "resumed", "old"] {
        assert!(svg.contains(&format!("{label} train (EMA 0.9)")), "{label}");
        assert!(svg.contains(&format!("{label} val")), "{label} val");
    }
    for text in [
        "training and validation loss",
        "learning rate",
        "gradient norm",
        "step",
    ] {
        assert!(svg.contains(text), "no '{text}'");
    }
    // Per run: raw and smoothed train loss, val loss, lr, grad norm; plus legend strokes.
    let lines = svg.matches("<polyline").count() + svg.matches("<path").count();
    assert!(lines >= 3 * 5, "{lines} lines for 3 runs × 5 series");
}

#[test]
fn labels_and_x_axes() {
    let root = tmp("axes");
    let [a, b, c] = three_runs(&root);
    for x in ["step", "tokens", "seconds"] {
        let out = root.join(format!("{x}.svg"));
        ok(&[
            s(&a),
            s(&b),
            &format!("{}/metrics.jsonl", s(&c)),
            "--out",
            s(&out),
            "--x",
            x,
            "--labels",
            "alpha,beta,gamma",
            "--log-y",
        ]);
        let svg = std::fs::read_to_string(&out).unwrap();
        for label in ["alpha train", "beta val", "gamma train"] {
            assert!(svg.contains(label), "--x {x}: no '{label}'");
        }
        assert!(svg.contains("\n3\n</text>"), "--log-y: no tick label 3");
        let desc = if x == "tokens" { "training tokens" } else { x };
        assert!(svg.contains(desc), "--x {x}: no axis name");
    }
}

/// The x pixel coordinates of the longest polyline (the training loss) in an SVG.
fn train_xs(svg: &Path) -> Vec<String> {
    let svg = std::fs::read_to_string(svg).unwrap();
    let xs = |pts: &str| -> Vec<String> {
        pts.split_whitespace()
            .map(|p| p.split(',').next().unwrap().to_string())
            .collect()
    };
    svg.split("<polyline")
        .skip(1)
        .filter_map(|p| p.split("points=\"").nth(1)?.split('"').next())
        .map(xs)
        .max_by_key(Vec::len)
        .expect("a polyline")
}

/// The resumed run draws as the run would had it never stopped: the last record of each
/// step; its tokens, counted from state.json, fall where the fresh run's recorded tokens do
/// (the same pixels as against step).
#[test]
fn resumed_run_keeps_the_last_record_of_each_step() {
    let root = tmp("resumed");
    let [a, b, _] = three_runs(&root);
    let once: String = (1..=60)
        .map(|i| record(i, if i <= 30 { loss(i) } else { loss(i) - 0.2 }, None))
        .collect();
    let once = run_dir(&root, "once", &once, Some(STATE));
    let draw = |run: &Path, x: &str| {
        let name = run.file_name().unwrap().to_str().unwrap();
        let out = root.join(format!("{name}-{x}.svg"));
        ok(&[s(run), "--out", s(&out), "--x", x, "--labels", "run"]);
        out
    };
    let svg = |p: PathBuf| std::fs::read_to_string(p).unwrap();
    assert_eq!(svg(draw(&b, "step")), svg(draw(&once, "step")));
    let by_step = train_xs(&draw(&a, "step"));
    assert_eq!(by_step.len(), 60, "one vertex per step");
    assert_eq!(
        train_xs(&draw(&b, "tokens")),
        by_step,
        "tokens from state.json"
    );
    assert_eq!(train_xs(&draw(&a, "tokens")), by_step, "recorded tokens");
}

#[test]
fn png_has_the_requested_size() {
    let root = tmp("png");
    let [a, b, _] = three_runs(&root);
    let out = root.join("loss.png");
    ok(&[
        s(&a),
        s(&b),
        "--out",
        s(&out),
        "--panels",
        "lr",
        "--width",
        "640",
        "--height",
        "480",
    ]);
    let png = std::fs::read(&out).unwrap();
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n", "PNG signature");
    assert_eq!(&png[12..16], b"IHDR", "IHDR first");
    let be = |i: usize| u32::from_be_bytes(png[i..i + 4].try_into().unwrap());
    assert_eq!((be(16), be(20)), (640, 480));
}

#[test]
fn bad_input_is_one_line() {
    let root = tmp("bad");
    let [a, _, _] = three_runs(&root);
    let svg = root.join("x.svg");
    let svg = s(&svg);
    let nothing = root.join("nothing");
    fails_with(&[s(&nothing), "--out", svg], "no such run directory");
    let bare = root.join("bare");
    std::fs::create_dir_all(&bare).unwrap();
    fails_with(&[s(&bare), "--out", svg], "no metrics.jsonl");
    let empty = run_dir(&root, "empty", "\n", None);
    fails_with(&[s(&empty), "--out", svg], "empty");
    let broken = run_dir(
        &root,
        "broken",
        &(record(1, 3.0, None) + "{\"step\":2,\n"),
        None,
    );
    fails_with(&[s(&broken), "--out", svg], "metrics.jsonl line 2");
    let no_loss = run_dir(&root, "no-loss", "{\"step\":1,\"elapsed_s\":0.1}\n", None);
    fails_with(&[s(&no_loss), "--out", svg], "line 1");
    let stateless = run_dir(&root, "stateless", &record(1, 3.0, None), None);
    fails_with(
        &[s(&stateless), "--out", svg, "--x", "tokens"],
        "--x tokens",
    );
    fails_with(&["--out", svg], "no runs");
    fails_with(
        &[s(&a), "--out", svg, "--panels", "lr,loss"],
        "unknown panel 'loss'",
    );
    fails_with(&[s(&a), "--out", svg, "--x", "epochs"], "--x");
    fails_with(&[s(&a), "--out", svg, "--labels", "a,b"], "--labels");
    fails_with(&[s(&a), "--out", svg, "--smooth", "1"], "--smooth");
    fails_with(&[s(&a), "--out", svg, "--width", "10"], "--width");
    fails_with(&[s(&a), "--out", svg, "--height", "99999"], "--height");
    fails_with(&[s(&a), "--out", s(&root.join("x.pdf"))], ".svg or .png");
    fails_with(
        &[s(&a), "--out", s(&root.join("no/such/dir/x.svg"))],
        "cannot draw",
    );
}
