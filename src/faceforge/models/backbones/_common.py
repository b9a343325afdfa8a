"""Helpers shared by the backbone families: argument checks, ``input_size`` parsing, timm import, init.
Every family module imports these from here rather than from a sibling family, so no backbone file
depends on another; the names keep their leading underscore as they are not package API.
``_kaiming_init`` is the He initialisation (K. He et al., "Delving Deep into Rectifiers", ICCV 2015,
fan-out mode) with unit/zero BatchNorm affine parameters, used by MobileFaceNet and GhostFaceNet.
"""

from __future__ import annotations

from collections.abc import Sequence
from types import ModuleType

from torch import nn

from faceforge.errors import FaceforgeError, missing_extra


def _pair(v: int | Sequence[int], *, coerce: bool = False) -> tuple[int, int]:
    """``112`` or ``(112, 96)`` -> ``(height, width)``.

    ``coerce=True`` passes each item through ``int()`` (GhostFaceNet's rule, which also takes floats
    and NumPy ints); otherwise every item must already be an ``int``.
    """
    if isinstance(v, int):
        return (v, v)
    t = tuple(int(i) for i in v) if coerce else tuple(v)
    if len(t) != 2 or not all(isinstance(i, int) for i in t):
        raise FaceforgeError(f"input_size must be an int or (height, width), got {v!r}")
    return (t[0], t[1])


def _check_common(
    embedding_size: int, dropout: float, input_size: int | Sequence[int], multiple: int
) -> tuple[int, int]:
    """Validate the shared factory arguments; return (height, width)."""
    if not (isinstance(embedding_size, int) and embedding_size > 0):
        raise FaceforgeError(f"embedding_size must be a positive int, got {embedding_size!r}")
    if not (0.0 <= dropout < 1.0):
        raise FaceforgeError(f"dropout must be in [0, 1), got {dropout!r}")
    h, w = _pair(input_size)
    if h < multiple or w < multiple or h % multiple or w % multiple:
        raise FaceforgeError(f"input_size must be a positive multiple of {multiple}, got {input_size!r}")
    return h, w


def _timm() -> ModuleType:
    """Import ``timm`` (an optional extra) or raise the one-line ``pip install`` error."""
    try:
        import timm
    except ImportError:  # pragma: no cover - depends on the environment
        raise missing_extra("timm", "this backbone") from None
    return timm


def _kaiming_init(model: nn.Module) -> None:
    """Kaiming-normal (fan_out, ReLU gain) conv/linear weights, zero biases, BatchNorm weight 1, bias 0."""
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm2d, nn.BatchNorm1d)):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
