"""Improved ResNets (IResNet) as used by ArcFace's ``arcface_torch`` training code (I. C. Duta, L. Liu,
F. Zhu, L. Shao, "Improved Residual Networks for Image and Video Recognition", ICPR 2020; J. Deng,
J. Guo, N. Xue, S. Zafeiriou, "ArcFace: Additive Angular Margin Loss for Deep Face Recognition", CVPR
2019), with arcface_torch's state-dict keys so its checkpoints load directly. Entry points:
:class:`IResNet` and :func:`iresnet18` … :func:`iresnet200`. Details: docs/backbones.md, "IResNet".
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from faceforge.models.backbones._common import _check_common, _pair
from faceforge.models.backbones.registry import register_model
from faceforge.models.face_cfg import FaceConfig

__all__ = ["IBasicBlock", "IResNet", "iresnet18", "iresnet34", "iresnet50", "iresnet100", "iresnet200"]

_LAYERS = {18: (2, 2, 2, 2), 34: (3, 4, 6, 3), 50: (3, 4, 14, 3), 100: (3, 13, 30, 3), 200: (6, 26, 60, 6)}


class IBasicBlock(nn.Module):
    """IR unit: BN -> 3x3 conv -> BN -> PReLU -> 3x3 conv (stride) -> BN, plus (projected) identity."""

    def __init__(self, in_chs: int, out_chs: int, stride: int = 1, eps: float = 1e-5) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_chs, eps=eps)
        self.conv1 = nn.Conv2d(in_chs, out_chs, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_chs, eps=eps)
        self.prelu = nn.PReLU(out_chs)
        self.conv2 = nn.Conv2d(out_chs, out_chs, 3, stride, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_chs, eps=eps)
        if stride != 1 or in_chs != out_chs:
            self.downsample: nn.Module | None = nn.Sequential(
                nn.Conv2d(in_chs, out_chs, 1, stride, bias=False), nn.BatchNorm2d(out_chs, eps=eps)
            )
        else:
            self.downsample = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.bn3(self.conv2(self.prelu(self.bn2(self.conv1(self.bn1(x))))))
        return out + identity


class IResNet(nn.Module):
    """IResNet backbone; ``forward`` returns the raw embedding ``[B, embedding_size]``.

    Args:
        layers: number of IR units in each of the four stages (64, 128, 256, 512 channels).
        embedding_size: output dimension.
        dropout: dropout before the FC layer.
        input_size: int or (height, width), a multiple of 16; sets the FC input (7x7 at 112).
        in_chans: input image channels.
    """

    def __init__(
        self,
        layers: Sequence[int],
        embedding_size: int = 512,
        dropout: float = 0.0,
        input_size: int | Sequence[int] = 112,
        in_chans: int = 3,
    ) -> None:
        super().__init__()
        h, w = _check_common(embedding_size, dropout, input_size, 16)
        self.embedding_size = embedding_size
        self.conv1 = nn.Conv2d(in_chans, 64, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(64, eps=1e-5)
        self.prelu = nn.PReLU(64)
        chs = 64
        for i, (n, out) in enumerate(zip(layers, (64, 128, 256, 512))):
            blocks = [IBasicBlock(chs, out, 2)] + [IBasicBlock(out, out, 1) for _ in range(n - 1)]
            setattr(self, f"layer{i + 1}", nn.Sequential(*blocks))
            chs = out
        self.num_features = 512
        self.feat_size = (h // 16, w // 16)
        self.bn2 = nn.BatchNorm2d(512, eps=1e-5)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(512 * self.feat_size[0] * self.feat_size[1], embedding_size)
        self.features = nn.BatchNorm1d(embedding_size, eps=1e-5)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, 0, 0.1)
            elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        nn.init.constant_(self.features.weight, 1.0)
        self.features.weight.requires_grad = False

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Image batch -> last stage feature map ``[B, 512, H/16, W/16]``."""
        x = self.prelu(self.bn1(self.conv1(x)))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        """Feature map -> raw embedding (BN -> dropout -> FC -> BN)."""
        x = self.dropout(torch.flatten(self.bn2(x), 1))
        return self.features(self.fc(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def _face_cfg(name: str, input_size: int | Sequence[int], embedding_size: int, **extra: object) -> FaceConfig:
    return FaceConfig(
        input_size=_pair(input_size),
        embedding_size=embedding_size,
        extra={"family": "iresnet", "arch": name, **extra},
    )


def _iresnet(depth: int, embedding_size: int, dropout: float, input_size: int | Sequence[int]) -> IResNet:
    model = IResNet(_LAYERS[depth], embedding_size, dropout, input_size)
    model.face_cfg = _face_cfg(f"iresnet{depth}", input_size, embedding_size)
    return model


@register_model("iresnet18")
def iresnet18(
    embedding_size: int = 512, dropout: float = 0.0, input_size: int | Sequence[int] = 112
) -> IResNet:
    """IResNet-18 (arcface_torch ``r18``)."""
    return _iresnet(18, embedding_size, dropout, input_size)


@register_model("iresnet34")
def iresnet34(
    embedding_size: int = 512, dropout: float = 0.0, input_size: int | Sequence[int] = 112
) -> IResNet:
    """IResNet-34 (arcface_torch ``r34``)."""
    return _iresnet(34, embedding_size, dropout, input_size)


@register_model("iresnet50")
def iresnet50(
    embedding_size: int = 512, dropout: float = 0.0, input_size: int | Sequence[int] = 112
) -> IResNet:
    """IResNet-50 (arcface_torch ``r50``)."""
    return _iresnet(50, embedding_size, dropout, input_size)


@register_model("iresnet100")
def iresnet100(
    embedding_size: int = 512, dropout: float = 0.0, input_size: int | Sequence[int] = 112
) -> IResNet:
    """IResNet-100 (arcface_torch ``r100``)."""
    return _iresnet(100, embedding_size, dropout, input_size)


@register_model("iresnet200")
def iresnet200(
    embedding_size: int = 512, dropout: float = 0.0, input_size: int | Sequence[int] = 112
) -> IResNet:
    """IResNet-200 (arcface_torch ``r200``)."""
    return _iresnet(200, embedding_size, dropout, input_size)
