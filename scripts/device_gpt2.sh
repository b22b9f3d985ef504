#!/usr/bin/env bash
# One prepared run on a CUDA machine for the GPT-2 path (docs/gpu.md):
#   1. pre-trains the bundled GPT-2 source (assets/bundled-gpt2/README.md's command, on CUDA),
#      unless assets/bundled-gpt2/model.safetensors exists already;
#   2. runs the `gpt2-mini` experiment from it, one process per seed, in the background;
#   3. meanwhile, on the CPU: the shipped BPE files in GPT2TokenizerFast and GPT2Tokenizer
#      (scripts/hf_tokenizer_check.py, against the Rust ids in .devcheck/gpt2_ids.json from
#      `cargo run --example encode_lines`), and the source and folders grown from it in
#      GPT2LMHeadModel (scripts/hf_check.py).
# Inputs: .devcheck/bin/xtask.xz (CUDA build made in /work/wt-cuda), .devcheck/gpt2_ids.json.
# Results (at most 8 files) go to $OUT. Usage: scripts/device_gpt2.sh [SECONDS per experiment process]
set -u
OUT=${OUT:-$PWD/device-out}
limit=${1:-360}
rm -rf /tmp/logs /tmp/hf; mkdir -p "$OUT" /tmp/logs
log() { echo "== $(date +%T) $*" | tee -a "$OUT/summary.txt"; }
# A rehearsal on a CPU machine: XTASK=target/release/xtask DEVICE=cpu STEPS=20 PRESET=smoke.
DEVICE=${DEVICE:-cuda}
STEPS=${STEPS:-1800}
PRESET=${PRESET:-gpt2-mini}
if [ -n "${XTASK:-}" ]; then
  X=$XTASK
else
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv >> "$OUT/summary.txt"
  . scripts/device_env.sh
fi
SRC=assets/bundled-gpt2
if [ ! -f $SRC/model.safetensors ]; then
  log "pre-training the GPT-2 source on $DEVICE"
  $X pretrain --arch gpt2 --device $DEVICE --out /tmp/bundled-gpt2 --overwrite --steps $STEPS --lr 1e-3 --warmup $((STEPS / 10)) \
    --eval-every 100 --checkpoint-every 100 --log-every 10 --seed 0 --quiet > /tmp/logs/source.log 2>&1
  rc=$?; log "source exit $rc"; tail -2 /tmp/bundled-gpt2/metrics.jsonl | tee -a "$OUT/summary.txt"
  if [ $rc -ne 0 ]; then cat /tmp/logs/source.log; tar -C /tmp -czf "$OUT/logs.tgz" logs; exit 1; fi
  mkdir -p $SRC && cp /tmp/bundled-gpt2/model/* /tmp/bundled-gpt2/metrics.jsonl $SRC/
  tar -czf "$OUT/bundled-gpt2.tgz" $SRC
fi
log "experiment $PRESET (2 processes, ${limit} s each at most)"
pids=""
for seed in 0 1; do
  timeout "$limit" $X experiment --preset $PRESET --device $DEVICE --seeds $seed \
    --out /tmp/$PRESET-s$seed --quiet > /tmp/logs/$PRESET-s$seed.log 2>&1 &
  pids="$pids $!"
done
python3 scripts/hf_tokenizer_check.py assets/tokenizer-gpt2 assets/corpus/valid.txt.gz \
  --ids .devcheck/gpt2_ids.json --json "$OUT/hf_tokenizer.json" > /tmp/logs/hf_tokenizer.log 2>&1
log "tokenizer check exit $?"
for m in "fpi --map exact" "aki" "fpi --map exact --depth identity --layers 8"; do
  name=grown-$(echo $m | tr -d ' -' | cut -c1-24)
  $X grow --source $SRC --out /tmp/hf/$name --overwrite --method $m >> /tmp/logs/grow.log 2>&1
  log "grow $m exit $?"
done
python3 scripts/hf_check.py $SRC $SRC /tmp/hf/grown-* --json "$OUT/hf_gpt2.json" > /tmp/logs/hf_gpt2.log 2>&1
log "gpt2 load check exit $?"
for p in $pids; do wait $p; log "experiment process exit $?"; done
for seed in 0 1; do
  $X experiment --preset $PRESET --report --out /tmp/$PRESET-s$seed >> /tmp/logs/$PRESET-s$seed.log 2>&1
  tar -C /tmp -czf "$OUT/$PRESET-s$seed.tgz" --exclude='checkpoint' --exclude='model' $PRESET-s$seed
done
tar -C /tmp -czf "$OUT/logs.tgz" logs
log "done"; tail -n 3 /tmp/logs/$PRESET-s*.log
ls -la "$OUT"
