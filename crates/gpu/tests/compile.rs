//! The model's kernels compile with NVRTC for sm_90 in every dtype (no GPU needed; skipped
//! where NVRTC is absent, failed instead under `FERROGPT_REQUIRE_GPU=1`).

use ferrogpt_gpu::{compile, Dtype};

mod common;

#[test]
fn kernels_compile_with_nvrtc() {
    for dtype in [Dtype::F32, Dtype::Tf32, Dtype::Bf16] {
        match compile(dtype, (9, 0)) {
            Err(ferrogpt_cuda::CudaError::NoLibrary { library }) => {
                common::skip(format!("could not load {library}"));
                return;
            }
            Err(e) => panic!("{e}"),
            Ok(ptx) => {
                for k in [
                    "flash_forward_64",
                    "flash_backward_dkdv_128",
                    "adamw",
                    "softmax_ce",
                    "rmsnorm_backward",
                    "swiglu_backward",
                    "rope",
                    "gelu_forward",
                    "kv_append",
                    "attn_decode",
                ] {
                    assert!(
                        ptx.contains(&format!(".entry {k}")),
                        "{k} missing from the PTX"
                    );
                }
                if let Ok(dir) = std::env::var("FERROGPT_PTX_DIR") {
                    std::fs::write(format!("{dir}/gpt-{}.ptx", dtype.name()), &ptx).unwrap();
                }
            }
        }
    }
}
