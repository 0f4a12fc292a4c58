//! From saved results to a page: [`build`] merges the files into sections of tables and
//! charts; [`html`] and [`markdown`] write the same sections two ways.
//!
//! Merging: a machine is a `host` (one column per host, and per GPU for the GPU ladders). Where
//! several files hold the same measurement (same host, benchmark, rung and size), the newest
//! file's figure is shown. A rung is compared across machines at the largest size that every
//! machine measured it at; where there is no such size, each machine's largest is shown, and
//! the cell names its size.

use crate::schema::{Figures, MatmulFigures, MatmulRow, ResultFile, TrainFigures, TrainRow};
use crate::svg::{bar_chart, esc, num, Series};
use std::collections::BTreeMap;
use std::fmt::Write as _;

// ferrogpt-gemm's byte formatting (`ferrogpt info` prints the same figures), compiled here
// from its one file rather than through a dependency on the matmul crate.
#[path = "../../gemm/src/hw/bytes.rs"]
mod bytes;
use bytes::fmt_bytes;

/// A parsed file and where it came from (shown in the list of runs).
pub struct Loaded {
    /// Where the file was read from, as the user named it (the CLI passes the path).
    pub source: String,
    /// The parsed result.
    pub file: ResultFile,
}

/// The whole report, independent of its format. All text is plain (not HTML or Markdown):
/// [`html`] escapes it.
pub struct Page {
    /// The page's heading (and HTML title).
    pub title: String,
    /// Paragraphs before the sections: how many files and machines, which commits.
    pub intro: Vec<String>,
    /// In page order: runs, machines, then one per matmul ladder and per training shape.
    pub sections: Vec<Section>,
}

/// One section of the page: a heading and its blocks, in order.
pub struct Section {
    /// Unique within the page; anchors and chart file names derive from it.
    pub id: String,
    /// The heading, also the entry in the page's table of contents.
    pub title: String,
    /// The content, in order.
    pub blocks: Vec<Block>,
}

/// One piece of a section.
pub enum Block {
    /// A paragraph of plain text.
    Text(String),
    /// A table of text cells.
    Table(Table),
    /// A chart: its id (unique within the page), title and SVG document.
    Chart {
        /// Unique within the page: the SVG's `id` and the Markdown's `charts/<id>.svg`.
        id: String,
        /// The caption (the Markdown's image text).
        title: String,
        /// A standalone SVG document from [`crate::svg::bar_chart`].
        svg: String,
    },
}

/// A table of plain-text cells. In HTML, a cell after the first column that starts with a
/// digit is right-aligned as a number.
pub struct Table {
    /// Column headings.
    pub header: Vec<String>,
    /// The rows, each as many cells as `header`.
    pub rows: Vec<Vec<String>>,
}

/// Merge the files into a page. `generated` is the time the report is made (RFC 3339).
pub fn build(files: &[Loaded], generated: &str) -> Page {
    let mut order: Vec<&Loaded> = files.iter().collect();
    // Oldest first, so that newer figures overwrite older ones as they are merged.
    order.sort_by(|a, b| a.file.date.cmp(&b.file.date));
    let mut intro = vec![format!(
        "{} saved result(s) from {} machine(s), merged {generated} by ferrogpt {} ({}).",
        files.len(),
        hosts(&order).len(),
        crate::VERSION,
        crate::COMMIT
    )];
    let mut commits: Vec<&str> = order.iter().map(|l| l.file.commit.as_str()).collect();
    commits.sort();
    commits.dedup();
    if commits.len() > 1 {
        intro.push(format!(
            "The results come from {} commits ({}): the code differs between some of them.",
            commits.len(),
            commits.join(", ")
        ));
    }
    let mut sections = vec![runs_section(&order), machines_section(&order)];
    sections.extend(matmul_sections(&order));
    sections.extend(train_sections(&order));
    Page {
        title: "ferrogpt benchmark report".into(),
        intro,
        sections,
    }
}

/// Host names in order of first appearance.
fn hosts<'a>(order: &[&'a Loaded]) -> Vec<&'a str> {
    let mut v: Vec<&str> = vec![];
    for l in order {
        if !v.contains(&l.file.host.as_str()) {
            v.push(&l.file.host);
        }
    }
    v
}

fn runs_section(order: &[&Loaded]) -> Section {
    let rows = order
        .iter()
        .map(|l| {
            let f = &l.file;
            let what = match &f.figures {
                Figures::Matmul { matmul } => format!(
                    "matmul {} {} ({} rows)",
                    matmul.device,
                    matmul.dtype,
                    matmul.rows.len()
                ),
                Figures::Train { train } => format!(
                    "train {} B={} T={} {} {} ({} engines)",
                    train.preset,
                    train.batch_size,
                    train.seq_len,
                    train.device,
                    train.dtype,
                    train.rows.len()
                ),
            };
            vec![
                f.host.clone(),
                what,
                f.date.clone(),
                f.commit.clone(),
                f.ferrogpt_version.clone(),
                f.command.join(" "),
                l.source.clone(),
            ]
        })
        .collect();
    Section {
        id: "runs".into(),
        title: "Runs".into(),
        blocks: vec![Block::Table(Table {
            header: [
                "host",
                "benchmark",
                "date",
                "commit",
                "version",
                "command",
                "file",
            ]
            .map(String::from)
            .to_vec(),
            rows,
        })],
    }
}

fn machines_section(order: &[&Loaded]) -> Section {
    let mut blocks = vec![];
    let mut rows = vec![];
    for host in hosts(order) {
        let of_host: Vec<&&Loaded> = order.iter().filter(|l| l.file.host == host).collect();
        let newest = &of_host.last().expect("a host has a file").file.machine;
        let mut models: Vec<&str> = of_host
            .iter()
            .map(|l| l.file.machine.model.as_str())
            .collect();
        models.dedup();
        if models.len() > 1 {
            blocks.push(Block::Text(format!(
                "Host {host}: its files describe different CPUs ({}); the newest is shown. \
                 Give each machine its own --label.",
                models.join(", ")
            )));
        }
        let m = newest;
        let kib = |b: Option<u64>| b.map_or("?".into(), fmt_bytes);
        let peak = m.peak.as_ref().map_or("not measured".into(), |p| {
            format!(
                "{} / {} GFLOPS f32 / f64 on {} threads ({})",
                num(p.f32_all),
                num(p.f64_all),
                p.threads,
                p.isa
            )
        });
        let gpus = if m.cuda.devices.is_empty() {
            m.cuda.note.clone().unwrap_or_else(|| "none".into())
        } else {
            m.cuda
                .devices
                .iter()
                .map(|d| {
                    format!(
                        "{} ({}, sm_{}{})",
                        d.name,
                        fmt_bytes(d.total_mem_bytes),
                        d.compute_major,
                        d.compute_minor
                    )
                })
                .collect::<Vec<_>>()
                .join("; ")
        };
        rows.push(vec![
            host.to_string(),
            m.model.clone(),
            m.microarch.clone().unwrap_or_else(|| "-".into()),
            format!("{} {}", m.arch, m.os),
            m.logical_cores.to_string(),
            format!(
                "{} / {} / {}",
                kib(m.caches.l1d),
                kib(m.caches.l2),
                kib(m.caches.l3)
            ),
            m.features.join(" "),
            peak,
            gpus,
            m.cuda.driver_version.clone().unwrap_or_else(|| "-".into()),
        ]);
    }
    blocks.insert(
        0,
        Block::Table(Table {
            header: [
                "host",
                "CPU",
                "core",
                "arch",
                "logical cores",
                "L1d / L2 / L3",
                "ISA",
                "FMA peak, all cores",
                "GPUs",
                "CUDA driver",
            ]
            .map(String::from)
            .to_vec(),
            rows,
        }),
    );
    Section {
        id: "machines".into(),
        title: "Machines".into(),
        blocks,
    }
}

/// A column of a comparison: one machine (and, on a GPU ladder, one device of it).
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Column {
    host: String,
    device: String,
}

impl Column {
    fn label(&self, gpu: bool) -> String {
        if gpu {
            format!("{} ({})", self.host, self.device)
        } else {
            self.host.clone()
        }
    }
}

fn matmul_sections(order: &[&Loaded]) -> Vec<Section> {
    // (device, dtype) -> column -> (level, size) -> row; levels in order of first appearance.
    type Cells<'a> = BTreeMap<(String, usize), &'a MatmulRow>;
    // Each group: its (device, dtype), its columns and its levels.
    type Group = ((String, String), Vec<Column>, Vec<String>);
    let mut groups: Vec<Group> = vec![];
    let mut cells: BTreeMap<((String, String), Column), Cells> = BTreeMap::new();
    let mut peers: BTreeMap<String, bool> = BTreeMap::new();
    let mut peaks: BTreeMap<((String, String), Column), f64> = BTreeMap::new();
    for l in order {
        let Figures::Matmul { matmul } = &l.file.figures else {
            continue;
        };
        let MatmulFigures {
            device,
            device_name,
            dtype,
            peak_gflops,
            rows,
            ..
        } = matmul;
        let key = (device.clone(), dtype.clone());
        let col = Column {
            host: l.file.host.clone(),
            device: if device == "cpu" {
                String::new()
            } else {
                device_name.clone()
            },
        };
        let g = match groups.iter().position(|g| g.0 == key) {
            Some(i) => i,
            None => {
                groups.push((key.clone(), vec![], vec![]));
                groups.len() - 1
            }
        };
        if !groups[g].1.contains(&col) {
            groups[g].1.push(col.clone());
        }
        if let Some(p) = peak_gflops {
            peaks.insert((key.clone(), col.clone()), *p);
        }
        let c = cells.entry((key.clone(), col)).or_default();
        for r in rows {
            if !groups[g].2.contains(&r.level) {
                groups[g].2.push(r.level.clone());
            }
            peers.insert(r.level.clone(), r.peer);
            c.insert((r.level.clone(), r.m), r);
        }
    }
    let empty = Cells::new();
    groups
        .into_iter()
        .map(|(key, cols, levels)| {
            let gpu = key.0 != "cpu";
            let cell_map = |c: &Column| cells.get(&(key.clone(), c.clone())).unwrap_or(&empty);
            // The row each column shows for each level (see the module doc).
            let pick: Vec<Vec<Option<&MatmulRow>>> = levels
                .iter()
                .map(|level| {
                    let measured = |c: &Column| -> Vec<usize> {
                        cell_map(c)
                            .iter()
                            .filter(|((lv, _), r)| lv == level && r.gflops.is_some())
                            .map(|((_, s), _)| *s)
                            .collect()
                    };
                    let with: Vec<&Column> =
                        cols.iter().filter(|c| !measured(c).is_empty()).collect();
                    let common = with
                        .iter()
                        .map(|c| measured(c))
                        .reduce(|a, b| a.into_iter().filter(|s| b.contains(s)).collect())
                        .and_then(|s| s.into_iter().max());
                    cols.iter()
                        .map(|c| {
                            let size = common.or_else(|| measured(c).into_iter().max())?;
                            cell_map(c)
                                .get(&(level.clone(), size))
                                .copied()
                                .filter(|r| r.gflops.is_some())
                        })
                        .collect()
                })
                .collect();
            let what = if gpu {
                format!("{} GPU ladder", key.0)
            } else {
                format!("CPU ladder, {}", key.1)
            };
            let id = slug(&format!("matmul-{}-{}", key.0, key.1));
            let mut blocks = vec![Block::Text(format!(
                "GFLOPS of C = A·B (n×n), the median of timed runs, at the largest size every \
                 machine ran the rung at (the size is in each cell). Peers (another project's \
                 code, measured in the same run) are marked. {}",
                if gpu {
                    "% cuBLAS: of cuBLAS f32's throughput on the same GPU (bf16 rungs: of cuBLAS bf16's)."
                } else {
                    "%: of the FMA peak measured in the same run."
                }
            ))];
            let mut header = vec!["rung".to_string()];
            header.extend(cols.iter().map(|c| c.label(gpu)));
            let rows = levels
                .iter()
                .zip(&pick)
                .map(|(level, picks)| {
                    let mut row = vec![rung_label(level, peers[level])];
                    for p in picks {
                        row.push(match p {
                            None => "-".into(),
                            Some(r) => {
                                let mut s = format!("{} (n={}", num(r.gflops.unwrap_or(0.0)), r.m);
                                if let Some(p) = r.pct_of_peak {
                                    let _ = write!(s, ", {p:.0}%");
                                }
                                let pct = if r.level.contains("bf16") || r.level.contains("tensor") {
                                    r.pct_cublas_bf16
                                } else {
                                    r.pct_cublas_f32
                                };
                                if let (true, Some(p)) = (gpu, pct) {
                                    let _ = write!(s, ", {p:.0}% cuBLAS");
                                }
                                s + ")"
                            }
                        });
                    }
                    row
                })
                .collect();
            blocks.push(Block::Table(Table { header, rows }));
            let series = cols
                .iter()
                .enumerate()
                .map(|(i, c)| Series {
                    name: c.label(gpu),
                    values: pick.iter().map(|p| p[i].and_then(|r| r.gflops)).collect(),
                })
                .collect::<Vec<_>>();
            let title = format!("GFLOPS per rung per machine, {what}");
            blocks.push(Block::Chart {
                id: format!("{id}-chart"),
                svg: bar_chart(
                    &format!("{id}-chart"),
                    &title,
                    "GFLOPS",
                    &levels.iter().map(|l| rung_label(l, peers[l])).collect::<Vec<_>>(),
                    &series,
                ),
                title,
            });
            // Speedups on each machine: the fastest of ours over naive and over the best peer.
            let mut rows = vec![];
            for (i, c) in cols.iter().enumerate() {
                let ours = levels
                    .iter()
                    .zip(&pick)
                    .filter(|(l, _)| !peers[*l])
                    .filter_map(|(_, p)| p[i])
                    .max_by(|a, b| a.gflops.partial_cmp(&b.gflops).expect("finite"));
                let Some(best) = ours else { continue };
                let at = |level: &str| cell_map(c).get(&(level.to_string(), best.m)).copied();
                let peer = levels
                    .iter()
                    .filter(|l| peers[*l])
                    .filter_map(|l| at(l))
                    .filter(|r| r.gflops.is_some())
                    .max_by(|a, b| a.gflops.partial_cmp(&b.gflops).expect("finite"));
                // Over naive at the largest size both ran (naive skips the big ones).
                let gflops_at = |level: &str, size: usize| {
                    cell_map(c)
                        .get(&(level.to_string(), size))
                        .and_then(|r| r.gflops)
                };
                let naive = cell_map(c)
                    .keys()
                    .filter(|(l, n)| {
                        l == "naive"
                            && gflops_at("naive", *n).is_some()
                            && gflops_at(&best.level, *n).is_some()
                    })
                    .map(|(_, n)| *n)
                    .max()
                    .and_then(|n| {
                        let ratio = gflops_at(&best.level, n)? / gflops_at("naive", n)?;
                        Some(if n == best.m {
                            format!("{}×", num(ratio))
                        } else {
                            format!("{}× (n={n})", num(ratio))
                        })
                    });
                let g = best.gflops.unwrap_or(0.0);
                rows.push(vec![
                    c.label(gpu),
                    format!("{} (n={})", best.level, best.m),
                    num(g),
                    naive.unwrap_or_else(|| "-".into()),
                    peer.map_or("-".into(), |p| {
                        format!("{} {}", p.level, num(p.gflops.unwrap_or(0.0)))
                    }),
                    peer.map_or("-".into(), |p| {
                        format!("{}×", num(g / p.gflops.unwrap_or(f64::NAN)))
                    }),
                    peaks
                        .get(&(key.clone(), c.clone()))
                        .map_or("-".into(), |p| format!("{:.0}%", 100.0 * g / p)),
                ]);
            }
            blocks.push(Block::Text(
                "Speedups on each machine: our fastest rung over naive and over the best peer at \
                 the same size."
                    .into(),
            ));
            blocks.push(Block::Table(Table {
                header: [
                    "machine",
                    "fastest of ours",
                    "GFLOPS",
                    "× naive",
                    "best peer",
                    "ours ÷ peer",
                    "of FMA peak",
                ]
                .map(String::from)
                .to_vec(),
                rows,
            }));
            if let Some(t) = relative_table(
                &cols.iter().map(|c| c.label(gpu)).collect::<Vec<_>>(),
                &levels.iter().map(|l| rung_label(l, peers[l])).collect::<Vec<_>>(),
                &pick
                    .iter()
                    .map(|p| p.iter().map(|r| r.and_then(|r| r.gflops)).collect())
                    .collect::<Vec<_>>(),
            ) {
                blocks.push(Block::Text(format!(
                    "Each machine against {} (same rung, same size; above 1× is faster).",
                    cols[0].label(gpu)
                )));
                blocks.push(Block::Table(t));
            }
            Section {
                id,
                title: format!("Matmul: {what}"),
                blocks,
            }
        })
        .collect()
}

fn rung_label(level: &str, peer: bool) -> String {
    if peer {
        format!("{level} (peer)")
    } else {
        level.to_string()
    }
}

/// Rows × columns of values as ratios to the first column; `None` with fewer than two columns.
fn relative_table(cols: &[String], rows: &[String], values: &[Vec<Option<f64>>]) -> Option<Table> {
    if cols.len() < 2 {
        return None;
    }
    let mut header = vec![String::new()];
    header.extend(cols[1..].iter().map(|c| format!("{c} ÷ {}", cols[0])));
    let rows = rows
        .iter()
        .zip(values)
        .map(|(name, v)| {
            let mut row = vec![name.clone()];
            for x in &v[1..] {
                row.push(match (v[0], x) {
                    (Some(base), Some(x)) if base > 0.0 => format!("{}×", num(x / base)),
                    _ => "-".into(),
                });
            }
            row
        })
        .collect();
    Some(Table { header, rows })
}

fn train_sections(order: &[&Loaded]) -> Vec<Section> {
    // (preset, B, T) -> host -> engine -> row, with engines and hosts in order of appearance.
    type Key = (String, usize, usize);
    let mut groups: Vec<(Key, Vec<String>, Vec<String>)> = vec![];
    let mut cells: BTreeMap<(Key, String, String), (&TrainRow, &TrainFigures)> = BTreeMap::new();
    let mut peers: BTreeMap<String, bool> = BTreeMap::new();
    for l in order {
        let Figures::Train { train } = &l.file.figures else {
            continue;
        };
        let key = (train.preset.clone(), train.batch_size, train.seq_len);
        let g = match groups.iter().position(|g| g.0 == key) {
            Some(i) => i,
            None => {
                groups.push((key.clone(), vec![], vec![]));
                groups.len() - 1
            }
        };
        if !groups[g].1.contains(&l.file.host) {
            groups[g].1.push(l.file.host.clone());
        }
        for r in &train.rows {
            let engine = engine_label(r, train);
            if !groups[g].2.contains(&engine) {
                groups[g].2.push(engine.clone());
            }
            peers.insert(engine.clone(), r.peer);
            cells.insert((key.clone(), l.file.host.clone(), engine), (r, train));
        }
    }
    groups
        .into_iter()
        .map(|(key, hosts, engines)| {
            let (preset, b, t) = &key;
            let id = slug(&format!("train-{preset}-{b}x{t}"));
            let get = |h: &String, e: &String| cells.get(&(key.clone(), h.clone(), e.clone()));
            let mut blocks = vec![Block::Text(format!(
                "Training steps of {preset} at batch {b} × {t} tokens: tokens per second from \
                 the median step time (the step in ms; MFU where the device's peak is known). \
                 CPU engines are named by their matmul rung; GPU engines by device and precision."
            ))];
            let mut header = vec!["engine".to_string()];
            header.extend(hosts.iter().cloned());
            let rows = engines
                .iter()
                .map(|e| {
                    let mut row = vec![rung_label(e, peers[e])];
                    for h in &hosts {
                        row.push(match get(h, e) {
                            None => "-".into(),
                            Some((r, _)) => {
                                let mut s = format!(
                                    "{} ({} ms",
                                    num(r.tokens_per_sec),
                                    num(r.step_s_median * 1e3)
                                );
                                if let Some(m) = r.mfu {
                                    let _ = write!(s, ", MFU {:.1}%", m * 100.0);
                                }
                                s + ")"
                            }
                        });
                    }
                    row
                })
                .collect();
            blocks.push(Block::Table(Table { header, rows }));
            let values: Vec<Vec<Option<f64>>> = engines
                .iter()
                .map(|e| {
                    hosts
                        .iter()
                        .map(|h| get(h, e).map(|(r, _)| r.tokens_per_sec))
                        .collect()
                })
                .collect();
            let title = format!("tokens/s per engine per machine, {preset} B={b} T={t}");
            let labels: Vec<String> = engines.iter().map(|e| rung_label(e, peers[e])).collect();
            blocks.push(Block::Chart {
                id: format!("{id}-chart"),
                svg: bar_chart(
                    &format!("{id}-chart"),
                    &title,
                    "tokens/s",
                    &labels,
                    &hosts
                        .iter()
                        .enumerate()
                        .map(|(i, h)| Series {
                            name: h.clone(),
                            values: values.iter().map(|v| v[i]).collect(),
                        })
                        .collect::<Vec<_>>(),
                ),
                title,
            });
            let mut rows = vec![];
            for (i, h) in hosts.iter().enumerate() {
                let of = |peer: bool| {
                    engines
                        .iter()
                        .zip(&values)
                        .filter(|(e, v)| peers[*e] == peer && v[i].is_some())
                        .map(|(e, v)| (e, v[i].unwrap_or(0.0)))
                        .collect::<Vec<_>>()
                };
                let ours = of(false);
                let Some(best) = ours.iter().max_by(|a, b| a.1.total_cmp(&b.1)) else {
                    continue;
                };
                let slowest = ours.iter().map(|x| x.1).fold(f64::INFINITY, f64::min);
                let peer = of(true).into_iter().max_by(|a, b| a.1.total_cmp(&b.1));
                rows.push(vec![
                    h.clone(),
                    best.0.clone(),
                    num(best.1),
                    format!("{}×", num(best.1 / slowest)),
                    peer.map_or("-".into(), |p| format!("{} {}", p.0, num(p.1))),
                    peer.map_or("-".into(), |p| format!("{}×", num(best.1 / p.1))),
                ]);
            }
            blocks.push(Block::Text(
                "Speedups on each machine: our fastest engine over our slowest measured, and over \
                 the fastest peer."
                    .into(),
            ));
            blocks.push(Block::Table(Table {
                header: [
                    "machine",
                    "fastest of ours",
                    "tokens/s",
                    "× slowest",
                    "best peer",
                    "ours ÷ peer",
                ]
                .map(String::from)
                .to_vec(),
                rows,
            }));
            let origins: Vec<String> = hosts
                .iter()
                .flat_map(|h| engines.iter().map(move |e| (h, e)))
                .filter_map(|(h, e)| {
                    let src = get(h, e)?.0.peer_source.as_ref()?;
                    let mut s = format!("{e} on {h}: ");
                    if let Some(v) = &src.version {
                        let _ = write!(s, "{v}, ");
                    }
                    let _ = write!(
                        s,
                        "median of {} steps after {} warm-up",
                        src.steps, src.warmup
                    );
                    if let Some(d) = &src.device_name {
                        let _ = write!(s, " on {d}");
                    }
                    let _ = write!(s, ", read from {} ({})", src.file, src.tool);
                    Some(s)
                })
                .collect();
            if !origins.is_empty() {
                blocks.push(Block::Text(format!(
                    "Peers (another project's training step, run on the same machine as ours and \
                     saved with bench train --peer-json or --peer-llmc-log; their MFU counts our \
                     model's FLOPs per step): {}.",
                    origins.join("; ")
                )));
            }
            if let Some(t) = relative_table(&hosts, &labels, &values) {
                blocks.push(Block::Text(format!(
                    "Each machine against {} (same engine; above 1× is faster).",
                    hosts[0]
                )));
                blocks.push(Block::Table(t));
            }
            Section {
                id,
                title: format!("Training: {preset}, batch {b} × {t}"),
                blocks,
            }
        })
        .collect()
}

/// A CPU engine is its rung ("simd"); a GPU engine is its device and precision ("cuda bf16"),
/// so that the same engine lines up across machines with different GPUs.
fn engine_label(r: &TrainRow, t: &TrainFigures) -> String {
    if r.peer || t.device == "cpu" {
        r.engine.clone()
    } else {
        let kind = t.device.split(':').next().unwrap_or("gpu");
        format!("{kind} {}", t.dtype)
    }
}

const CSS: &str = "body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;\
padding:0 1em;color:#222}table{border-collapse:collapse;margin:0.8em 0;font-size:0.9em}\
th,td{border:1px solid #ccc;padding:0.25em 0.5em;text-align:left;vertical-align:top}\
th{background:#f3f3f3}td.num{text-align:right}svg.chart{display:block;margin:1em 0;\
max-width:100%;height:auto}nav li{display:inline;margin-right:1em}";

/// The page as one self-contained HTML document: inline CSS and SVG, no script, nothing
/// fetched.
pub fn html(page: &Page) -> String {
    let mut s = String::new();
    let _ = write!(
        s,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <link rel=\"icon\" href=\"data:,\">\n<title>{}</title>\n<style>{CSS}</style>\n\
         </head>\n<body>\n<h1>{}</h1>\n",
        esc(&page.title),
        esc(&page.title)
    );
    for p in &page.intro {
        let _ = writeln!(s, "<p>{}</p>", esc(p));
    }
    s.push_str("<nav><ul>");
    for sec in &page.sections {
        let _ = write!(
            s,
            "<li><a href=\"#{}\">{}</a></li>",
            esc(&sec.id),
            esc(&sec.title)
        );
    }
    s.push_str("</ul></nav>\n");
    for sec in &page.sections {
        let _ = writeln!(
            s,
            "<section id=\"{}\">\n<h2>{}</h2>",
            esc(&sec.id),
            esc(&sec.title)
        );
        for b in &sec.blocks {
            match b {
                Block::Text(t) => {
                    let _ = writeln!(s, "<p>{}</p>", esc(t));
                }
                Block::Table(t) => {
                    s.push_str("<table>\n<thead><tr>");
                    for h in &t.header {
                        let _ = write!(s, "<th>{}</th>", esc(h));
                    }
                    s.push_str("</tr></thead>\n<tbody>\n");
                    for row in &t.rows {
                        s.push_str("<tr>");
                        for (i, c) in row.iter().enumerate() {
                            let class = if i > 0 && starts_numeric(c) {
                                " class=\"num\""
                            } else {
                                ""
                            };
                            let _ = write!(s, "<td{class}>{}</td>", esc(c));
                        }
                        s.push_str("</tr>\n");
                    }
                    s.push_str("</tbody>\n</table>\n");
                }
                Block::Chart { svg, .. } => {
                    let _ = write!(s, "<figure>\n{svg}</figure>\n");
                }
            }
        }
        s.push_str("</section>\n");
    }
    s.push_str("</body>\n</html>\n");
    s
}

fn starts_numeric(c: &str) -> bool {
    c.chars().next().is_some_and(|ch| ch.is_ascii_digit())
}

/// The page as Markdown, and the charts it links (`charts/<id>.svg`, which the caller writes
/// beside it).
pub fn markdown(page: &Page) -> (String, Vec<(String, String)>) {
    let mut s = format!("# {}\n\n", md_esc(&page.title));
    let mut charts = vec![];
    for p in &page.intro {
        let _ = writeln!(s, "{}\n", md_esc(p));
    }
    for sec in &page.sections {
        let _ = writeln!(s, "## {}\n", md_esc(&sec.title));
        for b in &sec.blocks {
            match b {
                Block::Text(t) => {
                    let _ = writeln!(s, "{}\n", md_esc(t));
                }
                Block::Table(t) => {
                    let cell = |c: &str| md_esc(c);
                    let _ = writeln!(
                        s,
                        "| {} |",
                        t.header
                            .iter()
                            .map(|h| cell(h))
                            .collect::<Vec<_>>()
                            .join(" | ")
                    );
                    let _ = writeln!(s, "|{}", "---|".repeat(t.header.len()));
                    for row in &t.rows {
                        let _ = writeln!(
                            s,
                            "| {} |",
                            row.iter().map(|c| cell(c)).collect::<Vec<_>>().join(" | ")
                        );
                    }
                    s.push('\n');
                }
                Block::Chart { id, title, svg } => {
                    let file = format!("charts/{id}.svg");
                    let _ = writeln!(s, "![{}]({file})\n", title.replace(['[', ']'], ""));
                    charts.push((file, svg.clone()));
                }
            }
        }
    }
    (s, charts)
}

/// Plain text as Markdown that shows it as it is, on one line: a backslash before each character
/// that could start emphasis, code, a link, HTML, an entity or a table cell (`\ ` * _ [ ] < > &
/// | ~ #`), before a leading `-`, `+` or `=` (a list, a rule, a heading underline) and before
/// the `.` or `)` of a leading number that a space or the end follows (an ordered list: `1.5`
/// stays as it is); line breaks become spaces. CommonMark shows an escaped
/// punctuation character as itself, so the rendered text is the plain text.
fn md_esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 8);
    let digits = s.bytes().take_while(u8::is_ascii_digit).count();
    let list_number = digits > 0
        && s[digits..].starts_with(['.', ')'])
        && s[digits + 1..]
            .chars()
            .next()
            .is_none_or(char::is_whitespace);
    for (i, c) in s.chars().enumerate() {
        match c {
            '\\' | '`' | '*' | '_' | '[' | ']' | '<' | '>' | '&' | '|' | '~' | '#' => {
                out.push('\\');
                out.push(c);
            }
            '-' | '+' | '=' if i == 0 => {
                out.push('\\');
                out.push(c);
            }
            '.' | ')' if i == digits && list_number => {
                out.push('\\');
                out.push(c);
            }
            '\n' | '\r' => out.push(' '),
            _ => out.push(c),
        }
    }
    out
}

/// An id for anchors and file names: letters, digits and dashes.
fn slug(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A page whose every text comes from a host name with Markdown in it.
    fn page(host: &str) -> Page {
        Page {
            title: "ferrogpt benchmark report".into(),
            intro: vec![format!("Merged on {host}.")],
            sections: vec![Section {
                id: "runs".into(),
                title: format!("Runs of {host}"),
                blocks: vec![
                    Block::Text(format!("Each machine against {host} (above 1× is faster).")),
                    Block::Table(Table {
                        header: vec!["host".into(), "GFLOPS".into()],
                        rows: vec![vec![host.into(), "1.5".into()]],
                    }),
                ],
            }],
        }
    }

    #[test]
    fn markdown_escapes_text_as_html_does() {
        let host = "a_b*c* <img src=x> [x](y) &amp; `z` | ~w~\\";
        let (md, _) = markdown(&page(host));
        let escaped = r"a\_b\*c\* \<img src=x\> \[x\](y) \&amp; \`z\` \| \~w\~\\";
        assert!(md.contains(&format!("Merged on {escaped}.\n")), "{md}");
        assert!(md.contains(&format!("## Runs of {escaped}\n")), "{md}");
        assert!(
            md.contains(&format!("Each machine against {escaped} (above")),
            "{md}"
        );
        assert!(md.contains(&format!("| {escaped} | 1.5 |")), "{md}");
        assert!(!md.contains(" <img"), "{md}");
        // The HTML page escapes the same texts.
        assert!(!html(&page(host)).contains("<img"));
    }

    #[test]
    fn markdown_escapes_what_starts_a_block() {
        for (text, want) in [
            ("# not a heading", r"\# not a heading"),
            ("- not a list", r"\- not a list"),
            ("+ not a list", r"\+ not a list"),
            ("== not an underline", r"\== not an underline"),
            ("12. not a list", r"12\. not a list"),
            ("3) not a list", r"3\) not a list"),
            ("7.", r"7\."),
            ("1.5", "1.5"),
            ("> not a quote", r"\> not a quote"),
            ("two\nlines", "two lines"),
            // Ordinary text is left as it is.
            (
                "GFLOPS of C = A·B (n×n), 2.5× --label x-y 1.0",
                "GFLOPS of C = A·B (n×n), 2.5× --label x-y 1.0",
            ),
        ] {
            assert_eq!(md_esc(text), want);
        }
    }
}
