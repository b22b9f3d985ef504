"""``python -m bert2bert_torch``: two-stage pre-training of a (grown) Hugging Face folder.

One process, or many under ``torchrun`` (DDP; NCCL on GPUs, gloo on CPUs). Writes
``<out>/metrics.jsonl``, a resumable ``<out>/checkpoint/`` (a Hugging Face folder plus optimizer
state) and the final ``<out>/model/``. Commands: docs/distributed.md.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Optional

import torch
import torch.distributed as dist

from . import data as D
from .schedule import SCHEDULE_FILE, ScheduleError, read
from .trainer import ENGINES, TwoStageTrainer

ARGS_FILE = "run_args.json"
STATE_FILE = "trainer_state.json"
OPTIMIZER_FILE = "optimizer.pt"
METRICS_FILE = "metrics.jsonl"
CHECKPOINT_DIR = "checkpoint"
MODEL_DIR = "model"
# Only where and how far to run may change on --resume.
RESUME_MAY_CHANGE = ("resume", "stop_at", "device", "quiet", "overwrite")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m bert2bert_torch",
        description="Two-stage bert2BERT pre-training of a grown Hugging Face folder (PyTorch, DDP).",
    )
    p.add_argument("--model", type=Path, help="the (grown) Hugging Face folder to train")
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.add_argument("--schedule", type=Path, help=f"schedule file (default: {SCHEDULE_FILE} in --model)")
    p.add_argument("--train", type=Path, nargs="+", default=[Path("assets/corpus/train.txt.gz")],
                   help="training text files (default: the bundled corpus, run from the repository root)")
    p.add_argument("--valid", type=Path, nargs="+", default=[Path("assets/corpus/valid.txt.gz")],
                   help="held-out text files")
    p.add_argument("--batch-size", type=int, default=32, help="global batch (sequences over all processes)")
    p.add_argument("--seq-len", type=int, default=128, help="tokens per sequence")
    p.add_argument("--eval-every", type=int, default=200)
    p.add_argument("--eval-sequences", type=int, default=256)
    p.add_argument("--log-every", type=int, default=10)
    p.add_argument("--checkpoint-every", type=int, default=500)
    p.add_argument("--data-seed", type=int, help="seed of data order and masks (default: the schedule's)")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda (under torchrun: cuda:LOCAL_RANK)")
    p.add_argument("--bf16", action="store_true", help="bfloat16 autocast for the forward pass")
    p.add_argument("--attn-implementation", default="sdpa", choices=["sdpa", "eager"])
    p.add_argument("--engine", default="ddp", choices=list(ENGINES),
                   help="with several processes: DDP (replicated) or FSDP2 (fully_shard, sharded)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its checkpoint")
    p.add_argument("--stop-at", type=int, help="stop (after checkpointing) at this step")
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty --out")
    p.add_argument("--quiet", action="store_true")
    return p


def _jsonable(a: argparse.Namespace) -> dict:
    return {k: ([str(x) for x in v] if isinstance(v, list) else str(v) if isinstance(v, Path) else v) for k, v in vars(a).items()}


def _restore(a: argparse.Namespace, stored: dict) -> argparse.Namespace:
    out = argparse.Namespace(**vars(a))
    paths = {"model", "out", "schedule"}
    for k, v in stored.items():
        if k in RESUME_MAY_CHANGE:
            continue
        if k in ("train", "valid"):
            v = [Path(x) for x in v]
        elif k in paths and v not in (None, "None"):
            v = Path(v)
        elif k in paths:
            v = None
        setattr(out, k, v)
    return out


def load_model(path: Path, attn: str):
    """The folder's model as ``*ForMaskedLM`` (BERT) or ``*ForCausalLM``, float32."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForMaskedLM

    cfg = AutoConfig.from_pretrained(path)
    cls = AutoModelForMaskedLM if cfg.model_type == "bert" else AutoModelForCausalLM
    try:
        return cls.from_pretrained(path, dtype=torch.float32, attn_implementation=attn)
    except TypeError:  # transformers 4.x
        return cls.from_pretrained(path, torch_dtype=torch.float32, attn_implementation=attn)


class Log:
    """Metrics lines (rank 0 only) and a one-line progress print."""

    def __init__(self, out: Path, rank: int, quiet: bool) -> None:
        self.path, self.rank, self.quiet = out / METRICS_FILE, rank, quiet

    def line(self, m: dict) -> None:
        if self.rank != 0:
            return
        with self.path.open("a") as f:
            f.write(json.dumps(m) + "\n")
        if not self.quiet:
            ev = "-" if m["eval_loss"] is None else f"{m['eval_loss']:.4f}"
            tl = "-" if m["train_loss"] is None else f"{m['train_loss']:.4f}"
            print(f"step {m['step']} stage {m['stage']} loss {tl} eval {ev} lr {m['lr']:.3g}", flush=True)

    def truncate(self, step: int) -> None:
        if self.rank != 0 or not self.path.exists():
            return
        keep = [l for l in self.path.read_text().splitlines() if l.strip() and json.loads(l)["step"] <= step]
        self.path.write_text("".join(l + "\n" for l in keep))


def _barrier(world: int) -> None:
    if world > 1:
        dist.barrier()


def save_folder(trainer: TwoStageTrainer, tokenizer, dst: Path, extra: Optional[dict], rank: int) -> None:
    """Writes the model (and, for a checkpoint, optimizer and trainer state) to ``dst`` via a
    temporary sibling renamed into place, so a crash leaves the previous folder intact. Every rank
    calls it (FSDP2 gathers the shards); rank 0 writes."""
    weights = trainer.full_weights()
    opt_state = trainer.state_dict() if extra is not None else None
    if rank != 0:
        return
    tmp = dst.with_name(dst.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    trainer.model.save_pretrained(tmp, safe_serialization=True, state_dict=weights)
    tokenizer.save_pretrained(tmp)
    trainer.schedule.write(tmp / SCHEDULE_FILE)
    if extra is not None:
        torch.save(opt_state, tmp / OPTIMIZER_FILE)
        (tmp / STATE_FILE).write_text(json.dumps(extra, indent=2) + "\n")
    old = dst.with_name(dst.name + ".old")
    if dst.exists():
        if old.exists():
            shutil.rmtree(old)
        dst.rename(old)
    tmp.rename(dst)
    if old.exists():
        shutil.rmtree(old)


def run(argv: Optional[list[str]] = None) -> int:
    a = parser().parse_args(argv)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    want_cuda = a.device == "cuda" or (a.device == "auto" and torch.cuda.is_available())
    if world > 1:
        dist.init_process_group("nccl" if want_cuda else "gloo")
    device = torch.device(f"cuda:{local}" if want_cuda else "cpu")
    if want_cuda:
        torch.cuda.set_device(device)
    try:
        return _run(a, world, rank, device)
    finally:
        if world > 1 and dist.is_initialized():
            dist.destroy_process_group()


def _run(a: argparse.Namespace, world: int, rank: int, device: torch.device) -> int:
    from transformers import AutoTokenizer

    out: Path = a.out
    if a.resume:
        stored = json.loads((out / ARGS_FILE).read_text())
        a = _restore(a, stored)
        model_dir = out / CHECKPOINT_DIR
        schedule = read(out / SCHEDULE_FILE)
    else:
        if a.model is None:
            raise SystemExit("--model is required (or --resume)")
        schedule = read(a.schedule or a.model)
        model_dir = a.model
        if rank == 0:
            if out.exists() and any(out.iterdir()):
                if not a.overwrite:
                    raise SystemExit(f"{out} exists and is not empty (use --resume to continue it, or --overwrite)")
                shutil.rmtree(out)
            out.mkdir(parents=True, exist_ok=True)
            (out / ARGS_FILE).write_text(json.dumps(_jsonable(a), indent=2) + "\n")
            schedule.write(out / SCHEDULE_FILE)
        _barrier(world)

    model = load_model(model_dir, a.attn_implementation)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    trainer = TwoStageTrainer(model, schedule, device, torch.bfloat16 if a.bf16 else None, a.engine)
    vocab = model.config.vocab_size
    seed = schedule.seed if a.data_seed is None else a.data_seed
    causal = schedule.family != "bert"
    eos = tokenizer.eos_token_id if causal else None
    if causal and eos is None:
        raise SystemExit(f"{model_dir}: the tokenizer has no end-of-text token to separate documents")
    train = D.token_stream(tokenizer, D.read_documents(a.train), eos)
    valid = D.token_stream(tokenizer, D.read_documents(a.valid), eos)
    if max(int(train.max()), int(valid.max())) >= vocab:
        raise SystemExit(f"{model_dir}: the tokenizer yields ids up to {int(train.max())}, the model's vocabulary has {vocab}")
    if causal:
        batches = D.CausalBatches(train, a.seq_len, a.batch_size, seed)
        evals = D.causal_eval_batches(valid, a.seq_len, a.eval_sequences)
    else:
        sp = D.MlmSpecials.of(tokenizer)
        batches = D.MlmBatches(train, a.seq_len, a.batch_size, vocab, sp, seed)
        evals = D.mlm_eval_batches(valid, a.seq_len, vocab, sp, a.eval_sequences)

    log = Log(out, rank, a.quiet)
    state = {"tokens": 0, "wall_s": 0.0, "pending": [0.0, 0]}
    if a.resume:
        st = json.loads((model_dir / STATE_FILE).read_text())
        trainer.load_state_dict(torch.load(model_dir / OPTIMIZER_FILE, map_location=device, weights_only=False))
        state = {k: st[k] for k in state}
        log.truncate(trainer.step)
    else:
        e0 = trainer.eval_loss(evals)
        log.line({"step": 0, "tokens": 0, "train_loss": None, "eval_loss": e0,
                  "lr": 0.0, "stage": schedule.stage_at(0), "wall_s": 0.0})
    _barrier(world)

    total = schedule.total_steps
    until = min(total, a.stop_at if a.stop_at is not None else total)
    t0, wall0 = time.time(), state["wall_s"]
    while trainer.step < until:
        r = trainer.train_step(batches.batch(trainer.step))
        state["tokens"] += r.tokens
        state["wall_s"] = wall0 + time.time() - t0
        state["pending"][0] += r.loss
        state["pending"][1] += 1
        last = r.step == total
        eval_now = r.step % a.eval_every == 0 or last
        if eval_now or r.step % a.log_every == 0:
            # Every rank evaluates (FSDP2's forward is a collective); rank 0 logs.
            ev = trainer.eval_loss(evals) if eval_now else None
            log.line({"step": r.step, "tokens": state["tokens"], "train_loss": state["pending"][0] / state["pending"][1],
                      "eval_loss": ev, "lr": r.lr, "stage": r.stage, "wall_s": state["wall_s"]})
            state["pending"] = [0.0, 0]
            _barrier(world)
        if r.step % a.checkpoint_every == 0 or r.step == until:
            save_folder(trainer, tokenizer, out / CHECKPOINT_DIR, {"step": r.step, **state}, rank)
            _barrier(world)
    if trainer.step == total:
        save_folder(trainer, tokenizer, out / MODEL_DIR, None, rank)
        if rank == 0:
            print(f"done: {total} steps; model in {out / MODEL_DIR}, metrics in {out / METRICS_FILE}", file=sys.stderr)
    elif rank == 0:
        print(f"stopped at step {trainer.step} of {total}; continue with --out {out} --resume", file=sys.stderr)
    _barrier(world)
    return 0


def main() -> None:
    try:
        sys.exit(run())
    except ScheduleError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
