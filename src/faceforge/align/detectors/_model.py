"""Model-file lookup shared by the detector backends (explicit path or the model store)."""

from __future__ import annotations

from pathlib import Path

from faceforge import hub as store
from faceforge.errors import FaceforgeError


def model_file(model_path: str | Path | None, store_name: str, detector: str) -> Path:
    """``model_path`` if given (must exist), else the verified store file ``store_name``."""
    if model_path is not None:
        p = Path(model_path).expanduser()
        if not p.is_file():
            raise FaceforgeError(f"{detector} model file {p} does not exist (passed as model_path)")
        return p
    return store.resolve(store_name, what=f"{detector} detector model")
