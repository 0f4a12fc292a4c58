//! cuBLASLt products with a fused epilogue (part of the unsafe boundary, beside `raw`): the
//! forward linears' bias, and bias + GELU with the pre-activation kept for the backward, done
//! inside the GEMM instead of in a separate pass over the output.
//!
//! Row-major `D (m×n) = A (m×k) · B (k×n) + bias (n)` [→ GELU], no transposes, f32
//! accumulation, D and the bias in the model's floatX. In column-major terms (cuBLASLt's)
//! that is `Dᵀ = Bᵀ·Aᵀ` with each row-major buffer read as its transpose, so B goes first and
//! the bias runs along Dᵀ's rows, as the epilogue wants. The algorithm for each shape comes
//! from cuBLASLt's heuristic once and is cached.

use std::cell::RefCell;
use std::collections::HashMap;
use std::ffi::c_void;

use cudarc::cublaslt::result as lt;
use cudarc::cublaslt::sys;
use cudarc::driver::CudaSlice;
use ferrogpt_cuda::CudaError;

use crate::raw::{Dev, DevPtr, X};
use crate::Dtype;

const WORKSPACE: usize = 32 << 20;

/// What the epilogue does after the product.
#[derive(Clone, Copy)]
pub enum Epilogue {
    /// D = A·B + bias (n)
    Bias { bias: DevPtr<X> },
    /// aux (m×n) = A·B + bias (pre-activation, kept for the backward); D = gelu(aux), tanh form.
    GeluAuxBias { bias: DevPtr<X>, aux: DevPtr<X> },
}

/// A cuBLASLt handle, its workspace, and the algorithms chosen so far.
pub struct Lt {
    handle: sys::cublasLtHandle_t,
    _ws: CudaSlice<u8>,
    ws: u64,
    algos: RefCell<HashMap<(usize, usize, usize, bool), sys::cublasLtMatmulAlgo_t>>,
}

fn blas(during: &str) -> impl FnOnce(cudarc::cublaslt::result::CublasError) -> CudaError + '_ {
    move |e| CudaError::Cublas {
        during: during.to_string(),
        message: e.to_string(),
    }
}

impl Lt {
    /// None where cuBLASLt cannot be loaded (the plain cuBLAS path then serves).
    pub fn new(dev: &Dev) -> Result<Option<Lt>, CudaError> {
        // SAFETY: only tries to dlopen cuBLASLt.
        if !unsafe { sys::is_culib_present() } {
            return Ok(None);
        }
        let handle = lt::create_handle().map_err(blas("cublasLtCreate"))?;
        let (ws_mem, ws) = dev.alloc(WORKSPACE)?;
        Ok(Some(Lt {
            handle,
            _ws: ws_mem,
            ws,
            algos: RefCell::new(HashMap::new()),
        }))
    }

    /// `d (m×n) = a (m×k) · b (k×n)` with `ep` (see the module doc); all row-major, contiguous.
    /// Panics if a view is smaller than its shape.
    #[allow(clippy::too_many_arguments)]
    pub fn matmul(
        &self,
        dev: &Dev,
        d: DevPtr<X>,
        a: DevPtr<X>,
        b: DevPtr<X>,
        m: usize,
        n: usize,
        k: usize,
        ep: Epilogue,
    ) -> Result<(), CudaError> {
        let (bias, aux) = match ep {
            Epilogue::Bias { bias } => (bias, None),
            Epilogue::GeluAuxBias { bias, aux } => (bias, Some(aux)),
        };
        let shapes = [(d, m * n), (a, m * k), (b, k * n), (bias, n)];
        for (p, elems) in shapes.into_iter().chain(aux.map(|x| (x, m * n))) {
            assert!(
                elems <= p.len(),
                "cuBLASLt {m}x{n}x{k}: an operand of {} elements for {elems}",
                p.len()
            );
        }
        let (d, a, b) = (d.addr(), a.addr(), b.addr());
        let ty = match dev.dtype {
            Dtype::F32 | Dtype::Tf32 => sys::cudaDataType::CUDA_R_32F,
            Dtype::Bf16 => sys::cudaDataType::CUDA_R_16BF,
        };
        let desc = lt::create_matmul_desc(
            sys::cublasComputeType_t::CUBLAS_COMPUTE_32F,
            sys::cudaDataType::CUDA_R_32F,
        )
        .map_err(blas("cublasLtMatmulDescCreate"))?;
        // Column-major: the first operand is B (n×k, ld n), the second A (k×m, ld k), D (n×m).
        let la = lt::create_matrix_layout(ty, n as u64, k as u64, n as i64);
        let lb = lt::create_matrix_layout(ty, k as u64, m as u64, k as i64);
        let ld = lt::create_matrix_layout(ty, n as u64, m as u64, n as i64);
        let r = (|| {
            let (la, lb, ld) = (
                la.map_err(blas("layout"))?,
                lb.map_err(blas("layout"))?,
                ld.map_err(blas("layout"))?,
            );
            let set = |attr, p: *const c_void, size| {
                // SAFETY: p points at a live value of `size` bytes of the attribute's type.
                unsafe { lt::set_matmul_desc_attribute(desc, attr, p, size) }
                    .map_err(blas("cublasLtMatmulDescSetAttribute"))
            };
            use sys::cublasLtMatmulDescAttributes_t as A;
            let (epi, bias, aux) = match ep {
                Epilogue::Bias { bias } => (
                    sys::cublasLtEpilogue_t::CUBLASLT_EPILOGUE_BIAS,
                    bias.addr(),
                    0u64,
                ),
                Epilogue::GeluAuxBias { bias, aux } => (
                    sys::cublasLtEpilogue_t::CUBLASLT_EPILOGUE_GELU_AUX_BIAS,
                    bias.addr(),
                    aux.addr(),
                ),
            };
            set(
                A::CUBLASLT_MATMUL_DESC_EPILOGUE,
                &epi as *const _ as *const c_void,
                std::mem::size_of_val(&epi),
            )?;
            set(
                A::CUBLASLT_MATMUL_DESC_BIAS_POINTER,
                &bias as *const u64 as *const c_void,
                8,
            )?;
            if aux != 0 {
                let aux_ld = n as i64;
                set(
                    A::CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_POINTER,
                    &aux as *const u64 as *const c_void,
                    8,
                )?;
                set(
                    A::CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_LD,
                    &aux_ld as *const i64 as *const c_void,
                    8,
                )?;
            }
            let key = (m, n, k, aux != 0);
            let cached = self.algos.borrow().get(&key).copied();
            let algo = match cached {
                Some(a) => a,
                None => {
                    let pref =
                        lt::create_matmul_pref().map_err(blas("cublasLtMatmulPreferenceCreate"))?;
                    let size = WORKSPACE as u64;
                    // SAFETY: `size` lives for the call; the layouts and descriptor are live.
                    let h = unsafe {
                        lt::set_matmul_pref_attribute(
                            pref,
                            sys::cublasLtMatmulPreferenceAttributes_t::CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES,
                            &size as *const u64 as *const c_void,
                            8,
                        )
                        .and_then(|()| lt::get_matmul_algo_heuristic(self.handle, desc, la, lb, ld, ld, pref))
                    };
                    // SAFETY: created above, not used after.
                    unsafe {
                        let _ = lt::destroy_matmul_pref(pref);
                    }
                    let a = h.map_err(blas("cublasLtMatmulAlgoGetHeuristic"))?.algo;
                    self.algos.borrow_mut().insert(key, a);
                    a
                }
            };
            let (alpha, beta) = (1.0f32, 0.0f32);
            dev.timed(
                &format!(
                    "lt gemm {m}x{n}x{k}{}",
                    if aux != 0 { " gelu" } else { " bias" }
                ),
                || {
                    // SAFETY: the views hold the stated shapes (checked on entry), the
                    // workspace is ours, the scalars live on the host for the call.
                    unsafe {
                        lt::matmul(
                            self.handle,
                            desc,
                            &alpha as *const f32 as *const c_void,
                            &beta as *const f32 as *const c_void,
                            b as *const c_void,
                            la,
                            a as *const c_void,
                            lb,
                            d as *const c_void,
                            ld,
                            d as *mut c_void,
                            ld,
                            &algo,
                            self.ws as *mut c_void,
                            WORKSPACE,
                            dev.cu_stream() as sys::cudaStream_t,
                        )
                    }
                    .map_err(blas("cublasLtMatmul"))
                },
            )?;
            // SAFETY: created above, not used after.
            unsafe {
                let _ = lt::destroy_matrix_layout(la);
                let _ = lt::destroy_matrix_layout(lb);
                let _ = lt::destroy_matrix_layout(ld);
            }
            Ok(())
        })();
        // SAFETY: created above, not used after.
        unsafe {
            let _ = lt::destroy_matmul_desc(desc);
        }
        r
    }
}

impl Drop for Lt {
    fn drop(&mut self) {
        // SAFETY: the handle is ours and no call is in flight (the stream is ordered and the
        // model owning this waits for nothing else on it).
        unsafe {
            let _ = lt::destroy_handle(self.handle);
        }
    }
}
