"""Image folder <-> insightface RecordIO: the worker pool behind ``faceforge data pack`` and ``unpack``.
:func:`pack_folder` reads an image folder in a pool of processes and writes ``.rec``/``.idx``/``property``
plus a ``.lst`` of ``key, label, relative path`` and a ``.classes`` file; unreadable images are skipped
and counted. :func:`unpack_rec` writes a ``.rec`` back into a folder, naming files from the ``.lst``.
Details: docs/data.md, "Packing".
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from faceforge.data.workers import fork_pool, opencv_single_threaded
from faceforge.errors import FaceforgeError
from faceforge.fileio import naming_errors, write_text
from faceforge.imageio import extension_for
from faceforge.progress import track

__all__ = ["PackResult", "pack_folder", "read_lst", "unpack_rec"]

log = logging.getLogger(__name__)


def _pack_load(job: tuple[int, str, bool, int, int]) -> tuple[int, bytes | None, tuple[int, int]]:
    """Worker: read (and verify / resize) one image; ``None`` bytes when unreadable."""
    import cv2

    label, path, verify, resize, quality = job
    try:
        data = Path(path).read_bytes()
    except OSError:
        return label, None, (0, 0)
    if not data:
        return label, None, (0, 0)
    if not verify and not resize:
        return label, data, (0, 0)
    im = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if im is None:
        return label, None, (0, 0)
    if resize:
        im = cv2.resize(im, (resize, resize), interpolation=cv2.INTER_AREA)
        data = cv2.imencode(".jpg", im, [cv2.IMWRITE_JPEG_QUALITY, quality])[1].tobytes()
    return label, data, (int(im.shape[0]), int(im.shape[1]))


def _pool_init() -> None:
    import cv2

    cv2.setNumThreads(1)


@dataclass
class PackResult:
    """What :func:`pack_folder` wrote: the ``.rec`` path, counts and the folder layout it found."""

    rec: Path
    num_images: int
    num_classes: int
    layout: str
    skipped: int


def pack_folder(
    src: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    layout: str = "auto",
    workers: int = 0,
    verify: bool = True,
    resize: int = 0,
    quality: int = 95,
    header: bool = True,
    progress: bool = False,
    on_skip: Callable[[Path], None] | None = None,
) -> PackResult:
    """Pack an image folder into insightface RecordIO at ``out`` (a ``.rec`` path, prefix or folder).

    ``workers`` 0 uses every core; ``on_skip(path)`` is called for each unreadable image (default:
    a log warning).
    """
    from faceforge.data.recordio import rec_paths, write_face_rec
    from faceforge.data.splits import scan_folder

    src = Path(src).expanduser()
    found, groups = scan_folder(src, layout)
    classes = list(groups)
    jobs = [
        (label, str(src / rel), verify, resize or 0, quality)
        for label, ident in enumerate(classes)
        for rel in groups[ident]
    ]
    rels = [rel for ident in classes for rel in groups[ident]]
    rec, _, _ = rec_paths(out)
    if Path(out).suffix not in (".rec", ".idx") and not Path(out).is_dir() and Path(out).exists():
        raise FaceforgeError(f"pack: output {out} exists and is not a folder or .rec path")
    rec.parent.mkdir(parents=True, exist_ok=True)
    n_workers = max(1, os.cpu_count() or 1) if workers <= 0 else workers
    skipped = 0
    sizes: Counter[tuple[int, int]] = Counter()
    lst: list[tuple[int, int, str]] = []
    base = 1 if header else 0

    def items(results: Any) -> Any:
        nonlocal skipped
        for (label, data, size), rel in zip(results, rels):
            if data is None:
                skipped += 1
                if on_skip is None:
                    log.warning("skipped unreadable image %s", src / rel)
                else:
                    on_skip(src / rel)
                continue
            sizes[size] += 1
            lst.append((base + len(lst), label, rel))
            yield label, data

    if n_workers == 1:
        with opencv_single_threaded():  # the caller's OpenCV threads come back after
            results = track(map(_pack_load, jobs), len(jobs), "pack", enabled=progress)
            info = write_face_rec(rec, items(results), header=header, num_classes=len(classes))
    else:
        with fork_pool(n_workers, _pool_init) as pool:
            results = track(pool.imap(_pack_load, jobs, chunksize=16), len(jobs), "pack", enabled=progress)
            info = write_face_rec(rec, items(results), header=header, num_classes=len(classes))
    if sizes and (0, 0) not in sizes:
        (h, w), _ = sizes.most_common(1)[0]
        write_text(info["property"], f"{len(classes)},{h},{w}\n")
    with naming_errors(rec.with_suffix(".lst")), open(rec.with_suffix(".lst"), "w", encoding="utf-8") as fh:
        fh.writelines(f"{key}\t{label}\t{rel}\n" for key, label, rel in lst)
    write_text(rec.with_suffix(".classes"), "\n".join(classes) + "\n")
    return PackResult(rec, int(info["num_images"]), len(classes), found, skipped)


def read_lst(path: Path) -> dict[int, str]:
    """``{record key: relative path}`` of a ``.lst`` (``{}`` when absent); a bad line is an error."""
    out: dict[int, str] = {}
    if not path.is_file():
        return out
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split("\t")
        if len(parts) < 3 or not parts[0].strip().isdigit():
            raise FaceforgeError(f"{path}:{lineno}: expected 'index<TAB>label<TAB>path', got {line!r}")
        out[int(parts[0])] = parts[-1]
    return out


def unpack_rec(
    rec_path: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    allow_outside_root: bool = False,
    progress: bool = False,
) -> tuple[Path, int, int]:
    """Unpack a ``.rec`` into the folder ``out``; returns (folder, images written, records skipped)."""
    from faceforge.data.recordio import FaceRecordDataset, rec_paths
    from faceforge.fileio import check_inside, write_bytes

    ds = FaceRecordDataset(rec_path)
    rec, _, _ = rec_paths(rec_path)
    names = read_lst(rec.with_suffix(".lst"))
    classes_file = rec.with_suffix(".classes")
    classes = classes_file.read_text(encoding="utf-8").split() if classes_file.is_file() else []
    dst = Path(out).expanduser()
    dst.mkdir(parents=True, exist_ok=True)
    written = skipped = 0
    for i in track(range(len(ds)), len(ds), "unpack", enabled=progress):
        key = int(ds.keys[i])
        try:
            label, data = ds.read_raw(i)
        except (ValueError, KeyError, OSError):
            skipped += 1
            continue
        rel = names.get(key)
        if rel is None or os.path.isabs(rel) or ".." in Path(rel).parts:
            cname = classes[label] if 0 <= label < len(classes) else str(label)
            rel = f"{cname}/{key:08d}{extension_for(data)}"
        dest = dst / rel
        # symlinks already in OUT must not lead a name of the .lst outside it
        check_inside(dest, dst, f"{rec.with_suffix('.lst')} (record {key})", allow_outside_root)
        dest.parent.mkdir(parents=True, exist_ok=True)
        write_bytes(dest, data)
        written += 1
    return dst, written, skipped + ds.num_truncated
