"""User-facing errors: every error a user can cause by bad input (a path, a name, a config key, a file) is
raised as a :class:`FaceforgeError`. The CLI prints these as one line (no traceback unless ``--debug``), so
the message must name the offending thing and say what was expected.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class FaceforgeError(ValueError):
    """An error caused by user input; its message is shown to the user as is."""


def did_you_mean(name: str, known: Iterable[str], n: int = 1) -> str:
    """Return ``" (did you mean 'x'?)"`` for the closest known name, or ``""`` if none is close."""
    close = difflib.get_close_matches(name, list(known), n=n, cutoff=0.5)
    if not close:
        return ""
    return " (did you mean " + " or ".join(repr(c) for c in close) + "?)"


class ImageDecodeError(FaceforgeError):
    """Bytes or a file that is not a decodable image (the message names the source)."""


class NoFaceError(FaceforgeError):
    """No face was found in an image that had to contain one (the message names the image)."""


#: top-level module of an optional dependency -> the faceforge extra that installs it
EXTRA_OF_MODULE = {
    "lightning": "train",
    "lightning_fabric": "train",
    "pytorch_lightning": "train",
    "timm": "train",
    "tensorboard": "train",
    "matplotlib": "train",
    "jsonargparse": "train",
    "fastapi": "serve",
    "starlette": "serve",
    "uvicorn": "serve",
    "multipart": "serve",
    "python_multipart": "serve",
    "onnx": "onnx",
    "onnxruntime": "onnx",
    "faiss": "faiss",
    "dlib": "detectors",
    "ai_edge_litert": "detectors",
    "face_recognition_models": "detectors",
}


class MissingExtraError(FaceforgeError):
    """An optional dependency is not installed; the message names the extra that installs it."""


def missing_extra(module: str, what: str = "this") -> MissingExtraError:
    """The one-line error for a missing optional ``module``: which extra installs it
    (``pip install "faceforge[train]"``), or the module itself when no extra does."""
    top = module.split(".")[0]
    extra = EXTRA_OF_MODULE.get(top)
    how = f'pip install "faceforge[{extra}]"' if extra else f"pip install {top}"
    return MissingExtraError(f"{what} needs {top}, which is not installed: {how}")
