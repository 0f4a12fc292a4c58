//! Grouped horizontal bar charts as SVG text, written by hand: one group of bars per category
//! (a rung, an engine), one bar per series (a machine), a legend, and a value axis that is
//! logarithmic when the values span more than `LOG_SPAN`× (the ladder spans four decades).
//! The result is a standalone SVG document that also works inline in HTML.

use std::fmt::Write as _;

/// A value axis goes logarithmic past this ratio of largest to smallest value.
const LOG_SPAN: f64 = 30.0;
/// Okabe and Ito's colour-blind-safe palette; series past eight reuse it.
const COLORS: [&str; 8] = [
    "#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#000000", "#F0E442",
];

const WIDTH: f64 = 820.0;
const LEFT: f64 = 190.0; // category labels
const RIGHT: f64 = 90.0; // value labels past the longest bar
const BAR: f64 = 14.0;
const GAP: f64 = 10.0; // between groups

/// One series: a name for the legend and one value per category (`None`: not measured).
pub struct Series {
    /// The legend's text: a machine.
    pub name: String,
    /// One per category, in the categories' order. A missing value, or one that is `None`, not
    /// finite or not positive, is drawn as "not run" instead of a bar.
    pub values: Vec<Option<f64>>,
}

/// Escape text for XML (and HTML).
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(c),
        }
    }
    out
}

/// A number with three significant digits, or fewer decimals for big ones: 0.123, 12.3, 1234.
pub fn num(v: f64) -> String {
    let a = v.abs();
    if a >= 100.0 || a == 0.0 {
        format!("{v:.0}")
    } else if a >= 10.0 {
        format!("{v:.1}")
    } else if a >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    }
}

/// The chart. `unit` labels the value axis ("GFLOPS"); `id` is unique within a page (the SVG's
/// `id`, which tests and links use).
pub fn bar_chart(
    id: &str,
    title: &str,
    unit: &str,
    categories: &[String],
    series: &[Series],
) -> String {
    let values: Vec<f64> = series
        .iter()
        .flat_map(|s| s.values.iter().flatten().copied())
        .filter(|v| v.is_finite() && *v > 0.0)
        .collect();
    let hi = values.iter().copied().fold(0.0, f64::max);
    let lo = values.iter().copied().fold(f64::INFINITY, f64::min);
    let log = !values.is_empty() && hi / lo > LOG_SPAN;
    // The axis: [a0, a1] in axis units (log10 of the value when logarithmic).
    let (a0, a1) = if values.is_empty() {
        (0.0, 1.0)
    } else if log {
        (
            lo.log10().floor(),
            hi.log10().ceil().max(lo.log10().floor() + 1.0),
        )
    } else {
        (0.0, nice_ceiling(hi))
    };
    let plot_w = WIDTH - LEFT - RIGHT;
    let x = |v: f64| {
        let t = if log { v.log10() } else { v };
        LEFT + ((t - a0) / (a1 - a0)).clamp(0.0, 1.0) * plot_w
    };
    let legend_rows = series.len().div_ceil(4).max(1) as f64;
    let top = 34.0 + 18.0 * legend_rows;
    let group_h = BAR * series.len().max(1) as f64 + GAP;
    let plot_h = group_h * categories.len().max(1) as f64;
    let height = top + plot_h + 40.0;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" id=\"{}\" class=\"chart\" width=\"{WIDTH}\" \
         height=\"{height}\" viewBox=\"0 0 {WIDTH} {height}\" font-family=\"sans-serif\" \
         font-size=\"12\" role=\"img\" aria-label=\"{}\">",
        esc(id),
        esc(title)
    );
    let _ = writeln!(s, "<title>{}</title>", esc(title));
    let _ = writeln!(
        s,
        "<rect width=\"{WIDTH}\" height=\"{height}\" fill=\"#ffffff\"/>"
    );
    let _ = writeln!(
        s,
        "<text x=\"{}\" y=\"20\" font-size=\"15\" font-weight=\"bold\">{}</text>",
        LEFT,
        esc(title)
    );
    for (i, se) in series.iter().enumerate() {
        let (col, row) = ((i % 4) as f64, (i / 4) as f64);
        let lx = LEFT + col * 150.0;
        let ly = 32.0 + row * 18.0;
        let _ = writeln!(
            s,
            "<rect x=\"{lx}\" y=\"{ly}\" width=\"12\" height=\"12\" fill=\"{}\"/>\
             <text x=\"{}\" y=\"{}\">{}</text>",
            COLORS[i % COLORS.len()],
            lx + 16.0,
            ly + 10.5,
            esc(&clip(&se.name, 22))
        );
    }
    // Grid lines and their labels.
    let ticks: Vec<f64> = if log {
        (a0 as i32..=a1 as i32).map(|e| 10f64.powi(e)).collect()
    } else {
        (0..=5).map(|i| a1 * i as f64 / 5.0).collect()
    };
    for t in ticks {
        let tx = x(t);
        let _ = writeln!(
            s,
            "<line x1=\"{tx:.1}\" y1=\"{top}\" x2=\"{tx:.1}\" y2=\"{}\" stroke=\"#dddddd\"/>\
             <text x=\"{tx:.1}\" y=\"{}\" text-anchor=\"middle\" fill=\"#555555\">{}</text>",
            top + plot_h,
            top + plot_h + 15.0,
            if t >= 1.0 { format!("{t:.0}") } else { num(t) }
        );
    }
    let _ = writeln!(
        s,
        "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">{}{}</text>",
        LEFT + plot_w / 2.0,
        top + plot_h + 32.0,
        esc(unit),
        if log { " (log scale)" } else { "" }
    );
    for (c, cat) in categories.iter().enumerate() {
        let gy = top + c as f64 * group_h + GAP / 2.0;
        let _ = writeln!(
            s,
            "<text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>",
            LEFT - 8.0,
            gy + BAR * series.len() as f64 / 2.0 + 4.0,
            esc(&clip(cat, 28))
        );
        for (i, se) in series.iter().enumerate() {
            let by = gy + i as f64 * BAR;
            match se.values.get(c).copied().flatten() {
                Some(v) if v.is_finite() && v > 0.0 => {
                    let w = (x(v) - LEFT).max(1.0);
                    let _ = writeln!(
                        s,
                        "<rect class=\"bar\" x=\"{LEFT}\" y=\"{by:.1}\" width=\"{w:.1}\" \
                         height=\"{}\" fill=\"{}\"><title>{}: {} {}</title></rect>\
                         <text x=\"{:.1}\" y=\"{:.1}\" font-size=\"10\">{}</text>",
                        BAR - 2.0,
                        COLORS[i % COLORS.len()],
                        esc(&se.name),
                        num(v),
                        esc(unit),
                        LEFT + w + 3.0,
                        by + BAR - 4.0,
                        num(v)
                    );
                }
                _ => {
                    let _ = writeln!(
                        s,
                        "<text x=\"{}\" y=\"{:.1}\" font-size=\"10\" fill=\"#888888\">not run</text>",
                        LEFT + 3.0,
                        by + BAR - 4.0
                    );
                }
            }
        }
    }
    let _ = writeln!(
        s,
        "<line x1=\"{LEFT}\" y1=\"{top}\" x2=\"{LEFT}\" y2=\"{}\" stroke=\"#333333\"/>",
        top + plot_h
    );
    s.push_str("</svg>\n");
    s
}

/// The smallest 1, 2 or 5 × 10^k at or above `v`.
fn nice_ceiling(v: f64) -> f64 {
    if v <= 0.0 || !v.is_finite() {
        return 1.0;
    }
    let p = 10f64.powf(v.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * p)
        .find(|&c| c >= v * 0.999_999)
        .unwrap_or(10.0 * p)
}

/// At most `n` characters, with an ellipsis when cut.
fn clip(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        let mut out: String = s.chars().take(n - 1).collect();
        out.push('…');
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chart(values: Vec<Option<f64>>) -> String {
        let cats: Vec<String> = (0..values.len()).map(|i| format!("c{i}")).collect();
        bar_chart(
            "t",
            "A <title>",
            "GFLOPS",
            &cats,
            &[Series {
                name: "m&1".into(),
                values,
            }],
        )
    }

    #[test]
    fn bars_scale_and_escape() {
        let s = chart(vec![Some(1.0), Some(1000.0), None]);
        assert!(s.contains("(log scale)"));
        assert_eq!(s.matches("class=\"bar\"").count(), 2);
        assert!(s.contains("not run"));
        assert!(s.contains("A &lt;title&gt;") && s.contains("m&amp;1"));
        assert!(!s.contains("NaN") && !s.contains("inf"));
        let s = chart(vec![Some(3.0), Some(7.0)]);
        assert!(!s.contains("log scale"));
        // The longer bar is 7/10 of the plot width on a 0..10 axis.
        let w = (WIDTH - LEFT - RIGHT) * 0.7;
        assert!(s.contains(&format!("width=\"{w:.1}\"")), "{s}");
        let s = chart(vec![None]);
        assert!(!s.contains("NaN") && s.contains("not run"));
    }

    #[test]
    fn nice_numbers() {
        assert_eq!(nice_ceiling(7.0), 10.0);
        assert_eq!(nice_ceiling(1.3), 2.0);
        assert_eq!(nice_ceiling(420.0), 500.0);
        assert_eq!(nice_ceiling(2000.0), 2000.0);
        assert_eq!(num(1234.4), "1234");
        assert_eq!(num(12.34), "12.3");
        assert_eq!(num(0.1234), "0.123");
    }
}
