//! `train --nproc-per-node N`: N local data-parallel ranks running this same command line.
//!
//! - CPU ranks talk MPI: this process runs `mpirun -np N <this binary> <the same arguments>`
//!   and waits for it ([`local_ranks`]); each rank gets cores / N threads unless `--threads`
//!   says otherwise.
//! - GPU ranks talk NCCL: this process starts N copies itself, as torchrun does, with
//!   `RANK`, `WORLD_SIZE`, `LOCAL_RANK` (rank i takes GPU i), `MASTER_ADDR=127.0.0.1` and a
//!   free `MASTER_PORT` ([`local_gpu_ranks`]); when one fails, the others are stopped.

use std::ffi::OsString;
use std::process::Command;

/// This binary and its arguments without `--nproc-per-node`.
fn same_command() -> Result<(std::path::PathBuf, Vec<OsString>), String> {
    let exe = std::env::current_exe().map_err(|e| format!("cannot find this binary: {e}"))?;
    let mut args: Vec<OsString> = Vec::new();
    let mut rest = std::env::args_os().skip(1);
    while let Some(arg) = rest.next() {
        match arg.to_str() {
            Some("--nproc-per-node") => {
                rest.next();
            }
            Some(a) if a.starts_with("--nproc-per-node=") => {}
            _ => args.push(arg),
        }
    }
    Ok((exe, args))
}

/// Starts `n` GPU ranks of the same command line, torchrun-style, and waits for them. Exits
/// with the status of the first rank that fails (it has printed why), after stopping the rest.
pub fn local_gpu_ranks(n: usize) -> Result<(), String> {
    if n == 0 {
        return Err("--nproc-per-node must be at least 1".into());
    }
    let (exe, args) = same_command()?;
    // A free port: bound, read, released; rank 0 binds it again at once.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(|e| format!("--nproc-per-node: no free local port: {e}"))?
        .port();
    let mut ranks = Vec::with_capacity(n);
    for rank in 0..n {
        let child = Command::new(&exe)
            .args(&args)
            .env("RANK", rank.to_string())
            .env("WORLD_SIZE", n.to_string())
            .env("LOCAL_RANK", rank.to_string())
            .env("MASTER_ADDR", "127.0.0.1")
            .env("MASTER_PORT", port.to_string())
            .spawn()
            .map_err(|e| format!("--nproc-per-node: cannot start rank {rank}: {e}"))?;
        ranks.push(child);
    }
    // A terminal's Ctrl-C reaches the ranks too (one process group), and each stops at the
    // same step and saves: this process waits for them; a second Ctrl-C ends them.
    let interrupts = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    {
        let interrupts = interrupts.clone();
        let _ = ctrlc::set_handler(move || {
            interrupts.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        });
    }
    let mut done = vec![false; n];
    let mut failed = None;
    while failed.is_none() && done.iter().any(|d| !d) {
        if interrupts.load(std::sync::atomic::Ordering::SeqCst) >= 2 {
            failed = Some(130);
            break;
        }
        for (child, done) in ranks.iter_mut().zip(done.iter_mut()) {
            if let Ok(Some(status)) = child.try_wait() {
                *done = true;
                if !status.success() && failed.is_none() {
                    failed = Some(status.code().unwrap_or(1));
                }
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    if failed.is_some() {
        // The others would wait for it in a collective forever.
        for child in ranks.iter_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
    match failed {
        Some(code) => std::process::exit(code),
        None => Ok(()),
    }
}

/// Runs the same command line on `n` ranks under `mpirun`; returns when they are done. Exits
/// with the launcher's status when it fails (the ranks have printed why).
pub fn local_ranks(n: usize, threads: Option<usize>) -> Result<(), String> {
    if n == 0 {
        return Err("--nproc-per-node must be at least 1".into());
    }
    if !ferrogpt_train::dist::MPI_BUILT {
        return Err(ferrogpt_train::dist::DistError::NoMpi.to_string());
    }
    let (exe, mut args) = same_command()?;
    if threads.is_none() {
        let cores = std::thread::available_parallelism().map_or(1, |c| c.get());
        args.extend(["--threads".into(), (cores / n).max(1).to_string().into()]);
    }
    let open_mpi = Command::new("mpirun")
        .arg("--version")
        .output()
        .map_err(|e| format!("--nproc-per-node: cannot run mpirun ({e}); install an MPI launcher (Debian: openmpi-bin)"))?;
    let open_mpi = String::from_utf8_lossy(&open_mpi.stdout).contains("Open MPI");
    let mut cmd = Command::new("mpirun");
    cmd.args(["-np", &n.to_string()]);
    if open_mpi {
        // The ranks' threads are set above; let them run where the OS puts them, and allow
        // more ranks than cores when asked for.
        cmd.args(["--bind-to", "none", "--oversubscribe"]);
        // Open MPI refuses to start as root unless told; containers often run as root.
        cmd.env("OMPI_ALLOW_RUN_AS_ROOT", "1")
            .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1");
    }
    // mpirun in a process group of its own, so that a terminal's Ctrl-C reaches only this
    // process, which asks the ranks to stop and save (SIGUSR1, forwarded by mpirun) instead
    // of letting mpirun kill them; a second Ctrl-C ends the job.
    #[cfg(unix)]
    std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
    let mut job = cmd
        .arg(exe)
        .args(args)
        .spawn()
        .map_err(|e| format!("--nproc-per-node: cannot start mpirun: {e}"))?;
    #[cfg(unix)]
    {
        let pid = job.id() as libc::pid_t;
        let asked = std::sync::atomic::AtomicBool::new(false);
        let _ = ctrlc::set_handler(move || {
            let again = asked.swap(true, std::sync::atomic::Ordering::SeqCst);
            let signal = if again { libc::SIGTERM } else { libc::SIGUSR1 };
            // SAFETY: signals our own child.
            unsafe {
                libc::kill(pid, signal);
            }
        });
    }
    let status = job
        .wait()
        .map_err(|e| format!("--nproc-per-node: waiting for mpirun: {e}"))?;
    if !status.success() {
        std::process::exit(status.code().unwrap_or(1));
    }
    Ok(())
}
