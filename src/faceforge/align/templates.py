"""Five-point alignment templates (destination landmarks of the similarity warp): ``"arcface"`` (Deng et al.,
"ArcFace: Additive Angular Margin Loss for Deep Face Recognition", CVPR 2019; insightface's ``arcface_dst``
and its ``estimate_norm`` size rules), ``"dlib"`` (dlib's 150×150 face chip) or a custom ``[5, 2]`` array,
in the order left eye, right eye, nose tip, left / right mouth corner (left = smaller x). Entry point:
:func:`get_template`. Details: docs/align.md, "Templates and the transform".
"""

from __future__ import annotations

import numpy as np

from faceforge.errors import FaceforgeError, did_you_mean

__all__ = [
    "ARCFACE_112",
    "DLIB_MEAN_FACE_5",
    "TEMPLATE_NAMES",
    "Size",
    "get_template",
    "parse_size",
]

# insightface stores the template as a float32 array and scales it in float32; skimage then takes
# its mean in float32 too. Keeping the dtype makes our matrices match insightface's norm_crop to
# ~1e-12 instead of ~2e-6 (the float32 rounding of the template's mean).
ARCFACE_112: np.ndarray = np.array(
    [
        [38.2946, 51.6963],
        [73.5318, 51.5014],
        [56.0252, 71.7366],
        [41.5493, 92.3655],
        [70.7299, 92.2041],
    ],
    dtype=np.float32,
)

# dlib's mean face shape (normalised to [0, 1]), the points we need: the six contour points of each
# eye (68-point indices 36-41 and 42-47), the nose tip (30) and the mouth corners (48, 54).
_DLIB_EYE_A = np.array(
    [
        [0.121737, 0.216423],
        [0.187122, 0.178758],
        [0.265825, 0.179852],
        [0.334606, 0.231733],
        [0.260918, 0.245099],
        [0.182743, 0.244077],
    ]
)
_DLIB_EYE_B = np.array(
    [
        [0.645647, 0.231733],
        [0.714428, 0.179852],
        [0.793132, 0.178758],
        [0.858516, 0.216423],
        [0.797510, 0.244077],
        [0.719335, 0.245099],
    ]
)
DLIB_MEAN_FACE_5: np.ndarray = np.array(
    [
        _DLIB_EYE_A.mean(0),
        _DLIB_EYE_B.mean(0),
        [0.490127, 0.515625],
        [0.254149, 0.780233],
        [0.726104, 0.780233],
    ]
)
_DLIB_PADDING = 0.25

TEMPLATE_NAMES = ("arcface", "dlib")

Size = int | tuple[int, int]


def parse_size(size: Size | str) -> tuple[int, int]:
    """Return ``(width, height)`` from ``112``, ``(96, 112)``, ``"112"`` or ``"96x112"``."""
    if isinstance(size, str):
        try:
            parts = [int(p) for p in size.lower().split("x")]
        except ValueError:
            raise FaceforgeError(
                f"crop size {size!r} is not a number or WIDTHxHEIGHT (e.g. 112, 96x112)"
            ) from None
        size = parts[0] if len(parts) == 1 else tuple(parts)  # type: ignore[assignment]
    if isinstance(size, (int, np.integer)):
        w = h = int(size)
    else:
        try:
            w, h = (int(v) for v in size)  # type: ignore[union-attr]
        except (TypeError, ValueError):
            raise FaceforgeError(f"crop size {size!r} must be an int or a (width, height) pair") from None
    if w < 8 or h < 8:
        raise FaceforgeError(f"crop size {w}x{h} is too small; expected at least 8x8 pixels")
    return w, h


def _arcface(w: int, h: int) -> np.ndarray:
    if (w, h) == (96, 112):
        t = ARCFACE_112.copy()
        t[:, 0] -= 8.0
        return t
    if w != h:
        raise FaceforgeError(
            f"the arcface template has square sizes and 96x112; got {w}x{h} "
            "(pass a custom [5,2] template for other shapes)"
        )
    # insightface.utils.face_align.estimate_norm: the 112 rule wins for sizes divisible by both.
    if w % 112 != 0 and w % 128 == 0:
        ratio = w / 128.0
        t = ARCFACE_112 * np.float32(ratio)
        t[:, 0] += np.float32(8.0 * ratio)
        return t
    return ARCFACE_112 * np.float32(w / 112.0)


def _dlib(w: int, h: int) -> np.ndarray:
    if w != h:
        raise FaceforgeError(f"the dlib template is square; got {w}x{h}")
    return (DLIB_MEAN_FACE_5 + _DLIB_PADDING) / (1.0 + 2.0 * _DLIB_PADDING) * w


def get_template(template: str | np.ndarray = "arcface", size: Size | str = 112) -> np.ndarray:
    """The destination landmarks ``[5, 2]`` (crop pixels) of ``template`` at ``size``.

    ``template`` is ``"arcface"`` (float32, as insightface), ``"dlib"`` (float64) or a ``[5, 2]``
    array (returned as a float copy, ``size`` ignored). ``size`` is an int (square crop) or
    ``(width, height)``.
    """
    if not isinstance(template, str):
        arr = np.asarray(template)
        arr = arr.astype(arr.dtype if arr.dtype in (np.float32, np.float64) else np.float64)
        if arr.shape != (5, 2) or not np.all(np.isfinite(arr)):
            raise FaceforgeError(f"custom template must be a finite [5, 2] array, got shape {arr.shape}")
        return arr.copy()
    w, h = parse_size(size)
    if template == "arcface":
        return _arcface(w, h)
    if template == "dlib":
        return _dlib(w, h)
    raise FaceforgeError(
        f"unknown alignment template {template!r}{did_you_mean(template, TEMPLATE_NAMES)}; "
        f"known: {', '.join(TEMPLATE_NAMES)} or a [5, 2] array"
    )
