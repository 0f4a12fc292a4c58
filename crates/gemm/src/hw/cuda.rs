//! CUDA GPUs, through the driver API loaded at run time (no CUDA toolkit needed to build).
//!
//! We `dlopen` the driver library (`libcuda.so.1` on Linux, `nvcuda.dll` on Windows) and call
//! `cuInit`, `cuDriverGetVersion`, `cuDeviceGetCount`, `cuDeviceGet`, `cuDeviceGetName`,
//! `cuDeviceTotalMem_v2` and `cuDeviceGetAttribute`. No library, a missing symbol or a failing
//! call becomes a `note` in the report, never an error. The query runs once per process and its
//! result is cached; the library is then kept loaded for the life of the process, because the
//! driver starts threads in `cuInit` that must not outlive its code.

use serde::Serialize;
use std::ffi::{c_char, c_int, c_uint, CStr};
use std::sync::OnceLock;

/// What the CUDA driver reports.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct CudaReport {
    /// The driver's CUDA version, "12.4"; `None` without a working driver.
    pub driver_version: Option<String>,
    /// Every device the driver lists.
    pub devices: Vec<CudaDevice>,
    /// Why there are no devices, or what went wrong: "no CUDA driver found".
    pub note: Option<String>,
}

/// One CUDA device.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct CudaDevice {
    /// The driver's ordinal (what `CUDA_VISIBLE_DEVICES` renumbers).
    pub index: usize,
    /// "NVIDIA H100 80GB HBM3".
    pub name: String,
    /// Device memory in bytes (`cuDeviceTotalMem`).
    pub total_mem_bytes: u64,
    /// Compute capability, major.minor (9.0 for Hopper): the major number.
    pub compute_major: i32,
    /// The minor number of the compute capability.
    pub compute_minor: i32,
    /// Streaming multiprocessors, when the driver says.
    pub multiprocessors: Option<i32>,
}

/// The CUDA driver's devices, queried once per process.
pub(super) fn detect() -> CudaReport {
    static REPORT: OnceLock<CudaReport> = OnceLock::new();
    REPORT.get_or_init(query).clone()
}

#[cfg(windows)]
const LIBRARY: &str = "nvcuda.dll";
#[cfg(not(windows))]
const LIBRARY: &str = "libcuda.so.1";

type CuResult = c_int; // CUresult: 0 is CUDA_SUCCESS
type CuDevice = c_int;
const ATTR_MULTIPROCESSOR_COUNT: c_int = 16;
const ATTR_COMPUTE_MAJOR: c_int = 75;
const ATTR_COMPUTE_MINOR: c_int = 76;

fn query() -> CudaReport {
    if cfg!(target_os = "macos") {
        return note("no CUDA driver found (macOS has none)");
    }
    // SAFETY: loading the library runs its initialisers; the NVIDIA driver library is meant to
    // be loaded this way by any process. A library of that name that is not the driver would
    // be a broken installation we cannot guard against.
    let lib = match unsafe { libloading::Library::new(LIBRARY) } {
        Ok(lib) => lib,
        Err(_) => return note("no CUDA driver found"),
    };
    // Keep the driver loaded for the life of the process (see the module doc).
    let lib: &'static libloading::Library = Box::leak(Box::new(lib));
    match query_driver(lib) {
        Ok(report) => report,
        Err(why) => note(&format!("CUDA driver found, but {why}")),
    }
}

fn note(s: &str) -> CudaReport {
    CudaReport {
        note: Some(s.to_string()),
        ..CudaReport::default()
    }
}

/// Look up one driver entry point as a function pointer of type `T`.
///
/// # Safety
/// `T` must be the C signature of `name` in the CUDA driver API (`cuda.h`).
unsafe fn sym<T: Copy>(lib: &'static libloading::Library, name: &str) -> Result<T, String> {
    let cname = format!("{name}\0");
    // SAFETY: the caller guarantees `T` matches the symbol's C signature.
    unsafe { lib.get::<T>(cname.as_bytes()) }
        .map(|s| *s)
        .map_err(|_| format!("it lacks {name}"))
}

fn query_driver(lib: &'static libloading::Library) -> Result<CudaReport, String> {
    // SAFETY: each signature below is the one declared in cuda.h for that name (CUresult is an
    // int-sized enum, CUdevice an int, size_t a usize).
    let (init, version, count, get, name, mem, attr) = unsafe {
        (
            sym::<unsafe extern "C" fn(c_uint) -> CuResult>(lib, "cuInit")?,
            sym::<unsafe extern "C" fn(*mut c_int) -> CuResult>(lib, "cuDriverGetVersion")?,
            sym::<unsafe extern "C" fn(*mut c_int) -> CuResult>(lib, "cuDeviceGetCount")?,
            sym::<unsafe extern "C" fn(*mut CuDevice, c_int) -> CuResult>(lib, "cuDeviceGet")?,
            sym::<unsafe extern "C" fn(*mut c_char, c_int, CuDevice) -> CuResult>(
                lib,
                "cuDeviceGetName",
            )?,
            sym::<unsafe extern "C" fn(*mut usize, CuDevice) -> CuResult>(
                lib,
                "cuDeviceTotalMem_v2",
            )?,
            sym::<unsafe extern "C" fn(*mut c_int, c_int, CuDevice) -> CuResult>(
                lib,
                "cuDeviceGetAttribute",
            )?,
        )
    };
    let check = |what: &str, r: CuResult| {
        if r == 0 {
            Ok(())
        } else {
            Err(format!("{what} failed with CUresult {r}"))
        }
    };
    // SAFETY (all calls below): the function pointers have their cuda.h signatures, every
    // out-pointer points to a live local of the declared type, and the name buffer's length is
    // passed with it.
    unsafe { check("cuInit", init(0))? };
    let mut v: c_int = 0;
    let driver_version = match unsafe { version(&mut v) } {
        0 => Some(format!("{}.{}", v / 1000, (v % 1000) / 10)),
        _ => None,
    };
    let mut n: c_int = 0;
    unsafe { check("cuDeviceGetCount", count(&mut n))? };
    let mut devices = Vec::new();
    for i in 0..n {
        let mut dev: CuDevice = 0;
        unsafe { check("cuDeviceGet", get(&mut dev, i))? };
        let mut buf = [0 as c_char; 256];
        unsafe {
            check(
                "cuDeviceGetName",
                name(buf.as_mut_ptr(), buf.len() as c_int, dev),
            )?
        };
        // The driver NUL-terminates within the buffer; force it in case it did not.
        buf[buf.len() - 1] = 0;
        // SAFETY: `buf` is NUL-terminated (set above) and lives through this statement.
        let dev_name = unsafe { CStr::from_ptr(buf.as_ptr()) }
            .to_string_lossy()
            .into_owned();
        let mut bytes: usize = 0;
        unsafe { check("cuDeviceTotalMem_v2", mem(&mut bytes, dev))? };
        let attribute = |a: c_int| {
            let mut x: c_int = 0;
            (unsafe { attr(&mut x, a, dev) } == 0).then_some(x)
        };
        devices.push(CudaDevice {
            index: i as usize,
            name: dev_name,
            total_mem_bytes: bytes as u64,
            compute_major: attribute(ATTR_COMPUTE_MAJOR).unwrap_or(0),
            compute_minor: attribute(ATTR_COMPUTE_MINOR).unwrap_or(0),
            multiprocessors: attribute(ATTR_MULTIPROCESSOR_COUNT),
        });
    }
    let note = devices
        .is_empty()
        .then(|| "CUDA driver found, no devices".to_string());
    Ok(CudaReport {
        driver_version,
        devices,
        note,
    })
}
