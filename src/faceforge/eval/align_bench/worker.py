"""The detection stage of the alignment benchmark, one detector per spawned subprocess: :func:`run_worker`
reads (and prefetches) every image, times the detector, keeps one face per image (:func:`select_face`),
records the per-file outcomes and the process's peak RSS / GPU memory, and returns one plain result dict.
What differs between a faceforge detector (:class:`DetectorStep`) and dlib end to end
(:class:`NativeStep`) is only the per-image step; :func:`fallback_landmarks` is the crop of a failed image.
"""

from __future__ import annotations

import multiprocessing as mp
import resource
import sys
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from faceforge.errors import FaceforgeError

SELECT_MODES = ("center", "largest", "score")
#: the template fills the central 45 % of the image when a detector found no face at all.
_DEFAULT_FACE_FRACTION = 0.45


# ------------------------------------------------------------------------------------------ face choice


def select_face(faces: Sequence[Any], width: int, height: int, mode: str = "center") -> Any:
    """The face to keep: nearest the image centre (``center``), ``largest`` box, or best ``score``."""
    if mode == "center":
        c = np.array([width / 2.0, height / 2.0])
        return min(faces, key=lambda f: float(np.abs(np.asarray(f.bbox).reshape(2, 2).mean(0) - c).max()))
    if mode == "largest":
        return max(faces, key=lambda f: f.area)
    if mode == "score":
        return max(faces, key=lambda f: f.score)
    raise FaceforgeError(f"select={mode!r}: expected one of {', '.join(SELECT_MODES)}")


def fallback_landmarks(
    found_landmarks: np.ndarray, found_sizes: np.ndarray, width: int, height: int, template_points: np.ndarray
) -> np.ndarray:
    """Landmarks ``[5, 2]`` for an image where detection failed (the rule of docs/align.md, bench-align).

    ``found_landmarks`` ``[K, 5, 2]`` and ``found_sizes`` ``[K, 2]`` (width, height) are this
    detector's successes; their mean relative position is scaled to ``width`` × ``height``. With no
    success, ``template_points`` (crop pixels of a square template) are fitted into the central 45 %.
    """
    if len(found_landmarks):
        rel = (
            np.asarray(found_landmarks, np.float64) / np.asarray(found_sizes, np.float64)[:, None, :]
        ).mean(0)
        return (rel * [width, height]).astype(np.float32)
    t = np.asarray(template_points, np.float64)
    side = _DEFAULT_FACE_FRACTION * min(width, height)
    span = max(float(t.max()), 1.0)
    return (t / span * side + [(width - side) / 2, (height - side) / 2]).astype(np.float32)


# ------------------------------------------------------------------------------------------ measurement


def _peak_rss_mib() -> float:
    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kb / 1024.0 if sys.platform != "darwin" else kb / 2**20


def _current_rss_mib() -> float:
    """Resident set size now (``/proc/self/status`` VmRSS); the high-water mark where /proc is absent."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return _peak_rss_mib()


def _gpu_peak_mib() -> float | None:
    mod = sys.modules.get("torch")
    if mod is None:
        return None
    try:
        if mod.cuda.is_available():
            return float(mod.cuda.max_memory_allocated()) / 2**20
    except Exception:  # a broken CUDA setup is "no GPU" for this report
        return None
    return None


def _set_single_thread() -> None:
    import cv2

    cv2.setNumThreads(1)
    try:
        import torch

        torch.set_num_threads(1)
    except ImportError:  # pragma: no cover
        pass


# ------------------------------------------------------------------------------------------ reading


def _read(path: str) -> np.ndarray | FaceforgeError:
    """The image at ``path``, or the error saying why it cannot be read (a per-file outcome)."""
    from faceforge.align.io import read_image

    try:
        return read_image(path)
    except FaceforgeError as e:
        return e


def _prefetch(paths: Sequence[str], workers: int) -> Iterator[np.ndarray | FaceforgeError]:
    """:func:`_read` of each path, in order; with ``workers`` > 0 decoded ahead by a thread pool.

    At most ``4 × workers`` images are in flight, so a 13k-image list never sits in memory.
    """
    if workers <= 0:
        yield from (_read(p) for p in paths)
        return
    from collections import deque
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(workers, thread_name_prefix="bench-read") as ex:
        pending: deque[Any] = deque()
        it = iter(paths)
        for p in it:
            pending.append(ex.submit(_read, p))
            if len(pending) >= 4 * workers:
                break
        while pending:
            yield pending.popleft().result()
            nxt = next(it, None)
            if nxt is not None:
                pending.append(ex.submit(_read, nxt))


# ------------------------------------------------------------------------------------------ the steps


class _Step(ABC):
    """What one worker does per image; the loop, timing, outcomes and result dict are :func:`run_worker`'s.

    Built in the parent and pickled to the subprocess, so the model is loaded in :meth:`prepare`.
    """

    def load(self) -> None:
        """Imports made before the start RSS is read (they are not what the detector adds)."""
        return None  # an optional hook: nothing by default

    @abstractmethod
    def prepare(self, n: int) -> None:
        """Build the model, for ``n`` images."""

    @abstractmethod
    def detect(self, rgb: np.ndarray) -> list[Any]:
        """The faces of one image (the timed call)."""

    def detect_batch(self, rgbs: list[np.ndarray]) -> list[list[Any]]:
        """The faces of each image, in one call (the timed call with a batch size > 1)."""
        return [self.detect(rgb) for rgb in rgbs]

    def kept(self, i: int, rgb: np.ndarray, face: Any) -> None:
        """After timing: image ``i``'s selected face."""
        return None  # an optional hook: nothing by default

    def missed(self, i: int, rgb: np.ndarray) -> None:
        """After timing: image ``i`` where no face was found."""
        return None  # an optional hook: nothing by default

    def extra(self, found: np.ndarray, sizes: np.ndarray) -> dict[str, Any]:
        """Entries added to the result dict once every image is done."""
        return {}


@dataclass
class DetectorStep(_Step):
    """A faceforge detector (``name`` in the registry, its ``kwargs``) with one thread on ``device``."""

    name: str
    kwargs: dict[str, Any]
    device: str | None = None

    def prepare(self, n: int) -> None:
        self.det = _create_detector(self.name, self.kwargs, self.device)

    def detect(self, rgb: np.ndarray) -> list[Any]:
        return self.det.detect(rgb)

    def detect_batch(self, rgbs: list[np.ndarray]) -> list[list[Any]]:
        return self.det.detect_batch(rgbs)


@dataclass
class NativeStep(_Step):
    """dlib end to end: HOG boxes, then dlib's 5-point shape, chip and ResNet on the kept box.

    An image without a face is embedded at the mean relative box of the successes (or the central
    45 % when there are none), the same rule as :func:`fallback_landmarks`.
    """

    def load(self) -> None:
        # before the start RSS, as always for this row: rss_over_start is the pipeline's, not the imports'
        import faceforge.align.detectors.base
        import faceforge.align.io
        import faceforge.models.dlib_resnet  # noqa: F401

    def prepare(self, n: int) -> None:
        from faceforge.models.dlib_resnet import DlibNativePipeline

        self.pipe = DlibNativePipeline()
        self.boxes = np.zeros((n, 4), np.float32)
        self.emb = np.zeros((n, 128), np.float32)
        self.misses: dict[int, np.ndarray] = {}

    def detect(self, rgb: np.ndarray) -> list[Any]:
        from faceforge.align.detectors.base import Face

        # no landmarks: dlib cuts its own chip, and the row's landmarks stay zeros
        return [Face(bbox=b, score=s, landmarks=np.zeros((5, 2))) for b, s in self.pipe.detect(rgb)]

    def kept(self, i: int, rgb: np.ndarray, face: Any) -> None:
        self.boxes[i] = face.bbox
        self.emb[i] = self.pipe.embed(rgb, self.boxes[i])

    def missed(self, i: int, rgb: np.ndarray) -> None:
        self.misses[i] = rgb

    def extra(self, found: np.ndarray, sizes: np.ndarray) -> dict[str, Any]:
        if found.any():
            rel = (self.boxes[found].reshape(-1, 2, 2) / sizes[found][:, None, :]).mean(0).reshape(4)
        else:
            rel = np.array([0.275, 0.275, 0.725, 0.725])
        for i, rgb in self.misses.items():
            h, w = rgb.shape[:2]
            self.emb[i] = self.pipe.embed(rgb, rel * [w, h, w, h])
        return {"embeddings": self.emb}


def _create_detector(name: str, kwargs: dict[str, Any], device: str | None = None) -> Any:
    """The detector with one thread and ``device`` where the backend takes them (onnxruntime, LiteRT)."""
    from faceforge.align.detectors.base import create_detector_loose

    optional: dict[str, Any] = {} if "threads" in kwargs else {"threads": 1}
    if device is not None and "device" not in kwargs:
        optional["device"] = device
    kw = dict(kwargs)
    model_path = kw.pop("model_path", None)
    return create_detector_loose(name, model_path, optional, **kw)


# ------------------------------------------------------------------------------------------ the worker


def run_worker(
    step: _Step,
    paths: list[str],
    select: str,
    warmup: int,
    batch_size: int = 1,
    workers: int = 0,
) -> dict[str, Any]:
    """Subprocess body: detect on every image with ``step``; returns plain arrays (landmarks, times,
    outcomes, memory, and what ``step.extra`` adds).

    ``batch_size`` images go into one ``detect_batch`` call, and each image is charged the call's
    time / its size; ``workers`` threads decode images ahead. A call that raises is re-run one image
    at a time, so a broken image is a per-file outcome and never the end of the benchmark.
    """
    step.load()
    _set_single_thread()
    rss_start = _current_rss_mib()
    n = len(paths)
    step.prepare(n)
    lm = np.zeros((n, 5, 2), np.float32)
    sizes = np.zeros((n, 2), np.int64)
    found = np.zeros(n, bool)
    readable = np.zeros(n, bool)
    times = np.full(n, np.nan)
    n_faces = np.zeros(n, np.int64)
    outcomes: dict[int, str] = {}
    warm = 0
    images = _prefetch(paths, workers)
    for s in range(0, n, batch_size):
        batch: list[tuple[int, np.ndarray]] = []
        for i in range(s, min(s + batch_size, n)):
            rgb = next(images)
            if isinstance(rgb, FaceforgeError):
                outcomes[i] = f"unreadable: {rgb}"
                continue
            readable[i] = True
            sizes[i] = (rgb.shape[1], rgb.shape[0])
            batch.append((i, rgb))
        if not batch:
            continue
        rgbs = [rgb for _, rgb in batch]
        try:
            if warm < warmup:  # untimed first run(s): lazy initialisation, caches
                step.detect_batch(rgbs) if batch_size > 1 else step.detect(rgbs[0])
                warm += len(rgbs)
            t = time.perf_counter()
            found_faces = step.detect_batch(rgbs) if batch_size > 1 else [step.detect(rgbs[0])]
            dt = (time.perf_counter() - t) / len(rgbs)
            per_image: list[list[Any] | Exception] = list(found_faces)
        except Exception:  # find the image that breaks the batch: one at a time, each timed
            per_image, dts = [], []
            for rgb in rgbs:
                t = time.perf_counter()
                try:
                    per_image.append(step.detect(rgb))
                except Exception as e:  # a per-file outcome, never the end of the benchmark
                    per_image.append(e)
                dts.append(time.perf_counter() - t)
            dt = float(np.mean(dts))
        for (i, rgb), faces in zip(batch, per_image):
            if isinstance(faces, Exception):
                outcomes[i] = f"detector error: {type(faces).__name__}: {faces}"
                continue
            times[i] = dt
            n_faces[i] = len(faces)
            h, w = rgb.shape[:2]
            if not faces:
                outcomes[i] = f"no face found ({w}x{h} image): fallback crop"
                step.missed(i, rgb)
                continue
            face = select_face(faces, w, h, select)
            lm[i] = face.landmarks
            found[i] = True
            step.kept(i, rgb, face)
    extra = step.extra(found, sizes)
    return {
        "landmarks": lm,
        "sizes": sizes,
        "found": found,
        "readable": readable,
        "times": times,
        "n_faces": n_faces,
        "outcomes": outcomes,
        "peak_rss_mib": _peak_rss_mib(),
        "start_rss_mib": rss_start,
        "gpu_mib": _gpu_peak_mib(),
        **extra,
    }


def _detect_worker(
    name: str,
    kwargs: dict[str, Any],
    paths: list[str],
    select: str,
    warmup: int,
    batch_size: int = 1,
    workers: int = 0,
    device: str | None = None,
) -> dict[str, Any]:
    """:func:`run_worker` with the faceforge detector ``name`` (the tests' handle on the loop)."""
    return run_worker(DetectorStep(name, kwargs, device), paths, select, warmup, batch_size, workers)


def _in_subprocess(fn: Callable[..., dict[str, Any]], *args: Any) -> dict[str, Any]:
    """Run ``fn(*args)`` in a fresh spawned process (its own RSS high-water mark)."""
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(1, mp_context=mp.get_context("spawn")) as ex:
        return ex.submit(fn, *args).result()
