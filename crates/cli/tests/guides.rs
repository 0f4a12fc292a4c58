//! The guides work as written. Every line of every ```sh block of docs/training-guide.md,
//! docs/tuning.md and docs/architecture.md is run in order by `sh` in one empty folder per
//! guide, with this build's `ferrogpt` first on the PATH, and must succeed; then what each
//! guide says they leave behind is checked. Commands a guide does not run (a GPU, an MPI
//! build) sit in ```console blocks headed "# not run by the test"; their flags, and every
//! other `--flag` the guides mention, must exist in some subcommand's `--help`.
//!
//! docs/architecture.md is also held to the code: its dependency table and diagram
//! (docs/img/crates.svg) against the crates' Cargo.toml files, every type, function and path it
//! names (and those of docs/img/train-step.svg) against the sources, every link against the
//! files and headings it points to.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

mod common;
use common::{tmp, BIN};

/// The repository's root.
fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(root().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// The non-empty lines of the blocks fenced as ````lang`, in order.
fn block_lines(text: &str, lang: &str) -> Vec<String> {
    let open = format!("```{lang}");
    let mut out = Vec::new();
    let mut inside = false;
    for line in text.lines() {
        match line.trim_end() {
            l if l == open => inside = true,
            "```" => inside = false,
            l if inside && !l.trim().is_empty() => out.push(l.to_string()),
            _ => {}
        }
    }
    out
}

/// The lines of the ```sh blocks of `text`, in order.
fn sh_commands(text: &str) -> Vec<String> {
    block_lines(text, "sh")
}

/// Runs every sh command of `guide` (a path under docs/) in order in a fresh folder, each of
/// which must succeed; returns the folder and each command with its output.
fn run_guide(guide: &str, min_commands: usize) -> (common::Scratch, Vec<(String, Output)>) {
    let commands = sh_commands(&read(guide));
    assert!(
        commands.len() >= min_commands,
        "{guide}: {} commands found",
        commands.len()
    );
    assert!(
        commands.iter().all(|c| c.starts_with("ferrogpt ")),
        "{guide}: {commands:?}"
    );
    let name = Path::new(guide).file_stem().unwrap().to_str().unwrap();
    let dir = tmp(name);
    let bin_dir = Path::new(BIN).parent().unwrap();
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut outputs = Vec::new();
    for c in commands {
        let o = Command::new("sh")
            .args(["-c", &c])
            .current_dir(&dir)
            .env("PATH", &path)
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "{guide}: `{c}` failed:\n{}",
            String::from_utf8_lossy(&o.stderr)
        );
        outputs.push((c, o));
    }
    (dir, outputs)
}

/// The output of the first command that contains every needle.
fn output_of<'a>(outputs: &'a [(String, Output)], needles: &[&str]) -> &'a Output {
    &outputs
        .iter()
        .find(|(c, _)| needles.iter().all(|n| c.contains(n)))
        .unwrap_or_else(|| panic!("no command with {needles:?}"))
        .1
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn training_guide_commands_run_as_written() {
    let (dir, outputs) = run_guide("docs/training-guide.md", 10);
    let timing = output_of(&outputs, &["--stop \"JULIET\""]);
    assert!(stderr(timing).contains("timing:"), "no timing line");
    // What the guide says the commands leave behind.
    for f in [
        "data/tinyshakespeare.txt",
        "runs/guide/model.safetensors",
        "runs/guide/config.json",
        "runs/guide/tokenizer.json",
        "runs/guide/optimizer.safetensors",
        "runs/guide/state.json",
        "runs/guide/metrics.jsonl",
        "runs/guide/checksums.sha256",
        "runs/guide/best/model.safetensors",
        "loss.svg",
        "data/shakespeare-gpt2.bin",
        "runs/bpe/model.safetensors",
        "runs/guide-int8/model.safetensors",
        "runs/guide.gguf",
    ] {
        assert!(dir.join(f).is_file(), "{f} is missing");
    }
    // The resume reached the new total: 60 steps in the metrics.
    let metrics = std::fs::read_to_string(dir.join("runs/guide/metrics.jsonl")).unwrap();
    let last = metrics.lines().last().unwrap();
    assert!(last.contains("\"step\":60"), "{last}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The `train_loss` of every line of a run's metrics.jsonl.
fn train_losses(run: &Path) -> Vec<f64> {
    let text = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap();
    text.lines()
        .map(|l| {
            let v = l.split("\"train_loss\":").nth(1).expect(l);
            let end = v.find([',', '}']).unwrap();
            v[..end].parse().unwrap()
        })
        .collect()
}

#[test]
fn tuning_guide_commands_run_as_written() {
    let (dir, outputs) = run_guide("docs/tuning.md", 12);
    let info = output_of(&outputs, &["ferrogpt info"]);
    assert!(stdout(info).contains("peak f32"), "{}", stdout(info));
    // bench train prints the step and its parts, at every level asked for.
    let bench = output_of(&outputs, &["bench train", "simd,library"]);
    let table = stdout(bench);
    for needle in ["step (ms)", "fwd+bwd", "\nsimd ", "\nlibrary "] {
        assert!(table.contains(needle), "no {needle:?} in\n{table}");
    }
    for n in ["1", "2"] {
        let o = output_of(&outputs, &["bench train", &format!("--threads {n}")]);
        assert!(stdout(o).contains(&format!("{n} threads")), "{}", stdout(o));
    }
    let matmul = stdout(output_of(&outputs, &["bench matmul"]));
    assert!(
        matmul.contains("blocked") && matmul.contains("GFLOPS"),
        "{matmul}"
    );
    // The guide's claim: B=12 and B=6 with two accumulated micro-batches draw the same
    // windows, so without dropout their training losses agree to rounding.
    let (a, b) = (
        train_losses(&dir.join("runs/b12")),
        train_losses(&dir.join("runs/b6a2")),
    );
    assert_eq!(a.len(), 20);
    assert_eq!(a.len(), b.len());
    for (step, (x, y)) in a.iter().zip(&b).enumerate() {
        assert!(
            (x - y).abs() <= 1e-5 * x.abs(),
            "step {}: B=12 loss {x}, B=6 x 2 loss {y}",
            step + 1
        );
    }
    // Sampling: a timing line for each, naming the decoder it used.
    let timing: Vec<String> = outputs
        .iter()
        .filter(|(c, _)| c.starts_with("ferrogpt sample") && c.contains("--timing"))
        .map(|(_, o)| stderr(o))
        .collect();
    assert_eq!(timing.len(), 3);
    for needle in ["simd", "int8", "no kv cache"] {
        assert!(
            timing
                .iter()
                .any(|e| e.contains("timing:") && e.contains(needle)),
            "no sample timing line with {needle:?}: {timing:?}"
        );
    }
    let eval = stdout(output_of(&outputs, &["ferrogpt eval"]));
    assert!(eval.contains("perplexity"), "{eval}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn architecture_guide_commands_run_as_written() {
    let (dir, outputs) = run_guide("docs/architecture.md", 3);
    let ladder = stdout(output_of(&outputs, &["bench matmul"]));
    assert!(
        ladder.contains("naive") && ladder.contains("simd"),
        "{ladder}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

// --------------------------------------------------------------------------------------------
// Flags

/// Every subcommand's --help, concatenated.
fn all_help() -> String {
    let mut all = String::new();
    for sub in [
        "train",
        "sample",
        "eval",
        "quantize",
        "export",
        "tokenize",
        "info",
        "plot",
        "report",
        "bench matmul",
        "bench train",
        "bench gpu",
    ] {
        let mut args: Vec<&str> = sub.split(' ').collect();
        args.push("--help");
        let o = Command::new(BIN).args(&args).output().unwrap();
        assert!(o.status.success(), "{sub} --help failed");
        all += &stdout(&o);
    }
    all
}

/// The `--flag`s in `text`.
fn flags(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let b = text.as_bytes();
    let mut i = 0;
    while let Some(at) = text[i..].find("--") {
        let start = i + at;
        let before = start.checked_sub(1).map(|j| b[j]);
        let mut end = start + 2;
        while end < b.len()
            && (b[end].is_ascii_lowercase() || b[end].is_ascii_digit() || b[end] == b'-')
        {
            end += 1;
        }
        let word = &text[start..end];
        // A flag starts a word and has a name (not `---` in a heading's anchor or a rule).
        let starts_word = before.is_none_or(|c| !(c.is_ascii_alphanumeric() || c == b'-'));
        if starts_word && end > start + 2 && b[start + 2].is_ascii_lowercase() {
            out.insert(word.trim_end_matches('-').to_string());
        }
        i = end.max(start + 2);
    }
    out
}

#[test]
fn every_flag_the_guides_name_exists() {
    let help = all_help();
    // Cargo's own flags, used in the guides' build lines.
    let cargo = [
        "--release",
        "--features",
        "--open",
        "--no-deps",
        "--workspace",
    ];
    for guide in [
        "docs/training-guide.md",
        "docs/tuning.md",
        "docs/architecture.md",
    ] {
        let text = read(guide);
        for f in flags(&text) {
            if cargo.contains(&f.as_str()) {
                continue;
            }
            assert!(
                help.contains(&format!("{f} ")) || help.contains(&format!("{f}\n")),
                "{guide} mentions {f}, which no subcommand's --help has"
            );
        }
        // The blocks not run are marked so, and few.
        let fences = text.matches("```console").count();
        assert!(fences <= 5, "{guide}: {fences} blocks not run");
        let mut lines = text.lines();
        while let Some(l) = lines.next() {
            if l.trim_end() == "```console" {
                let first = lines.next().unwrap_or_default();
                assert!(
                    first.starts_with("# not run by the test"),
                    "{guide}: a console block starts with {first:?}"
                );
            }
        }
        // A cargo feature named in a console block exists in the binary's Cargo.toml.
        let cli_toml = read("crates/cli/Cargo.toml");
        for l in block_lines(&text, "console") {
            if let Some(rest) = l.split("--features ").nth(1) {
                let feature = rest.split_whitespace().next().unwrap();
                assert!(
                    cli_toml.contains(&format!("\n{feature} = [")),
                    "{guide}: no feature {feature} in crates/cli/Cargo.toml"
                );
            }
        }
    }
}

// --------------------------------------------------------------------------------------------
// The architecture page against the code

/// Each crate's directory name under crates/ and the ferrogpt crates its Cargo.toml depends on
/// (the [dependencies] tables, target-specific ones included; not dev-dependencies).
fn cargo_deps() -> BTreeMap<String, BTreeSet<String>> {
    let crates = root().join("crates");
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(&crates)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("Cargo.toml").is_file())
        .collect();
    dirs.sort();
    let mut package_dir = BTreeMap::new();
    for d in &dirs {
        let toml = std::fs::read_to_string(d.join("Cargo.toml")).unwrap();
        let name = toml
            .lines()
            .find_map(|l| l.strip_prefix("name = \""))
            .unwrap()
            .trim_end_matches('"')
            .to_string();
        package_dir.insert(name, d.file_name().unwrap().to_str().unwrap().to_string());
    }
    let mut deps = BTreeMap::new();
    for d in &dirs {
        let toml = std::fs::read_to_string(d.join("Cargo.toml")).unwrap();
        let mut table = String::new();
        let mut found = BTreeSet::new();
        for l in toml.lines() {
            let l = l.trim();
            if l.starts_with('[') {
                table = l.to_string();
                continue;
            }
            if !table.ends_with("dependencies]") || table.contains("dev-dependencies") {
                continue;
            }
            let key: String = l
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
                .collect();
            if let Some(dir) = package_dir.get(&key) {
                found.insert(dir.clone());
            }
        }
        deps.insert(d.file_name().unwrap().to_str().unwrap().to_string(), found);
    }
    deps
}

#[test]
fn the_architecture_page_and_its_diagram_show_the_cargo_dependencies() {
    let deps = cargo_deps();
    assert!(deps.len() >= 9, "{deps:?}");
    // The table: one row per crate, its last cell the crates it depends on.
    let page = read("docs/architecture.md");
    let mut rows = BTreeMap::new();
    for l in page.lines().filter(|l| l.starts_with("| `crates/")) {
        let dir = l["| `crates/".len()..]
            .split('`')
            .next()
            .unwrap()
            .to_string();
        let last = l.trim_end_matches('|').rsplit('|').next().unwrap().trim();
        let listed: BTreeSet<String> = match last {
            "nothing of ferrogpt" => BTreeSet::new(),
            "all eight" => deps.keys().filter(|k| **k != dir).cloned().collect(),
            _ => last.split(", ").map(str::to_string).collect(),
        };
        rows.insert(dir, listed);
    }
    assert_eq!(
        rows, deps,
        "docs/architecture.md's table against Cargo.toml"
    );
    // The diagram: each crate's box carries its dependencies (scripts/architecture_svgs.py).
    let svg = read("docs/img/crates.svg");
    let mut drawn = BTreeMap::new();
    for part in svg.split("<g data-crate=\"").skip(1) {
        let name = part.split('"').next().unwrap().to_string();
        let list = part.split("data-deps=\"").nth(1).unwrap().split('"').next();
        let set = list
            .unwrap()
            .split_whitespace()
            .map(str::to_string)
            .collect();
        drawn.insert(name, set);
    }
    assert_eq!(
        drawn, deps,
        "docs/img/crates.svg against Cargo.toml: run python3 scripts/architecture_svgs.py"
    );
    for img in ["docs/img/crates.svg", "docs/img/train-step.svg"] {
        let svg = read(img);
        assert!(
            svg.starts_with("<svg xmlns=\"http://www.w3.org/2000/svg\"")
                && svg.trim_end().ends_with("</svg>"),
            "{img} is not a standalone SVG"
        );
        for tag in ["g", "text", "marker", "title"] {
            let opened =
                svg.matches(&format!("<{tag}>")).count() + svg.matches(&format!("<{tag} ")).count();
            let closed = svg.matches(&format!("</{tag}>")).count();
            assert_eq!(
                opened, closed,
                "{img}: <{tag}> opened {opened}, closed {closed}"
            );
        }
        assert!(page.contains(&format!("({})", img.trim_start_matches("docs/"))));
    }
    // The committed drawings are what the script draws now (where Python is installed).
    match Command::new("python3")
        .args(["scripts/architecture_svgs.py", "--check"])
        .current_dir(root())
        .output()
    {
        Ok(o) => assert!(
            o.status.success(),
            "scripts/architecture_svgs.py --check: {}{}",
            stdout(&o),
            stderr(&o)
        ),
        Err(_) => println!("SKIPPED the drawings' freshness: no python3"),
    }
}

/// Every .rs and .cu file under crates/, concatenated, and their file names.
fn sources() -> (String, BTreeSet<String>) {
    fn walk(dir: &Path, text: &mut String, names: &mut BTreeSet<String>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(&p, text, names);
            } else if p
                .extension()
                .is_some_and(|x| x == "rs" || x == "cu" || x == "cuh" || x == "wgsl")
            {
                text.push_str(&std::fs::read_to_string(&p).unwrap());
                text.push('\n');
                names.insert(p.file_name().unwrap().to_str().unwrap().to_string());
            }
        }
    }
    let (mut text, mut names) = (String::new(), BTreeSet::new());
    walk(&root().join("crates"), &mut text, &mut names);
    (text, names)
}

fn is_ident(s: &str) -> bool {
    !s.is_empty()
        && !s.starts_with(|c: char| c.is_ascii_digit())
        && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Whether `word` occurs in `text` as a whole identifier.
fn has_word(text: &str, word: &str) -> bool {
    let ident = |c: char| c.is_ascii_alphanumeric() || c == '_';
    text.match_indices(word).any(|(i, _)| {
        let before = text[..i].chars().next_back();
        let after = text[i + word.len()..].chars().next();
        !before.is_some_and(ident) && !after.is_some_and(ident)
    })
}

/// Checks a name as the docs write it (`Tape::backward_scaled`, `learning_rate(cfg, step)`,
/// `ferrogpt_gemm::matmul`, `Engine`): each part is an identifier of the code, a leading type
/// is defined, and a function called or named through a path is a `fn` (or a module).
fn check_name(name: &str, code: &str, what: &str) {
    let called = name.contains('(');
    let path = name.split('(').next().unwrap();
    let parts: Vec<&str> = path.split("::").collect();
    if !parts.iter().all(|p| is_ident(p)) {
        return; // not a code path (a formula, a flag, prose)
    }
    for (i, p) in parts.iter().enumerate() {
        if let Some(krate) = p.strip_prefix("ferrogpt_") {
            assert!(
                root().join("crates").join(krate).is_dir(),
                "{what}: no crate for `{name}`"
            );
            continue;
        }
        assert!(has_word(code, p), "{what}: `{name}`: no `{p}` in the code");
        let first_type =
            i == 0 && p.starts_with(|c: char| c.is_ascii_uppercase()) && parts.len() > 1;
        if first_type
            || (parts.len() == 1
                && p.chars().next().unwrap().is_ascii_uppercase()
                && p.chars().any(|c| c.is_ascii_lowercase()))
        {
            let defined = ["struct", "enum", "trait", "type"].iter().any(|k| {
                has_word(code, &format!("{k} {p}")) || code.contains(&format!("{k} {p}<"))
            });
            assert!(defined, "{what}: `{name}`: `{p}` is not a type of the code");
        }
        let last = i == parts.len() - 1;
        if last && (called || parts.len() > 1) && p.starts_with(|c: char| c.is_ascii_lowercase()) {
            let defined = code.contains(&format!("fn {p}("))
                || code.contains(&format!("fn {p}<"))
                || code.contains(&format!("mod {p}"));
            assert!(defined, "{what}: `{name}`: no fn or module `{p}`");
        }
    }
}

/// The spans between backticks of `text`, outside fenced blocks.
fn code_spans(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut fenced = false;
    for line in text.lines() {
        if line.starts_with("```") {
            fenced = !fenced;
            continue;
        }
        if fenced {
            continue;
        }
        out.extend(line.split('`').skip(1).step_by(2).map(str::to_string));
    }
    out
}

#[test]
fn every_name_and_path_the_architecture_page_gives_exists() {
    let (code, files) = sources();
    let page = read("docs/architecture.md");
    for span in code_spans(&page) {
        let what = "docs/architecture.md";
        let head = span.split('(').next().unwrap();
        if ["crates/", "docs/", "scripts/", "bench/", "tests/"]
            .iter()
            .any(|p| span.starts_with(p))
        {
            let path = span.split('*').next().unwrap().trim_end_matches('/');
            assert!(root().join(path).exists(), "{what}: no `{span}`");
        } else if let Some(stem) = span
            .strip_suffix(".rs")
            .or_else(|| span.strip_suffix(".cu"))
        {
            if !stem.contains('*') {
                assert!(
                    files.contains(&span),
                    "{what}: no file `{span}` under crates/"
                );
            }
        } else if !head.is_empty() && !head.contains(' ') && !span.starts_with('-') {
            check_name(&span, &code, what);
        }
    }
    // The data-flow diagram's names: each `Type::item` and `module::item` in its text.
    let svg = read("docs/img/train-step.svg");
    let text = svg
        .replace("&amp;", "&")
        .replace("&lt;", "<")
        .replace("&gt;", ">");
    for chunk in text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':')) {
        let chunk = chunk.trim_matches(':');
        if chunk.contains("::") {
            check_name(chunk, &code, "docs/img/train-step.svg");
        }
    }
}

/// The GitHub anchor of a heading.
fn slug(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || *c == '-' || *c == '_' || *c == ' ')
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

#[test]
fn the_new_guides_links_resolve() {
    for guide in ["docs/architecture.md", "docs/tuning.md"] {
        let text = read(guide);
        for link in text.split("](").skip(1) {
            let target = link.split(')').next().unwrap();
            if target.starts_with("http") {
                continue;
            }
            let (file, anchor) = match target.split_once('#') {
                Some((f, a)) => (f, Some(a)),
                None => (target, None),
            };
            let path = root().join("docs").join(file);
            assert!(path.exists(), "{guide}: link to {target}: no such file");
            if let Some(a) = anchor {
                let linked = std::fs::read_to_string(&path).unwrap();
                let found = linked
                    .lines()
                    .filter(|l| l.starts_with('#'))
                    .any(|l| slug(l.trim_start_matches('#')) == a);
                assert!(
                    found,
                    "{guide}: link to {target}: no heading with that anchor"
                );
            }
        }
    }
    // The README lists both.
    let readme = read("README.md");
    for g in ["docs/architecture.md", "docs/tuning.md"] {
        assert!(
            readme.contains(&format!("]({g})")),
            "README does not link {g}"
        );
    }
}
