//! The `ferrogpt bench gpu` command on its own, for a GPU machine without the rest of the CLI:
//! `cargo run --release -p ferrogpt-cuda --example bench_gpu -- --sizes 1024,4096`.
//! It compiles the CLI's own module, so the two cannot drift apart.

#[path = "../../cli/src/cmd_bench_gpu.rs"]
mod cmd_bench_gpu;

#[derive(clap::Parser)]
struct Cli {
    #[command(flatten)]
    args: cmd_bench_gpu::BenchGpuArgs,
}

fn main() {
    let cli = <Cli as clap::Parser>::parse();
    if let Err(e) = cmd_bench_gpu::run(&cli.args) {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}
