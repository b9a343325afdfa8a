"""MobileFaceNet (S. Chen, Y. Liu, X. Gao, Z. Han, "MobileFaceNets: Efficient CNNs for Accurate
Real-Time Face Verification on Mobile Devices", CCBR 2018, arXiv:1804.07573): the original in the
face.evoLVe layout (:func:`mobilefacenet`) and arcface_torch's scaled ``mbf`` variant (:func:`mbf`),
both with the key names of their reference code. Details: docs/backbones.md, "MobileFaceNet".
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from faceforge.errors import FaceforgeError
from faceforge.models.backbones._common import _check_common, _kaiming_init, _pair
from faceforge.models.backbones.registry import register_model
from faceforge.models.face_cfg import FaceConfig

__all__ = ["MBF", "MobileFaceNet", "mbf", "mobilefacenet"]


def _face_cfg(family: str, input_size: int | Sequence[int], embedding_size: int) -> FaceConfig:
    return FaceConfig(
        input_size=_pair(input_size),
        embedding_size=embedding_size,
        extra={"family": family},
    )


# --------------------------------------------------------------------------- face.evoLVe layout


class ConvBlock(nn.Module):
    """Conv (no bias) -> BN -> optional PReLU, as attributes ``conv``/``bn``/``prelu``."""

    def __init__(
        self, in_chs: int, out_chs: int, kernel: int | tuple[int, int] = 1, stride: int = 1,
        padding: int = 0, groups: int = 1, act: bool = True,
    ) -> None:  # fmt: skip
        super().__init__()
        self.conv = nn.Conv2d(in_chs, out_chs, kernel, stride, padding, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(out_chs)
        self.prelu = nn.PReLU(out_chs) if act else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.prelu(self.bn(self.conv(x)))


class DepthWise(nn.Module):
    """Inverted bottleneck: 1x1 expand (PReLU) -> 3x3 depthwise (PReLU) -> 1x1 project, opt. residual."""

    def __init__(self, in_chs: int, out_chs: int, residual: bool, stride: int, groups: int) -> None:
        super().__init__()
        self.residual = residual
        self.conv = ConvBlock(in_chs, groups)
        self.conv_dw = ConvBlock(groups, groups, 3, stride, 1, groups=groups)
        self.project = ConvBlock(groups, out_chs, act=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.project(self.conv_dw(self.conv(x)))
        return x + y if self.residual else y


class Residual(nn.Module):
    """``num_block`` residual stride-1 :class:`DepthWise` units in ``model``."""

    def __init__(self, chs: int, num_block: int, groups: int) -> None:
        super().__init__()
        self.model = nn.Sequential(*[DepthWise(chs, chs, True, 1, groups) for _ in range(num_block)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


class MobileFaceNet(nn.Module):
    """Original MobileFaceNet (face.evoLVe key names); ``forward`` returns the raw embedding."""

    def __init__(self, embedding_size: int = 512, input_size: int | Sequence[int] = 112) -> None:
        super().__init__()
        h, w = _check_common(embedding_size, 0.0, input_size, 16)
        self.embedding_size = embedding_size
        self.feat_size = (h // 16, w // 16)
        self.conv1 = ConvBlock(3, 64, 3, 2, 1)
        self.conv2_dw = ConvBlock(64, 64, 3, 1, 1, groups=64)
        self.conv_23 = DepthWise(64, 64, False, 2, 128)
        self.conv_3 = Residual(64, 4, 128)
        self.conv_34 = DepthWise(64, 128, False, 2, 256)
        self.conv_4 = Residual(128, 6, 256)
        self.conv_45 = DepthWise(128, 128, False, 2, 512)
        self.conv_5 = Residual(128, 2, 256)
        self.conv_6_sep = ConvBlock(128, 512)
        self.num_features = 512
        self.conv_6_dw = ConvBlock(512, 512, self.feat_size, groups=512, act=False)
        self.conv_6_flatten = nn.Flatten()
        self.linear = nn.Linear(512, embedding_size, bias=False)
        self.bn = nn.BatchNorm1d(embedding_size)
        _kaiming_init(self)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Image batch -> ``[B, 512, H/16, W/16]``."""
        x = self.conv_23(self.conv2_dw(self.conv1(x)))
        x = self.conv_4(self.conv_34(self.conv_3(x)))
        return self.conv_6_sep(self.conv_5(self.conv_45(x)))

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        """Feature map -> GDC -> linear -> BN."""
        return self.bn(self.linear(self.conv_6_flatten(self.conv_6_dw(x))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


# --------------------------------------------------------------------------- arcface_torch layout


class SeqConvBlock(nn.Module):
    """Conv (no bias) -> BN -> optional PReLU held in a ``layers`` Sequential (arcface_torch names)."""

    def __init__(
        self, in_chs: int, out_chs: int, kernel: int | tuple[int, int] = 1, stride: int = 1,
        padding: int = 0, groups: int = 1, act: bool = True,
    ) -> None:  # fmt: skip
        super().__init__()
        mods: list[nn.Module] = [
            nn.Conv2d(in_chs, out_chs, kernel, stride, padding, groups=groups, bias=False),
            nn.BatchNorm2d(out_chs),
        ]
        if act:
            mods.append(nn.PReLU(out_chs))
        self.layers = nn.Sequential(*mods)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class SeqDepthWise(nn.Module):
    """Inverted bottleneck in arcface_torch naming (``layers`` = expand, depthwise, project)."""

    def __init__(self, in_chs: int, out_chs: int, residual: bool, stride: int, groups: int) -> None:
        super().__init__()
        self.residual = residual
        self.layers = nn.Sequential(
            SeqConvBlock(in_chs, groups),
            SeqConvBlock(groups, groups, 3, stride, 1, groups=groups),
            SeqConvBlock(groups, out_chs, act=False),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.layers(x)
        return x + y if self.residual else y


class _SeqResidual(nn.Module):
    def __init__(self, chs: int, num_block: int, groups: int) -> None:
        super().__init__()
        self.layers = nn.Sequential(*[SeqDepthWise(chs, chs, True, 1, groups) for _ in range(num_block)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class _GDC(nn.Module):
    def __init__(self, chs: int, kernel: tuple[int, int], embedding_size: int) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            SeqConvBlock(chs, chs, kernel, groups=chs, act=False),
            nn.Flatten(),
            nn.Linear(chs, embedding_size, bias=False),
            nn.BatchNorm1d(embedding_size),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class MBF(nn.Module):
    """arcface_torch MobileFaceNet (``mbf``); ``forward`` returns the raw embedding.

    Args:
        embedding_size: output dimension.
        blocks: residual units in the four stages.
        scale: channel multiplier (2 for ``mbf``).
        input_size: int or (height, width), a multiple of 16.
    """

    def __init__(
        self,
        embedding_size: int = 512,
        blocks: Sequence[int] = (1, 4, 6, 2),
        scale: int = 2,
        input_size: int | Sequence[int] = 112,
    ) -> None:
        super().__init__()
        h, w = _check_common(embedding_size, 0.0, input_size, 16)
        if len(blocks) != 4 or not all(isinstance(b, int) and b >= 1 for b in blocks):
            raise FaceforgeError(f"blocks must be four positive ints, got {blocks!r}")
        if not (isinstance(scale, int) and scale >= 1):
            raise FaceforgeError(f"scale must be a positive int, got {scale!r}")
        self.embedding_size = embedding_size
        self.feat_size = (h // 16, w // 16)
        c64, c128 = 64 * scale, 128 * scale
        first: nn.Module
        if blocks[0] == 1:
            first = SeqConvBlock(c64, c64, 3, 1, 1, groups=64)
        else:
            first = _SeqResidual(c64, blocks[0], 128)
        self.layers = nn.ModuleList(
            [
                SeqConvBlock(3, c64, 3, 2, 1),
                first,
                SeqDepthWise(c64, c64, False, 2, 128),
                _SeqResidual(c64, blocks[1], 128),
                SeqDepthWise(c64, c128, False, 2, 256),
                _SeqResidual(c128, blocks[2], 256),
                SeqDepthWise(c128, c128, False, 2, 512),
                _SeqResidual(c128, blocks[3], 256),
            ]
        )
        self.num_features = 512
        self.conv_sep = SeqConvBlock(c128, 512)
        self.features = _GDC(512, self.feat_size, embedding_size)
        _kaiming_init(self)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Image batch -> ``[B, 512, H/16, W/16]``."""
        for layer in self.layers:
            x = layer(x)
        return self.conv_sep(x)

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        """Feature map -> GDC -> linear -> BN."""
        return self.features(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


@register_model("mobilefacenet")
def mobilefacenet(embedding_size: int = 512, input_size: int | Sequence[int] = 112) -> MobileFaceNet:
    """Original width-1 MobileFaceNet (face.evoLVe ``MobileFaceNet(E, 7, 7)`` at 112)."""
    model = MobileFaceNet(embedding_size, input_size)
    model.face_cfg = _face_cfg("mobilefacenet", input_size, embedding_size)
    return model


@register_model("mbf")
def mbf(
    embedding_size: int = 512,
    blocks: Sequence[int] = (1, 4, 6, 2),
    scale: int = 2,
    input_size: int | Sequence[int] = 112,
) -> MBF:
    """arcface_torch ``mbf``: MobileFaceNet with blocks (1, 4, 6, 2) and channels x2."""
    model = MBF(embedding_size, tuple(blocks), scale, input_size)
    model.face_cfg = _face_cfg("mbf", input_size, embedding_size)
    return model
