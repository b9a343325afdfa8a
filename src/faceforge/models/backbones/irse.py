"""IR / IR-SE ResNets in the face.evoLVe layout, and AdaFace's IR variant (ArcFace, Deng et al., CVPR
2019; J. Hu, L. Shen, G. Sun, "Squeeze-and-Excitation Networks", CVPR 2018; M. Kim, A. K. Jain, X. Liu,
"AdaFace: Quality Adaptive Margin for Face Recognition", CVPR 2022), with the key names of face.evoLVe
and AdaFace so their checkpoints load directly. Entry points: :class:`IRBackbone`, :func:`ir50`,
:func:`ir_se50`, :func:`adaface_ir50`, :func:`adaface_ir101`. Details: docs/backbones.md, "IR / IR-SE
and AdaFace".
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from faceforge.models.backbones._common import _check_common, _pair
from faceforge.models.backbones.registry import register_model
from faceforge.models.face_cfg import FaceConfig

__all__ = ["IRBackbone", "IRUnit", "SEModule", "adaface_ir50", "adaface_ir101", "ir50", "ir_se50"]

_UNITS = {50: (3, 4, 14, 3), 100: (3, 13, 30, 3), 152: (3, 8, 36, 3)}


class SEModule(nn.Module):
    """Squeeze-excitation with bias-free 1x1 convs (``fc1``/``fc2``), ReLU and sigmoid."""

    def __init__(self, chs: int, reduction: int = 16) -> None:
        super().__init__()
        self.avg_pool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(chs, chs // reduction, 1, bias=False)
        self.relu = nn.ReLU(inplace=True)
        self.fc2 = nn.Conv2d(chs // reduction, chs, 1, bias=False)
        self.sigmoid = nn.Sigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.sigmoid(self.fc2(self.relu(self.fc1(self.avg_pool(x)))))


class IRUnit(nn.Module):
    """IR / IR-SE unit. ``bn_after_conv1`` adds the AdaFace BN between the first conv and PReLU."""

    def __init__(
        self, in_chs: int, out_chs: int, stride: int, se: bool = False, bn_after_conv1: bool = False
    ):
        super().__init__()
        if in_chs == out_chs:
            self.shortcut_layer: nn.Module = nn.MaxPool2d(1, stride)  # strided subsampling
        else:
            self.shortcut_layer = nn.Sequential(
                nn.Conv2d(in_chs, out_chs, 1, stride, bias=False), nn.BatchNorm2d(out_chs)
            )
        layers: list[nn.Module] = [nn.BatchNorm2d(in_chs), nn.Conv2d(in_chs, out_chs, 3, 1, 1, bias=False)]
        if bn_after_conv1:
            layers.append(nn.BatchNorm2d(out_chs))
        layers += [nn.PReLU(out_chs), nn.Conv2d(out_chs, out_chs, 3, stride, 1, bias=False)]
        layers.append(nn.BatchNorm2d(out_chs))
        if se:
            layers.append(SEModule(out_chs, 16))
        self.res_layer = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.res_layer(x) + self.shortcut_layer(x)


class IRBackbone(nn.Module):
    """IR / IR-SE backbone; ``forward`` returns the raw embedding ``[B, embedding_size]``.

    Args:
        units: IR units per stage (64, 128, 256, 512 channels; the first unit of each stage has stride 2).
        se: use IR-SE units.
        adaface: AdaFace unit (extra BN) and non-affine output BatchNorm1d.
        embedding_size: output dimension.
        dropout: dropout before the FC layer.
        input_size: int or (height, width), a multiple of 16.
        in_chans: input image channels.
    """

    def __init__(
        self,
        units: Sequence[int],
        se: bool = False,
        adaface: bool = False,
        embedding_size: int = 512,
        dropout: float = 0.0,
        input_size: int | Sequence[int] = 112,
        in_chans: int = 3,
    ) -> None:
        super().__init__()
        h, w = _check_common(embedding_size, dropout, input_size, 16)
        self.embedding_size = embedding_size
        self.input_layer = nn.Sequential(
            nn.Conv2d(in_chans, 64, 3, 1, 1, bias=False), nn.BatchNorm2d(64), nn.PReLU(64)
        )
        body: list[nn.Module] = []
        chs = 64
        for n, out in zip(units, (64, 128, 256, 512)):
            for i in range(n):
                body.append(IRUnit(chs, out, 2 if i == 0 else 1, se=se, bn_after_conv1=adaface))
                chs = out
        self.body = nn.Sequential(*body)
        self.num_features = 512
        self.feat_size = (h // 16, w // 16)
        self.output_layer = nn.Sequential(
            nn.BatchNorm2d(512),
            nn.Dropout(dropout),
            nn.Flatten(),
            nn.Linear(512 * self.feat_size[0] * self.feat_size[1], embedding_size),
            nn.BatchNorm1d(embedding_size, affine=not adaface),
        )
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.xavier_uniform_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Image batch -> last stage feature map ``[B, 512, H/16, W/16]``."""
        return self.body(self.input_layer(x))

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        """Feature map -> raw embedding (BN -> dropout -> FC -> BN)."""
        return self.output_layer(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def _build(
    arch: str,
    depth: int,
    se: bool,
    adaface: bool,
    embedding_size: int,
    dropout: float,
    input_size: int | Sequence[int],
) -> IRBackbone:
    model = IRBackbone(_UNITS[depth], se, adaface, embedding_size, dropout, input_size)
    model.face_cfg = FaceConfig(
        input_size=_pair(input_size),
        color="BGR" if adaface else "RGB",
        embedding_size=embedding_size,
        extra={"family": "adaface" if adaface else "evolve", "arch": arch},
    )
    return model


@register_model("ir50")
def ir50(
    embedding_size: int = 512, dropout: float = 0.0, input_size: int | Sequence[int] = 112
) -> IRBackbone:
    """IR-50 in the face.evoLVe layout (``IR_50``)."""
    return _build("ir50", 50, False, False, embedding_size, dropout, input_size)


@register_model("ir_se50")
def ir_se50(
    embedding_size: int = 512, dropout: float = 0.0, input_size: int | Sequence[int] = 112
) -> IRBackbone:
    """IR-SE-50 in the face.evoLVe layout (``IR_SE_50``)."""
    return _build("ir_se50", 50, True, False, embedding_size, dropout, input_size)


@register_model("adaface_ir50")
def adaface_ir50(
    embedding_size: int = 512, dropout: float = 0.0, input_size: int | Sequence[int] = 112
) -> IRBackbone:
    """AdaFace IR-50 (``build_model('ir_50')``); BGR input; returns the raw embedding only."""
    return _build("adaface_ir50", 50, False, True, embedding_size, dropout, input_size)


@register_model("adaface_ir101")
def adaface_ir101(
    embedding_size: int = 512, dropout: float = 0.0, input_size: int | Sequence[int] = 112
) -> IRBackbone:
    """AdaFace IR-101 (``build_model('ir_101')``, units 3/13/30/3); BGR input; raw embedding only."""
    return _build("adaface_ir101", 100, False, True, embedding_size, dropout, input_size)
