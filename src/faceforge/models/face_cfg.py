"""What a backbone expects of its input and promises of its output.

A :class:`FaceConfig` is attached to every backbone as ``model.face_cfg`` and saved in checkpoints
(and ONNX metadata), so detection, alignment, preprocessing and evaluation never guess.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class FaceConfig:
    """Preprocessing and output facts of a recognition backbone.

    Pixels are mapped as ``x = (rgb_or_bgr / 255 - mean) / std`` per channel, in ``color`` order.
    ``template`` names the 5-point alignment template (see ``faceforge.align``) at ``input_size``.
    """

    input_size: tuple[int, int] = (112, 112)  # (height, width)
    color: str = "RGB"  # "RGB" or "BGR": the channel order the weights were trained with
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: tuple[float, float, float] = (0.5, 0.5, 0.5)
    template: str = "arcface"
    embedding_size: int = 512
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Plain-types dict (lists, not tuples) for checkpoints and JSON."""
        d = asdict(self)
        for k in ("input_size", "mean", "std"):
            d[k] = list(d[k])
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> FaceConfig:
        """Inverse of :meth:`to_dict`; unknown keys go to ``extra``."""
        known = {f for f in cls.__dataclass_fields__}
        kw = {k: v for k, v in d.items() if k in known}
        for k in ("input_size", "mean", "std"):
            if k in kw:
                kw[k] = tuple(kw[k])
        extra = dict(kw.pop("extra", {}) or {})
        extra.update({k: v for k, v in d.items() if k not in known})
        return cls(**kw, extra=extra)


def preprocess(images: Any, cfg: FaceConfig) -> Any:
    """uint8 images ``[B, 3, H, W]`` (torch, in ``cfg.color`` order) → normalised float32 tensor.

    ``x = (img / 255 - mean) / std`` per channel, as the backbone was trained.
    """
    import torch

    x = images.float() if images.dtype == torch.uint8 else images
    scale = 255.0 if images.dtype == torch.uint8 else 1.0
    mean = torch.tensor(cfg.mean, dtype=x.dtype, device=x.device).view(1, 3, 1, 1) * scale
    std = torch.tensor(cfg.std, dtype=x.dtype, device=x.device).view(1, 3, 1, 1) * scale
    return (x - mean) / std
