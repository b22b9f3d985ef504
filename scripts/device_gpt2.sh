#!/usr/bin/env bash
# One prepared run on a CUDA machine for the GPT-2 path (docs/gpu.md): the `gpt2-mini` experiment
# (one process per seed, in the background), and meanwhile, on the CPU, the Hugging Face checks:
# the shipped BPE files in GPT2TokenizerFast and GPT2Tokenizer, and the bundled GPT-2 and GPT-2
# folders grown from it in GPT2LMHeadModel. Inputs in .devcheck/: bin/xtask.xz (CUDA build made
# in /work/wt-cuda), gpt2_ids.json (`cargo run --example encode_lines`), hf/gpt2/grown-* (made by
# `cargo xtask grow`). Results go to $OUT. Usage: scripts/device_gpt2.sh [SECONDS per process]
set -u
OUT=${OUT:-$PWD/device-out}
limit=${1:-420}
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv > "$OUT/gpu.txt"
. scripts/device_env.sh
start=$(date +%s)
pids=""
for seed in 0 1; do
  timeout "$limit" $X experiment --preset gpt2-mini --device cuda --seeds $seed \
    --out /tmp/gpt2-mini-s$seed --quiet > "$OUT/gpt2-mini-s$seed.log" 2>&1 &
  pids="$pids $!"
done
python3 scripts/hf_tokenizer_check.py assets/tokenizer-gpt2 assets/corpus/valid.txt.gz \
  --ids .devcheck/gpt2_ids.json --json "$OUT/hf_tokenizer.json" > "$OUT/hf_tokenizer.log" 2>&1
echo "tokenizer check exit $?" >> "$OUT/summary.txt"
python3 scripts/hf_check.py assets/bundled-gpt2 assets/bundled-gpt2 .devcheck/hf/gpt2/grown-* \
  --json "$OUT/hf_gpt2.json" > "$OUT/hf_gpt2.log" 2>&1
echo "gpt2 load check exit $?" >> "$OUT/summary.txt"
for p in $pids; do wait $p; echo "experiment process exit $?" >> "$OUT/summary.txt"; done
echo "experiment wall $(( $(date +%s) - start )) s" >> "$OUT/summary.txt"
for seed in 0 1; do
  $X experiment --preset gpt2-mini --report --out /tmp/gpt2-mini-s$seed >> "$OUT/gpt2-mini-s$seed.log" 2>&1
  tar -C /tmp -czf "$OUT/gpt2-mini-s$seed.tgz" --exclude='checkpoint' --exclude='model' gpt2-mini-s$seed
done
cat "$OUT/summary.txt"; tail -3 "$OUT"/gpt2-mini-s*.log
ls -la "$OUT"
