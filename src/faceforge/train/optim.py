"""Optimizers and learning-rate schedules of the training config: :func:`param_groups` (no decay for
BatchNorm/PReLU/bias), :func:`build_optimizer` and :func:`lr_factor`, the per-step multiplier of
``optimizer.lr`` with linear warm-up for ``cosine`` and ``cosine_restarts`` (SGDR, Loshchilov & Hutter,
ICLR 2017), ``polynomial``, ``multistep``, ``step``, ``constant`` and ``plateau``. Details:
docs/training.md, "Optimizer and schedules".
"""

from __future__ import annotations

import bisect
import math
from typing import Any

import torch
from torch import nn

from faceforge.errors import FaceforgeError

__all__ = ["build_optimizer", "lr_factor", "param_groups"]


def param_groups(
    backbone: nn.Module,
    head: nn.Module,
    weight_decay: float,
    head_weight_decay: float,
    head_lr: float | None = None,
) -> list[dict]:
    """Three groups: backbone weights (decay), backbone 1-D parameters (no decay), head (head decay;
    its own learning rate ``head_lr`` when given, else the optimizer's)."""
    decay, no_decay = [], []
    for p in backbone.parameters():
        (decay if p.ndim > 1 else no_decay).append(p)
    return [
        {"params": decay, "weight_decay": weight_decay, "name": "backbone"},
        {"params": no_decay, "weight_decay": 0.0, "name": "backbone_no_decay"},
        {"params": list(head.parameters()), "weight_decay": head_weight_decay, "name": "head"}
        | ({} if head_lr is None else {"lr": head_lr}),
    ]


def build_optimizer(ocfg: dict[str, Any], groups: list[dict]) -> torch.optim.Optimizer:
    """SGD (momentum, optional Nesterov) or AdamW (decoupled weight decay, Loshchilov & Hutter 2019)."""
    lr = float(ocfg["lr"])
    if ocfg["name"] == "sgd":
        return torch.optim.SGD(
            groups, lr=lr, momentum=float(ocfg["momentum"]), nesterov=bool(ocfg.get("nesterov", False))
        )
    if ocfg["name"] == "adamw":
        b1, b2 = (float(b) for b in ocfg.get("betas", (0.9, 0.999)))
        return torch.optim.AdamW(groups, lr=lr, betas=(b1, b2))
    raise FaceforgeError(f"config key 'optimizer.name' must be one of sgd, adamw, got {ocfg['name']!r}")


def _restart_position(epochs: float, first: float, mult: float) -> tuple[float, float]:
    """``(position in the current cycle, cycle length)`` after ``epochs`` epochs of SGDR cycles."""
    if mult == 1:
        return epochs % first, first
    # cycle i starts at first · (mult^i - 1) / (mult - 1)
    i = math.floor(math.log(epochs * (mult - 1) / first + 1, mult) + 1e-12)
    start = first * (mult**i - 1) / (mult - 1)
    length = first * mult**i
    if epochs - start >= length:  # floating-point edge at a boundary
        start, length = start + length, length * mult
    return epochs - start, length


def lr_factor(step: int, scfg: dict[str, Any], steps_per_epoch: int, total_steps: int) -> float:
    """Multiplier of the base learning rate at optimizer step ``step``.

    Formulas: docs/training.md, "Optimizer and schedules".
    """
    name = scfg["name"]
    warm = round(float(scfg["warmup_epochs"]) * steps_per_epoch)
    if step < warm:
        return (step + 1) / warm
    floor = float(scfg["min_lr_ratio"])
    t = min(1.0, (step - warm) / max(1, total_steps - warm))
    if name in ("constant", "plateau"):
        return 1.0
    if name == "cosine":
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * t))
    if name == "polynomial":
        return floor + (1 - floor) * (1 - t) ** float(scfg["power"])
    if name == "step":
        return float(scfg["gamma"]) ** bisect.bisect_right([int(m) for m in scfg["decay_steps"]], step)
    if name == "multistep":
        epoch = step / steps_per_epoch
        return float(scfg["gamma"]) ** bisect.bisect_right([float(m) for m in scfg["milestones"]], epoch)
    if name == "cosine_restarts":
        pos, length = _restart_position(
            (step - warm) / steps_per_epoch, float(scfg["restart_epochs"]), float(scfg["restart_mult"])
        )
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * pos / length))
    raise FaceforgeError(f"config key 'scheduler.name' has an unknown value {name!r}")
