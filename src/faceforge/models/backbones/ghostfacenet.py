"""GhostFaceNetV1 / GhostFaceNetV2 face-recognition backbones (M. Alansari, O. A. Hay, S. Javed,
A. Shoufan, Y. Zweiri, N. Werghi, "GhostFaceNets: Lightweight Face Recognition Model From Cheap
Operations", IEEE Access 11, 2023, doi:10.1109/ACCESS.2023.3266068), built on GhostNet (K. Han et al.,
CVPR 2020) and, for V2, the DFC attention of GhostNetV2 (Y. Tang et al., NeurIPS 2022); the Keras
parameter counts of the paper are reproduced exactly. Entry points: :func:`ghostfacenetv1`,
:func:`ghostfacenetv2`, :class:`GhostFaceNet`. Details: docs/backbones.md, "GhostFaceNets layout".
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from faceforge.errors import FaceforgeError
from faceforge.models.backbones._common import _kaiming_init, _pair
from faceforge.models.backbones.registry import register_model
from faceforge.models.face_cfg import FaceConfig

__all__ = ["GhostBottleneck", "GhostFaceNet", "GhostModule", "ghostfacenetv1", "ghostfacenetv2"]

# GhostNet's 16 bottlenecks: (depthwise kernel, stride, expansion channels, output channels, SE ratio)
_GHOST_STACKS: tuple[tuple[int, int, int, int, float], ...] = (
    (3, 1, 16, 16, 0.0),
    (3, 2, 48, 24, 0.0),
    (3, 1, 72, 24, 0.0),
    (5, 2, 72, 40, 0.25),
    (5, 1, 120, 40, 0.25),
    (3, 2, 240, 80, 0.0),
    (3, 1, 200, 80, 0.0),
    (3, 1, 184, 80, 0.0),
    (3, 1, 184, 80, 0.0),
    (3, 1, 480, 112, 0.25),
    (3, 1, 672, 112, 0.25),
    (5, 2, 672, 160, 0.25),
    (5, 1, 960, 160, 0.0),
    (5, 1, 960, 160, 0.25),
    (5, 1, 960, 160, 0.0),
    (5, 1, 960, 160, 0.25),  # expansion is 512 in GhostFaceNetV1 (``last_mid``)
)


def make_divisible(value: float, divisor: int = 4) -> int:
    """Round ``value`` to the nearest multiple of ``divisor`` (never below ``divisor`` nor 90 % of value)."""
    new = max(divisor, int(value + divisor / 2) // divisor * divisor)
    if new < 0.9 * value:
        new += divisor
    return new


class ConvBnAct(nn.Module):
    """Conv (no bias) -> BatchNorm -> optional per-channel PReLU."""

    def __init__(
        self,
        in_chs: int,
        out_chs: int,
        kernel_size: int | tuple[int, int] = 1,
        stride: int = 1,
        groups: int = 1,
        act: bool = True,
    ) -> None:
        super().__init__()
        k = _pair(kernel_size, coerce=True)
        self.conv = nn.Conv2d(
            in_chs, out_chs, k, stride, padding=(k[0] // 2, k[1] // 2), groups=groups, bias=False
        )
        self.bn = nn.BatchNorm2d(out_chs)
        self.act = nn.PReLU(out_chs, init=0.25) if act else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))


class SqueezeExcite(nn.Module):
    """Squeeze-excite: global mean -> 1x1 conv -> PReLU -> 1x1 conv -> hard-sigmoid gate.

    The gate is PyTorch's ``hardsigmoid`` = relu6(x + 3) / 6, as in GhostNet.
    """

    def __init__(self, chs: int, se_ratio: float = 0.25, divisor: int = 4) -> None:
        super().__init__()
        reduced = make_divisible(chs * se_ratio, divisor)
        self.conv_reduce = nn.Conv2d(chs, reduced, 1, bias=True)
        self.act = nn.PReLU(reduced, init=0.25)
        self.conv_expand = nn.Conv2d(reduced, chs, 1, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.mean((2, 3), keepdim=True)
        s = self.conv_expand(self.act(self.conv_reduce(s)))
        return x * F.hardsigmoid(s)


class DFCAttention(nn.Module):
    """Decoupled fully-connected attention gate of GhostNetV2 (computed at half resolution)."""

    def __init__(self, in_chs: int, out_chs: int, kernel_size: int = 5) -> None:
        super().__init__()
        self.pool = nn.AvgPool2d(2, 2, ceil_mode=True)  # = Keras AvgPool2D(2, 2, "same")
        self.conv = ConvBnAct(in_chs, out_chs, 1, act=False)
        self.conv_h = ConvBnAct(out_chs, out_chs, (1, kernel_size), groups=out_chs, act=False)
        self.conv_v = ConvBnAct(out_chs, out_chs, (kernel_size, 1), groups=out_chs, act=False)

    def forward(self, x: torch.Tensor, size: tuple[int, int] | torch.Size) -> torch.Tensor:
        g = torch.sigmoid(self.conv_v(self.conv_h(self.conv(self.pool(x)))))
        return F.interpolate(g, size=size, mode="bilinear", align_corners=False)


class GhostModule(nn.Module):
    """Ghost module: 1x1 conv makes half the channels, a cheap 3x3 depthwise conv makes the rest.

    With ``dfc=True`` the output is multiplied by a :class:`DFCAttention` gate computed from the input.
    """

    def __init__(self, in_chs: int, out_chs: int, act: bool = True, dfc: bool = False, dw_kernel: int = 3):
        super().__init__()
        self.out_chs = out_chs
        primary = math.ceil(out_chs / 2)
        self.primary_conv = ConvBnAct(in_chs, primary, 1, act=act)
        self.cheap_operation = ConvBnAct(primary, primary, dw_kernel, groups=primary, act=act)
        self.attn = DFCAttention(in_chs, out_chs) if dfc else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.primary_conv(x)
        out = torch.cat([y, self.cheap_operation(y)], dim=1)
        if out.shape[1] != self.out_chs:
            out = out[:, : self.out_chs]
        if self.attn is not None:
            out = out * self.attn(x, out.shape[-2:])
        return out


class GhostBottleneck(nn.Module):
    """Ghost bottleneck: ghost (expand) -> [strided depthwise] -> [SE] -> ghost (project), plus shortcut."""

    def __init__(
        self,
        in_chs: int,
        mid_chs: int,
        out_chs: int,
        dw_kernel: int = 3,
        stride: int = 1,
        se_ratio: float = 0.0,
        dfc: bool = False,
    ) -> None:
        super().__init__()
        self.ghost1 = GhostModule(in_chs, mid_chs, act=True, dfc=dfc)
        self.conv_dw = (
            ConvBnAct(mid_chs, mid_chs, dw_kernel, stride, groups=mid_chs, act=False)
            if stride > 1
            else nn.Identity()
        )
        self.se = SqueezeExcite(mid_chs, se_ratio) if se_ratio > 0 else nn.Identity()
        self.ghost2 = GhostModule(mid_chs, out_chs, act=False)
        if in_chs == out_chs and stride == 1:
            self.shortcut: nn.Module = nn.Identity()
        else:
            self.shortcut = nn.Sequential(
                ConvBnAct(in_chs, in_chs, dw_kernel, stride, groups=in_chs, act=False),
                ConvBnAct(in_chs, out_chs, 1, act=False),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.shortcut(x) + self.ghost2(self.se(self.conv_dw(self.ghost1(x))))


class GDCHead(nn.Module):
    """Global depthwise conv embedding head: dw kxk (k = feature size) -> BN -> dropout -> 1x1 -> BN."""

    def __init__(
        self, in_chs: int, feat_size: tuple[int, int], embedding_size: int = 512, dropout: float = 0.0
    ) -> None:
        super().__init__()
        self.feat_size = feat_size
        self.conv_dw = nn.Conv2d(in_chs, in_chs, feat_size, groups=in_chs, bias=False)
        self.bn1 = nn.BatchNorm2d(in_chs)
        self.drop = nn.Dropout(dropout)
        self.conv = nn.Conv2d(in_chs, embedding_size, 1, bias=False)
        self.bn2 = nn.BatchNorm1d(embedding_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-2:] != self.feat_size:
            raise FaceforgeError(
                f"GDC head built for a {tuple(self.feat_size)} feature map got {tuple(x.shape[-2:])}; "
                "build the model with the input_size you feed it"
            )
        x = self.conv(self.drop(self.bn1(self.conv_dw(x))))
        return self.bn2(x.flatten(1))


class GhostFaceNet(nn.Module):
    """GhostFaceNet backbone; ``forward`` returns the raw embedding ``[B, embedding_size]``.

    Args:
        width: channel multiplier (1.3 in the paper; any positive value works).
        stride: stem stride, 1 (S1, 7x7 final map at 112 px) or 2 (S2, 4x4).
        embedding_size: output dimension.
        dropout: dropout before the final 1x1 conv of the GDC head.
        input_size: int or (height, width); sets the GDC kernel so any input size works.
        num_ghost_v1_stacks: bottlenecks (from the first) without DFC attention; the rest use it.
        last_mid: expansion channels of the 16th bottleneck before width scaling.
        final_chs: channels of the 1x1 conv before the head, before width scaling.
        in_chans: input image channels.
    """

    def __init__(
        self,
        width: float = 1.3,
        stride: int = 1,
        embedding_size: int = 512,
        dropout: float = 0.0,
        input_size: int | Sequence[int] = 112,
        num_ghost_v1_stacks: int = 16,
        last_mid: int = 512,
        final_chs: int = 512,
        in_chans: int = 3,
    ) -> None:
        super().__init__()
        if not (isinstance(width, (int, float)) and width > 0):
            raise FaceforgeError(f"width must be a positive number, got {width!r}")
        if stride not in (1, 2):
            raise FaceforgeError(f"stride must be 1 or 2, got {stride!r}")
        if not (0.0 <= dropout < 1.0):
            raise FaceforgeError(f"dropout must be in [0, 1), got {dropout!r}")
        if not (isinstance(embedding_size, int) and embedding_size > 0):
            raise FaceforgeError(f"embedding_size must be a positive int, got {embedding_size!r}")
        h, w = _pair(input_size, coerce=True)
        if h < 1 or w < 1:
            raise FaceforgeError(f"input_size must be positive, got {input_size!r}")
        self.embedding_size = embedding_size

        stem_chs = make_divisible(16 * width)
        self.stem = ConvBnAct(in_chans, stem_chs, 3, stride)
        h, w = math.ceil(h / stride), math.ceil(w / stride)

        blocks = []
        prev = stem_chs
        for i, (k, s, mid, out, se) in enumerate(_GHOST_STACKS):
            if i == len(_GHOST_STACKS) - 1:
                mid = last_mid
            out_chs, mid_chs = make_divisible(out * width), make_divisible(mid * width)
            blocks.append(GhostBottleneck(prev, mid_chs, out_chs, k, s, se, dfc=i >= num_ghost_v1_stacks))
            if s > 1:
                h, w = math.ceil(h / s), math.ceil(w / s)
            prev = out_chs
        self.blocks = nn.Sequential(*blocks)
        self.num_features = make_divisible(final_chs * width)
        self.conv_head = ConvBnAct(prev, self.num_features, 1)
        self.feat_size = (h, w)
        self.head = GDCHead(self.num_features, (h, w), embedding_size, dropout)
        _kaiming_init(self)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Image batch ``[B, C, H, W]`` -> final feature map ``[B, num_features, h, w]``."""
        return self.conv_head(self.blocks(self.stem(x)))

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        """Final feature map -> raw embedding ``[B, embedding_size]``."""
        return self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def _face_cfg(
    version: str, width: float, stride: int, input_size: int | Sequence[int], emb: int
) -> FaceConfig:
    return FaceConfig(
        input_size=_pair(input_size, coerce=True),
        embedding_size=emb,
        extra={"family": "ghostfacenet", "version": version, "width": width, "stride": stride},
    )


@register_model("ghostfacenetv1")
def ghostfacenetv1(
    width: float = 1.3,
    stride: int = 1,
    embedding_size: int = 512,
    dropout: float = 0.0,
    input_size: int | Sequence[int] = 112,
    num_ghost_v1_stacks: int = 16,
    in_chans: int = 3,
) -> GhostFaceNet:
    """GhostFaceNetV1 (all-GhostNetV1 bottlenecks; 4,059,748 params at width 1.3, stride 1)."""
    model = GhostFaceNet(
        width, stride, embedding_size, dropout, input_size, num_ghost_v1_stacks, 512, 512, in_chans
    )
    model.face_cfg = _face_cfg("v1", width, stride, input_size, embedding_size)
    return model


@register_model("ghostfacenetv2")
def ghostfacenetv2(
    width: float = 1.3,
    stride: int = 1,
    embedding_size: int = 512,
    dropout: float = 0.0,
    input_size: int | Sequence[int] = 112,
    num_ghost_v1_stacks: int = 2,
    in_chans: int = 3,
) -> GhostFaceNet:
    """GhostFaceNetV2 (DFC attention after the first 2 bottlenecks; 6,795,720 params at 1.3 / S1)."""
    model = GhostFaceNet(
        width, stride, embedding_size, dropout, input_size, num_ghost_v1_stacks, 960, 960, in_chans
    )
    model.face_cfg = _face_cfg("v2", width, stride, input_size, embedding_size)
    return model
