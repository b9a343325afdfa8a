"""Use a trained model: :class:`FaceRecognizer` (verify / embed / find, PyTorch or ONNX) and :class:`Gallery`,
e.g. ``FaceRecognizer.from_checkpoint("best.ckpt").verify("a.jpg", "b.jpg")``. Details: docs/inference.md.
"""

from __future__ import annotations

from faceforge.infer.gallery import Gallery
from faceforge.infer.recognizer import FaceRecognizer, FaceResult, ImageInput, load_image

__all__ = ["FaceRecognizer", "FaceResult", "Gallery", "ImageInput", "load_image"]
