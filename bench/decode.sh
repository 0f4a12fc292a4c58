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
#
# LLAMA_CPP=/path/to/llama.cpp/build adds llama.cpp as a second peer (built from source by
# you; nothing of it is in this repository): the model is exported by `ferrogpt export --gguf`
# as F32 and Q8_0, llama-bench decodes 128 tokens from an empty context on each (tg128, mean
# ± std of its repetitions, after its warm-up), and ferrogpt decodes the same files (f32, and
# the Q8_0 file with --weights int8: the same quants). Without LLAMA_CPP these rows are skipped.
set -uo pipefail
cd "$(dirname "$0")/.."
bin=target/release/ferrogpt
model=${1:-/tmp/gpt2-rand}
rounds=${2:-3}
threads=${3:-2}
py=${PYTHON:-python3}
llama=${LLAMA_CPP:-}
if [ -n "$llama" ]; then
  lbench="$llama/bin/llama-bench"
  [ -x "$lbench" ] || { echo "LLAMA_CPP=$llama holds no bin/llama-bench" >&2; exit 1; }
fi
if [ ! -f "$model/model.safetensors" ]; then
  "$py" -c "
import torch, sys
from transformers import GPT2Config, GPT2LMHeadModel
torch.manual_seed(0)
GPT2LMHeadModel(GPT2Config()).save_pretrained(sys.argv[1], safe_serialization=True)" "$model"
fi
if [ -n "$llama" ]; then
  gg=$(mktemp -d)
  trap 'rm -rf "$gg"' EXIT
  for t in f32 q8_0; do
    $bin export --gguf "$gg/model-$t.gguf" --checkpoint "$model" --type $t >/dev/null || exit 1
  done
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
  if [ -n "$llama" ]; then
    for t in f32 q8_0; do
      w=$t; [ $t = q8_0 ] && w=int8
      echo -n "gguf $t: "
      $bin sample --checkpoint "$gg/model-$t.gguf" --prompt "$prompt" --tokens 128 --temperature 0 \
        --no-stop --weights $w --threads "$threads" --timing 2>&1 >/dev/null | grep timing
      "$lbench" -m "$gg/model-$t.gguf" -t "$threads" -p 0 -n 128 -r 3 -o md 2>/dev/null |
        grep tg128 | sed 's/^/llama.cpp: /'
    done
  fi
  # The peer on every thread count up to ours: PyTorch's OpenMP threads stall badly when the
  # cores are shared with other processes, and one thread is then its best.
  for t in $(seq "$threads"); do
    "$py" bench/peers/hf_generate_timing.py --model "$model" --threads "$t" --tokens 128 \
      --prompt-ids 15496,11,616,1438,318 2>/dev/null | grep peer
  done
done
