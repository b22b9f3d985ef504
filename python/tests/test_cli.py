"""The command line end to end on the bundled corpus: two gloo processes under torchrun equal one
process with the same global batch, a stopped and resumed run equals an uninterrupted one, and
the held-out loss falls."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from helpers import REPO, save_with_schedule, tiny

CORPUS = REPO / "assets" / "corpus"
TOKENIZERS = {"bert": REPO / "assets" / "tokenizer", "gpt2": REPO / "assets" / "tokenizer-gpt2"}


def make_model(tmp: Path, family: str, dropout: float, layers: int = 2, **kw) -> Path:
    model = tiny(family, layers=layers, vocab=8192, seed=3, dropout=dropout)
    return save_with_schedule(model, TOKENIZERS[family], tmp / f"{family}-src", **kw)


def run_cli(args: list[str], nproc: int = 1) -> None:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    if nproc == 1:
        cmd = [sys.executable, "-m", "bert2bert_torch"]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
               "-m", "bert2bert_torch"]
    p = subprocess.run(cmd + args + ["--quiet", "--device", "cpu"], cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, f"{' '.join(cmd + args)}\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}"


def common(model: Path, out: Path, batch: int = 4, seq: int = 32) -> list[str]:
    valid = str(CORPUS / "valid.txt.gz")
    return ["--model", str(model), "--out", str(out), "--train", valid, "--valid", valid,
            "--batch-size", str(batch), "--seq-len", str(seq), "--eval-sequences", "8", "--eval-every", "100"]


def weights(run: Path) -> dict[str, torch.Tensor]:
    return load_file(str(run / "model" / "model.safetensors"))


def metrics(run: Path) -> list[dict]:
    return [json.loads(l) for l in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("family", ["bert", "gpt2"])
def test_two_gloo_processes_equal_one_process_with_ddp_and_fsdp2(tmp_path: Path, family: str) -> None:
    # lr 1e-3: AdamW divides by sqrt(v), so summation-order noise in tiny gradients moves
    # weights by up to about lr * 1e-3; at 5e-3 the largest difference was 1.07e-6.
    src = make_model(tmp_path, family, dropout=0.0, layers=3, lb=1, stage1_steps=3, total=5, peak=1e-3, warmup=1, seed=2)
    run_cli(common(src, tmp_path / "one"))
    a = weights(tmp_path / "one")
    start = load_file(str(src / "model.safetensors"))
    assert a.keys() == start.keys()
    assert all(not torch.equal(a[n], start[n]) for n in a), "every tensor trains in stage 2"
    la = metrics(tmp_path / "one")
    assert {m["stage"] for m in la} == {1, 2}
    for engine in ("ddp", "fsdp2"):
        run = tmp_path / engine
        run_cli(common(src, run) + ["--engine", engine], nproc=2)
        b = weights(run)
        assert a.keys() == b.keys(), engine
        for n in a:
            assert torch.allclose(a[n], b[n], rtol=0, atol=1e-6), (engine, n, (a[n] - b[n]).abs().max())
        lb_ = metrics(run)
        assert [m["stage"] for m in la] == [m["stage"] for m in lb_]
        for x, y in zip(la, lb_):
            if x["train_loss"] is not None:
                assert abs(x["train_loss"] - y["train_loss"]) <= 1e-5 * abs(x["train_loss"]), engine


@pytest.mark.parametrize("engine,nproc", [("ddp", 1), ("fsdp2", 2)])
def test_stopped_and_resumed_run_equals_an_uninterrupted_one(tmp_path: Path, engine: str, nproc: int) -> None:
    # Dropout on: its masks are a function of (seed, step), so resume is exact anyway.
    src = make_model(tmp_path, "bert", dropout=0.1, lb=1, stage1_steps=3, total=6, peak=5e-3, warmup=1, seed=4)
    flags = ["--checkpoint-every", "2", "--log-every", "1", "--engine", engine]
    run_cli(common(src, tmp_path / "full") + flags, nproc)
    run_cli(common(src, tmp_path / "part") + flags + ["--stop-at", "3"], nproc)
    assert not (tmp_path / "part" / "model").exists()
    state = json.loads((tmp_path / "part" / "checkpoint" / "trainer_state.json").read_text())
    assert state["step"] == 3
    run_cli(["--out", str(tmp_path / "part"), "--resume"], nproc)
    a, b = weights(tmp_path / "full"), weights(tmp_path / "part")
    for n in a:
        assert torch.equal(a[n], b[n]), n
    ma, mb = metrics(tmp_path / "full"), metrics(tmp_path / "part")
    assert [m["step"] for m in ma] == [m["step"] for m in mb] == list(range(7))
    assert [m["train_loss"] for m in ma] == [m["train_loss"] for m in mb]
    # The checkpoint and the final folder load as Hugging Face models.
    from transformers import AutoModelForMaskedLM

    AutoModelForMaskedLM.from_pretrained(tmp_path / "part" / "model")


@pytest.mark.parametrize("family", ["bert", "gpt2"])
def test_held_out_loss_falls_on_the_bundled_corpus(tmp_path: Path, family: str) -> None:
    src = make_model(tmp_path, family, dropout=0.0, layers=2, lb=1, stage1_steps=10, total=60, peak=5e-3, warmup=5, seed=0)
    out = tmp_path / "run"
    args = ["--model", str(src), "--out", str(out), "--train", str(CORPUS / "train.txt.gz"),
            "--valid", str(CORPUS / "valid.txt.gz"), "--batch-size", "16", "--seq-len", "32",
            "--eval-sequences", "64", "--eval-every", "30"]
    run_cli(args)
    evals = [(m["step"], m["eval_loss"]) for m in metrics(out) if m["eval_loss"] is not None]
    assert [s for s, _ in evals] == [0, 30, 60]
    first, mid, last = (e for _, e in evals)
    assert first > 8.5, "a random model starts near ln 8192 = 9.01"
    assert mid < first and last < mid - 0.1 and last < first - 1.0, evals
