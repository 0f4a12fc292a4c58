//! `train --nproc-per-node N`: N local data-parallel ranks running this same command line.
//!
//! - CPU ranks talk MPI: this process runs `mpirun -np N <this binary> <the same arguments>`
//!   and waits for it ([`local_ranks`]); each rank gets cores / N threads unless `--threads`
//!   says otherwise. One CPU rank needs no MPI: it is started as a child, as GPU ranks are.
//! - GPU ranks talk NCCL: this process starts N copies itself, as torchrun does, with
//!   `RANK`, `WORLD_SIZE`, `LOCAL_RANK` (rank i takes GPU i), `MASTER_ADDR=127.0.0.1` and a
//!   free `MASTER_PORT` ([`local_gpu_ranks`]); when one fails, the others are stopped.
//!
//! Stopping ([`stop_requests`], in every training process): Ctrl-C, SIGUSR1 and SIGTERM ask
//! for a stop, which the ranks agree on at the next step boundary, saving the checkpoint.
//! When this launcher dies (even by SIGKILL), what it started is asked to stop the same way:
//! Linux's parent-death signal (SIGUSR1) reaches `mpirun`, which forwards it to its ranks, or
//! the child ranks themselves; a child rank also learns its launcher's pid from
//! `FERROGPT_LAUNCHER_PID`, watches for its death, and ends itself with one line when it has
//! not stopped within a grace period (twice `--dist-timeout`).

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

/// The variable that tells a rank started by [`child_ranks`] its launcher's pid.
const LAUNCHER_PID: &str = "FERROGPT_LAUNCHER_PID";

/// Makes the process `cmd` starts receive SIGUSR1 when this process dies, however it dies
/// (Linux's parent-death signal; elsewhere nothing). Where this process is already gone by
/// the time the child would have been told (the race between fork and `prctl`), the child
/// does not start. The signal follows the death of the thread that spawns, so spawn from
/// the main thread.
fn signal_on_launcher_death(cmd: &mut Command) {
    #[cfg(target_os = "linux")]
    {
        let launcher = std::process::id();
        // SAFETY: the closure runs between fork and exec and calls only prctl and getppid,
        // which are async-signal-safe, and builds its errors without allocating.
        unsafe {
            std::os::unix::process::CommandExt::pre_exec(cmd, move || {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGUSR1 as libc::c_ulong) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                if libc::getppid() as u32 != launcher {
                    return Err(std::io::Error::from_raw_os_error(libc::ESRCH));
                }
                Ok(())
            });
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = cmd;
}

/// Starts `n` GPU ranks of the same command line, torchrun-style, and waits for them. Exits
/// with the status of the first rank that fails (it has printed why), after stopping the rest.
pub fn local_gpu_ranks(n: usize) -> Result<(), String> {
    child_ranks(n)
}

/// Starts `n` ranks of the same command line as children of this process with torchrun's
/// variables (GPU ranks, or the one CPU rank, which needs no MPI: the CPU tests go through
/// this path that way) and waits for them. Exits with the status of the first rank that
/// fails (it has printed why), after stopping the rest.
fn child_ranks(n: usize) -> Result<(), String> {
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
        let mut cmd = Command::new(&exe);
        cmd.args(&args)
            .env("RANK", rank.to_string())
            .env("WORLD_SIZE", n.to_string())
            .env("LOCAL_RANK", rank.to_string())
            .env("MASTER_ADDR", "127.0.0.1")
            .env("MASTER_PORT", port.to_string())
            .env(LAUNCHER_PID, std::process::id().to_string());
        // Killed, this process leaves no rank training on, or waiting for a rank that the
        // kill took with it: each is asked to stop and save.
        signal_on_launcher_death(&mut cmd);
        let child = cmd
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
/// with the launcher's status when it fails (the ranks have printed why). One rank is started
/// as a child instead ([`child_ranks`]): it needs no MPI.
pub fn local_ranks(n: usize, threads: Option<usize>) -> Result<(), String> {
    if n == 0 {
        return Err("--nproc-per-node must be at least 1".into());
    }
    if n == 1 {
        return child_ranks(1);
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
    // Killed, this process would leave mpirun and its ranks training on, out of the
    // terminal's reach: mpirun gets SIGUSR1 then, which it forwards to the ranks.
    signal_on_launcher_death(&mut cmd);
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

/// Installs a training process's stop requests besides Ctrl-C (which the caller handles):
/// SIGUSR1 and SIGTERM set `stop`, which the ranks agree on at the next step boundary, and a
/// second SIGTERM ends the process at once (status 143). SIGUSR1 is what `--nproc-per-node`
/// turns a Ctrl-C into and what mpirun forwards to every rank; SIGTERM is what mpirun sends
/// its ranks on Ctrl-C, `odls_base_sigkill_timeout` seconds before SIGKILL (docs/distributed.md).
///
/// A rank started by [`child_ranks`] (its launcher's pid in `FERROGPT_LAUNCHER_PID`) also
/// watches for its launcher's death: it sets `stop`, as the parent-death signal has done
/// (which ends a rank still starting, before it catches the signal: nothing trained is lost
/// then), and a rank still running `grace` later says so in one line and exits with status 1.
pub fn stop_requests(
    stop: &std::sync::Arc<std::sync::atomic::AtomicBool>,
    rank: usize,
    grace: std::time::Duration,
) {
    #[cfg(unix)]
    {
        use signal_hook::consts::{SIGTERM, SIGUSR1};
        // Registered before the flag itself, so that a SIGTERM finding it set ends the process.
        let _ = signal_hook::flag::register_conditional_shutdown(SIGTERM, 143, stop.clone());
        let _ = signal_hook::flag::register(SIGTERM, stop.clone());
        let _ = signal_hook::flag::register(SIGUSR1, stop.clone());
        let launcher = std::env::var(LAUNCHER_PID)
            .ok()
            .and_then(|p| p.parse::<u32>().ok());
        if let Some(launcher) = launcher {
            let stop = stop.clone();
            std::thread::spawn(move || watch_launcher(launcher, &stop, rank, grace));
        }
    }
    #[cfg(not(unix))]
    let _ = (stop, rank, grace);
}

/// [`stop_requests`]'s watch: returns only if the process outlives `grace` after the death
/// of `launcher`, by ending it.
#[cfg(unix)]
fn watch_launcher(
    launcher: u32,
    stop: &std::sync::atomic::AtomicBool,
    rank: usize,
    grace: std::time::Duration,
) {
    use std::io::Write;
    // A dead launcher's children are adopted by another process (init or a subreaper).
    // SAFETY: getppid has no preconditions.
    while unsafe { libc::getppid() } as u32 == launcher {
        std::thread::sleep(std::time::Duration::from_millis(250));
    }
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    std::thread::sleep(grace);
    // A write that fails (the terminal or pipe gone with the launcher) must not keep it alive.
    let _ = writeln!(
        std::io::stderr(),
        "ferrogpt: error: rank {rank}: the launcher (pid {launcher}) is gone and this rank did not stop within {} s; exiting",
        grace.as_secs_f64()
    );
    // SAFETY: _exit ends the process without exit handlers (a collective library's could wait
    // for ranks that are gone); nothing runs after it.
    unsafe { libc::_exit(1) }
}
