"""Margin / scale schedules and ``set_progress``."""

from __future__ import annotations

import pytest
import torch

from faceforge.errors import FaceforgeError
from faceforge.heads import build_schedule, create_head


def test_warmup_epochs() -> None:
    s = build_schedule({"type": "warmup", "warmup_epochs": 1, "start": 0.0})
    assert s.value_at(0.5, epoch=0.0, step=0) == 0.0
    assert s.value_at(0.5, epoch=0.99, step=500) == 0.0
    assert s.value_at(0.5, epoch=1.0, step=1000) == 0.5


def test_warmup_steps() -> None:
    s = build_schedule({"type": "warmup", "warmup_steps": 100, "start": 0.1})
    assert s.value_at(0.5, epoch=9.0, step=99) == 0.1
    assert s.value_at(0.5, epoch=0.0, step=100) == 0.5


def test_linear_ramp() -> None:
    s = build_schedule({"type": "linear", "start": 0.0, "from_epoch": 1, "to_epoch": 3})
    vals = [s.value_at(0.4, e, 0) for e in (0.0, 1.0, 1.5, 2.0, 3.0, 10.0)]
    assert vals == pytest.approx([0.0, 0.0, 0.1, 0.2, 0.4, 0.4])
    s = build_schedule({"type": "linear", "start": 16, "end": 64, "to_step": 100})
    assert s.value_at(32, 0, 50) == pytest.approx(40.0)


def test_step_schedule() -> None:
    s = build_schedule({"type": "step", "milestones": [5, 10], "values": [32, 48, 64]})
    assert [s.value_at(1, e, 0) for e in (0, 4.9, 5, 9.99, 10, 20)] == [32, 32, 48, 48, 64, 64]
    s = build_schedule({"type": "step", "milestone_steps": [10], "values": [0.2, 0.5]})
    assert [s.value_at(1, 0, st) for st in (9, 10)] == [0.2, 0.5]


def test_constant_and_none() -> None:
    assert build_schedule(None) is None
    assert build_schedule({"type": "constant"}).value_at(0.5, 3, 3) == 0.5


@pytest.mark.parametrize(
    ("spec", "match"),
    [
        ({"type": "warmpu", "warmup_epochs": 1}, r"'warmpu'.*did you mean 'warmup'"),
        ({"type": "warmup", "warmup_epoch": 1}, "warmup_epoch"),
        ({"type": "warmup", "warmup_epochs": 1, "warmup_steps": 5}, "exactly one"),
        ({"type": "step", "milestones": [5], "values": [1, 2, 3]}, "len"),
        ({"type": "step", "milestones": [5, 2], "values": [1, 2, 3]}, "increasing"),
        ({"type": "linear", "start": 0, "from_epoch": 3, "to_epoch": 2}, "end after"),
        ({"type": "linear", "start": "a", "to_epoch": 2}, "'a'"),
        ([1, 2], "mapping"),
    ],
)
def test_bad_schedules_are_user_errors(spec: object, match: str) -> None:
    with pytest.raises(FaceforgeError, match=match):
        build_schedule(spec, "margin_schedule")  # type: ignore[arg-type]


def test_head_rejects_bad_schedule_at_construction() -> None:
    with pytest.raises(FaceforgeError, match="scale_schedule"):
        create_head("arcface", 4, 3, scale_schedule={"type": "nope"})


def test_set_progress_drives_logits() -> None:
    torch.manual_seed(0)
    head = create_head(
        "arcface",
        8,
        5,
        margin=0.5,
        scale=64.0,
        margin_schedule={"type": "warmup", "warmup_epochs": 1, "start": 0.0},
        scale_schedule={"type": "step", "milestones": [2], "values": [32, 64]},
    )
    normface = create_head("normface", 8, 5, scale=32.0)
    normface.weight.data.copy_(head.weight.data)
    x, y = torch.randn(3, 8), torch.tensor([0, 1, 2])
    head.set_progress(0.5, 10)
    assert (head.margin, head.scale) == (0.0, 32.0)
    torch.testing.assert_close(head(x, y), normface(x, y))
    head.set_progress(1.0, 20)
    assert (head.margin, head.scale) == (0.5, 32.0)
    head.set_progress(2.0, 40)
    assert (head.margin, head.scale) == (0.5, 64.0)
    assert not torch.allclose(head(x, y), 2 * normface(x, y))


def test_set_progress_without_schedule_is_noop() -> None:
    head = create_head("cosface", 4, 3, margin=0.3, scale=30.0)
    head.set_progress(100.0, 10**6)
    assert (head.margin, head.scale) == (0.3, 30.0)


def test_combined_schedule_drives_m2() -> None:
    head = create_head(
        "combined", 4, 3, m2=0.5, m3=0.1, margin_schedule={"type": "warmup", "warmup_steps": 5}
    )
    head.set_progress(0.0, 0)
    assert (head.m1, head.m2, head.m3) == (1.0, 0.0, 0.1)
