"""Build a backbone from its config section (``{"name": ..., **options}``)."""

from __future__ import annotations

import inspect
from typing import Any

import torch

from faceforge.errors import FaceforgeError, did_you_mean


def build_backbone(backbone_cfg: dict[str, Any], image_size: int | None = None) -> torch.nn.Module:
    """Create the backbone ``backbone_cfg["name"]`` with the other keys as options.

    ``input_size`` follows ``image_size`` when the backbone takes one and the config does not set it.
    Unknown options fail with the config key, a did-you-mean and the known options.
    """
    from faceforge.models.backbones.registry import create_model

    name, bcfg = check_backbone_config(backbone_cfg)
    if image_size is not None and "input_size" not in bcfg and "input_size" in _params(name):
        bcfg["input_size"] = image_size
    return create_model(name, **bcfg)


def _params(name: str) -> dict[str, inspect.Parameter]:
    from faceforge.models.backbones.registry import MODELS

    return dict(inspect.signature(MODELS.get(name)).parameters)


def check_backbone_config(backbone_cfg: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """Validate a backbone section without building it; returns ``(name, options)``.

    An unknown name lists the known backbones; an unknown option names the config key with a
    did-you-mean and the options the backbone accepts.
    """
    bcfg = dict(backbone_cfg)
    name = bcfg.pop("name", None)
    if not name:
        raise FaceforgeError("model.backbone.name is missing (e.g. --model.backbone.name ghostfacenetv1)")
    params = _params(name)
    if not any(p.kind == p.VAR_KEYWORD for p in params.values()):
        for key in bcfg:
            if key not in params:
                raise FaceforgeError(
                    f"unknown config key 'model.backbone.{key}' for backbone {name!r}"
                    f"{did_you_mean(key, params)}; known: {', '.join(params)}"
                )
    return name, bcfg
