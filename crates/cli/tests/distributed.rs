//! Data-parallel CPU ranks over MPI (built with the `mpi` feature; `.ci/run` installs Open
//! MPI): N ranks against one rank with N× gradient accumulation, exact resume at 2 ranks,
//! `--nproc-per-node`, rank 0 alone writing, a killed rank ending the run, and stopping with a
//! checkpoint: Ctrl-C to a plain mpirun, a killed `--nproc-per-node` launcher.

#![cfg(feature = "mpi")]

mod common;

use common::{s, tmp, train_args, BIN};
use ferrogpt_train::mc_eval::McExample;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

/// `mpirun -np n ferrogpt args...` (Open MPI, allowed to run as root in CI containers).
fn mpirun(n: usize) -> Command {
    let mut c = Command::new("mpirun");
    c.args([
        "-np",
        &n.to_string(),
        "--oversubscribe",
        "--bind-to",
        "none",
        BIN,
    ])
    .env("OMPI_ALLOW_RUN_AS_ROOT", "1")
    .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1");
    c
}

fn check(o: Output, what: &str) -> Output {
    assert!(
        o.status.success(),
        "{what} failed: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    o
}

fn corpus(dir: &Path) -> PathBuf {
    let p = dir.join("text.txt");
    let text: String = (0..400)
        .map(|i| {
            format!(
                "line {i}: the quick brown fox jumps over the lazy dog {}\n",
                i * 7 % 13
            )
        })
        .collect();
    std::fs::write(&p, text).unwrap();
    p
}

fn flags<'a>(data: &'a Path, out: &'a Path, extra: &[&'a str]) -> Vec<&'a str> {
    let mut v = train_args(data, out, "8");
    v.extend_from_slice(&[
        "--n-layer",
        "2",
        "--n-head",
        "2",
        "--n-embd",
        "32",
        "--block-size",
        "32",
        "--batch-size",
        "4",
        "--eval-interval",
        "4",
        "--eval-batches",
        "4",
        "--sample-tokens",
        "0",
        "--threads",
        "1",
        "--dropout",
        "0.1",
        "--lr",
        "3e-3",
        "--warmup",
        "2",
    ]);
    v.extend_from_slice(extra);
    v
}

/// (train_loss, val_loss) of each step of a run's metrics.jsonl.
fn losses(run: &Path) -> Vec<(f64, Option<f64>)> {
    metric(run, "train_loss")
        .into_iter()
        .zip(metric(run, "val_loss"))
        .map(|(t, v)| (t.unwrap(), v))
        .collect()
}

/// One field of each step of a run's metrics.jsonl.
fn metric(run: &Path, field: &str) -> Vec<Option<f64>> {
    std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()[field].as_f64())
        .collect()
}

fn assert_close(a: &[(f64, Option<f64>)], b: &[(f64, Option<f64>)], tol: f64) {
    assert_eq!(a.len(), b.len());
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        assert!(
            (x.0 - y.0).abs() <= tol * x.0.abs(),
            "step {}: {} vs {}",
            i + 1,
            x.0,
            y.0
        );
        match (x.1, y.1) {
            (Some(p), Some(q)) => assert!((p - q).abs() <= tol * p.abs(), "val {p} vs {q}"),
            (None, None) => {}
            _ => panic!("step {}: validation on one side only", i + 1),
        }
    }
}

#[test]
fn two_ranks_equal_one_rank_with_twice_the_accumulation() {
    let dir = tmp("equiv");
    let data = corpus(&dir);
    // A multiple-choice eval file too: its accuracy is split across the ranks and summed.
    let mc = dir.join("mc.bin");
    let examples: Vec<McExample> = (0..10u32)
        .map(|i| McExample {
            label: (i % 4) as usize,
            context: vec![i % 20, (i * 7) % 20, 3],
            completions: (0..4)
                .map(|c| vec![(i + c) % 20, (i * c + 1) % 20])
                .collect(),
        })
        .collect();
    ferrogpt_train::mc_eval::write(&mc, &examples).unwrap();
    for mode in [&["--eval-mc", s(&mc)][..], &["--sequential"][..]] {
        let (one, two) = (dir.join("one"), dir.join("two"));
        let _ = std::fs::remove_dir_all(&one);
        let _ = std::fs::remove_dir_all(&two);
        let mut single = flags(&data, &one, mode);
        single.extend(["--grad-accum", "2"]);
        check(
            Command::new(BIN).args(&single).output().unwrap(),
            "one rank",
        );
        let o = check(
            mpirun(2).args(flags(&data, &two, mode)).output().unwrap(),
            "two ranks",
        );
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains("2 ranks"), "{err}");
        // The fp32 sums differ only in order.
        assert_close(&losses(&one), &losses(&two), 1e-5);
        if mode[0] == "--eval-mc" {
            let acc = metric(&two, "mc_acc");
            assert!(acc[3].is_some_and(|a| (0.0..=1.0).contains(&a)), "{acc:?}");
            // The same examples scored, by weights equal up to the order of sums: at most one
            // near-tie of the 10 examples may fall the other way.
            for (a, b) in metric(&one, "mc_acc").iter().zip(&acc) {
                assert!(
                    (a.unwrap_or(-1.0) - b.unwrap_or(-1.0)).abs() <= 0.1,
                    "{a:?} vs {b:?}"
                );
            }
        }
        // Rank 0 alone wrote: one line per step, one checkpoint.
        assert_eq!(losses(&two).len(), 8);
        let state: serde_json::Value =
            serde_json::from_slice(&std::fs::read(two.join("state.json")).unwrap()).unwrap();
        assert_eq!(state["tokens_seen"], 8 * 2 * 4 * 32);
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn zero_1_equals_ddp_and_its_checkpoint_does_not_depend_on_the_ranks() {
    let dir = tmp("zero");
    let data = corpus(&dir);
    for opt in ["adamw", "sgd"] {
        let (ddp, zero) = (dir.join("ddp"), dir.join("zero"));
        for d in [&ddp, &zero] {
            let _ = std::fs::remove_dir_all(d);
        }
        // Three ranks: the parameters do not split evenly, the last block is padded.
        check(
            mpirun(3)
                .args(flags(&data, &ddp, &["--optimizer", opt]))
                .output()
                .unwrap(),
            "ddp",
        );
        let o = mpirun(3)
            .args(flags(&data, &zero, &["--optimizer", opt, "--zero", "1"]))
            .output()
            .unwrap();
        let o = check(o, "zero");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains("ZeRO-1: optimizer state"), "{err}");
        // The same arithmetic on each parameter; the sums across ranks run in another order
        // (reduce-scatter instead of all-reduce, the norm from per-block sums).
        assert_close(&losses(&ddp), &losses(&zero), 1e-5);
        let read = |d: &Path, f: &str| std::fs::read(d.join(f)).unwrap();
        assert_eq!(
            read(&ddp, "optimizer.safetensors").len(),
            read(&zero, "optimizer.safetensors").len()
        );
        // The gathered optimizer state equals DDP's; the run resumes on one rank.
        let state = |d: &Path| -> Vec<f32> {
            let b = read(d, "optimizer.safetensors");
            let n = u64::from_le_bytes(b[..8].try_into().unwrap()) as usize;
            b[8 + n..]
                .chunks(4)
                .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
                .collect()
        };
        let (a, b) = (state(&ddp), state(&zero));
        assert_eq!(a.len(), b.len());
        let scale = a.iter().fold(0f32, |m, x| m.max(x.abs()));
        for (i, (x, y)) in a.iter().zip(&b).enumerate() {
            assert!(
                (x - y).abs() <= 1e-4 * scale,
                "{opt}: moment {i}: {x} vs {y}"
            );
        }
        let resume = [
            "train",
            "--resume",
            s(&zero),
            "--steps",
            "9",
            "--threads",
            "1",
        ];
        check(
            Command::new(BIN).args(resume).output().unwrap(),
            "resume on one rank",
        );
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn two_ranks_on_shards_equal_one_rank_with_twice_the_accumulation() {
    let dir = tmp("shards");
    let data = corpus(&dir);
    let out = dir.join("ds");
    check(
        Command::new(BIN)
            .args([
                "tokenize",
                "--tokenizer",
                "gpt2",
                s(&data),
                "--out",
                s(&out),
            ])
            .args(["--shard-tokens", "1500"])
            .output()
            .unwrap(),
        "tokenize",
    );
    let pattern = format!("{}/ds_train_*.bin", dir.display());
    let val = dir.join("ds_val_000000.bin");
    let run = |out: &Path, extra: &[&str]| -> Vec<String> {
        let mut v: Vec<String> = [
            "train",
            "--data",
            &pattern,
            "--val-data",
            s(&val),
            "--tokenizer",
            "gpt2",
            "--out",
            s(out),
            "--steps",
            "6",
            "--n-layer",
            "1",
            "--n-head",
            "2",
            "--n-embd",
            "16",
            "--block-size",
            "16",
            "--batch-size",
            "2",
            "--eval-interval",
            "3",
            "--eval-batches",
            "2",
            "--sample-tokens",
            "0",
            "--threads",
            "1",
            "--dropout",
            "0.1",
        ]
        .iter()
        .map(|x| x.to_string())
        .collect();
        v.extend(extra.iter().map(|x| x.to_string()));
        v
    };
    let (one, two) = (dir.join("one"), dir.join("two"));
    check(
        Command::new(BIN)
            .args(run(&one, &["--grad-accum", "2"]))
            .output()
            .unwrap(),
        "one",
    );
    check(mpirun(2).args(run(&two, &[])).output().unwrap(), "two");
    assert_close(&losses(&one), &losses(&two), 1e-5);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn two_ranks_resume_exactly_and_nproc_per_node_starts_them() {
    let dir = tmp("resume");
    let data = corpus(&dir);
    let (whole, split) = (dir.join("whole"), dir.join("split"));
    // A constant schedule: the first half's --steps 4 must not change its learning rates.
    let constant = ["--lr-schedule", "constant"];
    check(
        mpirun(2)
            .args(flags(&data, &whole, &constant))
            .output()
            .unwrap(),
        "whole",
    );
    // The same run through --nproc-per-node, stopped at step 4 and resumed.
    let mut first = flags(
        &data,
        &split,
        &["--nproc-per-node", "2", "--lr-schedule", "constant"],
    );
    first[6] = "4"; // --steps 4
    check(
        Command::new(BIN).args(&first).output().unwrap(),
        "first half",
    );
    let resume = [
        "train",
        "--resume",
        s(&split),
        "--steps",
        "8",
        "--nproc-per-node",
        "2",
    ];
    check(Command::new(BIN).args(resume).output().unwrap(), "resume");
    assert_eq!(
        losses(&whole),
        losses(&split),
        "a resumed 2-rank run must continue bit for bit"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A run of 100,000 steps (ended by the test) in a fresh folder `name`: (folder, run
/// directory, train arguments with `extra`).
fn endless(name: &str, extra: &[&str]) -> (common::Scratch, PathBuf, Vec<String>) {
    let dir = tmp(name);
    let data = corpus(&dir);
    let out = dir.join("run");
    let mut args: Vec<String> = flags(&data, &out, extra)
        .iter()
        .map(|a| a.to_string())
        .collect();
    args[6] = "100000".into(); // --steps
    (dir, out, args)
}

/// Waits (at most 60 s) for `path` to exist.
fn wait_for(path: &Path) {
    let start = Instant::now();
    while !path.is_file() && start.elapsed() < Duration::from_secs(60) {
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Once `ready` exists (at most 60 s), the pids of the two ranks under the `mpirun` `job`.
fn ranks_of(job: &std::process::Child, ready: &Path) -> Vec<String> {
    let start = Instant::now();
    let ranks = || -> Vec<String> {
        let ps = Command::new("pgrep")
            .args(["-P", &job.id().to_string()])
            .output()
            .unwrap();
        String::from_utf8_lossy(&ps.stdout)
            .split_whitespace()
            .map(String::from)
            .collect()
    };
    wait_for(ready);
    while ranks().len() < 2 && start.elapsed() < Duration::from_secs(60) {
        std::thread::sleep(Duration::from_millis(100));
    }
    let pids = ranks();
    assert_eq!(pids.len(), 2, "expected two ranks under mpirun: {pids:?}");
    pids
}

#[test]
fn a_killed_rank_ends_the_run() {
    let (dir, out, args) = endless("kill", &[]);
    let mut job = mpirun(2).args(&args).spawn().unwrap();
    // Once the first checkpoint is there, kill -9 one rank (a child of mpirun).
    let pids = ranks_of(&job, &out.join("state.json"));
    Command::new("kill")
        .args(["-9", &pids[1]])
        .status()
        .unwrap();
    let killed = Instant::now();
    loop {
        if let Some(status) = job.try_wait().unwrap() {
            assert!(!status.success());
            break;
        }
        assert!(
            killed.elapsed() < Duration::from_secs(60),
            "the other rank did not stop in 60 s"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // The last checkpoint is whole: resuming finishes a save the kill interrupted (nothing to
    // do otherwise), and the weights then sample.
    let resume = [
        "train",
        "--resume",
        s(&out),
        "--steps",
        "1",
        "--threads",
        "1",
    ];
    check(
        Command::new(BIN).args(resume).output().unwrap(),
        "resume after the kill",
    );
    assert!(Command::new(BIN)
        .args(["sample", "--checkpoint", s(&out), "--tokens", "5"])
        .status()
        .unwrap()
        .success());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_hung_rank_makes_the_others_stop_within_the_timeout() {
    let (dir, out, args) = endless("hang", &["--dist-timeout", "5"]);
    let job = mpirun(2)
        .args(&args)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let pids = ranks_of(&job, &out.join("metrics.jsonl"));
    // Rank 1 stops answering (it is alive, so MPI sees nothing wrong).
    Command::new("kill")
        .args(["-STOP", &pids[1]])
        .status()
        .unwrap();
    let stopped = Instant::now();
    let o = job.wait_with_output().unwrap();
    assert!(!o.status.success());
    assert!(
        stopped.elapsed() < Duration::from_secs(60),
        "the job took {:?} to end",
        stopped.elapsed()
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("no answer from the other ranks for 5 s"),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Runs `cmd` to its end, at most `limit`: its output, or a panic naming the hang.
fn finishes_within(mut cmd: Command, limit: Duration) -> Output {
    let mut child = cmd
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > limit {
            let _ = child.kill();
            panic!("still running after {limit:?}: ranks wait for each other");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.wait_with_output().unwrap()
}

#[test]
fn an_error_on_one_rank_ends_every_rank() {
    let dir = tmp("error");
    let data = corpus(&dir);
    // Rank 0 cannot create the run directory; rank 1 goes on to its first collective.
    let file = dir.join("afile");
    std::fs::write(&file, "x").unwrap();
    let out = file.join("run");
    let mut job = mpirun(2);
    job.args(flags(&data, &out, &[]));
    let o = finishes_within(job, Duration::from_secs(60));
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("ferrogpt: error:") && err.contains("afile"),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn resuming_on_another_number_of_ranks_keeps_the_step() {
    let dir = tmp("reworld");
    let data = corpus(&dir);
    let constant = ["--lr-schedule", "constant"];
    let (whole, split) = (dir.join("whole"), dir.join("split"));
    check(
        mpirun(2)
            .args(flags(&data, &whole, &constant))
            .output()
            .unwrap(),
        "whole",
    );
    let mut first = flags(&data, &split, &constant);
    first[6] = "4"; // --steps 4
    check(mpirun(2).args(&first).output().unwrap(), "first half");
    // Three ranks cannot split a step of two micro-batches: refused in one line.
    let resume = [
        "train",
        "--resume",
        s(&split),
        "--steps",
        "8",
        "--threads",
        "1",
    ];
    let o = mpirun(3).args(resume).output().unwrap();
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("do not divide"));
    // One rank takes both micro-batches of each step: the same losses.
    check(
        Command::new(BIN).args(resume).output().unwrap(),
        "resume on one rank",
    );
    assert_close(&losses(&whole), &losses(&split), 1e-5);
    let state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(split.join("state.json")).unwrap()).unwrap();
    assert_eq!(
        (
            state["world"].as_u64(),
            state["config"]["grad_accum"].as_u64()
        ),
        (Some(1), Some(2))
    );
    // An interrupted save, finished by rank 0 of a 2-rank resume while rank 1 waits.
    let pending = split.join(".pending");
    std::fs::create_dir(&pending).unwrap();
    for f in ["model.safetensors", "state.json", "checksums.sha256"] {
        std::fs::copy(split.join(f), pending.join(f)).unwrap();
    }
    let o = finishes_within(
        {
            let mut c = mpirun(2);
            c.args([
                "train",
                "--resume",
                s(&split),
                "--steps",
                "8",
                "--threads",
                "1",
            ]);
            c
        },
        Duration::from_secs(60),
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(!pending.exists());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn ctrl_c_under_nproc_per_node_stops_every_rank_with_a_checkpoint() {
    let (dir, out, args) = endless("ctrlc", &["--nproc-per-node", "2"]);
    // The launcher in a process group of its own, as a terminal's foreground job would be.
    let mut cmd = Command::new(BIN);
    cmd.args(&args)
        .stderr(std::process::Stdio::piped())
        .env("OMPI_ALLOW_RUN_AS_ROOT", "1")
        .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1");
    std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
    let job = cmd.spawn().unwrap();
    wait_for(&out.join("state.json"));
    // Ctrl-C: SIGINT to the launcher alone.
    Command::new("kill")
        .args(["-INT", &job.id().to_string()])
        .status()
        .unwrap();
    let o = job.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(err.contains("stopped at step"), "{err}");
    let state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("state.json")).unwrap()).unwrap();
    let metrics = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap();
    assert_eq!(
        state["step"].as_u64().unwrap() as usize,
        metrics.lines().count()
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A process's stderr, read to its end on a thread: every writer shares it (a launcher's
/// ranks inherit it), so its end means that all of them have exited.
struct Stderr {
    text: std::sync::Arc<std::sync::Mutex<String>>,
    closed: std::sync::mpsc::Receiver<()>,
}

impl Stderr {
    fn of(child: &mut std::process::Child) -> Stderr {
        use std::io::Read;
        let mut pipe = child.stderr.take().expect("stderr piped");
        let text = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let (tx, closed) = std::sync::mpsc::channel();
        let sink = text.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n @ 1..) = pipe.read(&mut buf) {
                sink.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
            let _ = tx.send(());
        });
        Stderr { text, closed }
    }

    fn text(&self) -> String {
        self.text.lock().unwrap().clone()
    }

    /// Waits (at most 60 s) for `what` to be printed.
    fn wait_for(&self, what: &str) {
        let start = Instant::now();
        while !self.text().contains(what) {
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "no {what:?} in 60 s: {}",
                self.text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits at most `limit` for every writer to exit: all it printed, or None.
    fn wait_closed(&self, limit: Duration) -> Option<String> {
        self.closed.recv_timeout(limit).ok().map(|()| self.text())
    }
}

/// Sends SIGKILL to the processes on drop: a failing test leaves nothing training.
struct KillOnDrop(Vec<String>);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        for pid in &self.0 {
            let _ = Command::new("kill")
                .args(["-9", pid])
                .stderr(std::process::Stdio::null())
                .status();
        }
    }
}

/// `ferrogpt train args` (with `--nproc-per-node`) in a process group of its own, as a
/// terminal's foreground job is, its stderr piped.
fn launcher(args: &[String]) -> (std::process::Child, Stderr) {
    let mut cmd = Command::new(BIN);
    cmd.args(args)
        .stderr(std::process::Stdio::piped())
        .env("OMPI_ALLOW_RUN_AS_ROOT", "1")
        .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1");
    std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
    let mut job = cmd.spawn().unwrap();
    let err = Stderr::of(&mut job);
    (job, err)
}

/// The pids of `parent`'s children (at most 60 s for `n` of them to show).
fn children(parent: u32, n: usize) -> Vec<String> {
    let start = Instant::now();
    loop {
        let ps = Command::new("pgrep")
            .args(["-P", &parent.to_string()])
            .output()
            .unwrap();
        let pids: Vec<String> = String::from_utf8_lossy(&ps.stdout)
            .split_whitespace()
            .map(String::from)
            .collect();
        if pids.len() >= n || start.elapsed() > Duration::from_secs(60) {
            return pids;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The step of the checkpoint in `out`, checked to be the last step that ran (the number of
/// lines in metrics.jsonl): a checkpoint saved when the run stopped, not an earlier one.
fn stopped_with_checkpoint(out: &Path, err: &str) -> u64 {
    let state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("state.json")).expect(err)).unwrap();
    let step = state["step"].as_u64().unwrap();
    let metrics = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap();
    assert_eq!(step as usize, metrics.lines().count(), "{err}");
    assert!(
        err.contains(&format!("stopped at step {step}; checkpoint saved")),
        "{err}"
    );
    step
}

/// A long run whose only checkpoint is the one saved when it stops.
fn endless_unsaved(name: &str, extra: &[&str]) -> (common::Scratch, PathBuf, Vec<String>) {
    let (dir, out, mut args) = endless(name, extra);
    let at = args.iter().position(|a| a == "--eval-interval").unwrap();
    args[at + 1] = "100000".into();
    (dir, out, args)
}

/// A long run of `nproc` ranks under `--nproc-per-node`, whose launcher is killed after its
/// first step: `who` (what the launcher started) must stop within 60 s with a checkpoint of
/// its last step.
fn killed_launcher_leaves_a_checkpoint(name: &str, nproc: &str, who: &str) {
    let (dir, out, args) = endless_unsaved(name, &["--nproc-per-node", nproc]);
    let (mut job, err) = launcher(&args);
    let _cleanup = KillOnDrop(children(job.id(), 1));
    wait_for(&out.join("metrics.jsonl"));
    job.kill().unwrap(); // SIGKILL: the launcher can do nothing about it
    job.wait().unwrap();
    let err = err
        .wait_closed(Duration::from_secs(60))
        .unwrap_or_else(|| panic!("{who} went on running 60 s after the launcher was killed"));
    stopped_with_checkpoint(&out, &err);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_killed_launcher_s_child_rank_stops_with_a_checkpoint() {
    // One CPU rank is a child of the launcher, started by the code that starts GPU ranks.
    killed_launcher_leaves_a_checkpoint("orphan", "1", "the rank");
}

#[test]
fn a_killed_launcher_s_mpirun_stops_every_rank_with_a_checkpoint() {
    killed_launcher_leaves_a_checkpoint("orphan-mpi", "2", "mpirun and its ranks");
}

#[test]
fn a_child_rank_stuck_after_its_launcher_died_ends_itself_in_one_line() {
    let dir = tmp("orphan-stuck");
    let data = corpus(&dir);
    let out = dir.join("run");
    // A step of several seconds (it would otherwise be saved and stopped at its end), and a
    // grace of twice --dist-timeout: 1 s.
    let mut args: Vec<String> = flags(&data, &out, &["--nproc-per-node", "1"])
        .iter()
        .map(|a| a.to_string())
        .collect();
    for (flag, value) in [
        ("--n-layer", "6"),
        ("--n-head", "6"),
        ("--n-embd", "384"),
        ("--block-size", "256"),
        ("--batch-size", "32"),
    ] {
        let at = args.iter().position(|a| a == flag).unwrap();
        args[at + 1] = value.into();
    }
    args.extend(["--dist-timeout".into(), "0.5".into()]);
    let (mut job, err) = launcher(&args);
    let _cleanup = KillOnDrop(children(job.id(), 1));
    // Its first line comes just before its first step.
    err.wait_for("training ");
    std::thread::sleep(Duration::from_millis(500));
    job.kill().unwrap();
    job.wait().unwrap();
    let killed = Instant::now();
    let err = err
        .wait_closed(Duration::from_secs(60))
        .expect("the rank went on running 60 s after its launcher was killed");
    assert!(
        err.contains("ferrogpt: error: rank 0: the launcher (pid")
            && err.contains("did not stop within 1 s; exiting"),
        "{err}"
    );
    assert!(!err.contains("stopped at step"), "{err}");
    assert!(
        killed.elapsed() < Duration::from_secs(30),
        "{:?}",
        killed.elapsed()
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn ctrl_c_to_a_plain_mpirun_stops_every_rank_with_a_checkpoint() {
    let (dir, out, args) = endless_unsaved("mpirun-int", &[]);
    let status = dir.join("status");
    std::fs::create_dir(&status).unwrap();
    // On SIGINT, Open MPI's mpirun sends the ranks SIGCONT, SIGTERM
    // odls_base_sigkill_timeout seconds later, and SIGKILL as long again after that. Each rank
    // runs under a shell that ignores SIGTERM and writes down how the rank ended: a rank that
    // did not stop by itself by then (killed, or waiting for another) leaves no 0 there.
    let script = format!(
        "trap '' TERM; \"$0\" \"$@\"; echo $? > {}/rank$OMPI_COMM_WORLD_RANK",
        s(&status)
    );
    let mut cmd = Command::new("mpirun");
    cmd.args(["-np", "2", "--oversubscribe", "--bind-to", "none"])
        .args(["--mca", "odls_base_sigkill_timeout", "10"])
        .args(["sh", "-c", &script, BIN])
        .args(&args)
        .stderr(std::process::Stdio::piped())
        .env("OMPI_ALLOW_RUN_AS_ROOT", "1")
        .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1");
    let mut job = cmd.spawn().unwrap();
    let err = Stderr::of(&mut job);
    let _cleanup = KillOnDrop(vec![job.id().to_string()]);
    wait_for(&out.join("metrics.jsonl"));
    // Ctrl-C at a terminal: SIGINT to mpirun.
    Command::new("kill")
        .args(["-INT", &job.id().to_string()])
        .status()
        .unwrap();
    let err = err
        .wait_closed(Duration::from_secs(90))
        .expect("mpirun did not end within 90 s of SIGINT");
    job.wait().unwrap();
    for rank in ["rank0", "rank1"] {
        let code = std::fs::read_to_string(status.join(rank)).unwrap_or_default();
        assert_eq!(code.trim(), "0", "{rank} did not stop by itself: {err}");
    }
    stopped_with_checkpoint(&out, &err);
    std::fs::remove_dir_all(&dir).unwrap();
}
