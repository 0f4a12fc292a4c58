//! `FERROGPT_ISA=neon` selects the NEON kernel on aarch64 and makes the level unavailable, with
//! the reason, elsewhere. The variable is read once per process, so this test has its own binary.

mod common;

use common::*;
use ferrogpt_gemm::{simd, GemmError, Isa, Level};

#[test]
fn ferrogpt_isa_forces_the_neon_kernel() {
    // SAFETY (of set_var): this binary has one test, and no other thread reads the
    // environment yet.
    std::env::set_var("FERROGPT_ISA", "neon");
    if cfg!(target_arch = "aarch64") {
        assert_eq!(simd::active_isa(), Ok(Isa::Neon));
        assert!(Level::Simd.available().is_ok());
        check_level::<f32>("simd/env-neon f32", Level::Simd, exact_tol::<f32>);
        check_level::<f64>("simd/env-neon f64", Level::Simd, exact_tol::<f64>);
    } else {
        let err = Level::Simd.available().unwrap_err();
        assert!(
            matches!(&err, GemmError::Unavailable { level: "simd", reason } if reason.contains("lacks neon")),
            "{err:?}"
        );
    }
}
