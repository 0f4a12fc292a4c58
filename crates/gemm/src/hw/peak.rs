//! The FMA peak: how many floating-point operations per second this machine's cores can retire
//! when they do nothing but independent fused multiply-adds in the widest vector ISA they have.
//!
//! This is the ceiling a GEMM microkernel is measured against (`% of peak` in
//! `ferrogpt bench matmul`). It is measured, not computed from a spec sheet, so it includes the
//! clock the cores actually run at under vector load (AVX-512 licences, turbo, a hypervisor).
//!
//! Method: a kernel (see the platform files) runs `iters` iterations of N independent
//! vector FMA chains. We calibrate `iters` to ~[`TARGET`] per run and keep the fastest of
//! [`REPEATS`] runs, single-threaded and then on one thread per logical core started together
//! by a barrier (a run's time is its slowest thread's). One FMA counts as 2 flops. Threads are
//! not pinned; on a shared or busy machine the all-core figure drops with the load.

use serde::Serialize;
use std::hint::black_box;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Barrier;
use std::time::{Duration, Instant};

/// Measured FMA throughput in GFLOPS (10⁹ floating-point operations per second).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Peak {
    /// The ISA of the kernel that ran: "avx512f", "avx2+fma", "neon", "portable".
    pub isa: &'static str,
    /// Threads used for the "all" figures (one per logical core, or as asked).
    pub threads: usize,
    /// f32 on one thread.
    pub f32_1core: f64,
    /// f32 on `threads` threads together.
    pub f32_all: f64,
    /// f64 on one thread.
    pub f64_1core: f64,
    /// f64 on `threads` threads together.
    pub f64_all: f64,
}

/// One FMA loop: `run(iters)` performs `iters * flops_per_iter` flops and returns a checksum
/// (so the work cannot be optimised away).
#[derive(Clone, Copy)]
pub(crate) struct FmaKernel {
    pub isa: &'static str,
    pub flops_per_iter: f64,
    pub run: fn(u64) -> f64,
}

/// Wall time of one timed run: short enough to often fit in one scheduler time slice on a busy
/// machine, long enough (millions of FMAs) that timer overhead and loop start-up do not count.
const TARGET: Duration = Duration::from_millis(2);
/// Timed runs per figure; the fastest is kept, which filters out runs that were preempted.
const REPEATS: usize = 20;
/// Wall-time budget per figure: on a busy machine, stop after this once [`MIN_REPEATS`] runs
/// are done, so that `measure_peak` stays short.
const BUDGET: Duration = Duration::from_millis(80);
const MIN_REPEATS: usize = 5;

/// Measure the FMA peak in f32 and f64, on one core and on all logical cores, with the widest
/// FMA this CPU has. Takes about 0.2 s on an idle machine (four figures × 20 runs × 2 ms, plus
/// calibration) and at most about 0.5 s on a busy one.
/// Never fails. On a machine busy with other work the figures are lower, the all-core ones most.
pub fn measure_peak() -> Peak {
    measure_peak_on(super::logical_cores())
}

/// [`measure_peak`] with the "all" figures measured on `threads` threads (at least 1) instead
/// of one per logical core: the ceiling of a GEMM run with `--threads threads`. On a machine
/// with more cores than threads this is the honest peak; one core's figure times `threads`
/// overstates it where cores share a clock budget (turbo) or a physical core (SMT).
pub fn measure_peak_on(threads: usize) -> Peak {
    let (k32, k64) = super::arch::fma_kernels();
    let threads = threads.max(1);
    let iters32 = calibrate(k32);
    let iters64 = calibrate(k64);
    Peak {
        isa: k32.isa,
        threads,
        f32_1core: gflops(k32, iters32, 1),
        f32_all: gflops(k32, iters32, threads),
        f64_1core: gflops(k64, iters64, 1),
        f64_all: gflops(k64, iters64, threads),
    }
}

/// Iterations that take about [`TARGET`] on one core. The doubling runs double as the warm-up
/// that brings the core to its vector clock.
fn calibrate(k: FmaKernel) -> u64 {
    let mut iters: u64 = 1 << 10;
    loop {
        let t = Instant::now();
        black_box((k.run)(iters));
        let dt = t.elapsed();
        if dt >= TARGET * 2 || iters >= 1 << 40 {
            // The fastest of a few runs at this size, so that a preempted run does not inflate
            // the calibration.
            let best = (0..3)
                .map(|_| {
                    let t = Instant::now();
                    black_box((k.run)(iters));
                    t.elapsed()
                })
                .fold(dt, Duration::min);
            let scale = TARGET.as_secs_f64() / best.as_secs_f64().max(1e-9);
            return ((iters as f64 * scale) as u64).max(1);
        }
        iters *= 2;
    }
}

/// GFLOPS of the fastest of [`REPEATS`] runs (fewer, but at least [`MIN_REPEATS`], once
/// [`BUDGET`] has passed), each with `threads` threads released together by a barrier and each
/// running `iters` iterations; a run lasts as long as its slowest thread.
fn gflops(k: FmaKernel, iters: u64, threads: usize) -> f64 {
    let deadline = Instant::now() + BUDGET;
    let barrier = Barrier::new(threads);
    let stop = AtomicBool::new(false);
    let run_times = || -> Vec<f64> {
        let mut times = Vec::with_capacity(REPEATS);
        loop {
            barrier.wait();
            let t = Instant::now();
            black_box((k.run)(iters));
            times.push(t.elapsed().as_secs_f64());
            // One thread decides for all whether to go on; the second wait publishes it.
            if barrier.wait().is_leader() {
                let n = times.len();
                let done = n >= REPEATS || (n >= MIN_REPEATS && Instant::now() > deadline);
                stop.store(done, Ordering::Relaxed);
            }
            barrier.wait();
            if stop.load(Ordering::Relaxed) {
                return times;
            }
        }
    };
    let per_thread: Vec<Vec<f64>> = if threads == 1 {
        vec![run_times()]
    } else {
        std::thread::scope(|s| {
            let handles: Vec<_> = (0..threads).map(|_| s.spawn(run_times)).collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("FMA benchmark thread panicked"))
                .collect()
        })
    };
    let runs = per_thread[0].len();
    let best = (0..runs)
        .map(|r| per_thread.iter().map(|times| times[r]).fold(0.0, f64::max))
        .fold(f64::INFINITY, f64::min);
    k.flops_per_iter * iters as f64 * threads as f64 / best / 1e9
}

/// The fallback kernels for CPUs without a hand-written one: 32 independent `acc*a + b` chains
/// on plain arrays, which the compiler vectorises for the baseline ISA of the target. Each
/// element costs a multiply and an add (2 flops) whether or not they fuse.
#[allow(dead_code)] // unused on targets that always have a vector kernel
pub(crate) fn portable_kernels() -> (FmaKernel, FmaKernel) {
    (
        FmaKernel {
            isa: "portable",
            flops_per_iter: 32.0 * 2.0,
            run: portable_f32,
        },
        FmaKernel {
            isa: "portable",
            flops_per_iter: 32.0 * 2.0,
            run: portable_f64,
        },
    )
}

macro_rules! portable {
    ($name:ident, $t:ty) => {
        #[allow(dead_code)]
        fn $name(iters: u64) -> f64 {
            let a: $t = black_box(0.999);
            let b: $t = black_box(0.001);
            let mut acc: [$t; 32] = black_box([0.5; 32]);
            for _ in 0..iters {
                for x in acc.iter_mut() {
                    *x = *x * a + b;
                }
            }
            acc.iter().map(|&x| x as f64).sum()
        }
    };
}
portable!(portable_f32, f32);
portable!(portable_f64, f64);
