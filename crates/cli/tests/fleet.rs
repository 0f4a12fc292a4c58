//! `bench/fleet.sh` against an sshd on localhost posing as two machines (alpha, beta), and a
//! third that refuses connections (gamma): the two give results and one report, the third one
//! line. Then a machine that runs past the per-machine timeout.
//!
//! Needs OpenSSH's server and client (Debian: openssh-server, openssh-client); skipped with a
//! reason without them, unless FERROGPT_REQUIRE_SSH=1. The sshd runs as this user on a free
//! port with a host key and a user key made here; as root, sshd also needs its privilege
//! separation folder /run/sshd, which the test makes when it is missing.

mod common;

use common::{s, tmp, BIN};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const SSHD: &str = "/usr/sbin/sshd";

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn have(cmd: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {cmd}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|st| st.success())
}

/// The sshd under test; stopped when dropped.
struct Sshd(Child);

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn keygen(path: &Path) {
    let st = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f", s(path)])
        .status()
        .unwrap();
    assert!(st.success(), "ssh-keygen failed");
}

/// Starts sshd on `port` and writes an ssh config for the hosts alpha and beta (this sshd) and
/// gamma (`closed`, where nothing listens). Returns the sshd and the config's path.
fn start(dir: &Path, port: u16, closed: u16) -> (Sshd, PathBuf) {
    keygen(&dir.join("hostkey"));
    keygen(&dir.join("userkey"));
    std::fs::copy(dir.join("userkey.pub"), dir.join("authorized_keys")).unwrap();
    let d = s(dir);
    std::fs::write(
        dir.join("sshd_config"),
        format!(
            "Port {port}\nListenAddress 127.0.0.1\nHostKey {d}/hostkey\n\
             AuthorizedKeysFile {d}/authorized_keys\nPasswordAuthentication no\n\
             KbdInteractiveAuthentication no\nPubkeyAuthentication yes\nStrictModes no\n\
             UsePAM no\nPermitRootLogin prohibit-password\nPidFile {d}/sshd.pid\n\
             Subsystem sftp internal-sftp\nLogLevel ERROR\n"
        ),
    )
    .unwrap();
    let user = Command::new("id").arg("-un").output().unwrap();
    let user = String::from_utf8(user.stdout).unwrap().trim().to_string();
    let config = dir.join("ssh_config");
    std::fs::write(
        &config,
        format!(
            "Host alpha beta gamma\n  HostName 127.0.0.1\n  User {user}\n  \
             IdentityFile {d}/userkey\n  IdentitiesOnly yes\n  StrictHostKeyChecking no\n  \
             UserKnownHostsFile /dev/null\n  LogLevel ERROR\n\
             Host alpha beta\n  Port {port}\nHost gamma\n  Port {closed}\n"
        ),
    )
    .unwrap();
    let root = Command::new("id").arg("-u").output().unwrap().stdout == b"0\n";
    if root && !Path::new("/run/sshd").exists() {
        std::fs::create_dir_all("/run/sshd").unwrap();
    }
    let child = Command::new(SSHD)
        .args(["-D", "-e", "-f", s(&dir.join("sshd_config"))])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("sshd.log")).unwrap())
        .spawn()
        .expect("start sshd");
    let sshd = Sshd(child);
    let t0 = Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "sshd did not listen: {}",
            std::fs::read_to_string(dir.join("sshd.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    (sshd, config)
}

/// Runs bench/fleet.sh; (exit status, stdout, stderr).
fn fleet(dir: &Path, config: &Path, suite: &str, args: &[&str]) -> (i32, String, String) {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../bench/fleet.sh");
    let o = Command::new("bash")
        .arg(script)
        .args(args)
        .env("FERROGPT_BIN", BIN)
        .env("FLEET_SSH_OPTS", format!("-F {}", s(config)))
        .env("FLEET_REMOTE_DIR", s(&dir.join("remote")))
        .env("FLEET_SUITE", suite)
        .output()
        .unwrap();
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

#[test]
fn fleet_over_ssh_keeps_the_machines_that_answer() {
    let missing: Vec<&str> = ["ssh", "scp", "ssh-keygen", SSHD]
        .into_iter()
        .filter(|c| !have(c))
        .collect();
    if !missing.is_empty() {
        if std::env::var("FERROGPT_REQUIRE_SSH").as_deref() == Ok("1") {
            panic!(
                "FERROGPT_REQUIRE_SSH=1 but {missing:?} missing (apt-get install openssh-server)"
            );
        }
        eprintln!("skipped: {missing:?} not installed (FERROGPT_REQUIRE_SSH=1 makes this fail)");
        return;
    }
    let dir = tmp("fleet");
    let (port, closed) = (free_port(), free_port());
    let (_sshd, config) = start(&dir, port, closed);
    let hosts = dir.join("hosts");
    std::fs::write(
        &hosts,
        "# label destination\nalpha alpha\nbeta beta\n\ngamma gamma\n",
    )
    .unwrap();
    let out = dir.join("out");
    let text = common::verse_file(&dir);
    let suite = format!(
        "bench matmul --sizes 32 --levels naive,simd --threads 1\n\
         bench train --levels simd --steps 1 --warmup 0 --threads 1 --data {}",
        s(&text)
    );
    let (code, stdout, stderr) = fleet(
        &dir,
        &config,
        &suite,
        &["-t", "120", "-o", s(&out), s(&hosts)],
    );
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(code, 1, "one machine failed, so status 1: {stdout}{stderr}");
    assert_eq!(lines.len(), 3, "one line per machine: {stdout}");
    assert_eq!(lines[0], "alpha: ok, 2 result file(s)");
    assert_eq!(lines[1], "beta: ok, 2 result file(s)");
    assert!(
        lines[2].starts_with("gamma: failed: cannot connect"),
        "{}",
        lines[2]
    );
    assert!(!out.join("results/gamma").exists());
    let html = std::fs::read_to_string(out.join("report/index.html")).unwrap();
    assert!(
        html.contains("4 saved result(s) from 2 machine(s)"),
        "{html}"
    );
    for label in ["alpha", "beta"] {
        let saved: Vec<_> = std::fs::read_dir(out.join("results").join(label))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        for f in &saved {
            let r = ferrogpt_report::load(f).unwrap();
            assert_eq!(r.host, label);
            assert!(r.command.iter().any(|a| a == "--label"));
        }
    }

    // A machine past its time: one line, no report, status 2 (nothing came back).
    let (code, stdout, _) = fleet(
        &dir,
        &config,
        &format!("bench train --levels naive --steps 500 --data {}", s(&text)),
        &[
            "-t",
            "2",
            "-o",
            s(&dir.join("out2")),
            s(&{
                let h = dir.join("hosts-one");
                std::fs::write(&h, "alpha alpha\n").unwrap();
                h
            }),
        ],
    );
    assert_eq!(code, 2, "{stdout}");
    assert_eq!(
        stdout.trim(),
        format!(
            "alpha: failed: timed out after 2 s (see {}/out2/logs/alpha.log)",
            s(&dir)
        )
    );
    drop(_sshd);
    let _ = std::fs::remove_dir_all(&dir);
}
