#!/usr/bin/env bash
# Every GPU test and the GPU matmul benchmark in one go, on a machine with an NVIDIA GPU.
#
# Usage: crates/cuda/run-gpu.sh BIN_DIR OUT_DIR
#   BIN_DIR holds `ladder` (the test binary of crates/cuda/tests/ladder.rs, from
#   `cargo test --release -p ferrogpt-cuda --no-run`) and `ferrogpt` (its `bench gpu`);
#   OUT_DIR receives nvidia-smi.txt, tests.log, bench.txt,
#   bench.progress, tc-sweep.txt and torch.txt. SIZES (default 1024,2048,4096,8192) picks the sizes.
set -u -o pipefail
BIN=${1:?BIN_DIR}
OUT=${2:?OUT_DIR}
SIZES=${SIZES:-1024,2048,4096,8192}
mkdir -p "$OUT"
# NVRTC and cuBLAS of the CUDA toolkit, if they are not on the loader's path already.
for d in /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib; do
    [ -d "$d" ] && export LD_LIBRARY_PATH="$d:${LD_LIBRARY_PATH:-}"
done
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm,temperature.gpu,power.draw,power.limit --format=csv \
    | tee "$OUT/nvidia-smi.txt"
rc=0
"$BIN/ladder" --test-threads=1 --nocapture 2>&1 | tee "$OUT/tests.log" | grep -E "^test |skipped|panicked|test result|513x 513x 513" || rc=1
"$BIN/ferrogpt" bench gpu --sizes "$SIZES" --format table 2>"$OUT/bench.progress" | tee "$OUT/bench.txt" || rc=1
cat "$OUT/bench.progress" >&2
# Every tile of the tuned tensor-core rung (TC_SWEEP=0 to skip).
if [ "${TC_SWEEP:-1}" = 1 ]; then
    for t in 128x256x32 128x256x64 128x128x64 256x128x32; do
        echo "== FERROGPT_TC_TILE=$t"
        FERROGPT_TC_TILE=$t "$BIN/ferrogpt" bench gpu --levels tensor-core-tuned,cublas-bf16 --sizes 2048,4096,8192 2>/dev/null \
            | grep -E "tensor-core|cublas-bf16" || rc=1
    done 2>&1 | tee "$OUT/tc-sweep.txt"
fi
# PyTorch on the same card, as one more peer (f32 without TF32, and bf16).
if command -v python3 >/dev/null; then
python3 - "$SIZES" <<'PY' 2>&1 | tee "$OUT/torch.txt"
import sys, torch
torch.backends.cuda.matmul.allow_tf32 = False
for n in [int(s) for s in sys.argv[1].split(',')]:
    for dt in (torch.float32, torch.bfloat16):
        a = torch.rand(n, n, device='cuda', dtype=dt) * 2 - 1
        b = torch.rand(n, n, device='cuda', dtype=dt) * 2 - 1
        for _ in range(3): a @ b
        ts = []
        for _ in range(20):
            s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            s.record(); a @ b; e.record(); e.synchronize(); ts.append(s.elapsed_time(e) / 1e3)
        t = sorted(ts)[len(ts) // 2]
        print(f"torch.matmul {str(dt):15s} {n:5d}  {t*1e3:9.3f} ms  {2*n**3/t/1e12:7.1f} TFLOPS")
PY
fi
exit $rc
