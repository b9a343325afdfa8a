"""dlib's ResNet face recogniser (128-d; D. E. King, "Dlib-ml: A Machine Learning Toolkit", JMLR 10,
2009, model ``dlib_face_recognition_resnet_model_v1.dat``) run inside dlib: :class:`DlibResNet` embeds
our crops aligned with the ``"dlib"`` template (:data:`DLIB_RESNET_CFG`: 150×150, RGB), and
:class:`DlibNativePipeline` is dlib's own end-to-end pipeline, the baseline row of ``faceforge
bench-align``. Details: docs/backbones.md, "dlib's recogniser and native pipeline".
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np

from faceforge.errors import FaceforgeError
from faceforge.models.backbones.dlib_resnet import DLIB_RESNET_V1_CFG

__all__ = ["DLIB_RESNET_CFG", "DlibNativePipeline", "DlibResNet", "embed_crops"]

#: dlib normalises as (pixel − mean) / 256 with the channel means of its ``input_rgb_image``: the
#: FaceConfig of the PyTorch port (:mod:`faceforge.models.backbones.dlib_resnet`), run here by dlib.
DLIB_RESNET_CFG = dataclasses.replace(
    DLIB_RESNET_V1_CFG, extra={**DLIB_RESNET_V1_CFG.extra, "backend": "dlib"}
)


def _helpers() -> tuple[Any, Any]:
    # Lazy: the model-file lookup lives with the dlib detector in faceforge.align.
    from faceforge.align.detectors.dlib import dlib_model_file, require_dlib

    return dlib_model_file, require_dlib


class DlibResNet:
    """dlib's 128-d ResNet on 150×150 RGB crops aligned with the ``"dlib"`` template."""

    face_cfg = DLIB_RESNET_CFG

    def __init__(self, model_path: str | Path | None = None) -> None:
        dlib_model_file, require_dlib = _helpers()
        self._dlib = require_dlib("the dlib ResNet recogniser")
        self.model_path = dlib_model_file(model_path, "dlib_resnet", "dlib ResNet recogniser")
        try:
            self._net = self._dlib.face_recognition_model_v1(str(self.model_path))
        except RuntimeError as e:
            raise FaceforgeError(f"cannot load dlib ResNet model {self.model_path}: {e}") from None

    def embed(self, crops: np.ndarray | list[np.ndarray], num_jitters: int = 0) -> np.ndarray:
        """Descriptors ``[N, 128]`` float32 of aligned uint8 RGB crops ``[N, 150, 150, 3]``."""
        arr = [np.ascontiguousarray(c) for c in crops]
        for i, c in enumerate(arr):
            if c.shape != (150, 150, 3) or c.dtype != np.uint8:
                raise FaceforgeError(
                    f"crop {i} has shape {c.shape} and dtype {c.dtype}; the dlib ResNet expects uint8 RGB "
                    "150x150x3 crops aligned with the 'dlib' template"
                )
        if not arr:
            return np.zeros((0, 128), np.float32)
        vecs = self._net.compute_face_descriptor(arr, num_jitters)
        return np.asarray([np.asarray(v) for v in vecs], dtype=np.float32).reshape(len(arr), 128)


def embed_crops(crops: np.ndarray | list[np.ndarray], model: DlibResNet | None = None) -> np.ndarray:
    """Embed a batch of aligned uint8 RGB 150×150 crops with dlib's ResNet → float32 ``[N, 128]``."""
    return (model or DlibResNet()).embed(crops)


class DlibNativePipeline:
    """dlib end to end: HOG detection, 5-point shape, dlib's own chip and the ResNet descriptor.

    ``detect(rgb)`` gives ``(rects, scores)``; ``embed(rgb, box)`` the descriptor of the face in
    ``box`` (x1, y1, x2, y2), which may be a fallback box when detection failed.
    """

    def __init__(
        self,
        model_path: str | Path | None = None,
        shape_model_path: str | Path | None = None,
        upsample: int = 1,
    ) -> None:
        dlib_model_file, require_dlib = _helpers()
        self._dlib = require_dlib("the dlib native pipeline")
        self.recognizer = DlibResNet(model_path)
        self._hog = self._dlib.get_frontal_face_detector()
        path = dlib_model_file(shape_model_path, "dlib_shape5", "dlib 5-point shape predictor")
        self._shape = self._dlib.shape_predictor(str(path))
        self.upsample = int(upsample)

    def detect(self, rgb: np.ndarray) -> list[tuple[np.ndarray, float]]:
        """Boxes (x1, y1, x2, y2) and SVM margins of the HOG detector, best first."""
        rects, scores, _ = self._hog.run(np.ascontiguousarray(rgb), self.upsample, 0.0)
        out = [
            (np.array([r.left(), r.top(), r.right() + 1, r.bottom() + 1], np.float32), float(s))
            for r, s in zip(rects, scores)
        ]
        return sorted(out, key=lambda t: -t[1])

    def embed(self, rgb: np.ndarray, box: np.ndarray) -> np.ndarray:
        """dlib's descriptor ``[128]`` of the face in ``box`` (shape predictor → chip → ResNet)."""
        rgb = np.ascontiguousarray(rgb)
        x1, y1, x2, y2 = (round(float(v)) for v in box)
        rect = self._dlib.rectangle(x1, y1, x2 - 1, y2 - 1)
        shape = self._shape(rgb, rect)
        return np.asarray(self.recognizer._net.compute_face_descriptor(rgb, shape), np.float32)
