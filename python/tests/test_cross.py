"""Cross-implementation: the candle trainer and this package follow one schedule.

For BERT and GPT-2: ``cargo xtask grow`` grows the bundled model (wider and deeper) and writes
the schedule; ``cargo xtask pretrain --schedule ... --export-batches`` trains it for 10 steps
(stage 1 and stage 2) with dropout off and exports its exact batches and losses; this package
trains the same grown folder on those batches and must compute the same losses (1e-4 relative),
draw the same sub-models and use the same learning rates.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.numpy import load_file

from bert2bert_torch.cli import load_model
from bert2bert_torch.schedule import SCHEDULE_FILE, read
from bert2bert_torch.trainer import TwoStageTrainer
from conftest import skip_or_fail
from helpers import REPO, build_schedule

STEPS, STAGE1, LB = 10, 5, 2


def _newest_source_mtime() -> float:
    newest = 0.0
    for top in ("crates", "xtask"):
        for p in (REPO / top).rglob("*"):
            if p.suffix in (".rs", ".toml") and "target" not in p.parts:
                newest = max(newest, p.stat().st_mtime)
    return max(newest, (REPO / "Cargo.lock").stat().st_mtime)


@pytest.fixture(scope="session")
def xtask() -> Path:
    """The xtask binary: $BERT2BERT_XTASK, or target/debug/xtask (rebuilt with cargo when older
    than the Rust sources; in CI `cargo test` has just built it)."""
    env = os.environ.get("BERT2BERT_XTASK")
    if env:
        return Path(env)
    target = Path(os.environ.get("CARGO_TARGET_DIR", REPO / "target"))
    binary = target / "debug" / "xtask"
    if binary.exists() and binary.stat().st_mtime >= _newest_source_mtime():
        return binary
    cargo = shutil.which("cargo")
    if cargo is None:
        skip_or_fail(f"no up-to-date {binary} and no cargo to build it")
    p = subprocess.run([cargo, "build", "-p", "xtask", "--bin", "xtask"], cwd=REPO, capture_output=True, text=True)
    if p.returncode != 0:
        pytest.fail(f"cargo build -p xtask failed:\n{p.stderr[-3000:]}")
    return binary


def _xtask(binary: Path, *args: str) -> None:
    p = subprocess.run([str(binary), *args], cwd=REPO, capture_output=True, text=True, timeout=900)
    assert p.returncode == 0, f"xtask {' '.join(args)}\n{p.stdout[-2000:]}\n{p.stderr[-3000:]}"


DROPOUT_KEYS = {
    "bert": ["hidden_dropout_prob", "attention_probs_dropout_prob"],
    "gpt2": ["embd_pdrop", "attn_pdrop", "resid_pdrop"],
}


def grow_and_export(xtask: Path, tmp: Path, family: str) -> tuple[Path, Path]:
    src = REPO / "assets" / ("bundled-bert" if family == "bert" else "bundled-gpt2")
    grown, run = tmp / "grown", tmp / "run"
    _xtask(xtask, "grow", "--source", str(src), "--out", str(grown), "--layers", "6", "--no-verify",
           "--steps", str(STEPS), "--stage1-steps", str(STAGE1), "--lb", str(LB), "--lr", "2e-3",
           "--warmup", "2", "--train-seed", "3")
    # Dropout off on both sides: the two trainers draw different masks.
    cfg_path = grown / "config.json"
    cfg = json.loads(cfg_path.read_text())
    for k in DROPOUT_KEYS[family]:
        cfg[k] = 0.0
    cfg_path.write_text(json.dumps(cfg, indent=2))
    _xtask(xtask, "pretrain", "--init", str(grown), "--schedule", str(grown / SCHEDULE_FILE), "--out", str(run),
           "--batch-size", "4", "--seq-len", "32", "--eval-sequences", "8", "--eval-every", "100",
           "--checkpoint-every", "100", "--export-batches", str(run / "batches.safetensors"), "--quiet")
    return grown, run


@pytest.mark.parametrize("family", ["bert", "gpt2"])
def test_candle_and_pytorch_compute_the_same_losses(xtask: Path, tmp_path: Path, family: str) -> None:
    torch.set_num_threads(1)
    grown, run = grow_and_export(xtask, tmp_path, family)
    # One schedule: grow's file is the one pretrain followed and wrote into its run folder.
    assert json.loads((grown / SCHEDULE_FILE).read_text()) == json.loads((run / SCHEDULE_FILE).read_text())
    schedule = read(run / SCHEDULE_FILE)
    assert (schedule.family, schedule.layers, schedule.lb, schedule.stage1_steps) == (family, 6, LB, STAGE1)

    meta = json.loads((run / "batches.json").read_text())
    assert (meta["format"], meta["family"], meta["steps"], meta["first_step"]) == ("bert2bert-batches", family, STEPS, 0)
    t = load_file(str(run / "batches.safetensors"))
    model = load_model(grown, "eager")
    # The test helper's schedule rule (used by the Python-only tests) is the Rust one.
    assert build_schedule(model, lb=LB, stage1_steps=STAGE1, total=STEPS, peak=2e-3, warmup=2, seed=3) == schedule.raw

    trainer = TwoStageTrainer(model, schedule, torch.device("cpu"))
    ours, theirs = [], []
    for i in range(STEPS):
        if family == "bert":
            batch = {k: t[k][i] for k in ("input_ids", "token_type_ids", "attention_mask", "labels")}
        else:
            batch = {"input_ids": t["input_ids"][i], "labels": t["targets"][i]}
        r = trainer.train_step(batch)
        assert (r.stage, r.depth, r.frozen_below) == (int(t["stage"][i]), int(t["depth"][i]), int(t["frozen_below"][i])), i
        assert r.lr == pytest.approx(float(t["lr"][i]), rel=1e-12)
        ours.append(r.loss)
        theirs.append(float(t["loss"][i]))
    rel = np.abs(np.array(ours) - np.array(theirs)) / np.abs(np.array(theirs))
    print(f"{family}: candle {np.round(theirs, 5).tolist()}\n  torch  {np.round(ours, 5).tolist()}\n  max rel {rel.max():.2e}")
    assert rel.max() < 1e-4, (ours, theirs)
    depths = {int(d) for d, s in zip(t["depth"], t["stage"]) if s == 1}
    assert len(depths) >= 2 and set(t["stage"].tolist()) == {1, 2}, depths
    # Training moved the loss: the comparison is not of ten copies of the starting loss.
    assert abs(theirs[-1] - theirs[0]) > 1e-3


@pytest.mark.parametrize("fixture", ["hf-llama-tiny", "hf-qwen3-tiny"])
def test_a_grown_llama_family_folder_trains_with_the_schedule_grow_wrote(xtask: Path, tmp_path: Path, fixture: str) -> None:
    """`grow` on a Llama-family folder writes the schedule this package follows: the same file
    the Python-side rule builds for the loaded model, and a stage-1 step trains only what it names."""
    from helpers import random_batch

    torch.set_num_threads(1)
    grown = tmp_path / "grown"
    _xtask(xtask, "grow", "--source", str(REPO / "testdata" / fixture), "--out", str(grown), "--layers", "4",
           "--depth", "stack", "--no-verify", "--steps", "6", "--stage1-steps", "3", "--lb", "2", "--lr", "2e-3",
           "--warmup", "1", "--train-seed", "3")
    schedule = read(grown / SCHEDULE_FILE)
    model = load_model(grown, "eager")
    assert schedule.family == model.config.model_type
    assert build_schedule(model, lb=2, stage1_steps=3, total=6, peak=2e-3, warmup=1, seed=3) == schedule.raw
    trainer = TwoStageTrainer(model, schedule, torch.device("cpu"))
    for step in range(3):
        before = {n: p.detach().clone() for n, p in model.named_parameters()}
        r = trainer.train_step(random_batch("llama", model.config.vocab_size, 2, 16, seed=step))
        assert r.stage == 1 and np.isfinite(r.loss)
        trainable = set(schedule.submodels[[s.depth for s in schedule.submodels].index(r.depth)].trainable)
        for n, p in model.named_parameters():
            if n in trainable:
                continue
            assert torch.equal(before[n], p.detach()), f"step {step}: {n} moved outside the sub-model"
        assert any(not torch.equal(before[n], p.detach()) for n, p in model.named_parameters() if n in trainable)
