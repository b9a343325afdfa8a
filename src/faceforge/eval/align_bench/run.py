"""The run of the alignment benchmark: :func:`bench_align` reads the pairs, runs each detector's worker
(in its own subprocess), aligns and embeds the crops with the recogniser, scores the pairs, caches each
detector's results in ``out/cache`` and hands the rows to the report; :func:`pair_warnings` and
:func:`subset_folds` are the pair-list checks and the ``--folds`` subset.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from faceforge.data.pairs import Pairs, read_pairs
from faceforge.errors import FaceforgeError
from faceforge.eval.align_bench.recognizers import _EMBED_BATCH, Recognizer, _crops_for, build_recognizer
from faceforge.eval.align_bench.report import sample_indices, save_aligned, write_outputs, write_sample_sheet
from faceforge.eval.align_bench.worker import (
    SELECT_MODES,
    DetectorStep,
    NativeStep,
    fallback_landmarks,
    run_worker,
)
from faceforge.eval.metrics import evaluate_pairs

NATIVE_ROW = "dlib-native"
#: fewer genuine or impostor pairs than this give AUC / EER too coarse to compare detectors by
MIN_STABLE_PAIRS = 300
#: seconds between progress lines inside a long stage
PROGRESS_EVERY_S = 30.0
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
    """Run the alignment benchmark (docs/align.md, bench-align); returns one row dict per detector.

    ``native`` adds the ``dlib-native`` baseline row (default: when the recogniser is ``"dlib"``).
    ``subprocess=False`` runs the detectors in this process (no per-detector peak RSS: the row then
    reports this process's high-water mark). ``log`` gets the progress lines, ``warn`` the
    :func:`pair_warnings` (default: ``log``). ``batch_size`` images per ``detect_batch`` call,
    ``workers`` image-decoding threads, ``device`` (``auto|cpu|cuda``) for the detectors that take
    it; ``samples`` writes ``aligned_samples.png`` into ``out``; ``save_aligned_to`` writes every
    aligned crop per detector into ``<folder>/<detector>/``.
    """
    from faceforge.align.detectors.base import check_device
    from faceforge.eval import align_bench as _pkg

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
            if name == NATIVE_ROW:  # dlib's own loop: one image per call, read in the loop
                args: tuple[Any, ...] = (NativeStep(), paths, select, warmup, 1, 0)
            else:
                args = (DetectorStep(name, kwargs, device), paths, select, warmup, batch_size, workers)
            # looked up on the package at call time: tests replace align_bench._in_subprocess
            d = _pkg._in_subprocess(run_worker, *args) if subprocess else run_worker(*args)
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
