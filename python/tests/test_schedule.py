"""The schedule file: the sampler and learning rate are the Rust ones, bad files are refused
with the file and the reason."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bert2bert_torch.schedule import SCHEDULE_FILE, ScheduleError, read, sample_submodel
from helpers import build_schedule, tiny


def test_sampler_draws_equal_the_rust_pinned_values() -> None:
    # Pinned in crates/train/src/schedule.rs (sampler_draws_are_pinned_and_cover_every_submodel).
    assert [sample_submodel(0, s, 4) for s in range(12)] == [3, 2, 2, 1, 2, 1, 3, 3, 2, 1, 1, 0]
    assert [sample_submodel(12345678901234567, s, 5) for s in range(12)] == [0, 4, 4, 4, 1, 2, 0, 3, 2, 3, 3, 1]


def test_learning_rate_warms_up_then_decays_to_zero(tmp_path: Path) -> None:
    raw = build_schedule(tiny("gpt2", layers=2), lb=1, stage1_steps=2, total=12, peak=1.0, warmup=4)
    (tmp_path / SCHEDULE_FILE).write_text(json.dumps(raw))
    s = read(tmp_path)
    assert [s.lr.lr(i) for i in (0, 3, 8, 12)] == [0.25, 1.0, 0.5, 0.0]
    assert [s.stage_at(i) for i in (0, 1, 2)] == [1, 1, 2]
    assert [m.depth for m in s.submodels] == [1, 2]


@pytest.mark.parametrize(
    "edit,message",
    [
        (lambda r: r.update(version=2), "version 2"),
        (lambda r: r.update(format="other"), "`format`"),
        (lambda r: r.update(stage1_steps=99), "longer than the run"),
        (lambda r: r.pop("seed"), "`seed` is missing"),
        (lambda r: r["submodels"][0]["trainable"].append("nope.weight"), "`nope.weight`"),
        (lambda r: r.update(family="t5"), "unsupported family"),
    ],
)
def test_bad_schedules_are_refused_naming_the_file(tmp_path: Path, edit, message: str) -> None:
    raw = build_schedule(tiny("bert", layers=2), lb=1, stage1_steps=2, total=4)
    edit(raw)
    p = tmp_path / SCHEDULE_FILE
    p.write_text(json.dumps(raw))
    with pytest.raises(ScheduleError) as e:
        read(p)
    assert str(p) in str(e.value) and message in str(e.value)


def test_a_schedule_for_another_model_is_refused() -> None:
    from bert2bert_torch.schedule import parse
    from bert2bert_torch.trainer import check_model

    raw = build_schedule(tiny("bert", layers=2), lb=1, stage1_steps=2, total=4)
    with pytest.raises(ScheduleError, match="3 layers|2 layers"):
        check_model(parse(raw, Path("s.json")), tiny("bert", layers=3), "s.json")
    with pytest.raises(ScheduleError, match="gpt2"):
        check_model(parse(raw, Path("s.json")), tiny("gpt2", layers=2), "s.json")
    untied = build_schedule(tiny("bert", layers=2, tied=False), lb=1, stage1_steps=2, total=4)
    with pytest.raises(ScheduleError, match="decoder.weight"):
        check_model(parse(untied, Path("s.json")), tiny("bert", layers=2), "s.json")
