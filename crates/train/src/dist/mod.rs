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
    Shape { op: &'static str, detail: String },
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
    /// from MPI itself.
    Mpi,
}

impl Launch {
    /// Reads the variables MPI launchers set (Open MPI's `OMPI_COMM_WORLD_SIZE`, MPICH/Hydra's
    /// and Slurm's `PMI_SIZE`, PMIx's `PMIX_RANK`).
    pub fn from_env() -> Launch {
        let set = |k: &str| std::env::var_os(k).is_some();
        if set("OMPI_COMM_WORLD_SIZE") || set("PMI_SIZE") || set("PMIX_RANK") {
            Launch::Mpi
        } else {
            Launch::Single
        }
    }

    /// The collectives for this launch. Errors: MPI launch on a build without MPI.
    pub fn connect(&self) -> Result<Box<dyn Collective>, DistError> {
        match self {
            Launch::Single => Ok(Box::new(Solo)),
            #[cfg(feature = "mpi")]
            Launch::Mpi => Ok(Box::new(mpi::Mpi::init()?)),
            #[cfg(not(feature = "mpi"))]
            Launch::Mpi => Err(DistError::NoMpi),
        }
    }
}
