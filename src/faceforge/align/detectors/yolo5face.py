"""YOLOv5-Face (onnxruntime) with our own post-processing and NMS.
Implements D. Qi, W. Tan, Q. Yao, J. Liu, "YOLO5Face: Why Reinventing a Face Detector", ECCV Workshops
2022 (file ``yolo5face_500m_320x320.onnx``). Entry point: :class:`YOLO5FaceDetector` (``yolo5face``).
Details: docs/align.md, "Implementation notes" ("YOLO5-Face").
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from faceforge.align.detectors._onnx import OnnxDetector
from faceforge.align.detectors.base import DETECTORS, Face, faces_from_arrays

__all__ = ["YOLO5FaceDetector"]


class YOLO5FaceDetector(OnnxDetector):
    """YOLOv5-Face 0.5 GFLOPs (fixed 320×320 input)."""

    name = "yolo5face"
    store_name = "yolo5face"

    def __init__(
        self,
        model_path: str | Path | None = None,
        input_size: int | tuple[int, int] | None = None,
        **kw: object,
    ) -> None:
        super().__init__(model_path=model_path, **kw)  # type: ignore[arg-type]
        # The file's input shape is symbolic but its output is fixed to the 320x320 grid, so the
        # size comes from the file name (…_320x320.onnx) unless given.
        if input_size is None:
            m = re.search(r"(\d+)x(\d+)", self.model_path.stem)
            input_size = (int(m.group(1)), int(m.group(2))) if m else (320, 320)
        self.input_size = (input_size, input_size) if isinstance(input_size, int) else tuple(input_size)

    def _prepare(self, rgb: np.ndarray) -> tuple[np.ndarray, float]:
        canvas, scale = self._canvas(rgb)
        return np.ascontiguousarray((canvas.astype(np.float32) / 255.0).transpose(2, 0, 1)), scale

    def _decode(self, outs: list[np.ndarray], scale: float) -> list[Face]:
        out = outs[0][0]
        sc = out[:, 4] * out[:, 15]
        keep = np.nonzero(sc >= self.score_threshold)[0]
        if keep.size == 0:
            return []
        o = out[keep]
        boxes = np.concatenate([o[:, :2] - o[:, 2:4] / 2, o[:, :2] + o[:, 2:4] / 2], axis=1)
        kps = o[:, 5:15].reshape(-1, 5, 2)
        return faces_from_arrays(boxes / scale, sc[keep], kps / scale, self.nms_threshold)


@DETECTORS.register("yolo5face")
def _yolo5face(model_path: str | Path | None = None, **kwargs: object) -> YOLO5FaceDetector:
    return YOLO5FaceDetector(model_path=model_path, **kwargs)  # type: ignore[arg-type]
