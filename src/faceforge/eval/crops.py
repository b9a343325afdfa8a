"""The model's crops of an evaluation set's image files: aligned crops are resized as they are, raw
photos are detected and aligned to the model's template (:func:`faceforge.align.crop_face`) as
``verify`` does. :func:`plan_alignment` decides per set (``detector="auto"``, ``"none"``, a detector or
a whole-image model), :class:`FaceCropper` makes the crops, keeping the face nearest the centre,
cropping no-face images by :data:`NO_FACE_RULE` and counting undecodable ones. Details:
docs/evaluation.md, "Raw photos: detection, alignment and the no-face rule" and "Crops of an
evaluation set".
"""

from __future__ import annotations

import os
import sys
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np
import torch

from faceforge.errors import FaceforgeError
from faceforge.progress import progress_bar

__all__ = [
    "CANONICAL_ALIGNED",
    "NO_FACE_EXAMPLES",
    "NO_FACE_RULE",
    "AlignPlan",
    "Crops",
    "FaceCropper",
    "plan_alignment",
]

#: ArcFace-template crops are published at 112×112 (Deng et al., CVPR 2019): such images are taken as
#: aligned for any arcface-template model, whatever its input size (as ``FaceRecognizer`` does).
CANONICAL_ALIGNED = (112, 112)
#: how many no-face paths a report row lists
NO_FACE_EXAMPLES = 5
#: how an image without a detected face is cropped (documented in every row that has one)
NO_FACE_RULE = (
    "no face detected: cropped where the set's detected faces are on average (their landmarks "
    "relative to the image size), i.e. a face of the typical size at the image centre; if no face "
    "was found in the whole set, the template fitted into the central 45% of the image"
)
#: one image's detection: (width, height), the kept face's 5 points and crop (None, None: no face)
_Detected = tuple[np.ndarray, np.ndarray | None, np.ndarray | None]
#: the face kept among several (align_bench.select_face mode)
SELECT = "center"
#: version of the crop rules; part of every cache key
_RULES_VERSION = 1


def _warn_default(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------------------ the plan


@dataclass
class AlignPlan:
    """What happens to a set's images: ``method`` and, for ``"detected"``, the detector.

    ``method`` is ``"aligned"`` (crops of the model's size or 112×112 arcface crops: resized),
    ``"resized"`` (``--detector none`` on images that are not crops: resized, warned),
    ``"whole-image"`` (a ``template="none"`` model) or ``"detected"``.
    """

    method: str
    detector: str | None = None
    identity: dict[str, Any] = field(default_factory=dict)  # detector_identity(), for cache keys
    n_other_size: int = 0  # images that are not crops of the model's size

    def key(self) -> dict[str, Any]:
        """The part of the embedding cache key that the crops depend on."""
        if self.method == "detected":
            return {"method": "detected", "detector": self.identity, "select": SELECT, "v": _RULES_VERSION}
        return {"method": self.method}


def _image_size(path: str) -> tuple[int, int] | None:
    """(height, width) from the file header (EXIF rotation applied), or None if unreadable."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            w, h = im.size
            try:
                orient = im.getexif().get(274, 1)
            except Exception:  # a damaged EXIF block: the pixels decide later
                orient = 1
    except (OSError, ValueError, SyntaxError, UnidentifiedImageError, Image.DecompressionBombError):
        return None  # undecodable or a declared bomb: the guarded decoder says why, per image, later
    return (w, h) if orient in (5, 6, 7, 8) else (h, w)


def _is_crop_size(hw: tuple[int, int], face_cfg: Any) -> bool:
    size = tuple(int(v) for v in face_cfg.input_size)
    return hw == size or (face_cfg.template == "arcface" and hw == CANONICAL_ALIGNED)


def count_other_size(paths: Sequence[str], face_cfg: Any, stop_at_first: bool = False) -> int:
    """Images of ``paths`` whose header size is neither the model's input size nor 112×112 arcface.

    Unreadable files are not counted (they are counted as undecodable when decoded).
    """
    n = 0
    for p in paths:
        hw = _image_size(p)
        if hw is not None and not _is_crop_size(hw, face_cfg):
            n += 1
            if stop_at_first:
                break
    return n


# ------------------------------------------------------------------------------------------ crops


@dataclass
class Crops:
    """The model's RGB uint8 crops ``[N, 3, H, W]`` of a set's images, and how they were made."""

    images: torch.Tensor
    bad_paths: list[str]
    plan: AlignPlan
    no_face_paths: list[str] = field(default_factory=list)
    from_cache: int = 0  # crops read from the crop cache (no decoding, no detection)
    detected: int = 0  # images run through the detector in this call

    def facts(self) -> dict[str, Any]:
        """The report-row facts: alignment method, detector, no-face count, rule and examples."""
        return alignment_facts(self.plan, self.no_face_paths)


def alignment_facts(plan: AlignPlan, no_face_paths: Sequence[str]) -> dict[str, Any]:
    """Report-row facts of a plan (see :meth:`Crops.facts`)."""
    out: dict[str, Any] = {"alignment": plan.method, "detector": plan.detector}
    if plan.method == "detected":
        out.update(
            no_face_images=len(no_face_paths),
            no_face_rule=NO_FACE_RULE,
            no_face_examples=[str(p) for p in list(no_face_paths)[:NO_FACE_EXAMPLES]],
        )
    elif plan.method == "resized":
        out["resized_without_alignment"] = plan.n_other_size
    return out


class FaceCropper:
    """Turns a set's image files into a model's crops (see docs/evaluation.md, "Raw photos").

    Args:
        face_cfg: the model's :class:`~faceforge.models.face_cfg.FaceConfig` (``input_size``,
            ``template``); any non-square size works.
        detector: ``"auto"``, ``"none"``, a detector name, a model file or a ``Detector``.
        detector_model: the detector's model file (with a detector name).
        cache: a :class:`~faceforge.eval.cache.CropCache` (None: no crop cache).
        warn: where warning lines go (default: stderr).
        progress: a bar while detecting (default: on a terminal only).
        threads: images detected at once (default: up to 4 where the detector's instances can run
            side by side, :attr:`~faceforge.align.detectors.base.Detector.parallel_instances`, and
            it was named rather than passed as an instance; else 1). The crops do not depend on it.
    """

    def __init__(
        self,
        face_cfg: Any,
        detector: Any = "auto",
        detector_model: str | os.PathLike[str] | None = None,
        cache: Any = None,
        warn: Callable[[str], None] | None = None,
        progress: bool | None = None,
        threads: int | None = None,
    ) -> None:
        if threads is not None and (not isinstance(threads, int) or threads < 1):
            raise FaceforgeError(f"threads={threads!r}: expected a positive integer or None (auto)")
        h, w = (int(v) for v in face_cfg.input_size)
        if h < 1 or w < 1:
            raise FaceforgeError(f"model input size {face_cfg.input_size} is not a valid (height, width)")
        if face_cfg.template != "none":
            from faceforge.align.templates import get_template

            try:  # an unsupported template/size pair fails here, before any image is read
                get_template(face_cfg.template, (w, h))
            except FaceforgeError as e:
                raise FaceforgeError(
                    f"model input {h}x{w} with template {face_cfg.template!r} cannot be cropped: {e}"
                ) from None
        self.face_cfg = face_cfg
        self.size = (h, w)
        self.spec = "auto" if detector is None else detector
        self.detector_model = detector_model
        if isinstance(self.spec, str) and self.spec == "none" and detector_model is not None:
            raise FaceforgeError(f"--detector-model {detector_model} needs a detector, not --detector none")
        self.cache = cache
        self.warn = warn or _warn_default
        self.progress = progress
        self._detector: Any = None
        self._detector_name: str | None = None
        self._identity: dict[str, Any] | None = None
        self.threads = threads
        self._spares: list[Any] = []  # more instances of the detector, one per extra thread
        self.detect_calls = 0

    # ------------------------------------------------------------------------------------ planning
    def _ensure_detector(self) -> None:
        if self._detector is None:
            from faceforge.align.choose import detector_identity, resolve_detector

            self._detector, self._detector_name = resolve_detector(self.spec, self.detector_model)
            self._identity = detector_identity(self._detector, self._detector_name)

    def plan(self, paths: Sequence[str], name: str = "set") -> AlignPlan:
        """How this set's images become crops (see :func:`plan_alignment`); warns for ``"resized"``."""
        spec = self.spec
        if self.face_cfg.template == "none":
            return AlignPlan("whole-image")
        if isinstance(spec, str) and spec == "none":
            n_other = count_other_size(paths, self.face_cfg)
            if n_other:
                h, w = self.size
                self.warn(
                    f"{name}: {n_other} of {len(paths)} images are not {h}x{w} crops; --detector none "
                    "resizes them whole, without detection or alignment (expect poor accuracy; "
                    "use --detector auto for raw photos)"
                )
                return AlignPlan("resized", n_other_size=n_other)
            return AlignPlan("aligned")
        if isinstance(spec, str) and spec == "auto" and self.detector_model is None:
            if count_other_size(paths, self.face_cfg, stop_at_first=True) == 0:
                return AlignPlan("aligned")
        self._ensure_detector()
        return AlignPlan("detected", self._detector_name, dict(self._identity or {}))

    # ------------------------------------------------------------------------------------ cropping
    def crops(self, paths: Sequence[str], plan: AlignPlan | None = None, name: str = "set") -> Crops:
        """The crops of ``paths`` by ``plan`` (planned here when not given)."""
        plan = plan or self.plan(paths, name)
        if plan.method == "detected":
            return self._detected(paths, plan, name)
        return self._resized(paths, plan)

    def _resized(self, paths: Sequence[str], plan: AlignPlan) -> Crops:
        from faceforge.align import crop_face
        from faceforge.align.io import read_image

        h, w = self.size
        arr = np.zeros((len(paths), h, w, 3), np.uint8)
        bad = []
        for i, p in enumerate(paths):
            try:
                rgb = read_image(p)
            except FaceforgeError:
                bad.append(str(p))
                continue
            arr[i] = crop_face(rgb, None, self.face_cfg)
        return Crops(_nchw(arr), bad, plan)

    def _key(self, path: str, plan: AlignPlan) -> str | None:
        try:
            st = os.stat(path)
        except OSError:
            return None
        parts = {
            "image": os.path.abspath(path),
            "bytes": st.st_size,
            "mtime_ns": st.st_mtime_ns,
            "detector": plan.identity,
            "select": SELECT,
            "template": self.face_cfg.template,
            "crop": list(self.size),
            "rules": _RULES_VERSION,
        }
        return self.cache.key(parts)

    def _detected(self, paths: Sequence[str], plan: AlignPlan, name: str) -> Crops:
        self._ensure_detector()
        h, w = self.size
        n = len(paths)
        arr = np.zeros((n, h, w, 3), np.uint8)
        landmarks = np.zeros((n, 5, 2), np.float32)
        sizes = np.zeros((n, 2), np.float64)  # (width, height) of each image
        found = np.zeros(n, bool)
        readable = np.ones(n, bool)
        from_cache = detected = 0
        bar = progress_bar(n, f"{name}: detecting faces", enabled=self.progress, leave=False)
        caching = self.cache is not None and getattr(self.cache, "directory", None) is not None
        todo: list[tuple[int, str | None]] = []
        try:
            for i, p in enumerate(paths):
                key = self._key(p, plan) if caching else None
                entry = self.cache.get(key) if key is not None else None
                if entry is not None and _valid_entry(entry, (h, w)):
                    bar.update(1)
                    sizes[i] = entry["image_size"]
                    if bool(entry["found"]):
                        arr[i], landmarks[i], found[i] = entry["crop"], entry["landmarks"], True
                    from_cache += 1
                    continue
                todo.append((i, key))
            for (i, key), got in zip(todo, self._detect_each([paths[i] for i, _ in todo])):
                bar.update(1)
                if got is None:
                    readable[i] = False
                    continue
                sizes[i], lm, crop = got
                self.detect_calls += 1
                detected += 1
                store: dict[str, np.ndarray] = {"image_size": sizes[i].copy()}
                if lm is not None:
                    landmarks[i], arr[i], found[i] = lm, crop, True
                    store.update(found=np.array(True), crop=arr[i], landmarks=landmarks[i])
                else:
                    store["found"] = np.array(False)
                if key is not None:  # only made while caching
                    self.cache.put(key, store)
                    caching = getattr(self.cache, "directory", None) is not None
        finally:
            bar.close()
        no_face = np.flatnonzero(~found & readable)
        if len(no_face):
            self._fallback(paths, no_face, arr, landmarks, sizes, found, readable)
        bad = [str(paths[i]) for i in np.flatnonzero(~readable)]
        no_face_paths = [str(paths[i]) for i in np.flatnonzero(~found & readable)]
        return Crops(_nchw(arr), bad, plan, no_face_paths, from_cache, detected)

    def _thread_count(self, n: int) -> int:
        if _is_instance(self.spec):
            return 1  # one instance given: it cannot be copied, and may not run in two threads at once
        if self.threads is not None:
            want = self.threads
        elif getattr(self._detector, "parallel_instances", False):
            want = min(4, os.cpu_count() or 1)
        else:
            want = 1
        return max(1, min(want, n))

    def _detect_each(self, paths: Sequence[str]) -> Iterator[_Detected | None]:
        """Per path, in order: ``((width, height), landmarks or None, crop or None)``, or None where the
        file cannot be decoded; detected in :meth:`_thread_count` threads, one detector each."""
        threads = self._thread_count(len(paths))
        if threads == 1:
            yield from (self._detect_one(p, self._detector) for p in paths)
            return
        from concurrent.futures import ThreadPoolExecutor
        from queue import SimpleQueue

        from faceforge.align.choose import resolve_detector

        while len(self._spares) < threads - 1:  # built once, kept for the cropper's next set
            self._spares.append(resolve_detector(self.spec, self.detector_model)[0])
        free: SimpleQueue[Any] = SimpleQueue()
        for d in (self._detector, *self._spares[: threads - 1]):
            free.put(d)

        def work(p: str) -> _Detected | None:
            det = free.get()
            try:
                return self._detect_one(p, det)
            finally:
                free.put(det)

        with ThreadPoolExecutor(threads, thread_name_prefix="faceforge-detect") as pool:
            # A bounded window keeps a few images in flight, whatever the set's size.
            ahead = iter(paths)
            pending = deque(pool.submit(work, p) for p in islice(ahead, 8 * threads))
            while pending:
                got = pending.popleft().result()
                for p in islice(ahead, 1):
                    pending.append(pool.submit(work, p))
                yield got

    def _detect_one(self, path: str, detector: Any) -> _Detected | None:
        from faceforge.align import crop_face
        from faceforge.align.io import read_image
        from faceforge.eval.align_bench import select_face

        try:
            rgb = read_image(path)
        except FaceforgeError:
            return None
        ih, iw = rgb.shape[:2]
        size = np.array([iw, ih], np.float64)
        faces = detector.detect(rgb)
        if not faces:
            return size, None, None
        lm = np.asarray(select_face(faces, iw, ih, SELECT).landmarks, np.float32).reshape(5, 2)
        return size, lm, crop_face(rgb, lm, self.face_cfg)

    def _fallback(
        self,
        paths: Sequence[str],
        no_face: np.ndarray,
        arr: np.ndarray,
        landmarks: np.ndarray,
        sizes: np.ndarray,
        found: np.ndarray,
        readable: np.ndarray,
    ) -> None:
        """Crops of the images without a face, by :data:`NO_FACE_RULE` (they are decoded again)."""
        from faceforge.align import crop_face
        from faceforge.align.io import read_image
        from faceforge.align.templates import get_template
        from faceforge.eval.align_bench import fallback_landmarks

        h, w = self.size
        template = get_template(self.face_cfg.template, (w, h))
        for i in no_face:
            try:
                rgb = read_image(paths[i])
            except FaceforgeError:
                readable[i] = False  # readable when detected, not now (replaced meanwhile)
                continue
            ih, iw = rgb.shape[:2]
            lm = fallback_landmarks(landmarks[found], sizes[found], iw, ih, template)
            arr[i] = crop_face(rgb, lm, self.face_cfg)


def _is_instance(spec: Any) -> bool:
    return not isinstance(spec, (str, os.PathLike))


def _valid_entry(entry: dict[str, np.ndarray], size: tuple[int, int]) -> bool:
    try:
        if entry["image_size"].shape != (2,):
            return False
        if not bool(entry["found"]):
            return True
        return (
            entry["crop"].shape == (*size, 3)
            and entry["crop"].dtype == np.uint8
            and (entry["landmarks"].shape == (5, 2))
        )
    except (KeyError, AttributeError, ValueError):
        return False


def _nchw(arr: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(arr).permute(0, 3, 1, 2).contiguous()


def plan_alignment(
    paths: Sequence[str], face_cfg: Any, detector: Any = "auto", detector_model: str | Path | None = None
) -> AlignPlan:
    """How :class:`FaceCropper` would treat ``paths`` (docs/evaluation.md); no warnings printed."""
    return FaceCropper(face_cfg, detector, detector_model, warn=lambda _m: None).plan(paths)
