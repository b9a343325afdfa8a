"""RetinaFace (MobileNet-0.25 body, onnxruntime) with our own prior-box decoding and NMS.
Implements J. Deng, J. Guo, E. Ververas, I. Kotsia, S. Zafeiriou, "RetinaFace: Single-shot
Multi-level Face Localisation in the Wild", CVPR 2020 (``retinaface_mbnet0.25.onnx``).
Entry point: :class:`RetinaFaceDetector` (``retinaface``). Details: docs/align.md,
"Implementation notes" ("RetinaFace").
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from faceforge.align.detectors._onnx import OnnxDetector
from faceforge.align.detectors.base import DETECTORS, Face, faces_from_arrays

__all__ = ["RetinaFaceDetector", "prior_boxes"]

_MIN_SIZES = ((16, 32), (64, 128), (256, 512))
_STEPS = (8, 16, 32)
_VARIANCE = (0.1, 0.2)
_MEAN_BGR = np.array([104.0, 117.0, 123.0], dtype=np.float32)


def prior_boxes(height: int, width: int) -> np.ndarray:
    """``[N, 4]`` priors (cx, cy, w, h) in pixels: per stride, row-major cells, then min sizes."""
    out = []
    for step, sizes in zip(_STEPS, _MIN_SIZES):
        fh, fw = math.ceil(height / step), math.ceil(width / step)
        ys, xs = np.mgrid[:fh, :fw]
        cx = ((xs + 0.5) * step).reshape(-1, 1)
        cy = ((ys + 0.5) * step).reshape(-1, 1)
        per = [np.concatenate([cx, cy, np.full_like(cx, s), np.full_like(cy, s)], axis=1) for s in sizes]
        out.append(np.stack(per, axis=1).reshape(-1, 4))
    return np.concatenate(out).astype(np.float32)


class RetinaFaceDetector(OnnxDetector):
    """RetinaFace-MobileNet0.25."""

    name = "retinaface"
    store_name = "retinaface"

    def __init__(
        self, model_path: str | Path | None = None, score_threshold: float = 0.6, **kw: object
    ) -> None:
        super().__init__(model_path=model_path, score_threshold=score_threshold, **kw)  # type: ignore[arg-type]

    def _prepare(self, rgb: np.ndarray) -> tuple[np.ndarray, tuple[float, int, int]]:
        canvas, scale = self._canvas(rgb)
        x = (canvas[:, :, ::-1].astype(np.float32) - _MEAN_BGR).transpose(2, 0, 1)
        return np.ascontiguousarray(x), (scale, canvas.shape[0], canvas.shape[1])

    def _decode(self, outs: list[np.ndarray], meta: tuple[float, int, int]) -> list[Face]:
        scale, h, w = meta
        loc, conf, lmk = outs
        priors = prior_boxes(h, w)
        if len(priors) != loc.shape[1]:
            raise RuntimeError(f"retinaface: {loc.shape[1]} outputs for {len(priors)} priors at {w}x{h}")
        sc = conf[0, :, 1]
        keep = np.nonzero(sc >= self.score_threshold)[0]
        if keep.size == 0:
            return []
        p, d, k = priors[keep], loc[0, keep], lmk[0, keep].reshape(-1, 5, 2)
        centre = p[:, :2] + d[:, :2] * _VARIANCE[0] * p[:, 2:]
        size = p[:, 2:] * np.exp(d[:, 2:] * _VARIANCE[1])
        boxes = np.concatenate([centre - size / 2, centre + size / 2], axis=1)
        kps = p[:, None, :2] + k * _VARIANCE[0] * p[:, None, 2:]
        return faces_from_arrays(boxes / scale, sc[keep], kps / scale, self.nms_threshold)


@DETECTORS.register("retinaface")
def _retinaface(model_path: str | Path | None = None, **kwargs: object) -> RetinaFaceDetector:
    return RetinaFaceDetector(model_path=model_path, **kwargs)
