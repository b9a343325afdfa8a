"""CurricularFace (Huang et al., CVPR 2020): ArcFace target plus adaptive re-weighting of hard negatives."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from faceforge.errors import FaceforgeError
from faceforge.heads.base import HEADS, BaseHead, safe_sqrt
from faceforge.heads.margins import arcface_target

__all__ = ["CurricularFaceHead"]


@HEADS.register("curricularface")
class CurricularFaceHead(BaseHead):
    """CurricularFace: target ``cos(θ_y + m)`` (ArcFace, with the θ + m > π fallback); a negative
    ``cos θ_j`` is *hard* when it exceeds ``cos(θ_y + m)`` and becomes ``cos θ_j · (t + cos θ_j)``.

    ``t`` (buffer, starts at 0) is an exponential moving average of the batch-mean target cosine,
    ``t ← α·r + (1 − α)·t`` with ``α = t_alpha`` (0.01), updated in training mode before use.
    Needs every row's target in the same block, so it does not run inside Partial FC.
    Defaults s = 64, m = 0.5.
    """

    supports_partial_fc = False

    t: Tensor

    def __init__(
        self,
        embedding_size: int,
        num_classes: int,
        *,
        scale: float = 64.0,
        margin: float = 0.5,
        t_alpha: float = 0.01,
        **kwargs: Any,
    ) -> None:
        super().__init__(embedding_size, num_classes, scale=scale, margin=margin, **kwargs)
        if not 0 <= t_alpha <= 1:
            raise FaceforgeError(f"curricularface t_alpha must be in [0, 1], got {t_alpha!r}")
        self.t_alpha = float(t_alpha)
        self.register_buffer("t", torch.zeros(1))

    def apply_margin(self, cosine: Tensor, labels: Tensor, norms: Tensor | None = None) -> Tensor:
        if bool((labels < 0).any()):
            raise FaceforgeError("curricularface needs a target class in every row (labels >= 0)")
        idx = labels.long().unsqueeze(1)
        target = cosine.gather(1, idx)
        m = self.margin
        # the pure cos(θ + m) decides which negatives are hard (as in the paper)
        cos_theta_m = target * math.cos(m) - safe_sqrt(1 - target * target) * math.sin(m)
        final_target = arcface_target(target, m)
        if self.training:
            with torch.no_grad():
                a = self.t_alpha
                self.t.copy_(target.mean() * a + (1 - a) * self.t)
        t = self.t.to(cosine.dtype)
        hard = cosine > cos_theta_m.detach()
        logits = torch.where(hard, cosine * (t + cosine), cosine)
        return logits.scatter(1, idx, final_target) * self.scale
