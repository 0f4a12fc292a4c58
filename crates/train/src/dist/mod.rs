//! Data-parallel training across processes ("ranks"): the collectives a run needs, behind one
//! contract, on the engines the field uses (MPI for CPU ranks; NCCL for GPUs is to come).
//!
//! Semantics of a data-parallel step (see [`crate::trainer`]): every rank holds the whole model
//! and the same data stream; of each step's `world × grad_accum` micro-batches rank `r` runs
//! those with index `≡ r (mod world)`, each scaled by `1 / (world × grad_accum)`; the gradients
//! are then summed across ranks ([`Collective::all_reduce_sum_f32`]) before clipping, so every
//! rank clips and updates the same way. The same run on one rank with `world ×` the gradient
//! accumulation takes the same micro-batches in the same order: the two differ only in the
//! order of floating-point sums.
//!
//! [`Solo`] is the one-rank case (no communication). With the `mpi` cargo feature, [`mpi`]
//! connects the ranks that `mpirun`/`srun` started; without it, asking for MPI is an error that
//! says how to build with it.

#[cfg(feature = "mpi")]
pub mod mpi;

/// Whether this build can connect MPI ranks (the `mpi` feature).
pub const MPI_BUILT: bool = cfg!(feature = "mpi");

/// Why a collective failed or could not start.
#[derive(Debug, thiserror::Error)]
pub enum DistError {
    /// This build has no MPI.
    #[error(
        "this ferrogpt was built without MPI; build it with `cargo build --release --features \
         ferrogpt-train/mpi` (needs an MPI library, e.g. Debian's libopenmpi-dev, and libclang)"
    )]
    NoMpi,
    /// Buffers of the wrong length for a collective.
    #[error("{op}: {detail}")]
    Shape {
        /// The collective, e.g. `reduce_scatter`.
        op: &'static str,
        /// The lengths that do not fit.
        detail: String,
    },
    /// The launcher's environment does not make sense.
    #[error("{0}")]
    Launch(String),
}

/// The collectives of a data-parallel run, over `world()` ranks. Every rank calls the same
/// collectives in the same order with buffers of the same length; each call returns once all
/// ranks have taken part.
pub trait Collective {
    /// This process's rank, `0..world()`.
    fn rank(&self) -> usize;
    /// Number of ranks.
    fn world(&self) -> usize;
    /// e.g. "MPI (Open MPI v4.1.4), rank 0 of 2".
    fn describe(&self) -> String;
    /// Whether this is a data-parallel run, even of one rank (the trainer then goes through the
    /// collectives); false only for [`Solo`].
    fn distributed(&self) -> bool {
        true
    }
    /// Every rank receives root's `buf` (all ranks pass buffers of the same length).
    fn broadcast_bytes(&self, root: usize, buf: &mut [u8]) -> Result<(), DistError>;
    /// Ends this process after an error, and with it the run on every rank (MPI_Abort; the
    /// other ranks' launcher or watchdog ends them where the library cannot), instead of a
    /// shutdown that would wait for ranks stuck in a collective.
    fn abort(&self, code: i32) -> ! {
        std::process::exit(code)
    }
    /// Replaces `x` on every rank by the elementwise sum of every rank's `x`.
    fn all_reduce_sum_f32(&self, x: &mut [f32]) -> Result<(), DistError>;
    /// As [`Collective::all_reduce_sum_f32`], in f64 (losses, norms, flags).
    fn all_reduce_sum_f64(&self, x: &mut [f64]) -> Result<(), DistError>;
    /// Rank `r` receives in `out` the elementwise sum over ranks of block `r` of `x`
    /// (`x.len() == world() * out.len()`).
    fn reduce_scatter_sum_f32(&self, x: &[f32], out: &mut [f32]) -> Result<(), DistError>;
    /// Every rank receives in `out` the ranks' `mine`, in rank order
    /// (`out.len() == world() * mine.len()`).
    fn all_gather_f32(&self, mine: &[f32], out: &mut [f32]) -> Result<(), DistError>;
}

/// Checks the lengths of a reduce-scatter or all-gather: `whole == world × part`.
pub fn check_blocks(
    op: &'static str,
    whole: usize,
    part: usize,
    world: usize,
) -> Result<(), DistError> {
    if whole != part * world {
        return Err(DistError::Shape {
            op,
            detail: format!("{whole} values are not {world} blocks of {part}"),
        });
    }
    Ok(())
}

/// The block of a flat buffer of `n` values that rank `rank` of `world` owns when the buffer is
/// split into `world` blocks of `ceil(n / world)` (the last ones padded): `(lo, hi, block)`
/// with `lo..hi` the rank's real values, possibly empty.
pub fn block_of(n: usize, rank: usize, world: usize) -> (usize, usize, usize) {
    let block = n.div_ceil(world.max(1));
    let lo = (rank * block).min(n);
    (lo, (lo + block).min(n), block)
}

/// One rank, no communication.
#[derive(Debug, Clone, Copy, Default)]
pub struct Solo;

impl Collective for Solo {
    fn rank(&self) -> usize {
        0
    }
    fn world(&self) -> usize {
        1
    }
    fn describe(&self) -> String {
        "one rank".into()
    }
    fn distributed(&self) -> bool {
        false
    }
    fn broadcast_bytes(&self, _: usize, _: &mut [u8]) -> Result<(), DistError> {
        Ok(())
    }
    fn all_reduce_sum_f32(&self, _: &mut [f32]) -> Result<(), DistError> {
        Ok(())
    }
    fn all_reduce_sum_f64(&self, _: &mut [f64]) -> Result<(), DistError> {
        Ok(())
    }
    fn reduce_scatter_sum_f32(&self, x: &[f32], out: &mut [f32]) -> Result<(), DistError> {
        check_blocks("reduce_scatter", x.len(), out.len(), 1)?;
        out.copy_from_slice(x);
        Ok(())
    }
    fn all_gather_f32(&self, mine: &[f32], out: &mut [f32]) -> Result<(), DistError> {
        check_blocks("all_gather", out.len(), mine.len(), 1)?;
        out.copy_from_slice(mine);
        Ok(())
    }
}

/// How this process was started, read from its environment by [`Launch::from_env`] (the one
/// place that reads it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Launch {
    /// No launcher: one rank.
    Single,
    /// Started by an MPI launcher (`mpirun`, `mpiexec`, `srun` with PMI): rank and size come
    /// from MPI itself; `local_rank` (the rank among this node's, which picks the GPU) from
    /// the launcher's variables.
    Mpi {
        /// This process's rank among the ranks of its node (0 where the launcher says nothing).
        local_rank: usize,
    },
    /// Started with torchrun's variables (`RANK`, `WORLD_SIZE`, `LOCAL_RANK`, `MASTER_ADDR`,
    /// `MASTER_PORT`), by torchrun, a SLURM script or `--nproc-per-node` on GPUs: NCCL ranks,
    /// rank 0 handing out NCCL's id at the master address.
    Env(EnvRanks),
}

/// The torchrun-style description of one rank.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvRanks {
    /// `RANK`: this process's rank, below `world`.
    pub rank: usize,
    /// `WORLD_SIZE`: ranks in the run, at least 1.
    pub world: usize,
    /// `LOCAL_RANK` (`RANK` when unset): the rank among this node's, which picks the GPU.
    pub local_rank: usize,
    /// `MASTER_ADDR:MASTER_PORT`.
    pub master: String,
}

impl Launch {
    /// Reads the variables launchers set: MPI's (Open MPI's `OMPI_COMM_WORLD_SIZE`,
    /// MPICH/Hydra's and Slurm's `PMI_SIZE`, PMIx's `PMIX_RANK`) first, then torchrun's.
    /// Errors: torchrun's variables present but incomplete or not numbers.
    pub fn from_env() -> Result<Launch, DistError> {
        let var = |k: &str| std::env::var(k).ok();
        let set = |k: &str| std::env::var_os(k).is_some();
        if set("OMPI_COMM_WORLD_SIZE") || set("PMI_SIZE") || set("PMIX_RANK") {
            let local_rank = [
                "OMPI_COMM_WORLD_LOCAL_RANK",
                "MPI_LOCALRANKID",
                "SLURM_LOCALID",
            ]
            .iter()
            .find_map(|k| var(k)?.parse().ok())
            .unwrap_or(0);
            return Ok(Launch::Mpi { local_rank });
        }
        if !set("RANK") && !set("WORLD_SIZE") {
            // srun without MPI's process manager starts independent copies: refuse rather
            // than run N single-rank runs into one directory.
            if var("SLURM_NTASKS")
                .and_then(|n| n.parse::<usize>().ok())
                .is_some_and(|n| n > 1)
            {
                return Err(DistError::Launch(
                    "srun started several tasks, but without MPI's PMI (srun --mpi=pmix) or torchrun's variables they cannot find each other".into(),
                ));
            }
            return Ok(Launch::Single);
        }
        let num = |k: &str| -> Result<usize, DistError> {
            var(k).and_then(|v| v.parse().ok()).ok_or_else(|| {
                DistError::Launch(format!(
                    "{k} is {:?}: a torchrun-style launch needs RANK, WORLD_SIZE, LOCAL_RANK, \
                     MASTER_ADDR and MASTER_PORT",
                    var(k)
                ))
            })
        };
        let (rank, world) = (num("RANK")?, num("WORLD_SIZE")?);
        let local_rank = num("LOCAL_RANK").unwrap_or(rank);
        let port = num("MASTER_PORT")?;
        let addr = var("MASTER_ADDR").unwrap_or_else(|| "127.0.0.1".into());
        if world == 0 || rank >= world {
            return Err(DistError::Launch(format!(
                "RANK {rank} is not below WORLD_SIZE {world}"
            )));
        }
        Ok(Launch::Env(EnvRanks {
            rank,
            world,
            local_rank,
            master: format!("{addr}:{port}"),
        }))
    }

    /// The rank among this node's (0 for one rank): which GPU a rank takes.
    pub fn local_rank(&self) -> usize {
        match self {
            Launch::Single => 0,
            Launch::Mpi { local_rank } => *local_rank,
            Launch::Env(e) => e.local_rank,
        }
    }

    /// The collectives for a launch of CPU ranks, or of GPU ranks started by MPI. Errors: MPI
    /// on a build without it; torchrun-style ranks, which only GPUs (NCCL) connect.
    pub fn connect(&self) -> Result<std::rc::Rc<dyn Collective>, DistError> {
        match self {
            Launch::Single => Ok(std::rc::Rc::new(Solo)),
            #[cfg(feature = "mpi")]
            Launch::Mpi { .. } => Ok(std::rc::Rc::new(mpi::Mpi::init()?)),
            #[cfg(not(feature = "mpi"))]
            Launch::Mpi { .. } => Err(DistError::NoMpi),
            Launch::Env(_) => Err(DistError::Launch(
                "torchrun-style ranks (RANK, WORLD_SIZE, ...) connect through NCCL, on GPUs \
                 (--device cuda); start CPU ranks with mpirun"
                    .into(),
            )),
        }
    }
}

/// Ends a rank that waits too long in a collective: when the other ranks do not answer
/// within the timeout (one died, or hangs), [`Watchdog`]'s thread runs its action (the CLI's:
/// one line on stderr and exit status 1) instead of letting the rank wait forever.
pub struct Watchdog {
    state: std::sync::Arc<WatchState>,
}

struct WatchState {
    /// Since when this rank waits, and in what; None outside collectives.
    waiting: std::sync::Mutex<Option<(std::time::Instant, &'static str)>>,
    timeout: std::time::Duration,
}

/// A collective in progress; dropping it ends the wait.
pub struct WatchGuard<'a> {
    state: &'a WatchState,
}

impl Watchdog {
    /// Watches with `timeout`; `on_timeout(what)` runs (once) on the watchdog's thread when a
    /// guard has lived longer than that.
    pub fn new(
        timeout: std::time::Duration,
        on_timeout: impl FnOnce(&'static str) + Send + 'static,
    ) -> Watchdog {
        let state = std::sync::Arc::new(WatchState {
            waiting: std::sync::Mutex::new(None),
            timeout,
        });
        let weak = std::sync::Arc::downgrade(&state);
        let tick = (timeout / 10).clamp(
            std::time::Duration::from_millis(1),
            std::time::Duration::from_secs(1),
        );
        std::thread::spawn(move || {
            // Ends with the watchdog (its state gone).
            while let Some(state) = weak.upgrade() {
                let late = state
                    .waiting
                    .lock()
                    .ok()
                    .and_then(|w| *w)
                    .filter(|(since, _)| since.elapsed() > state.timeout);
                if let Some((_, what)) = late {
                    on_timeout(what);
                    return;
                }
                drop(state);
                std::thread::sleep(tick);
            }
        });
        Watchdog { state }
    }

    /// Marks a wait in a collective (`what`, e.g. "summing gradients") until the guard drops.
    pub fn guard(&self, what: &'static str) -> WatchGuard<'_> {
        if let Ok(mut w) = self.state.waiting.lock() {
            *w = Some((std::time::Instant::now(), what));
        }
        WatchGuard { state: &self.state }
    }

    /// The timeout.
    pub fn timeout(&self) -> std::time::Duration {
        self.state.timeout
    }
}

impl Drop for WatchGuard<'_> {
    fn drop(&mut self) {
        if let Ok(mut w) = self.state.waiting.lock() {
            *w = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;
    use std::time::Duration;

    #[test]
    fn the_watchdog_acts_on_a_long_wait_only() {
        let (tx, rx) = mpsc::channel();
        let dog = Watchdog::new(Duration::from_millis(200), move |what| {
            let _ = tx.send(what);
        });
        for _ in 0..5 {
            let _g = dog.guard("summing gradients");
            std::thread::sleep(Duration::from_millis(20));
        }
        std::thread::sleep(Duration::from_millis(400));
        assert!(rx.try_recv().is_err(), "short waits must pass");
        let _g = dog.guard("agreeing to stop");
        assert_eq!(
            rx.recv_timeout(Duration::from_secs(5)).unwrap(),
            "agreeing to stop"
        );
    }
}
