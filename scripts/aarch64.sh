#!/usr/bin/env bash
# Builds ferrogpt for 64-bit Arm Linux (Graviton, Ampere, a Raspberry Pi 5) on an x86-64 Debian
# machine, and checks the build under QEMU's user-mode emulation:
#
#   scripts/aarch64.sh [--check]
#
# Needs Debian's gcc-aarch64-linux-gnu, libc6-dev-arm64-cross and qemu-user (.ci/run installs
# them) and rustup's aarch64-unknown-linux-gnu standard library (added here). The binary lands in
# $CARGO_TARGET_DIR/aarch64-unknown-linux-gnu/release/ferrogpt, ready for bench/fleet.sh
# (FERROGPT_BIN_aarch64=...). With --check (CI): clippy for the target with warnings as errors,
# then the binary runs under qemu-aarch64: `info`, a matmul benchmark of the CPU rungs (the simd
# rung's NEON kernel among them) with each result's error checked, a few training steps, an exact
# resume and a sample.
# QEMU's timings mean nothing; this checks that the build runs, not how fast.
set -euo pipefail
cd "$(dirname "$0")/.."
target=aarch64-unknown-linux-gnu
if ! rustup target list --installed | grep -qx $target && ! rustup target add $target; then
    # rustup fetches the target's standard library from static.rust-lang.org.
    echo "aarch64: SKIPPED: rustup could not add $target (no network to static.rust-lang.org?)"
    [ "${1:-}" = "--check" ] && exit 0
    exit 1
fi
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc
export CC_aarch64_unknown_linux_gnu=aarch64-linux-gnu-gcc
export AR_aarch64_unknown_linux_gnu=aarch64-linux-gnu-ar
if [ "${1:-}" = "--check" ]; then
    # The x86-only code behind its cfg: nothing unused or unreachable on Arm.
    cargo clippy --release --target $target --workspace --all-targets -- -D warnings
fi
cargo build --release --target $target -p ferrogpt
bin=${CARGO_TARGET_DIR:-target}/$target/release/ferrogpt
file "$bin" 2>/dev/null || true
[ "${1:-}" = "--check" ] || exit 0

run() { qemu-aarch64 -L /usr/aarch64-linux-gnu "$bin" "$@"; }
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
data=data/tinyshakespeare.txt
[ -f "$data" ] || data=../shared/data/tinyshakespeare.txt
[ -f "$data" ] || { head -c 200000 /dev/urandom | base64 >"$dir/data.txt"; data=$dir/data.txt; }
run info | tee "$dir/info.txt"
grep -q '^arch *aarch64' "$dir/info.txt"
# Every CPU rung this build has, each product measured against the benchmark's f64 reference.
run bench matmul --sizes 48,96 | tee "$dir/matmul.txt"
# The simd rung runs its NEON kernel here, and every rung agrees with the reference to f32
# rounding (the table's last column: max relative error).
grep -q '^| simd ' "$dir/matmul.txt" || { echo "aarch64: no simd rung in bench matmul"; exit 1; }
awk -F'|' '$2 ~ /^ [a-z]/ && $9 + 0 > 1e-5 { print "aarch64: error too large:" $2 $9; bad = 1 }
    END { exit bad }' "$dir/matmul.txt"
tiny=(--n-layer 2 --n-head 2 --n-embd 32 --block-size 32 --batch-size 4 --eval-interval 0 --sample-tokens 0)
run train --data "$data" --out "$dir/run" --steps 6 "${tiny[@]}" >"$dir/train.txt"
run train --data "$data" --out "$dir/half" --steps 3 "${tiny[@]}" >/dev/null
run train --resume "$dir/half" --steps 6 >/dev/null
# Resuming after step 3 gives the weights of the run that never stopped, bit for bit (the
# tensors: the header's metadata names each run).
python3 - "$dir/run/model.safetensors" "$dir/half/model.safetensors" <<'PY'
import struct, sys
def tensors(path):
    b = open(path, "rb").read()
    return b[8 + struct.unpack("<Q", b[:8])[0]:]
assert tensors(sys.argv[1]) == tensors(sys.argv[2]), "resumed weights differ"
PY
run sample --checkpoint "$dir/run" --tokens 20 --seed 3 >"$dir/sample.txt"
[ -s "$dir/sample.txt" ]
echo "aarch64: the build runs under qemu (info, matmul rungs, training, resume, sampling)"
