"""Identity-grouped train/val/test splits of a face image folder.

Two layouts are understood (``layout=`` ``auto`` picks by looking at ``root``):

* ``flat`` -- every image directly in ``root``, named ``{ID}_{seq}.{ext}`` (``ID`` may itself contain
  underscores; ``seq`` is the trailing number), e.g. ``0042_0003.jpg`` or ``Abel_Pacheco_0001.jpg``.
* ``folder`` -- torchvision ``ImageFolder`` style: ``root/{ID}/*.{ext}``.

Splitting is by identity: every image of an ID goes to the same split, so no person is in two splits.
IDs are shuffled with ``seed`` and walked in that order; an ID goes to the split whose share of the
image count its middle image falls in, so each split's image count is within one ID group of
``ratio * total``. ``min_image_size`` drops a whole ID when any of its images is smaller (shorter
side, read from the image header) and unreadable images are dropped and counted.

The result is written once to a JSON file (``version``, ``params``, ``root``, ``layout``, ``splits``:
``{train|val|test: {ID: [relative paths]}}``, ``dropped``, ``num_corrupt``) and re-read on later runs
with the same parameters, so a split never changes under a run.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from faceforge.errors import FaceforgeError, did_you_mean

__all__ = ["IMAGE_EXTS", "SPLIT_NAMES", "Split", "make_split", "parse_flat_name", "scan_folder"]

IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
SPLIT_NAMES = ("train", "val", "test")
_FLAT_RE = re.compile(r"^(?P<id>.+)_(?P<seq>\d+)$")
_VERSION = 1


def _is_image(p: Path) -> bool:
    return p.suffix.lower() in IMAGE_EXTS and not p.name.startswith(".")


def parse_flat_name(name: str) -> tuple[str, int]:
    """``"{ID}_{seq}.jpg" -> (ID, seq)``; raise :class:`FaceforgeError` for other names."""
    stem, _ = os.path.splitext(name)
    m = _FLAT_RE.match(stem)
    if not m:
        raise FaceforgeError(
            f"image file name {name!r} does not match '{{ID}}_{{seq}}.jpg' (e.g. '0042_0003.jpg')"
        )
    return m["id"], int(m["seq"])


def scan_folder(root: str | os.PathLike[str], layout: str = "auto") -> tuple[str, dict[str, list[str]]]:
    """Find the images of every identity under ``root``.

    Returns ``(layout, {ID: sorted paths relative to root})`` with IDs sorted.

    Raises:
        FaceforgeError: ``root`` missing, no images, both layouts mixed, or a flat name that does not
            match ``{ID}_{seq}.ext``.
    """
    r = Path(root).expanduser()
    if layout not in ("auto", "flat", "folder"):
        raise FaceforgeError(f"layout={layout!r} is not one of auto, flat, folder")
    if not r.is_dir():
        raise FaceforgeError(f"image folder {r} does not exist or is not a folder")
    entries = sorted(os.scandir(r), key=lambda e: e.name)
    top_images = [e.name for e in entries if e.is_file() and _is_image(Path(e.name))]
    dirs = [e.name for e in entries if e.is_dir() and not e.name.startswith(".")]
    if layout == "auto":
        if top_images and dirs and any(_dir_has_images(r / d) for d in dirs):
            raise FaceforgeError(
                f"{r} holds both images ({top_images[0]!r}, ...) and identity folders ({dirs[0]!r}, ...); "
                "pass layout='flat' or layout='folder'"
            )
        layout = "flat" if top_images else "folder"
    groups: dict[str, list[str]] = {}
    if layout == "flat":
        for name in top_images:
            ident, _ = parse_flat_name(name)
            groups.setdefault(ident, []).append(name)
    else:
        for d in dirs:
            files = sorted(
                os.path.relpath(os.path.join(dp, f), r)
                for dp, _, fs in os.walk(r / d)
                for f in fs
                if _is_image(Path(f))
            )
            if files:
                groups[d] = files
    if not groups:
        raise FaceforgeError(f"no images ({', '.join(IMAGE_EXTS)}) found in {r} (layout {layout})")
    return layout, {k: sorted(v) for k, v in sorted(groups.items())}


def _dir_has_images(d: Path) -> bool:
    return any(_is_image(Path(f)) for _, _, fs in os.walk(d) for f in fs)


@dataclass
class Split:
    """An identity-grouped split; ``splits[name][ID]`` lists paths relative to ``root``."""

    root: str
    layout: str
    params: dict[str, Any]
    splits: dict[str, dict[str, list[str]]]
    dropped: dict[str, str] = field(default_factory=dict)
    num_corrupt: int = 0

    def ids(self, name: str) -> list[str]:
        """Sorted IDs of split ``name`` (their class labels are their positions)."""
        self._check(name)
        return sorted(self.splits[name])

    def samples(self, name: str) -> list[tuple[str, int]]:
        """``(absolute path, label)`` for split ``name``; labels are 0.. over its sorted IDs."""
        return [
            (os.path.join(self.root, rel), label)
            for label, ident in enumerate(self.ids(name))
            for rel in self.splits[name][ident]
        ]

    def num_images(self, name: str) -> int:
        """Number of images in split ``name``."""
        self._check(name)
        return sum(len(v) for v in self.splits[name].values())

    def _check(self, name: str) -> None:
        if name not in self.splits:
            raise FaceforgeError(
                f"split {name!r} is not one of {', '.join(self.splits)}{did_you_mean(name, self.splits)}"
            )

    def to_json(self) -> dict[str, Any]:
        """The JSON document written to the split file."""
        return {
            "version": _VERSION,
            "root": self.root,
            "layout": self.layout,
            "params": self.params,
            "splits": self.splits,
            "dropped": self.dropped,
            "num_corrupt": self.num_corrupt,
        }

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Split:
        """Read a split file written by :func:`make_split`."""
        p = Path(path)
        try:
            doc = json.loads(p.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as e:
            raise FaceforgeError(f"cannot read split file {p}: {e}") from None
        for key in ("version", "root", "layout", "params", "splits"):
            if key not in doc:
                raise FaceforgeError(f"split file {p} lacks key {key!r}; was it written by faceforge?")
        if doc["version"] != _VERSION:
            raise FaceforgeError(
                f"split file {p}: version {doc['version']!r} is not supported (expected {_VERSION})"
            )
        return cls(
            doc["root"],
            doc["layout"],
            doc["params"],
            doc["splits"],
            doc.get("dropped", {}),
            doc.get("num_corrupt", 0),
        )


def _check_ratios(ratios: Sequence[float]) -> tuple[float, float, float]:
    r = tuple(float(x) for x in ratios)
    if len(r) != 3 or any(x < 0 for x in r) or abs(sum(r) - 1.0) > 1e-6:
        raise FaceforgeError(
            f"ratios {list(ratios)} must be 3 non-negative numbers (train, val, test) summing to 1"
        )
    return r  # type: ignore[return-value]


def _read_class_names(class_names: Sequence[str] | str | os.PathLike[str]) -> list[str]:
    if isinstance(class_names, (str, os.PathLike)):
        p = Path(class_names)
        if not p.is_file():
            raise FaceforgeError(f"class_names file {p} does not exist")
        return [ln.strip() for ln in p.read_text(encoding="utf-8").splitlines() if ln.strip()]
    return [str(c) for c in class_names]


def _image_min_side(path: str) -> int | None:
    try:
        with Image.open(path) as im:
            w, h = im.size
        return min(w, h)
    except Exception:
        return None


def make_split(
    root: str | os.PathLike[str],
    out: str | os.PathLike[str] | None = None,
    *,
    ratios: Sequence[float] = (0.70, 0.15, 0.15),
    seed: int = 0,
    min_image_size: int = 0,
    class_names: Sequence[str] | str | os.PathLike[str] | None = None,
    layout: str = "auto",
    overwrite: bool = False,
) -> Split:
    """Split the IDs under ``root`` into train/val/test (see the module docstring).

    Args:
        root: image folder (flat ``{ID}_{seq}.jpg`` or ``root/{ID}/*.jpg``).
        out: split JSON file; when it exists (and not ``overwrite``) it is loaded and returned if it was
            made with the same parameters, else a :class:`FaceforgeError` names the differences.
        ratios: image shares of train, val and test.
        seed: shuffle seed.
        min_image_size: drop an ID when one of its images has a shorter side below this (0: off).
        class_names: IDs to keep (list, or a file with one per line); each must exist.
        layout: ``auto``, ``flat`` or ``folder``.
        overwrite: re-split and rewrite ``out`` even if it exists.
    """
    r = _check_ratios(ratios)
    if int(min_image_size) < 0:
        raise FaceforgeError(f"min_image_size={min_image_size} must be >= 0")
    root_p = Path(root).expanduser().resolve()
    names = _read_class_names(class_names) if class_names is not None else None
    params = {
        "ratios": list(r),
        "seed": int(seed),
        "min_image_size": int(min_image_size),
        "class_names": names,
        "layout": layout,
    }
    out_p = Path(out) if out is not None else None
    if out_p is not None and out_p.exists() and not overwrite:
        old = Split.load(out_p)
        diff = [k for k in params if old.params.get(k) != params[k]]
        if str(Path(old.root)) != str(root_p):
            diff.append(f"root ({old.root})")
        if diff:
            raise FaceforgeError(
                f"split file {out_p} was made with other settings ({', '.join(diff)}); delete it or pass "
                "the same settings (the split is kept fixed on purpose)"
            )
        return old
    found_layout, groups = scan_folder(root_p, layout)
    if names is not None:
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise FaceforgeError(f"class_names lists {dup[0]!r} more than once")
        unknown = [n for n in names if n not in groups]
        if unknown:
            raise FaceforgeError(
                f"class name {unknown[0]!r} is not an ID under {root_p}{did_you_mean(unknown[0], groups)}"
                + (f" ({len(unknown)} unknown in all)" if len(unknown) > 1 else "")
            )
        groups = {n: groups[n] for n in sorted(names)}
    dropped: dict[str, str] = {}
    num_corrupt = 0
    if min_image_size > 0:
        kept: dict[str, list[str]] = {}
        for ident, files in groups.items():
            good: list[str] = []
            reason = None
            for rel in files:
                side = _image_min_side(str(root_p / rel))
                if side is None:
                    num_corrupt += 1
                    continue
                if side < min_image_size and reason is None:
                    reason = f"{rel} has a shorter side of {side} px < {min_image_size}"
                good.append(rel)
            if reason is not None:
                dropped[ident] = reason
            elif not good:
                dropped[ident] = "no readable image"
            else:
                kept[ident] = good
        groups = kept
    ids = sorted(groups)
    order = np.random.default_rng(int(seed)).permutation(len(ids))
    total = sum(len(groups[i]) for i in ids)
    b1, b2 = r[0] * total, (r[0] + r[1]) * total
    splits: dict[str, dict[str, list[str]]] = {n: {} for n in SPLIT_NAMES}
    c = 0
    for j in order:
        ident = ids[j]
        n = len(groups[ident])
        mid = c + n / 2
        name = "train" if mid < b1 else ("val" if mid < b2 else "test")
        splits[name][ident] = groups[ident]
        c += n
    split = Split(str(root_p), found_layout, params, splits, dropped, num_corrupt)
    if out_p is not None:
        out_p.parent.mkdir(parents=True, exist_ok=True)
        tmp = out_p.with_name(out_p.name + ".tmp")
        tmp.write_text(json.dumps(split.to_json(), indent=1), encoding="utf-8")
        os.replace(tmp, out_p)
    return split
