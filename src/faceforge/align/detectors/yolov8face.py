"""YOLOv8-Face (onnxruntime): the anchor-free YOLOv8 pose head trained for faces; our own decoding and NMS.
Implements the output of the YOLOv8 pose head (G. Jocher, A. Chaurasia, J. Qiu, "Ultralytics YOLOv8",
2023) as trained on WIDER Face with 5 landmarks by derronqi/yolov8-face (``yolov8n-face``, GPL-3.0),
read from any ONNX export of it. Entry point: :class:`YOLOv8FaceDetector` (``yolov8_face``).
Details: docs/align.md, "YOLOv8-Face (`yolov8_face`)".
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from faceforge.align.detectors._onnx import OnnxDetector
from faceforge.align.detectors.base import DETECTORS, Face, faces_from_arrays
from faceforge.errors import FaceforgeError

__all__ = ["YOLOv8FaceDetector", "letterbox_centred"]

#: channels of one row: box (4) + score (1) + 5 keypoints × 3 (x, y, visibility) or × 2 (x, y)
_CHANNELS = (20, 15)


def letterbox_centred(
    rgb: np.ndarray, size: tuple[int, int], pad_value: int = 114
) -> tuple[np.ndarray, float, tuple[int, int]]:
    """Ultralytics' ``LetterBox``: scale to fit ``size`` = (w, h), centre, pad with ``pad_value``.

    Returns the canvas, the scale r (canvas pixels per input pixel) and the (left, top) padding;
    input coords = (canvas coords − padding) / r. Bilinear resize, as Ultralytics trains with.
    """
    h, w = rgb.shape[:2]
    tw, th = size
    r = min(tw / w, th / h)
    nw, nh = round(w * r), round(h * r)
    # Ultralytics splits odd padding with round(d ± 0.1): the extra pixel goes right / bottom.
    left, top = round((tw - nw) / 2 - 0.1), round((th - nh) / 2 - 0.1)
    resized = cv2.resize(rgb, (nw, nh), interpolation=cv2.INTER_LINEAR) if (nw, nh) != (w, h) else rgb
    canvas = np.full((th, tw, 3), pad_value, dtype=np.uint8)
    canvas[top : top + nh, left : left + nw] = resized
    return canvas, r, (left, top)


class YOLOv8FaceDetector(OnnxDetector):
    """YOLOv8-Face (e.g. ``yolov8n-face``), any export with the one-output layout of docs/align.md."""

    name = "yolov8_face"
    store_name = "yolov8n-face"

    def __init__(
        self,
        model_path: str | Path | None = None,
        score_threshold: float = 0.5,
        nms_threshold: float = 0.45,
        input_size: int | tuple[int, int] | None = None,
        pad_value: int = 114,
        **kw: object,
    ) -> None:
        super().__init__(
            model_path=model_path,
            score_threshold=score_threshold,
            nms_threshold=nms_threshold,
            input_size=input_size,
            **kw,  # type: ignore[arg-type]
        )
        if self.input_size is None:
            self.input_size = (640, 640)
        if any(int(v) % 32 for v in self.input_size):
            raise FaceforgeError(
                f"yolov8_face input_size={self.input_size}: both sides must be multiples of 32 "
                "(the largest stride)"
            )
        outs = self.session.get_outputs()
        if len(outs) != 1 or len(outs[0].shape) != 3:
            raise FaceforgeError(
                f"{self.model_path}: outputs {[(o.name, o.shape) for o in outs]}; expected one "
                "[N, 20, A] output (YOLOv8 pose head: box, score, 5 keypoints × (x, y, visibility))"
            )
        dims = [d for d in outs[0].shape[1:] if isinstance(d, int)]
        if len(dims) == 2 and not any(d in _CHANNELS for d in dims):
            raise FaceforgeError(
                f"{self.model_path}: output shape {outs[0].shape}; expected 20 (or 15) channels "
                "per row: box 4 + face score 1 + 5 keypoints (a one-class face model with keypoints)"
            )
        self.pad_value = int(pad_value)

    def _prepare(self, rgb: np.ndarray) -> tuple[np.ndarray, tuple[float, int, int]]:
        canvas, r, (left, top) = letterbox_centred(rgb, self.input_size, self.pad_value)  # type: ignore[arg-type]
        x = (canvas.astype(np.float32) / 255.0).transpose(2, 0, 1)
        return np.ascontiguousarray(x), (r, left, top)

    def _rows(self, o: np.ndarray) -> np.ndarray:
        """``[A, C]`` rows from one image's output, whichever axis holds the channels."""
        if o.shape[0] in _CHANNELS:  # Ultralytics' [C, A]
            return o.T
        if o.shape[1] in _CHANNELS:  # transposed exports: [A, C]
            return o
        raise FaceforgeError(
            f"{self.model_path}: output {o.shape} has no axis of 20 (or 15) channels; "
            "not a YOLOv8-Face export"
        )

    def _decode(self, outs: list[np.ndarray], meta: tuple[float, int, int]) -> list[Face]:
        r, left, top = meta
        rows = self._rows(outs[0][0])
        sc = rows[:, 4]
        keep = np.nonzero(sc >= self.score_threshold)[0]
        if keep.size == 0:
            return []
        o = rows[keep].astype(np.float32)
        per_point = 3 if rows.shape[1] == 20 else 2
        pad = np.array([left, top], np.float32)
        boxes = np.concatenate([o[:, :2] - o[:, 2:4] / 2, o[:, :2] + o[:, 2:4] / 2], axis=1)
        boxes = (boxes - np.tile(pad, 2)) / r
        kps = (o[:, 5:].reshape(-1, 5, per_point)[:, :, :2] - pad) / r
        return faces_from_arrays(boxes, sc[keep], kps, self.nms_threshold)


@DETECTORS.register("yolov8_face")
def _yolov8_face(model_path: str | Path | None = None, **kwargs: object) -> YOLOv8FaceDetector:
    return YOLOv8FaceDetector(model_path=model_path, **kwargs)  # type: ignore[arg-type]
