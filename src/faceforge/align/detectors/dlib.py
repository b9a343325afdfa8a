"""dlib face detectors (HOG or MMOD CNN) + the 68-point shape predictor, mapped to our 5 points.
Implements N. Dalal, B. Triggs, "Histograms of Oriented Gradients for Human Detection", CVPR 2005
(``get_frontal_face_detector``); D. E. King, "Max-Margin Object Detection", arXiv:1502.00046, 2015
(``mmod_human_face_detector.dat``); V. Kazemi, J. Sullivan, "One Millisecond Face Alignment with an
Ensemble of Regression Trees", CVPR 2014 (``shape_predictor_68_face_landmarks.dat``, iBUG 300-W).
Entry point: :class:`DlibDetector` (``dlib``, ``dlib_mmod``). Details: docs/align.md,
"dlib (`dlib`, `dlib_mmod`)".
"""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path
from typing import Any

import numpy as np

from faceforge import hub as store
from faceforge.align.detectors.base import DETECTORS, Detector, Face
from faceforge.errors import FaceforgeError

__all__ = ["DlibDetector", "dlib_model_file", "landmarks5_from_68", "require_dlib"]

#: 68-point indices → our 5 points (eye contours are averaged).
LEFT_EYE_68 = tuple(range(36, 42))
RIGHT_EYE_68 = tuple(range(42, 48))
NOSE_TIP_68 = 30
MOUTH_LEFT_68, MOUTH_RIGHT_68 = 48, 54


def require_dlib(what: str = "detector 'dlib'") -> Any:
    """Import dlib or raise a :class:`FaceforgeError` naming the packages to install."""
    try:
        import dlib
    except ImportError:
        raise FaceforgeError(
            f"{what} needs dlib: pip install dlib-bin face-recognition-models "
            "(or pip install 'faceforge[detectors]')"
        ) from None
    return dlib


def _package_models_dir() -> Path | None:
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        return None
    for loc in spec.submodule_search_locations:
        d = Path(loc) / "models"
        if d.is_dir():
            return d
    return None


def dlib_model_file(model_path: str | Path | None, store_name: str, what: str) -> Path:
    """``model_path``, else the verified store copy, else ``face_recognition_models``'s copy."""
    if model_path is not None:
        p = Path(model_path).expanduser()
        if not p.is_file():
            raise FaceforgeError(f"{what} file {p} does not exist (passed as model_path)")
        return p
    found = store.find(store_name)
    if found is not None:
        return found
    pkg = _package_models_dir()
    spec = store.KNOWN_FILES[store_name]
    if pkg is not None and (pkg / spec.filename).is_file():
        return pkg / spec.filename
    raise FaceforgeError(
        f"{what} file {spec.filename!r} not found in {', '.join(str(d) for d in store.search_dirs())} "
        "nor in the face_recognition_models package; pip install face-recognition-models, or "
        f"`faceforge models fetch {store_name}`, or pass the file (--detector-model FILE; --model-path for "
        "faceforge align; model_path= in Python)"
    )


def landmarks5_from_68(points68: np.ndarray) -> np.ndarray:
    """Our 5 points ``[5, 2]`` from dlib's 68 (eye-contour means, nose tip 30, mouth corners 48/54)."""
    p = np.asarray(points68, dtype=np.float64)
    if p.shape != (68, 2):
        raise FaceforgeError(f"expected 68 (x, y) points, got shape {p.shape}")
    return np.stack(
        [
            p[list(LEFT_EYE_68)].mean(0),
            p[list(RIGHT_EYE_68)].mean(0),
            p[NOSE_TIP_68],
            p[MOUTH_LEFT_68],
            p[MOUTH_RIGHT_68],
        ]
    ).astype(np.float32)


def _logistic(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-max(-50.0, min(50.0, x))))


def _logit(p: float) -> float:
    p = min(max(p, 1e-9), 1 - 1e-9)
    return math.log(p / (1 - p))


class DlibDetector(Detector):
    """dlib HOG (``mode="hog"``, default) or MMOD CNN (``"mmod"``) + 68-point shape predictor.

    ``upsample`` doubles the image that many times before detecting (HOG and MMOD find faces from
    ~80 px, ~40 px after one doubling; dlib's and face_recognition's default is 1). The default
    ``"auto"`` detects at the image's own size and doubles it once only where nothing is found there:
    the faces of ``upsample=1`` on portraits at about a third of its time (on LFW: 10 against 30 ms
    per photo, 997 against 996 of 1,000 found, the 5 points 1.5 % of the eye distance apart), but a
    face under ~80 px beside a larger one is not looked for; pass ``upsample=1`` for group photos.
    ``model_path`` is the MMOD file (``mode="mmod"``) and ``shape_model_path`` the 68-point
    predictor.
    """

    name = "dlib"
    parallel_instances = True  # HOG, MMOD and the shape predictor run on one thread without the GIL

    def __init__(
        self,
        model_path: str | Path | None = None,
        mode: str = "hog",
        shape_model_path: str | Path | None = None,
        upsample: int | str = "auto",
        score_threshold: float = 0.5,
        nms_threshold: float = 0.4,
    ) -> None:
        super().__init__(score_threshold, nms_threshold)
        dlib = require_dlib(f"detector 'dlib' ({mode})")
        if mode not in ("hog", "mmod"):
            raise FaceforgeError(f"dlib mode {mode!r}: expected 'hog' or 'mmod'")
        if upsample != "auto" and (
            not isinstance(upsample, int) or isinstance(upsample, bool) or not 0 <= upsample <= 3
        ):
            raise FaceforgeError(f"dlib upsample={upsample!r}: expected 'auto' or an integer 0..3")
        self.mode, self.upsample = mode, upsample
        self._dlib = dlib
        if mode == "hog":
            if model_path is not None:
                raise FaceforgeError("dlib HOG has its detector built in; model_path is only for mode='mmod'")
            self._hog = dlib.get_frontal_face_detector()
        else:
            self.model_path = dlib_model_file(model_path, "dlib_mmod", "dlib MMOD detector")
            try:
                self._cnn = dlib.cnn_face_detection_model_v1(str(self.model_path))
            except RuntimeError as e:
                raise FaceforgeError(f"cannot load dlib MMOD model {self.model_path}: {e}") from None
        self.shape_model_path = dlib_model_file(
            shape_model_path, "dlib_shape68", "dlib 68-point shape predictor"
        )
        try:
            self._shape = dlib.shape_predictor(str(self.shape_model_path))
        except RuntimeError as e:
            raise FaceforgeError(f"cannot load dlib shape predictor {self.shape_model_path}: {e}") from None
        self._margin_threshold = _logit(self.score_threshold)

    def _boxes(self, rgb: np.ndarray) -> list[tuple[Any, float]]:
        if self.upsample != "auto":
            return self._boxes_at(rgb, int(self.upsample))
        # Doubling the image quadruples the work; a face of ~80 px or more is found without it.
        return self._boxes_at(rgb, 0) or self._boxes_at(rgb, 1)

    def _boxes_at(self, rgb: np.ndarray, upsample: int) -> list[tuple[Any, float]]:
        if self.mode == "hog":
            rects, scores, _ = self._hog.run(rgb, upsample, self._margin_threshold)
            return list(zip(rects, scores))
        return [
            (d.rect, d.confidence) for d in self._cnn(rgb, upsample) if d.confidence >= self._margin_threshold
        ]

    def _detect(self, rgb: np.ndarray) -> list[Face]:
        faces = []
        for rect, margin in self._boxes(rgb):
            shape = self._shape(rgb, rect)
            pts = np.array([(shape.part(i).x, shape.part(i).y) for i in range(shape.num_parts)], np.float32)
            faces.append(
                Face(
                    bbox=np.array([rect.left(), rect.top(), rect.right() + 1, rect.bottom() + 1], np.float32),
                    score=_logistic(float(margin)),
                    landmarks=landmarks5_from_68(pts),
                    landmarks_extra=pts,
                )
            )
        return faces


@DETECTORS.register("dlib")
def _dlib_hog(model_path: str | Path | None = None, **kwargs: Any) -> DlibDetector:
    return DlibDetector(model_path=model_path, **kwargs)


@DETECTORS.register("dlib_mmod")
def _dlib_mmod(model_path: str | Path | None = None, **kwargs: Any) -> DlibDetector:
    kwargs.setdefault("mode", "mmod")
    return DlibDetector(model_path=model_path, **kwargs)
