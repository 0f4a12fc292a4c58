//! NCCL for data-parallel GPU ranks (cudarc's bindings; libnccl is loaded at run time, so a
//! machine without it only loses the data-parallel GPU path).
//!
//! - [`Nccl`]: one communicator; in-place sums of device buffers on a stream. The GPU engine
//!   makes its own from whatever host collectives the run has (`GpuEngine::all_reduce_grads`:
//!   rank 0's NCCL id broadcast through them) and sums the gradients with it.
//! - [`NcclHost`]: the trainer's [`Collective`] (losses, flags, ids: host values) over NCCL, for
//!   ranks started torchrun-style (`RANK`, `WORLD_SIZE`, `LOCAL_RANK`, `MASTER_ADDR`,
//!   `MASTER_PORT`): rank 0 makes NCCL's unique id and hands it to the other ranks over TCP at
//!   the master address ([`exchange_id`]: the only bytes that cross that socket; everything
//!   after is NCCL's).

use std::cell::RefCell;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

use cudarc::driver::{CudaSlice, DevicePtr};
use cudarc::nccl::{result as nr, sys as ns};
use ferrogpt_cuda::{CudaError, Gpu};
use ferrogpt_train::dist::{check_blocks, Collective, DistError, EnvRanks};

/// Bytes of NCCL's unique id.
pub const ID_BYTES: usize = 128;

/// How long ranks wait for each other while connecting.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(120);

fn nccl_err(during: &'static str) -> impl Fn(nr::NcclError) -> CudaError {
    move |e| CudaError::Driver {
        during: format!("NCCL {during}"),
        message: format!("{e:?}"),
    }
}

/// Whether libnccl can be loaded. Errors: it cannot (one line naming it).
pub fn available() -> Result<(), CudaError> {
    // SAFETY: only tries to dlopen the library and closes it again.
    if unsafe { ns::is_culib_present() } {
        Ok(())
    } else {
        Err(CudaError::NoLibrary {
            library: "libnccl (NCCL, for data-parallel GPU ranks)",
        })
    }
}

/// One NCCL communicator on one GPU.
pub struct Nccl {
    comm: ns::ncclComm_t,
    rank: usize,
    world: usize,
}

impl Nccl {
    /// A new unique id (rank 0 makes it; every rank joins with it).
    pub fn unique_id() -> Result<[u8; ID_BYTES], CudaError> {
        available()?;
        let id = nr::get_uniqueid().map_err(nccl_err("ncclGetUniqueId"))?;
        // c_char: i8 on x86-64, u8 on Arm.
        #[allow(clippy::unnecessary_cast)]
        Ok(id.internal.map(|c| c as u8))
    }

    /// Joins the communicator of `world` ranks named by `id` as `rank`, on `gpu`. Blocks until
    /// every rank has joined.
    pub fn init(
        gpu: &Gpu,
        id: &[u8; ID_BYTES],
        rank: usize,
        world: usize,
    ) -> Result<Self, CudaError> {
        available()?;
        gpu.context()
            .bind_to_thread()
            .map_err(|e| CudaError::Driver {
                during: "binding the context for NCCL".into(),
                message: e.to_string(),
            })?;
        let id = ns::ncclUniqueId {
            internal: id.map(|b| b as ::core::ffi::c_char),
        };
        let mut comm = std::ptr::null_mut();
        // SAFETY: `comm` is a valid out-pointer; NCCL copies the id.
        unsafe { nr::comm_init_rank(&mut comm, world as i32, id, rank as i32) }
            .map_err(nccl_err("ncclCommInitRank"))?;
        Ok(Nccl { comm, rank, world })
    }

    /// This rank, 0 to `world - 1`.
    pub fn rank(&self) -> usize {
        self.rank
    }

    /// The number of ranks in the communicator.
    pub fn world(&self) -> usize {
        self.world
    }

    /// Sums `count` values of `dtype` at device address `ptr` across the ranks, in place, on
    /// `stream` (asynchronous, like a kernel launch).
    ///
    /// # Safety
    /// `ptr` must address `count` values of `dtype` on this communicator's GPU, valid until
    /// the stream has passed this point.
    pub unsafe fn all_reduce_sum(
        &self,
        ptr: u64,
        count: usize,
        dtype: ns::ncclDataType_t,
        stream: cudarc::driver::sys::CUstream,
    ) -> Result<(), CudaError> {
        let p = ptr as *mut ::core::ffi::c_void;
        nr::all_reduce(
            p,
            p,
            count,
            dtype,
            ns::ncclRedOp_t::ncclSum,
            self.comm,
            stream as ns::cudaStream_t,
        )
        .map(|_| ())
        .map_err(nccl_err("ncclAllReduce"))
    }
}

impl Drop for Nccl {
    fn drop(&mut self) {
        // Abort, not destroy: destroying waits for work in flight, which a dead peer never
        // finishes; at the end of a run there is none, and both free the communicator.
        // SAFETY: the communicator was made by comm_init_rank and is freed once.
        let _ = unsafe { nr::comm_abort(self.comm) };
    }
}

/// Rank 0 makes NCCL's id and sends it to each other rank over TCP at `ranks.master`; the
/// others connect (retrying until the timeout) and read it.
pub fn exchange_id(ranks: &EnvRanks) -> Result<[u8; ID_BYTES], DistError> {
    let launch = |what: String| DistError::Launch(what);
    let deadline = Instant::now() + CONNECT_TIMEOUT;
    if ranks.rank == 0 {
        let id = Nccl::unique_id().map_err(|e| launch(e.to_string()))?;
        let listener = TcpListener::bind(&ranks.master).map_err(|e| {
            launch(format!(
                "rank 0 cannot listen at MASTER_ADDR:MASTER_PORT = {}: {e}",
                ranks.master
            ))
        })?;
        listener
            .set_nonblocking(true)
            .map_err(|e| launch(e.to_string()))?;
        let mut served = 0;
        while served + 1 < ranks.world {
            match listener.accept() {
                Ok((mut s, _)) => {
                    s.set_nonblocking(false)
                        .map_err(|e| launch(e.to_string()))?;
                    s.write_all(&id)
                        .map_err(|e| launch(format!("sending NCCL's id: {e}")))?;
                    served += 1;
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    if Instant::now() > deadline {
                        return Err(launch(format!(
                            "rank 0: only {served} of {} other ranks connected to {} within {} s",
                            ranks.world - 1,
                            ranks.master,
                            CONNECT_TIMEOUT.as_secs()
                        )));
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(e) => return Err(launch(format!("rank 0 accepting ranks: {e}"))),
            }
        }
        Ok(id)
    } else {
        loop {
            match TcpStream::connect(&ranks.master) {
                Ok(mut s) => {
                    let mut id = [0u8; ID_BYTES];
                    s.set_read_timeout(Some(CONNECT_TIMEOUT))
                        .map_err(|e| launch(e.to_string()))?;
                    s.read_exact(&mut id).map_err(|e| {
                        launch(format!(
                            "rank {}: reading NCCL's id from {}: {e}",
                            ranks.rank, ranks.master
                        ))
                    })?;
                    return Ok(id);
                }
                Err(e) if Instant::now() > deadline => {
                    return Err(launch(format!(
                        "rank {}: cannot reach rank 0 at {} within {} s: {e}",
                        ranks.rank,
                        ranks.master,
                        CONNECT_TIMEOUT.as_secs()
                    )))
                }
                Err(_) => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    }
}

/// The trainer's collectives over NCCL (host values staged through device memory), for ranks
/// started torchrun-style.
pub struct NcclHost {
    gpu: Gpu,
    nccl: Nccl,
    /// Device staging buffer, grown as needed.
    stage: RefCell<Option<CudaSlice<u8>>>,
}

impl NcclHost {
    /// Connects rank `ranks.rank` of `ranks.world` on GPU `ordinal`.
    pub fn connect(ranks: &EnvRanks, ordinal: usize) -> Result<Self, DistError> {
        let cuda = |e: CudaError| DistError::Launch(e.to_string());
        let gpu = Gpu::new(ordinal).map_err(cuda)?;
        available().map_err(cuda)?;
        let id = exchange_id(ranks)?;
        let nccl = Nccl::init(&gpu, &id, ranks.rank, ranks.world).map_err(cuda)?;
        Ok(NcclHost {
            gpu,
            nccl,
            stage: RefCell::new(None),
        })
    }

    /// Sums (or, for `broadcast`, copies from `root`) the bytes of `host` across the ranks
    /// through device memory.
    fn staged<T: Copy + Default>(
        &self,
        host: &mut [T],
        dtype: ns::ncclDataType_t,
        broadcast: Option<usize>,
    ) -> Result<(), DistError> {
        let bytes = std::mem::size_of_val(host);
        let err = |during: &str, e: String| DistError::Launch(format!("NCCL {during}: {e}"));
        let stream = self.gpu.stream();
        let mut stage = self.stage.borrow_mut();
        if stage.as_ref().is_none_or(|s| s.len() < bytes.max(1)) {
            *stage = Some(
                stream
                    .alloc_zeros::<u8>(bytes.max(256))
                    .map_err(|e| err("staging", e.to_string()))?,
            );
        }
        let buf = stage.as_mut().expect("allocated above");
        // SAFETY: `host` is plain data of `bytes` bytes, read as bytes.
        let raw = unsafe { std::slice::from_raw_parts_mut(host.as_mut_ptr() as *mut u8, bytes) };
        stream
            .memcpy_htod(&raw[..], &mut buf.slice_mut(..bytes))
            .map_err(|e| err("copy in", e.to_string()))?;
        let ptr = {
            let (p, _sync) = buf.device_ptr(stream);
            p
        };
        let cu = stream.cu_stream();
        // SAFETY: `ptr` addresses at least `bytes` bytes of this GPU's memory, alive while
        // `stage` is; the copy back below waits for the stream.
        unsafe {
            match broadcast {
                None => self
                    .nccl
                    .all_reduce_sum(ptr, host.len(), dtype, cu)
                    .map_err(|e| err("all-reduce", e.to_string()))?,
                Some(root) => {
                    let p = ptr as *mut ::core::ffi::c_void;
                    nr::broadcast(
                        p,
                        p,
                        bytes,
                        ns::ncclDataType_t::ncclUint8,
                        root as i32,
                        self.nccl.comm,
                        cu as ns::cudaStream_t,
                    )
                    .map_err(|e| err("broadcast", format!("{e:?}")))?;
                }
            }
        }
        stream
            .memcpy_dtoh(&buf.slice(..bytes), raw)
            .map_err(|e| err("copy out", e.to_string()))?;
        stream
            .synchronize()
            .map_err(|e| err("synchronize", e.to_string()))
    }
}

impl Collective for NcclHost {
    fn rank(&self) -> usize {
        self.nccl.rank
    }

    fn abort(&self, code: i32) -> ! {
        // SAFETY: the communicator stays valid; the process ends right after.
        let _ = unsafe { nr::comm_abort(self.nccl.comm) };
        std::process::exit(code)
    }

    fn world(&self) -> usize {
        self.nccl.world
    }

    fn describe(&self) -> String {
        let v = nr::get_nccl_version().map_or("?".into(), |v| {
            format!("{}.{}.{}", v / 10000, v / 100 % 100, v % 100)
        });
        format!("NCCL {v}, rank {} of {}", self.nccl.rank, self.nccl.world)
    }

    fn broadcast_bytes(&self, root: usize, buf: &mut [u8]) -> Result<(), DistError> {
        self.staged(buf, ns::ncclDataType_t::ncclUint8, Some(root))
    }

    fn all_reduce_sum_f32(&self, x: &mut [f32]) -> Result<(), DistError> {
        self.staged(x, ns::ncclDataType_t::ncclFloat32, None)
    }

    fn all_reduce_sum_f64(&self, x: &mut [f64]) -> Result<(), DistError> {
        self.staged(x, ns::ncclDataType_t::ncclFloat64, None)
    }

    fn reduce_scatter_sum_f32(&self, x: &[f32], out: &mut [f32]) -> Result<(), DistError> {
        check_blocks("reduce_scatter", x.len(), out.len(), self.world())?;
        // Host values are small here (the engines scatter device buffers themselves): sum all,
        // keep this rank's block.
        let mut all = x.to_vec();
        self.all_reduce_sum_f32(&mut all)?;
        let r = self.rank() * out.len();
        out.copy_from_slice(&all[r..r + out.len()]);
        Ok(())
    }

    fn all_gather_f32(&self, mine: &[f32], out: &mut [f32]) -> Result<(), DistError> {
        check_blocks("all_gather", out.len(), mine.len(), self.world())?;
        // Each rank contributes its block into zeros; the sum is the gathered buffer.
        out.fill(0.0);
        let r = self.rank() * mine.len();
        out[r..r + mine.len()].copy_from_slice(mine);
        self.all_reduce_sum_f32(out)
    }
}
