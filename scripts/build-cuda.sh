#!/usr/bin/env bash
# Build fewstep with dfdx's CUDA backend on a machine with no GPU and no CUDA install, and gather
# into .cuda-bin/ everything the GPU machine needs (it has no cargo and no network; carry
# .cuda-bin with the device tool and run it with scripts/gpu-run.sh). Idempotent. docs/gpu.md
# explains the pieces; ../shared/gpu/NOTES.md is the probe this follows.
#
#   scripts/build-cuda.sh [--bench NAME]...   # also build criterion bench NAME for CUDA
#
# Environment (defaults are fixed, short paths: the CUDA include dir and dfdx's OUT_DIR are
# compiled into the binary as absolute paths and recreated on the GPU machine):
#   FEWSTEP_CUDA_SDK  venv + fake CUDA_ROOT + fake nvidia-smi   (/opt/fewstep-cuda)
#   CARGO_TARGET_DIR  cargo target dir for the CUDA build       (/work/cuda-target)
#   CUDA_COMPUTE_CAP  GPU compute capability without the dot     (90: H100/H200)
set -euo pipefail
shopt -s nullglob

REPO=$(cd "$(dirname "$0")/.." && pwd)
SDK=${FEWSTEP_CUDA_SDK:-/opt/fewstep-cuda}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/work/cuda-target}
CAP=${CUDA_COMPUTE_CAP:-90}
DIST=$REPO/.cuda-bin
VENV=$SDK/venv
ROOT=$SDK/root     # fake CUDA_ROOT: include -> wheel headers, lib64/libX.so -> wheel libs, stub libcuda
FAKEBIN=$SDK/bin   # fake nvidia-smi for dfdx's build script

BENCHES=()
while [ $# -gt 0 ]; do
  case $1 in
    --bench) BENCHES+=("$2"); shift 2 ;;
    -h | --help) sed -n '2,13p' "$0"; exit 0 ;;
    *) echo "build-cuda.sh: unknown argument '$1' (valid: --bench NAME, --help)" >&2; exit 2 ;;
  esac
done
say() { printf '== %s\n' "$*"; }
T0=$(date +%s)

# 1. CUDA 13.0 compiler, headers and libraries from PyPI wheels. Pins match the GPU machine's
#    torch 2.11 cu130 venv; nvcc must be no newer than the driver (580 = CUDA 13.0) so that the
#    driver can JIT its PTX.
PKGS="nvidia-cuda-nvcc==13.0.88 nvidia-cuda-crt==13.0.88 nvidia-nvvm==13.0.88 nvidia-cuda-cccl==13.0.85
nvidia-cuda-runtime==13.0.96 nvidia-cuda-nvrtc==13.0.88 nvidia-cublas==13.1.0.3 nvidia-curand==10.4.0.35"
if [ "$(cat "$SDK/.pins" 2>/dev/null)" != "$PKGS" ]; then
  say "installing CUDA 13.0 wheels into $VENV"
  mkdir -p "$SDK"
  [ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
  # shellcheck disable=SC2086
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check $PKGS
  echo "$PKGS" >"$SDK/.pins"
else
  say "CUDA wheels already in $VENV"
fi
CU=$("$VENV/bin/python" -c 'import nvidia,os; print(os.path.join(list(nvidia.__path__)[0],"cu13"))')
test -f "$CU/include/cuda.h" && test -x "$CU/bin/nvcc"

# 2. The CUDA_ROOT layout cudarc's and dfdx's build scripts expect (the wheels ship only libX.so.N).
mkdir -p "$ROOT/lib64/stubs" "$FAKEBIN"
ln -sfn "$CU/include" "$ROOT/include"
for l in cublas:13 cublasLt:13 nvrtc:13 curand:10 cudart:13; do
  ln -sfn "$CU/lib/lib${l%%:*}.so.${l##*:}" "$ROOT/lib64/lib${l%%:*}.so"
done
# libcuda (the driver) is not on PyPI: a link-time stub with SONAME libcuda.so.1 defining every
# cu* symbol cudarc declares; the GPU machine's real driver is loaded at run time. Each stub
# returns CUDA_ERROR_NO_DEVICE (100), so a run on a machine without a GPU fails cleanly.
SYS=$(cd "$REPO" && cargo metadata --format-version 1 --features cuda --locked |
  "$VENV/bin/python" -c 'import json,sys,os; m=json.load(sys.stdin)
p=[x for x in m["packages"] if x["name"]=="cudarc"][0]
print(os.path.join(os.path.dirname(p["manifest_path"]),"src/driver/sys.rs"))')
# cuGetErrorName/String answer, so that error is printed rather than panicking in cudarc's Debug.
{
  grep -oE 'pub fn cu[A-Za-z0-9_]+' "$SYS" | awk '{print $3}' | grep -vE '^cuGetError(Name|String)$' |
    sort -u | awk '{print "int " $1 "(void){return 100;}"}'
  echo 'int cuGetErrorName(int e,const char**s){*s="CUDA_ERROR_NO_DEVICE";return 0;}'
  echo 'int cuGetErrorString(int e,const char**s){*s="no CUDA driver: link-time stub libcuda (fewstep scripts/build-cuda.sh)";return 0;}'
} >"$ROOT/lib64/stubs/cuda_stub.c.new"
if ! cmp -s "$ROOT/lib64/stubs/cuda_stub.c.new" "$ROOT/lib64/stubs/cuda_stub.c" ||
  [ ! -f "$ROOT/lib64/stubs/libcuda.so" ]; then
  mv "$ROOT/lib64/stubs/cuda_stub.c.new" "$ROOT/lib64/stubs/cuda_stub.c"
  gcc -shared -fPIC -o "$ROOT/lib64/stubs/libcuda.so" -Wl,-soname,libcuda.so.1 "$ROOT/lib64/stubs/cuda_stub.c"
  ln -sfn libcuda.so "$ROOT/lib64/stubs/libcuda.so.1"
  say "built libcuda stub ($(wc -l <"$ROOT/lib64/stubs/cuda_stub.c") symbols)"
else
  rm -f "$ROOT/lib64/stubs/cuda_stub.c.new"
fi

# 3. dfdx's build script asks `nvidia-smi --query-gpu=compute_cap --format=csv`.
printf '#!/bin/sh\necho compute_cap\necho %s\n' "${CAP%?}.${CAP: -1}" >"$FAKEBIN/nvidia-smi"
chmod +x "$FAKEBIN/nvidia-smi"

# 4. Build. The release profile keeps debug info off; only the CUDA target dir is touched.
# setup.sh provides the cmake that builds the bundled HDF5 (exports CMAKE).
source "$REPO/scripts/setup.sh"
export PATH=$FAKEBIN:$CU/bin:$PATH CUDA_ROOT=$ROOT CUDA_COMPUTE_CAP=$CAP
unset CUDA_PATH CUDA_TOOLKIT_ROOT_DIR CUDNN_LIB || true
say "cargo build --release --features cuda (CARGO_TARGET_DIR=$CARGO_TARGET_DIR)"
TB=$(date +%s)
(cd "$REPO" && cargo build --release --features cuda --locked --bin fewstep)
BENCH_EXES=()
for b in "${BENCHES[@]}"; do
  say "cargo bench --no-run --features cuda --bench $b"
  exe=$(cd "$REPO" && cargo bench --no-run --features cuda --locked --bench "$b" \
    --message-format=json-render-diagnostics |
    "$VENV/bin/python" -c 'import json,sys
for l in sys.stdin:
    m=json.loads(l)
    if m.get("reason")=="compiler-artifact" and m.get("executable") and "bench" in m["target"]["kind"]: print(m["executable"])')
  [ -n "$exe" ] || { echo "no executable for bench $b" >&2; exit 1; }
  BENCH_EXES+=("$b=$exe")
done
BUILD_S=$(($(date +%s) - TB))

# 5. Gather what the GPU machine needs into .cuda-bin/.
rm -rf "$DIST"
mkdir -p "$DIST/dfdx-out" "$DIST/benches"
cp -f "$CARGO_TARGET_DIR/release/fewstep" "$DIST/fewstep"
for be in "${BENCH_EXES[@]}"; do cp -f "${be#*=}" "$DIST/benches/${be%%=*}"; done
# Absolute paths compiled in: dfdx's CUDA_INCLUDE_DIR and its build OUT_DIR, the include paths of
# the kernels dfdx compiles at run time with NVRTC (concat, concat_along, reshape_to, stack,
# to_dtype). A binary that uses none of those has neither string in it.
BAKED_INCLUDE=$ROOT/include
mapfile -t OUTS < <(for f in "$DIST/fewstep" "$DIST"/benches/*; do strings "$f"; done |
  { grep -oE "$CARGO_TARGET_DIR/[a-z]+/build/dfdx-[0-9a-f]+/out" || true; } | sort -u)
if [ ${#OUTS[@]} -eq 0 ]; then
  say "no NVRTC kernel in the binary (no baked OUT_DIR); recording every dfdx OUT_DIR of this build"
  mapfile -t OUTS < <(for d in "$CARGO_TARGET_DIR"/release/build/dfdx-*/out; do
    [ -f "$d/cuda_utils.cuh" ] && echo "$d"; done)
fi
[ ${#OUTS[@]} -ge 1 ] || { echo "no dfdx OUT_DIR with cuda_utils.cuh under $CARGO_TARGET_DIR" >&2; exit 1; }
cp -f "${OUTS[0]}"/*.cuh "$DIST/dfdx-out/"
{
  echo "BAKED_INCLUDE=$BAKED_INCLUDE"
  echo "BAKED_OUTS=\"${OUTS[*]}\""
  echo "BUILT_FROM=\"$(cd "$REPO" && git rev-parse --short HEAD)$(cd "$REPO" && git diff --quiet HEAD || echo -dirty)\""
  echo "BUILT_AT=\"$(date -u +%FT%TZ)\""
} >"$DIST/baked.env"
# HDF5 and zlib are linked in statically (Cargo.toml), so the binary needs only glibc's libraries
# and the CUDA ones, which the GPU machine has: anything else it needed would be missing there.
RT_PATH=$ROOT/lib64/stubs:$CU/lib
extra=$(LD_LIBRARY_PATH=$RT_PATH ldd "$DIST/fewstep" "$DIST"/benches/* 2>/dev/null | awk '$2=="=>" {print $1}' |
  { grep -vE '^(libc|libm|libdl|librt|libpthread|libresolv|libgcc_s|ld-linux[^ ]*|libcuda|libcublas|libcublasLt|libnvrtc|libcurand|libcudart)\.so' || true; } | sort -u)
if [ -n "$extra" ]; then
  echo "the binary needs libraries the GPU machine may lack: $extra" >&2; exit 1
fi
if LD_LIBRARY_PATH=$RT_PATH ldd "$DIST/fewstep" | grep -q 'not found'; then
  echo "unresolved libraries:" >&2; LD_LIBRARY_PATH=$RT_PATH ldd "$DIST/fewstep" | grep 'not found' >&2; exit 1
fi

# 6. Report.
say "done in $(($(date +%s) - T0)) s (cargo: $BUILD_S s)"
say "$DIST/fewstep: $(stat -c %s "$DIST/fewstep") bytes; NEEDED:"
readelf -d "$DIST/fewstep" | awk '/NEEDED/ {gsub(/[\[\]]/, "", $5); printf "   %s\n", $5}'
for b in "$DIST"/benches/*; do [ -f "$b" ] && say "bench: $b ($(stat -c %s "$b") bytes)"; done
say "baked paths (scripts/gpu-run.sh recreates them):"; sed 's/^/   /' "$DIST/baked.env"
say "total to carry: $(du -sh "$DIST" | cut -f1)   (device run: carry [\".cuda-bin\"], command: scripts/gpu-run.sh ARGS)"
