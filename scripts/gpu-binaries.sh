#!/usr/bin/env bash
# Builds, here, every binary bench/gpu.sh runs on a GPU machine, stripped, into BIN_DIR (with
# Tiny Shakespeare beside them):  scripts/gpu-binaries.sh BIN_DIR
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:?BIN_DIR}
mkdir -p "$out"
target=${CARGO_TARGET_DIR:-target}
cargo build --release -q
cargo build --release -q -p ferrogpt-gpu --example gpu_step
# The test binaries: the last line of cargo's JSON per test target names the executable.
exe() { cargo test --release -q -p "$1" --test "$2" --no-run --message-format=json 2>/dev/null \
    | grep -o '"executable":"[^"]*"' | tail -1 | cut -d'"' -f4; }
cp "$target/release/ferrogpt" "$out/ferrogpt"
cp "$target/release/examples/gpu_step" "$out/gpu_step"
cp "$(exe ferrogpt-cuda ladder)" "$out/ladder"
cp "$(exe ferrogpt-gpu gpu)" "$out/gpu_tests"
cp "$(exe ferrogpt-gpu train)" "$out/train_tests"
strip "$out"/ferrogpt "$out"/gpu_step "$out"/ladder "$out"/gpu_tests "$out"/train_tests
data=data/tinyshakespeare.txt
[ -f "$data" ] || data=../shared/data/tinyshakespeare.txt
cp "$data" "$out/tinyshakespeare.txt"
ls -la "$out"
