//! The unsafe boundary of the GPU model: typed views of device memory ([`DevPtr`], [`Buf`]),
//! and the kernel launches, copies and cuBLAS products they feed.
//!
//! A [`DevPtr`] is an address with an element type and a length; it is made only from a live
//! allocation (a [`Buf`], or `unsafe` [`DevPtr::from_raw`]), and the model keeps views beside
//! the buffer they view and drops both together (the activations are replaced by `ensure`
//! for a larger batch, as one). Copies and products take views and check their lengths, so
//! they are safe; [`Dev::launch`] takes raw [`Arg`]s and is `unsafe`: the typed wrappers in
//! `model/launch.rs`, one per kernel, are the only callers.
//!
//! All work runs on the one stream of the [`Gpu`]; a host read ([`Dev::dtoh`]) waits for it.

use std::cell::RefCell;
use std::collections::HashMap;
use std::ffi::c_void;
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Instant;

use cudarc::cublas::sys::{cublasComputeType_t, cublasGemmAlgo_t, cublasOperation_t, cudaDataType};
use cudarc::driver::{result, CudaFunction, CudaModule, CudaSlice};
use cudarc::nvrtc::{compile_ptx_with_opts, CompileOptions};
use ferrogpt_cuda::{CudaError, Gpu};

use crate::Dtype;

/// The kernel sources, pasted after `common.cuh` into one NVRTC program per dtype.
const SOURCES: [(&str, &str); 9] = [
    ("encoder.cu", include_str!("../kernels/encoder.cu")),
    ("layernorm.cu", include_str!("../kernels/layernorm.cu")),
    ("elementwise.cu", include_str!("../kernels/elementwise.cu")),
    ("rope.cu", include_str!("../kernels/rope.cu")),
    ("attention.cu", include_str!("../kernels/attention.cu")),
    (
        "attention_tc.cu",
        include_str!("../kernels/attention_tc.cu"),
    ),
    ("softmax_ce.cu", include_str!("../kernels/softmax_ce.cu")),
    ("optimizer.cu", include_str!("../kernels/optimizer.cu")),
    ("decode.cu", include_str!("../kernels/decode.cu")),
];
const COMMON: &str = include_str!("../kernels/common.cuh");

/// Head sizes the fused attention is instantiated for.
pub const HEAD_SIZES: [usize; 5] = [8, 16, 32, 64, 128];

const KERNELS: [&str; 26] = [
    "encoder_forward",
    "embed_step",
    "encoder_backward_wte",
    "encoder_backward_wpe",
    "layernorm_forward",
    "layernorm_backward",
    "rmsnorm_forward",
    "rmsnorm_backward",
    "col_partials",
    "reduce_partials",
    "add_bias",
    "bias_gelu_forward",
    "gelu_forward",
    "gelu_backward",
    "swiglu_forward",
    "swiglu_backward",
    "rope",
    "residual_forward",
    "dropout_backward",
    "to_floatx",
    "softmax_ce",
    "adamw",
    "sgd",
    "sumsq_partial",
    "kv_append",
    "attn_decode",
];

/// 1-D kernels whose threads take one 16-byte vector each (VEC elements): `launch_n` sizes
/// their grid by vectors.
const VECTOR_KERNELS: [&str; 3] = ["gelu_forward", "gelu_backward", "dropout_backward"];

/// The whole program for one dtype, as NVRTC sees it.
pub fn program(dtype: Dtype) -> String {
    let mut s = format!(
        "#define FERRO_BF16 {}\n#line 1 \"common.cuh\"\n{COMMON}\n",
        (dtype == Dtype::Bf16) as u8
    );
    for (file, src) in SOURCES {
        s.push_str(&format!("#line 1 \"{file}\"\n{src}\n"));
    }
    s
}

/// Compiles the model's kernels for `dtype` and compute capability `cc` to PTX (no GPU needed).
pub fn compile(dtype: Dtype, cc: (i32, i32)) -> Result<String, CudaError> {
    // cudarc panics when it cannot load NVRTC; ask first.
    // SAFETY: only tries to dlopen NVRTC.
    if !unsafe { cudarc::nvrtc::sys::is_culib_present() } {
        return Err(CudaError::NoLibrary {
            library: "libnvrtc (NVRTC)",
        });
    }
    let opts = CompileOptions {
        options: vec![
            format!("--gpu-architecture=compute_{}{}", cc.0, cc.1),
            "--std=c++17".to_string(),
            "-lineinfo".to_string(),
        ],
        name: Some(format!("gpt-{}.cu", dtype.name())),
        ..Default::default()
    };
    compile_ptx_with_opts(program(dtype), opts)
        .map(|p| p.to_src())
        .map_err(|e| CudaError::Compile {
            file: "crates/gpu/kernels/*.cu",
            log: match e {
                cudarc::nvrtc::CompileError::CompileError { log, .. } => {
                    log.to_string_lossy().into_owned()
                }
                other => format!("{other:?}"),
            },
        })
}

fn driver(during: &str) -> impl FnOnce(result::DriverError) -> CudaError + '_ {
    move |e| CudaError::Driver {
        during: during.to_string(),
        message: e.to_string(),
    }
}

/// Element types of device memory, with their size in bytes under the model's [`Dtype`].
pub trait Elem {
    fn size(dtype: Dtype) -> usize;
}

/// The model's activation type, `floatX` in the kernels: f32 in fp32, bf16 (stored as u16
/// bits) in bf16.
pub enum X {}

impl Elem for X {
    fn size(dtype: Dtype) -> usize {
        dtype.size()
    }
}

macro_rules! fixed_elem {
    ($($t:ty),*) => {$(
        impl Elem for $t {
            fn size(_: Dtype) -> usize {
                std::mem::size_of::<$t>()
            }
        }
    )*};
}
fixed_elem!(f32, i32, u32, u8);

/// A typed view of device memory: `len` elements of `T` from `addr`, `size` bytes each.
/// Copy, without a lifetime: whoever holds one keeps the allocation it views alive (see the
/// module doc).
pub struct DevPtr<T> {
    addr: u64,
    len: usize,
    size: usize,
    _t: PhantomData<T>,
}

impl<T> Clone for DevPtr<T> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<T> Copy for DevPtr<T> {}

impl<T: Elem> DevPtr<T> {
    /// A view of `len` elements of `T` (as laid out under `dtype`) at `addr`.
    ///
    /// # Safety
    /// Every launch or copy given this view (or a slice of it) must find the `len` elements
    /// inside one live allocation of the model's GPU.
    pub unsafe fn from_raw(addr: u64, len: usize, dtype: Dtype) -> DevPtr<T> {
        DevPtr {
            addr,
            len,
            size: T::size(dtype),
            _t: PhantomData,
        }
    }
}

impl DevPtr<f32> {
    /// The same memory as floatX, which is f32 in fp32 (None in bf16).
    pub fn as_x(self, dtype: Dtype) -> Option<DevPtr<X>> {
        dtype.f32_storage().then_some(DevPtr {
            addr: self.addr,
            len: self.len,
            size: self.size,
            _t: PhantomData,
        })
    }
}

impl<T> DevPtr<T> {
    /// Elements in the view.
    pub fn len(self) -> usize {
        self.len
    }

    /// Bytes in the view.
    pub fn bytes(self) -> usize {
        self.len * self.size
    }

    /// The raw address, for FFI calls that take one (`unsafe` there).
    pub fn addr(self) -> u64 {
        self.addr
    }

    /// Elements `start..start + len`. Panics beyond the view.
    pub fn slice(self, start: usize, len: usize) -> DevPtr<T> {
        assert!(
            start + len <= self.len,
            "device view {start}..{} of {} elements",
            start + len,
            self.len
        );
        DevPtr {
            addr: self.addr + (start * self.size) as u64,
            len,
            ..self
        }
    }

    /// This view as a kernel argument the kernel reads or writes `len` elements of. Panics
    /// if the view is shorter.
    pub fn arg(self, len: usize) -> Arg {
        assert!(
            len <= self.len,
            "a kernel needs {len} elements of a {}-element device view",
            self.len
        );
        Arg::P(self.addr)
    }
}

/// A device allocation of `len` elements of `T` (zeroed), and its view.
pub struct Buf<T> {
    _mem: CudaSlice<u8>,
    ptr: DevPtr<T>,
}

impl<T: Elem> Buf<T> {
    pub fn new(dev: &Dev, len: usize) -> Result<Buf<T>, CudaError> {
        let (mem, addr) = dev.alloc(len * T::size(dev.dtype))?;
        // SAFETY: the allocation holds len elements and lives as long as the Buf, which its
        // owner keeps beside every view it hands out.
        let ptr = unsafe { DevPtr::from_raw(addr, len, dev.dtype) };
        Ok(Buf { _mem: mem, ptr })
    }

    pub fn ptr(&self) -> DevPtr<T> {
        self.ptr
    }
}

/// One kernel argument, as the kernel declares it.
#[derive(Clone, Copy, Debug)]
pub enum Arg {
    /// A device address (`T*`); made from a view by [`DevPtr::arg`].
    P(u64),
    /// `int`
    I(usize),
    /// `float`
    F(f32),
    /// `size_t` or `u64`
    U(u64),
}

/// Stream work captured once by [`Dev::capture`] and replayed by [`Dev::replay`]; it reads
/// and writes the buffers it was captured with, which must outlive it.
pub struct Graph(cudarc::driver::CudaGraph);

/// A row-major matrix operand of [`Dev::gemm`]: a view, its element type (f32, or the
/// model's floatX), transposed or not.
#[derive(Clone, Copy)]
pub struct Mat {
    ptr: u64,
    len: usize,
    f32: bool,
    t: bool,
}

impl Mat {
    /// A floatX matrix (activations, weights).
    pub fn x(p: DevPtr<X>) -> Mat {
        Mat {
            ptr: p.addr,
            len: p.len,
            f32: false,
            t: false,
        }
    }

    /// An f32 matrix (weight gradients).
    pub fn f32(p: DevPtr<f32>) -> Mat {
        Mat {
            ptr: p.addr,
            len: p.len,
            f32: true,
            t: false,
        }
    }

    /// The same matrix, read transposed.
    pub fn t(self) -> Mat {
        Mat { t: true, ..self }
    }
}

/// The GPU, the compiled kernels, and raw launches.
pub struct Dev {
    pub gpu: Gpu,
    pub dtype: Dtype,
    _module: Arc<CudaModule>,
    funcs: HashMap<String, CudaFunction>,
    /// `FERROGPT_GPU_PROFILE=1`: every launch is synchronised and timed, per name
    /// (seconds, calls). Slows the run down; for finding where the time goes.
    profile: Option<RefCell<HashMap<String, (f64, u64)>>>,
}

/// The PTX of the model's kernels for (dtype, cc), from the disk cache when an earlier run
/// compiled the same source with the same options, else from NVRTC (then cached). The cache
/// is `$FERROGPT_CACHE`, else `$XDG_CACHE_HOME/ferrogpt`, else `~/.cache/ferrogpt`; a file
/// that cannot be written only costs the next start a compilation.
fn cached_ptx(dtype: Dtype, cc: (i32, i32)) -> Result<String, CudaError> {
    use std::hash::{Hash, Hasher};
    let dir = std::env::var_os("FERROGPT_CACHE")
        .map(std::path::PathBuf::from)
        .or_else(|| {
            std::env::var_os("XDG_CACHE_HOME").map(|d| std::path::Path::new(&d).join("ferrogpt"))
        })
        .or_else(|| {
            std::env::var_os("HOME").map(|d| std::path::Path::new(&d).join(".cache/ferrogpt"))
        });
    let mut h = std::collections::hash_map::DefaultHasher::new();
    (program(dtype), cc, env!("CARGO_PKG_VERSION")).hash(&mut h);
    let file = dir.map(|d| {
        d.join(format!(
            "gpt-{}-sm{}{}-{:016x}.ptx",
            dtype.name(),
            cc.0,
            cc.1,
            h.finish()
        ))
    });
    if let Some(ptx) = file.as_ref().and_then(|f| std::fs::read_to_string(f).ok()) {
        return Ok(ptx);
    }
    let ptx = compile(dtype, cc)?;
    if let Some(f) = &file {
        if f.parent()
            .is_some_and(|d| std::fs::create_dir_all(d).is_ok())
        {
            let _ = ferrogpt_core::fsutil::write_atomic(f, ptx.as_bytes());
        }
    }
    Ok(ptx)
}

impl Dev {
    pub fn new(gpu: Gpu, dtype: Dtype) -> Result<Dev, CudaError> {
        let ptx = cached_ptx(dtype, gpu.compute_capability())?;
        let module = gpu
            .context()
            .load_module(cudarc::nvrtc::Ptx::from_src(ptx))
            .map_err(driver("loading the model's kernels"))?;
        let mut names: Vec<String> = KERNELS.iter().map(|s| s.to_string()).collect();
        names.push("sum_final".into());
        if dtype == Dtype::Bf16 {
            for k in [
                "flash_tc_forward",
                "flash_tc_forward_gqa",
                "flash_tc_delta",
                "flash_tc_backward_dq",
                "flash_tc_backward_dkdv",
            ] {
                names.push(k.into());
            }
        }
        for hs in HEAD_SIZES {
            for k in ["flash_forward", "flash_backward_dq", "flash_backward_dkdv"] {
                names.push(format!("{k}_{hs}"));
            }
        }
        let mut funcs = HashMap::new();
        for n in names {
            let f = module
                .load_function(&n)
                .map_err(driver("finding a kernel"))?;
            funcs.insert(n, f);
        }
        let profile = std::env::var("FERROGPT_GPU_PROFILE")
            .is_ok_and(|v| v == "1")
            .then(|| RefCell::new(HashMap::new()));
        Ok(Dev {
            gpu,
            dtype,
            _module: module,
            funcs,
            profile,
        })
    }

    /// Runs `f`, timing it under `name` when profiling.
    pub fn timed(
        &self,
        name: &str,
        f: impl FnOnce() -> Result<(), CudaError>,
    ) -> Result<(), CudaError> {
        let Some(p) = &self.profile else { return f() };
        self.gpu.synchronize()?;
        let t0 = Instant::now();
        f()?;
        self.gpu.synchronize()?;
        let mut map = p.borrow_mut();
        let e = map.entry(name.to_string()).or_insert((0.0, 0));
        e.0 += t0.elapsed().as_secs_f64();
        e.1 += 1;
        Ok(())
    }

    /// The profile so far, (name, seconds, calls), longest first; empty unless profiling.
    pub fn profile(&self) -> Vec<(String, f64, u64)> {
        let Some(p) = &self.profile else {
            return Vec::new();
        };
        let mut v: Vec<_> = p
            .borrow()
            .iter()
            .map(|(k, &(s, n))| (k.clone(), s, n))
            .collect();
        v.sort_by(|a, b| b.1.total_cmp(&a.1));
        v
    }

    /// Forgets the profile so far (after warm-up).
    pub fn reset_profile(&self) {
        if let Some(p) = &self.profile {
            p.borrow_mut().clear();
        }
    }

    fn stream(&self) -> cudarc::driver::sys::CUstream {
        self.gpu.stream().cu_stream()
    }

    /// The stream, for other CUDA libraries (cuBLASLt).
    pub fn cu_stream(&self) -> cudarc::driver::sys::CUstream {
        self.stream()
    }

    /// Launches kernel `name` on grid × block threads.
    ///
    /// # Safety
    /// As [`Dev::launch2`].
    pub unsafe fn launch(
        &self,
        name: &str,
        grid: (usize, usize),
        block: usize,
        args: &[Arg],
    ) -> Result<(), CudaError> {
        // SAFETY: the caller's promise, passed on.
        unsafe { self.launch2(name, grid, (block, 1), args) }
    }

    /// Launches kernel `name` on a grid of 2-D blocks (block.0 × block.1 threads).
    ///
    /// # Safety
    /// `args` match the kernel's signature in `kernels/*.cu`, and every address in them
    /// covers what the kernel reads and writes on this grid, in memory that lives until the
    /// stream has run the kernel.
    pub unsafe fn launch2(
        &self,
        name: &str,
        grid: (usize, usize),
        block: (usize, usize),
        args: &[Arg],
    ) -> Result<(), CudaError> {
        let f = self.funcs.get(name).ok_or_else(|| CudaError::Driver {
            during: "launching".into(),
            message: format!("no kernel named {name}"),
        })?;
        // Every argument in 8 bytes, little-endian: a 4-byte `int`/`float` parameter reads the
        // low half.
        let mut vals: Vec<u64> = args
            .iter()
            .map(|a| match *a {
                Arg::P(p) | Arg::U(p) => Ok(p),
                Arg::I(i) => i32::try_from(i).map(|v| v as u32 as u64).map_err(|_| {
                    CudaError::Input(format!(
                        "{name}: a size of {i} does not fit the kernel's int"
                    ))
                }),
                Arg::F(x) => Ok(x.to_bits() as u64),
            })
            .collect::<Result<_, _>>()?;
        let mut ptrs: Vec<*mut c_void> = vals
            .iter_mut()
            .map(|v| v as *mut u64 as *mut c_void)
            .collect();
        self.timed(name, || {
            // SAFETY: the caller's promise (the arguments match the kernel and its memory);
            // `ptrs` point at `vals`, alive for the call.
            unsafe {
                result::launch_kernel(
                    f.cu_function(),
                    (grid.0 as u32, grid.1 as u32, 1),
                    (block.0 as u32, block.1 as u32, 1),
                    0,
                    self.stream(),
                    &mut ptrs,
                )
            }
            .map_err(driver(name))
        })
    }

    /// A 1-D launch over n elements with a grid-stride kernel.
    ///
    /// # Safety
    /// As [`Dev::launch2`].
    pub unsafe fn launch_n(&self, name: &str, n: usize, args: &[Arg]) -> Result<(), CudaError> {
        let n = if VECTOR_KERNELS.contains(&name) {
            n.div_ceil(16 / self.dtype.size())
        } else {
            n
        };
        let blocks = n.div_ceil(256).clamp(1, 65_535 * 8);
        // SAFETY: the caller's promise, passed on.
        unsafe { self.launch(name, (blocks, 1), 256, args) }
    }

    /// Records the stream work `body` issues into a CUDA graph instead of running it, and
    /// returns the graph, ready to replay with [`Dev::replay`]. Kernel arguments and addresses
    /// are fixed at capture: work that differs between replays must read its varying values
    /// from device memory. Errors: while profiling (each launch is timed with a host
    /// synchronisation, which a capture cannot hold), `body`'s own, or the driver's (a call
    /// inside `body` that a capture does not allow); the stream leaves capture mode either way.
    pub fn capture(
        &self,
        body: impl FnOnce() -> Result<(), CudaError>,
    ) -> Result<Graph, CudaError> {
        use cudarc::driver::sys::{CUgraphInstantiate_flags, CUstreamCaptureMode};
        if self.profile.is_some() {
            return Err(CudaError::Input(
                "no CUDA graphs while profiling (FERROGPT_GPU_PROFILE=1)".into(),
            ));
        }
        let stream = self.gpu.stream();
        stream
            .begin_capture(CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_THREAD_LOCAL)
            .map_err(driver("starting a graph capture"))?;
        let ran = body();
        let graph = stream.end_capture(CUgraphInstantiate_flags(0));
        ran?;
        let graph = graph.map_err(driver("capturing a graph"))?;
        graph.map(Graph).ok_or_else(|| CudaError::Driver {
            during: "capturing a graph".into(),
            message: "the capture recorded nothing".into(),
        })
    }

    /// Runs a captured graph on the stream (asynchronously, like a launch).
    pub fn replay(&self, graph: &Graph) -> Result<(), CudaError> {
        graph.0.launch().map_err(driver("replaying a graph"))
    }

    /// Allocates `bytes` of device memory (zeroed) and returns it with its address.
    pub fn alloc(&self, bytes: usize) -> Result<(CudaSlice<u8>, u64), CudaError> {
        let s = self
            .gpu
            .stream()
            .alloc_zeros::<u8>(bytes.max(256))
            .map_err(driver("allocating"))?;
        let p = {
            let (p, _sync) = cudarc::driver::DevicePtr::device_ptr(&s, self.gpu.stream());
            p
        };
        Ok((s, p))
    }

    /// Copies host values to the start of `dst` (as raw bytes: f32 or u16 bits for floatX).
    /// Panics if they do not fit.
    pub fn htod<E, T: Copy>(&self, dst: DevPtr<E>, src: &[T]) -> Result<(), CudaError> {
        assert!(
            std::mem::size_of_val(src) <= dst.bytes(),
            "host copy beyond its device view"
        );
        // SAFETY: dst has room for src (checked); the copy from pageable memory completes
        // before the call returns.
        unsafe { result::memcpy_htod_async(dst.addr, src, self.stream()) }
            .map_err(driver("copying to the device"))
    }

    /// Fills `dst` from the start of `src`, waiting for the stream. Panics if `src` is shorter.
    pub fn dtoh<E, T: Copy>(&self, dst: &mut [T], src: DevPtr<E>) -> Result<(), CudaError> {
        assert!(
            std::mem::size_of_val(dst) <= src.bytes(),
            "host copy beyond its device view"
        );
        // SAFETY: src holds at least dst's bytes (checked).
        unsafe { result::memcpy_dtoh_async(dst, src.addr, self.stream()) }
            .map_err(driver("copying from the device"))?;
        self.gpu.synchronize()
    }

    /// Sets every byte of `dst` to zero.
    pub fn zero<E>(&self, dst: DevPtr<E>) -> Result<(), CudaError> {
        // SAFETY: dst's bytes are a live view.
        unsafe { result::memset_d8_async(dst.addr, 0, dst.bytes(), self.stream()) }
            .map_err(driver("zeroing"))
    }

    /// Row-major `C (m×n) = beta·C + op(A) (m×k) · op(B) (k×n)` in cuBLAS, f32 accumulation.
    /// A and B are stored row-major as (m×k) and (k×n), or transposed ((k×m), (n×k)) when
    /// their `t` is set; all three contiguous. `f32` picks f32 storage, else the model's
    /// floatX (f32 or bf16). Panics if a view is smaller than its shape.
    #[allow(clippy::too_many_arguments)]
    pub fn gemm(
        &self,
        c: Mat,
        a: Mat,
        b: Mat,
        m: usize,
        n: usize,
        k: usize,
        beta: f32,
    ) -> Result<(), CudaError> {
        for (x, elems, what) in [(&c, m * n, "C"), (&a, m * k, "A"), (&b, k * n, "B")] {
            assert!(
                elems <= x.len,
                "gemm {m}x{n}x{k}: {what} needs {elems} elements, its view has {}",
                x.len
            );
        }
        let ty = |x: &Mat| {
            if x.f32 || self.dtype.f32_storage() {
                cudaDataType::CUDA_R_32F
            } else {
                cudaDataType::CUDA_R_16BF
            }
        };
        let op = |t: bool| {
            if t {
                cublasOperation_t::CUBLAS_OP_T
            } else {
                cublasOperation_t::CUBLAS_OP_N
            }
        };
        // Row-major C = op(A)·op(B) is column-major Cᵀ = op(B)ᵀ·op(A)ᵀ; a row-major buffer
        // read column-major is its transpose, so B goes first with the same op flags.
        let ldb = if b.t { k } else { n };
        let lda = if a.t { m } else { k };
        let alpha = 1.0f32;
        // TF32 tensor cores for all-f32 products in tf32; bf16 products accumulate in f32.
        let compute = if self.dtype == Dtype::Tf32 {
            cublasComputeType_t::CUBLAS_COMPUTE_32F_FAST_TF32
        } else {
            cublasComputeType_t::CUBLAS_COMPUTE_32F
        };
        let name = format!(
            "gemm {m}x{n}x{k}{}{}",
            if a.t { " At" } else { "" },
            if b.t { " Bt" } else { "" }
        );
        self.timed(&name, || {
            // SAFETY: the views hold the stated shapes (checked above); alpha and beta live on
            // the host for the call.
            unsafe {
                cudarc::cublas::result::gemm_ex(
                    self.gpu.blas_handle(),
                    op(b.t),
                    op(a.t),
                    n as i32,
                    m as i32,
                    k as i32,
                    &alpha as *const f32 as *const c_void,
                    b.ptr as *const c_void,
                    ty(&b),
                    ldb as i32,
                    a.ptr as *const c_void,
                    ty(&a),
                    lda as i32,
                    &beta as *const f32 as *const c_void,
                    c.ptr as *mut c_void,
                    ty(&c),
                    n as i32,
                    compute,
                    cublasGemmAlgo_t::CUBLAS_GEMM_DEFAULT,
                )
            }
            .map_err(|e| CudaError::Cublas {
                during: "cublasGemmEx".into(),
                message: e.to_string(),
            })
        })
    }
}
