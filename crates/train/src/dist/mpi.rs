//! [`Collective`] over MPI (the `mpi` crate, on the system's Open MPI or MPICH), for ranks
//! that an MPI launcher started. Sums run in MPI_Allreduce on a copy of the buffer (the crate
//! has no in-place form), in pieces of at most 2^28 values (MPI counts are 32-bit).

use super::{check_blocks, Collective, DistError};
use ::mpi::collective::SystemOperation;
use ::mpi::topology::SimpleCommunicator;
use ::mpi::traits::*;
use std::cell::RefCell;

/// Values per MPI call.
const PIECE: usize = 1 << 28;

/// The ranks of `MPI_COMM_WORLD`. MPI is finalised when this is dropped.
pub struct Mpi {
    // Field order: the communicator goes before the universe that finalises MPI.
    world: SimpleCommunicator,
    _universe: ::mpi::environment::Universe,
    scratch: RefCell<Vec<f32>>,
}

impl Mpi {
    /// Initialises MPI. Errors: MPI was already initialised in this process.
    pub fn init() -> Result<Self, DistError> {
        let universe = ::mpi::initialize()
            .ok_or_else(|| DistError::Launch("MPI was already initialised".into()))?;
        Ok(Mpi {
            world: universe.world(),
            _universe: universe,
            scratch: RefCell::new(Vec::new()),
        })
    }
}

impl Collective for Mpi {
    fn rank(&self) -> usize {
        self.world.rank() as usize
    }

    fn world(&self) -> usize {
        self.world.size() as usize
    }

    fn describe(&self) -> String {
        let lib = ::mpi::environment::library_version().unwrap_or_else(|_| "MPI".into());
        let lib = lib
            .split([',', '\n'])
            .next()
            .unwrap_or("MPI")
            .trim()
            .to_string();
        format!("MPI ({lib}), rank {} of {}", self.rank(), self.world())
    }

    fn all_reduce_sum_f32(&self, x: &mut [f32]) -> Result<(), DistError> {
        let mut scratch = self.scratch.borrow_mut();
        for piece in x.chunks_mut(PIECE) {
            scratch.clear();
            scratch.extend_from_slice(piece);
            self.world
                .all_reduce_into(&scratch[..], piece, SystemOperation::sum());
        }
        Ok(())
    }

    fn reduce_scatter_sum_f32(&self, x: &[f32], out: &mut [f32]) -> Result<(), DistError> {
        check_blocks("reduce_scatter", x.len(), out.len(), self.world())?;
        count_fits("reduce_scatter", out.len())?;
        self.world
            .reduce_scatter_block_into(x, out, SystemOperation::sum());
        Ok(())
    }

    fn all_gather_f32(&self, mine: &[f32], out: &mut [f32]) -> Result<(), DistError> {
        check_blocks("all_gather", out.len(), mine.len(), self.world())?;
        count_fits("all_gather", mine.len())?;
        self.world.all_gather_into(mine, out);
        Ok(())
    }

    fn abort(&self, code: i32) -> ! {
        self.world.abort(code)
    }

    fn broadcast_bytes(&self, root: usize, buf: &mut [u8]) -> Result<(), DistError> {
        count_fits("broadcast", buf.len())?;
        self.world.process_at_rank(root as i32).broadcast_into(buf);
        Ok(())
    }

    fn all_reduce_sum_f64(&self, x: &mut [f64]) -> Result<(), DistError> {
        for piece in x.chunks_mut(PIECE) {
            let send = piece.to_vec();
            self.world
                .all_reduce_into(&send[..], piece, SystemOperation::sum());
        }
        Ok(())
    }
}

/// MPI counts are 32-bit: a block must hold fewer than 2^31 values.
fn count_fits(op: &'static str, n: usize) -> Result<(), DistError> {
    if n > i32::MAX as usize {
        return Err(DistError::Shape {
            op,
            detail: format!("{n} values per rank exceed MPI's 32-bit count"),
        });
    }
    Ok(())
}
