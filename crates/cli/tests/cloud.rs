//! `bench/cloud.sh`, without AWS: its dry run (every AWS command and cloud-init file it would
//! use), its refusals, and its real path against stand-ins for `aws`, `ssh` and `scp` placed
//! first on PATH: the machines are terminated when the wait for them fails, on Ctrl-C, and
//! after a fleet run that the stand-ins carry out on this machine.

mod common;

use common::{s, tmp, BIN};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../bench/cloud.sh");
const KINDS: [(&str, &str, &str); 6] = [
    ("graviton2", "c6g.2xlarge", "arm64"),
    ("graviton", "c7g.2xlarge", "arm64"),
    ("graviton4", "c8g.2xlarge", "arm64"),
    ("intel", "c7i.2xlarge", "amd64"),
    ("amd", "c7a.2xlarge", "amd64"),
    ("gpu", "g6.xlarge", "amd64"),
];
// AWS's documented example keys: they must not reach any file or output.
const KEY_ID: &str = "AKIAIOSFODNN7EXAMPLE";
const SECRET: &str = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";

fn cloud(stubs: Option<&Path>, args: &[&str], env: &[(&str, &str)]) -> Command {
    let mut c = Command::new("bash");
    c.arg(SCRIPT).args(args);
    c.env("AWS_ACCESS_KEY_ID", KEY_ID)
        .env("AWS_SECRET_ACCESS_KEY", SECRET)
        .env_remove("AWS_REGION")
        .env_remove("AWS_DEFAULT_REGION")
        .env("FERROGPT_BIN", BIN);
    if let Some(d) = stubs {
        c.env(
            "PATH",
            format!("{}:{}", s(d), std::env::var("PATH").unwrap()),
        );
        c.env("STUB_LOG", s(&d.join("aws.log")));
    }
    for (k, v) in env {
        c.env(k, v);
    }
    c
}

fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// Every file under `dir`, recursively.
fn files(dir: &Path) -> Vec<PathBuf> {
    let mut v = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            v.extend(files(&p));
        } else {
            v.push(p);
        }
    }
    v
}

fn no_credentials(what: &str, t: &str) {
    for bad in [
        KEY_ID,
        SECRET,
        "PRIVATE KEY",
        "aws_secret_access_key",
        "AKIA",
    ] {
        assert!(!t.contains(bad), "{what} holds {bad:?}");
    }
}

#[test]
fn plan_prints_every_command_and_writes_the_cloud_init_files() {
    let dir = tmp("cloud-plan");
    let out = dir.join("out");
    let kinds: Vec<&str> = KINDS.iter().map(|k| k.0).collect();
    let o = cloud(
        None,
        &[
            "--dry-run",
            "run",
            "-k",
            "bench-key",
            "-m",
            &kinds.join(","),
            "-r",
            "eu-west-1",
        ],
        &[],
    )
    .args(["-o", s(&out), "--run-id", "t42"])
    .output()
    .unwrap();
    let (stdout, stderr) = text(&o);
    assert_eq!(o.status.code(), Some(0), "{stderr}");
    let plan = read(&out.join("plan.sh"));
    // What was printed is what the plan holds (its comments aside).
    let cmds: Vec<&str> = plan.lines().filter(|l| l.starts_with("aws ")).collect();
    assert_eq!(stdout.lines().collect::<Vec<_>>(), cmds);
    assert!(
        cmds.iter().all(|l| l.ends_with("--region eu-west-1")),
        "{plan}"
    );

    // Images from the public SSM parameters, one per architecture and image.
    for p in [
        "/aws/service/canonical/ubuntu/server/24.04/stable/current/arm64/hvm/ebs-gp3/ami-id",
        "/aws/service/canonical/ubuntu/server/24.04/stable/current/amd64/hvm/ebs-gp3/ami-id",
        "/aws/service/deeplearning/ami/x86_64/base-oss-nvidia-driver-gpu-ubuntu-24.04/latest/ami-id",
    ] {
        let n = cmds.iter().filter(|l| l.starts_with("aws ssm get-parameter --name ") && l.contains(p)).count();
        assert_eq!(n, 1, "{p} looked up {n} times:\n{plan}");
    }
    let run: Vec<&str> = cmds
        .iter()
        .copied()
        .filter(|l| l.contains("ec2 run-instances"))
        .collect();
    assert_eq!(run.len(), KINDS.len());
    let hosts = read(&out.join("hosts"));
    let mut ids = Vec::new();
    for (i, (kind, ty, arch)) in KINDS.iter().enumerate() {
        let l = run
            .iter()
            .find(|l| l.contains(&format!("--instance-type {ty} ")))
            .unwrap_or_else(|| panic!("no {ty}:\n{plan}"));
        for want in [
            "--key-name bench-key ",
            "--instance-initiated-shutdown-behavior terminate",
            "--metadata-options HttpTokens=required",
            &format!("--user-data file://{}/cloud-init/{kind}.yaml", s(&out)),
            &format!("'ResourceType=instance,Tags=[{{Key=Name,Value=ferrogpt-bench-t42-{kind}}},{{Key=ferrogpt-bench,Value=t42}},{{Key=ferrogpt-bench-kind,Value={kind}}}]'"),
            "'ResourceType=volume,Tags=[",
        ] {
            assert!(l.contains(want), "{kind}: no {want} in {l}");
        }
        // The image is the one its architecture's parameter gave.
        let ami = l
            .split("--image-id ")
            .nth(1)
            .unwrap()
            .split(' ')
            .next()
            .unwrap();
        let param_line = cmds
            .iter()
            .position(|c| {
                c.contains("get-parameter")
                    && c.contains(if *kind == "gpu" { "deeplearning" } else { arch })
            })
            .unwrap();
        let nth_param = cmds[..param_line]
            .iter()
            .filter(|c| c.contains("get-parameter"))
            .count();
        assert_eq!(ami, format!("ami-0plan{nth_param:012}"), "{kind}: {l}");
        let id = format!("i-0plan{i:012}");
        ids.push(id);
        let ci = read(&out.join(format!("cloud-init/{kind}.yaml")));
        assert!(ci.starts_with("#cloud-config\n"), "{kind}: {ci}");
        for want in [
            "package_update: true",
            "  - libopenblas0",
            "  - [shutdown, -P, '+180']",
            "  - [touch, /var/lib/ferrogpt-cloud-ready]",
        ] {
            assert!(ci.contains(want), "{kind}: no {want} in\n{ci}");
        }
        assert_eq!(
            ci.contains("/usr/local/cuda/lib64"),
            *kind == "gpu",
            "{kind}:\n{ci}"
        );
        assert!(
            hosts
                .lines()
                .any(|h| h.starts_with(&format!("{kind} ubuntu@198.51.100."))),
            "{kind}: {hosts}"
        );
    }
    // Termination on exit comes after the last start, with every instance.
    let last_run = cmds
        .iter()
        .rposition(|l| l.contains("run-instances"))
        .unwrap();
    let term = cmds
        .iter()
        .position(|l| l.contains("ec2 terminate-instances"))
        .expect("terminate-instances");
    assert!(term > last_run);
    assert!(
        cmds[term].contains(&format!("--instance-ids {} ", ids.join(" "))),
        "{}",
        cmds[term]
    );
    assert!(cmds[..term]
        .iter()
        .any(|l| l.contains("describe-instances --filters Name=tag:ferrogpt-bench,Values=t42 ")));
    assert!(cmds[term..]
        .iter()
        .any(|l| l.starts_with("aws ec2 delete-security-group --group-id sg-0plan")));
    assert!(
        cmds.iter()
            .any(|l| l.contains("create-security-group")
                && l.contains("Key=ferrogpt-bench,Value=t42"))
    );
    assert!(cmds
        .iter()
        .any(|l| l.contains("authorize-security-group-ingress") && l.contains("--port 22")));
    assert!(plan.contains("bench/fleet.sh -t 1800 -o"), "{plan}");
    // The hosts file is what fleet.sh reads: "LABEL DEST" lines and comments.
    for l in hosts.lines().filter(|l| !l.starts_with('#')) {
        assert_eq!(l.split_whitespace().count(), 2, "{l}");
    }
    // The plan is a shell script that parses.
    assert!(Command::new("bash")
        .args(["-n", s(&out.join("plan.sh"))])
        .status()
        .unwrap()
        .success());
    no_credentials("stdout", &stdout);
    no_credentials("stderr", &stderr);
    for f in files(&out) {
        no_credentials(s(&f), &read(&f));
    }

    // Debian 12 for the CPU machines (its user is admin); the GPU keeps the DLAMI; a type override.
    let out2 = dir.join("debian");
    let o = cloud(
        None,
        &[
            "plan",
            "-k",
            "k",
            "--os",
            "debian",
            "-m",
            "graviton,intel,gpu",
            "--type",
            "gpu=p5.48xlarge",
        ],
        &[],
    )
    .args(["-o", s(&out2)])
    .output()
    .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o).1);
    let plan = read(&out2.join("plan.sh"));
    for want in [
        "--name /aws/service/debian/release/12/latest/arm64 ",
        "--name /aws/service/debian/release/12/latest/amd64 ",
        "base-oss-nvidia-driver-gpu-ubuntu-24.04",
        "--instance-type p5.48xlarge ",
        "--region us-east-1",
    ] {
        assert!(plan.contains(want), "no {want} in\n{plan}");
    }
    let hosts = read(&out2.join("hosts"));
    assert!(
        hosts.contains("graviton admin@")
            && hosts.contains("intel admin@")
            && hosts.contains("gpu ubuntu@"),
        "{hosts}"
    );

    // cleanup finds the tagged leftovers (all runs, or one with --run-id).
    let o = cloud(
        None,
        &["cleanup", "--dry-run", "-r", "us-west-2", "--run-id", "t42"],
        &[],
    )
    .args(["-o", s(&out2)])
    .output()
    .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o).1);
    let c = text(&o).0;
    assert!(
        c.contains("describe-instances --filters Name=tag:ferrogpt-bench,Values=t42 "),
        "{c}"
    );
    assert!(
        c.contains("terminate-instances --instance-ids i-0plan"),
        "{c}"
    );
    assert!(
        c.contains("describe-security-groups --filters Name=tag:ferrogpt-bench,Values=t42"),
        "{c}"
    );
    let o = cloud(None, &["cleanup", "--dry-run"], &[])
        .args(["-o", s(&out2)])
        .output()
        .unwrap();
    assert!(
        text(&o)
            .0
            .contains("--filters Name=tag-key,Values=ferrogpt-bench "),
        "{}",
        text(&o).0
    );
}

/// Stand-ins for aws (answers like the real one, logs each call), ssh and scp.
fn stubs(dir: &Path, ssh: &str) -> PathBuf {
    let d = dir.join("stubs");
    std::fs::create_dir_all(&d).unwrap();
    let write = |name: &str, body: &str| {
        let p = d.join(name);
        std::fs::write(&p, format!("#!/usr/bin/env bash\n{body}")).unwrap();
        Command::new("chmod").args(["+x", s(&p)]).status().unwrap();
    };
    write(
        "aws",
        r#"echo "$*" >> "$STUB_LOG"
case "$*" in
  "ssm get-parameter "*) echo ami-0123456789abcdef0 ;;
  "ec2 describe-vpcs "*) echo vpc-11111111 ;;
  "ec2 create-security-group "*) echo sg-22222222 ;;
  "ec2 run-instances "*) n=$(grep -c run-instances "$STUB_LOG"); echo "i-000000000000000$n" ;;
  "ec2 describe-instances --instance-ids "*) echo "i-0000000000000001 127.0.0.1"; echo "i-0000000000000002 127.0.0.1" ;;
esac
"#,
    );
    write("ssh", ssh);
    write(
        "scp",
        r#"args=()
while [ $# -gt 0 ]; do case $1 in -o|-F|-i|-P) shift 2 ;; -*) shift ;; *) args+=("$1"); shift ;; esac; done
loc() { case $1 in *:*) p=${1#*:}; case $p in /*) echo "$p" ;; *) echo "$FAKE_HOME/$p" ;; esac ;; *) echo "$1" ;; esac; }
dst=$(loc "${args[-1]}"); unset 'args[-1]'
for a in "${args[@]}"; do p=$(loc "$a"); for f in $p; do cp "$f" "$dst" || exit 1; done; done
"#,
    );
    d
}

fn kinds_here() -> &'static str {
    if std::env::consts::ARCH == "aarch64" {
        "graviton,graviton4"
    } else {
        "intel,amd"
    }
}

fn run_args<'a>(dir: &'a Path, out: &'a Path) -> Vec<String> {
    let key = dir.join("key.pem");
    std::fs::write(&key, "not a key\n").unwrap();
    [
        "run",
        "-k",
        "k",
        "-i",
        s(&key),
        "-m",
        kinds_here(),
        "--ssh-cidr",
        "198.51.100.7/32",
        "-o",
        s(out),
    ]
    .iter()
    .map(|a| a.to_string())
    .collect()
}

fn terminated(log: &str) {
    let t = log
        .lines()
        .find(|l| l.starts_with("ec2 terminate-instances"))
        .unwrap_or_else(|| panic!("nothing terminated:\n{log}"));
    assert!(t.contains("i-0000000000000001 i-0000000000000002"), "{t}");
    assert!(
        log.contains("ec2 delete-security-group --group-id sg-22222222"),
        "{log}"
    );
}

#[test]
fn machines_are_terminated_when_the_wait_fails_and_on_ctrl_c() {
    let dir = tmp("cloud-fail");
    // No machine answers.
    let st = stubs(&dir, "sleep 0.2; exit 255\n");
    let out = dir.join("out");
    let mut args = run_args(&dir, &out);
    args.extend(["--boot-timeout".into(), "1".into()]);
    let o = cloud(
        Some(&st),
        &args.iter().map(String::as_str).collect::<Vec<_>>(),
        &[],
    )
    .output()
    .unwrap();
    let (_, stderr) = text(&o);
    assert_eq!(o.status.code(), Some(3), "{stderr}");
    assert!(stderr.contains("no machine became ready"), "{stderr}");
    terminated(&read(&st.join("aws.log")));
    for f in files(&out) {
        no_credentials(s(&f), &read(&f));
    }

    // Ctrl-C while waiting.
    std::fs::remove_file(st.join("aws.log")).unwrap();
    let out = dir.join("out2");
    let args = run_args(&dir, &out);
    let child = cloud(
        Some(&st),
        &args.iter().map(String::as_str).collect::<Vec<_>>(),
        &[],
    )
    .stdout(Stdio::null())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    let t0 = Instant::now();
    while !std::fs::read_to_string(st.join("aws.log"))
        .unwrap_or_default()
        .contains("describe-instances --instance-ids")
    {
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "the script never got to the wait"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(500));
    Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    let o = child.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(130), "{}", text(&o).1);
    terminated(&read(&st.join("aws.log")));
}

#[test]
fn a_run_benchmarks_the_machines_then_terminates_them() {
    let dir = tmp("cloud-run");
    let home = dir.join("home");
    std::fs::create_dir_all(&home).unwrap();
    // ssh runs the command here, in a stand-in home; the machine is ready at once.
    let st = stubs(
        &dir,
        r#"while [ $# -gt 0 ]; do case $1 in -o|-F|-i|-p) shift 2 ;; -*) shift ;; *) break ;; esac; done
shift
case "$*" in *ferrogpt-cloud-ready*) exit 0 ;; esac
cd "$FAKE_HOME" && exec bash -c "$*"
"#,
    );
    let out = dir.join("out");
    let args = run_args(&dir, &out);
    let o = cloud(
        Some(&st),
        &args.iter().map(String::as_str).collect::<Vec<_>>(),
        &[
            ("FAKE_HOME", s(&home)),
            ("FLEET_SUITE", "bench matmul --levels naive --sizes 16"),
        ],
    )
    .output()
    .unwrap();
    let (stdout, stderr) = text(&o);
    assert_eq!(o.status.code(), Some(0), "{stdout}\n{stderr}");
    for k in kinds_here().split(',') {
        assert!(
            stdout.contains(&format!("{k}: ok, 1 result file(s)")),
            "{stdout}"
        );
        assert_eq!(files(&out.join("fleet/results").join(k)).len(), 1);
    }
    assert!(out.join("fleet/report/index.html").exists());
    let log = read(&st.join("aws.log"));
    terminated(&log);
    // Started with the tags, on the image the parameter named.
    assert!(
        log.contains("--image-id ami-0123456789abcdef0 ")
            && log.contains("{Key=ferrogpt-bench,Value="),
        "{log}"
    );
    assert_eq!(
        read(&out.join("plan.sh"))
            .lines()
            .filter(|l| l.starts_with("aws "))
            .count(),
        log.lines().count()
    );
}

#[test]
fn bad_input_is_refused_in_one_line_before_anything_runs() {
    let dir = tmp("cloud-bad");
    let st = stubs(&dir, "exit 255\n");
    let key = dir.join("key.pem");
    std::fs::write(&key, "x\n").unwrap();
    let cases: &[(&[&str], &str)] = &[
        (&["plan", "-m", "intel"], "missing --key-name"),
        (&["run", "-m", "intel"], "missing --key-name"),
        (
            &["plan", "-k", "k", "-m", "intel,sparc"],
            "unknown machine kind 'sparc'",
        ),
        (
            &["plan", "-k", "k", "--type", "tpu=v5e.large"],
            "unknown machine kind tpu",
        ),
        (&["plan", "-k", "k", "--type", "gpu"], "expected KIND=TYPE"),
        (&["plan", "-k", "k", "-m", "intel,intel"], "listed twice"),
        (&["plan", "-k", "k", "-r", "mars"], "--region mars"),
        (&["plan", "-k", "k", "--os", "windows"], "--os windows"),
        (&["plan", "-k", "k", "--max-hours", "0"], "whole number"),
        (&["-k", "k"], "expected a command"),
        (&["plan", "--bogus"], "unknown argument --bogus"),
        (
            &["run", "-k", "k", "-i", "/nonexistent/key.pem"],
            "cannot read the private key",
        ),
    ];
    for (args, needle) in cases {
        let out = dir.join("out");
        let o = cloud(Some(&st), args, &[])
            .args(["-o", s(&out)])
            .output()
            .unwrap();
        let (_, stderr) = text(&o);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {stderr}");
        let lines: Vec<&str> = stderr.lines().collect();
        assert_eq!(lines.len(), 1, "{args:?}: {stderr}");
        assert!(
            lines[0].starts_with("cloud: ") && lines[0].contains(needle),
            "{args:?}: {stderr}"
        );
        assert!(!out.exists(), "{args:?} wrote {}", out.display());
    }
    // A machine of another architecture without its binary is refused before AWS is called.
    let other = if std::env::consts::ARCH == "aarch64" {
        "intel"
    } else {
        "graviton"
    };
    let o = cloud(
        Some(&st),
        &["run", "-k", "k", "-i", s(&key), "-m", other],
        &[("FERROGPT_BIN_aarch64", ""), ("FERROGPT_BIN_x86_64", "")],
    )
    .output()
    .unwrap();
    let (_, stderr) = text(&o);
    assert_eq!(o.status.code(), Some(2), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("set FERROGPT_BIN_"), "{stderr}");
    assert!(!st.join("aws.log").exists(), "aws was called");
}
