#!/usr/bin/env bash
# The GPU measurements of docs/gpu.md in one device run: fewstep's training step against its
# PyTorch twins, each in its own process with the device memory sampled by nvidia-smi, then
# (optionally) the table-4 reproduction. Needs .cuda-bin/ (scripts/build-cuda.sh) carried.
#
#   scripts/gpu-measure.sh [PART...]    PART: info bench twin table4   (default: info bench twin)
#
# Writes under $OUT (default out/gpu): results.jsonl (one line per measurement, with peak device
# memory), PART.log, table4.tgz. Env: STEPS (200), WARMUP (30), TWIN_MODES (eager compile) for
# the twin; BENCH_ARGS, TWIN_ARGS, TABLE4_ARGS (default --preset gpu): extra flags, e.g. to align
# sizes; PART_TIMEOUT seconds per process (240), TABLE4_TIMEOUT (480).
set -uo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
OUT=${OUT:-$REPO/out/gpu}
STEPS=${STEPS:-200} WARMUP=${WARMUP:-30} PART_TIMEOUT=${PART_TIMEOUT:-240}
PARTS=("$@")
[ ${#PARTS[@]} -gt 0 ] || PARTS=(info bench twin)
mkdir -p "$OUT"
RES=$OUT/results.jsonl
RUN="$REPO/scripts/gpu-run.sh"
FAILED=0

# measure NAME LOG CMD...: run CMD with a time limit, sampling nvidia-smi's memory.used every
# 100 ms; append CMD's own JSON lines and {"name", "rc", "wall_s", "device_peak_mib"} to results.
measure() {
  local name=$1 log=$2 sampler="" t0 rc peak
  shift 2
  local smp="$OUT/.mem.$name" so="$OUT/.stdout.$name"
  : >"$smp"
  if command -v nvidia-smi >/dev/null; then
    nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 100 >"$smp" 2>/dev/null &
    sampler=$!
  fi
  echo "### $name: $*" | tee -a "$log"
  t0=$(date +%s%N)
  timeout "$PART_TIMEOUT" "$@" 2>>"$log" | tee "$so"
  rc=${PIPESTATUS[0]}
  if [ -n "$sampler" ]; then kill "$sampler" 2>/dev/null; wait "$sampler" 2>/dev/null; fi
  peak=$(sort -n "$smp" | tail -1)
  cat "$so" >>"$log"
  grep -h '^{' "$so" >>"$RES"
  printf '{"name":"%s","rc":%d,"wall_s":%s,"device_peak_mib":%s}\n' "$name" "$rc" \
    "$(awk -v a="$t0" -v b="$(date +%s%N)" 'BEGIN{printf "%.1f", (b-a)/1e9}')" "${peak:-null}" | tee -a "$RES"
  rm -f "$smp" "$so"
  [ "$rc" -eq 0 ] || { echo "### $name failed (rc $rc; 124 = timed out): see ${log##*/}"; FAILED=1; }
}

for part in "${PARTS[@]}"; do
  case $part in
    info)
      { nvidia-smi --query-gpu=name,compute_cap,driver_version,memory.total --format=csv 2>&1
        "$RUN" --version 2>&1
        python3 -c 'import torch; print("torch", torch.__version__, torch.cuda.get_device_name())' 2>&1
        cat "$REPO/.cuda-bin/baked.env"; } | tee "$OUT/info.log" ;;
    bench)
      # shellcheck disable=SC2086
      measure fewstep-mlp "$OUT/bench.log" "$RUN" bench train --model mlp --dim 64 --batch 4096 ${BENCH_ARGS:-}
      # shellcheck disable=SC2086
      measure fewstep-uvit "$OUT/bench.log" "$RUN" bench train --model uvit --shape 3,32,32 --batch 256 ${BENCH_ARGS:-} ;;
    twin)
      for m in mlp uvit; do
        for mode in ${TWIN_MODES:-eager compile}; do
          # shellcheck disable=SC2086
          measure "torch-$m-$mode" "$OUT/twin.log" env PYTHONUNBUFFERED=1 python3 \
            "$REPO/benches/peers/torch_twin.py" --models $m --modes $mode \
            --steps "$STEPS" --warmup "$WARMUP" ${TWIN_ARGS:-}
        done
      done ;;
    table4)
      # Under 8 minutes of GPU time by the issue; $OUT brings back 8 files at most, hence the tar.
      # shellcheck disable=SC2086
      PART_TIMEOUT=${TABLE4_TIMEOUT:-480} measure table4 "$OUT/table4.log" "$RUN" reproduce table4 \
        ${TABLE4_ARGS:---preset gpu} --out "$OUT/table4"
      [ -d "$OUT/table4" ] && tar czf "$OUT/table4.tgz" -C "$OUT" table4 && rm -rf "${OUT:?}/table4" ;;
    *) echo "gpu-measure.sh: unknown part '$part' (valid: info bench twin table4)" >&2; exit 2 ;;
  esac
done
echo "results: $RES"
exit $FAILED
