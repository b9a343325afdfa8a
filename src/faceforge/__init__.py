"""faceforge: train, align, evaluate, export and serve face-recognition models. The main entry points,
imported lazily so ``import faceforge`` stays cheap: ``create_model``/``list_models`` (backbones),
``create_head``/``list_heads`` (margin heads), ``create_detector`` (face detectors), ``evaluate_pairs``
(10-fold verification) and ``SynthFaces``. Package layout: docs/architecture.md.
"""

from __future__ import annotations

import importlib
from typing import Any

#: the one place the version is written: pyproject.toml reads it (setuptools ``attr:``), and so do
#: ``faceforge --version`` and exported ONNX metadata; CHANGELOG.md has a section for it (tested)
__version__ = "0.1.0"

_EXPORTS = {
    "create_model": "faceforge.models.backbones",
    "list_models": "faceforge.models.backbones",
    "FaceConfig": "faceforge.models.face_cfg",
    "create_head": "faceforge.heads",
    "list_heads": "faceforge.heads",
    "create_detector": "faceforge.align",
    "list_detectors": "faceforge.align",
    "evaluate_pairs": "faceforge.eval.metrics",
    "SynthFaces": "faceforge.data.synth",
    "FaceforgeError": "faceforge.errors",
    "FaceRecognizer": "faceforge.infer",
}

__all__ = [*_EXPORTS, "__version__"]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'faceforge' has no attribute {name!r}")
