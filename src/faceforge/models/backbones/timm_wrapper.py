"""``timm/<name>``: any timm image model (R. Wightman, "PyTorch Image Models",
https://github.com/huggingface/pytorch-image-models) as a face backbone, built headless with an
embedding neck ``Linear(num_features, embedding_size, bias=False) -> BatchNorm1d``:
:class:`TimmBackbone`, :func:`create_timm_backbone` (e.g. ``create_model("timm/resnet18",
embedding_size=256)``). Details: docs/backbones.md, "timm/<name>".
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from faceforge.errors import FaceforgeError, did_you_mean
from faceforge.models.backbones._common import _pair, _timm
from faceforge.models.backbones.registry import register_prefix
from faceforge.models.face_cfg import FaceConfig

__all__ = ["TimmBackbone", "create_timm_backbone"]


class TimmBackbone(nn.Module):
    """A headless timm model plus an embedding neck; ``forward`` returns the raw embedding.

    Args:
        name: timm model name.
        embedding_size: output dimension.
        pretrained: load timm's pretrained weights (needs network access or a local cache).
        **timm_kwargs: passed to ``timm.create_model``.
    """

    def __init__(
        self, name: str, embedding_size: int = 512, pretrained: bool = False, **timm_kwargs: Any
    ) -> None:
        super().__init__()
        if not (isinstance(embedding_size, int) and embedding_size > 0):
            raise FaceforgeError(f"embedding_size must be a positive int, got {embedding_size!r}")
        timm = _timm()
        known = timm.list_models()
        if name not in known and name.split(".")[0] not in known:
            raise FaceforgeError(f"unknown timm model {name!r}{did_you_mean(name, known)}")
        try:
            self.model = timm.create_model(name, pretrained=pretrained, num_classes=0, **timm_kwargs)
        except TypeError as e:
            raise FaceforgeError(
                f"timm model {name!r} rejected arguments {sorted(timm_kwargs)}: {e}"
            ) from None
        self.embedding_size = embedding_size
        # The width of ``forward_head(pre_logits=True)``: models with a conv head after pooling
        # (LCNet, MobileNetV3, EfficientNet-lite heads) give ``head_hidden_size``, not ``num_features``.
        self.num_features = int(getattr(self.model, "head_hidden_size", None) or self.model.num_features)
        self.neck = nn.Sequential(
            nn.Linear(self.num_features, embedding_size, bias=False), nn.BatchNorm1d(embedding_size)
        )

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Image batch -> timm's unpooled features."""
        return self.model.forward_features(x)

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        """Unpooled features -> timm pooling -> neck -> embedding."""
        return self.neck(self.model.forward_head(x, pre_logits=True))

    def trunk(self, x: torch.Tensor) -> torch.Tensor:
        """Image batch -> the timm network's pooled features (everything but the neck).

        The neck is always new (pretrained files fill the timm network only), so a frozen warm-up
        (``trainer.freeze_backbone_epochs``) freezes this part and trains the neck with the head.
        """
        return self.model.forward_head(self.model.forward_features(x), pre_logits=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.neck(self.trunk(x))


def create_timm_backbone(
    name: str,
    embedding_size: int = 512,
    input_size: int | Sequence[int] = 112,
    pretrained: bool = False,
    **timm_kwargs: Any,
) -> TimmBackbone:
    """Build ``timm/<name>``; ``input_size`` only sets ``face_cfg`` unless passed on as ``img_size``."""
    model = TimmBackbone(name, embedding_size, pretrained, **timm_kwargs)
    # The architecture's own normalisation (ImageNet mean/std for most): what its pretrained weights
    # expect, and harmless from scratch, so a run started from scratch or from a file is fed alike.
    cfg = getattr(model.model, "pretrained_cfg", None) or {}
    mean, std = tuple(cfg.get("mean", (0.5, 0.5, 0.5))), tuple(cfg.get("std", (0.5, 0.5, 0.5)))
    model.face_cfg = FaceConfig(
        input_size=_pair(input_size),
        color="RGB",
        mean=mean,
        std=std,
        template="arcface",
        embedding_size=embedding_size,
        extra={"family": "timm", "arch": name},
    )
    return model


register_prefix("timm/", create_timm_backbone)
