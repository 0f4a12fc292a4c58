#!/usr/bin/env python3
"""Per-kernel GPU time from an Nsight Compute CSV (`ncu --csv --metrics gpu__time_duration.sum`):

    python3 bench/ncu_summary.py FILE.csv [DIVIDE_BY] [TOP]

Sums each kernel name's durations, divides by DIVIDE_BY (e.g. the number of steps profiled, to
get per-step figures) and prints the TOP longest (default 30) with their share of the total.
ncu runs kernels one at a time, so these are each kernel's own durations without overlap."""

import collections
import csv
import sys

UNIT = {"nsecond": 1e-6, "usecond": 1e-3, "msecond": 1.0, "second": 1e3}


def main():
    path = sys.argv[1]
    div = float(sys.argv[2]) if len(sys.argv) > 2 else 1.0
    top = int(sys.argv[3]) if len(sys.argv) > 3 else 30
    ms = collections.defaultdict(float)
    calls = collections.Counter()
    with open(path, newline="") as f:
        # ncu prints its own lines (==PROF== ...) and the program's before the CSV header.
        lines = [l for l in f if l.startswith('"')]
    for row in csv.DictReader(lines):
        if row.get("Metric Name") != "gpu__time_duration.sum":
            continue
        name = row["Kernel Name"]
        # Template arguments and parameter lists make one kernel many names: keep the stem.
        stem = name.split("(")[0].split("<")[0].strip() or name
        value = float(row["Metric Value"].replace(",", ""))
        ms[stem] += value * UNIT.get(row["Metric Unit"], 1e-6)
        calls[stem] += 1
    total = sum(ms.values())
    print(f"total {total / div:.3f} ms per unit ({len(ms)} kernels, {sum(calls.values())} launches, / {div:g})")
    for name, t in sorted(ms.items(), key=lambda kv: -kv[1])[:top]:
        print(f"  {t / div:9.3f} ms {100 * t / total:5.1f}% {calls[name] / div:7.1f} calls  {name[:100]}")


if __name__ == "__main__":
    main()
