"""Alignment benchmark: the same recogniser on the crops of several detectors, side by side.

For a verification pair list (LFW View-2 ``pairs.txt`` or any format of
:func:`faceforge.data.pairs.read_pairs`) and each detector:

1. **Detection** (in a fresh subprocess per detector, one thread): every distinct image is read with
   :func:`faceforge.align.io.read_image` (EXIF orientation applied) and ``detect`` is timed (the call
   only, not the decoding; the first ``warmup`` images are run once more before timing). The face
   kept is the one whose box centre is nearest the image centre (``select="center"``, LFW centres the
   named person; ``"largest"`` and ``"score"`` are the alternatives).
2. **Success rate** = images with at least one face / all images.
3. **Failed images** (no face, or unreadable) are handled the documented way: an image with no face
   is aligned with the *fallback landmarks* — the mean landmark position of this detector's successful
   detections, relative to the image size (a centre crop at the typical face scale); if the detector
   found nothing at all, the template placed in the central 45 % of the image. An image that cannot
   be read becomes a black crop. Every pair is still scored (the standard protocol), and each such
   image is a per-file outcome in ``outcomes.jsonl`` and the Markdown report.
4. **Recognition**: each image is warped with the recogniser's template and size
   (:func:`faceforge.align.similarity_matrix`), embedded, and the pairs are scored with
   :func:`faceforge.eval.metrics.evaluate_pairs` (10-fold accuracy, AUC, EER).

Batches and threads: with ``batch_size`` > 1 each call is :meth:`~faceforge.align.Detector.detect_batch`
on that many images (a real batch for the ONNX detectors whose graphs allow one, else a loop; the
faces are the same as one at a time) and every image is charged the call's time divided by its size,
so img/s compares directly with batch 1. ``workers`` threads decode the images ahead of the
detector (and of the crop warping). ``device`` (``auto|cpu|cuda``) goes to every detector that takes
it (the onnxruntime and YuNet ones); each row records its batch size and device.

Samples: ``aligned_samples.png`` shows the same :data:`SAMPLE_IDENTITIES` identities (the first image
of the first 8 identities in the list) aligned by each detector, one row per detector (the
``dlib-native`` row has no landmarks and is left out); ``save_aligned_to`` writes every crop.

Memory: **peak RSS** is the detection subprocess's ``ru_maxrss`` high-water mark (Python, imports, the
model and the detection loop; the recogniser is not loaded there), in MiB; ``rss_over_start_mib`` is
that peak minus the resident size just before the detector was built (what the detector and its
loop add; imports that peaked earlier are not counted).
**GPU memory** is ``torch.cuda.max_memory_allocated`` in that process when a CUDA device is present,
else "n/a" (all the detectors here run on the CPU).

Baseline row ``dlib-native``: dlib end to end (HOG detector, 5-point shape predictor, dlib's own
chip, ResNet) in its own subprocess; failures use the mean successful box the same way. It needs
the ``dlib`` recogniser to be meaningful and is added when ``native=True``.

Warnings (:func:`pair_warnings`): the accuracy uses 10 contiguous folds of the pair list, as in LFW
View-2; a fold holding only genuine or only impostor pairs (a list sorted by label, or too short)
makes its threshold and the ± meaningless, and fewer than :data:`MIN_STABLE_PAIRS` genuine or
impostor pairs make AUC and EER coarse (one pair moves them by 1/N; 100 pairs can print AUC 1.0000
and EER 0). Both are said before the run (``warn``) and written into ``results.md`` / ``.json``.

Progress (``log``): one line when each stage starts and ends (detection, embedding) with counts and
elapsed seconds, and a line every :data:`PROGRESS_EVERY_S` seconds during embedding.

Outputs in ``out``: ``results.csv``, ``results.md``, ``results.json``, ``align_bench.png`` (the six
metrics: success rate, time, peak RSS, accuracy, AUC, EER), ``aligned_samples.png`` and
``outcomes.jsonl``; per-detector
``cache/<name>.npz`` (landmarks, times, embeddings) lets a re-run with the same pairs and recogniser
skip finished detectors.
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
import multiprocessing as mp
import os
import resource
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from faceforge.data.pairs import Pairs, read_pairs
from faceforge.errors import FaceforgeError
from faceforge.eval.metrics import evaluate_pairs

__all__ = [
    "MIN_STABLE_PAIRS",
    "NATIVE_ROW",
    "Recognizer",
    "bench_align",
    "build_recognizer",
    "fallback_landmarks",
    "pair_warnings",
    "select_face",
    "subset_folds",
]

NATIVE_ROW = "dlib-native"
SELECT_MODES = ("center", "largest", "score")
_EMBED_BATCH = 32
#: the template fills the central 45 % of the image when a detector found no face at all.
_DEFAULT_FACE_FRACTION = 0.45
#: fewer genuine or impostor pairs than this give AUC / EER too coarse to compare detectors by
MIN_STABLE_PAIRS = 300
#: seconds between progress lines inside a long stage
PROGRESS_EVERY_S = 30.0
#: identities (columns) of the sample sheet aligned_samples.png
SAMPLE_IDENTITIES = 8
_N_FOLDS = 10


def pair_warnings(issame: np.ndarray, n_folds: int = _N_FOLDS) -> list[str]:
    """What makes the metrics of this pair list unreliable (empty when nothing does).

    Folds are contiguous blocks of the list (the first ``n % n_folds`` one pair longer), as
    :func:`faceforge.eval.metrics.evaluate_pairs` makes them.
    """
    same = np.asarray(issame, bool)
    n = len(same)
    out = []
    if n >= n_folds:
        folds = np.array_split(same, n_folds)
        single = [k + 1 for k, f in enumerate(folds) if f.all() or not f.any()]
        if single:
            out.append(
                f"{len(single)} of the {n_folds} accuracy folds hold only genuine or only impostor pairs "
                f"(folds {', '.join(map(str, single))}); their thresholds and the accuracy's ± are "
                "meaningless: use a pair list whose folds mix both (LFW pairs.txt, faceforge data make-pairs)"
            )
    n_gen = int(same.sum())
    n_imp = n - n_gen
    if min(n_gen, n_imp) < MIN_STABLE_PAIRS:
        out.append(
            f"only {n_gen} genuine and {n_imp} impostor pairs: one pair moves AUC / EER by up to "
            f"1/{max(1, min(n_gen, n_imp))}, too coarse to rank detectors (at least {MIN_STABLE_PAIRS} of "
            "each, e.g. LFW's 6,000 pairs or --folds 1 for 600)"
        )
    return out


# ------------------------------------------------------------------------------------------ recognisers


@dataclass
class Recognizer:
    """What the benchmark needs of a recogniser: its template, crop size and a batch embed function.

    ``embed(crops)`` takes uint8 RGB crops ``[N, H, W, 3]`` aligned with ``template`` at ``size``
    (``(width, height)``) and returns float32 ``[N, E]``.
    """

    name: str
    template: str
    size: tuple[int, int]
    embed: Callable[[np.ndarray], np.ndarray]
    spec: dict[str, Any] = field(default_factory=dict)


def _torch_embed(backbone: Any, face_cfg: Any, flip: bool = True) -> Callable[[np.ndarray], np.ndarray]:
    import torch

    from faceforge.models.face_cfg import preprocess

    backbone.eval()

    @torch.no_grad()
    def embed(crops: np.ndarray) -> np.ndarray:
        t = torch.from_numpy(np.ascontiguousarray(crops)).permute(0, 3, 1, 2)
        e = backbone(preprocess(t, face_cfg)).float()
        if flip:  # insightface's flip-test fusion, as faceforge eval does
            e = e + backbone(preprocess(t.flip(-1), face_cfg)).float()
        return e.numpy().astype(np.float32)

    return embed


def build_recognizer(name_or_ckpt: str, weights: str | None = None) -> Recognizer:
    """``"dlib"`` (dlib's ResNet), a faceforge ``.ckpt`` path, or a backbone name with ``weights``.

    The template and crop size come from the model's :class:`~faceforge.models.face_cfg.FaceConfig`:
    the alignment follows the model.
    """
    spec = {"recognizer": name_or_ckpt, "weights": weights}
    if name_or_ckpt == "dlib":
        from faceforge.models.dlib_resnet import DlibResNet

        model = DlibResNet(weights)
        cfg = model.face_cfg
        return Recognizer("dlib", cfg.template, (cfg.input_size[1], cfg.input_size[0]), model.embed, spec)
    p = Path(name_or_ckpt)
    if p.suffix == ".ckpt" or p.is_file():
        from faceforge.models.checkpoint import load_checkpoint

        loaded = load_checkpoint(p)
        cfg = loaded.face_cfg
        return Recognizer(
            p.name,
            cfg.template,
            (cfg.input_size[1], cfg.input_size[0]),
            _torch_embed(loaded.backbone, cfg),
            spec,
        )
    from faceforge.models.backbones.registry import create_model
    from faceforge.models.backbones.weights import load_backbone_weights

    if not weights:
        raise FaceforgeError(
            f"recogniser {name_or_ckpt!r} is a backbone name, which needs --weights FILE "
            "(or pass 'dlib' or a faceforge .ckpt)"
        )
    model = create_model(name_or_ckpt)
    load_backbone_weights(model, weights)
    cfg = model.face_cfg
    return Recognizer(
        name_or_ckpt, cfg.template, (cfg.input_size[1], cfg.input_size[0]), _torch_embed(model, cfg), spec
    )


# ------------------------------------------------------------------------------------------ detection


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
    """Landmarks ``[5, 2]`` for an image where detection failed (see the module docstring).

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


def _create_detector(name: str, kwargs: dict[str, Any], device: str | None = None) -> Any:
    """The detector with one thread and ``device`` where the backend takes them (onnxruntime, LiteRT)."""
    from faceforge.align.detectors.base import create_detector_loose

    optional: dict[str, Any] = {} if "threads" in kwargs else {"threads": 1}
    if device is not None and "device" not in kwargs:
        optional["device"] = device
    kw = dict(kwargs)
    model_path = kw.pop("model_path", None)
    return create_detector_loose(name, model_path, optional, **kw)


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
    """Subprocess body: detect on every image; returns plain arrays (landmarks, times, outcomes).

    ``batch_size`` images go into one :meth:`~faceforge.align.Detector.detect_batch` call, and each
    image is charged the call's time / its size; ``workers`` threads decode images ahead.
    """
    _set_single_thread()
    rss_start = _current_rss_mib()
    det = _create_detector(name, kwargs, device)
    n = len(paths)
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
                det.detect_batch(rgbs) if batch_size > 1 else det.detect(rgbs[0])
                warm += len(rgbs)
            t = time.perf_counter()
            found_faces = det.detect_batch(rgbs) if batch_size > 1 else [det.detect(rgbs[0])]
            dt = (time.perf_counter() - t) / len(rgbs)
            per_image: list[list[Any] | Exception] = list(found_faces)
        except Exception:  # find the image that breaks the batch: one at a time, each timed
            per_image, dts = [], []
            for rgb in rgbs:
                t = time.perf_counter()
                try:
                    per_image.append(det.detect(rgb))
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
                continue
            lm[i] = select_face(faces, w, h, select).landmarks
            found[i] = True
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
    }


def _native_worker(paths: list[str], select: str, warmup: int) -> dict[str, Any]:
    """Subprocess body of the dlib-native row: HOG + 5-point shape + dlib chip + ResNet."""
    from faceforge.align.detectors.base import Face
    from faceforge.align.io import read_image
    from faceforge.models.dlib_resnet import DlibNativePipeline

    _set_single_thread()
    rss_start = _current_rss_mib()
    pipe = DlibNativePipeline()
    n = len(paths)
    boxes = np.zeros((n, 4), np.float32)
    sizes = np.zeros((n, 2), np.int64)
    found = np.zeros(n, bool)
    readable = np.zeros(n, bool)
    times = np.full(n, np.nan)
    n_faces = np.zeros(n, np.int64)
    outcomes: dict[int, str] = {}
    images: dict[int, np.ndarray] = {}
    emb = np.zeros((n, 128), np.float32)
    warm = 0
    for i, p in enumerate(paths):
        try:
            rgb = read_image(p)
        except FaceforgeError as e:
            outcomes[i] = f"unreadable: {e}"
            continue
        readable[i] = True
        h, w = rgb.shape[:2]
        sizes[i] = (w, h)
        if warm < warmup:
            pipe.detect(rgb)
            warm += 1
        t = time.perf_counter()
        dets = pipe.detect(rgb)
        times[i] = time.perf_counter() - t
        n_faces[i] = len(dets)
        if not dets:
            outcomes[i] = f"no face found ({w}x{h} image): fallback crop"
            images[i] = rgb
            continue
        faces = [Face(bbox=b, score=s, landmarks=np.zeros((5, 2))) for b, s in dets]
        boxes[i] = select_face(faces, w, h, select).bbox
        found[i] = True
        emb[i] = pipe.embed(rgb, boxes[i])
    if found.any():
        rel = (boxes[found].reshape(-1, 2, 2) / sizes[found][:, None, :]).mean(0).reshape(4)
    else:
        rel = np.array([0.275, 0.275, 0.725, 0.725])
    for i, rgb in images.items():
        h, w = rgb.shape[:2]
        emb[i] = pipe.embed(rgb, rel * [w, h, w, h])
    return {
        "landmarks": np.zeros((n, 5, 2), np.float32),
        "sizes": sizes,
        "found": found,
        "readable": readable,
        "times": times,
        "n_faces": n_faces,
        "outcomes": outcomes,
        "peak_rss_mib": _peak_rss_mib(),
        "start_rss_mib": rss_start,
        "gpu_mib": _gpu_peak_mib(),
        "embeddings": emb,
    }


def _in_subprocess(fn: Callable[..., dict[str, Any]], *args: Any) -> dict[str, Any]:
    """Run ``fn(*args)`` in a fresh spawned process (its own RSS high-water mark)."""
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(1, mp_context=mp.get_context("spawn")) as ex:
        return ex.submit(fn, *args).result()


# ------------------------------------------------------------------------------------------ embedding


def _crops_for(
    paths: list[str],
    idx: Sequence[int],
    lm: np.ndarray,
    readable: np.ndarray,
    rec: Recognizer,
    workers: int = 0,
) -> np.ndarray:
    from faceforge.align import similarity_matrix, warp

    w, h = rec.size
    out = np.zeros((len(idx), h, w, 3), np.uint8)
    todo = [(k, i) for k, i in enumerate(idx) if readable[i]]
    # an unreadable image stays a black crop: the pair is still scored, as in the standard protocol
    for (k, i), rgb in zip(todo, _prefetch([paths[i] for _, i in todo], workers)):
        if isinstance(rgb, FaceforgeError):
            continue
        out[k] = warp(rgb, similarity_matrix(lm[i], rec.template, rec.size), rec.size)
    return out


def _embed_all(
    paths: list[str],
    lm: np.ndarray,
    readable: np.ndarray,
    rec: Recognizer,
    progress: Callable[[int], None] | None,
    workers: int = 0,
) -> np.ndarray:
    chunks = []
    for s in range(0, len(paths), _EMBED_BATCH):
        idx = range(s, min(s + _EMBED_BATCH, len(paths)))
        crops = _crops_for(paths, idx, lm, readable, rec, workers)
        chunks.append(np.asarray(rec.embed(crops), np.float32))
        if progress is not None:
            progress(idx.stop)
    return np.concatenate(chunks) if chunks else np.zeros((0, 1), np.float32)


def _aligned_landmarks(d: dict[str, Any], tmpl: np.ndarray) -> np.ndarray:
    """The landmarks each image is aligned with: the detection, or the fallback where none was found."""
    lm = d["landmarks"].copy()
    ok = d["found"]
    for i in np.flatnonzero(~ok & d["readable"]):
        w, h = (int(v) for v in d["sizes"][i])
        lm[i] = fallback_landmarks(d["landmarks"][ok], d["sizes"][ok], w, h, tmpl)
    return lm


def sample_indices(paths: Sequence[str], k: int = SAMPLE_IDENTITIES) -> list[int]:
    """Indices of ``k`` images of different identities: the first image of each of the first ``k``
    identities (parent folder name, LFW's layout) in list order; more images of seen identities
    fill up when there are fewer than ``k``."""
    seen: set[str] = set()
    first: list[int] = []
    for i, p in enumerate(paths):
        who = Path(p).parent.name or Path(p).stem
        if who not in seen:
            seen.add(who)
            first.append(i)
            if len(first) == k:
                return first
    rest = [i for i in range(len(paths)) if i not in set(first)]
    return first + rest[: k - len(first)]


def write_sample_sheet(
    rows: Sequence[tuple[str, np.ndarray]], labels: Sequence[str], path: str | os.PathLike[str]
) -> Path:
    """A PNG: one row per detector (name at the left), its aligned crops ``[k, H, W, 3]`` side by side.

    ``labels`` (one per column, e.g. identities) go above the columns.
    """
    import cv2

    if not rows:
        raise FaceforgeError("no detector rows for the sample sheet")
    k, ch, cw = rows[0][1].shape[:3]
    left, top, gap = 170, 22, 4
    height = top + len(rows) * (ch + gap)
    width = left + k * (cw + gap)
    sheet = np.full((height, width, 3), 255, np.uint8)
    font = cv2.FONT_HERSHEY_SIMPLEX
    for j, lab in enumerate(labels[:k]):
        text = lab if len(lab) <= 18 else lab[:16] + ".."
        text = text.encode("ascii", "replace").decode()  # cv2's Hershey fonts draw ASCII only
        cv2.putText(sheet, text, (left + j * (cw + gap), top - 7), font, 0.33, (60, 60, 60), 1, cv2.LINE_AA)
    for r, (name, crops) in enumerate(rows):
        y = top + r * (ch + gap)
        cv2.putText(sheet, name[:20], (6, y + ch // 2 + 5), font, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
        for j in range(min(k, len(crops))):
            x = left + j * (cw + gap)
            sheet[y : y + ch, x : x + cw] = crops[j]
    from PIL import Image

    p = Path(path)
    Image.fromarray(sheet).save(p)
    return p


def save_aligned(
    paths: list[str],
    lm: np.ndarray,
    readable: np.ndarray,
    rec: Recognizer,
    folder: Path,
    workers: int = 0,
) -> int:
    """Write every readable image's aligned crop as ``folder/<path relative to the images' common
    folder>.jpg`` (written to a temp name, then renamed); returns the number written."""
    import cv2

    base = Path(os.path.commonpath([str(Path(p).parent) for p in paths])) if paths else Path(".")
    written = 0
    for s in range(0, len(paths), _EMBED_BATCH):
        idx = [i for i in range(s, min(s + _EMBED_BATCH, len(paths))) if readable[i]]
        crops = _crops_for(paths, idx, lm, readable, rec, workers)
        for i, crop in zip(idx, crops):
            try:
                rel = Path(paths[i]).relative_to(base)
            except ValueError:
                rel = Path(Path(paths[i]).name)
            dst = (folder / rel).with_suffix(".jpg")
            dst.parent.mkdir(parents=True, exist_ok=True)
            tmp = dst.with_name(dst.name + ".tmp.jpg")
            cv2.imwrite(str(tmp), crop[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, 95])
            os.replace(tmp, dst)
            written += 1
    return written


def _every(say: Callable[[str], None], seconds: float, prefix: str, total: int) -> Callable[[int], None]:
    """A progress callback ``done -> None``: ``prefix done/total (elapsed)`` at most every ``seconds``."""
    t0 = time.perf_counter()
    last = [t0]

    def tick(done: int) -> None:
        now = time.perf_counter()
        if now - last[0] >= seconds:
            last[0] = now
            say(f"{prefix} {done}/{total} ({now - t0:.0f} s)")

    return tick


# ------------------------------------------------------------------------------------------ the run


def subset_folds(pairs: Pairs, folds: int | None) -> Pairs:
    """The pairs of the first ``folds`` folds (``None``: all); fold 1 of LFW View-2 = 600 pairs."""
    if folds is None or folds >= pairs.n_folds:
        return pairs
    if folds < 1:
        raise FaceforgeError(f"folds={folds}: expected at least 1")
    m = pairs.folds < folds
    keep = np.flatnonzero(m)
    return Pairs(
        [pairs.paths_a[i] for i in keep], [pairs.paths_b[i] for i in keep], pairs.issame[m], pairs.folds[m]
    )


def _cache_key(
    paths: list[str],
    rec: Recognizer,
    name: str,
    kwargs: dict[str, Any],
    select: str,
    timing: dict[str, Any] | None = None,
) -> str:
    """Key of a detector's cached results; ``timing`` (batch size, device when not the defaults) is in it
    because the cached times depend on it, though the faces do not."""
    h = hashlib.sha256()
    parts: list[Any] = [paths, rec.spec, rec.template, list(rec.size), name, kwargs, select]
    if timing:
        parts.append(timing)
    h.update(json.dumps(parts, default=str).encode())
    return h.hexdigest()[:16]


def _load_cache(path: Path, key: str) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            if str(z["key"]) != key:
                return None
            d = {k: z[k] for k in z.files if k not in ("key", "outcomes_json", "scalars_json")}
            d["outcomes"] = {int(k): v for k, v in json.loads(str(z["outcomes_json"])).items()}
            d.update(json.loads(str(z["scalars_json"])))
            return d
    except (OSError, ValueError, KeyError):
        return None


def _save_cache(path: Path, key: str, d: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = {k: v for k, v in d.items() if isinstance(v, np.ndarray)}
    scalars = {k: v for k, v in d.items() if not isinstance(v, (np.ndarray, dict))}
    tmp = path.with_name(path.stem + ".tmp.npz")
    np.savez(
        tmp,
        key=np.array(key),
        outcomes_json=np.array(json.dumps({str(k): v for k, v in d["outcomes"].items()})),
        scalars_json=np.array(json.dumps(scalars)),
        **arrays,
    )
    os.replace(tmp, path)


def _row(
    name: str,
    d: dict[str, Any],
    metrics: dict[str, Any],
    n_images: int,
    batch_size: int = 1,
    device: str = "auto",
) -> dict[str, Any]:
    t = d["times"][np.isfinite(d["times"])] * 1000.0
    return {
        "detector": name,
        "images": n_images,
        "detected": int(d["found"].sum()),
        "success_rate": float(d["found"].sum()) / max(n_images, 1),
        "unreadable": int((~d["readable"]).sum()),
        "time_median_ms": float(np.median(t)) if t.size else math.nan,
        "time_p95_ms": float(np.percentile(t, 95)) if t.size else math.nan,
        "img_per_s": float(1000.0 / t.mean()) if t.size else math.nan,
        "peak_rss_mib": float(d["peak_rss_mib"]),
        "rss_over_start_mib": float(d["peak_rss_mib"]) - float(d["start_rss_mib"]),
        "gpu_mib": d.get("gpu_mib"),
        "accuracy": metrics["accuracy"],
        "accuracy_std": metrics["accuracy_std"],
        "auc": metrics["auc"],
        "eer": metrics["eer"],
        "threshold_cos": metrics["threshold_cos"],
        "batch_size": 1 if name == NATIVE_ROW else int(batch_size),
        "device": "cpu" if name == NATIVE_ROW else device,
    }


def bench_align(
    pairs: str | os.PathLike[str] | Pairs,
    detectors: Sequence[str],
    recognizer: str | Recognizer = "dlib",
    *,
    root: str | os.PathLike[str] | None = None,
    out: str | os.PathLike[str] | None = None,
    folds: int | None = None,
    weights: str | None = None,
    native: bool | None = None,
    select: str = "center",
    detector_kwargs: dict[str, dict[str, Any]] | None = None,
    warmup: int = 3,
    subprocess: bool = True,
    use_cache: bool = True,
    log: Callable[[str], None] | None = None,
    warn: Callable[[str], None] | None = None,
    batch_size: int = 1,
    workers: int = 0,
    device: str = "auto",
    samples: bool = True,
    save_aligned_to: str | os.PathLike[str] | None = None,
) -> list[dict[str, Any]]:
    """Run the alignment benchmark (see the module docstring); returns one row dict per detector.

    ``native`` adds the ``dlib-native`` baseline row (default: when the recogniser is ``"dlib"``).
    ``subprocess=False`` runs the detectors in this process (no per-detector peak RSS: the row then
    reports this process's high-water mark). ``log`` gets the progress lines, ``warn`` the
    :func:`pair_warnings` (default: ``log``). ``batch_size`` images per ``detect_batch`` call,
    ``workers`` image-decoding threads, ``device`` (``auto|cpu|cuda``) for the detectors that take
    it; ``samples`` writes ``aligned_samples.png`` into ``out``; ``save_aligned_to`` writes every
    aligned crop per detector into ``<folder>/<detector>/``.
    """
    from faceforge.align.detectors.base import check_device

    if select not in SELECT_MODES:
        raise FaceforgeError(f"select={select!r}: expected one of {', '.join(SELECT_MODES)}")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise FaceforgeError(f"batch_size={batch_size!r}: expected a positive integer")
    if not isinstance(workers, int) or workers < 0:
        raise FaceforgeError(
            f"workers={workers!r}: expected 0 (decode in the detection loop) or more threads"
        )
    check_device(device, "bench-align")
    if not detectors and not native:
        raise FaceforgeError("no detectors given (e.g. --detectors yunet,scrfd)")
    say = log or (lambda s: None)
    pr = pairs if isinstance(pairs, Pairs) else read_pairs(pairs, root=root)
    pr = subset_folds(pr, folds)
    warnings = pair_warnings(pr.issame)
    for w in warnings:
        (warn or say)(w)
    rec = recognizer if isinstance(recognizer, Recognizer) else build_recognizer(recognizer, weights)
    if native is None:
        native = rec.name == "dlib"
    paths = pr.unique_paths()
    where = {p: i for i, p in enumerate(paths)}
    ia = np.array([where[p] for p in pr.paths_a])
    ib = np.array([where[p] for p in pr.paths_b])
    out_dir = Path(out) if out is not None else None
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
    from faceforge.align.templates import get_template

    tmpl = get_template(rec.template, rec.size)
    kw_all = detector_kwargs or {}
    names = list(detectors) + ([NATIVE_ROW] if native else [])
    say(
        f"{len(pr)} pairs, {len(paths)} images, recogniser {rec.name} "
        f"({rec.template} {rec.size[0]}x{rec.size[1]})"
    )
    rows, all_outcomes = [], []
    sample_idx = sample_indices(paths)
    sheet: list[tuple[str, np.ndarray]] = []
    timing = {k: v for k, v in (("batch_size", batch_size), ("device", device)) if v not in (1, "auto")}
    for name in names:
        kwargs = dict(kw_all.get(name, {}))
        key = _cache_key(paths, rec, name, kwargs, select, None if name == NATIVE_ROW else timing)
        cache_path = out_dir / "cache" / f"{name}.npz" if out_dir is not None else None
        d = _load_cache(cache_path, key) if (cache_path is not None and use_cache) else None
        t0 = time.perf_counter()
        lm: np.ndarray | None = None
        if d is None:
            what = "detecting + embedding (dlib end to end)" if name == NATIVE_ROW else "detecting faces in"
            batch_note = f" (batches of {batch_size})" if batch_size > 1 and name != NATIVE_ROW else ""
            say(f"{name}: {what} {len(paths)} images{batch_note} ...")
            if name == NATIVE_ROW:
                args: tuple[Any, ...] = (paths, select, warmup)
                fn: Callable[..., dict[str, Any]] = _native_worker
            else:
                args = (name, kwargs, paths, select, warmup, batch_size, workers, device)
                fn = _detect_worker
            d = _in_subprocess(fn, *args) if subprocess else fn(*args)
            say(f"{name}: detected {int(d['found'].sum())}/{len(paths)} in {time.perf_counter() - t0:.0f} s")
            if "embeddings" not in d:
                lm = _aligned_landmarks(d, tmpl)
                t1 = time.perf_counter()
                say(f"{name}: embedding {len(paths)} crops with {rec.name} ...")
                tick = _every(say, PROGRESS_EVERY_S, f"{name}: embedded crops", len(paths))
                d["embeddings"] = _embed_all(paths, lm, d["readable"], rec, tick, workers)
                say(f"{name}: embedded {len(paths)} crops in {time.perf_counter() - t1:.0f} s")
            if cache_path is not None:
                _save_cache(cache_path, key, d)
        else:
            say(f"{name}: from cache {cache_path}")
        if name != NATIVE_ROW:  # dlib-native has no landmarks (dlib cuts its own chip)
            lm = _aligned_landmarks(d, tmpl) if lm is None else lm
            if samples and out_dir is not None:
                sheet.append((name, _crops_for(paths, sample_idx, lm, d["readable"], rec, workers)))
            if save_aligned_to is not None:
                folder = Path(save_aligned_to) / name
                n_saved = save_aligned(paths, lm, d["readable"], rec, folder, workers)
                say(f"{name}: wrote {n_saved} aligned crops to {folder}")
        emb = d["embeddings"]
        metrics = evaluate_pairs(emb[ia], emb[ib], pr.issame, n_folds=10)
        row = _row(name, d, metrics, len(paths), batch_size, device)
        rows.append(row)
        for i, reason in sorted(d["outcomes"].items()):
            all_outcomes.append({"detector": name, "file": paths[i], "outcome": reason})
        say(
            f"{name}: success {row['success_rate']:.2%}, median {row['time_median_ms']:.1f} ms, "
            f"{row['img_per_s']:.1f} img/s, accuracy {row['accuracy']:.2%}, AUC {row['auc']:.4f}, "
            f"EER {row['eer']:.2%}"
        )
    if sheet and out_dir is not None:
        labels = [Path(paths[i]).parent.name or Path(paths[i]).stem for i in sample_idx]
        write_sample_sheet(sheet, labels, out_dir / "aligned_samples.png")
    if out_dir is not None:
        meta = {
            "pairs": len(pr),
            "images": len(paths),
            "recognizer": rec.name,
            "template": rec.template,
            "size": list(rec.size),
            "select": select,
            "warnings": warnings,
            "batch_size": batch_size,
            "workers": workers,
            "device": device,
        }
        write_outputs(rows, all_outcomes, out_dir, meta)
    return rows


# ------------------------------------------------------------------------------------------ reports

_CSV_COLS = [
    "detector", "images", "detected", "success_rate", "unreadable", "time_median_ms", "time_p95_ms",
    "img_per_s", "peak_rss_mib", "rss_over_start_mib", "gpu_mib", "accuracy", "accuracy_std", "auc",
    "eer", "threshold_cos", "batch_size", "device",
]  # fmt: skip


def _fmt_gpu(v: Any) -> str:
    return "n/a" if v is None else f"{float(v):.0f}"


def to_markdown(
    rows: Sequence[dict[str, Any]], outcomes: Sequence[dict[str, Any]] = (), max_outcomes: int = 20
) -> str:
    """The benchmark table (and per-file outcomes) as Markdown."""
    lines = [
        "| detector | detected | success | median ms | p95 ms | img/s | peak RSS MiB | GPU MiB "
        "| accuracy (%) | AUC | EER (%) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['detector']} | {r['detected']}/{r['images']} | {r['success_rate']:.2%} | "
            f"{r['time_median_ms']:.1f} | {r['time_p95_ms']:.1f} | {r['img_per_s']:.1f} | "
            f"{r['peak_rss_mib']:.0f} | {_fmt_gpu(r['gpu_mib'])} | "
            f"{100 * r['accuracy']:.2f} ± {100 * r['accuracy_std']:.2f} | "
            f"{r['auc']:.4f} | {100 * r['eer']:.2f} |"
        )
    if outcomes:
        lines += [
            "",
            f"Per-file outcomes ({len(outcomes)} in outcomes.jsonl; first {max_outcomes} per detector):",
            "",
        ]
        seen: dict[str, int] = {}
        for o in outcomes:
            seen[o["detector"]] = seen.get(o["detector"], 0) + 1
            if seen[o["detector"]] <= max_outcomes:
                lines.append(f"- {o['detector']}: `{o['file']}`: {o['outcome']}")
    return "\n".join(lines) + "\n"


def plot_metrics(rows: Sequence[dict[str, Any]], path: str | os.PathLike[str]) -> Path:
    """One PNG, six bar charts: success rate, median time (p95 as a tick), peak RSS, accuracy, AUC, EER."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [r["detector"] for r in rows]
    panels = [
        ("detection success (%)", [100 * r["success_rate"] for r in rows]),
        ("time per image (ms, median; p95 ▲)", [r["time_median_ms"] for r in rows]),
        ("peak RSS (MiB)", [r["peak_rss_mib"] for r in rows]),
        ("10-fold accuracy (%)", [100 * r["accuracy"] for r in rows]),
        ("ROC AUC", [r["auc"] for r in rows]),
        ("EER (%)", [100 * r["eer"] for r in rows]),
    ]
    fig, axes = plt.subplots(2, 3, figsize=(13, 6.5))
    x = np.arange(len(rows))
    for ax, (title, vals) in zip(axes.ravel(), panels):
        ax.bar(x, vals, color="#4477aa")
        if title.startswith("time"):
            ax.plot(x, [r["time_p95_ms"] for r in rows], "^", color="#cc3311")
        ax.set_title(title, fontsize=10)
        ax.set_xticks(x, names, rotation=35, ha="right", fontsize=8)
        finite = [v for v in vals if np.isfinite(v)]
        if finite and title.split()[0] in ("detection", "10-fold", "ROC"):
            lo = min(finite)
            ax.set_ylim(max(0.0, lo - (max(finite) - lo) * 0.5 - (0.5 if "AUC" not in title else 0.005)),
                        max(finite) + (0.2 if "AUC" not in title else 0.002))  # fmt: skip
        for xi, v in zip(x, vals):
            if np.isfinite(v):
                ax.annotate(f"{v:.4g}", (xi, v), ha="center", va="bottom", fontsize=7)
    fig.suptitle("faceforge bench-align", fontsize=11)
    fig.tight_layout()
    p = Path(path)
    fig.savefig(p, dpi=110)
    plt.close(fig)
    return p


def write_outputs(
    rows: Sequence[dict[str, Any]], outcomes: Sequence[dict[str, Any]], out: Path, meta: dict[str, Any]
) -> None:
    """Write results.csv / .md / .json, outcomes.jsonl and align_bench.png into ``out``.

    (``aligned_samples.png`` is written by :func:`bench_align`, which has the crops.)
    """
    with open(out / "results.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=_CSV_COLS)
        w.writeheader()
        for r in rows:
            w.writerow({k: ("n/a" if k == "gpu_mib" and r[k] is None else r[k]) for k in _CSV_COLS})
    head = (
        f"# bench-align\n\n{meta['pairs']} pairs, {meta['images']} images; recogniser {meta['recognizer']} "
        f"({meta['template']} template, {meta['size'][0]}x{meta['size'][1]}); face kept: {meta['select']}; "
        f"detection batch size {meta.get('batch_size', 1)}, device {meta.get('device', 'auto')}; "
        "failed detections use the fallback crop (see faceforge.eval.align_bench).\n\n"
    )
    head += "".join(f"**Warning:** {w}\n\n" for w in meta.get("warnings", []))
    (out / "results.md").write_text(head + to_markdown(rows, outcomes))
    (out / "results.json").write_text(json.dumps({"meta": meta, "rows": list(rows)}, indent=2, default=float))
    with open(out / "outcomes.jsonl", "w") as f:
        for o in outcomes:
            f.write(json.dumps(o) + "\n")
    plot_metrics(rows, out / "align_bench.png")
