"""EdgeFace: EdgeNeXt backbones with low-rank linear layers for face recognition (A. George, C. Ecabert,
H. O. Shahreza, K. Kotwal, S. Marcel, "EdgeFace: Efficient Face Recognition Model for Edge Devices",
IEEE Trans. Biometrics, Behavior, and Identity Science 2024, arXiv:2307.01838), built on timm's EdgeNeXt
(M. Maaz et al., "EdgeNeXt: Efficiently Amalgamated CNN-Transformer Architecture for Mobile Vision
Applications", ECCV-W 2022). Entry points: :class:`EdgeFace`, :class:`LowRankLinear`,
:func:`replace_linear_with_low_rank` and the registered ``edgeface_*`` factories; requires ``timm``.
Details: docs/backbones.md, "EdgeFace".
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from faceforge.errors import FaceforgeError
from faceforge.models.backbones._common import _pair, _timm
from faceforge.models.backbones.registry import register_model
from faceforge.models.face_cfg import FaceConfig

__all__ = ["EdgeFace", "LowRankLinear", "replace_linear_with_low_rank"]


class LowRankLinear(nn.Module):
    """``x -> linear2(linear1(x))`` with ``linear1: in -> rank`` (no bias) and ``linear2: rank -> out``."""

    def __init__(self, in_features: int, out_features: int, rank: int, bias: bool = True) -> None:
        super().__init__()
        self.in_features, self.out_features, self.rank = in_features, out_features, rank
        self.linear1 = nn.Linear(in_features, rank, bias=False)
        self.linear2 = nn.Linear(rank, out_features, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear2(self.linear1(x))


def replace_linear_with_low_rank(module: nn.Module, gamma: float) -> nn.Module:
    """Replace, in place, every ``nn.Linear`` child not named like "head" by a :class:`LowRankLinear`.

    The rank is ``max(2, int(min(in_features, out_features) * gamma))``. Returns ``module``.
    """
    for name, child in module.named_children():
        if isinstance(child, nn.Linear) and "head" not in name:
            rank = max(2, int(min(child.in_features, child.out_features) * gamma))
            new = LowRankLinear(child.in_features, child.out_features, rank, child.bias is not None)
            setattr(module, name, new.to(device=child.weight.device, dtype=child.weight.dtype))
        else:
            replace_linear_with_low_rank(child, gamma)
    return module


class EdgeFace(nn.Module):
    """EdgeFace backbone (timm EdgeNeXt under ``model``); ``forward`` returns the raw embedding.

    Args:
        arch: timm EdgeNeXt name, e.g. ``"edgenext_x_small"``.
        gamma: low-rank ratio; ``None`` keeps full-rank linears.
        embedding_size: output dimension.
        drop_path_rate: stochastic depth rate passed to timm.
    """

    def __init__(
        self, arch: str, gamma: float | None = None, embedding_size: int = 512, drop_path_rate: float = 0.0
    ) -> None:
        super().__init__()
        if not (isinstance(embedding_size, int) and embedding_size > 0):
            raise FaceforgeError(f"embedding_size must be a positive int, got {embedding_size!r}")
        if gamma is not None and not (0.0 < gamma <= 1.0):
            raise FaceforgeError(f"gamma must be in (0, 1], got {gamma!r}")
        timm = _timm()
        self.model = timm.create_model(
            arch, pretrained=False, num_classes=embedding_size, drop_path_rate=drop_path_rate
        )
        if gamma is not None:
            replace_linear_with_low_rank(self.model, gamma)
        self.embedding_size = embedding_size
        self.num_features = self.model.num_features

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Image batch -> last EdgeNeXt stage ``[B, C, H/32, W/32]``."""
        return self.model.forward_features(x)

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        """Feature map -> pool -> LayerNorm -> (low-rank) linear -> embedding."""
        return self.model.forward_head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def _edgeface(
    name: str,
    arch: str,
    gamma: float | None,
    embedding_size: int,
    input_size: int | Sequence[int],
    dpr: float,
) -> EdgeFace:
    model = EdgeFace(arch, gamma, embedding_size, dpr)
    model.face_cfg = FaceConfig(
        input_size=_pair(input_size),
        embedding_size=embedding_size,
        extra={"family": "edgeface", "arch": name, "timm_arch": arch, "gamma": gamma},
    )
    return model


@register_model("edgeface_base")
def edgeface_base(
    embedding_size: int = 512, input_size: int | Sequence[int] = 112, drop_path_rate: float = 0.0
) -> EdgeFace:
    """EdgeFace-Base: ``edgenext_base``, full-rank."""
    return _edgeface("edgeface_base", "edgenext_base", None, embedding_size, input_size, drop_path_rate)


@register_model("edgeface_s_gamma_05")
def edgeface_s_gamma_05(
    embedding_size: int = 512, input_size: int | Sequence[int] = 112, drop_path_rate: float = 0.0
) -> EdgeFace:
    """EdgeFace-S (gamma 0.5): ``edgenext_small`` with low-rank linears."""
    return _edgeface("edgeface_s_gamma_05", "edgenext_small", 0.5, embedding_size, input_size, drop_path_rate)


@register_model("edgeface_xs_gamma_06")
def edgeface_xs_gamma_06(
    embedding_size: int = 512, input_size: int | Sequence[int] = 112, drop_path_rate: float = 0.0
) -> EdgeFace:
    """EdgeFace-XS (gamma 0.6): ``edgenext_x_small`` with low-rank linears."""
    return _edgeface(
        "edgeface_xs_gamma_06", "edgenext_x_small", 0.6, embedding_size, input_size, drop_path_rate
    )


@register_model("edgeface_xxs")
def edgeface_xxs(
    embedding_size: int = 512, input_size: int | Sequence[int] = 112, drop_path_rate: float = 0.0
) -> EdgeFace:
    """EdgeFace-XXS: ``edgenext_xx_small``, full-rank."""
    return _edgeface("edgeface_xxs", "edgenext_xx_small", None, embedding_size, input_size, drop_path_rate)
