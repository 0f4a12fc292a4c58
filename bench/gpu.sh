#!/usr/bin/env bash
# Every GPU test and GPU benchmark of docs/benchmarks.md, with the PyTorch peer, in one go, on a
# machine with an NVIDIA GPU (no Rust needed there):
#
#   bench/gpu.sh BIN_DIR OUT_DIR [DATA]
#
# BIN_DIR holds binaries built elsewhere (scripts/gpu-binaries.sh BIN_DIR makes them):
#   ferrogpt, gpu_step (crates/gpu/examples), ladder (crates/cuda/tests), gpu_tests, train_tests
#   (crates/gpu/tests). DATA is Tiny Shakespeare (default BIN_DIR/tinyshakespeare.txt).
# OUT_DIR receives summary.txt and logs.tar.gz (every log, the peer's JSON, the metrics). PyTorch (python3 -c "import torch") is
# the peer; without it the peer rows are skipped. PARTS picks parts (default all):
#   tests ladder gpt2 llama char sample   (the default)
#   profile   where a gpt2-124m step's milliseconds go, per kernel, ours (gpu_step with
#             FERROGPT_GPU_PROFILE=1) and, with the gpt2 part, PyTorch compiled's (torch.profiler
#             on one extra step), per dtype
#   big       gpt2-350m, gpt2-774m and gpt2-1558m (bf16, T=1024), with and without --recompute,
#             beside llm.c on the same shapes when LLMC is set
#   llmc      gpt2-124m bf16 at B=16 and B=64 beside llm.c (LLMC set)
#   decode    gpt2-124m greedy decoding at batch 1 (the GPU key/value cache) and generation at
#             batch 64 beside transformers'
#             generate on the same GPU
# LLMC=DIR: an llm.c checkout (sources; built here with cuDNN attention, cudnn-frontend's headers
# in DIR/cudnn-frontend/include) and LLMC_DATA=DIR holding ts_train.bin and ts_val.bin (llm.c
# token files, e.g. from `ferrogpt tokenize`; the validation file must hold more than B×T
# tokens). Without LLMC the llm.c rows are skipped.
# (llama: the smollm-135m preset's training step beside bench/peers/pytorch_llama.py.)
# SAVE=DIR: the gpt2, llama and llmc parts also save each `bench train` run in DIR (--save;
# SAVE_LABEL=NAME names the machine, default its host name), with the part's PyTorch and llm.c
# runs as peer rows (--peer-json, --peer-llmc-log), for `ferrogpt report`. In those parts the
# peers run first, then ours, which reads their output.
set -u -o pipefail
BIN=$(cd "${1:?BIN_DIR}" && pwd)
OUT=${2:?OUT_DIR}
RAW="$OUT/raw"
DATA=${3:-$BIN/tinyshakespeare.txt}
PARTS=${PARTS:-"tests ladder gpt2 llama char sample"}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
mkdir -p "$RAW"
for d in /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib; do
    [ -d "$d" ] && export LD_LIBRARY_PATH="$d:${LD_LIBRARY_PATH:-}"
done
export FERROGPT_CACHE=${FERROGPT_CACHE:-/tmp/ferrogpt-cache}
# The GPU tests read tests/fixtures (llama-tiny) from this checkout, not the one they were built in.
export FERROGPT_FIXTURES=${FERROGPT_FIXTURES:-$ROOT/tests/fixtures}
export NCCL_NVLS_ENABLE=0
# A GPU test that finds no GPU (a broken driver setup) fails here instead of saying skipped.
export FERROGPT_REQUIRE_GPU=1
S="$OUT/summary.txt"
has() { case " $PARTS " in *" $1 "*) return 0 ;; esac; return 1; }
torch_ok() { python3 -c "import torch; assert torch.cuda.is_available()" 2>/dev/null; }
peer() { PYTHONUNBUFFERED=1 python3 "$ROOT/bench/peers/pytorch_gpt2.py" "$@"; }
SAVE=${SAVE:-}
save=()
if [ -n "$SAVE" ]; then save=(--save "$SAVE" ${SAVE_LABEL:+--label "$SAVE_LABEL"}); fi
# `with_peers_of FILES...` sets with_peers to bench train's --save arguments and, with SAVE, a
# --peer-json (*.json) or --peer-llmc-log (any other file) for each FILE; empty without SAVE.
with_peers=()
with_peers_of() {
    with_peers=(${save[@]+"${save[@]}"})
    [ -n "$SAVE" ] || return 0
    local f
    for f in "$@"; do
        case $f in
            *.json) with_peers+=(--peer-json "$f") ;;
            *) with_peers+=(--peer-llmc-log "$f") ;;
        esac
    done
}
rc=0
{
    echo "# ferrogpt GPU benchmarks, $(date -u +%Y-%m-%dT%H:%MZ)"
    nvidia-smi --query-gpu=name,driver_version,clocks.max.sm,power.limit,memory.total --format=csv,noheader
    "$BIN/ferrogpt" info | grep -E "^(gpu|cuda)"
    torch_ok && python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)"
} 2>&1 | tee "$S"

if has tests; then
    echo "## tests" | tee -a "$S"
    for t in ${TESTS:-gpu_tests train_tests ladder}; do
        "$BIN/$t" --test-threads=1 --nocapture >"$RAW/test-$t.log" 2>&1 || rc=1
        grep -E "^test result|panicked" "$RAW/test-$t.log" | sed "s/^/$t: /" | tee -a "$S"
    done
fi

if has ladder; then
    echo "## matmul ladder (bench gpu)" | tee -a "$S"
    TC_SWEEP=0 SIZES=${SIZES:-1024,2048,4096,8192} "$ROOT/crates/cuda/run-gpu.sh" "$BIN" "$RAW/ladder" >/dev/null 2>&1 || rc=1
    cat "$RAW/ladder/bench.txt" "$RAW/ladder/torch.txt" 2>/dev/null | tee -a "$S"
fi

if has gpt2; then
    echo "## gpt2-124m training step, B=16, T=1024 (random tokens)" | tee -a "$S"
    for dt in ${GPT2_DTYPES:-bf16 fp32 tf32}; do
        # The peer first: with SAVE, ours saves its JSON as a peer row.
        peers=()
        if torch_ok; then
            if peer --device cuda --dtype $dt --compile --preset gpt2-124m --batch 16 --seq 1024 --steps 20 --warmup 5 \
                $(has profile && echo --profile) >"$RAW/torch-gpt2-$dt.json" 2>"$RAW/torch-gpt2-$dt.err"; then
                peers=("$RAW/torch-gpt2-$dt.json")
            else
                rc=1
            fi
            python3 -c "import json,sys; r=json.load(open(sys.argv[1])); print(f\"PyTorch {r['env']['torch']} compile $dt: {r['median_step_s']*1e3:.2f} ms/step, {r['tokens_per_s']:.0f} tokens/s, MFU {100*(r.get('mfu') or 0):.1f}%\")" \
                "$RAW/torch-gpt2-$dt.json" | tee -a "$S"
        fi
        with_peers_of ${peers[@]+"${peers[@]}"}
        "$BIN/ferrogpt" bench train --device cuda --dtype $dt --preset gpt2-124m --batch-size 16 --seq-len 1024 \
            --steps 20 --warmup 5 ${with_peers[@]+"${with_peers[@]}"} 2>"$RAW/gpt2-$dt.err" | tee -a "$S" || rc=1
    done
fi

# llm.c: built once per call, then `llmc NAME ARGS...` runs train_gpt2cu for 30 steps and prints
# the median of steps 6-30 (ours: --warmup 5 too); llmc_log is then its log, or empty when it
# failed.
LLMC=${LLMC:-}
llmc_ok=0
if [ -n "$LLMC" ] && { has big || has llmc || has profile; }; then
    # The link wants unversioned libcudnn.so and libnvidia-ml.so; a machine whose cuDNN came with
    # PyTorch's wheels (nvidia.cudnn) or whose driver ships only .so.1 has neither: link names
    # for them in one folder, cuDNN's headers from the same place.
    links=/tmp/llmc-link; mkdir -p "$links"
    cudnn=$(python3 -c "import nvidia.cudnn as m, os; print(os.path.dirname(m.__file__) if m.__file__ else list(m.__path__)[0])" 2>/dev/null || true)
    if [ -n "$cudnn" ] && [ -d "$cudnn/lib" ]; then
        export CPATH="$cudnn/include:${CPATH:-}" LD_LIBRARY_PATH="$cudnn/lib:$LD_LIBRARY_PATH"
        ln -sf "$(ls "$cudnn"/lib/libcudnn.so* | head -1)" "$links/libcudnn.so"
    fi
    ml=$(ldconfig -p | grep -o '/[^ ]*libnvidia-ml.so[.0-9]*' | head -1)
    [ -n "$ml" ] && ln -sf "$ml" "$links/libnvidia-ml.so"
    export LIBRARY_PATH="$links:${LIBRARY_PATH:-}"
    if make -C "$LLMC" train_gpt2cu USE_CUDNN=1 NO_MULTI_GPU=1 NO_USE_MPI=1 GPU_COMPUTE_CAPABILITY=90 \
        NVCC_LDLIBS="-lcuda -lnvrtc" >"$RAW/llmc-build.log" 2>&1; then
        llmc_ok=1
    else
        echo "llm.c did not build (see llmc-build.log)" | tee -a "$S"; rc=1
    fi
fi
llmc_log=
llmc() {
    local name=$1; shift
    llmc_log=
    [ $llmc_ok = 1 ] || return 0
    (cd "$LLMC" && ./train_gpt2cu -i "$LLMC_DATA/ts_train.bin" -j "$LLMC_DATA/ts_val.bin" -v 100000 -s 100000 \
        -m 1 -x 30 "$@") >"$RAW/llmc-$name.log" 2>&1 || { echo "llm.c $name failed" | tee -a "$S"; rc=1; return 0; }
    llmc_log=$RAW/llmc-$name.log
    python3 - "$RAW/llmc-$name.log" "$name" "$*" <<'PY' | tee -a "$S"
import re, statistics, sys
ms = [float(m.group(1)) for l in open(sys.argv[1]) if l.startswith("step")
      for m in [re.search(r"\| ([0-9.]+) ms \|", l)] if m]
tok = [float(m.group(1)) for l in open(sys.argv[1]) if l.startswith("step")
       for m in [re.search(r"\| ([0-9.]+) tok/s", l)] if m]
med = statistics.median(ms[5:])
print(f"llm.c {sys.argv[2]} ({sys.argv[3]}): {med:.2f} ms/step (median of {len(ms[5:])}), "
      f"last EMA {tok[-1]:.0f} tok/s")
PY
}
ours() {
    local name=$1; shift
    "$BIN/ferrogpt" bench train --device cuda --steps 20 --warmup 5 "$@" 2>"$RAW/ours-$name.err" | tee -a "$S" || rc=1
    grep -h "GPU memory" "$RAW/ours-$name.err" | tee -a "$S"
}

if has llmc; then
    echo "## gpt2-124m bf16 beside llm.c (random init; llm.c with cuDNN attention)" | tee -a "$S"
    for b in ${LLMC_BATCHES:-16 64}; do
        # llm.c first: with SAVE, ours saves its two runs as peer rows.
        peers=()
        llmc d12-b$b-r0 -e d12 -b $b -t 1024 -r 0
        [ -n "$llmc_log" ] && peers+=("$llmc_log")
        llmc d12-b$b-r1 -e d12 -b $b -t 1024 -r 1
        [ -n "$llmc_log" ] && peers+=("$llmc_log")
        with_peers_of ${peers[@]+"${peers[@]}"}
        ours 124m-b$b --dtype bf16 --preset gpt2-124m --batch-size $b --seq-len 1024 ${with_peers[@]+"${with_peers[@]}"}
    done
fi

if has big; then
    echo "## GPT-2 medium, large, XL: bf16, T=1024 (random tokens)" | tee -a "$S"
    # preset, llm.c's name for the shape, batch, our --recompute levels, llm.c's -r levels
    # (BIG_SPECS overrides: specs separated by ';')
    IFS=';' read -ra specs <<<"${BIG_SPECS:-350m d24 16 0,2 0,1;774m d36 16 0 -;1558m d48 8 0 0;1558m d48 16 1,2 1}"
    for spec in "${specs[@]}"; do
        set -- $spec
        for r in ${4//,/ }; do
            ours "$1-b$3-r$r" --dtype bf16 --preset gpt2-$1 --batch-size $3 --seq-len 1024 --recompute $r
        done
        for r in ${5//,/ }; do
            [ "$r" = - ] || llmc "$2-b$3-r$r" -e $2 -b $3 -t 1024 -r $r
        done
    done
fi

if has profile; then
    echo "## profile: gpt2-124m B=16 T=1024, per kernel (ours: each launch synchronised)" | tee -a "$S"
    for dt in bf16 fp32 tf32; do
        FERROGPT_GPU_PROFILE=1 "$BIN/gpu_step" gpt2 16 1024 $dt 5 >"$RAW/profile-$dt.txt" 2>&1 || rc=1
        "$BIN/gpu_step" gpt2 16 1024 $dt 10 2>/dev/null | grep "tokens/s" | tee -a "$S"
        head -45 "$RAW/profile-$dt.txt" | grep -v "^step" | tee -a "$S"
        if [ $dt = bf16 ] && command -v ncu >/dev/null; then
            # Each kernel's own time, ours and llm.c's, under Nsight Compute (kernels serialised).
            ncu --clock-control none --metrics gpu__time_duration.sum --csv "$BIN/gpu_step" gpt2 16 1024 bf16 1 \
                >"$RAW/ncu-ours.csv" 2>&1 || rc=1
            echo "ncu, ours (3 steps + 3 forward-only passes):" | tee -a "$S"
            python3 "$ROOT/bench/ncu_summary.py" "$RAW/ncu-ours.csv" 3 40 | tee -a "$S"
            if [ $llmc_ok = 1 ]; then
                (cd "$LLMC" && ncu --clock-control none --metrics gpu__time_duration.sum --csv ./train_gpt2cu \
                    -i "$LLMC_DATA/ts_train.bin" -j "$LLMC_DATA/ts_val.bin" -v 100000 -s 100000 -m 1 -x 3 \
                    -e d12 -b 16 -t 1024 -r 0) >"$RAW/ncu-llmc.csv" 2>&1 || rc=1
                echo "ncu, llm.c -r 0 (3 steps + 2 one-batch validations):" | tee -a "$S"
                python3 "$ROOT/bench/ncu_summary.py" "$RAW/ncu-llmc.csv" 3 40 | tee -a "$S"
            fi
        fi
        # PyTorch's kernels (torch.profiler, one step after the gpt2 part's timed ones).
        if [ -f "$RAW/torch-gpt2-$dt.err" ]; then
            echo "PyTorch compiled $dt:" | tee -a "$S"
            grep -E "^(-|Name|Self)|%" "$RAW/torch-gpt2-$dt.err" | head -50 | tee -a "$S"
        fi
    done
fi

if has decode; then
    # GPT-2 124M (random init, one training step to make the checkpoint), greedy, batch 1.
    echo "## gpt2-124m decoding, batch 1, greedy, 256 new tokens (key/value cache on the GPU)" | tee -a "$S"
    rm -rf /tmp/ferrogpt-g124
    "$BIN/ferrogpt" train --device cuda --dtype bf16 --preset gpt2-124m --steps 1 --eval-interval 0 \
        --sample-tokens 0 --data "$DATA" --out /tmp/ferrogpt-g124 >"$RAW/g124-train.log" 2>&1 || rc=1
    for dt in bf16 fp32; do
        "$BIN/ferrogpt" sample --device cuda --dtype $dt --checkpoint /tmp/ferrogpt-g124 --prompt "Hello, my name is" \
            --tokens 256 --temperature 0 --timing >"$RAW/decode-$dt.txt" 2>"$RAW/decode-$dt.err" || rc=1
        echo "ferrogpt $dt: $(grep timing "$RAW/decode-$dt.err")" | tee -a "$S"
        # The same without the decoding step's CUDA graph (each kernel launched by the host).
        FERROGPT_GPU_GRAPHS=0 "$BIN/ferrogpt" sample --device cuda --dtype $dt --checkpoint /tmp/ferrogpt-g124 \
            --prompt "Hello, my name is" --tokens 256 --temperature 0 --timing >"$RAW/decode-$dt-eager.txt" \
            2>"$RAW/decode-$dt-eager.err" || rc=1
        echo "ferrogpt $dt, no graph: $(grep timing "$RAW/decode-$dt-eager.err")" | tee -a "$S"
        cmp -s "$RAW/decode-$dt.txt" "$RAW/decode-$dt-eager.txt" || { echo "graph and eager texts differ" | tee -a "$S"; rc=1; }
        if torch_ok; then
            python3 "$ROOT/bench/peers/hf_generate_timing.py" --model /tmp/ferrogpt-g124 --device cuda --dtype $dt \
                --tokens 256 --repeats ${HF_REPEATS:-3} 2>"$RAW/hf-decode-$dt.err" | tail -1 | tee -a "$S"
        fi
    done
    # Generation throughput: 64 greedy continuations of the prompt side by side.
    echo "## gpt2-124m generation, batch 64, greedy, 256 new tokens each" | tee -a "$S"
    for dt in bf16 fp32; do
        "$BIN/ferrogpt" sample --device cuda --dtype $dt --checkpoint /tmp/ferrogpt-g124 --prompt "Hello, my name is" \
            --tokens 256 --temperature 0 --no-stop --num-samples 64 --batch 64 --timing \
            >"$RAW/decode64-$dt.txt" 2>"$RAW/decode64-$dt.err" || rc=1
        echo "ferrogpt $dt: $(grep timing "$RAW/decode64-$dt.err")" | tee -a "$S"
        # Greedy and the same prompt: the 64 texts should agree with each other (and, up to
        # the summation order of products of 64 rows instead of 1, with the batch-1 text).
        python3 - "$RAW/decode64-$dt.txt" "$RAW/decode-$dt.txt" <<'PY' | tee -a "$S"
import sys
texts = open(sys.argv[1]).read().split("---------------\n")
one = open(sys.argv[2]).read()
same = sum(t == texts[0] for t in texts)
common = next((i for i, (a, b) in enumerate(zip(texts[0], one)) if a != b), min(len(texts[0]), len(one)))
print(f"  {len(texts)} texts, {same} equal to the first; the first agrees with batch 1 for {common} of {len(one)} characters")
PY
        if torch_ok; then
            python3 "$ROOT/bench/peers/hf_generate_timing.py" --model /tmp/ferrogpt-g124 --device cuda --dtype $dt \
                --tokens 256 --batch 64 --repeats ${HF_REPEATS:-3} 2>"$RAW/hf-decode64-$dt.err" | tail -1 | tee -a "$S"
        fi
    done
fi

if has llama; then
    # GPT-2's tokenizer (the preset's): vocabulary 50257, padded to 50304; the peer the same size.
    echo "## smollm-135m training step, bf16, B=16, T=1024 (random tokens)" | tee -a "$S"
    # The peer first: with SAVE, ours saves its JSON as a peer row.
    peers=()
    if torch_ok; then
        if PYTHONUNBUFFERED=1 python3 "$ROOT/bench/peers/pytorch_llama.py" --device cuda --compile --preset smollm-135m \
            --vocab 50304 --steps 20 --warmup 5 >"$RAW/torch-smollm.json" 2>"$RAW/torch-smollm.err"; then
            peers=("$RAW/torch-smollm.json")
        else
            rc=1
        fi
        python3 -c "import json,sys; r=json.load(open(sys.argv[1])); print(f\"PyTorch compile bf16: {r['median_step_s']*1e3:.2f} ms/step, {r['tokens_per_s']:.0f} tokens/s, MFU {100*(r.get('mfu') or 0):.1f}%\")" \
            "$RAW/torch-smollm.json" | tee -a "$S"
    fi
    with_peers_of ${peers[@]+"${peers[@]}"}
    "$BIN/ferrogpt" bench train --device cuda --dtype bf16 --preset smollm-135m --batch-size 16 --seq-len 1024 \
        --steps 20 --warmup 5 ${with_peers[@]+"${with_peers[@]}"} 2>"$RAW/smollm.err" | tee -a "$S" || rc=1
fi

if has char; then
    echo "## shakespeare-char: full run, wall clock with evaluations (target val <= 1.47 in < 45 s)" | tee -a "$S"
    rm -rf /tmp/ferrogpt-char
    /usr/bin/time -f "ferrogpt wall %e s" "$BIN/ferrogpt" train --device cuda --dtype bf16 --preset shakespeare-char \
        --data "$DATA" --out /tmp/ferrogpt-char >"$RAW/char.log" 2>&1 || rc=1
    tail -1 "$RAW/char.log" | tee -a "$S"
    python3 - /tmp/ferrogpt-char/metrics.jsonl <<'PY' | tee -a "$S"
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
ev = [r for r in rows if "val_loss" in r]
best = min(ev, key=lambda r: r["val_loss"])
hit = next((r for r in ev if r["val_loss"] <= 1.47), None)
print(f"ferrogpt: {len(rows)} steps, final val {ev[-1]['val_loss']:.4f} at {ev[-1]['elapsed_s']:.1f} s; "
      f"best val {best['val_loss']:.4f} (step {best['step']}); "
      + (f"val <= 1.47 first at step {hit['step']}, {hit['elapsed_s']:.1f} s" if hit else "val never <= 1.47"))
PY
    cp /tmp/ferrogpt-char/metrics.jsonl "$RAW/char-metrics.jsonl"
    if torch_ok; then
        peer --device cuda --dtype bf16 --compile --train-shakespeare "$DATA" --recipe shakespeare-char \
            --eval-interval 250 --eval-batches 200 --target-loss 1.47 >"$RAW/torch-char.json" 2>"$RAW/torch-char.err" || rc=1
        python3 -c "import json,sys; r=json.load(open(sys.argv[1])); print(f\"PyTorch compile bf16: final val {r['val_loss']:.4f}, wall {r['wall_s']:.1f} s, train {r['train_s']:.1f} s, val<=1.47 at {r.get('target_reached_s')} s\")" \
            "$RAW/torch-char.json" | tee -a "$S"
    fi
fi

if has sample; then
    echo "## sampling from the shakespeare-char run (its best weights)" | tee -a "$S"
    /usr/bin/time -f "sample wall %e s" "$BIN/ferrogpt" sample --device cuda --checkpoint /tmp/ferrogpt-char/best \
        --prompt "ROMEO:" --tokens 300 --temperature 0.8 --top-k 40 --seed 1 >"$RAW/sample.txt" 2>"$RAW/sample.err" || rc=1
    head -c 400 "$RAW/sample.txt" | tee -a "$S"; echo | tee -a "$S"; tail -1 "$RAW/sample.err" | tee -a "$S"
    echo "## eval of the best weights (the whole file, consecutive windows)" | tee -a "$S"
    /usr/bin/time -f "eval wall %e s" "$BIN/ferrogpt" eval --device cuda --dtype bf16 --checkpoint /tmp/ferrogpt-char/best \
        --data "$DATA" 2>&1 | tail -3 | tee -a "$S" || rc=1
fi
tar -czf "$OUT/logs.tar.gz" -C "$OUT" raw && rm -rf "$RAW"
exit $rc
