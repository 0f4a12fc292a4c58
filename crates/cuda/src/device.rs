//! The GPU: context, stream, cuBLAS handle, NVRTC-compiled kernels (cached), and the one
//! `matmul` entry point that every level goes through.

use std::collections::HashMap;
use std::ffi::c_void;
use std::sync::{Arc, Mutex};

use cudarc::cublas::{self, CudaBlas};
use cudarc::driver::sys::{CUevent_flags, CUfunction_attribute};
use cudarc::driver::{
    CudaContext, CudaFunction, CudaModule, CudaSlice, CudaStream, DevicePtr, DevicePtrMut,
    DriverError, LaunchConfig, PushKernelArg,
};
use cudarc::nvrtc::{compile_ptx_with_opts, CompileOptions, Ptx};

use crate::ladder::{Input, Level};
use crate::{reference, CudaError};

const COMMON: &str = include_str!("../kernels/common.cuh");
const CONVERT: &str = include_str!("../kernels/convert.cu");

fn driver(during: &str) -> impl FnOnce(DriverError) -> CudaError + '_ {
    move |e| CudaError::Driver {
        during: during.to_string(),
        message: e.to_string(),
    }
}

fn blas(during: &str) -> impl FnOnce(cublas::result::CublasError) -> CudaError + '_ {
    move |e| CudaError::Cublas {
        during: during.to_string(),
        message: e.to_string(),
    }
}

/// A or B as the level reads it.
#[derive(Clone, Copy)]
pub enum Operand<'a> {
    /// f32 values, for the levels whose [`Level::input`] is [`Input::F32`].
    F32(&'a CudaSlice<f32>),
    /// bf16 bit patterns.
    Bf16(&'a CudaSlice<u16>),
}

impl Operand<'_> {
    fn input(&self) -> Input {
        match self {
            Operand::F32(_) => Input::F32,
            Operand::Bf16(_) => Input::Bf16,
        }
    }
    fn len(&self) -> usize {
        match self {
            Operand::F32(s) => s.len(),
            Operand::Bf16(s) => s.len(),
        }
    }
}

/// One GPU, ready for matrix products: a context, one stream, a cuBLAS handle on that stream,
/// and the kernels compiled so far (each `.cu` file is compiled by NVRTC once per `Gpu`).
pub struct Gpu {
    ctx: Arc<CudaContext>,
    stream: Arc<CudaStream>,
    blas: CudaBlas,
    name: String,
    cc: (i32, i32),
    modules: Mutex<HashMap<&'static str, Arc<CudaModule>>>,
}

impl Gpu {
    /// Opens GPU `ordinal`. Errors (never panics) when the driver, NVRTC or cuBLAS cannot be
    /// loaded, when there is no such GPU, or when the driver refuses.
    pub fn new(ordinal: usize) -> Result<Gpu, CudaError> {
        // cudarc panics when it cannot load a library; ask first.
        // SAFETY: these only try to dlopen the libraries and close them again.
        unsafe {
            if !cudarc::driver::sys::is_culib_present() {
                return Err(CudaError::NoLibrary {
                    library: "libcuda (the NVIDIA driver)",
                });
            }
            if !cudarc::nvrtc::sys::is_culib_present() {
                return Err(CudaError::NoLibrary {
                    library: "libnvrtc (NVRTC)",
                });
            }
            if !cudarc::cublas::sys::is_culib_present() {
                return Err(CudaError::NoLibrary {
                    library: "libcublas (cuBLAS)",
                });
            }
        }
        let count = match CudaContext::device_count() {
            Ok(c) => c.max(0) as usize,
            Err(e) if e.0 == cudarc::driver::sys::CUresult::CUDA_ERROR_NO_DEVICE => 0,
            Err(e) => return Err(driver("cuInit")(e)),
        };
        if ordinal >= count {
            return Err(CudaError::NoDevice { ordinal, count });
        }
        let ctx = CudaContext::new(ordinal).map_err(driver("creating the context"))?;
        // One stream, no cross-stream bookkeeping: launches stay plain.
        // SAFETY: every buffer of a `Gpu` is used on its one stream only.
        unsafe { ctx.disable_event_tracking() };
        // A stream of our own, not the legacy default stream: CUDA graphs cannot be captured
        // on that one (decoding captures its steps).
        let stream = ctx.new_stream().map_err(driver("creating a stream"))?;
        let blas = CudaBlas::new(stream.clone()).map_err(blas("creating the handle"))?;
        let name = ctx.name().map_err(driver("reading the device name"))?;
        let cc = ctx
            .compute_capability()
            .map_err(driver("reading the compute capability"))?;
        Ok(Gpu {
            ctx,
            stream,
            blas,
            name,
            cc,
            modules: Mutex::new(HashMap::new()),
        })
    }

    /// Number of CUDA GPUs, or the reason there are none to be had.
    pub fn device_count() -> Result<usize, CudaError> {
        // SAFETY: only tries to dlopen the driver.
        if !unsafe { cudarc::driver::sys::is_culib_present() } {
            return Err(CudaError::NoLibrary {
                library: "libcuda (the NVIDIA driver)",
            });
        }
        match CudaContext::device_count() {
            Ok(c) => Ok(c.max(0) as usize),
            Err(e) if e.0 == cudarc::driver::sys::CUresult::CUDA_ERROR_NO_DEVICE => Ok(0),
            Err(e) => Err(driver("cuInit")(e)),
        }
    }

    /// The device's name, e.g. "NVIDIA H100 80GB HBM3".
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Compute capability (major, minor), e.g. (9, 0) on Hopper.
    pub fn compute_capability(&self) -> (i32, i32) {
        self.cc
    }

    /// The stream all work of this `Gpu` runs on.
    pub fn stream(&self) -> &Arc<CudaStream> {
        &self.stream
    }

    /// The CUDA context (to load other modules on this GPU).
    pub fn context(&self) -> &Arc<CudaContext> {
        &self.ctx
    }

    /// The cuBLAS handle, bound to [`Gpu::stream`].
    pub fn blas_handle(&self) -> cublas::sys::cublasHandle_t {
        *self.blas.handle()
    }

    /// Copies f32 values to a new device buffer.
    pub fn upload(&self, x: &[f32]) -> Result<CudaSlice<f32>, CudaError> {
        self.stream
            .clone_htod(x)
            .map_err(driver("copying to the device"))
    }

    /// Rounds f32 values to bf16 on the host and copies the bits to a new device buffer.
    pub fn upload_bf16(&self, x: &[f32]) -> Result<CudaSlice<u16>, CudaError> {
        let bits: Vec<u16> = x.iter().map(|&v| reference::bf16_bits(v)).collect();
        self.stream
            .clone_htod(&bits)
            .map_err(driver("copying to the device"))
    }

    /// Copies a device buffer back (waits for the stream).
    pub fn download(&self, x: &CudaSlice<f32>) -> Result<Vec<f32>, CudaError> {
        self.stream
            .clone_dtoh(x)
            .map_err(driver("copying from the device"))
    }

    /// A new device buffer of `len` f32 zeros.
    pub fn zeros(&self, len: usize) -> Result<CudaSlice<f32>, CudaError> {
        self.stream.alloc_zeros(len).map_err(driver("allocating"))
    }

    /// bf16 copy (round to nearest even) of a device f32 buffer, made on the device.
    pub fn to_bf16(&self, x: &CudaSlice<f32>) -> Result<CudaSlice<u16>, CudaError> {
        let f = self.function("convert.cu", CONVERT, "f32_to_bf16")?;
        let n = x.len();
        let mut y = self
            .stream
            .alloc_zeros::<u16>(n)
            .map_err(driver("allocating"))?;
        let cfg = LaunchConfig {
            grid_dim: (1024, 1, 1),
            block_dim: (256, 1, 1),
            shared_mem_bytes: 0,
        };
        let mut b = self.stream.launch_builder(&f);
        b.arg(x).arg(&mut y).arg(&n);
        // SAFETY: the kernel's signature is (const float*, unsigned short*, size_t), n elements.
        unsafe { b.launch(cfg) }.map_err(driver("launching f32_to_bf16"))?;
        Ok(y)
    }

    /// Waits until all work queued on the stream has finished; reports asynchronous errors.
    pub fn synchronize(&self) -> Result<(), CudaError> {
        self.stream.synchronize().map_err(driver("synchronizing"))
    }

    /// Loads a kernel, compiling its file with NVRTC on first use.
    fn function(
        &self,
        file: &'static str,
        src: &str,
        name: &str,
    ) -> Result<CudaFunction, CudaError> {
        let mut modules = self.modules.lock().unwrap_or_else(|p| p.into_inner());
        if !modules.contains_key(file) {
            let ptx = compile(file, src, self.cc)?;
            let module = self
                .ctx
                .load_module(ptx)
                .map_err(driver("loading a module"))?;
            modules.insert(file, module);
        }
        modules[file]
            .load_function(name)
            .map_err(driver("finding a kernel"))
    }

    /// Whether this GPU can run `level` (an error that says why not).
    pub fn supports(&self, level: Level) -> Result<(), CudaError> {
        match level.needs_cc() {
            Some(need) if need != self.cc => Err(CudaError::Unsupported {
                level: level.name(),
                need,
                have: self.cc,
            }),
            _ => Ok(()),
        }
    }

    /// Compiles every kernel of the ladder now (so that timings exclude NVRTC).
    pub fn compile_all(&self) -> Result<(), CudaError> {
        for level in Level::ALL {
            if self.supports(level).is_err() {
                continue;
            }
            if let Some(k) = level.kernel() {
                self.function(k.file, k.src, k.name)?;
            }
        }
        self.function("convert.cu", CONVERT, "f32_to_bf16")
            .map(|_| ())
    }

    /// The compiler's resource report for each of our kernels, one line each: registers per
    /// thread, static shared memory, and local memory (spills; should be 0).
    pub fn kernel_report(&self) -> Result<String, CudaError> {
        let mut out = String::new();
        for level in Level::ALL {
            let Some(k) = level.kernel().filter(|_| self.supports(level).is_ok()) else {
                continue;
            };
            let edge = format!("{}_edge", k.name);
            let names: Vec<&str> = if k.has_edge {
                vec![k.name, &edge]
            } else {
                vec![k.name]
            };
            for name in names {
                let f = self.function(k.file, k.src, name)?;
                let regs = f.num_regs().map_err(driver("reading attributes"))?;
                let smem = f
                    .shared_size_bytes()
                    .map_err(driver("reading attributes"))?;
                let local = f.local_size_bytes().map_err(driver("reading attributes"))?;
                out += &format!(
                    "{name:<30} {regs:>4} registers  {:>7} B shared  {local:>4} B local\n",
                    smem + k.dyn_smem as i32
                );
            }
        }
        Ok(out)
    }

    /// C (m×n) = A (m×k) · B (k×n) at `level`, queued on the stream (see the crate doc for the
    /// contract). A and B must be of the level's [`Input`] type; C is overwritten.
    #[allow(clippy::too_many_arguments)]
    pub fn matmul(
        &self,
        level: Level,
        m: usize,
        n: usize,
        k: usize,
        a: Operand<'_>,
        b: Operand<'_>,
        c: &mut CudaSlice<f32>,
    ) -> Result<(), CudaError> {
        if m == 0 || n == 0 || k == 0 || m.max(n).max(k) > i32::MAX as usize {
            return Err(CudaError::Shape(format!(
                "m, n, k = {m}, {n}, {k}: each must be in 1..2^31"
            )));
        }
        if a.input() != level.input() || b.input() != level.input() {
            return Err(CudaError::Shape(format!(
                "{} reads A and B as {:?}, got {:?} and {:?}",
                level.name(),
                level.input(),
                a.input(),
                b.input()
            )));
        }
        if a.len() < m * k || b.len() < k * n || c.len() < m * n {
            return Err(CudaError::Shape(format!(
                "buffers of {}, {}, {} elements for A {m}×{k}, B {k}×{n}, C {m}×{n}",
                a.len(),
                b.len(),
                c.len()
            )));
        }
        self.supports(level)?;
        match level.kernel() {
            Some(spec) => self.launch_ours(&spec, m, n, k, a, b, c),
            None => self.cublas(level, m, n, k, a, b, c),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn launch_ours(
        &self,
        spec: &crate::ladder::KernelSpec,
        m: usize,
        n: usize,
        k: usize,
        a: Operand<'_>,
        b: Operand<'_>,
        c: &mut CudaSlice<f32>,
    ) -> Result<(), CudaError> {
        let (tm, tn, tk) = spec.tile;
        let whole = m.is_multiple_of(tm) && n.is_multiple_of(tn) && k.is_multiple_of(tk);
        let edge_name;
        let name = if spec.has_edge && !whole {
            edge_name = format!("{}_edge", spec.name);
            edge_name.as_str()
        } else {
            spec.name
        };
        let f = self.function(spec.file, spec.src, name)?;
        if spec.dyn_smem > 48 * 1024 {
            f.set_attribute(
                CUfunction_attribute::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
                spec.dyn_smem as i32,
            )
            .map_err(driver("raising the shared-memory limit"))?;
        }
        let (rows, cols) = (m.div_ceil(tm) as u32, n.div_ceil(tn) as u32);
        let grid = if spec.x_is_row {
            (rows, cols, 1)
        } else {
            (cols, rows, 1)
        };
        let cfg = LaunchConfig {
            grid_dim: grid,
            block_dim: (spec.threads.0, spec.threads.1, 1),
            shared_mem_bytes: spec.dyn_smem,
        };
        let (mi, ni, ki) = (m as i32, n as i32, k as i32);
        let mut lb = self.stream.launch_builder(&f);
        lb.arg(&mi).arg(&ni).arg(&ki);
        match a {
            Operand::F32(x) => lb.arg(x),
            Operand::Bf16(x) => lb.arg(x),
        };
        match b {
            Operand::F32(x) => lb.arg(x),
            Operand::Bf16(x) => lb.arg(x),
        };
        lb.arg(c);
        // SAFETY: every ladder kernel is (int M, int N, int K, const T* A, const T* B, float* C)
        // and the buffers were checked against m, n, k above.
        unsafe { lb.launch(cfg) }.map_err(driver("launching a kernel"))?;
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn cublas(
        &self,
        level: Level,
        m: usize,
        n: usize,
        k: usize,
        a: Operand<'_>,
        b: Operand<'_>,
        c: &mut CudaSlice<f32>,
    ) -> Result<(), CudaError> {
        use cublas::sys::{
            cublasComputeType_t as Ct, cublasGemmAlgo_t, cublasOperation_t, cudaDataType as Dt,
        };
        let (compute, dt) = match level {
            Level::CublasF32 => (Ct::CUBLAS_COMPUTE_32F, Dt::CUDA_R_32F),
            Level::CublasTf32 => (Ct::CUBLAS_COMPUTE_32F_FAST_TF32, Dt::CUDA_R_32F),
            _ => (Ct::CUBLAS_COMPUTE_32F, Dt::CUDA_R_16BF),
        };
        let s = &self.stream;
        let ptr = |o: Operand<'_>| match o {
            Operand::F32(x) => x.device_ptr(s).0,
            Operand::Bf16(x) => x.device_ptr(s).0,
        };
        let (pa, pb) = (ptr(a), ptr(b));
        let (pc, _sync) = c.device_ptr_mut(s);
        let (alpha, beta) = (1.0f32, 0.0f32);
        // Row-major C = A·B is column-major Cᵀ = Bᵀ·Aᵀ: swap the operands, keep "no transpose".
        // SAFETY: pointers from live buffers checked against m, n, k; alpha/beta on the host.
        unsafe {
            cublas::result::gemm_ex(
                *self.blas.handle(),
                cublasOperation_t::CUBLAS_OP_N,
                cublasOperation_t::CUBLAS_OP_N,
                n as i32,
                m as i32,
                k as i32,
                &alpha as *const f32 as *const c_void,
                pb as *const c_void,
                dt,
                n as i32,
                pa as *const c_void,
                dt,
                k as i32,
                &beta as *const f32 as *const c_void,
                pc as *mut c_void,
                Dt::CUDA_R_32F,
                n as i32,
                compute,
                cublasGemmAlgo_t::CUBLAS_GEMM_DEFAULT,
            )
        }
        .map_err(blas("cublasGemmEx"))
    }

    /// The whole contract from the host: C = A·B for f32 row-major `a` (m×k) and `b` (k×n) at
    /// `level` (bf16 levels round A and B to bf16 first), returned as f32 row-major m×n.
    pub fn matmul_host(
        &self,
        level: Level,
        m: usize,
        n: usize,
        k: usize,
        a: &[f32],
        b: &[f32],
    ) -> Result<Vec<f32>, CudaError> {
        if a.len() != m * k || b.len() != k * n {
            return Err(CudaError::Shape(format!(
                "host slices of {} and {} elements for A {m}×{k} and B {k}×{n}",
                a.len(),
                b.len()
            )));
        }
        // Poison C so that an unwritten element shows as NaN.
        let mut c = self.upload(&vec![f32::NAN; m * n])?;
        match level.input() {
            Input::F32 => {
                let (da, db) = (self.upload(a)?, self.upload(b)?);
                self.matmul(level, m, n, k, Operand::F32(&da), Operand::F32(&db), &mut c)?;
            }
            Input::Bf16 => {
                let (da, db) = (self.upload_bf16(a)?, self.upload_bf16(b)?);
                self.matmul(
                    level,
                    m,
                    n,
                    k,
                    Operand::Bf16(&da),
                    Operand::Bf16(&db),
                    &mut c,
                )?;
            }
        }
        self.synchronize()?;
        self.download(&c)
    }

    /// Records an event (with timing) on the stream.
    pub(crate) fn event(&self) -> Result<cudarc::driver::CudaEvent, CudaError> {
        self.stream
            .record_event(Some(CUevent_flags::CU_EVENT_DEFAULT))
            .map_err(driver("recording an event"))
    }
}

/// Compiles one kernel file (after `common.cuh`) with NVRTC to PTX for compute capability `cc`.
/// `wgmma.cu` is compiled for the architecture-specific target (`compute_90a`), which its
/// Hopper-only instructions need.
fn compile(file: &'static str, src: &str, cc: (i32, i32)) -> Result<Ptx, CudaError> {
    let suffix = if file == "wgmma.cu" { "a" } else { "" };
    let opts = CompileOptions {
        options: vec![
            format!("--gpu-architecture=compute_{}{}{suffix}", cc.0, cc.1),
            "--std=c++17".to_string(),
            "-lineinfo".to_string(),
        ],
        name: Some(file.to_string()),
        ..Default::default()
    };
    compile_ptx_with_opts(format!("{COMMON}\n#line 1 \"{file}\"\n{src}"), opts).map_err(|e| {
        CudaError::Compile {
            file,
            log: compile_log(&e),
        }
    })
}

/// Compiles every kernel file with NVRTC for compute capability `cc` and returns
/// (file, PTX) pairs. Needs NVRTC only, no driver or GPU: it lets a machine without a GPU
/// check that the kernels compile and read the code NVRTC makes.
pub fn compile_kernels(cc: (i32, i32)) -> Result<Vec<(&'static str, String)>, CudaError> {
    // SAFETY: only tries to dlopen NVRTC.
    if !unsafe { cudarc::nvrtc::sys::is_culib_present() } {
        return Err(CudaError::NoLibrary {
            library: "libnvrtc (NVRTC)",
        });
    }
    let mut out = Vec::new();
    let mut files: Vec<(&'static str, &'static str)> = Level::ALL
        .iter()
        .filter_map(|l| l.kernel())
        .map(|k| (k.file, k.src))
        .collect();
    files.dedup_by_key(|f| f.0);
    files.push(("convert.cu", CONVERT));
    for (file, src) in files {
        out.push((file, compile(file, src, cc)?.to_src()));
    }
    Ok(out)
}

fn compile_log(e: &cudarc::nvrtc::CompileError) -> String {
    match e {
        cudarc::nvrtc::CompileError::CompileError { log, .. } => log.to_string_lossy().into_owned(),
        other => format!("{other:?}"),
    }
}
