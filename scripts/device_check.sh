#!/usr/bin/env bash
# One prepared run on a CUDA machine (docs/gpu.md): loads grown checkpoints in Hugging Face
# transformers and exercises the CUDA build of xtask. Inputs travel in .devcheck/ (made by
# scripts/make_device_inputs.sh): hf/<group>/{source,grown-*} and bin/xtask (CUDA build).
# Results go to $OUT (or ./device-out).
set -u
OUT=${OUT:-$PWD/device-out}
mkdir -p "$OUT"
log() { echo "== $*" | tee -a "$OUT/summary.txt"; }
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$OUT/gpu.txt"

log "transformers load checks"
for g in .devcheck/hf/*/; do
  name=$(basename "$g")
  python3 scripts/hf_check.py "$g/source" "$g"/grown-* --json "$OUT/hf_$name.json" > "$OUT/hf_$name.log" 2>&1
  log "hf $name exit $?"
done

if [ -f .devcheck/bin/xtask.xz ] || [ -x .devcheck/bin/xtask ]; then
  . scripts/device_env.sh
  log "bench train (cuda)"
  timeout 120 $X bench train --device cuda > "$OUT/bench_train_cuda.txt" 2>&1; log "exit $?"
  for dev in cuda cpu; do
    log "pretrain 40 steps on $dev"
    timeout 150 $X pretrain --device $dev --steps 40 --eval-every 20 --log-every 5 --seed 0 \
      --out /tmp/pt-$dev --quiet > "$OUT/pretrain_$dev.txt" 2>&1; log "exit $?"
    cp /tmp/pt-$dev/metrics.jsonl "$OUT/metrics_$dev.jsonl" 2>/dev/null
  done
fi
ls -la "$OUT"
