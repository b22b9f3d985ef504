"""A stage-1 step changes exactly the sampled sub-model's top l_b layers and head; every other
parameter stays bit-identical (embeddings and a tied output matrix included). Stage 2 trains all."""

from __future__ import annotations

import pytest
import torch

from bert2bert_torch.trainer import TwoStageTrainer
from helpers import random_batch, schedule_of, tiny

CASES = [("bert", True), ("bert", False), ("gpt2", True), ("gpt2", False), ("llama", True), ("llama", False)]


def snapshot(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters()}


@pytest.mark.parametrize("family,tied", CASES)
def test_stage1_steps_touch_only_the_top_layers_and_head(family: str, tied: bool) -> None:
    torch.set_num_threads(1)
    model = tiny(family, layers=4, tied=tied, seed=1)
    sched = schedule_of(model, lb=1, stage1_steps=8, total=10, peak=1e-2, warmup=1, seed=5)
    t = TwoStageTrainer(model, sched, torch.device("cpu"))
    depths = set()
    for step in range(10):
        before = snapshot(model)
        sub = sched.submodel_at(step)
        r = t.train_step(random_batch(family, 96, 4, 12, seed=step))
        after = snapshot(model)
        changed = {n for n in before if not torch.equal(before[n], after[n])}
        if sub is None:
            assert r.stage == 2
            assert changed == set(before), sorted(set(before) - changed)
            continue
        depths.add(sub.depth)
        assert r.stage == 1 and r.depth == sub.depth and r.frozen_below == sub.depth - 1
        assert changed == set(sub.trainable), (sorted(changed - set(sub.trainable)), sorted(set(sub.trainable) - changed))
        # The trained set is exactly the top layer and the head: nothing of the embeddings.
        layer = f".{sub.depth - 1}."
        assert all(layer in n or t.net.adapter.role(n) == "head" for n in changed)
    assert len(depths) >= 2, depths
