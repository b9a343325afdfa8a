"""RTMPose face landmarks (onnxruntime), top-down on another detector's boxes; crop and SimCC decoding ours.
Implements T. Jiang, P. Lu, L. Zhang et al., "RTMPose: Real-Time Multi-Person Pose Estimation based on
MMPose", arXiv:2303.07399 (2023), with SimCC coordinate classification (Y. Li et al., "SimCC: a Simple
Coordinate Classification Perspective for Human Pose Estimation", ECCV 2022), on MMPose's ONNX exports.
Entry point: :class:`RTMPoseDetector` (``rtmpose``). Details: docs/align.md,
"RTMPose face keypoints (`rtmpose`)".
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from faceforge.align.detectors._model import model_file
from faceforge.align.detectors._onnx import graph_takes_batch, run_batched
from faceforge.align.detectors.base import (
    DETECTORS,
    Detector,
    Face,
    check_device,
    create_detector_loose,
    onnx_session,
    to_rgb_uint8,
)
from faceforge.errors import FaceforgeError

__all__ = ["LAYOUTS", "FaceLayout", "RTMPoseDetector", "crop_matrix", "simcc_decode", "topdown_box"]

_MEAN = np.array([123.675, 116.28, 103.53], np.float32)
_STD = np.array([58.395, 57.12, 57.375], np.float32)


@dataclass(frozen=True)
class FaceLayout:
    """Where the 5 alignment points are in a K-point face layout (0-based indices)."""

    name: str
    n_points: int
    left_eye: tuple[int, ...]  # contour of the image-left eye in a frontal face
    right_eye: tuple[int, ...]
    nose_tip: int
    mouth_left: int
    mouth_right: int

    def five_points(self, pts: np.ndarray) -> np.ndarray:
        """``[5, 2]`` eye centres (contour means), nose tip, mouth corners from ``pts`` ``[K, 2]``."""
        return np.stack(
            [
                pts[list(self.left_eye)].mean(0),
                pts[list(self.right_eye)].mean(0),
                pts[self.nose_tip],
                pts[self.mouth_left],
                pts[self.mouth_right],
            ]
        ).astype(np.float32)


LAYOUTS: dict[str, FaceLayout] = {
    "lapa106": FaceLayout("lapa106", 106, tuple(range(66, 74)), tuple(range(75, 83)), 54, 84, 90),
    "wflw98": FaceLayout("wflw98", 98, tuple(range(60, 68)), tuple(range(68, 76)), 54, 76, 82),
    "ibug68": FaceLayout("ibug68", 68, tuple(range(36, 42)), tuple(range(42, 48)), 30, 48, 54),
}


def topdown_box(
    bbox: np.ndarray, input_size: tuple[int, int], padding: float = 1.25
) -> tuple[np.ndarray, np.ndarray]:
    """(centre, size) of the crop for ``bbox`` (x1, y1, x2, y2): size × ``padding``, input's aspect.

    mmpose's ``bbox_xyxy2cs`` then ``_fix_aspect_ratio``: the shorter side (relative to the input's
    aspect) grows, so the crop never cuts into the box.
    """
    x1, y1, x2, y2 = (float(v) for v in bbox)
    centre = np.array([(x1 + x2) / 2, (y1 + y2) / 2], np.float64)
    w, h = (x2 - x1) * padding, (y2 - y1) * padding
    aspect = input_size[0] / input_size[1]
    if w > h * aspect:
        h = w / aspect
    else:
        w = h * aspect
    return centre, np.array([w, h], np.float64)


def crop_matrix(centre: np.ndarray, size: np.ndarray, input_size: tuple[int, int]) -> np.ndarray:
    """2×3 affine matrix image → crop: scale W / size, ``centre`` onto the crop centre (W/2, H/2)."""
    s = input_size[0] / float(size[0])
    return np.array(
        [[s, 0.0, input_size[0] / 2 - s * centre[0]], [0.0, s, input_size[1] / 2 - s * centre[1]]], np.float64
    )


def simcc_decode(
    simcc_x: np.ndarray, simcc_y: np.ndarray, ratio: tuple[float, float]
) -> tuple[np.ndarray, np.ndarray]:
    """SimCC ``[K, Wr]``, ``[K, Hr]`` → keypoints ``[K, 2]`` in crop pixels and scores ``[K]``.

    The arg-max bin of each axis divided by the split ratio; the score is the smaller maximum
    (mmpose's ``get_simcc_maximum``).
    """
    ix, iy = simcc_x.argmax(-1), simcc_y.argmax(-1)
    score = np.minimum(simcc_x.max(-1), simcc_y.max(-1))
    pts = np.stack([ix / ratio[0], iy / ratio[1]], axis=-1).astype(np.float64)
    return pts, score.astype(np.float32)


class RTMPoseDetector(Detector):
    """RTMPose face keypoints on the boxes of ``box_detector`` (a name or a :class:`Detector`).

    ``model_path``: the ONNX file (default: store name ``rtmpose_face6_m``); ``layout``: ``auto``
    (by the number of keypoints) or one of :data:`LAYOUTS`; ``padding``: box enlargement before the
    crop; ``score_threshold`` (when given) goes to the box detector; ``box_detector_model`` is the
    box detector's file; ``threads`` and ``device`` apply to both networks where the box backend
    takes them.
    """

    name = "rtmpose"
    #: most face crops stacked into one run
    max_batch = 32

    def __init__(
        self,
        model_path: str | Path | None = None,
        box_detector: str | Detector = "yunet",
        box_detector_model: str | Path | None = None,
        layout: str = "auto",
        padding: float = 1.25,
        score_threshold: float | None = None,
        nms_threshold: float = 0.4,
        threads: int | None = None,
        device: str = "auto",
        input_size: tuple[int, int] | int | None = None,
    ) -> None:
        self._device = check_device(device, self.name)
        # the keypoint file first: a missing one is the error to show, not the box detector's
        self.model_path = model_file(model_path, "rtmpose_face6_m", self.name)
        if isinstance(box_detector, Detector):
            if box_detector_model is not None:
                raise FaceforgeError(
                    "rtmpose: box_detector is an instance; box_detector_model cannot replace its file"
                )
            self.box = box_detector
        else:
            if box_detector == "rtmpose":
                raise FaceforgeError(
                    "rtmpose box_detector='rtmpose': expected a face detector such as yunet or scrfd"
                )
            kw: dict[str, Any] = {} if score_threshold is None else {"score_threshold": score_threshold}
            self.box = create_detector_loose(
                box_detector, box_detector_model, {"threads": threads, "device": device}, **kw
            )
        super().__init__(self.box.score_threshold, nms_threshold)
        self.box_detector = self.box.name
        self.box_model_path = getattr(self.box, "model_path", None)
        if not padding > 0:
            raise FaceforgeError(f"rtmpose padding={padding}: expected a positive factor (mmpose: 1.25)")
        self.padding = float(padding)
        self.session = onnx_session(self.model_path, self.name, threads, device)
        inp = self.session.get_inputs()[0]
        self.input_name = inp.name
        shape = inp.shape
        if len(shape) != 4 or shape[1] != 3:
            raise FaceforgeError(
                f"{self.model_path}: input {inp.name} has shape {shape}; expected [N, 3, H, W]"
            )
        if all(isinstance(v, int) for v in shape[2:]):
            self.input_size = (int(shape[3]), int(shape[2]))
        else:
            size = input_size or 256
            self.input_size = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
        outs = [o.name for o in self.session.get_outputs()]
        if len(outs) < 2:
            raise FaceforgeError(
                f"{self.model_path}: outputs {outs}; expected simcc_x and simcc_y (an RTMPose export)"
            )
        if {"simcc_x", "simcc_y"} <= set(outs):
            self._ix, self._iy = outs.index("simcc_x"), outs.index("simcc_y")
        else:
            self._ix, self._iy = 0, 1
        k = self.session.get_outputs()[self._ix].shape[1]
        if layout != "auto" and layout not in LAYOUTS:
            raise FaceforgeError(f"rtmpose layout={layout!r}: expected auto or one of {', '.join(LAYOUTS)}")
        self.layout = layout
        self._layout: FaceLayout | None = None
        if isinstance(k, int):
            self._layout = self._pick_layout(k)
        self._batchable = graph_takes_batch(self.session)

    def _pick_layout(self, k: int) -> FaceLayout:
        if self.layout != "auto":
            lay = LAYOUTS[self.layout]
            if lay.n_points != k:
                raise FaceforgeError(
                    f"{self.model_path}: {k} keypoints, but layout {self.layout} has {lay.n_points}"
                )
            return lay
        for lay in LAYOUTS.values():
            if lay.n_points == k:
                return lay
        raise FaceforgeError(
            f"{self.model_path}: {k} keypoints; known face layouts have "
            + ", ".join(f"{v.n_points} ({n})" for n, v in LAYOUTS.items())
        )

    def _crop(self, rgb: np.ndarray, bbox: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        centre, size = topdown_box(bbox, self.input_size, self.padding)
        m = crop_matrix(centre, size, self.input_size)
        crop = cv2.warpAffine(rgb, m, self.input_size, flags=cv2.INTER_LINEAR, borderValue=(0, 0, 0))
        x = ((crop.astype(np.float32) - _MEAN) / _STD).transpose(2, 0, 1)
        return np.ascontiguousarray(x), centre, size

    def _to_face(self, box: Face, outs: list[np.ndarray], centre: np.ndarray, size: np.ndarray) -> Face:
        sx, sy = outs[self._ix][0], outs[self._iy][0]
        w, h = self.input_size
        if self._layout is None:
            self._layout = self._pick_layout(sx.shape[0])
        pts, _ = simcc_decode(sx, sy, (sx.shape[-1] / w, sy.shape[-1] / h))
        img = pts / [w, h] * size + centre - size / 2
        return Face(
            bbox=box.bbox.copy(),
            score=box.score,
            landmarks=self._layout.five_points(img),
            landmarks_extra=img.astype(np.float32),
        )

    def _faces(self, rgbs: Sequence[np.ndarray], boxes: Sequence[list[Face]]) -> list[list[Face]]:
        jobs = []  # (image index, box, crop tensor, centre, size)
        for i, (rgb, faces) in enumerate(zip(rgbs, boxes)):
            for f in faces:
                jobs.append((i, f, *self._crop(rgb, f.bbox)))
        out, self._batchable = run_batched(
            self.session, self.input_name, [j[2] for j in jobs], self._batchable, self.max_batch,
            f"rtmpose: {self.model_path}",
        )  # fmt: skip
        result: list[list[Face]] = [[] for _ in rgbs]
        for (i, box, _, centre, size), o in zip(jobs, out):
            result[i].append(self._to_face(box, o, centre, size))
        return result

    def _detect(self, rgb: np.ndarray) -> list[Face]:
        return self._faces([rgb], [self.box.detect(rgb)])[0]

    def detect_batch(self, images: Sequence[np.ndarray]) -> list[list[Face]]:
        """The box detector's ``detect_batch``, then every face crop of all images in shared batches."""
        rgbs = [to_rgb_uint8(im) for im in images]
        boxes = self.box.detect_batch(rgbs)
        faces = self._faces(rgbs, boxes)
        return [self._finish(f, rgb.shape[1], rgb.shape[0]) for f, rgb in zip(faces, rgbs)]


@DETECTORS.register("rtmpose")
def _rtmpose(model_path: str | Path | None = None, **kwargs: Any) -> RTMPoseDetector:
    return RTMPoseDetector(model_path=model_path, **kwargs)
