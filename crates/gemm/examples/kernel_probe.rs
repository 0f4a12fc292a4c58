//! How close the `simd` level's AVX-512 f32 microkernel gets to the FMA peak when nothing else
//! is in the way: no packing, no threads, no strided C, the operands in L1, L2 or L3.
//!
//! ```sh
//! cargo run --release -p ferrogpt-gemm --example kernel_probe [ROUNDS]
//! ```
//!
//! Each round measures the one-core FMA peak (`hw::measure_peak_on(1)`: the fastest of 20
//! short runs of an FMA-only loop), then the 12×32 kernel against B̃ blocks of three sizes,
//! and prints the fastest and the median pass of each as GFLOPS and as a share of that peak.
//! Alternating rounds in one process is what makes the figures comparable on a shared machine.

use ferrogpt_gemm::hw::measure_peak_on;
use ferrogpt_gemm::simd::probe_kernel_f32;

fn main() {
    let rounds: usize = std::env::args()
        .nth(1)
        .map_or(3, |s| s.parse().expect("ROUNDS: a number"));
    // (label, kc, B̃ slivers): 16 KiB of B̃ (L1), 960 KiB (L2, the level's KC×NC block),
    // 9.4 MiB (L3).
    let cases = [
        ("B̃ in L1 (kc 128, 1 sliver)", 128, 1),
        ("B̃ in L2 (kc 384, 20 slivers)", 384, 20),
        ("B̃ in L3 (kc 384, 200 slivers)", 384, 200),
    ];
    for r in 1..=rounds {
        let peak = measure_peak_on(1).f32_1core;
        println!("round {r}: FMA peak {peak:.1} GFLOPS (1 core)");
        for &(label, kc, slivers) in &cases {
            let flops = 2.0 * 12.0 * 32.0 * (kc * slivers) as f64;
            // About 0.2 s of passes per case.
            let passes = ((3e10 / flops) as usize).clamp(20, 20_000);
            let Some(mut t) = probe_kernel_f32(kc, slivers, passes) else {
                println!("  the AVX-512 kernel cannot run on this CPU");
                return;
            };
            t.sort_by(f64::total_cmp);
            let (best, median) = (flops / t[0] / 1e9, flops / t[t.len() / 2] / 1e9);
            println!(
                "  {label:32} best {best:6.1} GFLOPS ({:3.0}%)   median {median:6.1} ({:3.0}%)",
                100.0 * best / peak,
                100.0 * median / peak
            );
        }
    }
}
