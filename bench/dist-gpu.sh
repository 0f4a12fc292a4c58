#!/usr/bin/env bash
# The data-parallel GPU path on one GPU (issue 14), on a machine with an NVIDIA GPU and NCCL
# (PyTorch's wheel carries libnccl; no Rust needed there):
#
#   bench/dist-gpu.sh BIN_DIR OUT_DIR
#
# BIN_DIR holds ferrogpt (scripts/gpu-binaries.sh makes it) and tinyshakespeare.txt.
# 1. Correctness: shakespeare-char (bf16, 40 steps) plain, as one torchrun-style NCCL rank
#    (RANK=0 WORLD_SIZE=1 ...), and through --nproc-per-node 1: the same losses bit for bit.
# 2. Cost: gpt2-124m bf16, B=16 T=1024, on Tiny Shakespeare's GPT-2 tokens, plain against one
#    NCCL rank (the gradients' all-reduce and the per-step agreements included), three rounds
#    each alternating; median tokens/s of steps 6..30.
set -u -o pipefail
BIN=$(cd "${1:?BIN_DIR}" && pwd)
OUT=${2:?OUT_DIR}
mkdir -p "$OUT"
# NVLink multicast stays off (KINDS.md).
export NCCL_NVLS_ENABLE=0
export FERROGPT_REQUIRE_GPU=1   # no GPU found is a failure here, not a skip
for d in /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib \
    "$(python3 -c 'import nvidia.nccl, os; print(os.path.dirname(nvidia.nccl.__file__) + "/lib")' 2>/dev/null)"; do
    [ -d "$d" ] && export LD_LIBRARY_PATH="$d:${LD_LIBRARY_PATH:-}"
done
export FERROGPT_CACHE=/tmp/ferrogpt-cache
S="$OUT/summary.txt"
F="$BIN/ferrogpt"
W=$(mktemp -d)
one_rank() { RANK=0 WORLD_SIZE=1 LOCAL_RANK=0 MASTER_ADDR=127.0.0.1 MASTER_PORT=29511 "$@"; }
losses() { python3 -c "import json,sys; print([json.loads(l)['train_loss'] for l in open(sys.argv[1])])" "$1"; }
med() { python3 -c "
import json,sys,statistics
v=[json.loads(l)['tokens_per_sec'] for l in open(sys.argv[1])][5:]
print(f'{statistics.median(v):.0f}')" "$1"; }
{
    echo "# ferrogpt data-parallel GPU path, one GPU, $(date -u +%Y-%m-%dT%H:%MZ)"
    nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
    "$F" info | grep -E "^(gpu|cuda)"
} 2>&1 | tee "$S"
echo "## correctness: shakespeare-char bf16, 40 steps" | tee -a "$S"
common=(train --device cuda --dtype bf16 --preset shakespeare-char --steps 40 --eval-interval 20
        --eval-batches 10 --sample-tokens 0 --data "$BIN/tinyshakespeare.txt")
"$F" "${common[@]}" --out "$W/plain" >"$OUT/plain.log" 2>&1 || echo "plain FAILED" | tee -a "$S"
one_rank "$F" "${common[@]}" --out "$W/nccl" >"$OUT/nccl.log" 2>&1 || echo "nccl FAILED" | tee -a "$S"
"$F" "${common[@]}" --nproc-per-node 1 --out "$W/nproc" >"$OUT/nproc.log" 2>&1 || echo "nproc FAILED" | tee -a "$S"
grep -h "training\|NCCL\|error" "$OUT"/nccl.log | head -3 | tee -a "$S"
a=$(losses "$W/plain/metrics.jsonl"); b=$(losses "$W/nccl/metrics.jsonl"); c=$(losses "$W/nproc/metrics.jsonl")
[ "$a" = "$b" ] && [ "$a" = "$c" ] && echo "losses: identical (40 steps, plain = NCCL 1 rank = --nproc-per-node 1)" | tee -a "$S" \
    || { echo "losses DIFFER"; echo "plain $a"; echo "nccl  $b"; echo "nproc $c"; } | tee -a "$S"
echo "## cost: gpt2-124m bf16 B=16 T=1024, median tokens/s of steps 6..30" | tee -a "$S"
"$F" tokenize --tokenizer gpt2 "$BIN/tinyshakespeare.txt" --out "$W/ts.bin" >/dev/null 2>&1
g=(train --device cuda --dtype bf16 --preset gpt2-124m --batch-size 16 --seq-len 1024 --steps 30
   --eval-interval 0 --sample-tokens 0 --sequential --data "$W/ts.bin")
for r in 1 2 3; do
    rm -rf "$W/gp" "$W/gn"
    "$F" "${g[@]}" --out "$W/gp" >"$OUT/gpt2-plain-$r.log" 2>&1
    one_rank "$F" "${g[@]}" --out "$W/gn" >"$OUT/gpt2-nccl-$r.log" 2>&1
    echo "round $r: plain $(med "$W/gp/metrics.jsonl") tok/s, NCCL 1 rank $(med "$W/gn/metrics.jsonl") tok/s" | tee -a "$S"
done
tail -3 "$OUT/gpt2-nccl-1.log" >> "$S"
