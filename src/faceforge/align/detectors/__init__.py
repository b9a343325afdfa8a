"""Face-detector backends, one file each; importing this package registers them all.

Backends: ``yunet`` (OpenCV), ``scrfd``, ``retinaface``, ``yolo5face`` (onnxruntime),
``mtcnn`` (PyTorch), ``mediapipe`` / ``mediapipe_full`` (LiteRT), ``dlib`` / ``dlib_mmod`` (dlib).
Dependencies are imported when a detector is built, so listing works
without them.
"""

from __future__ import annotations

from faceforge.align.detectors import dlib, mediapipe, mtcnn, retinaface, scrfd, yolo5face, yunet  # noqa: F401
from faceforge.align.detectors.base import DETECTORS, Detector, Face, create_detector, list_detectors

__all__ = ["DETECTORS", "Detector", "Face", "create_detector", "list_detectors"]
