#!/usr/bin/env bash
# Run the CUDA build from .cuda-bin/ (made by scripts/build-cuda.sh) on the GPU machine.
#
#   scripts/gpu-run.sh ARGS...                 # .cuda-bin/fewstep ARGS...
#   scripts/gpu-run.sh --exe PATH ARGS...      # another binary built the same way (e.g. a bench)
#
# It puts the GPU machine's CUDA 13 libraries (those of its python3's torch venv) on the library
# path (HDF5 is linked into the binary), and recreates the two absolute paths that dfdx's
# run-time (NVRTC) kernels include from: the CUDA include dir and dfdx's build OUT_DIR.
# CU13 overrides the nvidia/cu13 folder (for a smoke test off the GPU machine).
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
DIST=$REPO/.cuda-bin
EXE=$DIST/fewstep
if [ "${1:-}" = "--exe" ]; then
  EXE=$2
  shift 2
fi
[ -f "$DIST/baked.env" ] || { echo "gpu-run.sh: $DIST/baked.env missing: run scripts/build-cuda.sh and carry .cuda-bin" >&2; exit 2; }
[ -x "$EXE" ] || { echo "gpu-run.sh: no executable $EXE" >&2; exit 2; }
# shellcheck source=/dev/null
. "$DIST/baked.env"

CU13=${CU13:-$(python3 -c 'import nvidia,os; print(os.path.join(list(nvidia.__path__)[0],"cu13"))' 2>/dev/null || true)}
[ -f "$CU13/include/cuda.h" ] || { echo "gpu-run.sh: no CUDA 13 headers in '$CU13' (python3's nvidia/cu13; set CU13)" >&2; exit 2; }

# The baked include dir -> the GPU machine's headers; dfdx's .cuh files -> the baked OUT_DIR(s).
if [ "$(readlink -f "$BAKED_INCLUDE")" != "$(readlink -f "$CU13/include")" ]; then
  mkdir -p "$(dirname "$BAKED_INCLUDE")"
  ln -sfn "$CU13/include" "$BAKED_INCLUDE"
fi
for out in $BAKED_OUTS; do
  mkdir -p "$out"
  for f in "$DIST"/dfdx-out/*.cuh; do cmp -s "$f" "$out/${f##*/}" || cp -f "$f" "$out/"; done
done

if [ -z "${FEWSTEP_GPU_QUIET:-}" ] && command -v nvidia-smi >/dev/null; then
  echo "gpu-run: $(nvidia-smi --query-gpu=name,compute_cap,driver_version,memory.total --format=csv,noheader)" \
    "| build $BUILT_FROM $BUILT_AT" >&2
fi
# Only the binary sees these libraries (python3 and the rest of the machine keep their own).
exec env LD_LIBRARY_PATH="$CU13/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" "$EXE" "$@"
