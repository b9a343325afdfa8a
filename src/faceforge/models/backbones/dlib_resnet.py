"""dlib's face-recognition ResNet (``dlib_face_recognition_resnet_model_v1.dat``) as a PyTorch module:
the 29-conv, 128-d network of D. E. King's dlib ("Dlib-ml: A Machine Learning Toolkit", JMLR
10:1755-1758, 2009; ``dnn_face_recognition_ex.cpp``) on 150×150 RGB chips.
``create_model("dlib_resnet_v1")`` (:func:`dlib_resnet_v1`) builds it randomly initialised;
:func:`load_dlib_resnet` reads the weights from dlib's own file with :mod:`faceforge.models.dlib_format`
(no dlib needed at run time). Details: docs/backbones.md, "dlib ResNet in PyTorch".
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from faceforge.errors import FaceforgeError
from faceforge.models.backbones._common import _pair
from faceforge.models.backbones.registry import register_model
from faceforge.models.dlib_format import (
    AddPrev,
    Affine,
    AvgPool,
    Con,
    DlibNet,
    Fc,
    Marker,
    MaxPool,
    Relu,
    read_dlib_net,
)
from faceforge.models.face_cfg import FaceConfig

__all__ = [
    "DLIB_MODEL_FILE",
    "DLIB_V1_STAGES",
    "AffineLayer",
    "DlibResBlock",
    "DlibResNetV1",
    "dlib_model_path",
    "dlib_resnet_v1",
    "load_dlib_resnet",
]

DLIB_MODEL_FILE = "dlib_face_recognition_resnet_model_v1.dat"
#: (channels, blocks, stride of the first block) per stage; dlib's level4 .. level0.
DLIB_V1_STAGES: tuple[tuple[int, int, int], ...] = (
    (32, 3, 1),
    (64, 4, 2),
    (128, 3, 2),
    (256, 3, 2),
    (256, 1, 2),
)
DLIB_MEAN_RGB = (122.782, 117.001, 104.298)


def _face_cfg(
    input_size: tuple[int, int], embedding_size: int, mean: Sequence[float] = DLIB_MEAN_RGB
) -> FaceConfig:
    return FaceConfig(
        input_size=input_size,
        color="RGB",
        mean=tuple(m / 255 for m in mean),  # type: ignore[arg-type]
        std=(256 / 255, 256 / 255, 256 / 255),
        template="dlib",
        embedding_size=embedding_size,
        extra={"name": "dlib_resnet_v1"},
    )


#: the default config of the registered ``dlib_resnet_v1`` (150×150 dlib chip, RGB, dlib's mean, /256)
DLIB_RESNET_V1_CFG = _face_cfg((150, 150), 128)


class AffineLayer(nn.Module):
    """dlib's ``affine_`` in CONV_MODE: ``x * weight[c] + bias[c]`` (a frozen batch norm)."""

    def __init__(self, num_features: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(num_features))
        self.bias = nn.Parameter(torch.zeros(num_features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.weight.view(1, -1, 1, 1) + self.bias.view(1, -1, 1, 1)


def _zero_extended_add(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``a + b`` with each zero-extended (at the end) to the larger channel count, height and width.

    The sizes are static for a given input size, so an ONNX trace records them as constants (with a
    TracerWarning); the batch dimension stays dynamic.
    """
    ca, ha, wa = (int(v) for v in a.shape[1:])
    cb, hb, wb = (int(v) for v in b.shape[1:])
    c, h, w = max(ca, cb), max(ha, hb), max(wa, wb)
    if (ca, ha, wa) != (c, h, w):
        a = F.pad(a, (0, w - wa, 0, h - ha, 0, c - ca))
    if (cb, hb, wb) != (c, h, w):
        b = F.pad(b, (0, w - wb, 0, h - hb, 0, c - cb))
    return a + b


class DlibResBlock(nn.Module):
    """``ares`` (stride 1, identity shortcut) or ``ares_down`` (stride 2, 2×2/2 average-pool shortcut).

    Branch: 3×3 conv (stride ``s``; padding 1, or 0 when strided, as dlib) → affine → ReLU → 3×3 conv
    → affine; output ``relu(branch + shortcut)`` with dlib's zero-extending sum.
    """

    def __init__(self, in_chs: int, chs: int, stride: int = 1) -> None:
        super().__init__()
        if stride not in (1, 2):
            raise FaceforgeError(f"dlib residual blocks have stride 1 or 2, got {stride}")
        self.stride = stride
        self.conv1 = nn.Conv2d(in_chs, chs, 3, stride, 1 if stride == 1 else 0)
        self.affine1 = AffineLayer(chs)
        self.conv2 = nn.Conv2d(chs, chs, 3, 1, 1)
        self.affine2 = AffineLayer(chs)
        self.shortcut = nn.AvgPool2d(2, 2) if stride == 2 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.affine2(self.conv2(F.relu(self.affine1(self.conv1(x)))))
        return F.relu(_zero_extended_add(y, self.shortcut(x)))


def _out(n: int, k: int, s: int, p: int) -> int:
    return (n + 2 * p - k) // s + 1  # dlib's (and PyTorch's floor-mode) output size


def _feature_size(size: int, stages: Sequence[tuple[int, int, int]]) -> int:
    """Spatial size after the stem and all stages (dlib's size rules); 0 if some layer gets too small."""
    n = _out(_out(size, 7, 2, 0), 3, 2, 0)
    for _, _, stride in stages:
        if stride == 2:
            conv, pool = _out(n, 3, 2, 0), _out(n, 2, 2, 0)
            if n < 3 or conv < 1:
                return 0
            n = max(conv, pool)
    return n


class DlibResNetV1(nn.Module):
    """dlib's face-recognition ResNet; ``forward`` maps ``[B, 3, H, W]`` (normalised RGB) to ``[B, E]``.

    ``stages``: (channels, blocks, first-block stride) per stage, input side first (dlib's level4 first).
    """

    def __init__(
        self,
        embedding_size: int = 128,
        input_size: int | Sequence[int] = 150,
        stages: Sequence[tuple[int, int, int]] = DLIB_V1_STAGES,
        stem_chs: int = 32,
    ) -> None:
        super().__init__()
        if not (isinstance(embedding_size, int) and embedding_size > 0):
            raise FaceforgeError(f"embedding_size must be a positive int, got {embedding_size!r}")
        h, w = _pair(input_size)
        fh, fw = _feature_size(h, stages), _feature_size(w, stages)
        if fh < 1 or fw < 1:
            raise FaceforgeError(f"input_size {input_size!r} is too small for the dlib ResNet (112 or more)")
        self.embedding_size = embedding_size
        self.stages_spec = tuple((int(c), int(n), int(s)) for c, n, s in stages)
        self.feat_size = (fh, fw)
        self.conv1 = nn.Conv2d(3, stem_chs, 7, 2, 0)
        self.affine1 = AffineLayer(stem_chs)
        self.maxpool = nn.MaxPool2d(3, 2, 0)
        chs = stem_chs
        stage_mods = []
        for out, n, stride in self.stages_spec:
            blocks = []
            for i in range(n):
                blocks.append(DlibResBlock(chs, out, stride if i == 0 else 1))
                chs = max(chs, out)  # the zero-extending sum keeps the wider of branch and shortcut
            stage_mods.append(nn.Sequential(*blocks))
        self.stages = nn.Sequential(*stage_mods)
        self.num_features = chs
        self.fc = nn.Linear(chs, embedding_size, bias=False)
        self._init()

    def _init(self) -> None:
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        # Damp each residual branch: with unit scales, the 14 residual sums grow random-init
        # embeddings ~40x (to |e| ~ 40); 0.5 keeps them of order 1, like the trained model's.
        for m in self.modules():
            if isinstance(m, DlibResBlock):
                nn.init.constant_(m.affine2.weight, 0.5)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised image batch → ``[B, C, h, w]`` (256×2×2 at 150×150)."""
        x = self.maxpool(F.relu(self.affine1(self.conv1(x))))
        return self.stages(x)

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        """Feature map → global average pool → linear (no bias): the raw descriptor."""
        return self.fc(x.mean(dim=(2, 3)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


@register_model("dlib_resnet_v1")
def dlib_resnet_v1(embedding_size: int = 128, input_size: int | Sequence[int] = 150) -> DlibResNetV1:
    """dlib's face-recognition ResNet, randomly initialised (weights: :func:`load_dlib_resnet`)."""
    model = DlibResNetV1(embedding_size, input_size)
    model.face_cfg = _face_cfg(_pair(input_size), embedding_size)
    return model


# --------------------------------------------------------------------------------- dlib's file


def dlib_model_path() -> Path | None:
    """The ``.dat`` shipped in the ``face_recognition_models`` package, or ``None`` if not installed.

    The package is located without being imported (its ``__init__`` needs ``pkg_resources``).
    """
    try:
        spec = importlib.util.find_spec("face_recognition_models")
    except (ImportError, ValueError):
        return None
    for loc in (spec.submodule_search_locations or []) if spec else []:
        p = Path(loc) / "models" / DLIB_MODEL_FILE
        if p.is_file():
            return p
    return None


class _Cursor:
    """Walks the parsed layer list, checking each layer against the expected architecture."""

    def __init__(self, net: DlibNet) -> None:
        self.net, self.layers, self.i = net, net.layers, 0

    def fail(self, expected: str) -> FaceforgeError:
        if self.i < len(self.layers):
            layer = self.layers[self.i]
            off = layer.offset
            got = type(layer).__name__
            if isinstance(layer, Con):
                got += f" with {layer.num_filters} filters of {layer.weight.shape[1]}x{layer.nr}x{layer.nc},"
            elif isinstance(layer, (MaxPool, AvgPool)):
                got += f" {layer.nr}x{layer.nc},"
            if isinstance(layer, (Con, MaxPool, AvgPool)):
                got += f" stride {layer.stride} padding {layer.padding}"
            return FaceforgeError(
                f"{self.net.path}: byte offset {off}: expected {expected} of dlib's face ResNet, got {got}"
            )
        return FaceforgeError(
            f"{self.net.path}: the network ends where {expected} of dlib's face ResNet was expected"
        )

    def peek(self) -> object:
        return self.layers[self.i] if self.i < len(self.layers) else None

    def take(self, cls: type, expected: str, check: Callable[[Any], bool] = lambda layer: True) -> Any:
        layer = self.peek()
        if not isinstance(layer, cls) or not check(layer):
            raise self.fail(expected)
        self.i += 1
        return layer

    def con(self, k: int, stride: int, in_chs: int, expected: str) -> Con:
        pad = k // 2 if stride == 1 else 0  # dlib's default padding
        return self.take(
            Con,
            f"{expected} ({k}x{k} conv, stride {stride}, padding {pad}, {in_chs} input channels)",
            lambda c: (
                (c.nr, c.nc, c.stride, c.padding) == (k, k, (stride, stride), (pad, pad))
                and c.weight.shape[1] == in_chs
            ),
        )

    def affine(self, chs: int, expected: str) -> Affine:
        return self.take(
            Affine, f"{expected} (affine over {chs} channels)", lambda a: a.mode == 0 and a.gamma.size == chs
        )


def _conv_sd(sd: dict[str, torch.Tensor], prefix: str, c: Con) -> None:
    sd[prefix + ".weight"] = torch.from_numpy(c.weight)
    sd[prefix + ".bias"] = torch.from_numpy(c.bias)


def _affine_sd(sd: dict[str, torch.Tensor], prefix: str, a: Affine) -> None:
    sd[prefix + ".weight"] = torch.from_numpy(a.gamma)
    sd[prefix + ".bias"] = torch.from_numpy(a.beta)


def _match(net: DlibNet) -> tuple[list[tuple[int, int, int]], int, dict[str, torch.Tensor], Fc]:
    """The stages, stem width and state dict of ``net`` (a :class:`DlibNet`), checking its layout."""
    cur = _Cursor(net)
    sd: dict[str, torch.Tensor] = {}
    stem = cur.con(7, 2, 3, "the stem")
    _conv_sd(sd, "conv1", stem)
    _affine_sd(sd, "affine1", cur.affine(stem.num_filters, "the stem"))
    cur.take(Relu, "the stem ReLU")
    cur.take(
        MaxPool,
        "the stem 3x3/2 max-pool",
        lambda p: (p.nr, p.nc, p.stride, p.padding) == (3, 3, (2, 2), (0, 0)),
    )
    chs = stem.num_filters
    stages: list[tuple[int, int, int]] = []
    while isinstance(cur.peek(), Marker):
        cur.take(Marker, "a residual block's tag")
        c1 = cur.peek()
        stride = c1.stride[0] if isinstance(c1, Con) else 1
        if stride not in (1, 2):
            raise cur.fail("a residual block's first conv (stride 1 or 2)")
        if stride == 2 or not stages:
            stages.append((0, 0, stride))
        s, b = len(stages) - 1, stages[-1][1]
        prefix = f"stages.{s}.{b}"
        c1 = cur.con(3, stride, chs, "a residual block's first conv")
        out = c1.num_filters
        if stages[-1][0] not in (0, out):
            raise cur.fail(f"a block of {stages[-1][0]} channels like the rest of its stage")
        _conv_sd(sd, prefix + ".conv1", c1)
        _affine_sd(sd, prefix + ".affine1", cur.affine(out, "a residual block"))
        cur.take(Relu, "a residual block's ReLU")
        c2 = cur.take(
            Con,
            f"a residual block's second conv (3x3, stride 1, padding 1, {out} in and out channels)",
            lambda c, out=out: (
                (c.nr, c.nc, c.stride, c.padding) == (3, 3, (1, 1), (1, 1))
                and c.weight.shape[:2] == (out, out)
            ),
        )
        _conv_sd(sd, prefix + ".conv2", c2)
        _affine_sd(sd, prefix + ".affine2", cur.affine(out, "a residual block"))
        if stride == 2:
            cur.take(Marker, "ares_down's tag of the branch output")
            cur.take(Marker, "ares_down's skip back to the block input")
            cur.take(
                AvgPool,
                "ares_down's 2x2/2 average-pool shortcut",
                lambda p: (p.nr, p.nc, p.stride, p.padding) == (2, 2, (2, 2), (0, 0)),
            )
        cur.take(AddPrev, "a residual block's add_prev")
        cur.take(Relu, "a residual block's final ReLU")
        stages[-1] = (out, b + 1, stages[-1][2])
        chs = max(chs, out)
    if not stages:
        raise cur.fail("a residual block")
    cur.take(
        AvgPool,
        "avg_pool_everything",
        lambda p: (p.nr, p.nc, p.stride, p.padding) == (0, 0, (1, 1), (0, 0)),
    )
    fc = cur.take(Fc, f"fc_no_bias over {chs} features", lambda f: f.num_inputs == chs and f.bias is None)
    sd["fc.weight"] = torch.from_numpy(np.ascontiguousarray(fc.weight.T))
    if cur.i != len(cur.layers):
        raise cur.fail("the end of the network after the fc layer")
    return stages, stem.num_filters, sd, fc


def load_dlib_resnet(path: str | os.PathLike[str] | None = None, exact_v1: bool = True) -> DlibResNetV1:
    """Build :class:`DlibResNetV1` from dlib's ``.dat`` file (default: :func:`dlib_model_path`).

    The module is built from the layers read from the file (filter counts, strides, paddings, the
    input size and normalisation) and loaded with a strict state dict. With ``exact_v1`` (default) the
    file must have exactly the layout of ``create_model("dlib_resnet_v1")``. The returned model is in
    eval mode and carries ``face_cfg`` and ``dlib_meta`` (the file's loss margin and distance threshold).
    """
    if path is None:
        path = dlib_model_path()
        if path is None:
            raise FaceforgeError(
                f"{DLIB_MODEL_FILE} not found: pip install face-recognition-models, or pass its path"
            )
    net = read_dlib_net(path)
    stages, stem, sd, fc = _match(net)
    inp = net.input
    size = (inp.nr, inp.nc)
    if exact_v1 and (
        tuple(stages) != DLIB_V1_STAGES or stem != 32 or fc.num_outputs != 128 or size != (150, 150)
    ):
        raise FaceforgeError(
            f"{net.path}: a dlib ResNet with stem {stem}, stages {stages}, input {size} and "
            f"{fc.num_outputs}-d output is not dlib_resnet_v1 (32, {list(DLIB_V1_STAGES)}, (150, 150), 128); "
            "pass exact_v1=False to load it anyway"
        )
    bad = [k for k, v in sd.items() if not bool(torch.isfinite(v).all())]
    if bad:
        raise FaceforgeError(f"{net.path}: non-finite weights in {', '.join(bad[:5])}")
    try:
        model = DlibResNetV1(fc.num_outputs, size, stages, stem)
    except FaceforgeError as e:
        raise FaceforgeError(f"{net.path}: {e}") from None
    model.load_state_dict(sd, strict=True)
    mean = tuple(round(v, 3) for v in (inp.avg_red, inp.avg_green, inp.avg_blue))
    model.face_cfg = _face_cfg(size, fc.num_outputs, mean)
    model.dlib_meta = {"margin": net.loss.margin, "dist_thresh": net.loss.dist_thresh, "path": str(net.path)}
    return model.eval()
