#!/usr/bin/env python3
"""Training throughput of the candle trainer against PyTorch, alternated in one run.

Each round runs `xtask bench train` (our step, 2 warm-ups then the median of --steps) and then
the same shapes in PyTorch eager f32 (Hugging Face BertForMaskedLM or GPT2LMHeadModel with
torch.optim.AdamW, same batch, vocabulary and thread count), each in its own process, and prints
tokens/s and the ratio ours / PyTorch per shape. The machine's matmul peak is PyTorch's
1024^3 f32 matmul measured in the same round, and our step's analytic GFLOP/s is reported
against it. Alternating rounds on one machine makes the ratios meaningful on a shared, noisy VM;
absolute numbers are not.

    cargo build --release -p xtask
    python scripts/bench_train_vs_torch.py --arch bert --rounds 3      # needs torch, transformers

On a GPU (a `--features cuda` build, docs/gpu.md), `--device cuda` runs both sides there: the
matmul peak is then a 4096^3 f32 product (`--matmul-size`), TF32 is off on the PyTorch side (our
CUDA matmuls are plain f32), and `--shapes 12x768x12x3072 --batch-size 64 --vocab 30522` times
BERT-base. `scripts/device_throughput.sh` is the prepared device run.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# The shapes `xtask bench train` times by default, as LAYERSxHIDDENxHEADSxFFN.
DEFAULT_SHAPES = "4x128x2x512,4x192x3x768"
OUR_LINE = re.compile(
    r"^\s+(?:bundled|1\.5x wider|shape) (\d+ x \d+) .*?full\s+([\d.]+) s/step\s+(\d+) tokens/s\s+([\d.]+) GFLOP/s"
)
Shape = tuple[str, int, int, int, int]


def parse_shapes(text: str) -> list[Shape]:
    """`4x128x2x512,...` as (label "L x H", layers, hidden, heads, ffn)."""
    shapes = []
    for part in text.split(","):
        layers, hidden, heads, ffn = (int(x) for x in part.split("x"))
        shapes.append((f"{layers} x {hidden}", layers, hidden, heads, ffn))
    return shapes


def ours(xtask: Path, a: argparse.Namespace, shapes: list[Shape]) -> dict[str, dict[str, float]]:
    """Runs our bench once; returns {shape: {tokens_per_s, gflops}}."""
    env = dict(os.environ, RAYON_NUM_THREADS=str(a.threads))
    cmd = [str(xtask), "bench", "train", "--arch", a.arch, "--steps", str(a.steps),
           "--batch-size", str(a.batch_size), "--seq-len", str(a.seq_len), "--vocab", str(a.vocab),
           "--device", a.device, "--matmul-size", str(a.matmul_size)]
    if a.shapes != DEFAULT_SHAPES:
        for _, layers, hidden, heads, ffn in shapes:
            cmd += ["--shape", f"{layers}x{hidden}x{heads}x{ffn}"]
    out = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True).stdout
    found: dict[str, dict[str, float]] = {}
    for line in out.splitlines():
        m = OUR_LINE.match(line)
        if m:
            found[m.group(1)] = {"tokens_per_s": float(m.group(3)), "gflops": float(m.group(4))}
    if len(found) != len(shapes):
        raise SystemExit(f"could not read our bench's output:\n{out}")
    return found


def torch_worker(a: argparse.Namespace, shapes: list[Shape]) -> dict[str, object]:
    """Times PyTorch's step for every shape and its matmul peak (run in a child process)."""
    import torch
    from transformers import BertConfig, BertForMaskedLM, GPT2Config, GPT2LMHeadModel

    arch, steps, batch, seq, vocab = a.arch, a.steps, a.batch_size, a.seq_len, a.vocab
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    dev = torch.device(a.device)
    if dev.type == "cuda":
        # Our CUDA matmuls are plain f32; so are PyTorch's here.
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False

    def sync() -> None:
        if dev.type == "cuda":
            torch.cuda.synchronize()

    n = a.matmul_size
    x, y = torch.randn(n, n, device=dev), torch.randn(n, n, device=dev)
    times = []
    for i in range(12):
        sync()
        t = time.perf_counter()
        x @ y
        sync()
        if i >= 2:
            times.append(time.perf_counter() - t)
    peak = 2 * n**3 / statistics.median(times) / 1e9

    result: dict[str, object] = {"matmul_gflops": peak, "torch": torch.__version__}
    for label, layers, hidden, heads, ffn in shapes:
        if arch == "bert":
            cfg = BertConfig(vocab_size=vocab, hidden_size=hidden, num_hidden_layers=layers,
                             num_attention_heads=heads, intermediate_size=ffn,
                             max_position_embeddings=seq, attn_implementation="eager")
            model = BertForMaskedLM(cfg)
        else:
            cfg = GPT2Config(vocab_size=vocab, n_embd=hidden, n_layer=layers, n_head=heads,
                             n_inner=ffn, n_positions=seq, attn_implementation="eager")
            model = GPT2LMHeadModel(cfg)
        model.to(dev).train()
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.01)
        g = torch.Generator().manual_seed(1)
        step_times = []
        for i in range(steps + 2):
            ids = torch.randint(5, vocab, (batch, seq), generator=g)
            if arch == "bert":
                labels = torch.full_like(ids, -100)
                masked = torch.rand(batch, seq, generator=g) < 0.15
                labels[masked] = ids[masked]
                ids = ids.masked_fill(masked, 4)
            else:
                labels = ids
            ids, labels = ids.to(dev), labels.to(dev)
            sync()
            t = time.perf_counter()
            loss = model(input_ids=ids, labels=labels).loss
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sync()
            if i >= 2:
                step_times.append(time.perf_counter() - t)
        result[label] = {"tokens_per_s": batch * seq / statistics.median(step_times)}
    return result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--xtask", type=Path, default=ROOT / "target/release/xtask")
    p.add_argument("--arch", choices=["bert", "gpt2"], default="bert")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--steps", type=int, default=6)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--seq-len", type=int, default=128)
    p.add_argument("--vocab", type=int, default=8192)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--shapes", default=DEFAULT_SHAPES, help="LAYERSxHIDDENxHEADSxFFN, comma-separated")
    p.add_argument("--matmul-size", type=int, help="side of the peak-measuring matmul (1024 on CPU, 4096 on CUDA)")
    p.add_argument("--json", type=Path, help="also write every measurement here")
    p.add_argument("--torch-worker", action="store_true", help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.matmul_size is None:
        a.matmul_size = 4096 if a.device == "cuda" else 1024
    shapes = parse_shapes(a.shapes)

    if a.torch_worker:
        print(json.dumps(torch_worker(a, shapes)))
        return
    if not a.xtask.exists():
        raise SystemExit(f"{a.xtask} not found: run `cargo build --release -p xtask` first")

    rounds = []
    for r in range(a.rounds):
        us = ours(a.xtask, a, shapes)
        cmd = [sys.executable, __file__, "--torch-worker", "--arch", a.arch, "--steps", str(a.steps),
               "--batch-size", str(a.batch_size), "--seq-len", str(a.seq_len),
               "--vocab", str(a.vocab), "--threads", str(a.threads), "--device", a.device,
               "--shapes", a.shapes, "--matmul-size", str(a.matmul_size)]
        them = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.splitlines()[-1])
        peak = float(them["matmul_gflops"])
        where = f"{a.threads} threads" if a.device == "cpu" else a.device
        print(f"round {r + 1}: PyTorch {them['torch']} matmul {a.matmul_size}^3 f32 {peak:.1f} GFLOP/s ({where})")
        for label, *_ in shapes:
            o, t = us[label], them[label]
            ratio = o["tokens_per_s"] / t["tokens_per_s"]
            print(f"  {a.arch} {label}: ours {o['tokens_per_s']:8.0f} tokens/s ({o['gflops']:.1f} GFLOP/s, "
                  f"{100 * o['gflops'] / peak:.0f}% of PyTorch's matmul)  PyTorch {t['tokens_per_s']:8.0f} tokens/s"
                  f"  ratio {ratio:.2f}x")
        rounds.append({"ours": us, "torch": them})
    print(f"summary ({a.rounds} alternated rounds, {a.device}, batch {a.batch_size} x {a.seq_len}, vocab {a.vocab}):")
    for label, *_ in shapes:
        ratios = [x["ours"][label]["tokens_per_s"] / x["torch"][label]["tokens_per_s"] for x in rounds]
        print(f"  {a.arch} {label}: ours / PyTorch {min(ratios):.2f}x .. {max(ratios):.2f}x (median {statistics.median(ratios):.2f}x)")
    if a.json:
        a.json.write_text(json.dumps(rounds, indent=1))


if __name__ == "__main__":
    main()
