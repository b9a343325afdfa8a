"""Similarity transform from landmarks to a template, and the affine warp that makes the crop.
The estimator is the least-squares, non-reflective similarity of S. Umeyama, "Least-squares estimation of
transformation parameters between two point patterns", IEEE TPAMI 13(4), 1991 — the same estimate as
``skimage.transform.SimilarityTransform`` that insightface's ``norm_crop`` uses. :func:`similarity_matrix`
returns the 2×3 matrix mapping source-image pixels to crop pixels, i.e. what ``cv2.warpAffine``
(:func:`warp`) takes. Details: docs/align.md, "Templates and the transform".
"""

from __future__ import annotations

import cv2
import numpy as np

from faceforge.align.templates import Size, get_template, parse_size
from faceforge.errors import FaceforgeError

__all__ = [
    "align_face",
    "crop_face",
    "estimate_similarity",
    "resize_centre_crop",
    "resize_to",
    "similarity_matrix",
    "transform_points",
    "warp",
]


def _points(a: np.ndarray, what: str) -> np.ndarray:
    arr = np.asarray(a)
    if arr.dtype != np.float32:
        arr = arr.astype(np.float64)
    if arr.ndim != 2 or arr.shape[1] != 2 or arr.shape[0] < 2:
        raise FaceforgeError(f"{what} must be an [N, 2] array of (x, y) points with N >= 2, got {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise FaceforgeError(f"{what} contain NaN or infinite values: {arr.tolist()}")
    return arr


def estimate_similarity(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity ``[2, 3]`` mapping ``src`` points onto ``dst`` (Umeyama, no reflection).

    Each point set's mean is taken in its own dtype (float32 stays float32), as numpy and skimage
    do, so a float32 template reproduces insightface's ``estimate_norm`` exactly; the rest is float64.
    """
    src = _points(src, "source landmarks")
    dst = _points(dst, "destination landmarks")
    if src.shape != dst.shape:
        raise FaceforgeError(f"source landmarks {src.shape} and template {dst.shape} differ in shape")
    n = src.shape[0]
    mu_s = src.mean(0).astype(np.float64)
    mu_d = dst.mean(0).astype(np.float64)
    src, dst = src.astype(np.float64), dst.astype(np.float64)
    sc, dc = src - mu_s, dst - mu_d
    var_s = float((sc**2).sum() / n)
    if var_s < 1e-12:
        raise FaceforgeError(f"source landmarks are all at one point {mu_s.tolist()}; cannot align")
    cov = dc.T @ sc / n
    u, d, vt = np.linalg.svd(cov)
    # Force a proper rotation: a reflection would mirror the face, never what alignment wants.
    s = np.ones(2)
    if np.linalg.det(cov) < 0:
        s[-1] = -1.0
    rank = int(np.linalg.matrix_rank(cov))
    if rank == 0:
        raise FaceforgeError("landmarks are degenerate (zero covariance); cannot align")
    if rank == 1:
        # Collinear points: the sign of the second singular direction is free; pick a rotation.
        if np.linalg.det(u) * np.linalg.det(vt) > 0:
            rot = u @ vt
        else:
            s_last = s.copy()
            s_last[-1] = -1.0
            rot = u @ np.diag(s_last) @ vt
            s = s_last
    else:
        rot = u @ np.diag(s) @ vt
    scale = float((d * s).sum() / var_s)
    m = np.empty((2, 3), dtype=np.float64)
    m[:, :2] = scale * rot
    m[:, 2] = mu_d - scale * rot @ mu_s
    return m


def similarity_matrix(
    landmarks: np.ndarray, template: str | np.ndarray = "arcface", size: Size | str = 112
) -> np.ndarray:
    """The ``[2, 3]`` similarity mapping 5 image ``landmarks`` to ``template`` at crop ``size``.

    ``landmarks`` are ``[5, 2]`` (x, y) in our order (left eye, right eye, nose, left/right mouth
    corner); ``template`` is ``"arcface"``, ``"dlib"`` or a ``[5, 2]`` array; ``size`` is an int or
    ``(width, height)``, e.g. ``(96, 112)``.
    """
    dst = get_template(template, size)
    src = _points(landmarks, "landmarks")
    if src.shape != dst.shape:
        raise FaceforgeError(f"landmarks must be [5, 2] like the template, got {src.shape}")
    return estimate_similarity(src, dst)


def transform_points(points: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """Apply a ``[2, 3]`` affine ``matrix`` to ``[N, 2]`` points."""
    pts = np.asarray(points, dtype=np.float64)
    m = np.asarray(matrix, dtype=np.float64)
    return pts @ m[:, :2].T + m[:, 2]


def warp(image: np.ndarray, matrix: np.ndarray, size: Size | str = 112) -> np.ndarray:
    """Warp ``image`` (H×W or H×W×C) by the ``[2, 3]`` ``matrix`` into a ``size`` crop.

    Bilinear interpolation, constant-0 border (pixels from outside the photo come out black).
    """
    m = np.asarray(matrix, dtype=np.float64)
    if m.shape != (2, 3) or not np.all(np.isfinite(m)):
        raise FaceforgeError(f"warp matrix must be a finite [2, 3] array, got shape {m.shape}")
    img = np.asarray(image)
    if img.ndim not in (2, 3) or img.shape[0] < 1 or img.shape[1] < 1:
        raise FaceforgeError(f"image must be an H×W or H×W×C array, got shape {img.shape}")
    w, h = parse_size(size)
    return cv2.warpAffine(
        np.ascontiguousarray(img),
        m,
        (w, h),
        flags=cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_CONSTANT,
        borderValue=0,
    )


def align_face(
    image: np.ndarray,
    landmarks: np.ndarray,
    template: str | np.ndarray = "arcface",
    size: Size | str = 112,
) -> np.ndarray:
    """Crop the face with 5 ``landmarks`` from ``image``, aligned to ``template`` at ``size``."""
    return warp(image, similarity_matrix(landmarks, template, size), size)


def resize_to(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize an H×W(×C) image to ``size`` = (height, width): INTER_AREA when shrinking, else bilinear.

    Used for images that are already aligned crops (at another resolution) and for whole-image models
    (``template="none"``); area averaging is what training's decoder used when it shrank crops.
    """
    h, w = (int(v) for v in size)
    img = np.asarray(image)
    if img.shape[:2] == (h, w):
        return img
    interp = cv2.INTER_AREA if img.shape[0] > h or img.shape[1] > w else cv2.INTER_LINEAR
    return cv2.resize(np.ascontiguousarray(img), (w, h), interpolation=interp)


def resize_centre_crop(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Scale an H×W(×C) image so it covers ``size`` = (height, width), then cut out the centre.

    No stretching: the aspect ratio is kept and the overhanging sides are cropped, the rule training
    decodes whole images with (:func:`faceforge.data.folder.decode_image` with ``crop=True``), so a
    whole-image model sees at inference what it saw in training. Same scaling as :func:`resize_to`.
    """
    h, w = (int(v) for v in size)
    img = np.asarray(image)
    ih, iw = img.shape[:2]
    if (ih, iw) == (h, w):
        return img
    s = max(h / ih, w / iw)
    nh, nw = max(h, round(ih * s)), max(w, round(iw * s))
    if (nh, nw) != (ih, iw):
        img = resize_to(img, (nh, nw))
    y0, x0 = (nh - h) // 2, (nw - w) // 2
    return np.ascontiguousarray(img[y0 : y0 + h, x0 : x0 + w])


def crop_face(image: np.ndarray, landmarks: np.ndarray | None, face_cfg: object) -> np.ndarray:
    """The model's input crop of one face: the one crop function for a :class:`FaceConfig`.

    ``face_cfg`` gives ``input_size`` (height, width) and ``template``. With 5 ``landmarks`` the face
    is warped onto the template at that size (:func:`similarity_matrix` + :func:`warp`); with
    ``landmarks=None`` (an already-aligned crop) the image is resized (:func:`resize_to`); a
    whole-image model (``template == "none"``) gets the image resized and centre-cropped without
    stretching (:func:`resize_centre_crop`, as in training). Training, evaluation, IJB, bench-align,
    ``FaceRecognizer`` and the service all cut their crops here, so they see the same pixels.
    """
    h, w = (int(v) for v in face_cfg.input_size)  # type: ignore[attr-defined]
    template = face_cfg.template  # type: ignore[attr-defined]
    if isinstance(template, str) and template == "none":
        return resize_centre_crop(image, (h, w))
    if landmarks is None:
        return resize_to(image, (h, w))
    return warp(image, similarity_matrix(landmarks, template, (w, h)), (w, h))
