"""Sub-center ArcFace (Deng et al., ECCV 2020): K centres per class, the closest one counts."""

from __future__ import annotations

from typing import Any

from torch import Tensor

from faceforge.errors import FaceforgeError
from faceforge.heads.base import HEADS, normalized_cosine
from faceforge.heads.margins import ArcFaceHead

__all__ = ["SubCenterArcFaceHead"]


@HEADS.register("subcenter_arcface")
class SubCenterArcFaceHead(ArcFaceHead):
    """Sub-center ArcFace: ``cos θ_c = max_k cos(x, W_{c,k})``, then the ArcFace margin.

    ``weight`` has shape ``[num_classes · k, embedding_size]``; rows ``c·k … c·k + k − 1`` are the
    sub-centres of class ``c``. Defaults k = 3, s = 64, m = 0.5. Not supported inside Partial FC.
    """

    supports_partial_fc = False

    def __init__(
        self,
        embedding_size: int,
        num_classes: int,
        *,
        k: int = 3,
        scale: float = 64.0,
        margin: float = 0.5,
        **kwargs: Any,
    ) -> None:
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise FaceforgeError(f"subcenter_arcface k must be a positive integer, got {k!r}")
        self.k = k
        super().__init__(embedding_size, num_classes, scale=scale, margin=margin, **kwargs)

    @property
    def num_centres(self) -> int:
        return self.num_classes * self.k

    def extra_repr(self) -> str:
        return super().extra_repr() + f", k={self.k}"

    def cosine(self, embeddings: Tensor) -> Tensor:
        """``[B, C]``: for each class the cosine to its nearest sub-centre."""
        if self.weight is None:
            raise FaceforgeError("this head was built with margin_only=True and has no class centres")
        cos = normalized_cosine(embeddings, self.weight)
        return cos.view(cos.shape[0], self.num_classes, self.k).amax(dim=2)
