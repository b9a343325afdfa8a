"""Plain softmax, NormFace, ArcFace, CosFace and the combined (m1, m2, m3) margin head."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from faceforge.errors import FaceforgeError
from faceforge.heads.base import HEADS, BaseHead, compute_dtype, replace_target, safe_acos, safe_sqrt

__all__ = [
    "ArcFaceHead",
    "CombinedMarginHead",
    "CosFaceHead",
    "NormFaceHead",
    "SoftmaxHead",
    "arcface_target",
]


def _no_margin(name: str, margin: float) -> None:
    if margin != 0:
        raise FaceforgeError(f"head {name!r} has no margin, got margin={margin!r}")


@HEADS.register("softmax")
class SoftmaxHead(BaseHead):
    """Plain softmax classifier: logits ``scale · (x @ W.T)`` on raw (un-normalised) vectors, no bias.

    ``scale`` defaults to 1 and acts as an inverse temperature.
    """

    normalize = False

    def __init__(
        self, embedding_size: int, num_classes: int, *, scale: float = 1.0, margin: float = 0.0, **kwargs: Any
    ) -> None:
        _no_margin("softmax", margin)
        super().__init__(embedding_size, num_classes, scale=scale, margin=0.0, **kwargs)

    def cosine(self, embeddings: Tensor) -> Tensor:
        """Un-normalised inner products ``x @ W.T`` (float32; not clamped)."""
        if self.weight is None:
            raise FaceforgeError("this head was built with margin_only=True and has no class centres")
        dtype = compute_dtype(embeddings)
        with torch.autocast(device_type=embeddings.device.type, enabled=False):
            return embeddings.to(dtype) @ self.weight.to(dtype).t()


@HEADS.register("normface")
class NormFaceHead(BaseHead):
    """NormFace (Wang et al., ACM MM 2017): ``s · cos θ`` with no margin."""

    def __init__(
        self,
        embedding_size: int,
        num_classes: int,
        *,
        scale: float = 64.0,
        margin: float = 0.0,
        **kwargs: Any,
    ) -> None:
        _no_margin("normface", margin)
        super().__init__(embedding_size, num_classes, scale=scale, margin=0.0, **kwargs)


def arcface_target(t: Tensor, m: float, easy_margin: bool = False) -> Tensor:
    """ArcFace target cosine ``cos(θ + m)`` with the face.evoLVe fallback.

    When ``θ + m > π`` (``cos θ <= cos(π − m)``) the value ``cos θ − m·sin(m)`` is used instead, so
    the margin always lowers the target. With ``easy_margin`` the margin applies only for ``cos θ > 0``.
    """
    cos_m, sin_m = math.cos(m), math.sin(m)
    phi = t * cos_m - safe_sqrt(1.0 - t * t) * sin_m
    if easy_margin:
        return torch.where(t > 0, phi, t)
    th = math.cos(math.pi - m)
    mm = math.sin(math.pi - m) * m
    return torch.where(t > th, phi, t - mm)


@HEADS.register("arcface")
class ArcFaceHead(BaseHead):
    """ArcFace (Deng et al., CVPR 2019): target logit ``s · cos(θ + m)``.

    Uses the face.evoLVe fallback ``cos θ − m·sin(m)`` when ``θ + m > π``; ``easy_margin=True``
    applies the margin only where ``cos θ > 0``. Defaults s = 64, m = 0.5.
    """

    def __init__(
        self,
        embedding_size: int,
        num_classes: int,
        *,
        scale: float = 64.0,
        margin: float = 0.5,
        easy_margin: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(embedding_size, num_classes, scale=scale, margin=margin, **kwargs)
        self.easy_margin = bool(easy_margin)

    def apply_margin(self, cosine: Tensor, labels: Tensor, norms: Tensor | None = None) -> Tensor:
        return (
            replace_target(cosine, labels, lambda t: arcface_target(t, self.margin, self.easy_margin))
            * self.scale
        )


@HEADS.register("cosface")
class CosFaceHead(BaseHead):
    """CosFace / large-margin cosine loss (Wang et al., CVPR 2018): target logit ``s · (cos θ − m)``.

    Defaults s = 64, m = 0.35.
    """

    def __init__(
        self,
        embedding_size: int,
        num_classes: int,
        *,
        scale: float = 64.0,
        margin: float = 0.35,
        **kwargs: Any,
    ) -> None:
        super().__init__(embedding_size, num_classes, scale=scale, margin=margin, **kwargs)

    def apply_margin(self, cosine: Tensor, labels: Tensor, norms: Tensor | None = None) -> Tensor:
        return replace_target(cosine, labels, lambda t: t - self.margin) * self.scale


@HEADS.register("combined")
class CombinedMarginHead(BaseHead):
    """Combined margin (ArcFace paper, Deng et al. CVPR 2019, §3.3): target ``s · (cos(m1·θ + m2) − m3)``.

    ``m1 = 1, m2 = 0.5, m3 = 0`` is ArcFace without the θ + m > π fallback (as insightface does);
    ``m1 = 1, m2 = 0`` is CosFace computed without arccos. ``margin`` is an alias of ``m2``, and a
    ``margin_schedule`` drives ``m2``.
    """

    def __init__(
        self,
        embedding_size: int,
        num_classes: int,
        *,
        scale: float = 64.0,
        m1: float = 1.0,
        m2: float | None = None,
        m3: float = 0.0,
        margin: float | None = None,
        **kwargs: Any,
    ) -> None:
        if m2 is not None and margin is not None and m2 != margin:
            raise FaceforgeError(f"combined head: margin={margin!r} and m2={m2!r} disagree (margin is m2)")
        m2 = m2 if m2 is not None else (margin if margin is not None else 0.5)
        super().__init__(embedding_size, num_classes, scale=scale, margin=m2, **kwargs)
        self.m1 = float(m1)
        self.m3 = float(m3)

    @property
    def m2(self) -> float:
        """The additive angular margin (the scheduled ``margin``)."""
        return self.margin

    def extra_repr(self) -> str:
        return super().extra_repr() + f", m1={self.m1:g}, m3={self.m3:g}"

    def apply_margin(self, cosine: Tensor, labels: Tensor, norms: Tensor | None = None) -> Tensor:
        m1, m2, m3 = self.m1, self.margin, self.m3

        def fn(t: Tensor) -> Tensor:
            if m1 == 1.0 and m2 == 0.0:
                return t - m3
            return torch.cos(m1 * safe_acos(t) + m2) - m3

        return replace_target(cosine, labels, fn) * self.scale
