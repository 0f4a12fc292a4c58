#!/usr/bin/env bash
# The wgpu rung (WGSL through Vulkan) beside cuBLAS f32 on one NVIDIA GPU, in one call
# (docs/wgpu.md, docs/benchmarks.md "wgpu"). Two steps:
#
#   bench/wgpu.sh --build DIR     here, with Rust: ferrogpt and the wgpu test binary, stripped,
#                                 and Debian's Vulkan loader package (libvulkan1), into DIR
#   bench/wgpu.sh DIR OUT_DIR     on the GPU machine (no Rust needed): the wgpu tests, then
#                                 `bench matmul --device wgpu` and `bench gpu` (cuBLAS f32)
#
# With the device tool: bench/wgpu.sh --build .device-carry/wgpu here, then
#   run(command="bash bench/wgpu.sh .device-carry/wgpu $OUT", carry=[".device-carry/wgpu"])
# OUT_DIR receives summary.txt (the tables and the ratio to cuBLAS), wgpu.json, cublas.json,
# their stderr (*.err) and test-wgpu.log. SIZES overrides the sizes (default 1024,2048,4096).
# Then the `--matmul wgpu` level beside the CPU rungs (offload.json: the crossover size) and
# GPT-2 124M batch-1 greedy decoding on `--device wgpu` beside `--device cuda` (random weights
# after one training step on the GPU, in /tmp; DECODE=0 skips it).
set -u -o pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)

if [ "${1:-}" = --build ]; then
    set -e
    out=${2:?DIR}
    mkdir -p "$out"
    cd "$ROOT"
    target=${CARGO_TARGET_DIR:-target}
    cargo build --release -q -p ferrogpt
    exe=$(cargo test --release -q -p ferrogpt-wgpu --test ladder --no-run --message-format=json 2>/dev/null \
        | grep -o '"executable":"[^"]*"' | tail -1 | cut -d'"' -f4)
    cp "$target/release/ferrogpt" "$out/ferrogpt"
    cp "$exe" "$out/wgpu_ladder"
    strip "$out/ferrogpt" "$out/wgpu_ladder"
    # The GPU machines may have the NVIDIA Vulkan driver but no loader (libvulkan.so.1).
    rm -f "$out"/*.deb
    (cd "$out" && apt-get download -q libvulkan1 >/dev/null)
    ls -la "$out"
    exit 0
fi

BIN=$(cd "${1:?DIR (see --build)}" && pwd)
OUT=${2:?OUT_DIR}
SIZES=${SIZES:-1024,2048,4096}
mkdir -p "$OUT"
S="$OUT/summary.txt"
rc=0
for d in /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib; do
    [ -d "$d" ] && export LD_LIBRARY_PATH="$d:${LD_LIBRARY_PATH:-}"
done
# The Vulkan loader: the machine's own, else the carried Debian package unpacked into /.
if ! ldconfig -p | grep -q 'libvulkan.so.1'; then
    for f in "$BIN"/*.deb; do [ -f "$f" ] && dpkg -x "$f" /; done
    ldconfig
fi
# The NVIDIA driver's Vulkan manifest, where the loader does not find it by itself.
if ! "$BIN/ferrogpt" info --no-peak 2>/dev/null | grep -q '^wgpu 0'; then
    for icd in /usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json /usr/share/vulkan/icd.d/nvidia_icd.json \
        /etc/vulkan/icd.d/nvidia_icd.json; do
        if [ -f "$icd" ]; then export VK_DRIVER_FILES=$icd; break; fi
    done
fi
{
    echo "# ferrogpt: the wgpu rung beside cuBLAS f32, $(date -u +%Y-%m-%dT%H:%MZ), sizes $SIZES"
    nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv,noheader
    echo "VK_DRIVER_FILES=${VK_DRIVER_FILES:-(loader default)}"
    "$BIN/ferrogpt" info --no-peak | grep -E "^(gpu|cuda|wgpu)|^  limits"
} 2>&1 | tee "$S"

echo "## wgpu tests (FERROGPT_REQUIRE_WGPU=1: no adapter is a failure)" | tee -a "$S"
FERROGPT_REQUIRE_WGPU=1 "$BIN/wgpu_ladder" --test-threads=1 --nocapture >"$OUT/test-wgpu.log" 2>&1 || rc=1
grep -E "^test result|panicked|^adapter" "$OUT/test-wgpu.log" | sort -u | tee -a "$S"

# One benchmark: the table into the summary, then the JSON; on failure the error's last line.
bench() {
    local name=$1
    shift
    "$BIN/ferrogpt" bench "$@" 2>"$OUT/$name.err" | tee -a "$S" &&
        "$BIN/ferrogpt" bench "$@" --format json >"$OUT/$name.json" 2>>"$OUT/$name.err" ||
        { rc=1; echo "failed: $(tail -1 "$OUT/$name.err")" | tee -a "$S"; }
}
echo "## bench matmul --device wgpu" | tee -a "$S"
bench wgpu matmul --device wgpu --sizes "$SIZES"
echo "## bench gpu: cuBLAS f32 (and our best CUDA f32 rung), same machine, same call" | tee -a "$S"
bench cublas gpu --levels warptile-db,cublas-f32 --sizes "$SIZES"

echo "## --matmul wgpu (data moved per call) beside the CPU rungs: the crossover" | tee -a "$S"
bench offload matmul --levels simd,library,wgpu --sizes 256,512,1024,2048,4096
python3 - "$OUT/offload.json" <<'PY' 2>&1 | tee -a "$S" || rc=1
import json, sys
try:
    rows = json.load(open(sys.argv[1]))
except (OSError, ValueError) as e:
    sys.exit(f"no crossover: no JSON ({e})")
sizes = sorted({r["m"] for r in rows})
best = lambda s, cpu: max((r["gflops"] for r in rows if r["m"] == s and (r["level"] != "wgpu") == cpu
                           and r.get("gflops")), default=None)
wins = [s for s in sizes if best(s, False) and best(s, True) and best(s, False) > best(s, True)]
print(f"crossover (smallest size where wgpu beats the best CPU rung): {wins[0] if wins else 'none up to ' + str(sizes[-1])}")
PY

if [ "${DECODE:-1}" != 0 ]; then
    echo "## GPT-2 124M, batch 1, greedy: --device wgpu beside --device cuda" | tee -a "$S"
    M=/tmp/ferrogpt-wgpu-gpt2-124m
    rm -rf "$M"
    if "$BIN/ferrogpt" train --preset gpt2-124m --device cuda --steps 1 --batch-size 1 --seq-len 64 \
        --eval-interval 0 --sample-tokens 0 --out "$M" >"$OUT/decode-train.log" 2>&1; then
        for dev in wgpu cuda cpu; do
            "$BIN/ferrogpt" sample --checkpoint "$M" --prompt "Hello, my name is" --tokens 128 \
                --temperature 0 --timing --device "$dev" >"$OUT/decode-$dev.txt" 2>"$OUT/decode-$dev.err" ||
                rc=1
            grep -h "^timing" "$OUT/decode-$dev.err" | tee -a "$S" ||
                echo "failed: $(tail -1 "$OUT/decode-$dev.err")" | tee -a "$S"
        done
        cmp -s "$OUT/decode-wgpu.txt" "$OUT/decode-cpu.txt" && echo "wgpu text = cpu text" | tee -a "$S" ||
            echo "wgpu text differs from the cpu's (see decode-*.txt)" | tee -a "$S"
    else
        rc=1
        echo "failed: $(tail -1 "$OUT/decode-train.log")" | tee -a "$S"
    fi
    rm -rf "$M"
fi

echo "## best WGSL f32 rung against cuBLAS f32 (issue 18's target: >= 40% at 4096)" | tee -a "$S"
python3 - "$OUT/wgpu.json" "$OUT/cublas.json" <<'PY' 2>&1 | tee -a "$S" || rc=1
import json, sys
try:
    wgpu, peer = (json.load(open(p)) for p in sys.argv[1:3])
except (OSError, ValueError) as e:
    sys.exit(f"no ratio: a benchmark gave no JSON ({e})")
cublas = {r["m"]: r["tflops"] for r in peer if r["level"] == "cublas-f32" and r["tflops"]}
for size in sorted({r["m"] for r in wgpu}):
    rows = [r for r in wgpu if r["m"] == size and r["dtype"] == "f32" and r["gflops"]]
    if not rows or size not in cublas:
        continue
    best = max(rows, key=lambda r: r["gflops"])
    f16 = [r for r in wgpu if r["m"] == size and r["dtype"] == "f16" and r["gflops"]]
    line = (f"{size}: best WGSL f32 {best['level']} {best['gflops'] / 1e3:.2f} TFLOPS, "
            f"cuBLAS f32 {cublas[size]:.2f} TFLOPS: {100 * best['gflops'] / 1e3 / cublas[size]:.1f}%")
    if f16:
        line += f"; WGSL f16 {f16[0]['gflops'] / 1e3:.2f} TFLOPS"
    print(line)
PY
exit $rc
