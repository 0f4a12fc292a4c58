#!/usr/bin/env bash
# Every CPU benchmark of docs/benchmarks.md, with the peers, in one go:
#   bench/cpu.sh [OUT_FILE]      (default bench/results/cpu-<date>.txt)
# Needs: a release build (cargo build --release --features ferrogpt-gemm/blas for the OpenBLAS
# rows; plain --release skips them), Tiny Shakespeare at data/tinyshakespeare.txt
# or ../shared/data/, and for the peer rows PyTorch (pip install torch). Takes about 10 minutes
# on 2 cores; run it on a quiet machine (the figures are medians, but shared cores are noisy).
set -uo pipefail
cd "$(dirname "$0")/.."
bin=target/release/ferrogpt
data=data/tinyshakespeare.txt
[ -f "$data" ] || data=../shared/data/tinyshakespeare.txt
out=${1:-bench/results/cpu-$(date -u +%Y-%m-%d).txt}
mkdir -p "$(dirname "$out")"
threads=$(nproc)
{
echo "# ferrogpt CPU benchmarks, $(date -u +%Y-%m-%dT%H:%MZ), commit $(git rev-parse --short HEAD), $threads threads"
echo; echo "## ferrogpt info"; $bin info
echo; echo "## bench matmul (f32)"; $bin bench matmul --threads "$threads"
echo; echo "## bench train shakespeare-cpu"; $bin bench train --preset shakespeare-cpu --steps 30 --warmup 3 --threads "$threads" --data "$data"
echo; echo "## bench train gpt2-124m (B=4, T=64)"; $bin bench train --preset gpt2-124m --levels simd,library,amx --steps 5 --warmup 1 --threads "$threads"
if python3 -c "import torch" 2>/dev/null; then
  echo; echo "## peer: PyTorch $(python3 -c 'import torch; print(torch.__version__)') step times"
  python3 bench/peers/pytorch_gpt2.py --preset shakespeare-cpu --threads "$threads" --steps 50 --warmup 10
  python3 bench/peers/pytorch_gpt2.py --preset gpt2-124m --threads "$threads" --steps 5 --warmup 2
fi
echo; echo "## full run: ferrogpt train --preset shakespeare-cpu"
rm -rf /tmp/ferrogpt-bench-run
/usr/bin/time -f "wall %e s" $bin train --preset shakespeare-cpu --data "$data" --out /tmp/ferrogpt-bench-run --threads "$threads" --log-interval 500 2>&1
if python3 -c "import torch" 2>/dev/null; then
  echo; echo "## peer: the same recipe in PyTorch"
  python3 bench/peers/pytorch_gpt2.py --threads "$threads" --train-shakespeare "$data"
fi
} 2>&1 | tee "$out"
