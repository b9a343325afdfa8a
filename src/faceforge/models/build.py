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
    from faceforge.models.backbones.registry import MODELS, create_model

    bcfg = dict(backbone_cfg)
    name = bcfg.pop("name", None)
    if not name:
        raise FaceforgeError("model.backbone.name is missing (e.g. --model.backbone.name ghostfacenetv1)")
    factory = MODELS.get(name)
    params = inspect.signature(factory).parameters
    if image_size is not None and "input_size" in params and "input_size" not in bcfg:
        bcfg["input_size"] = image_size
    if not any(p.kind == p.VAR_KEYWORD for p in params.values()):
        for key in bcfg:
            if key not in params:
                raise FaceforgeError(
                    f"unknown config key 'model.backbone.{key}' for backbone {name!r}"
                    f"{did_you_mean(key, params)}; known: {', '.join(params)}"
                )
    return create_model(name, **bcfg)
