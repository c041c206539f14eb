#!/usr/bin/env bash
# The main job on its built-in default: set-up (idempotent), a release build, then the paper
# reproduction preset. Extra arguments replace the default command, e.g.
#   scripts/main.sh sample --data ring8.h5 --integrator addim --steps 8
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh
# FEWSTEP_FEATURES=mpi scripts/main.sh builds with MPI (setup.sh installs OpenMPI for it).
cargo build --release --quiet --features "${FEWSTEP_FEATURES:-}"
if [ $# -eq 0 ]; then
  set -- reproduce table4 --preset quick --out out/reproduce
fi
exec target/release/fewstep "$@"
