#!/usr/bin/env bash
# Run the benchmark suite on a list of machines over SSH and make one report of them all:
#
#   bench/fleet.sh [-t SECONDS] [-o OUT] HOSTS_FILE
#
# HOSTS_FILE: one machine per line, "LABEL DESTINATION" (DESTINATION as ssh takes it:
# user@host, or a Host of your ssh config); blank lines and lines starting with # are skipped.
# For each machine, in parallel: copy the ferrogpt binary there (the one for its architecture,
# see FERROGPT_BIN_<arch>), run every command of the suite with --save and --label LABEL, copy
# the saved results back to OUT/results/LABEL/; then `ferrogpt report OUT/results --out
# OUT/report`. Each machine has -t SECONDS in all (default 1800); a machine that fails (no
# connection, a missing binary for its architecture, a failing or timed-out benchmark) gets one
# line and the others' results are kept. The last line of each machine's log is in
# OUT/logs/LABEL.log.
#
# Exit status: 0 when every machine gave results, 1 when some failed (the report is made from
# the others), 2 when none did or the arguments are wrong.
#
# Environment:
#   FERROGPT_BIN          the binary to copy [target/release/ferrogpt]; it must run on the
#                         machines of its architecture (a static or old-glibc build travels best)
#   FERROGPT_BIN_<arch>   the binary for machines whose `uname -m` is <arch> (e.g.
#                         FERROGPT_BIN_aarch64=target/aarch64-unknown-linux-gnu/release/ferrogpt)
#   FLEET_SUITE           the commands to run, one per line, without "ferrogpt" and --save
#                         [bench matmul / bench train --steps 10 --warmup 2; bench gpu where
#                         nvidia-smi lists a GPU]
#   FLEET_SSH_OPTS        extra options for ssh and scp (e.g. "-F ./fleet_ssh_config")
#   FLEET_REMOTE_DIR      the working folder on each machine [.cache/ferrogpt-fleet, under its
#                         home]; LABEL is appended
set -uo pipefail

timeout_s=1800
out=fleet-$(date -u +%Y-%m-%dT%H%MZ)
usage() { echo "usage: bench/fleet.sh [-t SECONDS] [-o OUT] HOSTS_FILE" >&2; exit 2; }

repo=$(cd "$(dirname "$0")/.." && pwd)

# One machine: `fleet.sh --one LABEL DEST OUT SECONDS` (run under `timeout` by the main part).
if [ "${1:-}" = "--one" ]; then
    label=$2 dest=$3 out=$4 timeout_s=$5
    # shellcheck disable=SC2086 # FLEET_SSH_OPTS is a list of options
    ssh_() { ssh -o BatchMode=yes -o ConnectTimeout=15 ${FLEET_SSH_OPTS:-} "$dest" "$@"; }
    # shellcheck disable=SC2086
    scp_() { scp -q -o BatchMode=yes -o ConnectTimeout=15 ${FLEET_SSH_OPTS:-} "$@"; }
    fail() { echo "FAIL $*"; exit 1; }
    arch=$(ssh_ uname -m 2>&1) || fail "cannot connect: $(echo "$arch" | tail -n 1)"
    bin_var="FERROGPT_BIN_$arch"
    bin=${!bin_var:-}
    if [ -z "$bin" ]; then
        [ "$arch" = "$(uname -m)" ] || fail "it is $arch and this machine $(uname -m): set $bin_var to a ferrogpt built for it"
        bin=${FERROGPT_BIN:-$repo/target/release/ferrogpt}
    fi
    [ -x "$bin" ] || fail "no binary at $bin"
    dir="${FLEET_REMOTE_DIR:-.cache/ferrogpt-fleet}/$label"
    msg=$(ssh_ "rm -rf '$dir/results' && mkdir -p '$dir/results'" 2>&1) || fail "cannot make $dir: $msg"
    msg=$(scp_ "$bin" "$dest:$dir/ferrogpt" 2>&1) || fail "cannot copy the binary: $(echo "$msg" | tail -n 1)"
    suite=${FLEET_SUITE:-}
    if [ -z "$suite" ]; then
        suite=$'bench matmul\nbench train --steps 10 --warmup 2'
        if ssh_ "nvidia-smi -L" >/dev/null 2>&1; then suite+=$'\nbench gpu'; fi
    fi
    while IFS= read -r cmd; do
        [ -n "$cmd" ] || continue
        echo "== $label: ferrogpt $cmd"
        # The machine stops the run itself at the deadline too (where it has `timeout`), so
        # that nothing is left running there when this side gives up.
        run="./ferrogpt $cmd --save results --label '$label'"
        ssh_ "cd '$dir' && if command -v timeout >/dev/null 2>&1; then exec timeout $timeout_s $run; else exec $run; fi" </dev/null 2>&1 \
            || fail "ferrogpt $cmd failed: $(tail -n 1 "$out/logs/$label.log" 2>/dev/null)"
    done <<< "$suite"
    mkdir -p "$out/results/$label"
    msg=$(scp_ "$dest:$dir/results/*.json" "$out/results/$label/" 2>&1) || fail "cannot copy the results back: $(echo "$msg" | tail -n 1)"
    echo "OK $(find "$out/results/$label" -name '*.json' | wc -l)"
    exit 0
fi

while getopts "t:o:h" opt; do
    case $opt in
        t) timeout_s=$OPTARG ;;
        o) out=$OPTARG ;;
        *) usage ;;
    esac
done
shift $((OPTIND - 1))
[ $# -eq 1 ] || usage
hosts=$1
[ -r "$hosts" ] || { echo "fleet: $hosts: cannot read the hosts file" >&2; exit 2; }
[[ "$timeout_s" =~ ^[1-9][0-9]*$ ]] || { echo "fleet: -t $timeout_s: expected whole seconds" >&2; exit 2; }
[[ "$out" = /* ]] || out="$PWD/$out"
bin=${FERROGPT_BIN:-$repo/target/release/ferrogpt}
[ -x "$bin" ] || { echo "fleet: no ferrogpt binary at $bin (cargo build --release, or set FERROGPT_BIN)" >&2; exit 2; }
export FERROGPT_BIN="$bin"

labels=() dests=() pids=()
while read -r label dest rest; do
    case "$label" in ''|'#'*) continue ;; esac
    if [ -z "$dest" ] || [ -n "$rest" ] || ! [[ "$label" =~ ^[A-Za-z0-9._-]+$ ]]; then
        echo "fleet: $hosts: expected \"LABEL DESTINATION\" with a label of letters, digits, . _ -; got: $label $dest $rest" >&2
        exit 2
    fi
    for l in "${labels[@]}"; do
        [ "$l" != "$label" ] || { echo "fleet: $hosts: label $label is listed twice" >&2; exit 2; }
    done
    labels+=("$label") dests+=("$dest")
done < "$hosts"
[ ${#labels[@]} -gt 0 ] || { echo "fleet: $hosts: no machines listed" >&2; exit 2; }
mkdir -p "$out/logs" "$out/results" || exit 2
for i in "${!labels[@]}"; do
    timeout -k 10 "$timeout_s" "$repo/bench/fleet.sh" --one "${labels[$i]}" "${dests[$i]}" "$out" "$timeout_s" \
        < /dev/null > "$out/logs/${labels[$i]}.log" 2>&1 &
    pids+=($!)
done

ok=0 failed=0
for i in "${!labels[@]}"; do
    label=${labels[$i]}
    wait "${pids[$i]}"
    code=$?
    log="$out/logs/$label.log"
    last=$(tail -n 1 "$log")
    case "$code:$last" in
        "0:OK "*) echo "$label: ok, ${last#OK } result file(s)"; ok=$((ok + 1)) ;;
        124:*|137:*) echo "$label: failed: timed out after ${timeout_s} s (see $log)"; failed=$((failed + 1)) ;;
        *:"FAIL "*) echo "$label: failed: ${last#FAIL }"; failed=$((failed + 1)) ;;
        *) echo "$label: failed: exit status $code: $last"; failed=$((failed + 1)) ;;
    esac
    # A failed machine's partial results stay out of the report.
    case "$last" in "OK "*) ;; *) rm -rf "${out:?}/results/$label" ;; esac
done
[ $ok -gt 0 ] || { echo "fleet: no machine gave results" >&2; exit 2; }
"$bin" report "$out/results"/* --out "$out/report" || exit 2
[ $failed -eq 0 ] || exit 1
