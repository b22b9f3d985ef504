"""The two-stage schedule file (``bert2bert_schedule.json``) written by the Rust side.

``cargo xtask grow`` writes it beside a grown checkpoint and ``cargo xtask pretrain`` into its
output folder; the candle trainer and this package both follow it. Format: docs/distributed.md.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

SCHEDULE_FILE = "bert2bert_schedule.json"
SCHEDULE_FORMAT = "bert2bert-schedule"
SCHEDULE_VERSION = 1
SAMPLER = "splitmix64-v1"
FAMILIES = ("bert", "gpt2", "llama", "qwen2", "qwen3", "mistral")

_MASK64 = (1 << 64) - 1


class ScheduleError(ValueError):
    """A schedule file that is malformed, of another version, or does not fit the model."""


def splitmix64(state: int) -> tuple[int, int]:
    """One SplitMix64 step: the new state and the output (as the Rust ``SplitMix64``)."""
    state = (state + 0x9E3779B97F4A7C15) & _MASK64
    z = state
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
    return state, z ^ (z >> 31)


def step_seed(seed: int, step: int, purpose: int) -> int:
    """The Rust trainer's per-step stream seed for (seed, step, purpose)."""
    mix = (
        ((seed * 0x9E3779B97F4A7C15) & _MASK64)
        ^ ((purpose * 0xA0761D6478BD642F) & _MASK64)
        ^ ((step * 0xE7037ED1A0B428DB) & _MASK64)
    )
    return splitmix64(mix)[1]


def sample_submodel(seed: int, step: int, n: int) -> int:
    """Index of the sub-model stage-1 step ``step`` trains, out of ``n`` (the Rust sampler)."""
    _, r = splitmix64(step_seed(seed, step, 2))
    return (r * n) >> 64


@dataclass(frozen=True)
class SubModel:
    """The embeddings, the bottom ``depth`` layers and the head; layers ``frozen_below..depth``
    and the head are trained."""

    depth: int
    frozen_below: int
    trainable: tuple[str, ...]


@dataclass(frozen=True)
class LrSchedule:
    """Linear warmup to ``peak``, then ``decay`` to 0 at ``total`` steps."""

    peak: float
    warmup: int
    total: int
    decay: str

    def lr(self, step: int) -> float:
        """Learning rate of update ``step`` (0-based), exactly as the Rust ``Schedule::lr``."""
        if step < self.warmup:
            return self.peak * (step + 1) / self.warmup
        span = float(max(self.total - self.warmup, 1))
        done = min((step - self.warmup) / span, 1.0)
        if self.decay == "linear":
            return self.peak * (1.0 - done)
        if self.decay == "cosine":
            return self.peak * 0.5 * (1.0 + math.cos(math.pi * done))
        return self.peak


@dataclass(frozen=True)
class Schedule:
    """A run's two-stage schedule, as read from ``bert2bert_schedule.json``."""

    family: str
    layers: int
    lb: Optional[int]
    stage1_steps: int
    total_steps: int
    lr: LrSchedule
    beta1: float
    beta2: float
    eps: float
    weight_decay: float
    max_grad_norm: Optional[float]
    seed: int
    parameters: tuple[str, ...]
    no_weight_decay: tuple[str, ...]
    submodels: tuple[SubModel, ...]
    raw: dict[str, Any]

    def submodel_at(self, step: int) -> Optional[SubModel]:
        """The sub-model of step ``step`` (0-based), or None in stage 2."""
        if step >= self.stage1_steps or not self.submodels:
            return None
        return self.submodels[sample_submodel(self.seed, step, len(self.submodels))]

    def stage_at(self, step: int) -> int:
        """1 during stage 1, else 2."""
        return 1 if self.submodel_at(step) is not None else 2

    def write(self, path: Path) -> None:
        """Writes the schedule back (unchanged fields, as read)."""
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(self.raw, indent=2) + "\n")
        tmp.replace(path)


def _need(d: dict[str, Any], key: str, kind: type | tuple[type, ...], path: Path) -> Any:
    if key not in d:
        raise ScheduleError(f"{path}: field `{key}` is missing")
    v = d[key]
    if kind is float and isinstance(v, int) and not isinstance(v, bool):
        v = float(v)
    if not isinstance(v, kind) or isinstance(v, bool) and kind is not bool:
        raise ScheduleError(f"{path}: field `{key}` is {v!r}, expected {kind}")
    return v


def parse(raw: dict[str, Any], path: Path) -> Schedule:
    """Validates a decoded schedule (``path`` names it in errors)."""
    fmt = raw.get("format")
    if fmt != SCHEDULE_FORMAT:
        raise ScheduleError(f"{path}: `format` is {fmt!r}, expected {SCHEDULE_FORMAT!r}")
    ver = raw.get("version")
    if ver != SCHEDULE_VERSION:
        raise ScheduleError(f"{path}: version {ver!r}; this package reads version {SCHEDULE_VERSION}")
    sampler = raw.get("sampler")
    if sampler != SAMPLER:
        raise ScheduleError(f"{path}: sampler {sampler!r}, this package knows {SAMPLER!r}")
    family = _need(raw, "family", str, path)
    if family not in FAMILIES:
        raise ScheduleError(f"{path}: unsupported family {family!r} (known: {', '.join(FAMILIES)})")
    layers = _need(raw, "layers", int, path)
    lb = raw.get("lb")
    stage1 = _need(raw, "stage1_steps", int, path)
    total = _need(raw, "total_steps", int, path)
    lr_raw = _need(raw, "lr", dict, path)
    lr = LrSchedule(
        peak=_need(lr_raw, "peak", float, path),
        warmup=_need(lr_raw, "warmup", int, path),
        total=_need(lr_raw, "total", int, path),
        decay=_need(lr_raw, "decay", str, path),
    )
    adamw = _need(raw, "adamw", dict, path)
    if total <= 0:
        raise ScheduleError(f"{path}: total_steps must be positive")
    if lr.total != total:
        raise ScheduleError(f"{path}: the learning rate spans {lr.total} steps, the run {total}")
    if lr.decay not in ("linear", "cosine", "constant"):
        raise ScheduleError(f"{path}: unknown decay {lr.decay!r}")
    if not (lr.peak > 0 and math.isfinite(lr.peak)):
        raise ScheduleError(f"{path}: learning rate {lr.peak} is not positive")
    if stage1 < 0 or stage1 > total:
        raise ScheduleError(f"{path}: stage 1 ({stage1} steps) is longer than the run ({total} steps)")
    if lb is not None and (not isinstance(lb, int) or not 1 <= lb <= layers):
        raise ScheduleError(f"{path}: lb {lb!r} must be between 1 and the model's {layers} layers")
    params = tuple(_need(raw, "parameters", list, path))
    pset = set(params)
    no_decay = tuple(_need(raw, "no_weight_decay", list, path))
    if not set(no_decay) <= pset:
        raise ScheduleError(f"{path}: `no_weight_decay` names parameters not in `parameters`")
    subs = []
    for i, s in enumerate(_need(raw, "submodels", list, path)):
        sub = SubModel(
            depth=_need(s, "depth", int, path),
            frozen_below=_need(s, "frozen_below", int, path),
            trainable=tuple(_need(s, "trainable", list, path)),
        )
        if not 0 <= sub.frozen_below < sub.depth <= layers:
            raise ScheduleError(f"{path}: sub-model {i} has depth {sub.depth}, frozen_below {sub.frozen_below}")
        missing = [n for n in sub.trainable if n not in pset]
        if missing:
            raise ScheduleError(f"{path}: sub-model {i} trains `{missing[0]}`, not in `parameters`")
        subs.append(sub)
    if (lb is None) != (not subs):
        raise ScheduleError(f"{path}: `lb` and `submodels` must be given together")
    clip = raw.get("max_grad_norm")
    return Schedule(
        family=family,
        layers=layers,
        lb=lb,
        stage1_steps=stage1 if subs else 0,
        total_steps=total,
        lr=lr,
        beta1=_need(adamw, "beta1", float, path),
        beta2=_need(adamw, "beta2", float, path),
        eps=_need(adamw, "eps", float, path),
        weight_decay=_need(adamw, "weight_decay", float, path),
        max_grad_norm=None if clip is None else float(clip),
        seed=_need(raw, "seed", int, path),
        parameters=params,
        no_weight_decay=no_decay,
        submodels=tuple(subs),
        raw=raw,
    )


def read(path: str | Path) -> Schedule:
    """Reads and validates a schedule file; a folder means the schedule file inside it."""
    p = Path(path)
    if p.is_dir():
        p = p / SCHEDULE_FILE
    try:
        raw = json.loads(p.read_text())
    except FileNotFoundError:
        raise ScheduleError(
            f"{p}: no schedule file (cargo xtask grow writes one beside the grown model)"
        ) from None
    except json.JSONDecodeError as e:
        raise ScheduleError(f"{p}: malformed JSON: {e}") from None
    if not isinstance(raw, dict):
        raise ScheduleError(f"{p}: not a JSON object")
    return parse(raw, p)
