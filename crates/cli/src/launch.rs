//! `train --nproc-per-node N`: N local data-parallel ranks, started as torchrun starts its
//! workers but through the MPI launcher (CPU ranks talk MPI): this process runs
//! `mpirun -np N <this binary> <the same arguments>` and waits for it. Each rank gets
//! cores / N threads unless `--threads` says otherwise.

use std::ffi::OsString;
use std::process::Command;

/// Runs the same command line on `n` ranks under `mpirun`; returns when they are done. Exits
/// with the launcher's status when it fails (the ranks have printed why).
pub fn local_ranks(n: usize, threads: Option<usize>) -> Result<(), String> {
    if n == 0 {
        return Err("--nproc-per-node must be at least 1".into());
    }
    if !ferrogpt_train::dist::MPI_BUILT {
        return Err(ferrogpt_train::dist::DistError::NoMpi.to_string());
    }
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
    let status = cmd
        .arg(exe)
        .args(args)
        .status()
        .map_err(|e| format!("--nproc-per-node: cannot start mpirun: {e}"))?;
    if !status.success() {
        std::process::exit(status.code().unwrap_or(1));
    }
    Ok(())
}
