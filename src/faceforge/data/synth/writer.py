"""Write SynthFaces to disk as an ImageFolder with landmarks and held-out verification pairs:
:func:`write_dataset` writes ``train/``, ``val/`` and ``test/`` identity folders (LFW naming),
``landmarks.csv``, LFW View-2 ``val_pairs.txt``/``test_pairs.txt`` and ``synthfaces.json``, and refuses a
folder written with other parameters unless ``overwrite=True``. Details: docs/synthfaces.md, "On disk"
and "Writer".
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from faceforge.data.pairs import make_pairs, write_lfw_pairs
from faceforge.data.synth.render import SynthFaces
from faceforge.data.workers import fork_pool, opencv_single_threaded
from faceforge.errors import FaceforgeError
from faceforge.fileio import write_bytes, write_text
from faceforge.progress import progress_bar

SPLITS = ("train", "val", "test")
#: fewest val/test identities that give 10 identity-disjoint folds with impostor pairs in each
MIN_PAIR_IDENTITIES = 20
#: the mixed training images of identity mixup (``mixup_identities``) and their soft labels
MIX_DIR, MIX_CSV = "train_mix", "train_mix.csv"
#: what a SynthFaces run writes into ``out`` (``overwrite`` removes exactly these)
WRITTEN = (*SPLITS, "landmarks.csv", "val_pairs.txt", "test_pairs.txt", "synthfaces.json", MIX_DIR, MIX_CSV)
_PARTIAL = ".synthfaces-partial.json"
_WORKER: dict[str, Any] = {}


def identity_name(i: int) -> str:
    """Folder name of identity ``i``."""
    return f"id{i:05d}"


def _init_worker(
    seed: int, mode: str, version: int = 1, appearance_share: int = 1, landmark_jitter: float | None = None
) -> None:
    cv2.setNumThreads(1)
    _WORKER["synth"] = SynthFaces(
        seed=seed,
        mode=mode,
        version=version,
        appearance_share=appearance_share,
        landmark_jitter=landmark_jitter,
    )


def _encode_jpeg(img: np.ndarray, quality: int, what: str) -> bytes:
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(img, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise RuntimeError(f"JPEG encoding failed for {what}")
    return buf.tobytes()


def _render_mix(task: tuple[str, int, int, int]) -> tuple[list[str], str]:
    """Mixed identity ``mix``: its images under ``train_mix/`` (landmark rows) and its CSV row."""
    out, mix, count, identities = task
    v2 = _WORKER["synth"]._v2
    a, b, phi = v2.mixup(mix, identities)
    rows = []
    for k in range(count):
        img, lms = v2.mixed_image(mix, k, identities)
        q = int(np.random.default_rng([v2.seed, mix, k, 37]).integers(55, 96))
        rel = f"{MIX_DIR}/mix{mix:05d}_{k + 1:04d}.jpg"
        write_bytes(Path(out) / rel, _encode_jpeg(img, q, rel))
        rows.append(rel + "," + ",".join(f"{v:.3f}" for v in lms.reshape(-1)))
    return rows, f"mix{mix:05d},{identity_name(a)},{identity_name(b)},{phi!r}"


def _render_task(task: tuple[Any, ...]) -> tuple[list[str], str | None]:
    """One identity's images (landmark rows), or one mixed identity's and its CSV row."""
    if task[-1] == "mix":
        return _render_mix(task[:-1])
    return _render_identity(task), None


def _render_identity(task: tuple[str, int, int, str]) -> list[str]:
    out, ident, count, split = task
    synth: SynthFaces = _WORKER["synth"]
    name = identity_name(ident)
    folder = Path(out) / split / name
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for k in range(count):
        img, lms = synth.image(ident, k)
        # JPEG quality is one more per-image nuisance, drawn from the same seeded stream.
        q = int(np.random.default_rng([synth.seed, ident, k, 31]).integers(55, 96))
        ok, buf = cv2.imencode(".jpg", cv2.cvtColor(img, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, q])
        if not ok:
            raise RuntimeError(f"JPEG encoding failed for {name} image {k}")
        rel = f"{split}/{name}/{name}_{k + 1:04d}.jpg"
        write_bytes(Path(out) / rel, buf.tobytes())
        rows.append(rel + "," + ",".join(f"{v:.3f}" for v in lms.reshape(-1)))
    return rows


def write_dataset(
    out: str | os.PathLike[str],
    identities: int = 300,
    images_per_id: int = 40,
    val_identities: int = 50,
    test_identities: int = 100,
    mode: str = "aligned",
    seed: int = 0,
    workers: int = 0,
    test_pairs_per_fold: int = 300,
    val_pairs_per_fold: int = 100,
    progress: bool | None = None,
    overwrite: bool = False,
    version: int = 1,
    appearance_share: int = 1,
    mixup_identities: int = 0,
    tail_identities: int = 0,
    tail_images_per_id: int = 5,
    landmark_jitter: float | None = None,
) -> dict[str, Any]:
    """Render SynthFaces into ``out`` (layout: docs/synthfaces.md, "Writer") and return its summary dict.

    Re-running with the same arguments into a complete folder does nothing (the summary file is
    written last, so an interrupted run is redone). A non-empty ``out`` written otherwise is an
    error unless ``overwrite`` (docs/synthfaces.md, "Writer"). ``progress``: a bar on stderr (default:
    only when stderr is a terminal). ``version``: 1 (the original cartoon faces) or 2 (3-D heads,
    :mod:`faceforge.data.synth.render_v2`; aligned mode only). ``appearance_share`` (v2): groups
    of this many consecutive identities share skin, hair, eyes and accessories (1: none share).
    ``mixup_identities`` (v2): this many mixed training identities (SynFace's identity mixup: two
    training identities interpolated with weight phi in [0.5, 1)), ``images_per_id`` images each, in
    ``train_mix/`` with their soft labels in ``train_mix.csv`` (``name,a,b,phi``); training reads them
    with ``data.mixup: train_mix.csv``. ``tail_identities``: this many more training identities with
    ``tail_images_per_id`` images each (DigiFace-1M's mix of a head of many-image identities and a
    long tail of few-image ones; Bae et al., WACV 2023), numbered after the held-out ones so the head,
    validation and test identities are those of the same call without a tail. ``landmark_jitter``
    (v2): σ of the noise on the points each crop is aligned by, in inter-ocular distances (``None``:
    the renderer's default, exact points since ``REVISION`` 7).
    """
    out = Path(out)
    params = {
        "identities": identities,
        "images_per_id": images_per_id,
        "val_identities": val_identities,
        "test_identities": test_identities,
        "mode": mode,
        "seed": seed,
        "test_pairs_per_fold": test_pairs_per_fold,
        "val_pairs_per_fold": val_pairs_per_fold,
        "format": 1,
    }
    if version != 1:  # v1 summaries stay as they were, so earlier v1 folders are still recognised
        from faceforge.data.synth.render_v2 import REVISION

        params["version"] = version
        params["renderer"] = REVISION  # a set from an earlier v2 renderer is not this one's
    if appearance_share != 1:  # only written when used, so earlier v2 folders are still recognised
        params["appearance_share"] = appearance_share
    if mixup_identities:  # only written when used, so earlier folders are still recognised
        params["mixup_identities"] = mixup_identities
    if tail_identities:  # only written when used, so earlier folders are still recognised
        params["tail_identities"] = tail_identities
        params["tail_images_per_id"] = tail_images_per_id
    if landmark_jitter is not None:  # only written when set, so earlier folders are still recognised
        params["landmark_jitter"] = landmark_jitter
    if version not in (1, 2):
        raise FaceforgeError(f"synth: version must be 1 or 2, got {version!r}")
    if landmark_jitter is not None and (version != 2 or not 0 <= landmark_jitter <= 0.5):
        raise FaceforgeError(
            f"synth: landmark_jitter applies to version 2 only and must lie in [0, 0.5] inter-ocular "
            f"distances; got {landmark_jitter!r} with version {version}"
        )
    if mixup_identities < 0 or (mixup_identities and (version != 2 or identities < 2)):
        raise FaceforgeError(
            f"synth: mixup_identities must be >= 0, and above 0 only with version 2 and at least 2 "
            f"training identities; got {mixup_identities!r} (version {version}, {identities} identities)"
        )
    if appearance_share < 1 or (appearance_share > 1 and version != 2):
        raise FaceforgeError(
            f"synth: appearance_share must be >= 1, and above 1 only with version 2; got "
            f"{appearance_share!r} with version {version}"
        )
    if tail_identities < 0 or (tail_identities and tail_images_per_id < 2):
        raise FaceforgeError(
            f"synth: need tail_identities >= 0 and, with a tail, tail_images_per_id >= 2 (a class needs "
            f"two images); got {tail_identities!r} and {tail_images_per_id!r}"
        )
    if version == 2 and mode != "aligned":
        raise FaceforgeError("synth: version 2 renders aligned crops only (--mode aligned)")
    meta_path = out / "synthfaces.json"
    old = _read_json(meta_path)
    if old.get("params") == params and not overwrite:
        return old
    if identities < 1 or images_per_id < 2:
        raise FaceforgeError(
            f"synth: need identities >= 1 and images_per_id >= 2, got {identities} and {images_per_id}"
        )
    for key, n in (("val_identities", val_identities), ("test_identities", test_identities)):
        if n < 0 or 0 < n < MIN_PAIR_IDENTITIES:
            flag = "--" + key.replace("_", "-")
            raise FaceforgeError(
                f"synth: {key}={n} ({flag}) is too few for the 10 identity-disjoint pair folds: "
                f"expected 0 (no {key.split('_')[0]}_pairs.txt) or at least {MIN_PAIR_IDENTITIES}"
            )
    _claim(out, params, old, overwrite)
    counts = {"train": identities, "val": val_identities, "test": test_identities}
    tasks: list[tuple[Any, ...]] = []
    start = 0
    split_names: dict[str, list[str]] = {}
    for split in SPLITS:
        ids = range(start, start + counts[split])
        split_names[split] = [identity_name(i) for i in ids]
        tasks += [(str(out), i, images_per_id, split) for i in ids]
        start += counts[split]
    # The tail after every split, so adding one leaves the identities of the head, val and test as they were.
    tail = range(start, start + tail_identities)
    split_names["train"] += [identity_name(i) for i in tail]
    tasks += [(str(out), i, tail_images_per_id, "train") for i in tail]
    tasks += [(str(out), m, images_per_id, identities, "mix") for m in range(mixup_identities)]
    out.mkdir(parents=True, exist_ok=True)
    if mixup_identities:
        (out / MIX_DIR).mkdir(exist_ok=True)
    workers = workers or os.cpu_count() or 1
    rows: list[str] = []
    mix_rows: list[str] = []
    bar = progress_bar(len(tasks), "SynthFaces identities", unit="id", enabled=progress)
    with contextlib.ExitStack() as stack:
        if workers == 1:
            stack.enter_context(opencv_single_threaded())  # the caller's OpenCV threads come back after
            _init_worker(seed, mode, version, appearance_share, landmark_jitter)
            done: Any = map(_render_task, tasks)
        else:
            init = (seed, mode, version, appearance_share, landmark_jitter)
            pool = stack.enter_context(fork_pool(workers, _init_worker, init))
            done = pool.imap(_render_task, tasks, chunksize=4)
        for r, mix_row in done:
            rows += r
            if mix_row is not None:
                mix_rows.append(mix_row)
            bar.update(1)
    if mixup_identities:
        tmp_csv = out / (MIX_CSV + ".tmp")
        write_text(tmp_csv, "name,a,b,phi\n" + "\n".join(mix_rows) + "\n")
        os.replace(tmp_csv, out / MIX_CSV)
    bar.close()
    write_text(out / "landmarks.csv", "path,x1,y1,x2,y2,x3,y3,x4,y4,x5,y5\n" + "\n".join(rows) + "\n")
    for split, per_fold in (("val", val_pairs_per_fold), ("test", test_pairs_per_fold)):
        if counts[split] >= 20:
            # Small sets cannot fill the requested pairs: cap at the distinct genuine pairs of a fold.
            cap = (counts[split] // 10) * images_per_id * (images_per_id - 1) // 2
            groups = {n: list(range(1, images_per_id + 1)) for n in split_names[split]}
            folds = make_pairs(groups, 10, min(per_fold, cap), seed=seed + (split == "test"))
            write_lfw_pairs(out / f"{split}_pairs.txt", folds)
    splits = {s: len(split_names[s]) for s in SPLITS}
    summary = {"params": params, "images": len(rows), "splits": splits}
    if tail_identities:
        summary["tail_identities"] = tail_identities
    if mixup_identities:
        summary["mixup_identities"] = mixup_identities
    tmp = meta_path.with_suffix(".tmp")
    write_text(tmp, json.dumps(summary, indent=2))
    os.replace(tmp, meta_path)
    (out / _PARTIAL).unlink(missing_ok=True)
    return summary


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _implied(params: dict[str, Any], key: str) -> Any:
    """What a summary without ``key`` means: version 1, no sharing, and for v2 the renderer of the
    sets written before the revision was recorded (1)."""
    if key == "renderer":
        return 1 if params.get("version") == 2 else None
    return {"version": 1, "appearance_share": 1, "mixup_identities": 0, "tail_identities": 0}.get(key)


def _claim(
    out: Path,
    params: dict[str, Any],
    old: dict[str, Any],
    overwrite: bool,
    written: tuple[str, ...] = WRITTEN,
    what: str = "SynthFaces",
) -> None:
    """Make ``out`` ours for ``params``: refuse a folder another run (or anything else) wrote.

    ``written``: the names a run of this kind may leave in ``out`` (``overwrite`` removes only those);
    ``what``: the kind's name in messages (SynthObjects shares this logic).
    """
    if out.exists() and not out.is_dir():
        raise FaceforgeError(f"synth: --out {out} is a file; expected a folder (new or empty)")
    entries = sorted(p.name for p in out.iterdir()) if out.is_dir() else []
    partial = _read_json(out / _PARTIAL)
    resumable = partial.get("params") == params and not old  # the same run, interrupted
    if entries and not resumable:
        foreign = [e for e in entries if e not in written and e != _PARTIAL and not e.endswith(".tmp")]
        if not overwrite:
            prev = old.get("params") or partial.get("params")
            if prev:
                keys = list(params) + [k for k in prev if k not in params]
                was = {k: prev.get(k, _implied(prev, k)) for k in keys}
                now = {k: params.get(k, _implied(params, k)) for k in keys}
                if was.get("version") != now.get("version"):  # another generator: its revision is moot
                    keys = [k for k in keys if k != "renderer"]
                diff = ", ".join(f"{k} {was[k]!r} -> {now[k]!r}" for k in keys if was[k] != now[k])
                why = f"holds a {what} set made with other parameters ({diff})"
            else:
                why = f"is not empty and was not written by `faceforge data synth` (it holds {entries[0]!r})"
            raise FaceforgeError(
                f"synth: --out {out} {why}; pass --overwrite to replace it whole, or choose another --out"
            )
        if foreign:
            raise FaceforgeError(
                f"synth: --out {out} holds files {what} did not write ({', '.join(foreign[:3])}); "
                f"--overwrite only replaces a {what} folder: empty it yourself or choose another --out"
            )
        for name in entries:
            p = out / name
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p)
            else:
                p.unlink()
    out.mkdir(parents=True, exist_ok=True)
    write_text(out / _PARTIAL, json.dumps({"params": params}))
