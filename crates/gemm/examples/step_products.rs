//! The matrix products of one whole training step, in the order the step makes them, with
//! every layer's own weights, gradients and activations (so the weights come from wherever the
//! step would find them: gpt2-124m's 0.5 GB do not stay in cache): how much of a measured step
//! time the products are, per level, and which products cost what.
//!
//! `cargo run --release -p ferrogpt-gemm --example step_products -- [gpt2|shakespeare] [rounds]
//! [levels]` (levels: comma-separated, default simd,amx,blas,library where available)
//!
//! gpt2: gpt2-124m at batch 4, sequence 64 (256 rows, C = 768, 12 layers, vocabulary 50304);
//! shakespeare: shakespeare-cpu (768 rows, C = 128, 4 layers, vocabulary 65). Attention's own
//! small per-head products are left out (under 2% of the step's multiply-adds at T = 64).
//! Prints the median over the rounds of the step's product time per level and each kind of
//! product's share of it.

use ferrogpt_gemm::{matmul, Level};
use std::time::Instant;

/// One product: C (m×n) = op(A)·op(B), shapes as `matmul` takes them.
#[derive(Clone, Copy)]
struct Shape {
    name: &'static str,
    ta: bool,
    tb: bool,
    m: usize,
    n: usize,
    k: usize,
}

/// Operands of one product (A, B, C), allocated once.
struct Operands {
    a: Vec<f32>,
    b: Vec<f32>,
    c: Vec<f32>,
}

fn shapes(rows: usize, c: usize, layers: usize, vocab: usize) -> Vec<Shape> {
    let s = |name, ta, tb, m, n, k| Shape {
        name,
        ta,
        tb,
        m,
        n,
        k,
    };
    let mut v = Vec::new();
    // Forward: qkv, attention projection, MLP up and down per layer; the tied LM head.
    for _ in 0..layers {
        v.push(s("qkv fwd", false, false, rows, 3 * c, c));
        v.push(s("proj fwd", false, false, rows, c, c));
        v.push(s("fc fwd", false, false, rows, 4 * c, c));
        v.push(s("fcproj fwd", false, false, rows, c, 4 * c));
    }
    v.push(s("lmhead fwd", false, true, rows, vocab, c));
    // Backward, last layer first: the LM head's input and weight gradients, then per layer
    // dX = dY·Wᵀ and dW = Xᵀ·dY for each linear map, in reverse.
    v.push(s("lmhead dx", false, false, rows, c, vocab));
    v.push(s("lmhead dW", true, false, vocab, c, rows));
    for _ in 0..layers {
        v.push(s("fcproj dx", false, true, rows, 4 * c, c));
        v.push(s("fcproj dW", true, false, 4 * c, c, rows));
        v.push(s("fc dx", false, true, rows, c, 4 * c));
        v.push(s("fc dW", true, false, c, 4 * c, rows));
        v.push(s("proj dx", false, true, rows, c, c));
        v.push(s("proj dW", true, false, c, c, rows));
        v.push(s("qkv dx", false, true, rows, c, 3 * c));
        v.push(s("qkv dW", true, false, c, 3 * c, rows));
    }
    v
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let preset = args.get(1).map(String::as_str).unwrap_or("gpt2");
    let rounds: usize = args.get(2).and_then(|r| r.parse().ok()).unwrap_or(5);
    let list = match preset {
        "gpt2" => shapes(256, 768, 12, 50304),
        "shakespeare" => shapes(768, 128, 4, 65),
        other => {
            eprintln!("error: unknown preset {other} (gpt2 or shakespeare)");
            std::process::exit(2);
        }
    };
    // Fresh operands for every product (each layer has its own weights), small nonzero values.
    let mut ops: Vec<Operands> = list
        .iter()
        .enumerate()
        .map(|(i, s)| Operands {
            a: (0..s.m * s.k)
                .map(|j| ((i + j) % 13) as f32 * 0.01)
                .collect(),
            b: (0..s.k * s.n)
                .map(|j| ((i + j) % 7) as f32 * 0.01)
                .collect(),
            c: vec![0.0; s.m * s.n],
        })
        .collect();
    let macs: f64 = list.iter().map(|s| (s.m * s.n * s.k) as f64).sum();
    println!(
        "{preset}: {} products, {:.1} GFLOP per step, {} threads, median of {rounds} rounds",
        list.len(),
        2.0 * macs / 1e9,
        rayon::current_num_threads()
    );
    let levels: Vec<Level> = match args.get(3) {
        Some(l) => l
            .split(',')
            .map(|x| {
                x.parse().unwrap_or_else(|e| {
                    eprintln!("error: {e}");
                    std::process::exit(2)
                })
            })
            .collect(),
        None => vec![Level::Simd, Level::Amx, Level::Blas, Level::Library],
    };
    for level in levels {
        if level.available().is_err() {
            continue;
        }
        let mut per_product = vec![Vec::new(); list.len()];
        let mut totals = Vec::new();
        for _ in 0..rounds + 1 {
            let t_all = Instant::now();
            for (i, (s, o)) in list.iter().zip(ops.iter_mut()).enumerate() {
                let lda = if s.ta { s.m } else { s.k };
                let ldb = if s.tb { s.k } else { s.n };
                let t0 = Instant::now();
                matmul(
                    level, s.ta, s.tb, s.m, s.n, s.k, &o.a, lda, &o.b, ldb, &mut o.c, s.n, false,
                )
                .expect("a valid product");
                per_product[i].push(t0.elapsed().as_secs_f64());
            }
            totals.push(t_all.elapsed().as_secs_f64());
        }
        // The first round warms up (buffers, page faults).
        totals.remove(0);
        totals.sort_by(f64::total_cmp);
        let total = totals[totals.len() / 2];
        println!(
            "{level:8} products {:8.1} ms per step  {:7.1} GFLOPS",
            total * 1e3,
            2.0 * macs / total / 1e9
        );
        let mut kinds: Vec<(&str, f64, f64)> = Vec::new();
        for (s, times) in list.iter().zip(per_product.iter_mut()) {
            times.remove(0);
            times.sort_by(f64::total_cmp);
            let t = times[times.len() / 2];
            let flop = 2.0 * (s.m * s.n * s.k) as f64;
            match kinds.iter_mut().find(|k| k.0 == s.name) {
                Some(k) => {
                    k.1 += t;
                    k.2 += flop;
                }
                None => kinds.push((s.name, t, flop)),
            }
        }
        for (name, t, flop) in kinds {
            println!(
                "         {name:12} {:8.1} ms {:7.1} GFLOPS",
                t * 1e3,
                flop / t / 1e9
            );
        }
    }
}
