"""AdaFace (Kim, Jain & Liu, CVPR 2022): a margin adapted to image quality via the embedding norm."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from faceforge.errors import FaceforgeError
from faceforge.heads.base import HEADS, BaseHead, replace_target, safe_acos

__all__ = ["AdaFaceHead"]


@HEADS.register("adaface")
class AdaFaceHead(BaseHead):
    """AdaFace: target logit ``s · (cos(clip(θ + g_angular, ε, π − ε)) − g_add)``.

    With the norm ``‖z‖`` of the raw embedding clipped to [1e-3, 100] and batch statistics μ, σ
    (exponential moving averages with weight ``t_alpha``, σ the unbiased batch std), the margin
    scaler is ``ẑ = clip(h · (‖z‖ − μ) / (σ + ε), −1, 1)``, ``g_angular = −m·ẑ`` and
    ``g_add = m + m·ẑ``. Cosines are clamped to [−1 + ε, 1 − ε]; ε = 1e-3. The norms are treated as
    constants (no gradient), as in the paper. The batch statistics are updated only in training mode.
    Defaults s = 64, m = 0.4, h = 0.333, t_alpha = 0.01; buffers start at μ = 20, σ = 100.
    """

    needs_norms = True

    batch_mean: Tensor
    batch_std: Tensor

    def __init__(
        self,
        embedding_size: int,
        num_classes: int,
        *,
        scale: float = 64.0,
        margin: float = 0.4,
        h: float = 0.333,
        t_alpha: float = 0.01,
        eps: float = 1e-3,
        **kwargs: Any,
    ) -> None:
        super().__init__(embedding_size, num_classes, scale=scale, margin=margin, **kwargs)
        if not 0 <= t_alpha <= 1:
            raise FaceforgeError(f"adaface t_alpha must be in [0, 1], got {t_alpha!r}")
        self.h = float(h)
        self.t_alpha = float(t_alpha)
        self.eps = float(eps)
        self.register_buffer("batch_mean", torch.full((1,), 20.0))
        self.register_buffer("batch_std", torch.full((1,), 100.0))

    def extra_repr(self) -> str:
        return super().extra_repr() + f", h={self.h:g}, t_alpha={self.t_alpha:g}"

    def margin_terms(self, norms: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Update the batch statistics (training mode); return ``[B, 1]`` scaler, g_angular, g_add."""
        safe = norms.detach().reshape(-1, 1).clamp(1e-3, 100.0)
        if self.training:
            with torch.no_grad():
                mean = safe.mean()
                std = safe.std() if safe.shape[0] > 1 else torch.zeros_like(mean)
                a = self.t_alpha
                self.batch_mean.copy_(mean * a + (1 - a) * self.batch_mean)
                self.batch_std.copy_(std * a + (1 - a) * self.batch_std)
        mean = self.batch_mean.to(safe.dtype)
        std = self.batch_std.to(safe.dtype)
        scaler = ((safe - mean) / (std + self.eps) * self.h).clamp(-1.0, 1.0)
        g_angular = self.margin * scaler * -1
        g_add = self.margin + self.margin * scaler
        return scaler, g_angular, g_add

    def apply_margin(self, cosine: Tensor, labels: Tensor, norms: Tensor | None = None) -> Tensor:
        if norms is None:
            raise FaceforgeError("adaface needs the embedding norms: call forward() or pass norms=[B, 1]")
        if norms.numel() != cosine.shape[0]:
            raise FaceforgeError(
                f"adaface norms must have {cosine.shape[0]} entries, got {list(norms.shape)}"
            )
        eps = self.eps
        cos = cosine.clamp(-1 + eps, 1 - eps)
        _, g_angular, g_add = self.margin_terms(norms)
        g_angular, g_add = g_angular.to(cos.dtype), g_add.to(cos.dtype)

        def fn(t: Tensor) -> Tensor:
            theta = (safe_acos(t) + g_angular).clamp(eps, math.pi - eps)
            return torch.cos(theta) - g_add

        return replace_target(cos, labels, fn) * self.scale
