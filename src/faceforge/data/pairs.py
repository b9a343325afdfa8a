"""Verification pair lists: read LFW-style ``pairs.txt`` and friends, write the LFW View-2 layout (Huang et
al., "Labeled Faces in the Wild", UMass TR 07-49). :func:`read_pairs` reads the ``lfw`` (View-1, View-2,
headerless), ``ann``, ``triplet`` and ``csv`` formats into :class:`Pairs`, refusing image paths outside
the root unless ``allow_outside_root``; :func:`write_lfw_pairs` writes the View-2 layout,
:func:`write_pairs_csv` the ``csv`` layout, and :func:`make_pairs` draws balanced, identity-disjoint
folds of pairs from a folder's identities. Details: docs/data.md, "Pair lists" and "Pair list formats".
"""

from __future__ import annotations

import csv
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from faceforge.errors import FaceforgeError
from faceforge.fileio import check_inside, naming_errors, write_text

__all__ = [
    "Pairs",
    "lfw_image_path",
    "make_pairs",
    "parse_label",
    "photos_outside_pairs",
    "read_pairs",
    "write_folder_pairs",
    "write_lfw_pairs",
    "write_pairs_csv",
]

FORMATS = ("auto", "lfw", "ann", "triplet", "csv")
_TRUE = {"1", "true"}
_FALSE = {"0", "false"}
_COLS_A = ("path_a", "path1", "a", "img1", "image1", "left", "path_1", "image_a", "img_a")
_COLS_B = ("path_b", "path2", "b", "img2", "image2", "right", "path_2", "image_b", "img_b")
_COLS_LABEL = ("label", "issame", "is_same", "same", "genuine")
_MAX_MISSING_SHOWN = 5


@dataclass
class Pairs:
    """A list of verification pairs.

    ``paths_a[i]`` and ``paths_b[i]`` are absolute image paths, ``issame[i]`` (bool) says whether they
    show the same person, and ``folds[i]`` (int) is the pair's fold; folds are contiguous runs
    numbered 0, 1, ... in file order.
    """

    paths_a: list[str]
    paths_b: list[str]
    issame: np.ndarray
    folds: np.ndarray

    def __post_init__(self) -> None:
        self.issame = np.asarray(self.issame, dtype=bool)
        self.folds = np.asarray(self.folds, dtype=np.int64)
        n = len(self.paths_a)
        if not (len(self.paths_b) == n == len(self.issame) == len(self.folds)):
            raise FaceforgeError(
                f"Pairs: paths_a, paths_b, issame and folds must have the same length, got "
                f"{len(self.paths_a)}, {len(self.paths_b)}, {len(self.issame)}, {len(self.folds)}"
            )

    def __len__(self) -> int:
        return len(self.paths_a)

    @property
    def n_folds(self) -> int:
        """Number of folds (0 for an empty list)."""
        return int(self.folds.max()) + 1 if len(self.folds) else 0

    def unique_paths(self) -> list[str]:
        """All distinct image paths, in first-seen order (a then b per pair)."""
        seen: dict[str, None] = {}
        for a, b in zip(self.paths_a, self.paths_b):
            seen.setdefault(a, None)
            seen.setdefault(b, None)
        return list(seen)


def lfw_image_path(root: str | os.PathLike[str], name: str, num: int) -> str:
    """Path of LFW image number ``num`` (1-based) of ``name``: ``root/name/name_%04d.jpg``."""
    return os.path.join(os.fspath(root), name, f"{name}_{num:04d}.jpg")


def photos_outside_pairs(pairs: Pairs, root: str | os.PathLike[str]) -> list[str]:
    """The images under ``root`` of people who appear in no pair: identity folders (``root/<person>/``,
    the LFW and ImageFolder layout) none of whose images a pair uses. A disjoint, unlabeled set of the
    same domain, e.g. for ``faceforge models adapt`` without touching the evaluation's people; sorted.
    """
    from faceforge.imageio import list_images

    base = Path(root).resolve()
    used = {Path(p).resolve().parent for p in pairs.unique_paths()}
    return [
        str(f)
        for d in sorted(base.iterdir())
        if d.is_dir() and not d.name.startswith(".") and d.resolve() not in used
        for f in list_images(d, recursive=False)
    ]


def parse_label(value: str, where: str) -> bool:
    """Parse ``0``/``1``/``true``/``false``; raise :class:`FaceforgeError` naming ``where`` otherwise."""
    v = value.strip().lower()
    if v in _TRUE:
        return True
    if v in _FALSE:
        return False
    raise FaceforgeError(f"{where}: label {value!r} is not one of 0, 1, true, false")


def _is_int(tok: str) -> bool:
    return tok.isdigit()


def _is_label(tok: str) -> bool:
    return tok.lower() in _TRUE | _FALSE


def _contiguous_folds(n: int, n_folds: int) -> np.ndarray:
    k = max(1, min(n_folds, n))
    return (np.arange(n, dtype=np.int64) * k) // max(n, 1)


def _detect_format(path: Path, lines: list[tuple[int, list[str]]], raw_first: str) -> str:
    if path.suffix.lower() == ".csv" or ("," in raw_first and len(raw_first.split()) < 3):
        return "csv"
    if not lines:
        raise FaceforgeError(f"{path}: no pairs found (the file is empty)")
    lineno, toks = lines[0]
    if len(toks) in (1, 2) and all(_is_int(t) for t in toks):
        return "lfw"  # header
    if len(toks) == 4:
        return "lfw"
    if len(toks) == 3:
        if _is_int(toks[1]) and _is_int(toks[2]):
            return "lfw"
        if _is_label(toks[0]):
            return "ann"
        if _is_label(toks[2]):
            return "triplet"
    raise FaceforgeError(
        f"{path}:{lineno}: cannot tell the pair format from {' '.join(toks)!r}; expected 'name i j', "
        "'name1 i name2 j', 'label path_a path_b', 'path_a path_b label' or a CSV header "
        "(pass fmt= to choose)"
    )


def _find_lfw_root(base: Path, first_name: str) -> Path:
    if (base / first_name).is_dir():
        return base
    try:
        subs = sorted(p for p in base.iterdir() if p.is_dir())
    except OSError:
        return base
    for sub in subs:
        if (sub / first_name).is_dir():
            return sub
    return base


def _read_lfw(
    path: Path, lines: list[tuple[int, list[str]]], root: Path | None, n_folds: int | None
) -> tuple[list[str], list[str], list[bool], np.ndarray, list[int]]:
    header: list[int] | None = None
    body = lines
    if lines and len(lines[0][1]) in (1, 2) and all(_is_int(t) for t in lines[0][1]):
        header = [int(t) for t in lines[0][1]]
        body = lines[1:]
    if root is None:
        first = next((toks[0] for _, toks in body if toks), None)
        root = _find_lfw_root(path.parent, first) if first else path.parent
    pa: list[str] = []
    pb: list[str] = []
    same: list[bool] = []
    linenos: list[int] = []
    for lineno, toks in body:
        try:
            if len(toks) == 3:
                name, i, j = toks[0], int(toks[1]), int(toks[2])
                pa.append(lfw_image_path(root, name, i))
                pb.append(lfw_image_path(root, name, j))
                same.append(True)
            elif len(toks) == 4:
                n1, i, n2, j = toks[0], int(toks[1]), toks[2], int(toks[3])
                pa.append(lfw_image_path(root, n1, i))
                pb.append(lfw_image_path(root, n2, j))
                same.append(False)
            else:
                raise ValueError
        except ValueError:
            raise FaceforgeError(
                f"{path}:{lineno}: expected 'name i j' (genuine) or 'name1 i name2 j' (impostor) with "
                f"integer image numbers, got {' '.join(toks)!r}"
            ) from None
        linenos.append(lineno)
    n = len(same)
    if header is not None and len(header) == 2 and n_folds is None:
        nf, per = header
        if nf * 2 * per != n:
            raise FaceforgeError(
                f"{path}:{lines[0][0]}: header '{nf} {per}' promises {nf} folds x {per} genuine + {per} "
                f"impostor = {nf * 2 * per} pairs, but the file has {n}"
            )
        folds = np.arange(n, dtype=np.int64) // max(2 * per, 1)
        for k in range(n):
            want = (k % (2 * per)) < per
            if same[k] != want:
                kind = "genuine 'name i j'" if want else "impostor 'name1 i name2 j'"
                raise FaceforgeError(
                    f"{path}:{linenos[k]}: View-2 layout expects a {kind} line here "
                    f"(fold {k // (2 * per)}: {per} genuine then {per} impostor lines)"
                )
        return pa, pb, same, folds, linenos
    if header is not None and len(header) == 1 and n_folds is None:
        if 2 * header[0] != n:
            raise FaceforgeError(
                f"{path}:{lines[0][0]}: header '{header[0]}' promises {header[0]} genuine + "
                f"{header[0]} impostor pairs, but the file has {n}"
            )
        return pa, pb, same, np.zeros(n, dtype=np.int64), linenos
    return pa, pb, same, _contiguous_folds(n, n_folds or 10), linenos


def _resolve(root: Path, p: str) -> str:
    return os.path.normpath(os.path.join(root, os.path.expanduser(p)))


def _read_columns(
    path: Path, lines: list[tuple[int, list[str]]], root: Path, fmt: str, n_folds: int | None
) -> tuple[list[str], list[str], list[bool], np.ndarray, list[int]]:
    pa: list[str] = []
    pb: list[str] = []
    same: list[bool] = []
    linenos: list[int] = []
    for lineno, toks in lines:
        if len(toks) != 3:
            want = "'label path_a path_b'" if fmt == "ann" else "'path_a path_b label'"
            raise FaceforgeError(f"{path}:{lineno}: expected 3 fields {want}, got {' '.join(toks)!r}")
        if fmt == "ann":
            lab, a, b = toks
        else:
            a, b, lab = toks
        same.append(parse_label(lab, f"{path}:{lineno}"))
        pa.append(_resolve(root, a))
        pb.append(_resolve(root, b))
        linenos.append(lineno)
    return pa, pb, same, _contiguous_folds(len(same), n_folds or 10), linenos


def _pick_col(fields: list[str], names: Sequence[str]) -> str | None:
    low = {f.strip().lower(): f for f in fields}
    for name in names:
        if name in low:
            return low[name]
    return None


def _read_csv(
    path: Path, root: Path, n_folds: int | None
) -> tuple[list[str], list[str], list[bool], np.ndarray, list[int]]:
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        fields = list(reader.fieldnames or [])
        ca, cb, cl = _pick_col(fields, _COLS_A), _pick_col(fields, _COLS_B), _pick_col(fields, _COLS_LABEL)
        cf = _pick_col(fields, ("fold",))
        if ca is None or cb is None or cl is None:
            raise FaceforgeError(
                f"{path}:1: CSV header {fields} lacks a column for "
                + ", ".join(
                    w
                    for w, c in (
                        ("the first image (path_a)", ca),
                        ("the second image (path_b)", cb),
                        ("the label (label/issame)", cl),
                    )
                    if c is None
                )
            )
        pa: list[str] = []
        pb: list[str] = []
        same: list[bool] = []
        fl: list[int] = []
        linenos: list[int] = []
        for row in reader:
            lineno = reader.line_num
            if all(not (v or "").strip() for v in row.values()):
                continue
            a, b, lab = (row.get(ca) or "").strip(), (row.get(cb) or "").strip(), row.get(cl) or ""
            if not a or not b:
                raise FaceforgeError(f"{path}:{lineno}: empty image path in columns {ca!r}/{cb!r}")
            same.append(parse_label(lab, f"{path}:{lineno}"))
            pa.append(_resolve(root, a))
            pb.append(_resolve(root, b))
            linenos.append(lineno)
            if cf is not None:
                v = (row.get(cf) or "").strip()
                if not v.isdigit():
                    raise FaceforgeError(f"{path}:{lineno}: fold {v!r} is not a non-negative integer")
                fl.append(int(v))
    if cf is not None and n_folds is None:
        folds = np.asarray(fl, dtype=np.int64)
        if len(folds) and (np.any(np.diff(folds) < 0) or np.any(np.diff(folds) > 1) or folds[0] != 0):
            bad = (
                int(np.flatnonzero((np.diff(folds) < 0) | (np.diff(folds) > 1))[0] + 1)
                if len(folds) > 1
                else 0
            )
            raise FaceforgeError(
                f"{path}:{linenos[bad]}: fold {folds[bad]} breaks the expected contiguous order "
                "0, 0, ..., 1, 1, ... (folds must start at 0 and never go back)"
            )
        return pa, pb, same, folds, linenos
    return pa, pb, same, _contiguous_folds(len(same), n_folds or 10), linenos


def read_pairs(
    path: str | os.PathLike[str],
    root: str | os.PathLike[str] | None = None,
    fmt: str = "auto",
    *,
    n_folds: int | None = None,
    check_exists: bool = True,
    allow_outside_root: bool | None = None,
) -> Pairs:
    """Read a pair list (formats: docs/data.md, "Pair lists" and "Pair list formats").

    Args:
        path: the pair file.
        root: folder that relative image paths (and LFW names) are resolved against; default: the
            pair file's folder (LFW: or its first sub-folder holding the identity folders).
        fmt: ``auto`` (detect), ``lfw``, ``ann``, ``triplet`` or ``csv``.
        n_folds: force this many contiguous folds; ``None`` keeps the file's folds (View-2 header,
            CSV ``fold`` column) and uses 10 otherwise.
        check_exists: raise if an image is missing (the message lists the first ones with line numbers).
        allow_outside_root: let image paths resolve outside the root (``root``, else the pair file's
            folder); None follows :func:`faceforge.fileio.outside_root_allowed` (``--allow-outside-root``).

    Raises:
        FaceforgeError: unreadable file, unknown format, bad line or label, an image path outside the
            root (:class:`~faceforge.fileio.OutsideRootError`, naming the line), or missing images.
    """
    p = Path(path).expanduser()
    if fmt not in FORMATS:
        raise FaceforgeError(f"read_pairs: fmt={fmt!r} is not one of {', '.join(FORMATS)}")
    if not p.is_file():
        raise FaceforgeError(f"pair file {p} does not exist or is not a file")
    if n_folds is not None and n_folds < 1:
        raise FaceforgeError(f"read_pairs: n_folds={n_folds} must be >= 1")
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise FaceforgeError(f"cannot read pair file {p}: {e}") from None
    raw = text.splitlines()
    lines = [
        (i + 1, ln.split()) for i, ln in enumerate(raw) if ln.strip() and not ln.lstrip().startswith("#")
    ]
    raw_first = next((ln for ln in raw if ln.strip()), "")
    kind = _detect_format(p, lines, raw_first) if fmt == "auto" else fmt
    base = Path(root).expanduser() if root is not None else None
    if kind == "lfw":
        pa, pb, same, folds, linenos = _read_lfw(p, lines, base, n_folds)
    elif kind == "csv":
        pa, pb, same, folds, linenos = _read_csv(p, base or p.parent, n_folds)
    else:
        pa, pb, same, folds, linenos = _read_columns(p, lines, base or p.parent, kind, n_folds)
    if not same:
        raise FaceforgeError(f"{p}: no pairs found")
    inside = os.path.realpath(base if base is not None else p.parent)
    checked: set[str] = set()
    for k, (a, b) in enumerate(zip(pa, pb)):
        for q in (a, b):
            if q not in checked:
                check_inside(q, inside, f"{p}:{linenos[k]}", allow_outside_root)
                checked.add(q)
    if check_exists:
        missing: list[str] = []
        n_missing = 0
        cache: dict[str, bool] = {}
        for k, (a, b) in enumerate(zip(pa, pb)):
            for q in (a, b):
                ok = cache.get(q)
                if ok is None:
                    ok = cache[q] = os.path.isfile(q)
                if not ok:
                    n_missing += 1
                    if len(missing) < _MAX_MISSING_SHOWN:
                        missing.append(f"line {linenos[k]}: {q}")
        if n_missing:
            raise FaceforgeError(
                f"{p}: {n_missing} image reference(s) do not exist (is root= right?); first: "
                + "; ".join(missing)
            )
    return Pairs(pa, pb, np.asarray(same, dtype=bool), folds)


_NAME_RE = re.compile(r"^\S+$")


def write_lfw_pairs(
    path: str | os.PathLike[str],
    pairs_by_fold: Sequence[tuple[Sequence[tuple[str, int, int]], Sequence[tuple[str, int, str, int]]]],
) -> Path:
    """Write an LFW View-2 ``pairs.txt``.

    ``pairs_by_fold`` is a list with one ``(genuine, impostor)`` tuple per fold, where ``genuine`` is a
    list of ``(name, i, j)`` and ``impostor`` a list of ``(name1, i, name2, j)``; image numbers are
    1-based (image ``root/name/name_%04d.jpg``). Every fold must hold the same number ``n`` of
    genuine and of impostor pairs. The file is ``n_folds<TAB>n`` then, per fold, the ``n`` genuine
    lines followed by the ``n`` impostor lines (tab separated), which :func:`read_pairs` reads back
    with ``folds`` = fold index. Returns the written path.

    Raises:
        FaceforgeError: no folds, unequal counts, names with whitespace or image numbers < 1.
    """
    out = Path(path)
    folds = list(pairs_by_fold)
    if not folds:
        raise FaceforgeError(f"write_lfw_pairs({out}): no folds given")
    n = len(folds[0][0])
    if n == 0:
        raise FaceforgeError(f"write_lfw_pairs({out}): fold 0 has no genuine pairs")
    lines = [f"{len(folds)}\t{n}"]
    for f, fold in enumerate(folds):
        if len(fold) != 2:
            raise FaceforgeError(f"write_lfw_pairs({out}): fold {f} must be a (genuine, impostor) tuple")
        gen, imp = fold
        if len(gen) != n or len(imp) != n:
            raise FaceforgeError(
                f"write_lfw_pairs({out}): fold {f} has {len(gen)} genuine and {len(imp)} impostor pairs; "
                f"every fold needs exactly {n} of each (as fold 0)"
            )
        for g in gen:
            if len(g) != 3:
                raise FaceforgeError(
                    f"write_lfw_pairs({out}): fold {f} genuine entry {g!r} is not (name, i, j)"
                )
            name, i, j = g
            _check_entry(out, f, name, i, j)
            lines.append(f"{name}\t{int(i)}\t{int(j)}")
        for m in imp:
            if len(m) != 4:
                raise FaceforgeError(
                    f"write_lfw_pairs({out}): fold {f} impostor entry {m!r} is not (name1, i, name2, j)"
                )
            n1, i, n2, j = m
            _check_entry(out, f, n1, i, i)
            _check_entry(out, f, n2, j, j)
            lines.append(f"{n1}\t{int(i)}\t{n2}\t{int(j)}")
    out.parent.mkdir(parents=True, exist_ok=True)
    write_text(out, "\n".join(lines) + "\n")
    return out


def _check_entry(out: Path, fold: int, name: str, i: int, j: int) -> None:
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise FaceforgeError(
            f"write_lfw_pairs({out}): fold {fold}: name {name!r} must be non-empty, no spaces"
        )
    for v in (i, j):
        if isinstance(v, bool) or int(v) != v or int(v) < 1:
            raise FaceforgeError(
                f"write_lfw_pairs({out}): fold {fold}: image number {v!r} must be an int >= 1"
            )


def write_pairs_csv(
    path: str | os.PathLike[str], pairs: Pairs, relative_to: str | os.PathLike[str] | None = None
) -> Path:
    """Write ``path_a,path_b,label,fold`` CSV (paths relative to ``relative_to`` when given)."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    base = os.fspath(relative_to) if relative_to is not None else None
    with naming_errors(out), open(out, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["path_a", "path_b", "label", "fold"])
        for a, b, s, f in zip(pairs.paths_a, pairs.paths_b, pairs.issame, pairs.folds):
            if base is not None:
                a, b = os.path.relpath(a, base), os.path.relpath(b, base)
            w.writerow([a, b, int(bool(s)), int(f)])
    return out


def make_pairs(
    groups: Mapping[str, Sequence[str]], n_folds: int = 10, per_fold: int = 300, seed: int = 0
) -> list[tuple[list[tuple[str, str, str]], list[tuple[str, str, str, str]]]]:
    """Draw balanced verification pairs in identity-disjoint folds (as LFW View-2 does).

    ``groups`` maps an identity to its items (file names or paths). Identities are shuffled with
    ``seed`` and dealt round-robin to ``n_folds`` folds; each fold gets ``per_fold`` distinct genuine
    pairs ``(id, item_a, item_b)`` (spread over its identities with >= 2 items) and ``per_fold``
    distinct impostor pairs ``(id1, item_a, id2, item_b)`` drawn within the fold.

    Raises:
        FaceforgeError: a fold cannot hold ``per_fold`` distinct pairs of a kind (the message says how
            many it can).
    """
    if n_folds < 1 or per_fold < 1:
        raise FaceforgeError(f"make_pairs: n_folds={n_folds} and per_fold={per_fold} must be >= 1")
    ids = sorted(k for k, v in groups.items() if len(v) > 0)
    if len(ids) < 2 * n_folds:
        raise FaceforgeError(
            f"make_pairs: {len(ids)} identities with images; {n_folds} folds need >= {2 * n_folds}"
        )
    rng = np.random.default_rng(seed)
    order = [ids[i] for i in rng.permutation(len(ids))]
    out = []
    for f in range(n_folds):
        fold_ids = order[f::n_folds]
        multi = [i for i in fold_ids if len(groups[i]) >= 2]
        max_gen = sum(len(groups[i]) * (len(groups[i]) - 1) // 2 for i in multi)
        if max_gen < per_fold:
            raise FaceforgeError(
                f"make_pairs: fold {f} can make only {max_gen} distinct genuine pairs (< {per_fold}); "
                "lower the pairs per fold or the number of folds, or add images"
            )
        used: set[tuple[str, int, int]] = set()
        gen: list[tuple[str, str, str]] = []
        while len(gen) < per_fold:
            for ident in (multi[i] for i in rng.permutation(len(multi))):
                items = groups[ident]
                n = len(items)
                for _ in range(20):
                    a, b = sorted(rng.choice(n, 2, replace=False).tolist())
                    if (ident, a, b) not in used:
                        used.add((ident, a, b))
                        gen.append((ident, items[a], items[b]))
                        break
                if len(gen) == per_fold:
                    break
        sizes = [len(groups[i]) for i in fold_ids]
        total = sum(sizes)
        max_imp = (total * total - sum(s * s for s in sizes)) // 2
        if max_imp < per_fold:
            raise FaceforgeError(
                f"make_pairs: fold {f} can make only {max_imp} distinct impostor pairs (< {per_fold})"
            )
        used_imp: set[tuple[str, int, str, int]] = set()
        imp: list[tuple[str, str, str, str]] = []
        while len(imp) < per_fold:
            i1, i2 = rng.choice(len(fold_ids), 2, replace=False).tolist()
            n1, n2 = fold_ids[i1], fold_ids[i2]
            a = int(rng.integers(len(groups[n1])))
            b = int(rng.integers(len(groups[n2])))
            key = (n1, a, n2, b) if n1 < n2 else (n2, b, n1, a)
            if key in used_imp:
                continue
            used_imp.add(key)
            imp.append((key[0], groups[key[0]][key[1]], key[2], groups[key[2]][key[3]]))
        out.append((gen, imp))
    return out


_LFW_FILE = re.compile(r"^(?P<name>.+)_(?P<num>\d+)\.jpg$")


def write_folder_pairs(
    root: str | os.PathLike[str],
    out: str | os.PathLike[str],
    fmt: str = "lfw",
    n_folds: int = 10,
    per_fold: int = 300,
    seed: int = 0,
) -> Path:
    """Draw balanced pairs in identity-disjoint folds from ``root/ID/*.jpg`` and write them to ``out``.

    ``fmt`` ``lfw`` writes LFW's ``pairs.txt`` (files must be named ``ID/ID_NNNN.jpg``), ``csv`` a
    pairs CSV with paths relative to ``out``'s folder.
    """
    from faceforge.data.splits import scan_folder

    root_p = Path(root).expanduser()
    _, groups = scan_folder(root_p, "folder")
    folds = make_pairs(groups, n_folds=n_folds, per_fold=per_fold, seed=seed)
    out_p = Path(out)
    if fmt == "lfw":

        def num(ident: str, rel: str) -> int:
            m = _LFW_FILE.match(Path(rel).name)
            if not m or m["name"] != ident or Path(rel).parent.name != ident:
                raise FaceforgeError(
                    f"make-pairs: {root_p / rel} is not named '{ident}/{ident}_NNNN.jpg' as the LFW format "
                    "needs; use --format csv"
                )
            return int(m["num"])

        lfw = [
            (
                [(i, num(i, a), num(i, b)) for i, a, b in gen],
                [(i1, num(i1, a), i2, num(i2, b)) for i1, a, i2, b in imp],
            )
            for gen, imp in folds
        ]
        write_lfw_pairs(out_p, lfw)
    else:
        pa, pb, same, fl = [], [], [], []
        for f, (gen, imp) in enumerate(folds):
            for _i, a, b in gen:
                pa.append(str(root_p / a))
                pb.append(str(root_p / b))
                same.append(True)
                fl.append(f)
            for _i1, a, _i2, b in imp:
                pa.append(str(root_p / a))
                pb.append(str(root_p / b))
                same.append(False)
                fl.append(f)
        pairs = Pairs(pa, pb, np.array(same), np.array(fl))
        write_pairs_csv(out_p, pairs, relative_to=out_p.parent.resolve())
    return out_p
