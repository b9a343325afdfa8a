"""YuNet through OpenCV's ``cv2.FaceDetectorYN``.

Implements: W. Wu, H. Peng, S. Yu, "YuNet: A Tiny Millisecond-level Face Detector", Machine
Intelligence Research 2023; model files from libfacedetection.train / OpenCV Zoo (ONNX).

The fixed-size files (``yunet_*_640_640.onnx``, ``*_320_320``, the Zoo's 2023mar file = s 640)
are fed a letterboxed copy of the image at the file's input size, and boxes/landmarks are mapped
back. ``cv2.FaceDetectorYN`` returns per face ``x, y, w, h``, then 5 points that OpenCV calls
"right eye, left eye, nose tip, right mouth corner, left mouth corner" in the *subject's* terms —
i.e. the first eye is the one with the smaller image x. That is exactly our order (left eye =
smaller x), so the points are kept as they come (checked on a real photo in the tests).
"""

from __future__ import annotations

import re
from pathlib import Path

import cv2
import numpy as np

from faceforge.align.detectors._model import model_file
from faceforge.align.detectors.base import DETECTORS, Detector, Face, letterbox
from faceforge.errors import FaceforgeError

__all__ = ["YuNetDetector"]


def _input_size_from_name(path: Path) -> tuple[int, int] | None:
    m = re.search(r"_(\d+)_(\d+)(?:\D|$)", path.stem)
    return (int(m.group(1)), int(m.group(2))) if m else None


class YuNetDetector(Detector):
    """YuNet (OpenCV DNN); ``input_size`` defaults to the size in the file name, else 640×640."""

    name = "yunet"

    def __init__(
        self,
        model_path: str | Path | None = None,
        score_threshold: float = 0.6,
        nms_threshold: float = 0.3,
        input_size: tuple[int, int] | int | None = None,
        top_k: int = 5000,
        upscale: bool = True,
    ) -> None:
        super().__init__(score_threshold, nms_threshold)
        self.model_path = model_file(model_path, "yunet", "yunet")
        if "dynamic" in self.model_path.name:
            raise FaceforgeError(
                f"{self.model_path} is a dynamic-input YuNet file, which cv2.FaceDetectorYN does not "
                "load; use a fixed-size file such as yunet_s_640_640.onnx (faceforge models fetch yunet)"
            )
        if isinstance(input_size, int):
            input_size = (input_size, input_size)
        self.input_size = tuple(input_size or _input_size_from_name(self.model_path) or (640, 640))
        self.upscale = upscale
        try:
            self._net = cv2.FaceDetectorYN.create(
                str(self.model_path), "", self.input_size, self.score_threshold, self.nms_threshold, top_k
            )
        except cv2.error as e:
            raise FaceforgeError(
                f"cv2.FaceDetectorYN cannot load {self.model_path}: {e.msg.strip()}; "
                "expected a YuNet ONNX file"
            ) from None

    def _detect(self, rgb: np.ndarray) -> list[Face]:
        canvas, scale = letterbox(rgb, self.input_size, upscale=self.upscale)
        _, out = self._net.detect(cv2.cvtColor(canvas, cv2.COLOR_RGB2BGR))
        if out is None:
            return []
        faces = []
        for row in out:
            x, y, w, h = row[:4] / scale
            kps = row[4:14].reshape(5, 2) / scale
            faces.append(Face(bbox=np.array([x, y, x + w, y + h]), score=float(row[14]), landmarks=kps))
        return faces


@DETECTORS.register("yunet")
def _yunet(model_path: str | Path | None = None, **kwargs: object) -> YuNetDetector:
    return YuNetDetector(model_path=model_path, **kwargs)  # type: ignore[arg-type]
