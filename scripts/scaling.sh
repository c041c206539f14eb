#!/usr/bin/env bash
# Data-parallel scaling on one machine (docs/distributed.md): the same training step (same
# network, same global batch) as 1 process x N threads, then as N MPI ranks x 1 thread, with
# each rank's share of its step time inside the gradient all-reduce and the all-reduce's bytes
# per step. `fewstep bench train` measures and reports; this script runs it both ways and
# prints the ratio. Needs a build with `--features mpi` and OpenMPI's mpirun.
#
#   scripts/scaling.sh [N] [fewstep bench train flags]
#
# N: ranks = threads of the single process (default 2). Flags default to the network of
# `fewstep train` (mlp, width 512) on 2-D rows, batch 1024, 300 timed steps after 20 untimed.
# Env: FEWSTEP (the binary, default target/release/fewstep, else target/debug/fewstep).
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
N=${1:-2}
[ $# -gt 0 ] && shift
ARGS=("$@")
[ ${#ARGS[@]} -gt 0 ] || ARGS=(--model mlp --dim 2 --batch 1024 --steps 300 --warmup 20)
BIN=${FEWSTEP:-$REPO/target/release/fewstep}
[ -x "$BIN" ] || BIN=$REPO/target/debug/fewstep
command -v mpirun >/dev/null || { echo "error: no mpirun on PATH (FEWSTEP_FEATURES=mpi scripts/setup.sh installs OpenMPI)" >&2; exit 1; }

MPIRUN=(mpirun -np "$N" -x RAYON_NUM_THREADS=1)
# More ranks than free cores, and root in containers and CI.
MPIRUN+=(--oversubscribe)
[ "$(id -u)" = 0 ] && MPIRUN+=(--allow-run-as-root)

# field NAME JSON: a number from `fewstep bench train`'s JSON line.
field() { sed -n "s/.*\"$1\":\([-0-9.eE+]*\).*/\1/p" <<<"$2"; }

echo "== 1 process x $N threads: $BIN bench train ${ARGS[*]}"
one=$(RAYON_NUM_THREADS=$N "$BIN" bench train "${ARGS[@]}")
echo "$one"
echo "== $N ranks x 1 thread: ${MPIRUN[*]} $BIN bench train ${ARGS[*]}"
many=$("${MPIRUN[@]}" "$BIN" bench train "${ARGS[@]}")
echo "$many"

a=$(field steps_per_s "$(grep '^{' <<<"$one")")
b=$(field steps_per_s "$(grep '^{' <<<"$many")")
awk -v a="$a" -v b="$b" -v n="$N" 'BEGIN {
  printf "ratio (%d ranks x 1 thread) / (1 process x %d threads): %.3f  (%.2f vs %.2f steps/s)\n", n, n, b / a, b, a
}'
