"""Face-detector backends, one file each; importing this package registers them all: ``yunet`` (OpenCV),
``scrfd``, ``retinaface``, ``yolo5face``, ``yolov8_face`` (onnxruntime), ``rtmpose`` (onnxruntime keypoints
on another detector's boxes), ``mtcnn`` (PyTorch), ``mediapipe`` / ``mediapipe_full`` / ``mediapipe_simple``
(LiteRT), ``dlib`` / ``dlib_mmod`` (dlib). Dependencies are imported when a detector is built, so listing
works without them. Details: docs/align.md, "Detectors".
"""

from __future__ import annotations

from faceforge.align.detectors import (  # noqa: F401
    dlib,
    mediapipe,
    mtcnn,
    retinaface,
    rtmpose,
    scrfd,
    yolo5face,
    yolov8face,
    yunet,
)
from faceforge.align.detectors.base import DETECTORS, Detector, Face, create_detector, list_detectors

__all__ = ["DETECTORS", "Detector", "Face", "create_detector", "list_detectors"]
