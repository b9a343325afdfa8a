"""Pipelined embedding of many photos: decode, detect and align in worker threads, recognise in batches.
:func:`embed_folder` gives the same embeddings as ``FaceRecognizer.embed`` on each file in turn, with
bounded memory and one outcome per file in input order (the producer/consumer pattern of input
pipelines, with threads). Details: docs/inference.md, "Pipelined embedding".
"""

from __future__ import annotations

import os
import queue
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from faceforge.align.transform import crop_face
from faceforge.errors import FaceforgeError, NoFaceError
from faceforge.imageio import IMAGE_EXTENSIONS, list_images
from faceforge.infer.model_process import on_multicore_cpu
from faceforge.infer.recognizer import load_image

if TYPE_CHECKING:
    from faceforge.align.detectors.base import Detector
    from faceforge.infer.recognizer import FaceRecognizer, ImageInput

__all__ = [
    "FileOutcome",
    "FolderEmbeddings",
    "collect_images",
    "default_model_workers",
    "embed_folder",
    "embed_labelled",
    "iter_embed_folder",
    "list_images",
    "load_embeddings_npz",
]

OK, NO_FACE, UNDECODABLE, FAILED = "ok", "no_face", "undecodable", "failed"
#: outcome statuses, in the order they are counted in progress lines and summaries
STATUSES = (OK, NO_FACE, UNDECODABLE, FAILED)
# ArcFace-template crops are defined at 112×112; FaceRecognizer takes such an image as aligned too.
_CANONICAL_ALIGNED = (112, 112)
_POLL_S = 0.1  # how often blocked workers look at the stop flag
_BUILD_LOCK = threading.Lock()  # detectors are built one at a time (see _Stage._detect)


@dataclass
class FileOutcome:
    """What happened to one input: ``status`` (``ok``, ``no_face``, ``undecodable``, ``failed``) and why."""

    index: int  # position in the input sequence
    path: str  # the path as given (or a description of an in-memory image)
    status: str
    reason: str | None = None  # the one-line error for every status but ok
    embedding: np.ndarray | None = None  # [E] float32, L2-normalised, when ok
    bbox: list[float] | None = None  # x1, y1, x2, y2 of the face used (None: taken as aligned)
    score: float | None = None

    @property
    def ok(self) -> bool:
        """True when the file gave an embedding."""
        return self.status == OK

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready facts (without the embedding)."""
        return {"index": self.index, "path": self.path, "status": self.status, "reason": self.reason,
                "bbox": self.bbox, "score": self.score}  # fmt: skip


@dataclass
class FolderEmbeddings:
    """All outcomes in input order, and the embeddings of the ``ok`` ones stacked in that order."""

    outcomes: list[FileOutcome]
    embeddings: np.ndarray  # [n_ok, E] float32
    seconds: float = 0.0
    counts: dict[str, int] = field(default_factory=dict)

    @property
    def paths(self) -> list[str]:
        """Paths of the rows of :attr:`embeddings`."""
        return [o.path for o in self.outcomes if o.ok]

    @property
    def skipped(self) -> list[FileOutcome]:
        """The outcomes that gave no embedding."""
        return [o for o in self.outcomes if not o.ok]


def _describe(item: Any) -> str:
    if isinstance(item, (str, os.PathLike)):
        return os.fspath(item)
    if isinstance(item, (bytes, bytearray, memoryview)):
        return f"<{len(item)} bytes>"
    if isinstance(item, np.ndarray):
        return f"<array {'x'.join(map(str, item.shape))} {item.dtype}>"
    return f"<{type(item).__name__}>"


@dataclass
class _Prepared:
    """A worker's result for one input: the aligned crop, or why there is none."""

    index: int
    path: str
    crop: np.ndarray | None
    status: str = OK
    reason: str | None = None
    bbox: list[float] | None = None
    score: float | None = None


class _Fatal:
    """An error that is not about one file (sent by a worker; the caller re-raises it)."""

    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


_DONE = object()  # a worker found the input exhausted


class _Stage:
    """The worker threads: each pulls ``(index, item)`` from the shared iterator and prepares it."""

    def __init__(
        self,
        recognizer: FaceRecognizer,
        items: Iterator[tuple[int, Any]],
        n_workers: int,
        tokens: threading.Semaphore,
        color: str,
        aligned: bool | None,
        detector_factory: Callable[[], Detector] | None,
    ) -> None:
        self.cfg = recognizer.face_cfg
        self.size = tuple(int(v) for v in self.cfg.input_size)
        self.items = items
        self.items_lock = threading.Lock()
        self.tokens = tokens
        self.color = color
        self.aligned = aligned
        self.results: queue.SimpleQueue[Any] = queue.SimpleQueue()  # bounded by the tokens
        self.stop = threading.Event()
        spec = getattr(recognizer, "_detector_spec", None)
        self.shared_detector: Detector | None = None
        self.shared_lock = threading.Lock()
        self.factory = detector_factory
        if detector_factory is None and spec is not None and not isinstance(spec, (str, os.PathLike)):
            # A detector instance cannot be copied per worker: the workers take turns with it.
            self.shared_detector = spec
        self.spec = spec
        self.threads = [
            threading.Thread(target=self._run, name=f"faceforge-embed-{i}", daemon=True)
            for i in range(n_workers)
        ]

    def start(self) -> None:
        for t in self.threads:
            t.start()

    def close(self) -> None:
        """Stop the workers (they finish the file in hand) and wait for them."""
        self.stop.set()
        for t in self.threads:
            t.join()

    # ------------------------------------------------------------------ worker side
    def _is_aligned(self, rgb: np.ndarray) -> bool:
        # FaceRecognizer.embed's rule: an image at the model's input size (or a 112×112 ArcFace crop)
        # is taken as an aligned crop unless `aligned` says otherwise.
        if self.cfg.template == "none":
            return True  # a whole-image model never detects, even with aligned=False
        if self.aligned is not None:
            return bool(self.aligned)
        hw = tuple(rgb.shape[:2])
        return hw == self.size or (self.cfg.template == "arcface" and hw == _CANONICAL_ALIGNED)

    def _next(self) -> tuple[int, Any] | None:
        while not self.tokens.acquire(timeout=_POLL_S):
            if self.stop.is_set():
                return None
        if self.stop.is_set():
            self.tokens.release()
            return None
        try:
            with self.items_lock:
                item = next(self.items, None)
        except BaseException:
            self.tokens.release()
            raise
        if item is None:
            self.tokens.release()
        return item

    def _run(self) -> None:
        detector: list[Any] = []  # this worker's own detector and its name, built on first need
        try:
            while not self.stop.is_set():
                item = self._next()
                if item is None:
                    break
                self.results.put(self._prepare(item[0], item[1], detector))
        except BaseException as e:  # handed to the caller, who re-raises it
            self.results.put(_Fatal(e))
        finally:
            self.results.put(_DONE)

    def _detect(self, rgb: np.ndarray, detector: list[Any]) -> tuple[list[Any], str]:
        if self.shared_detector is not None:
            with self.shared_lock:
                return self.shared_detector.detect(rgb), getattr(self.shared_detector, "name", "given")
        if not detector:
            if self.spec is None and self.factory is None:
                raise FaceforgeError(
                    "this recognizer has no face detector (detector=None); pass aligned crops at the "
                    "model's input size, or build it with detector='auto' / 'yunet' / 'scrfd'"
                )
            # One construction at a time: YuNet's constructor flips OpenCV's process-wide log level
            # around the net's creation, which two threads at once would leave in the wrong state.
            with _BUILD_LOCK:
                if self.factory is not None:
                    det = self.factory()
                    detector += [det, getattr(det, "name", type(det).__name__)]
                else:
                    from faceforge.align.choose import resolve_detector

                    detector += list(resolve_detector(self.spec))
        return detector[0].detect(rgb), detector[1]

    def _prepare(self, index: int, item: Any, detector: list[Any]) -> _Prepared:
        where = _describe(item)
        try:
            rgb = load_image(item, self.color)
        except FaceforgeError as e:  # not an image, truncated, too many pixels, missing, unreadable
            return _Prepared(index, where, None, UNDECODABLE, str(e))
        if self._is_aligned(rgb):
            return _Prepared(index, where, crop_face(rgb, None, self.cfg))
        faces, name = self._detect(rgb, detector)  # a detector that cannot be built is fatal
        try:
            if not faces:
                h, w = rgb.shape[:2]
                raise NoFaceError(f"no face found in {where} ({w}x{h} px) by the {name} detector")
            face = max(faces, key=lambda f: f.area)
            crop = crop_face(rgb, face.landmarks, self.cfg)
        except NoFaceError as e:
            return _Prepared(index, where, None, NO_FACE, str(e))
        except FaceforgeError as e:
            return _Prepared(index, where, None, FAILED, str(e))
        bbox = [round(float(v), 2) for v in face.bbox]
        return _Prepared(index, where, crop, bbox=bbox, score=round(float(face.score), 4))


class _Progress:
    """A one-line, rate-limited progress report on stderr."""

    def __init__(self, enabled: bool, total: int | None) -> None:
        self.enabled = enabled
        self.total = total
        self.counts = dict.fromkeys(STATUSES, 0)
        self.start = time.perf_counter()
        self.last = 0.0

    def add(self, status: str) -> None:
        self.counts[status] += 1
        if self.enabled and time.perf_counter() - self.last >= 0.5:
            self.show()

    def show(self, end: str = "") -> None:
        self.last = time.perf_counter()
        done = sum(self.counts.values())
        rate = done / max(self.last - self.start, 1e-9)
        of = f"/{self.total}" if self.total is not None else ""
        parts = ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in self.counts.items() if v)
        sys.stderr.write(f"\rembedded {done}{of} ({parts}) {rate:.1f} img/s{end}")
        sys.stderr.flush()


def _enumerate_inputs(paths: Any) -> tuple[Iterator[tuple[int, Any]], int | None]:
    if isinstance(paths, (str, os.PathLike)):
        if Path(paths).is_dir():
            files = list_images(paths)
            if not files:
                raise FaceforgeError(
                    f"folder {paths} holds no image (expected files ending in {', '.join(IMAGE_EXTENSIONS)})"
                )
            return enumerate(files), len(files)
        return enumerate([paths]), 1
    total = len(paths) if hasattr(paths, "__len__") else None
    return enumerate(iter(paths)), total


def iter_embed_folder(
    recognizer: FaceRecognizer,
    paths: str | os.PathLike[str] | Iterable[ImageInput],
    *,
    workers: int = 2,
    batch_size: int = 32,
    queue_size: int | None = None,
    color: str = "RGB",
    aligned: bool | None = None,
    progress: bool | None = None,
    detector_factory: Callable[[], Detector] | None = None,
    model_workers: int | None = None,
) -> Iterator[FileOutcome]:
    """An iterator of one :class:`FileOutcome` per input, in input order (docs/inference.md).

    ``paths``: a folder (its images, recursively, sorted), or any iterable of paths / bytes / arrays
    (consumed lazily, so a generator over millions of files is fine). ``queue_size`` (default
    ``(model_workers + 1) * batch_size + 2 * workers``) bounds the files in flight. ``aligned`` forces
    or skips detection as in ``FaceRecognizer.embed``. ``detector_factory`` builds each worker's
    detector (default: ``resolve_detector`` of the recognizer's detector spec; a detector *instance* as
    the spec is shared, one call at a time). ``model_workers``: recognition batches in flight at once,
    each in its own thread (None: :func:`default_model_workers`, 2 on a CPU with 2+ cores, else 1); a
    compute-bound model (a convolution spends its time outside the interpreter lock) then has a core per
    batch. ``progress=None`` reports only when stderr is a terminal.
    Arguments are checked at once; the workers start with the first ``next()`` and stop when the
    iterator is exhausted, closed or garbage-collected.
    """
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise FaceforgeError(f"workers={workers!r}; expected an integer >= 1")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise FaceforgeError(f"batch_size={batch_size!r}; expected an integer >= 1")
    mw = default_model_workers(recognizer) if model_workers is None else model_workers
    if isinstance(mw, bool) or not isinstance(mw, int) or not 1 <= mw <= 16:
        raise FaceforgeError(f"model_workers={model_workers!r}; expected an integer in [1, 16]")
    # room for every batch in flight, one being filled, and what the workers hold
    qsize = (mw + 1) * batch_size + 2 * workers if queue_size is None else queue_size
    if isinstance(qsize, bool) or not isinstance(qsize, int) or qsize < 1:
        raise FaceforgeError(f"queue_size={queue_size!r}; expected an integer >= 1")
    if str(color).upper() not in ("RGB", "BGR"):
        raise FaceforgeError(f"color must be 'RGB' or 'BGR', got {color!r}")
    items, total = _enumerate_inputs(paths)
    show = sys.stderr.isatty() if progress is None else bool(progress)
    stage = _Stage(recognizer, items, workers, threading.Semaphore(qsize), color, aligned, detector_factory)
    return _run(recognizer, stage, batch_size, qsize, _Progress(show, total), mw)


def default_model_workers(recognizer: FaceRecognizer) -> int:
    """Recognition batches :func:`iter_embed_folder` runs at once by default: 2 for a model on a CPU
    with at least 2 cores (the dlib ResNet spends 17 ms per crop in convolutions, which run outside
    the interpreter lock, so a second batch uses the second core: docs/performance.md), else 1."""
    return 2 if on_multicore_cpu(getattr(recognizer.model, "run", None)) else 1


def _run(
    recognizer: FaceRecognizer,
    stage: _Stage,
    batch_size: int,
    qsize: int,
    report: _Progress,
    model_workers: int = 1,
) -> Iterator[FileOutcome]:
    """Start the workers on the first ``next()``, stop them when the caller is done (or stops early)."""
    stage.start()
    pool = ThreadPoolExecutor(model_workers, "faceforge-recognise") if model_workers > 1 else None
    try:
        yield from _collect(recognizer, stage, batch_size, qsize, report, pool, model_workers)
    finally:
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
        stage.close()
        if report.enabled:
            report.show(end="\n")


def _collect(
    recognizer: FaceRecognizer,
    stage: _Stage,
    batch_size: int,
    qsize: int,
    report: _Progress,
    pool: ThreadPoolExecutor | None = None,
    in_flight: int = 1,
) -> Iterator[FileOutcome]:
    """The calling thread's side: reorder, batch, embed (up to ``in_flight`` batches at once in
    ``pool``), hand out in input order; a token back per outcome taken."""
    seq: list[_Prepared] = []  # consecutive inputs from `next_index` on, waiting for their batch
    pending: dict[int, _Prepared] = {}  # arrived ahead of an earlier input
    flying: deque[tuple[list[_Prepared], Future | np.ndarray | None]] = deque()  # oldest first
    next_index = 0
    n_crops = 0
    finished = 0
    n_workers = len(stage.threads)

    def embed(batch: list[_Prepared]) -> np.ndarray | None:
        crops = [p.crop for p in batch if p.crop is not None]
        return recognizer.embed_crops(np.stack(crops)) if crops else None

    def hand_out() -> Iterator[FileOutcome]:
        batch, job = flying.popleft()
        emb = job.result() if isinstance(job, Future) else job
        k = 0
        for p in batch:
            out = FileOutcome(p.index, p.path, p.status, p.reason, bbox=p.bbox, score=p.score)
            if p.crop is not None:
                out.embedding = emb[k].copy()  # type: ignore[index]
                k += 1
            p.crop = None
            report.add(out.status)
            yield out
            stage.tokens.release()  # the caller is done with it: a worker may take one more file

    while finished < n_workers or seq or flying:
        if finished < n_workers:
            msg = stage.results.get()
            if msg is _DONE:
                finished += 1
            elif isinstance(msg, _Fatal):
                raise msg.exc
            else:
                pending[msg.index] = msg
            while next_index in pending:
                p = pending.pop(next_index)
                seq.append(p)
                n_crops += p.crop is not None
                next_index += 1
        # Embed when the batch is full, when the input is exhausted, or when every token is held
        # here (the workers cannot take another file until these are handed out).
        held = len(seq) + len(pending) + sum(len(b) for b, _ in flying)
        if seq and (n_crops >= batch_size or finished == n_workers or held >= qsize or not n_crops):
            batch, seq, n_crops = seq, [], 0
            flying.append((batch, pool.submit(embed, batch) if pool is not None else embed(batch)))
        # Hand out the oldest batch when its result is there, when as many batches are in flight as
        # may be, when every token is held here, or when nothing else can arrive.
        while flying and (
            not isinstance(job := flying[0][1], Future)
            or job.done()
            or len(flying) >= in_flight
            or held >= qsize
            or (finished == n_workers and not seq)
        ):
            held -= len(flying[0][0])
            yield from hand_out()


def embed_folder(
    recognizer: FaceRecognizer,
    paths: str | os.PathLike[str] | Iterable[ImageInput],
    *,
    workers: int = 2,
    batch_size: int = 32,
    queue_size: int | None = None,
    color: str = "RGB",
    aligned: bool | None = None,
    progress: bool | None = None,
    detector_factory: Callable[[], Detector] | None = None,
    model_workers: int | None = None,
) -> FolderEmbeddings:
    """Embed every image of ``paths`` with ``recognizer``: outcomes in input order + the ok embeddings.

    Same arguments as :func:`iter_embed_folder`; the embeddings equal ``recognizer.embed(path)`` file
    by file (batched recognition may differ in the last float bits).
    """
    start = time.perf_counter()
    outcomes: list[FileOutcome] = []
    rows: list[np.ndarray] = []
    for o in iter_embed_folder(
        recognizer, paths, workers=workers, batch_size=batch_size, queue_size=queue_size, color=color,
        aligned=aligned, progress=progress, detector_factory=detector_factory, model_workers=model_workers,
    ):  # fmt: skip
        if o.embedding is not None:
            rows.append(o.embedding)
        outcomes.append(o)
    dim = int(recognizer.face_cfg.embedding_size)
    emb = np.stack(rows).astype(np.float32, copy=False) if rows else np.zeros((0, dim), np.float32)
    counts = dict.fromkeys(STATUSES, 0)
    for o in outcomes:
        counts[o.status] += 1
    return FolderEmbeddings(outcomes, emb, time.perf_counter() - start, counts)


# ------------------------------------------------------------------------------------- labelled files


def collect_images(inputs: Iterable[str | os.PathLike[str]]) -> list[tuple[Path, str]]:
    """``(path, label)`` for every image under ``inputs`` (files, or folders searched recursively).

    Labels follow the folder layout: ``DIR/<label>/*.jpg`` gives each image its sub-folder's name, an
    image directly in ``DIR`` (or given as a file) its file stem.
    """
    names = [str(x) for x in inputs]
    out: list[tuple[Path, str]] = []
    for raw in names:
        p = Path(raw)
        if p.is_file():
            out.append((p, p.stem))
        elif p.is_dir():
            files = list_images(p)
            out += [(f, f.parent.name if f.parent != p else f.stem) for f in files]
        else:
            raise FaceforgeError(f"{p} does not exist (expected an image file or a folder of images)")
    if not out:
        raise FaceforgeError(
            f"no images found in {', '.join(names)} (extensions {', '.join(IMAGE_EXTENSIONS)})"
        )
    return out


def embed_labelled(
    recognizer: FaceRecognizer,
    files: list[tuple[Path, str]],
    *,
    workers: int = 2,
    batch_size: int = 32,
    progress: bool | None = None,
) -> tuple[np.ndarray, list[tuple[Path, str]], list[dict[str, Any]]]:
    """Embed ``(path, label)`` files through :func:`embed_folder` (pipelined, batched).

    Returns the embeddings of the files that gave one, those files (in input order) and
    ``{"file", "status", "reason"}`` for each file skipped (no face, not decodable, failed).
    """
    res = embed_folder(
        recognizer, [str(p) for p, _ in files], workers=workers, batch_size=batch_size, progress=progress
    )
    kept = [files[o.index] for o in res.outcomes if o.ok]
    skipped = [{"file": o.path, "status": o.status, "reason": o.reason} for o in res.skipped]
    return res.embeddings, kept, skipped


#: queries an .npz may hold (4M × 512 float32 = 8 GiB would not be a query file)
MAX_NPZ_QUERIES = 1_000_000


def load_embeddings_npz(path: str | os.PathLike[str], dim: int) -> tuple[np.ndarray, list[str]]:
    """``embeddings`` (and ``paths`` when present) of an .npz written by ``faceforge embed``.

    The file is hostile until checked: read with ``allow_pickle=False``, the array header is checked
    (2-D float, ``dim`` columns, at most :data:`MAX_NPZ_QUERIES` rows) before the data is loaded.
    """
    import zipfile

    p = Path(path)
    try:
        z = np.load(p, allow_pickle=False)
    except (OSError, ValueError, zipfile.BadZipFile) as e:
        raise FaceforgeError(f"cannot read {p} as an .npz of embeddings: {e}".splitlines()[0]) from None
    with z:
        if "embeddings" not in z.files:
            raise FaceforgeError(f"{p} has no 'embeddings' array (keys: {', '.join(z.files) or 'none'})")
        try:
            with z.zip.open("embeddings.npy") as fh:
                version = np.lib.format.read_magic(fh)
                read_header = (
                    np.lib.format.read_array_header_1_0
                    if version == (1, 0)
                    else np.lib.format.read_array_header_2_0
                )
                shape, _, dtype = read_header(fh)  # the header only: no data read yet
        except (OSError, ValueError, KeyError) as e:
            raise FaceforgeError(f"{p}: 'embeddings' is not a readable .npy array ({e})") from None
        if len(shape) != 2 or shape[1] != dim or dtype.kind != "f" or shape[0] > MAX_NPZ_QUERIES:
            raise FaceforgeError(
                f"{p}: 'embeddings' is {dtype} {list(shape)}; expected float [N, {dim}] with N <= "
                f"{MAX_NPZ_QUERIES:,} (embeddings of the gallery's model)"
            )
        emb = np.asarray(z["embeddings"], np.float32)
        paths = [str(x) for x in z["paths"]] if "paths" in z.files else []
    if len(paths) != len(emb):
        paths = [f"{p.name}[{i}]" for i in range(len(emb))]
    if not np.isfinite(emb).all():
        raise FaceforgeError(f"{p}: 'embeddings' holds NaN or Inf values")
    return emb, paths
