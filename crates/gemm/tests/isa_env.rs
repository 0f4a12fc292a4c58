//! `FERROGPT_ISA` forces the simd level's ISA. The variable is read once per process, so this
//! test lives in its own binary and sets it before the first product.

mod common;

use common::*;
use ferrogpt_gemm::{simd, Isa, Level};

#[test]
fn ferrogpt_isa_forces_the_scalar_kernel() {
    // SAFETY (of set_var): this binary has one test, and no other thread reads the
    // environment yet.
    std::env::set_var("FERROGPT_ISA", "scalar");
    assert_eq!(simd::active_isa(), Ok(Isa::Scalar));
    assert!(Level::Simd.available().is_ok());
    check_level::<f32>("simd/env-scalar f32", Level::Simd, exact_tol::<f32>);
}
