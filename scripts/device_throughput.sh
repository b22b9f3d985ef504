#!/usr/bin/env bash
# The prepared device run of the training-throughput issue (docs/benchmarks.md, "On a GPU"):
# our CUDA trainer against PyTorch eager f32 on the same card, alternated, at the experiment's
# shapes (4 x 128 and 4 x 192, batch 32 x 128) and at BERT-base (12 x 768, batch 64 x 128,
# vocabulary 30522), for BERT and GPT-2. Needs the CUDA build of xtask in .devcheck/bin
# (docs/gpu.md) and PyTorch + transformers on the machine. About 4 minutes on an H100.
# Rehearse on a CPU with DEVICE=cpu SMALL=1 (tiny shapes, one round).
set -u
OUT=${OUT:-$PWD/device-out}
DEVICE=${DEVICE:-cuda}
mkdir -p "$OUT"
log() { echo "== $*" | tee -a "$OUT/summary.txt"; }
if [ "$DEVICE" = cuda ]; then
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$OUT/gpu.txt"
  . scripts/device_env.sh
else
  X=${X:-target/release/xtask}
fi
B="python3 scripts/bench_train_vs_torch.py --xtask $X --device $DEVICE"
if [ "${SMALL:-0}" = 1 ]; then
  runs=("bert exp --rounds 1 --steps 2 --batch-size 4 --seq-len 32 --vocab 512 --shapes 2x32x2x64"
        "gpt2 exp --rounds 1 --steps 2 --batch-size 4 --seq-len 32 --vocab 512 --shapes 2x32x2x64")
else
  runs=("bert exp --rounds 3 --steps 10 --batch-size 32 --seq-len 128 --vocab 8192"
        "gpt2 exp --rounds 3 --steps 10 --batch-size 32 --seq-len 128 --vocab 8192"
        "bert base --rounds 3 --steps 10 --batch-size 64 --seq-len 128 --vocab 30522 --shapes 12x768x12x3072"
        "gpt2 base --rounds 2 --steps 10 --batch-size 64 --seq-len 128 --vocab 30522 --shapes 12x768x12x3072")
fi
for r in "${runs[@]}"; do
  set -- $r
  arch=$1 tag=$2
  shift 2
  log "$arch $tag: $*"
  timeout 240 $B --arch "$arch" "$@" --json "$OUT/throughput_${arch}_$tag.json" \
    > "$OUT/throughput_${arch}_$tag.txt" 2>&1
  log "exit $?"
  tail -n 4 "$OUT/throughput_${arch}_$tag.txt" | tee -a "$OUT/summary.txt"
done
ls -la "$OUT"
