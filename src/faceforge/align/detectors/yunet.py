"""YuNet through OpenCV's ``cv2.FaceDetectorYN``, by default at the image's own scale.
Implements W. Wu, H. Peng, S. Yu, "YuNet: A Tiny Millisecond-level Face Detector", Machine
Intelligence Research 2023; model files from libfacedetection.train / OpenCV Zoo (ONNX).
Entry point: :class:`YuNetDetector` (``yunet``). Details: docs/align.md, "Implementation notes" ("YuNet").
"""

from __future__ import annotations

import re
from pathlib import Path

import cv2
import numpy as np

from faceforge.align.detectors._model import model_file
from faceforge.align.detectors.base import (
    DETECTORS,
    Detector,
    Face,
    check_device,
    letterbox,
    say_cpu_fallback,
    shrink_and_pad,
)
from faceforge.errors import FaceforgeError

__all__ = ["YuNetDetector"]


def opencv_cuda_available() -> bool:
    """Whether this OpenCV build has CUDA and sees a device (the pip wheels are CPU-only)."""
    try:
        return cv2.cuda.getCudaEnabledDeviceCount() > 0
    except (AttributeError, cv2.error):
        return False


def _input_size_from_name(path: Path) -> tuple[int, int] | None:
    m = re.search(r"_(\d+)_(\d+)(?:\D|$)", path.stem)
    return (int(m.group(1)), int(m.group(2))) if m else None


class YuNetDetector(Detector):
    """YuNet (OpenCV DNN); ``input_size=None`` runs at the image's scale (docs/align.md, "YuNet")."""

    name = "yunet"

    def __init__(
        self,
        model_path: str | Path | None = None,
        score_threshold: float = 0.6,
        nms_threshold: float = 0.3,
        input_size: tuple[int, int] | int | None = None,
        top_k: int = 5000,
        upscale: bool = True,
        max_side: int = 640,
        device: str = "auto",
    ) -> None:
        super().__init__(score_threshold, nms_threshold)
        self._device = check_device(device, "yunet")
        self.model_path = model_file(model_path, "yunet", "yunet")
        if "dynamic" in self.model_path.name:
            raise FaceforgeError(
                f"{self.model_path} is a dynamic-input YuNet file, which cv2.FaceDetectorYN does not "
                "load; use a fixed-size file such as yunet_s_640_640.onnx (faceforge models fetch yunet)"
            )
        if isinstance(input_size, int):
            input_size = (input_size, input_size)
        self.input_size: tuple[int, int] | None = tuple(input_size) if input_size else None  # type: ignore[assignment]
        self.upscale = upscale
        self.max_side = int(max_side)
        if self.max_side < 32:
            raise FaceforgeError(f"yunet max_side={max_side}: expected at least 32")
        create_size = self.input_size or _input_size_from_name(self.model_path) or (640, 640)
        self._net_size = tuple(create_size)
        # OpenCV's DNN engine prints a "[ WARN ] setPreferableTarget" line when the net is built;
        # faceforge's logs are quiet by default, so OpenCV's level is lowered around the call.
        level = cv2.utils.logging.getLogLevel()
        cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)
        backend, target = cv2.dnn.DNN_BACKEND_OPENCV, cv2.dnn.DNN_TARGET_CPU
        if device != "cpu":
            if opencv_cuda_available():
                backend, target = cv2.dnn.DNN_BACKEND_CUDA, cv2.dnn.DNN_TARGET_CUDA
            else:
                say_cpu_fallback("yunet", device, "this OpenCV build has no CUDA device")
        self._on_cuda = backend == cv2.dnn.DNN_BACKEND_CUDA
        try:
            self._net = cv2.FaceDetectorYN.create(
                str(self.model_path),
                "",
                create_size,
                self.score_threshold,
                self.nms_threshold,
                top_k,
                backend,
                target,
            )
        except cv2.error as e:
            raise FaceforgeError(
                f"cv2.FaceDetectorYN cannot load {self.model_path}: {e.msg.strip()}; "
                "expected a YuNet ONNX file"
            ) from None
        finally:
            cv2.utils.logging.setLogLevel(level)

    def _detect(self, rgb: np.ndarray) -> list[Face]:
        if self.input_size is not None:
            canvas, scale = letterbox(rgb, self.input_size, upscale=self.upscale)
        else:
            canvas, scale = shrink_and_pad(rgb, self.max_side, 32)
        size = (canvas.shape[1], canvas.shape[0])
        if size != self._net_size:
            self._net.setInputSize(size)
            self._net_size = size
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
