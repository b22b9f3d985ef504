#!/usr/bin/env bash
# Runs `cargo xtask experiment --preset mini` on a CUDA machine, one process per seed of the main
# setting, and brings back what the report needs (metrics, summary, table, plots; no weights).
# Inputs: .devcheck/bin/xtask.xz (CUDA build made in /work/wt-cuda, docs/gpu.md). Usage:
#   scripts/device_experiment.sh SECONDS     (each process stops after SECONDS; a later call resumes)
set -u
OUT=${OUT:-$PWD/device-out}
limit=${1:-500}
mkdir -p "$OUT"
. scripts/device_env.sh
pids=""
for seed in 0 1; do
  timeout "$limit" $X experiment --preset mini --device cuda --seeds $seed --out /tmp/mini-s$seed --quiet \
    > "$OUT/mini-s$seed.log" 2>&1 &
  pids="$pids $!"
done
wait $pids
for seed in 0 1; do
  $X experiment --preset mini --report --out /tmp/mini-s$seed >> "$OUT/mini-s$seed.log" 2>&1
  tar -C /tmp -czf "$OUT/mini-s$seed.tgz" --exclude='checkpoint' --exclude='model' mini-s$seed
done
nvidia-smi --query-gpu=name,driver_version --format=csv > "$OUT/gpu.txt"
tail -5 "$OUT"/mini-s*.log
ls -la "$OUT"
