"""Shared plumbing of the onnxruntime detectors: session, input sizing, mapping back."""

from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np

from faceforge.align.detectors._model import model_file
from faceforge.align.detectors.base import Detector, letterbox, onnx_session
from faceforge.errors import FaceforgeError


class OnnxDetector(Detector):
    """An onnxruntime detector.

    Input sizing: a file with a fixed input shape is always letterboxed to it. For dynamic files,
    ``input_size=None`` (default) keeps the image's scale (downscaled only if its longer side
    exceeds ``max_side``) and pads to a multiple of ``stride_multiple``; ``input_size=640`` or
    ``(w, h)`` letterboxes to that size instead (insightface's ``det_size`` behaviour).
    """

    store_name = ""
    stride_multiple = 32

    def __init__(
        self,
        model_path: str | Path | None = None,
        score_threshold: float = 0.5,
        nms_threshold: float = 0.4,
        input_size: int | tuple[int, int] | None = None,
        max_side: int = 640,
        threads: int | None = None,
    ) -> None:
        super().__init__(score_threshold, nms_threshold)
        self.model_path = model_file(model_path, self.store_name, self.name)
        self.session = onnx_session(self.model_path, self.name, threads)
        inp = self.session.get_inputs()[0]
        self.input_name = inp.name
        shape = inp.shape
        if len(shape) != 4 or shape[1] != 3:
            raise FaceforgeError(
                f"{self.model_path}: input {inp.name} has shape {shape}; "
                f"expected [N, 3, H, W] for {self.name}"
            )
        fixed = (shape[3], shape[2]) if all(isinstance(v, int) for v in shape[2:]) else None
        if isinstance(input_size, int):
            input_size = (input_size, input_size)
        self.input_size: tuple[int, int] | None = fixed or (tuple(input_size) if input_size else None)
        self.max_side = int(max_side)

    def _canvas(self, rgb: np.ndarray) -> tuple[np.ndarray, float]:
        if self.input_size is not None:
            return letterbox(rgb, self.input_size, upscale=True)
        h, w = rgb.shape[:2]
        scale = min(1.0, self.max_side / max(h, w))
        if scale < 1.0:
            rgb = cv2.resize(
                rgb, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA
            )
        h2, w2 = rgb.shape[:2]
        m = self.stride_multiple
        th, tw = math.ceil(h2 / m) * m, math.ceil(w2 / m) * m
        canvas = np.zeros((th, tw, 3), dtype=np.uint8)
        canvas[:h2, :w2] = rgb
        return canvas, scale
