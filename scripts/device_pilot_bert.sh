#!/usr/bin/env bash
# A device pilot for the BERT regime (docs/experiment.md, "The BERT regime on a GPU"): the CPU
# run of regime-bert-gpu (2026-12-07) put scratch's final loss too close to its 2 x 128 source
# for the regime check, so this measures, in one device command, the scratch runs of larger
# targets (and the reference shape) on the preset's data and schedule: the Bible, its 2048
# WordPiece, batch 32 x 64, 2000 steps (3.9 epochs), 5% warmup, linear decay, 128 held-out
# windows every 100 steps. Every run is an `xtask pretrain`, RUNS of them at once on the card;
# each run's metrics.jsonl and arguments are copied to $OUT/<run>/, with a table of the final
# held-out losses in $OUT/summary.txt. Stops itself after LIMIT seconds.
# Needs the CUDA build of xtask in .devcheck/bin (docs/gpu.md).
# Rehearse on a CPU: DEVICE=cpu STEPS=4 RUNS=2 scripts/device_pilot_bert.sh
set -u
OUT=${OUT:-$PWD/device-out}
DEVICE=${DEVICE:-cuda}
STEPS=${STEPS:-2000}
RUNS=${RUNS:-8}
LIMIT=${LIMIT:-480}
WORK=${WORK:-/tmp/bert2bert-pilot-bert}
mkdir -p "$OUT" "$WORK"
log() { echo "== $(date -u +%H:%M:%S) $*" | tee -a "$OUT/summary.txt"; }
if [ "$DEVICE" = cuda ]; then
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$OUT/gpu.txt"
  . scripts/device_env.sh
else
  X=${X:-target/release/xtask}
fi
# name layers hidden heads ffn lr seed: the reference pair first (the source's shape, the
# preset's target at two seeds), then wider and deeper targets, two at a lower peak.
candidates="
s2x128 2 128 2 512 1e-3 1000
t4x256-s1 4 256 4 1024 1e-3 1
t4x256-s2 4 256 4 1024 1e-3 2
t4x384 4 384 6 1536 1e-3 0
t4x512 4 512 8 2048 1e-3 0
t4x512-lr5 4 512 8 2048 5e-4 0
t6x384 6 384 6 1536 1e-3 0
t8x256 8 256 4 1024 1e-3 0
t6x512-lr5 6 512 8 2048 5e-4 0
t8x384-lr5 8 384 6 1536 5e-4 0
"
log "pilot: $STEPS steps a run, $RUNS at once, device $DEVICE, limit ${LIMIT}s"
deadline=$(( $(date +%s) + LIMIT ))
# (A here-string, not a pipe: the runs must be jobs of this shell for `wait`.)
while read -r name l h a f lr seed; do
  [ -n "$name" ] || continue
  while [ "$(jobs -rp | wc -l)" -ge "$RUNS" ]; do sleep 1; done
  left=$(( deadline - $(date +%s) ))
  [ "$left" -gt 10 ] || { log "no time left for $name"; continue; }
  log "start $name: $l x $h, $a heads, FFN $f, lr $lr, seed $seed"
  timeout "$left" "$X" pretrain --arch bert --layers "$l" --hidden "$h" --heads "$a" --ffn "$f" \
    --steps "$STEPS" --batch-size 32 --seq-len 64 --lr "$lr" --eval-every 100 \
    --eval-sequences 128 --seed "$seed" --corpus assets/corpus-kjv \
    --tokenizer assets/tokenizer-kjv-2k --checkpoint-every 100000 --device "$DEVICE" --quiet \
    --overwrite --out "$WORK/$name" > "$WORK/$name.log" 2>&1 &
done <<< "$candidates"
wait
log "all runs ended"
printf '%-12s %6s %10s %8s\n' run step eval_loss wall_s | tee -a "$OUT/summary.txt"
for d in "$WORK"/*/; do
  name=$(basename "$d")
  mkdir -p "$OUT/$name"
  cp "$d"/metrics.jsonl "$d"/pretrain_args.json "$OUT/$name/" 2>/dev/null
  cp "$WORK/$name.log" "$OUT/$name/" 2>/dev/null
  python3 - "$d/metrics.jsonl" "$name" <<'EOF' | tee -a "$OUT/summary.txt"
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()] if __import__("os").path.exists(sys.argv[1]) else []
ev = [r for r in rows if r.get("eval_loss") is not None]
last = ev[-1] if ev else {"step": "-", "eval_loss": float("nan"), "wall_s": float("nan")}
print(f"{sys.argv[2]:<12} {last['step']:>6} {last['eval_loss']:>10.4f} {last['wall_s']:>8.1f}")
EOF
done
