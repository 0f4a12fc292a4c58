//! GEMV bandwidth probe: the median time of `y = W·x` for GPT-2 124M's matrix shapes in each
//! weight format, and the bytes per second it reads. `cargo run --release --example gemv_probe`
//! (threads: RAYON_NUM_THREADS).

use ferrogpt_gemm::gemv::{gemv, gemv_in_place, F32View, Kernel, Layout, Matrix, WeightFormat};
use std::time::Instant;

fn main() {
    let kernel = Kernel::active().expect("a GEMV kernel");
    println!("kernel {kernel}, {} threads", rayon::current_num_threads());
    // (rows, cols, copies): enough copies that the set does not fit the last-level cache.
    for (rows, cols, copies) in [
        (2304, 768, 24),
        (3072, 768, 24),
        (768, 3072, 24),
        (50257, 768, 1),
    ] {
        let w: Vec<f32> = (0..rows * cols)
            .map(|i| ((i * 7919) % 1000) as f32 * 1e-3 - 0.5)
            .collect();
        let x: Vec<f32> = (0..cols).map(|i| (i % 13) as f32 * 0.1 - 0.6).collect();
        for format in WeightFormat::ALL {
            let ms: Vec<Matrix> = (0..copies)
                .map(|_| Matrix::from_f32(format, rows, cols, &w, Layout::OutIn).expect("a matrix"))
                .collect();
            let mut y = vec![0f32; rows];
            let mut times = Vec::new();
            for rep in 0..(60 / copies).max(5) {
                for m in &ms {
                    let t = Instant::now();
                    gemv(kernel, m, &x, &mut y, None, false).unwrap();
                    if rep > 0 {
                        times.push(t.elapsed().as_secs_f64());
                    }
                }
            }
            times.sort_by(f64::total_cmp);
            let (med, min) = (times[times.len() / 2], times[0]);
            println!(
                "{rows:>6}x{cols:<5} {format:>5}: {:8.1} us  {:6.1} GB/s (fastest {:6.1} GB/s)",
                med * 1e6,
                ms[0].bytes() as f64 / med / 1e9,
                ms[0].bytes() as f64 / min / 1e9
            );
        }
        // f32 where it lies, unpacked: (out, in) as given, and (in, out) (its transpose).
        for layout in [Layout::OutIn, Layout::InOut] {
            let ws: Vec<Vec<f32>> = (0..copies).map(|_| w.clone()).collect();
            let mut y = vec![0f32; rows];
            let mut times = Vec::new();
            for rep in 0..(60 / copies).max(5) {
                for w in &ws {
                    let view = F32View {
                        data: w,
                        rows,
                        cols,
                        layout,
                    };
                    let t = Instant::now();
                    gemv_in_place(kernel, view, &x, &mut y, None, false).unwrap();
                    if rep > 0 {
                        times.push(t.elapsed().as_secs_f64());
                    }
                }
            }
            times.sort_by(f64::total_cmp);
            let (med, min) = (times[times.len() / 2], times[0]);
            println!(
                "{rows:>6}x{cols:<5} f32 in place {layout:?}: {:8.1} us  {:6.1} GB/s (fastest {:6.1} GB/s)",
                med * 1e6,
                (4 * rows * cols) as f64 / med / 1e9,
                (4 * rows * cols) as f64 / min / 1e9
            );
        }
    }
}
