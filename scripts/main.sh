#!/usr/bin/env bash
# The main job on its built-in default: set-up (idempotent), a release build, then the paper
# reproduction preset. Extra arguments replace the default command, e.g.
#   scripts/main.sh sample --data ring8.h5 --integrator addim --steps 8
# The build runs in the repository; the command runs in the caller's folder, so relative paths
# in ARGS (and the default job's out/reproduce) are the caller's.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
(
  cd "$repo"
  source scripts/setup.sh
  # FEWSTEP_FEATURES=mpi scripts/main.sh builds with MPI (setup.sh installs OpenMPI for it).
  cargo build --release --quiet --features "${FEWSTEP_FEATURES:-}"
)
# The subshell above changed folder; this shell is still in the caller's.
if [ $# -eq 0 ]; then
  set -- reproduce table4 --preset quick --out out/reproduce
fi
exec "$repo/target/release/fewstep" "$@"
