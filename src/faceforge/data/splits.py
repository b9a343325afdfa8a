"""Group-disjoint train/val/test splits of an image folder: face identities, or objects within classes.
:func:`make_split` scans the ``flat``, ``folder`` or ``class`` layout (``layout="auto"`` recognises it),
cuts the groups (IDs, or ``"class/ID"``) by image share, stratified per class for the class layout, so
no group is ever in two splits, and returns a :class:`Split`, stored as a JSON split file. Details:
docs/data.md, "Group-disjoint splits".
"""

from __future__ import annotations

import json
import os
import re
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from faceforge.errors import FaceforgeError, did_you_mean
from faceforge.fileio import atomic_write_bytes
from faceforge.imageio import IMAGE_EXTENSIONS, default_max_pixels, is_image_name, probe

__all__ = [
    "IMAGE_EXTS",
    "LAYOUTS",
    "SPLIT_NAMES",
    "Split",
    "format_split",
    "group_class",
    "make_split",
    "parse_class_names",
    "parse_flat_name",
    "scan_folder",
]

IMAGE_EXTS = IMAGE_EXTENSIONS  # the package's one list (faceforge.imageio)
SPLIT_NAMES = ("train", "val", "test")
LAYOUTS = ("auto", "flat", "folder", "class")
LABEL_MODES = ("auto", "class", "group")
_FLAT_RE = re.compile(r"^(?P<id>.+)_(?P<seq>\d+)$")
#: flat/folder split files keep version 1 (older readers still read them); class-layout files are
#: version 2 because a version-1 reader would silently label their "class/ID" groups as identities
_VERSION = 1
_CLASS_VERSION = 2
#: ``auto`` picks the class layout only when file prefixes really group files (not one file each,
#: as in VGGFace2's ``n000002/0001_01.jpg``, where the prefix numbers photos of one identity)
_MIN_MEAN_GROUP = 1.5
#: above this many groups in one class the uncovered-split repair clamps cuts instead of searching
_SEARCH_MAX_GROUPS = 400


def _is_image(p: Path) -> bool:
    return is_image_name(p.name)


def parse_flat_name(name: str) -> tuple[str, int]:
    """``"{ID}_{seq}.jpg" -> (ID, seq)``; raise :class:`FaceforgeError` for other names."""
    stem, _ = os.path.splitext(name)
    m = _FLAT_RE.match(stem)
    if not m:
        raise FaceforgeError(
            f"image file name {name!r} does not match '{{ID}}_{{seq}}.jpg' (e.g. '0042_0003.jpg')"
        )
    return m["id"], int(m["seq"])


def group_class(key: str) -> str:
    """The class of a class-layout group key (``"monstera/plant001" -> "monstera"``)."""
    return key.split("/", 1)[0]


def scan_folder(root: str | os.PathLike[str], layout: str = "auto") -> tuple[str, dict[str, list[str]]]:
    """Find the image groups under ``root``.

    Returns ``(layout, {group: sorted paths relative to root})`` with groups sorted; a group is an ID
    (``flat``, ``folder``) or ``"class/ID"`` (``class``). ``auto`` chooses ``flat`` when images lie in
    ``root``; else ``class`` when every image lies directly in a folder, is named ``{ID}_{seq}.ext``
    with ``ID`` never equal to its folder's name, some folder holds several IDs and IDs hold 1.5
    images or more on average; else ``folder``.

    Raises:
        FaceforgeError: ``root`` missing, no images, both layouts mixed, a flat name that does not
            match ``{ID}_{seq}.ext``, or (forced ``class``) a file that does not fit that layout.
    """
    r = Path(root).expanduser()
    if layout not in LAYOUTS:
        raise FaceforgeError(
            f"layout={layout!r} is not one of {', '.join(LAYOUTS)}{did_you_mean(layout, LAYOUTS)}"
        )
    if not r.is_dir():
        raise FaceforgeError(f"image folder {r} does not exist or is not a folder")
    entries = sorted(os.scandir(r), key=lambda e: e.name)
    top_images = [e.name for e in entries if e.is_file() and _is_image(Path(e.name))]
    dirs = [e.name for e in entries if e.is_dir() and not e.name.startswith(".")]
    trees = {} if layout == "flat" else {d: _images_under(r, d) for d in dirs}
    trees = {d: files for d, files in trees.items() if files}
    if layout == "auto":
        if top_images and trees:
            raise FaceforgeError(
                f"{r} holds both images ({top_images[0]!r}, ...) and image folders ({next(iter(trees))!r}, "
                "...); pass layout='flat', 'folder' or 'class'"
            )
        layout = "flat" if top_images else ("class" if _looks_like_class(trees) else "folder")
    groups: dict[str, list[str]] = {}
    if layout == "flat":
        for name in top_images:
            ident, _ = parse_flat_name(name)
            groups.setdefault(ident, []).append(name)
    elif layout == "folder":
        groups = dict(trees)
    else:
        if top_images:
            raise FaceforgeError(
                f"{r / top_images[0]} lies directly in the root; layout 'class' expects "
                "ROOT/<class>/<ID>_<seq>.ext (e.g. monstera/plant001_1.jpg)"
            )
        for d, files in trees.items():
            for rel in files:
                name = rel[len(d) + 1 :]
                m = _FLAT_RE.match(os.path.splitext(name)[0])
                if "/" in name or not m:
                    raise FaceforgeError(
                        f"{r / rel} does not fit layout 'class': expected ROOT/<class>/<ID>_<seq>.ext "
                        "(e.g. monstera/plant001_1.jpg)"
                    )
                groups.setdefault(f"{d}/{m['id']}", []).append(rel)
    if not groups:
        raise FaceforgeError(f"no images ({', '.join(IMAGE_EXTS)}) found in {r} (layout {layout})")
    return layout, {k: sorted(v) for k, v in sorted(groups.items())}


def _images_under(root: Path, d: str) -> list[str]:
    """Image paths (relative to ``root``, ``/``-separated) anywhere below ``root/d``."""
    return sorted(
        os.path.relpath(os.path.join(dp, f), root).replace(os.sep, "/")
        for dp, _, fs in os.walk(root / d)
        for f in fs
        if _is_image(Path(f))
    )


def _looks_like_class(trees: dict[str, list[str]]) -> bool:
    """The ``auto`` rule for ``class`` (see :func:`scan_folder`) over ``{folder: image paths}``."""
    n_images = n_groups = 0
    several = False
    for d, files in trees.items():
        ids = set()
        for rel in files:
            name = rel[len(d) + 1 :]
            m = _FLAT_RE.match(os.path.splitext(name)[0])
            if "/" in name or not m or m["id"] == d:
                return False
            ids.add(m["id"])
        several = several or len(ids) > 1
        n_images += len(files)
        n_groups += len(ids)
    return several and n_groups > 0 and n_images >= _MIN_MEAN_GROUP * n_groups


@dataclass
class Split:
    """A group-disjoint split; ``splits[name][group]`` lists paths relative to ``root``.

    ``classes`` is the sorted class list of a ``class``-layout split (``None`` for face layouts);
    ``small_classes`` names, for each class with fewer groups than splits to fill, the split of each
    of its groups (train first, then val, then test).
    """

    root: str
    layout: str
    params: dict[str, Any]
    splits: dict[str, dict[str, list[str]]]
    dropped: dict[str, str] = field(default_factory=dict)
    num_corrupt: int = 0
    classes: list[str] | None = None
    small_classes: dict[str, list[str]] = field(default_factory=dict)

    def ids(self, name: str) -> list[str]:
        """Sorted group keys of split ``name`` (their ``label="group"`` labels are their positions)."""
        self._check(name)
        return sorted(self.splits[name])

    def samples(self, name: str, label: str = "auto") -> list[tuple[str, int]]:
        """``(absolute path, label)`` for split ``name``, ordered by group key then file.

        ``label="class"``: index into :attr:`classes` (the same mapping in every split; class layout
        only); ``"group"``: 0.. over the split's sorted groups; ``"auto"``: class for the class
        layout, group otherwise.
        """
        if label not in LABEL_MODES:
            raise FaceforgeError(
                f"label={label!r} is not one of {', '.join(LABEL_MODES)}{did_you_mean(label, LABEL_MODES)}"
            )
        if label == "auto":
            label = "class" if self.layout == "class" else "group"
        keys = self.ids(name)
        if label == "group":
            labels = list(range(len(keys)))
        else:
            if self.classes is None:
                raise FaceforgeError(
                    f"label='class' needs a class-layout split (root/<class>/<ID>_<seq>.jpg); this split's "
                    f"layout is {self.layout!r}: use label='group'"
                )
            index = {c: i for i, c in enumerate(self.classes)}
            labels = [index[group_class(k)] for k in keys]
        return [
            (os.path.join(self.root, rel), lab)
            for lab, key in zip(labels, keys)
            for rel in self.splits[name][key]
        ]

    def groups(self, name: str) -> list[str]:
        """Group key of every sample of split ``name``, in the order of :meth:`samples`."""
        return [key for key in self.ids(name) for _ in self.splits[name][key]]

    def num_images(self, name: str) -> int:
        """Number of images in split ``name``."""
        self._check(name)
        return sum(len(v) for v in self.splits[name].values())

    def counts(self) -> dict[str, Any]:
        """``{"splits": {name: {images, groups, classes}}, "per_class": {class: {name: {images,
        groups}}} | None}``; for face layouts every ID is its own class."""
        out: dict[str, Any] = {"splits": {}, "per_class": None}
        per: dict[str, dict[str, dict[str, int]]] = {}
        for name, groups in self.splits.items():
            if self.layout == "class":
                for key, files in groups.items():
                    row = per.setdefault(
                        group_class(key), {n: {"images": 0, "groups": 0} for n in self.splits}
                    )
                    row[name]["images"] += len(files)
                    row[name]["groups"] += 1
                n_classes = len({group_class(k) for k in groups})
            else:
                n_classes = len(groups)
            out["splits"][name] = {
                "images": sum(len(v) for v in groups.values()),
                "groups": len(groups),
                "classes": n_classes,
            }
        if self.layout == "class":
            out["per_class"] = {c: per[c] for c in sorted(per)}
        return out

    def _check(self, name: str) -> None:
        if name not in self.splits:
            raise FaceforgeError(
                f"split {name!r} is not one of {', '.join(self.splits)}{did_you_mean(name, self.splits)}"
            )

    def to_json(self) -> dict[str, Any]:
        """The JSON document written to the split file."""
        return {
            "version": _CLASS_VERSION if self.layout == "class" else _VERSION,
            "root": self.root,
            "layout": self.layout,
            "params": self.params,
            "seed": self.params.get("seed"),
            "ratios": self.params.get("ratios"),
            "classes": self.classes,
            "counts": self.counts(),
            "small_classes": self.small_classes,
            "splits": self.splits,
            "dropped": self.dropped,
            "num_corrupt": self.num_corrupt,
        }

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Split:
        """Read a split file written by :func:`make_split` (version 1 or 2)."""
        p = Path(path)
        try:
            doc = json.loads(p.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise FaceforgeError(f"cannot read split file {p}: {e}") from None
        if not isinstance(doc, dict):
            raise FaceforgeError(f"split file {p} holds {type(doc).__name__}; expected a JSON object")
        for key in ("version", "root", "layout", "params", "splits"):
            if key not in doc:
                raise FaceforgeError(f"split file {p} lacks key {key!r}; was it written by faceforge?")
        if doc["version"] not in (_VERSION, _CLASS_VERSION):
            raise FaceforgeError(
                f"split file {p}: version {doc['version']!r} is not supported "
                f"(expected {_VERSION} or {_CLASS_VERSION})"
            )
        classes = doc.get("classes")
        if doc["layout"] == "class" and not isinstance(classes, list):
            raise FaceforgeError(f"split file {p}: layout 'class' needs a 'classes' list, got {classes!r}")
        return cls(
            doc["root"],
            doc["layout"],
            doc["params"],
            doc["splits"],
            doc.get("dropped", {}),
            doc.get("num_corrupt", 0),
            classes,
            doc.get("small_classes", {}),
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


def _image_min_side(path: str, max_pixels: int) -> int | None:
    """Shorter side from the header alone; ``None`` when unreadable or over the decoder's pixel limit."""
    try:
        header = probe(path)
    except FaceforgeError:
        return None
    if header.pixels > max_pixels:
        return None
    return min(header.width, header.height)


def _keep_names(
    groups: dict[str, list[str]], names: list[str], layout: str, root: Path
) -> dict[str, list[str]]:
    """Only the groups of ``names`` (classes in the class layout, IDs otherwise), each checked."""
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise FaceforgeError(f"class_names lists {dup[0]!r} more than once")
    if layout == "class":
        known = sorted({group_class(k) for k in groups})
        what = "class folder"
    else:
        known = list(groups)
        what = "ID"
    known_set = set(known)
    unknown = [n for n in names if n not in known_set]
    if unknown:
        raise FaceforgeError(
            f"class name {unknown[0]!r} is not a{'n' if what == 'ID' else ''} {what} under {root}"
            f"{did_you_mean(unknown[0], known)}"
            + (f" ({len(unknown)} unknown in all)" if len(unknown) > 1 else "")
        )
    wanted = set(names)
    if layout == "class":
        return {k: v for k, v in groups.items() if group_class(k) in wanted}
    return {n: groups[n] for n in sorted(names)}


def _filter_sizes(
    groups: dict[str, list[str]], root: Path, min_image_size: int
) -> tuple[dict[str, list[str]], dict[str, str], int]:
    """Drop groups holding an image with a shorter side below ``min_image_size``; skip unreadable files."""
    max_pixels = default_max_pixels()
    kept: dict[str, list[str]] = {}
    dropped: dict[str, str] = {}
    num_corrupt = 0
    for key, files in groups.items():
        good: list[str] = []
        reason = None
        for rel in files:
            side = _image_min_side(str(root / rel), max_pixels)
            if side is None:
                num_corrupt += 1
                continue
            if side < min_image_size and reason is None:
                reason = f"{rel} has a shorter side of {side} px < {min_image_size}"
            good.append(rel)
        if reason is not None:
            dropped[key] = reason
        elif not good:
            dropped[key] = "no readable image"
        else:
            kept[key] = good
    return kept, dropped, num_corrupt


def _midpoint_cuts(sizes: Sequence[int], r: tuple[float, float, float]) -> tuple[int, int]:
    """Cut an ordered list of groups: a group goes to the split its middle image falls in, so each
    split's image count is within one group of ``ratio * total`` (half a group at each cut)."""
    total = float(sum(sizes))
    b1, b2 = r[0] * total, (r[0] + r[1]) * total
    mids = np.cumsum(sizes) - np.asarray(sizes, dtype=np.float64) / 2
    return int(np.sum(mids < b1)), int(np.sum(mids < b2))


def _covering_cuts(sizes: Sequence[int], r: tuple[float, float, float]) -> tuple[int, int]:
    """Cuts ``(i1, i2)`` (train = groups[:i1], val = [i1:i2], test = [i2:]) giving every split with a
    positive ratio at least one group; the midpoint cuts when they already do, else the cuts with the
    smallest worst image-count error (searched; clamped for very large classes)."""
    g = len(sizes)
    need = [int(x > 0) for x in r]
    i1, i2 = _midpoint_cuts(sizes, r)
    if (i1 >= need[0]) and (i2 - i1 >= need[1]) and (g - i2 >= need[2]):
        return i1, i2
    if g > _SEARCH_MAX_GROUPS:
        i1 = min(max(i1, need[0]), g - need[1] - need[2])
        i2 = min(max(i2, i1 + need[1]), g - need[2])
        return i1, i2
    prefix = np.concatenate([[0], np.cumsum(sizes)]).astype(np.float64)
    total = prefix[-1]
    a = np.arange(g + 1)[:, None]  # i1 candidates (rows)
    b = np.arange(g + 1)[None, :]  # i2 candidates (columns)
    n_val = prefix[b] - prefix[a]
    err = np.maximum.reduce(
        [
            np.abs(np.broadcast_to(prefix[a], n_val.shape) - r[0] * total),
            np.abs(n_val - r[1] * total),
            np.abs(np.broadcast_to(total - prefix[b], n_val.shape) - r[2] * total),
        ]
    )
    ok = (a >= need[0]) & (b - a >= need[1]) & (g - b >= need[2])
    best = np.where(ok, err, np.inf)
    # among the cuts with the smallest error, the nearest to the midpoint ones (fewest groups moved)
    tied = best <= best.min() + 1e-9
    dist = np.where(tied, np.abs(a - i1) + np.abs(b - i2), np.iinfo(np.int64).max)
    j = int(np.argmin(dist))
    return j // (g + 1), j % (g + 1)


def _stratified(
    groups: dict[str, list[str]], r: tuple[float, float, float], seed: int
) -> tuple[dict[str, dict[str, list[str]]], dict[str, list[str]]]:
    """Split every class on its own: shuffle its groups (a seed per class, so adding a class leaves the
    others' splits as they were) and cut them so every split is covered
    (docs/data.md, "Group-disjoint splits")."""
    by_class: dict[str, list[str]] = {}
    for key in groups:
        by_class.setdefault(group_class(key), []).append(key)
    active = [n for n, x in zip(SPLIT_NAMES, r) if x > 0]
    splits: dict[str, dict[str, list[str]]] = {n: {} for n in SPLIT_NAMES}
    small: dict[str, list[str]] = {}
    for cls in sorted(by_class):
        keys = sorted(by_class[cls])
        rng = np.random.default_rng([seed, zlib.crc32(cls.encode("utf-8"))])
        order = [keys[j] for j in rng.permutation(len(keys))]
        if len(order) < len(active):
            names = active[: len(order)]
            small[cls] = list(names)
        else:
            i1, i2 = _covering_cuts([len(groups[k]) for k in order], r)
            names = ["train"] * i1 + ["val"] * (i2 - i1) + ["test"] * (len(order) - i2)
        for key, name in zip(order, names):
            splits[name][key] = groups[key]
    return splits, small


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
    """Split the groups under ``root`` into train/val/test (see docs/data.md, "Group-disjoint splits").

    Args:
        root: image folder (``flat``, ``folder`` or ``class`` layout, see :func:`scan_folder`).
        out: split JSON file; when it exists (and not ``overwrite``) it is loaded and returned if it was
            made with the same parameters, else a :class:`FaceforgeError` names the differences.
        ratios: image shares of train, val and test.
        seed: shuffle seed (>= 0).
        min_image_size: drop a group when one of its images has a shorter side below this, read from
            the image header (0: off; unreadable images are then skipped and counted).
        class_names: class folders (class layout) or IDs (face layouts) to keep: a list, or a file
            with one per line; each must exist.
        layout: ``auto``, ``flat``, ``folder`` or ``class``.
        overwrite: re-split and rewrite ``out`` even if it exists.
    """
    r = _check_ratios(ratios)
    if int(min_image_size) < 0:
        raise FaceforgeError(f"min_image_size={min_image_size} must be >= 0")
    if int(seed) < 0:
        raise FaceforgeError(f"seed={seed} must be >= 0")
    if layout not in LAYOUTS:
        raise FaceforgeError(
            f"layout={layout!r} is not one of {', '.join(LAYOUTS)}{did_you_mean(layout, LAYOUTS)}"
        )
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
        groups = _keep_names(groups, names, found_layout, root_p)
    dropped: dict[str, str] = {}
    num_corrupt = 0
    if min_image_size > 0:
        groups, dropped, num_corrupt = _filter_sizes(groups, root_p, int(min_image_size))
    small: dict[str, list[str]] = {}
    classes: list[str] | None = None
    if found_layout == "class":
        splits, small = _stratified(groups, r, int(seed))
        classes = sorted({group_class(k) for k in groups})
    else:
        # Unchanged since version 1: one shuffle of all IDs, cut by image share.
        ids = sorted(groups)
        order = np.random.default_rng(int(seed)).permutation(len(ids))
        i1, i2 = _midpoint_cuts([len(groups[ids[j]]) for j in order], r)
        splits = {n: {} for n in SPLIT_NAMES}
        for pos, j in enumerate(order):
            name = "train" if pos < i1 else ("val" if pos < i2 else "test")
            splits[name][ids[j]] = groups[ids[j]]
    split = Split(str(root_p), found_layout, params, splits, dropped, num_corrupt, classes, small)
    if out_p is not None:
        atomic_write_bytes(out_p, json.dumps(split.to_json(), indent=1).encode("utf-8"))
    return split


def parse_class_names(value: str | None) -> list[str] | str | None:
    """``--class-names``: an existing file (one name per line, kept as its path) or a comma-separated list."""
    if value is None or os.path.isfile(value):
        return value
    names = [n.strip() for n in value.split(",") if n.strip()]
    looks_like_file = os.sep in value or Path(value).suffix.lower() in (".txt", ".lst", ".csv")
    if not names or ("," not in value and looks_like_file):
        raise FaceforgeError(
            f"--class-names {value!r}: no such file; expected a file with one name per line or a "
            "comma-separated list (e.g. monstera,ficus)"
        )
    return names


def format_split(split: Split, out: str, reused: bool) -> str:
    """The text report of a split written to (or, ``reused``, read back from) ``out``: counts per split."""
    counts = split.counts()["splits"]
    what = f"{len(split.classes)} classes" if split.classes is not None else "one class per ID"
    lines = [
        f"{'re-used' if reused else 'wrote'} split {out}: layout {split.layout}, {what} ({split.root})",
        f"{'split':<6} {'images':>8} {'groups':>8} {'classes':>8}",
    ]
    for name, c in counts.items():
        lines.append(f"{name:<6} {c['images']:>8} {c['groups']:>8} {c['classes']:>8}")
    lines.append(
        f"dropped {len(split.dropped)} groups (--min-image-size {split.params.get('min_image_size', 0)}); "
        f"skipped {split.num_corrupt} unreadable images"
    )
    if split.small_classes:
        few = "; ".join(f"{c} -> {', '.join(v)}" for c, v in split.small_classes.items())
        lines.append(f"classes with too few groups for every split: {few}")
    return "\n".join(lines)
