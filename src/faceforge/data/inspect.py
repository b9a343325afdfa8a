"""``faceforge data inspect``: counts, images-per-class histogram and image sizes of a data set.
:func:`inspect_path` summarises an image folder, a RecordIO set or an insightface ``.bin`` (decoding a
random sample of images for their sizes and counting the ones that do not decode);
:func:`format_inspect` is its text report.
"""

from __future__ import annotations

import os
import statistics
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["HIST_BINS", "format_inspect", "histogram", "inspect_path"]

#: images-per-class histogram bins (inclusive ranges)
HIST_BINS = ((1, 1), (2, 2), (3, 5), (6, 10), (11, 20), (21, 50), (51, 100), (101, 10**12))


def histogram(counts: Sequence[int]) -> list[tuple[str, int]]:
    """``(bin label, classes)`` rows of an images-per-class histogram."""
    rows = []
    for lo, hi in HIST_BINS:
        n = sum(1 for c in counts if lo <= c <= hi)
        label = str(lo) if lo == hi else (f">{lo - 1}" if hi >= 10**12 else f"{lo}-{hi}")
        rows.append((label, n))
    return rows


def inspect_path(path: str | os.PathLike[str], sample: int = 200, seed: int = 0) -> dict[str, Any]:
    """Summary dict of an image folder, a RecordIO set or a ``.bin`` file."""
    import cv2

    from faceforge.data.recordio import FaceRecordDataset, rec_paths

    p = Path(path).expanduser()
    rng = np.random.default_rng(seed)
    sizes: Counter[tuple[int, int]] = Counter()
    corrupt = 0

    def _size(data: bytes | None) -> None:
        nonlocal corrupt
        im = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR) if data else None
        if im is None:
            corrupt += 1
        else:
            sizes[(int(im.shape[0]), int(im.shape[1]))] += 1

    if p.suffix == ".bin":
        from faceforge.data.binset import read_bin

        bs = read_bin(p)
        for i in rng.permutation(len(bs.images))[:sample]:
            _size(bs.images[int(i)])
        info: dict[str, Any] = {
            "kind": "bin",
            "pairs": len(bs),
            "genuine": int(bs.issame.sum()),
            "images": len(bs.images),
        }
        per_class: list[int] = []
    elif p.suffix in (".rec", ".idx") or rec_paths(p)[0].is_file():
        ds = FaceRecordDataset(p)
        per_class = np.bincount(ds.labels[ds.labels >= 0]).tolist() if len(ds) else []
        for i in rng.permutation(len(ds))[:sample]:
            try:
                _size(ds.read_raw(int(i))[1])
            except (ValueError, KeyError, OSError):
                corrupt += 1
        info = {
            "kind": "recordio",
            "images": len(ds),
            "classes": ds.num_classes,
            "property": list(ds.property) if ds.property else None,
            "truncated_records": ds.num_truncated,
        }
    else:
        from faceforge.data.splits import scan_folder

        layout, groups = scan_folder(p)
        per_class = [len(v) for v in groups.values()]
        files = [p / rel for v in groups.values() for rel in v]
        for i in rng.permutation(len(files))[:sample]:
            try:
                _size(files[int(i)].read_bytes())
            except OSError:
                corrupt += 1
        info = {"kind": f"folder ({layout})", "images": len(files), "classes": len(groups)}
    if per_class:
        info["images_per_class"] = {
            "min": min(per_class),
            "median": float(statistics.median(per_class)),
            "mean": round(float(np.mean(per_class)), 2),
            "max": max(per_class),
            "histogram": histogram(per_class),
        }
    info["sampled"] = int(sum(sizes.values()) + corrupt)
    info["sizes"] = [[f"{h}x{w}", n] for (h, w), n in sizes.most_common(5)]
    info["corrupt_in_sample"] = corrupt
    return info


def format_inspect(info: dict[str, Any], path: str) -> str:
    """The text report of :func:`inspect_path`'s summary of ``path``."""
    lines = [f"{path}: {info['kind']}"]
    for key in ("images", "classes", "pairs", "genuine", "truncated_records"):
        if key in info:
            lines.append(f"  {key}: {info[key]}")
    ipc = info.get("images_per_class")
    if ipc:
        lines.append(
            f"  images per class: min {ipc['min']}, median {ipc['median']}, "
            f"mean {ipc['mean']}, max {ipc['max']}"
        )
        top = max(n for _, n in ipc["histogram"]) or 1
        for label, n in ipc["histogram"]:
            lines.append(f"    {label:>7} {n:8d} {'#' * round(40 * n / top)}")
    sizes = ", ".join(f"{s} ({n})" for s, n in info["sizes"]) or "-"
    lines.append(f"  sizes in a sample of {info['sampled']}: {sizes}; corrupt: {info['corrupt_in_sample']}")
    return "\n".join(lines)
