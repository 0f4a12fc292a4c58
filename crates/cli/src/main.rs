//! # ferrogpt: the command-line tool
//!
//! `train`, `sample`, `eval`, `quantize`, `export`, `tokenize`, `plot`, `bench matmul`, `bench train`, `bench gpu`,
//! `info`, `report`. Each subcommand lives in its own `cmd_*.rs`; this file only parses and dispatches.
//! Every error reaches the user as one line on stderr and exit status 1 (2 for unparsable
//! arguments).

// clap turns the argument structs' doc comments into --help text, where `cuda[:N]` and
// `runs/<preset>` are meant literally, not as rustdoc links or HTML.
#![allow(rustdoc::broken_intra_doc_links, rustdoc::invalid_html_tags)]

mod cmd_bench_gpu;
mod cmd_bench_matmul;
mod cmd_bench_train;
mod cmd_eval;
mod cmd_export;
mod cmd_info;
mod cmd_plot;
mod cmd_quantize;
mod cmd_report;
mod cmd_sample;
mod cmd_tokenize;
mod cmd_train;
mod common;
mod launch;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "ferrogpt",
    version,
    about = "Train and run GPT-2-style language models, from naive loops to matrix engines."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Train a model (default: the shakespeare-cpu preset on Tiny Shakespeare).
    Train(Box<cmd_train::TrainArgs>),
    /// Generate text from a checkpoint, streamed to stdout.
    Sample(cmd_sample::SampleArgs),
    /// Mean loss and perplexity of a checkpoint on a data file.
    Eval(cmd_eval::EvalArgs),
    /// Write a checkpoint with its matrices in int8 (Q8_0) or bf16.
    Quantize(cmd_quantize::QuantizeArgs),
    /// Write a checkpoint as llama.cpp's GGUF file (f32, f16 or q8_0).
    Export(cmd_export::ExportArgs),
    /// Encode text (files, folders, JSONL, Parquet) into llm.c token files or shards.
    Tokenize(cmd_tokenize::TokenizeArgs),
    /// Benchmarks: the matmul ladder, and training at each rung.
    #[command(subcommand)]
    Bench(BenchCommand),
    /// Describe this machine: CPU, caches, ISA features, measured FMA peak, GPUs.
    Info(cmd_info::InfoArgs),
    /// Plot training and validation loss of runs (learning rate, gradient norm) to SVG or PNG.
    Plot(cmd_plot::PlotArgs),
    /// Merge saved benchmark results (bench ... --save) from any machines into one HTML page
    /// and a Markdown report.
    Report(cmd_report::ReportArgs),
}

#[derive(Subcommand)]
enum BenchCommand {
    /// The same matrix product at every level of the ladder.
    Matmul(cmd_bench_matmul::BenchMatmulArgs),
    /// The same training steps at every level of the ladder.
    Train(cmd_bench_train::BenchTrainArgs),
    /// The GPU rungs of the matmul ladder beside cuBLAS, on a CUDA GPU.
    Gpu(cmd_bench_gpu::BenchGpuArgs),
}

fn main() {
    common::mark_start();
    // `--matmul wgpu`: the CPU ladder's GPU level (opens the device only when used).
    ferrogpt_wgpu::offload::register();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Train(a) => cmd_train::run(*a),
        Command::Sample(a) => cmd_sample::run(a),
        Command::Eval(a) => cmd_eval::run(a),
        Command::Quantize(a) => cmd_quantize::run(a),
        Command::Export(a) => cmd_export::run(a),
        Command::Tokenize(a) => cmd_tokenize::run(a),
        Command::Bench(BenchCommand::Matmul(a)) => cmd_bench_matmul::run(&a),
        Command::Bench(BenchCommand::Train(a)) => cmd_bench_train::run(a),
        Command::Bench(BenchCommand::Gpu(a)) => cmd_bench_gpu::run(&a),
        Command::Info(a) => cmd_info::run(&a),
        Command::Plot(a) => cmd_plot::run(a),
        Command::Report(a) => cmd_report::run(&a),
    };
    if let Err(e) = result {
        eprintln!("ferrogpt: error: {e}");
        std::process::exit(1);
    }
}
