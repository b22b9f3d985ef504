#!/usr/bin/env bash
# The prepared device run of the BERT-regime issue (docs/experiment.md, "The BERT regime on a
# GPU" and "The BERT regime on two Bibles"): `xtask experiment --preset regime-bert-bibles` (or
# PRESET=regime-bert-gpu, out of the regime on the CPU) on one CUDA card, several runs at once,
# then its report; what --report needs (metrics/, summary.json, tables, plots, the worker logs)
# is copied under $OUT, the run folders (checkpoints, models) are not. Stops itself after
# LIMIT seconds so the device command ends inside its own limit; a stopped experiment is
# reported as incomplete and resumes from its checkpoints in $WORK when the script runs again
# on the same (still warm) machine.
# Needs the CUDA build of xtask in .devcheck/bin (docs/gpu.md).
# Rehearse on a CPU: DEVICE=cpu PRESET=smoke JOBS=2 scripts/device_regime_bert.sh
set -u
OUT=${OUT:-$PWD/device-out}
DEVICE=${DEVICE:-cuda}
PRESET=${PRESET:-regime-bert-bibles}
JOBS=${JOBS:-8}
LIMIT=${LIMIT:-500}
WORK=${WORK:-/tmp/bert2bert-$PRESET}
mkdir -p "$OUT"
log() { echo "== $(date -u +%H:%M:%S) $*" | tee -a "$OUT/summary.txt"; }
if [ "$DEVICE" = cuda ]; then
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$OUT/gpu.txt"
  . scripts/device_env.sh
else
  X=${X:-target/release/xtask}
fi
log "experiment --preset $PRESET --device $DEVICE --jobs $JOBS (limit ${LIMIT}s) into $WORK"
timeout "$LIMIT" "$X" experiment --preset "$PRESET" --device "$DEVICE" --jobs "$JOBS" --quiet \
  --out "$WORK" > "$OUT/experiment.log" 2>&1
log "exit $?"
"$X" experiment --preset "$PRESET" --out "$WORK" --report > "$OUT/report.txt" 2>&1
log "report exit $?"
if [ "$DEVICE" = cuda ]; then
  nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv >> "$OUT/gpu.txt"
fi
mkdir -p "$OUT/$PRESET"
for f in "$WORK"/*; do
  [ "$(basename "$f")" = runs ] || cp -r "$f" "$OUT/$PRESET/"
done
cat "$OUT/report.txt" "$WORK/table.md" | tee -a "$OUT/summary.txt"
ls -la "$OUT/$PRESET"
