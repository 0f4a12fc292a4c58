//! Times the two pure-Rust GEMM crates behind the `library` level on square f32 and f64
//! products (median of 10 runs after a warm-up), so the choice in `library.rs` can be re-checked.

use ferrogpt_gemm::library::{gemm_crate, matrixmultiply_gemm};
use ferrogpt_gemm::{Element, Problem};
use std::time::Instant;

fn time<T: Element>(f: fn(&Problem<'_, T>, &mut [T]), n: usize) -> f64 {
    let a: Vec<T> = (0..n * n)
        .map(|i| T::from_f64(((i * 7919) % 1000) as f64 / 1000.0))
        .collect();
    let mut c = vec![T::ZERO; n * n];
    let p = Problem {
        m: n,
        n,
        k: n,
        a: &a,
        lda: n,
        ta: false,
        b: &a,
        ldb: n,
        tb: false,
        ldc: n,
        accumulate: false,
    };
    f(&p, &mut c);
    let mut t: Vec<f64> = (0..10)
        .map(|_| {
            let s = Instant::now();
            f(&p, &mut c);
            s.elapsed().as_secs_f64()
        })
        .collect();
    t.sort_by(f64::total_cmp);
    2.0 * (n * n * n) as f64 / t[5] / 1e9
}

fn main() {
    println!(
        "size  dtype  gemm-crate GFLOPS  matrixmultiply GFLOPS  ({} threads)",
        rayon::current_num_threads()
    );
    for n in [128, 256, 512, 1024, 2048] {
        println!(
            "{n:5} f32 {:10.1} {:10.1}",
            time::<f32>(gemm_crate, n),
            time::<f32>(matrixmultiply_gemm, n)
        );
        println!(
            "{n:5} f64 {:10.1} {:10.1}",
            time::<f64>(gemm_crate, n),
            time::<f64>(matrixmultiply_gemm, n)
        );
    }
}
