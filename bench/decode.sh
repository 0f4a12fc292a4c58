#!/usr/bin/env bash
# Issue 16: batch-1 decoding of GPT-2 124M on the CPU, ferrogpt's f32, bf16 and int8 weights
# beside transformers' generate (greedy, KV cache), the same weights, the same threads,
# alternating round by round:
#   bench/decode.sh [MODEL_DIR] [ROUNDS] [THREADS]
# MODEL_DIR (default /tmp/gpt2-rand) is made when missing: a random-init GPT2LMHeadModel saved
# by transformers (seed 0). Needs a release build and Python with torch + transformers
# (PYTHON=/path/to/python to pick one). Each ferrogpt line: time to the first token after
# loading (the prompt's prefill on the tape + sampling), then the median of 127 decoding steps;
# the peer's line the same for generate (after from_pretrained).
set -uo pipefail
cd "$(dirname "$0")/.."
bin=target/release/ferrogpt
model=${1:-/tmp/gpt2-rand}
rounds=${2:-3}
threads=${3:-2}
py=${PYTHON:-python3}
if [ ! -f "$model/model.safetensors" ]; then
  "$py" -c "
import torch, sys
from transformers import GPT2Config, GPT2LMHeadModel
torch.manual_seed(0)
GPT2LMHeadModel(GPT2Config()).save_pretrained(sys.argv[1], safe_serialization=True)" "$model"
fi
echo "# decoding benchmark (issue 16), $(date -u +%Y-%m-%dT%H:%MZ), commit $(git rev-parse --short HEAD), $threads threads, $model"
$bin info 2>/dev/null | grep -E "^(model|microarch|caches|features) "
prompt="Hello, my name is" # GPT-2 ids 15496,11,616,1438,318
for r in $(seq "$rounds"); do
  echo "## round $r: $(uptime | sed 's/.*load/load/')"
  for w in f32 bf16 int8; do
    $bin sample --checkpoint "$model" --prompt "$prompt" --tokens 128 --temperature 0 --no-stop \
      --weights $w --threads "$threads" --timing 2>&1 >/dev/null | grep timing
  done
  # The peer on every thread count up to ours: PyTorch's OpenMP threads stall badly when the
  # cores are shared with other processes, and one thread is then its best.
  for t in $(seq "$threads"); do
    "$py" bench/peers/hf_generate_timing.py --model "$model" --threads "$t" --tokens 128 \
      --prompt-ids 15496,11,616,1438,318 2>/dev/null | grep peer
  done
done
