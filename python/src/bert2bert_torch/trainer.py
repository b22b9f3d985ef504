"""The two-stage training step on one process or many (DDP), following a schedule file.

One step: pick the step's sub-model (the schedule's sampler, identical on every rank), run it
(frozen bottom without gradient), average gradients over ranks, clip to the global norm, set the
step's learning rate and take an AdamW step. Parameters that got no gradient (everything outside
the sub-model's top l_b layers and head) are not touched, moments and step counts included,
exactly as the candle trainer (crates/train/src/optim.rs).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from .data import Batch, predicted, rows_of
from .families import SubModelLM
from .schedule import Schedule, ScheduleError, step_seed

ENGINES = ("ddp", "fsdp2")


def canonical_names(model: nn.Module) -> list[str]:
    """Parameter names as ``named_parameters`` gives them (tied weights once, first name)."""
    return [n for n, _ in model.named_parameters()]


def check_model(schedule: Schedule, model: nn.Module, where: str) -> None:
    """Refuses a schedule written for another family, depth or set of parameters."""
    t = model.config.model_type
    if schedule.family != t:
        raise ScheduleError(f"{where}: the schedule is for a {schedule.family} model, the checkpoint is {t}")
    layers = len(SubModelLM(model).adapter.layers())
    if schedule.layers != layers:
        raise ScheduleError(f"{where}: the schedule is for {schedule.layers} layers, the model has {layers}")
    have = set(canonical_names(model))
    want = set(schedule.parameters)
    if have != want:
        extra = sorted(have - want)
        missing = sorted(want - have)
        what = f"the model's `{extra[0]}` is not in the schedule" if extra else f"`{missing[0]}` is not in the model"
        raise ScheduleError(f"{where}: parameters differ ({what}); tied or untied head?")


@dataclass
class StepResult:
    """What one step did."""

    step: int
    stage: int
    depth: int
    frozen_below: int
    loss: float
    lr: float
    grad_norm: float
    tokens: int


class TwoStageTrainer:
    """AdamW over a Hugging Face model, stepping through a :class:`Schedule`.

    With ``torch.distributed`` initialised and more than one process, ``engine="ddp"`` wraps the
    model in ``DistributedDataParallel``: with ``find_unused_parameters=True`` during stage 1
    (each step leaves most parameters without gradient), re-wrapped without it for stage 2;
    ``engine="fsdp2"`` shards it with ``fully_shard`` (each layer, then the root) once.
    """

    def __init__(
        self,
        model: nn.Module,
        schedule: Schedule,
        device: torch.device,
        autocast: Optional[torch.dtype] = None,
        engine: str = "ddp",
    ):
        if engine not in ENGINES:
            raise ValueError(f"engine {engine!r}: one of {', '.join(ENGINES)}")
        check_model(schedule, model, "schedule")
        self.schedule = schedule
        self.device = device
        self.autocast = autocast
        self.model = model.to(device)
        self.net = SubModelLM(self.model)
        self.world = dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1
        self.rank = dist.get_rank() if self.world > 1 else 0
        self.sharded = engine == "fsdp2" and self.world > 1
        if self.sharded:
            # FSDP2 once, before the optimizer exists: each layer is its own shard group, the
            # root holds the embeddings and the head. Nothing is re-wrapped between stages:
            # parameters that get no gradient in a step keep `grad = None` (tested).
            from torch.distributed.device_mesh import init_device_mesh
            from torch.distributed.fsdp import fully_shard

            mesh = init_device_mesh(device.type, (self.world,))
            for layer in self.net.adapter.layers():
                fully_shard(layer, mesh=mesh)
            fully_shard(self.net, mesh=mesh)
        self.engine_name = engine
        params = dict(self.model.named_parameters())
        no_decay = set(schedule.no_weight_decay)
        decay = [p for n, p in params.items() if n not in no_decay]
        plain = [p for n, p in params.items() if n in no_decay]
        self.opt = torch.optim.AdamW(
            [
                {"params": decay, "weight_decay": schedule.weight_decay},
                {"params": plain, "weight_decay": 0.0},
            ],
            lr=schedule.lr.peak,
            betas=(schedule.beta1, schedule.beta2),
            eps=schedule.eps,
            foreach=False,
        )
        self.names = {p: n for n, p in params.items()}
        self.step = 0
        self._engine: Optional[nn.Module] = None
        self._engine_stage = 0
        self._checked: set[int] = set()

    def engine(self, stage: int) -> nn.Module:
        """The module to call: the model itself, or its DDP wrapper for this stage."""
        if self.world == 1 or self.sharded:
            return self.net
        if self._engine is None or self._engine_stage != stage:
            from torch.nn.parallel import DistributedDataParallel as DDP

            # Dropping the previous wrapper removes its gradient hooks before the new one
            # registers its own; the parameters are already equal on every rank.
            self._engine = None
            ids = [self.device.index] if self.device.type == "cuda" else None
            self._engine = DDP(self.net, device_ids=ids, find_unused_parameters=(stage == 1))
            self._engine_stage = stage
        return self._engine

    def _to_device(self, batch: Batch) -> dict[str, torch.Tensor]:
        return {k: torch.as_tensor(v, dtype=torch.long, device=self.device) for k, v in batch.items()}

    def train_step(self, global_batch: Batch) -> StepResult:
        """One optimizer step on the global batch (this rank takes its rows)."""
        s = self.schedule
        step = self.step
        sub = s.submodel_at(step)
        if sub is None:
            stage, depth, frozen, train_emb = 2, s.layers, 0, True
        else:
            stage, depth, frozen, train_emb = 1, sub.depth, sub.frozen_below, False
        # Dropout is a pure function of (seed, step, rank): exact resume without saving RNG state.
        torch.manual_seed(step_seed(s.seed, step, 1) ^ self.rank)
        self.model.train()
        count = predicted(global_batch)
        local = self._to_device(rows_of(global_batch, self.rank, self.world))
        with torch.autocast(self.device.type, dtype=self.autocast, enabled=self.autocast is not None):
            loss_sum, _ = self.engine(stage)(local, depth, frozen, train_emb)
        # DDP averages gradients over ranks: scaling by world / global count makes the result the
        # gradient of the global batch's mean loss, whatever each rank's share of predictions.
        (loss_sum * (self.world / count)).backward()
        self._check_trained(sub, stage)
        grads = [p.grad for p in self.model.parameters() if p.grad is not None]
        norm = self._grad_norm(grads)
        if not math.isfinite(norm):
            raise FloatingPointError(f"non-finite gradient norm at step {step + 1}: training diverged")
        clip = s.max_grad_norm
        if clip is not None and norm > clip:
            # As the candle trainer: scale only when the norm exceeds the clip.
            for g in grads:
                g.mul_(clip / (norm + 1e-6))
        lr = s.lr.lr(step)
        for g in self.opt.param_groups:
            g["lr"] = lr
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        total = loss_sum.detach().float()
        if self.world > 1:
            dist.all_reduce(total)
        self.step += 1
        return StepResult(step + 1, stage, depth, frozen, float(total) / count, lr, norm, global_batch["input_ids"].size)

    def _grad_norm(self, grads: list[torch.Tensor]) -> float:
        """Global L2 norm of the gradients (over every rank's shards under FSDP2)."""
        if not grads:
            return 0.0
        if self.sharded:
            from torch.distributed.tensor import DTensor

            local = [g.to_local() if isinstance(g, DTensor) else g for g in grads]
            sq = torch.stack([(g.float() ** 2).sum() for g in local]).sum()
            dist.all_reduce(sq)
        else:
            sq = torch.stack([(g.float() ** 2).sum() for g in grads]).sum()
        return float(torch.sqrt(sq))

    def _check_trained(self, sub, stage: int) -> None:
        # The set of parameters with a gradient must be the schedule's: checked once per
        # sub-model (and for stage 2), so a schedule this forward cannot honour is an error.
        key = -1 if sub is None else sub.depth
        if key in self._checked:
            return
        got = {self.names[p] for p in self.model.parameters() if p.grad is not None}
        want = set(self.schedule.parameters if sub is None else sub.trainable)
        if got != want:
            diff = sorted(got ^ want)
            raise ScheduleError(
                f"stage {stage}{'' if sub is None else f' sub-model of depth {sub.depth}'}: the "
                f"trained parameters differ from the schedule's (first: `{diff[0]}`)"
            )
        self._checked.add(key)

    @torch.no_grad()
    def eval_loss(self, batches: list[Batch]) -> float:
        """Mean loss of the whole model over ``batches`` (all predicted positions), dropout off."""
        self.model.eval()
        total, count = 0.0, 0
        for b in batches:
            t = self._to_device(b)
            with torch.autocast(self.device.type, dtype=self.autocast, enabled=self.autocast is not None):
                loss, n = self.net(t, self.schedule.layers, 0, True)
            total += float(loss)
            count += int(n)
        return total / max(count, 1)

    def state_dict(self) -> dict:
        """Optimizer state and step (weights are saved as a Hugging Face folder). Under FSDP2 a
        collective: every rank must call it; the full state is on every rank, in host memory."""
        if self.sharded:
            from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

            opts = StateDictOptions(full_state_dict=True, cpu_offload=True)
            osd = get_optimizer_state_dict(self.net, self.opt, options=opts)
        else:
            osd = self.opt.state_dict()
        return {"optimizer": osd, "step": self.step, "engine": "fsdp2" if self.sharded else "plain"}

    def load_state_dict(self, state: dict) -> None:
        """Restores :meth:`state_dict`'s output (from the same engine)."""
        engine = "fsdp2" if self.sharded else "plain"
        if state.get("engine", "plain") != engine:
            raise ValueError(f"optimizer state written by engine {state.get('engine')}, resuming with {engine}")
        if self.sharded:
            from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

            # strict=False: a parameter that has had no gradient yet (frozen in every stage-1 step
            # so far) has no optimizer state, exactly as in the uninterrupted run.
            opts = StateDictOptions(full_state_dict=True, strict=False)
            saved = set(state["optimizer"].get("state", {}))
            set_optimizer_state_dict(self.net, self.opt, state["optimizer"], options=opts)
            # Loading first creates a state for every parameter (a zero-gradient step); drop it
            # for the parameters that had none, or their first real step would count as the
            # second in AdamW's bias correction.
            for p, n in self.names.items():
                if f"model.{n}" not in saved:
                    self.opt.state.pop(p, None)
        else:
            self.opt.load_state_dict(state["optimizer"])
        self.step = int(state["step"])

    def full_weights(self) -> Optional[dict[str, torch.Tensor]]:
        """Under FSDP2 the gathered weights under the model's own names (aliases of tied weights
        dropped), for ``save_pretrained(state_dict=...)``; a collective. None otherwise."""
        if not self.sharded:
            return None
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        sd = get_model_state_dict(self.model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
        alias = {n for n, _ in self.model.named_parameters(remove_duplicate=False)} - set(canonical_names(self.model))
        return {k: v for k, v in sd.items() if k not in alias}


def set_seed_everywhere(seed: int) -> None:
    """Seeds numpy and torch (for callers that build models from random weights)."""
    np.random.seed(seed % (1 << 32))
    torch.manual_seed(seed)
