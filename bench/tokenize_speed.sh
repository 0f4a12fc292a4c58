#!/usr/bin/env bash
# Encoding speed of `ferrogpt tokenize` (GPT-2, into shards) beside the Python `tokenizers`
# package's batch encoder, on the same documents with the same tokenizer.json:
#   bench/tokenize_speed.sh [THREADS] [MB]        (defaults: 2 threads, 50 MB)
# The input: Tiny Shakespeare cut into 1,000 documents at blank lines, repeated to about MB of
# text, as JSONL ({"text": ...} per line). The tokenizer.json is GPT-2's as a ferrogpt run
# directory holds it (a 1-step training run writes it). ferrogpt is timed end to end (read
# and parse the JSONL, encode, write shards with an end-of-text id before each document);
# Python only for `encode_batch_fast` over the documents already in memory. MB/s counts the
# documents' UTF-8 bytes. Medians of 3 runs each; the ids are checked equal once.
# Needs: a release build (cargo build --release), python3 with `tokenizers` (PYTHON=...).
set -euo pipefail
cd "$(dirname "$0")/.."
threads=${1:-2}
mb=${2:-50}
bin=target/release/ferrogpt
[ -x "$bin" ] || bin=${CARGO_TARGET_DIR:-target}/release/ferrogpt
py=${PYTHON:-python3}
data=data/tinyshakespeare.txt
[ -f "$data" ] || data=../shared/data/tinyshakespeare.txt
work=$(mktemp -d /tmp/ferrogpt-tokspeed.XXXXXX)
trap 'rm -rf "$work"' EXIT

echo "# ferrogpt tokenize vs tokenizers (Python), $(date -u +%Y-%m-%dT%H:%MZ), commit $(git rev-parse --short HEAD), $threads threads"
"$bin" info --no-peak
"$bin" train --tokenizer gpt2 --data "$data" --out "$work/run" --steps 1 --n-layer 1 \
    --n-head 1 --n-embd 8 --block-size 8 --batch-size 1 --sample-tokens 0 --eval-batches 1 \
    >/dev/null 2>&1
"$py" - "$data" "$work/docs.jsonl" "$mb" <<'EOF'
import json, sys
text = open(sys.argv[1], encoding="utf-8").read()
paras = text.split("\n\n")
n, k = len(paras), 1000
docs = ["\n\n".join(paras[i * n // k:(i + 1) * n // k]) for i in range(k)]
reps = max(1, round(float(sys.argv[3]) * 1e6 / sum(len(d.encode()) for d in docs)))
with open(sys.argv[2], "w", encoding="utf-8") as f:
    for _ in range(reps):
        for d in docs:
            f.write(json.dumps({"text": d}) + "\n")
print(f"input: {reps * k} documents, {reps * sum(len(d.encode()) for d in docs) / 1e6:.1f} MB of text")
EOF
bytes=$("$py" -c "import json,sys; print(sum(len(json.loads(l)['text'].encode()) for l in open(sys.argv[1])))" "$work/docs.jsonl")

times=()
for i in 1 2 3; do
    rm -rf "$work/out"; mkdir "$work/out"
    t0=$(date +%s.%N)
    "$bin" tokenize --tokenizer "$work/run/tokenizer.json" --threads "$threads" \
        "$work/docs.jsonl" --out "$work/out/docs" >/dev/null 2>&1
    t1=$(date +%s.%N)
    times+=("$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.2f", b - a }')")
done
ours=$(printf '%s\n' "${times[@]}" | sort -g | sed -n 2p)
echo "ferrogpt tokenize: ${times[*]} s; median $ours s, $(awk -v n="$bytes" -v t="$ours" 'BEGIN { printf "%.2f", n / t / 1e6 }') MB/s"

RAYON_NUM_THREADS=$threads RAYON_RS_NUM_CPUS=$threads TOKENIZERS_PARALLELISM=true \
"$py" - "$work/run/tokenizer.json" "$work/docs.jsonl" "$work/out" "$bytes" <<'EOF'
import array, gc, glob, json, statistics, sys, time
import tokenizers
tok = tokenizers.Tokenizer.from_file(sys.argv[1])
docs = [json.loads(l)["text"] for l in open(sys.argv[2], encoding="utf-8")]
encode = getattr(tok, "encode_batch_fast", tok.encode_batch)
times, out = [], None
for _ in range(3):
    out = None  # each run starts with the last one's encodings freed and no GC pass inside
    gc.collect()
    gc.disable()
    t0 = time.perf_counter()
    out = encode(docs, add_special_tokens=False)
    times.append(time.perf_counter() - t0)
    gc.enable()
med = statistics.median(times)
print(f"tokenizers {tokenizers.__version__} {encode.__name__}: "
      f"{' '.join(f'{t:.2f}' for t in times)} s; median {med:.2f} s, "
      f"{int(sys.argv[4]) / med / 1e6:.2f} MB/s")
# Same ids: the shards are the documents' ids, each after <|endoftext|>.
eot = tok.token_to_id("<|endoftext|>")
ours = array.array("H")
for f in sorted(glob.glob(sys.argv[3] + "/docs_*.bin")):
    with open(f, "rb") as fh:
        fh.seek(1024)
        ours.frombytes(fh.read())
want = array.array("H")
for e in out:
    want.append(eot)
    want.extend(e.ids)
print("ids equal:", ours == want, f"({len(want)} tokens)")
EOF
