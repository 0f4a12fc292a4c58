//! GFLOPS of every product one shakespeare-cpu training step makes (B*T = 768, C = 128),
//! at each f32 level: `cargo run --release -p ferrogpt-gemm --example train_shapes`.
use ferrogpt_gemm::{matmul, Level};
use std::time::Instant;

fn main() {
    let n = 768;
    let c = 128;
    // (name, ta, tb, m, n, k)
    let shapes = [
        ("qkv fwd", false, false, n, 3 * c, c),
        ("fc fwd", false, false, n, 4 * c, c),
        ("fcproj fwd", false, false, n, c, 4 * c),
        ("qkv dx", false, true, n, c, 3 * c),
        ("qkv dW", true, false, c, 3 * c, n),
        ("fc dx", false, true, n, c, 4 * c),
        ("fc dW", true, false, c, 4 * c, n),
        ("fcproj dx", false, true, n, 4 * c, c),
        ("fcproj dW", true, false, 4 * c, c, n),
        ("lmhead fwd", false, true, n, 65, c),
    ];
    for level in [Level::Simd, Level::Library, Level::Amx] {
        if level.available().is_err() {
            continue;
        }
        for &(name, ta, tb, m, nn, k) in &shapes {
            let a = vec![0.5f32; m * k];
            let b = vec![0.25f32; k * nn];
            let mut cc = vec![0f32; m * nn];
            let (lda, ldb) = (if ta { m } else { k }, if tb { k } else { nn });
            let mut times = Vec::new();
            for _ in 0..50 {
                let t0 = Instant::now();
                matmul(level, ta, tb, m, nn, k, &a, lda, &b, ldb, &mut cc, nn, true).unwrap();
                times.push(t0.elapsed().as_secs_f64());
            }
            times.sort_by(f64::total_cmp);
            let t = times[times.len() / 2];
            println!(
                "{level:8} {name:12} {m:4}x{nn:4}x{k:4} {:8.1} us {:7.1} GFLOPS",
                t * 1e6,
                2.0 * (m * nn * k) as f64 / t / 1e9
            );
        }
    }
}
