#!/usr/bin/env bash
# Peak memory and time of `fewstep sample --n N` (gmm64, exact denoiser, 8 DDIM steps) and of
# `fewstep eval` of those samples against a 20000-row reference, for two binaries side by side,
# alternating OLD and NEW ROUNDS times (shared machines give noisy times: compare within a run).
# Also checks that both wrote the same /data values and printed the same metrics.
# Usage: scripts/bench-streaming.sh OLD_BINARY NEW_BINARY [N] [ROUNDS]   (issue 21)
set -euo pipefail
old=$1 new=$2 n=${3:-1000000} rounds=${4:-2}
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
"$new" data make gmm64 --n 100000 --seed 0 --out "$dir/gmm64.h5" >/dev/null 2>&1
"$new" data make gmm64 --n 20000 --seed 1 --out "$dir/ref.h5" >/dev/null 2>&1
# "label wall cpu_seconds maxrss_MB" of one command (CPU = user + system, steadier than wall on a
# shared machine).
measure() {
    local label=$1
    shift
    /usr/bin/time -v "$@" >"$dir/stdout" 2>"$dir/time"
    local wall cpu rss
    wall=$(awk -F': ' '/Elapsed \(wall clock\)/ {print $2}' "$dir/time")
    cpu=$(awk -F': ' '/User time|System time/ {s += $2} END {printf "%.2f", s}' "$dir/time")
    rss=$(awk -F': ' '/Maximum resident set size/ {printf "%.0f", $2 / 1024}' "$dir/time")
    printf '%-12s %10s %8s s %8s MB\n' "$label" "$wall" "$cpu" "$rss"
}
printf '%-12s %10s %10s %11s\n' run wall cpu max_rss
for r in $(seq 1 "$rounds"); do
    for who in old new; do
        bin=${!who}
        rm -f "$dir/$who.h5" # a new binary refuses to replace it without --force
        measure "sample/$who" "$bin" sample --n "$n" --steps 8 --data "$dir/gmm64.h5" \
            --out "$dir/$who.h5"
        measure "eval/$who" "$bin" eval "$dir/$who.h5" --reference "$dir/ref.h5" --json
        cp "$dir/stdout" "$dir/metrics.$who"
    done
done
python3 - "$dir" <<'PY'
import json, sys
import h5py, numpy as np
d = sys.argv[1]
a, b = (h5py.File(f"{d}/{w}.h5")["data"][...] for w in ("old", "new"))
print("samples identical (bytes of /data):", a.shape == b.shape and a.tobytes() == b.tobytes())
mo, mn = (json.load(open(f"{d}/metrics.{w}")) for w in ("old", "new"))
for k in mo:
    rel = abs(mo[k] - mn[k]) / max(abs(mo[k]), 1e-300)
    print(f"{k:8s} old {mo[k]!r:24} new {mn[k]!r:24} rel diff {rel:.2e}")
PY
