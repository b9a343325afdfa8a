"""MediaPipe BlazeFace (+ face-mesh refinement) run with the LiteRT interpreter; our own decoding.
Implements V. Bazarevsky et al., "BlazeFace: Sub-millisecond Neural Face Detection on Mobile GPUs",
CVPR-W 2019, and Y. Kartynnik et al., "Real-time Facial Surface Geometry from Monocular Video on
Mobile GPUs", CVPR-W 2019 (the 468-point face mesh), re-implementing mediapipe's graph configs.
Entry point: :class:`MediaPipeDetector` (``mediapipe``, ``mediapipe_full``, ``mediapipe_simple``).
Details: docs/align.md, "MediaPipe (`mediapipe`, `mediapipe_full`)".
"""

from __future__ import annotations

import contextlib
import math
import os
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from faceforge.align.detectors._model import model_file
from faceforge.align.detectors.base import DETECTORS, Detector, Face, letterbox
from faceforge.errors import FaceforgeError

__all__ = [
    "MESH_MOUTH_LEFT",
    "MESH_MOUTH_RIGHT",
    "MediaPipeDetector",
    "blazeface_anchors",
    "mouth_corners_from_centre",
    "weighted_nms",
]

#: face-mesh indices of the mouth corners: image-left (subject's right) and image-right.
MESH_MOUTH_LEFT = 61
MESH_MOUTH_RIGHT = 291
#: half the mouth width over the eye distance in the ArcFace 112 template ((70.73-41.55)/(73.53-38.29)/2).
MOUTH_HALF_WIDTH_PER_EYE_DISTANCE = 0.414

_VARIANTS: dict[str, dict[str, Any]] = {
    # strides per layer; layers of one stride share a feature map (mediapipe merges them).
    "short": {"store": "mediapipe_short", "size": 128, "strides": (8, 16, 16, 16), "per_layer": 2,
              "min_score": 0.7, "min_face_fraction": 1 / 8},
    "full": {"store": "mediapipe_full_sparse", "size": 192, "strides": (4,), "per_layer": 1,
             "min_score": 0.6, "min_face_fraction": 1 / 20},
}  # fmt: skip


def blazeface_anchors(input_size: int, strides: tuple[int, ...], anchors_per_layer: int) -> np.ndarray:
    """SSD anchor centres ``[N, 2]`` (normalised x, y) as mediapipe's ``SsdAnchorsCalculator`` makes them.

    ``fixed_anchor_size`` anchors: only centres; consecutive layers with the same stride are merged
    into one feature map with ``anchors_per_layer`` anchors per layer per cell.
    """
    out = []
    i = 0
    while i < len(strides):
        j = i
        while j < len(strides) and strides[j] == strides[i]:
            j += 1
        n_per_cell = anchors_per_layer * (j - i)
        fm = math.ceil(input_size / strides[i])
        ys, xs = np.meshgrid(np.arange(fm), np.arange(fm), indexing="ij")
        centres = np.stack([(xs + 0.5) / fm, (ys + 0.5) / fm], -1).reshape(-1, 1, 2)
        out.append(np.repeat(centres, n_per_cell, axis=1).reshape(-1, 2))
        i = j
    return np.concatenate(out).astype(np.float32)


def _iou_one(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    w = np.maximum(0.0, np.minimum(box[2], boxes[:, 2]) - np.maximum(box[0], boxes[:, 0]))
    h = np.maximum(0.0, np.minimum(box[3], boxes[:, 3]) - np.maximum(box[1], boxes[:, 1]))
    inter = w * h
    a = max(0.0, float(box[2] - box[0])) * max(0.0, float(box[3] - box[1]))
    b = np.maximum(boxes[:, 2] - boxes[:, 0], 0) * np.maximum(boxes[:, 3] - boxes[:, 1], 0)
    return inter / np.maximum(a + b - inter, 1e-12)


def weighted_nms(
    boxes: np.ndarray, scores: np.ndarray, keypoints: np.ndarray, iou_threshold: float
) -> list[tuple[np.ndarray, float, np.ndarray]]:
    """Mediapipe's weighted NMS: each kept box is the score-weighted mean of the boxes it suppresses.

    ``boxes`` ``[N, 4]`` (x1, y1, x2, y2), ``keypoints`` ``[N, K, 2]``; returns (box, best score,
    keypoints) per cluster, best score first.
    """
    order = np.argsort(-scores, kind="stable")
    out = []
    while order.size:
        top = order[0]
        iou = _iou_one(boxes[top], boxes[order])
        # The top box belongs to its own cluster even when degenerate (zero area → IoU 0 with itself).
        absorbed = (iou > iou_threshold) | (order == top)
        members = order[absorbed]
        w = scores[members].astype(np.float64)
        w = w / w.sum()
        box = (boxes[members] * w[:, None]).sum(0)
        kps = (keypoints[members] * w[:, None, None]).sum(0)
        out.append((box.astype(np.float32), float(scores[top]), kps.astype(np.float32)))
        order = order[~absorbed]
    return out


def mouth_corners_from_centre(
    left_eye: np.ndarray, right_eye: np.ndarray, mouth_centre: np.ndarray
) -> np.ndarray:
    """Mouth corners ``[2, 2]`` estimated as the mouth centre ± 0.414 × the eye vector (docs/align.md)."""
    half = MOUTH_HALF_WIDTH_PER_EYE_DISTANCE * (np.asarray(right_eye) - np.asarray(left_eye))
    c = np.asarray(mouth_centre, dtype=np.float64)
    return np.stack([c - half, c + half]).astype(np.float32)


def _inside(points: np.ndarray, box: np.ndarray, margin: float) -> bool:
    """Whether every point lies in ``box`` grown by ``margin`` × its size on each side."""
    x1, y1, x2, y2 = (float(v) for v in box)
    mx, my = margin * (x2 - x1), margin * (y2 - y1)
    p = np.asarray(points, np.float64)
    return bool(
        ((p[:, 0] >= x1 - mx) & (p[:, 0] <= x2 + mx) & (p[:, 1] >= y1 - my) & (p[:, 1] <= y2 + my)).all()
    )


def _require_litert() -> Any:
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        raise FaceforgeError(
            "detector 'mediapipe' needs the LiteRT interpreter: pip install ai-edge-litert "
            "(or pip install 'faceforge[detectors]')"
        ) from None
    return Interpreter


@contextlib.contextmanager
def _native_info_silenced() -> Iterator[None]:
    """Drop TensorFlow Lite's ``INFO: ...`` lines written to file descriptor 2 inside the block.

    LiteRT prints ``INFO: Created TensorFlow Lite XNNPACK delegate for CPU.`` from C++ when an
    interpreter is built, with no Python setting to turn it off (``TF_CPP_MIN_LOG_LEVEL`` is not
    read by it). The descriptor is pointed at a temporary file for the call; every other line is
    written to ``sys.stderr`` afterwards, so real errors still show.
    """
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError, AttributeError):  # no real descriptor 2: nothing to silence
        yield
        return
    with tempfile.TemporaryFile() as tmp:
        os.dup2(tmp.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            rest = [
                ln for ln in tmp.read().decode(errors="replace").splitlines() if not ln.startswith("INFO: ")
            ]
            if rest:
                print("\n".join(rest), file=sys.stderr)


def _interpreter(path: Path, threads: int | None) -> Any:
    interp_cls = _require_litert()
    try:
        with _native_info_silenced():
            it = interp_cls(model_path=str(path), num_threads=threads or 1)
            it.allocate_tensors()
    except Exception as e:  # LiteRT raises ValueError/RuntimeError with its own text
        raise FaceforgeError(f"cannot load mediapipe model {path}: {e}; expected a .tflite file") from None
    return it


class MediaPipeDetector(Detector):
    """BlazeFace short range (``variant="short"``, default) or full range sparse (``"full"``).

    ``refine="mesh"`` runs the face mesh on each face for the mouth corners (default);
    ``refine="none"`` estimates them from BlazeFace's mouth centre. ``model_path`` is the BlazeFace
    file, ``mesh_model_path`` the face-mesh file; both default to the model store. ``tiles`` is the
    number of scales (whole image, then tiles of 1/2, 1/4, ... of the longer side; 1 = mediapipe's
    single pass) and ``min_tile`` the smallest tile side in pixels (see docs/align.md, "MediaPipe").
    """

    name = "mediapipe"

    def __init__(
        self,
        model_path: str | Path | None = None,
        variant: str = "short",
        refine: str = "mesh",
        mesh_model_path: str | Path | None = None,
        score_threshold: float | None = None,
        nms_threshold: float = 0.3,
        threads: int | None = 1,
        tiles: int = 3,
        min_tile: int = 160,
    ) -> None:
        if variant not in _VARIANTS:
            raise FaceforgeError(f"mediapipe variant {variant!r}: expected one of {', '.join(_VARIANTS)}")
        if refine not in ("mesh", "none"):
            raise FaceforgeError(f"mediapipe refine={refine!r}: expected 'mesh' or 'none'")
        if not isinstance(tiles, int) or not 1 <= tiles <= 5:
            raise FaceforgeError(f"mediapipe tiles={tiles!r}: expected an integer 1..5")
        if not isinstance(min_tile, int) or min_tile < 32:
            raise FaceforgeError(f"mediapipe min_tile={min_tile!r}: expected an integer >= 32")
        v = _VARIANTS[variant]
        self.tiles, self.min_tile = tiles, min_tile
        self.min_face_fraction = float(v["min_face_fraction"])
        super().__init__(v["min_score"] if score_threshold is None else score_threshold, nms_threshold)
        self.variant, self.refine = variant, refine
        self.model_path = model_file(model_path, v["store"], self.name)
        self._det = _interpreter(self.model_path, threads)
        inp = self._det.get_input_details()[0]
        self.size = int(v["size"])
        if tuple(inp["shape"]) != (1, self.size, self.size, 3):
            raise FaceforgeError(
                f"{self.model_path}: input shape {tuple(inp['shape'])}, expected "
                f"(1, {self.size}, {self.size}, 3) for the {variant}-range BlazeFace model"
            )
        self._det_in = inp["index"]
        outs = sorted(self._det.get_output_details(), key=lambda d: -int(d["shape"][-1]))
        self._reg_out, self._cls_out = outs[0]["index"], outs[1]["index"]
        self.anchors = blazeface_anchors(self.size, v["strides"], v["per_layer"])
        if int(outs[0]["shape"][1]) != len(self.anchors):
            raise FaceforgeError(
                f"{self.model_path}: {int(outs[0]['shape'][1])} outputs but {len(self.anchors)} anchors; "
                f"not the {variant}-range BlazeFace model"
            )
        self._mesh = None
        if refine == "mesh":
            self.mesh_model_path = model_file(mesh_model_path, "mediapipe_face_mesh", self.name)
            self._mesh = _interpreter(self.mesh_model_path, threads)
            m_in = self._mesh.get_input_details()[0]
            if tuple(m_in["shape"]) != (1, 192, 192, 3):
                raise FaceforgeError(
                    f"{self.mesh_model_path}: input {tuple(m_in['shape'])}; not face_landmark"
                )
            self._mesh_in = m_in["index"]
            m_out = sorted(self._mesh.get_output_details(), key=lambda d: -int(np.prod(d["shape"])))
            self._mesh_pts, self._mesh_flag = m_out[0]["index"], m_out[1]["index"]

    # ------------------------------------------------------------------ BlazeFace
    def _blazeface(self, rgb: np.ndarray) -> list[tuple[np.ndarray, float, np.ndarray]]:
        canvas, scale = letterbox(rgb, (self.size, self.size))
        x = canvas.astype(np.float32)[None] / 127.5 - 1.0
        self._det.set_tensor(self._det_in, x)
        self._det.invoke()
        raw = self._det.get_tensor(self._reg_out)[0].astype(np.float64)
        logit = self._det.get_tensor(self._cls_out)[0, :, 0].astype(np.float64)
        scores = 1.0 / (1.0 + np.exp(-np.clip(logit, -100.0, 100.0)))
        keep = scores >= self.score_threshold
        if not keep.any():
            return []
        raw, scores, anchors = raw[keep], scores[keep], self.anchors[keep].astype(np.float64)
        s = float(self.size)
        c = raw[:, 0:2] / s + anchors
        wh = raw[:, 2:4] / s
        boxes = np.concatenate([c - wh / 2, c + wh / 2], 1) * s / scale
        kps = (raw[:, 4:16].reshape(-1, 6, 2) / s + anchors[:, None, :]) * s / scale
        return weighted_nms(boxes, scores, kps, self.nms_threshold)

    def tile_grid(self, width: int, height: int) -> list[tuple[int, int, int, int]]:
        """``(x0, y0, x1, y1)`` of every pass: the whole image, then 50 %-overlapping square tiles."""
        out = [(0, 0, width, height)]
        longer = max(width, height)
        for level in range(1, self.tiles):
            side = round(longer / 2**level)
            if side < self.min_tile:
                break

            def starts(extent: int, side: int = side) -> list[int]:
                # Evenly spread, at most half a tile apart: any box of half a tile lies whole in one.
                if extent <= side:
                    return [0]
                n = math.ceil((extent - side) / (side / 2)) + 1
                return [round(k * (extent - side) / (n - 1)) for k in range(n)]

            out += [
                (x, y, min(x + side, width), min(y + side, height))
                for y in starts(height)
                for x in starts(width)
            ]
        return out

    def smallest_face(self, width: int, height: int) -> float:
        """About the smallest face side (pixels) this detector can find in a ``width`` × ``height`` image."""
        tiles = self.tile_grid(width, height)
        smallest_pass = min(max(x1 - x0, y1 - y0) for x0, y0, x1, y1 in tiles)
        return self.min_face_fraction * smallest_pass

    def _candidates(self, rgb: np.ndarray) -> list[tuple[np.ndarray, float, np.ndarray]]:
        """BlazeFace on every pass of :meth:`tile_grid`, merged with the weighted NMS."""
        h, w = rgb.shape[:2]
        grid = self.tile_grid(w, h)
        if len(grid) == 1:
            return self._blazeface(rgb)
        boxes, scores, kps = [], [], []
        for x0, y0, x1, y1 in grid:
            whole = (x0, y0, x1, y1) == (0, 0, w, h)
            margin = 0.02 * max(x1 - x0, y1 - y0)
            for box, score, k in self._blazeface(np.ascontiguousarray(rgb[y0:y1, x0:x1])):
                box = box + np.array([x0, y0, x0, y0], np.float32)
                # A box touching an inner tile edge is a cut face; another tile holds it whole.
                if not whole and (
                    (x0 > 0 and box[0] < x0 + margin)
                    or (y0 > 0 and box[1] < y0 + margin)
                    or (x1 < w and box[2] > x1 - margin)
                    or (y1 < h and box[3] > y1 - margin)
                ):
                    continue
                boxes.append(box)
                scores.append(score)
                kps.append(k + np.array([x0, y0], np.float32))
        if not boxes:
            return []
        return weighted_nms(np.stack(boxes), np.array(scores), np.stack(kps), self.nms_threshold)

    # ------------------------------------------------------------------ face mesh
    def _mesh_points(self, rgb: np.ndarray, box: np.ndarray, kps: np.ndarray) -> tuple[np.ndarray, float]:
        """468 mesh points ``[468, 2]`` in image pixels and the face-presence probability."""
        cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
        side = 1.5 * max(box[2] - box[0], box[3] - box[1])
        ex, ey = kps[1] - kps[0]
        theta = math.atan2(ey, ex)  # rotate the crop so the eye line is horizontal in it
        cos, sin = math.cos(theta), math.sin(theta)
        # crop pixel (u, v) → image: centre + side · R(θ) · ((u, v) / 192 − 0.5)
        k = side / 192.0
        to_img = np.array(
            [
                [k * cos, -k * sin, cx - side / 2 * (cos - sin)],
                [k * sin, k * cos, cy - side / 2 * (sin + cos)],
            ]
        )
        crop = cv2.warpAffine(
            rgb, to_img, (192, 192), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
            borderMode=cv2.BORDER_REPLICATE,
        )  # fmt: skip
        self._mesh.set_tensor(self._mesh_in, crop.astype(np.float32)[None] / 255.0)
        self._mesh.invoke()
        pts = self._mesh.get_tensor(self._mesh_pts).reshape(-1, 3)[:, :2].astype(np.float64)
        flag = float(self._mesh.get_tensor(self._mesh_flag).reshape(-1)[0])
        presence = 1.0 / (1.0 + math.exp(-max(-100.0, min(100.0, flag))))
        return pts @ to_img[:, :2].T + to_img[:, 2], presence

    def _detect(self, rgb: np.ndarray) -> list[Face]:
        faces = []
        for box, score, kps in self._candidates(rgb):
            mouth = mouth_corners_from_centre(kps[0], kps[1], kps[3])
            if self._mesh is not None:
                mesh, presence = self._mesh_points(rgb, box, kps)
                if presence < 0.5:  # the mesh sees no face where BlazeFace put one: not returned
                    continue
                mouth = mesh[[MESH_MOUTH_LEFT, MESH_MOUTH_RIGHT]].astype(np.float32)
            lm = np.concatenate([kps[:3], mouth]).astype(np.float32)
            if not _inside(lm, box, 0.1):  # scattered points: not a face the template can align
                continue
            faces.append(Face(bbox=box, score=score, landmarks=lm, landmarks_extra=kps.copy()))
        return faces


@DETECTORS.register("mediapipe")
def _mediapipe(model_path: str | Path | None = None, **kwargs: Any) -> MediaPipeDetector:
    return MediaPipeDetector(model_path=model_path, **kwargs)


@DETECTORS.register("mediapipe_full")
def _mediapipe_full(model_path: str | Path | None = None, **kwargs: Any) -> MediaPipeDetector:
    kwargs.setdefault("variant", "full")
    return MediaPipeDetector(model_path=model_path, **kwargs)


@DETECTORS.register("mediapipe_simple")
def _mediapipe_simple(model_path: str | Path | None = None, **kwargs: Any) -> MediaPipeDetector:
    """BlazeFace short range alone: mouth corners estimated from its mouth centre (``refine="none"``)."""
    kwargs.setdefault("refine", "none")
    return MediaPipeDetector(model_path=model_path, **kwargs)
