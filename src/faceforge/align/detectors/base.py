"""The face-detector interface: :class:`Face`, :class:`Detector`, the registry and ``create_detector``.
Every backend returns faces in one convention: ``bbox`` (x1, y1, x2, y2) and 5 ``landmarks``
``[5, 2]`` in input-image pixels, in the order left eye, right eye, nose tip, left mouth corner,
right mouth corner, where "left" is the smaller x in a frontal face (the order of the ArcFace
template, see :mod:`faceforge.align.templates`).
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from faceforge.errors import FaceforgeError
from faceforge.onnx_io import create_session, import_onnxruntime, session_providers
from faceforge.registry import Registry

__all__ = [
    "DETECTORS",
    "DEVICES",
    "Detector",
    "Face",
    "create_detector",
    "create_detector_loose",
    "letterbox",
    "list_detectors",
    "nms",
    "onnx_session",
    "ort_providers",
    "to_rgb_uint8",
]

DETECTORS: Registry[Detector] = Registry("detector")
#: what ``device=`` accepts on every detector that runs a network through onnxruntime or OpenCV DNN
DEVICES = ("auto", "cpu", "cuda")

log = logging.getLogger("faceforge.align.detectors")


@dataclass
class Face:
    """One detected face: box, confidence and landmarks in input-image pixels."""

    bbox: np.ndarray  # [4] float: x1, y1, x2, y2
    score: float
    landmarks: np.ndarray  # [5, 2] float: left eye, right eye, nose tip, left/right mouth corner
    landmarks_extra: np.ndarray | None = field(default=None)  # backend-specific extra points [K, 2]

    @property
    def area(self) -> float:
        """Box area in pixels²."""
        x1, y1, x2, y2 = (float(v) for v in self.bbox)
        return max(0.0, x2 - x1) * max(0.0, y2 - y1)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (lists of floats rounded to 0.01 px)."""
        out: dict[str, Any] = {
            "bbox": [round(float(v), 2) for v in self.bbox],
            "score": round(float(self.score), 4),
            "landmarks": [[round(float(x), 2), round(float(y), 2)] for x, y in self.landmarks],
        }
        if self.landmarks_extra is not None:
            out["landmarks_extra"] = [
                [round(float(x), 2), round(float(y), 2)] for x, y in self.landmarks_extra
            ]
        return out


def to_rgb_uint8(image: np.ndarray) -> np.ndarray:
    """Normalise an image array to contiguous RGB uint8 ``[H, W, 3]``.

    Accepts gray ``[H, W]`` / ``[H, W, 1]``, RGB, RGBA (alpha dropped), uint8, uint16 (scaled by
    1/257), bool, and float in [0, 1] (scaled by 255) or [0, 255].
    """
    if not isinstance(image, np.ndarray):
        raise FaceforgeError(f"image must be a numpy array (RGB uint8 H×W×3), got {type(image).__name__}")
    from faceforge.imageio import to_rgb_uint8 as convert

    return convert(image, f"array {'x'.join(map(str, image.shape))} {image.dtype}")


def letterbox(rgb: np.ndarray, size: tuple[int, int], upscale: bool = True) -> tuple[np.ndarray, float]:
    """Resize keeping the aspect ratio into a ``size`` = (w, h) canvas, padded bottom/right with 0.

    Returns the canvas and the scale (canvas pixels per input pixel); input coords = canvas / scale.
    """
    h, w = rgb.shape[:2]
    tw, th = size
    scale = min(tw / w, th / h)
    if not upscale:
        scale = min(scale, 1.0)
    nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    resized = cv2.resize(rgb, (nw, nh), interpolation=interp) if (nw, nh) != (w, h) else rgb
    canvas = np.zeros((th, tw, 3), dtype=np.uint8)
    canvas[:nh, :nw] = resized
    return canvas, scale


def shrink_and_pad(rgb: np.ndarray, max_side: int, multiple: int) -> tuple[np.ndarray, float]:
    """Shrink (never enlarge) so the longer side is at most ``max_side``, then pad bottom/right with 0 to
    multiples of ``multiple`` (a detector's stride); returns the canvas and the scale (as letterbox)."""
    h, w = rgb.shape[:2]
    scale = min(1.0, max_side / max(h, w))
    if scale < 1.0:
        size = (max(1, round(w * scale)), max(1, round(h * scale)))
        rgb = cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)
    h2, w2 = rgb.shape[:2]
    canvas = np.zeros((-(-h2 // multiple) * multiple, -(-w2 // multiple) * multiple, 3), dtype=np.uint8)
    canvas[:h2, :w2] = rgb
    return canvas, scale


def nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float) -> np.ndarray:
    """Greedy non-maximum suppression; returns kept indices, best score first."""
    if len(boxes) == 0:
        return np.zeros(0, dtype=np.int64)
    x1, y1, x2, y2 = boxes[:, 0], boxes[:, 1], boxes[:, 2], boxes[:, 3]
    areas = np.maximum(x2 - x1, 0) * np.maximum(y2 - y1, 0)
    order = np.argsort(-scores, kind="stable")
    keep = []
    while order.size:
        i = order[0]
        keep.append(i)
        rest = order[1:]
        w = np.maximum(0.0, np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]))
        h = np.maximum(0.0, np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]))
        inter = w * h
        iou = inter / np.maximum(areas[i] + areas[rest] - inter, 1e-9)
        order = rest[iou <= iou_threshold]
    return np.asarray(keep, dtype=np.int64)


class Detector(ABC):
    """Base class: validates the image, calls :meth:`_detect`, sorts faces by score.

    Subclasses implement ``_detect(rgb) -> list[Face]`` on a contiguous RGB uint8 image at least
    ``min_image_side`` pixels on each side.
    """

    name = "base"
    #: smaller images give an empty list (no backend finds a face in fewer pixels).
    min_image_side = 16
    #: True where separate instances may detect at once in threads, each keeping one core busy
    #: (single-threaded native code that releases the GIL, as dlib's): evaluation then builds one per
    #: thread. False for backends that already spread one image over every core (ONNX Runtime, OpenCV).
    parallel_instances = False

    def __init__(self, score_threshold: float = 0.5, nms_threshold: float = 0.4) -> None:
        if not 0.0 <= score_threshold <= 1.0:
            raise FaceforgeError(f"score_threshold must be in [0, 1], got {score_threshold}")
        if not 0.0 < nms_threshold <= 1.0:
            raise FaceforgeError(f"nms_threshold must be in (0, 1], got {nms_threshold}")
        self.score_threshold = float(score_threshold)
        self.nms_threshold = float(nms_threshold)

    def detect(self, image: np.ndarray) -> list[Face]:
        """Faces in ``image`` (RGB uint8 H×W×3; gray, RGBA, 16-bit and float are converted)."""
        rgb = to_rgb_uint8(image)
        h, w = rgb.shape[:2]
        if min(h, w) < self.min_image_side:
            return []
        return self._finish(self._detect(rgb), w, h)

    def detect_batch(self, images: Sequence[np.ndarray]) -> list[list[Face]]:
        """``[detect(im) for im in images]``; backends whose network takes a batch override it.

        Overrides must return exactly what one-at-a-time calls return (same faces, same order).
        """
        return [self.detect(im) for im in images]

    @staticmethod
    def _finish(faces: list[Face], w: int, h: int) -> list[Face]:
        """Clip boxes to the image, fix dtypes and shapes, sort by score (best first)."""
        for f in faces:
            f.bbox = np.asarray(f.bbox, dtype=np.float32).copy()
            f.bbox[[0, 2]] = np.clip(f.bbox[[0, 2]], 0, w)
            f.bbox[[1, 3]] = np.clip(f.bbox[[1, 3]], 0, h)
            f.landmarks = np.asarray(f.landmarks, dtype=np.float32).reshape(5, 2)
            f.score = float(f.score)
        return sorted(faces, key=lambda f: -f.score)

    @abstractmethod
    def _detect(self, rgb: np.ndarray) -> list[Face]:
        """Backend-specific work; every concrete subclass implements it."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}(score_threshold={self.score_threshold})"


def faces_from_arrays(
    boxes: np.ndarray, scores: np.ndarray, kps: np.ndarray, iou_threshold: float
) -> list[Face]:
    """NMS over decoded arrays (boxes [N,4], scores [N], kps [N,5,2]) → list of :class:`Face`."""
    keep = nms(boxes, scores, iou_threshold)
    return [Face(bbox=boxes[i], score=float(scores[i]), landmarks=kps[i]) for i in keep]


def create_detector(name: str, model_path: str | Path | None = None, **kwargs: Any) -> Detector:
    """Build the detector registered as ``name`` (see :func:`list_detectors`).

    ``model_path`` overrides the model-store lookup (``$FACEFORGE_HOME`` and
    ``$FACEFORGE_MODEL_DIRS``); other keywords (``score_threshold``, ``nms_threshold``,
    ``input_size``, …) go to the backend.
    """
    import faceforge.align.detectors  # noqa: F401  (registers the backends)

    return DETECTORS.create(name, model_path=model_path, **kwargs)


def create_detector_loose(
    name: str, model_path: str | Path | None = None, optional: dict[str, Any] | None = None, **kwargs: Any
) -> Detector:
    """:func:`create_detector`, passing each of ``optional`` (``threads``, ``device``) only where taken.

    A backend without the option (MediaPipe has no ``device``, MTCNN no ``threads``) is built
    without it; asking for ``device="cuda"`` on a CPU-only backend says so once.
    """
    opts = dict(optional or {})
    while True:
        try:
            return create_detector(name, model_path=model_path, **kwargs, **opts)
        except TypeError as e:
            bad = next((k for k in opts if f"'{k}'" in str(e)), None)
            if bad is None:
                raise
            if bad == "device" and opts[bad] == "cuda":
                say_cpu_fallback(name, "cuda", "this backend runs on the CPU only")
            opts.pop(bad)


def list_detectors() -> list[str]:
    """Names of all registered detector backends (whether or not their dependencies are installed)."""
    import faceforge.align.detectors  # noqa: F401

    return DETECTORS.names()


def _ort_hint(detector: str) -> str:
    return (
        f"detector {detector!r} needs onnxruntime: pip install onnxruntime "
        "(or pip install 'faceforge[detectors]')"
    )


def require_onnxruntime(detector: str) -> Any:
    """Import onnxruntime or raise a :class:`FaceforgeError` saying how to install it."""
    return import_onnxruntime(_ort_hint(detector))


def check_device(device: str, detector: str) -> str:
    """``device`` if it is one of :data:`DEVICES`, else a :class:`FaceforgeError` naming it."""
    if device not in DEVICES:
        raise FaceforgeError(f"{detector} device={device!r}: expected one of {', '.join(DEVICES)}")
    return device


#: (detector, what) pairs already told that they run on the CPU: the line is said once per process
_SAID_CPU: set[tuple[str, str]] = set()


def say_cpu_fallback(detector: str, device: str, why: str) -> None:
    """Log, once per detector and process, that ``detector`` runs on the CPU although ``device`` asked.

    ``device="cuda"`` is a warning (the user asked for the GPU); ``auto`` an info line.
    """
    key = (detector, device)
    if key in _SAID_CPU:
        return
    _SAID_CPU.add(key)
    level = logging.WARNING if device == "cuda" else logging.INFO
    log.log(level, "%s: device=%s but %s; running on the CPU", detector, device, why)


def ort_providers(device: str, detector: str) -> list[str]:
    """onnxruntime execution providers for ``device`` (``auto|cpu|cuda``): CUDA first when present.

    ``cpu`` is the CPU provider only; ``auto`` and ``cuda`` put ``CUDAExecutionProvider`` first when
    this onnxruntime build has it (``onnxruntime-gpu``), else the CPU with one log line
    (:func:`say_cpu_fallback`). The rule is :func:`faceforge.onnx_io.session_providers`.
    """
    check_device(device, detector)
    return session_providers(device, lambda why: say_cpu_fallback(detector, device, why), _ort_hint(detector))


def onnx_session(path: Path, detector: str, threads: int | None = None, device: str = "auto") -> Any:
    """An onnxruntime session for ``path`` on ``device`` with a clear error for unreadable files.

    Built by :func:`faceforge.onnx_io.create_session`; a CPU fallback (no CUDA provider, or CUDA
    listed but not started: no driver, no device) is said once per detector (:func:`say_cpu_fallback`).
    """
    check_device(device, detector)
    return create_session(
        path,
        device=device,
        threads=threads,
        what=f"{detector} model",
        install_hint=_ort_hint(detector),
        on_cpu_fallback=lambda why: say_cpu_fallback(detector, device, why),
    )
