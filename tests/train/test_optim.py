"""The optimizer's parameter groups: the class centres' own learning rate (``optimizer.head_lr_scale``)."""

from __future__ import annotations

import pytest
import torch


def test_head_lr_scale_sets_the_class_centres_own_learning_rate(synth_8x6, tmp_path, tiny_args) -> None:
    from faceforge.train.config import load_config
    from faceforge.train.run import train

    def states(scale: float, steps: int) -> dict[str, torch.Tensor]:
        args = ["--data.root", str(synth_8x6), "--run_root", str(tmp_path / f"{scale}_{steps}"), *tiny_args,
                "--trainer.max_steps", str(steps), "--checkpoint.keep", "last", "--optimizer.name", "adamw",
                "--optimizer.lr", "0.01", "--optimizer.head_lr_scale", str(scale),
                "--scheduler.warmup_epochs", "0"]  # fmt: skip
        r = train(load_config(None, args), evaluate_test=False)
        return torch.load(r.last_checkpoint, weights_only=True)["state_dict"]

    frozen_1, frozen_3, moving_3 = states(0.0, 1), states(0.0, 3), states(1.0, 3)
    head = [k for k in frozen_1 if k.startswith("head.")]
    body = [k for k in frozen_1 if k.startswith("backbone.") and frozen_1[k].is_floating_point()]
    assert head and body
    # scale 0: the centres keep their initial values while the backbone trains; scale 1 moves them
    assert all(torch.equal(frozen_1[k], frozen_3[k]) for k in head)
    assert any(not torch.equal(frozen_1[k], frozen_3[k]) for k in body)
    assert any(not torch.equal(frozen_1[k], moving_3[k]) for k in head)


def test_head_lr_scale_follows_the_schedule() -> None:
    from torch import nn

    from faceforge.train.optim import build_optimizer, param_groups

    groups = param_groups(nn.Linear(4, 4), nn.Linear(4, 2), 0.05, 0.05, head_lr=0.1 * 2e-3)
    opt = build_optimizer({"name": "adamw", "lr": 2e-3}, groups)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 0.5**step)
    for _ in range(3):
        lrs = {g["name"]: g["lr"] for g in opt.param_groups}
        assert (
            lrs["head"] == pytest.approx(0.1 * lrs["backbone"])
            and lrs["backbone"] == lrs["backbone_no_decay"]
        )
        opt.step()
        sched.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(2e-3 / 8)
