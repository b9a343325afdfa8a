"""Face alignment: 5-point templates, similarity transform + warp, detectors, model file store.
:func:`create_detector` ``(name).detect(rgb) -> list[Face]`` then
``warp(rgb, similarity_matrix(face.landmarks, "arcface", 112), 112)`` (:func:`similarity_matrix`,
:func:`warp`) gives the ArcFace crop. Details: docs/align.md.
"""

from __future__ import annotations

from faceforge.align.detectors.base import Detector, Face, create_detector, list_detectors
from faceforge.align.templates import get_template
from faceforge.align.transform import (
    align_face,
    crop_face,
    estimate_similarity,
    resize_to,
    similarity_matrix,
    transform_points,
    warp,
)

__all__ = [
    "Detector",
    "Face",
    "align_face",
    "create_detector",
    "crop_face",
    "estimate_similarity",
    "get_template",
    "list_detectors",
    "resize_to",
    "similarity_matrix",
    "transform_points",
    "warp",
]
