"""A face gallery (:class:`Gallery`): embeddings + labels/metadata + a Faiss index (Johnson, Douze, Jégou,
"Billion-scale similarity search with GPUs", IEEE TBD 2019; IVF-PQ: Jégou et al., "Product quantization
for nearest neighbor search", TPAMI 2011), saved together in a directory crash-safely, checked on load,
searched by cosine. Details: docs/inference.md, "Galleries" and "Gallery files", and docs/security.md.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
import struct
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from faceforge.errors import FaceforgeError

# default_nprobe is re-exported: the rule lives in eval.ivf, callers still find it beside Gallery
from faceforge.eval.ivf import build_ivf, default_nlist
from faceforge.eval.ivf import default_nprobe as default_nprobe
from faceforge.fileio import dir_lock, exchange_paths, fsync_dir, fsync_file, naming_errors

__all__ = ["FORMAT", "INDEX_KINDS", "Gallery", "choose_index"]

FORMAT = "faceforge-gallery/1"
INDEX_KINDS = ("flat", "ivf", "ivfpq")
FLAT_MAX = 20_000
IVF_MIN = 1_000  # below this an IVF gallery searches exactly (too few points to train k-means)
IVFPQ_MIN = 10_000  # 8-bit PQ codebooks want 39·256 training points (Faiss's own warning level)
_FILES = ("manifest.json", "embeddings.npy", "ids.npy", "entries.json", "index.faiss")
MAX_DIM = 65_536
#: JSON files larger than this are refused before parsing (entries.json: ~100 bytes per entry)
_MAX_MANIFEST_BYTES = 16 * 2**20
_MAX_ENTRIES_BYTES_PER_ENTRY = 64 * 1024

#: test hook: called with the name of each step of :meth:`Gallery.save` (fault injection)
FAULT_HOOK: Callable[[str], None] | None = None
#: swap folders atomically where the OS can (tests switch it off to exercise the two-rename path)
USE_EXCHANGE = True


def _step(name: str) -> None:
    if FAULT_HOOK is not None:
        FAULT_HOOK(name)


def _faiss() -> Any:
    try:
        import faiss
    except ImportError:
        raise FaceforgeError("galleries need faiss: pip install faiss-cpu (or 'faceforge[faiss]')") from None
    return faiss


def choose_index(n: int) -> str:
    """The index kind ``auto`` picks for ``n`` entries."""
    return "flat" if n < FLAT_MAX else "ivfpq"


def _as_embeddings(x: Any, dim: int | None, what: str) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    a = np.asarray(x)
    if a.ndim == 1 and a.size and dim is not None and a.shape[0] == dim:
        a = a[None, :]
    if a.ndim != 2 or (dim is not None and a.shape[1] != dim) or a.shape[1] == 0:
        want = f"[N, {dim}]" if dim is not None else "[N, D]"
        raise FaceforgeError(f"{what} must be a {want} array, got shape {tuple(a.shape)}")
    if not np.issubdtype(a.dtype, np.number) or np.issubdtype(a.dtype, np.complexfloating):
        raise FaceforgeError(f"{what} must be real numbers, got dtype {a.dtype}")
    a = np.ascontiguousarray(a, dtype=np.float32)
    if not np.isfinite(a).all():
        raise FaceforgeError(f"{what} contain NaN or infinite values")
    n = np.linalg.norm(a, axis=1, keepdims=True)
    if len(a) and float(n.min()) == 0.0:
        raise FaceforgeError(f"{what} has an all-zero row ({int(np.flatnonzero(n[:, 0] == 0)[0])})")
    if not len(a) or float(np.abs(n - 1).max()) <= 1e-6:
        return a  # already unit length (embed() output): no 2 GB copy for a 1M gallery
    return a / n


def _as_entries(labels: Sequence[str], meta: Sequence[dict] | None, n: int) -> list[dict[str, Any]]:
    if isinstance(labels, (str, bytes)):
        raise FaceforgeError("labels must be a sequence of strings (one per embedding), got a single string")
    labels = [str(v) for v in labels]
    if len(labels) != n:
        raise FaceforgeError(f"{len(labels)} labels given for {n} embeddings")
    if meta is None:
        meta = [{} for _ in range(n)]
    meta = list(meta)
    if len(meta) != n:
        raise FaceforgeError(f"{len(meta)} metadata entries given for {n} embeddings")
    out = []
    for i, (lab, m) in enumerate(zip(labels, meta)):
        if not isinstance(m, dict):
            raise FaceforgeError(f"metadata of entry {i} ({lab!r}) must be a dict, got {type(m).__name__}")
        try:
            json.dumps(m, allow_nan=False)
        except (TypeError, ValueError) as e:
            raise FaceforgeError(f"metadata of entry {i} ({lab!r}) is not JSON-serialisable: {e}") from None
        out.append({"label": lab, "meta": dict(m)})
    return out


class Gallery:
    """Labelled, L2-normalised embeddings with a Faiss index; see docs/inference.md, "Galleries"."""

    def __init__(
        self,
        embeddings: np.ndarray,
        ids: np.ndarray,
        entries: list[dict[str, Any]],
        *,
        index: str = "auto",
        model_info: dict[str, Any] | None = None,
        params: dict[str, Any] | None = None,
        requested: dict[str, int] | None = None,
        faiss_index: Any = None,
    ) -> None:
        if index != "auto" and index not in INDEX_KINDS:
            from faceforge.errors import did_you_mean

            raise FaceforgeError(
                f"unknown gallery index {index!r}{did_you_mean(index, INDEX_KINDS)}; "
                f"expected 'auto' or one of {INDEX_KINDS}"
            )
        self.embeddings = embeddings
        self.ids = ids.astype(np.int64)
        self.entries = entries
        self.mode = index
        self.model_info = dict(model_info or {})
        self.params: dict[str, Any] = dict(params or {"kind": "flat"})
        self.requested: dict[str, int] = dict(requested or {})
        self.next_id = int(ids.max()) + 1 if len(ids) else 0
        self.index = faiss_index
        if self.index is None:
            self._rebuild()

    # ---------------------------------------------------------------------------------- building
    @classmethod
    def build(
        cls,
        embeddings: np.ndarray,
        labels: Sequence[str],
        meta: Sequence[dict] | None = None,
        *,
        index: str = "auto",
        model_info: dict[str, Any] | None = None,
        nlist: int | None = None,
        nprobe: int | None = None,
    ) -> Gallery:
        """A gallery of ``embeddings`` ``[N, D]`` labelled ``labels`` (N strings), with optional metadata.

        ``index``: ``"auto"`` (flat / IVF / IVF-PQ by size), ``"flat"``, ``"ivf"`` or ``"ivfpq"``;
        ``nlist``/``nprobe`` override the IVF defaults.
        """
        emb = _as_embeddings(embeddings, None, "embeddings")
        entries = _as_entries(labels, meta, len(emb))
        for name, v in (("nlist", nlist), ("nprobe", nprobe)):
            if v is not None and (isinstance(v, bool) or int(v) < 1):
                raise FaceforgeError(f"{name} must be a positive integer, got {v!r}")
        requested = {k: int(v) for k, v in (("nlist", nlist), ("nprobe", nprobe)) if v is not None}
        return cls(
            emb,
            np.arange(len(emb), dtype=np.int64),
            entries,
            index=index,
            model_info=model_info,
            requested=requested,
        )

    @property
    def dim(self) -> int:
        """Embedding size."""
        return int(self.embeddings.shape[1])

    @property
    def kind(self) -> str:
        """The index kind in use (``flat``, ``ivf`` or ``ivfpq``)."""
        return str(self.params.get("kind", "flat"))

    @property
    def labels(self) -> list[str]:
        """Entry labels in row order."""
        return [e["label"] for e in self.entries]

    def __len__(self) -> int:
        return len(self.entries)

    @property
    def nprobe(self) -> int | None:
        """Inverted lists visited per query (IVF kinds; None for flat). Settable: recall vs speed."""
        return int(self.index.nprobe) if self.kind != "flat" else None

    @nprobe.setter
    def nprobe(self, value: int) -> None:
        if self.kind == "flat":
            raise FaceforgeError("nprobe applies to IVF galleries only; this one is flat (exact)")
        if isinstance(value, bool) or int(value) < 1:
            raise FaceforgeError(f"nprobe must be a positive integer, got {value!r}")
        self.index.nprobe = min(int(value), int(self.params["nlist"]))
        self.params["nprobe"] = int(self.index.nprobe)
        self.requested["nprobe"] = int(value)

    def _wanted_kind(self, n: int) -> str:
        kind = choose_index(n) if self.mode == "auto" else self.mode
        # k-means / PQ training needs data: tiny galleries always search exactly.
        if (kind == "ivf" and n < IVF_MIN) or (kind == "ivfpq" and n < IVFPQ_MIN):
            return "flat"
        return kind

    def _rebuild(self) -> None:
        """(Re)create the Faiss index of the fitting kind from the stored embeddings."""
        faiss = _faiss()
        n, d = self.embeddings.shape
        kind = self._wanted_kind(n)
        if kind == "flat":
            index = faiss.IndexIDMap2(faiss.IndexFlatIP(d))
            self.params = {"kind": "flat"}
        else:
            nlist = min(int(self.requested.get("nlist") or default_nlist(n)), n)
            index = build_ivf(
                faiss,
                self.embeddings,
                nlist=nlist,
                nprobe=self.requested.get("nprobe"),
                pq_m=_pq_subquantizers(d) if kind == "ivfpq" else None,
                min_train=IVFPQ_MIN if kind == "ivfpq" else 0,
            )
            self.params = {"kind": kind, "nlist": nlist, "nprobe": int(index.nprobe)}
            if kind == "ivfpq":
                self.params["pq_m"] = _pq_subquantizers(d)
        if n:
            index.add_with_ids(self.embeddings, self.ids)
        self.index = index

    # ---------------------------------------------------------------------------------- editing
    def add(self, embeddings: np.ndarray, labels: Sequence[str], meta: Sequence[dict] | None = None) -> None:
        """Append entries (same size); an ``auto`` gallery changes index kind when it outgrows one."""
        emb = _as_embeddings(embeddings, self.dim, "embeddings")
        entries = _as_entries(labels, meta, len(emb))
        if not len(emb):
            return
        ids = np.arange(self.next_id, self.next_id + len(emb), dtype=np.int64)
        self.next_id += len(emb)
        self.embeddings = np.concatenate([self.embeddings, emb])
        self.ids = np.concatenate([self.ids, ids])
        self.entries.extend(entries)
        if self._wanted_kind(len(self)) != self.kind:
            self._rebuild()
        else:
            self.index.add_with_ids(emb, ids)

    def remove(self, labels: Sequence[str]) -> int:
        """Remove every entry whose label is in ``labels``; returns how many were removed."""
        if isinstance(labels, str):
            labels = [labels]
        drop = {str(v) for v in labels}
        mask = np.array([e["label"] in drop for e in self.entries], dtype=bool)
        count = int(mask.sum())
        if not count:
            return 0
        faiss = _faiss()
        gone = self.ids[mask]
        self.embeddings = np.ascontiguousarray(self.embeddings[~mask])
        self.ids = self.ids[~mask]
        self.entries = [e for e, m in zip(self.entries, mask) if not m]
        if self._wanted_kind(len(self)) != self.kind:
            self._rebuild()
        else:
            removed = self.index.remove_ids(faiss.IDSelectorBatch(gone))
            if removed != count:
                self._rebuild()
        return count

    # ---------------------------------------------------------------------------------- search
    def search(self, queries: np.ndarray, k: int = 5) -> list[list[dict[str, Any]]]:
        """Top-``k`` entries by cosine for each query: ``[{"label", "similarity", "index", "meta"}]``."""
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise FaceforgeError(f"k must be a positive integer, got {k!r}")
        q = _as_embeddings(queries, self.dim, "queries")
        if len(self) == 0:
            return [[] for _ in range(len(q))]
        kk = min(int(k), len(self))
        if self.kind == "ivfpq":
            # PQ distances are approximate: fetch more candidates and re-rank them exactly.
            _, cand = self.index.search(q, min(len(self), max(10 * kk, 100)))
            rows_all = self._rows(cand)
            sims, rows = [], []
            for qi in range(len(q)):
                r = rows_all[qi][rows_all[qi] >= 0]
                s = self.embeddings[r] @ q[qi]
                order = np.argsort(-s, kind="stable")[:kk]
                sims.append(s[order])
                rows.append(r[order])
        else:
            d, ids = self.index.search(q, kk)
            rows_all = self._rows(ids)
            sims = [d[i][rows_all[i] >= 0] for i in range(len(q))]
            rows = [rows_all[i][rows_all[i] >= 0] for i in range(len(q))]
        return [
            [
                {
                    "label": self.entries[int(r)]["label"],
                    "similarity": float(s),
                    "index": int(r),
                    "meta": self.entries[int(r)]["meta"],
                }
                for s, r in zip(srow, rrow)
            ]
            for srow, rrow in zip(sims, rows)
        ]

    def _rows(self, ids: np.ndarray) -> np.ndarray:
        """Faiss ids → current row numbers (``-1`` stays ``-1``); ids are kept in increasing order."""
        pos = np.searchsorted(self.ids, ids)
        pos = np.clip(pos, 0, len(self.ids) - 1)
        ok = (ids >= 0) & (self.ids[pos] == ids)
        return np.where(ok, pos, -1)

    # ---------------------------------------------------------------------------------- persistence
    def manifest(self) -> dict[str, Any]:
        """What ``manifest.json`` holds."""
        return {
            "format": FORMAT,
            "count": len(self),
            "dim": self.dim,
            "mode": self.mode,
            "index": dict(self.params),
            "requested": dict(self.requested),
            "next_id": self.next_id,
            "model": self.model_info,
            "saved": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }

    def save(self, path: str | os.PathLike) -> Path:
        """Write the gallery directory ``path`` (replacing an existing gallery there); returns it.

        Crash-safe: see docs/inference.md. Steps reported to :data:`FAULT_HOOK`: ``write <file>``,
        ``fsync <file>``, ``fsync folder``, ``switch`` (``switch aside`` / ``switch in`` without
        an atomic swap), ``fsync parent``, ``remove old``.
        """
        faiss = _faiss()
        dest = Path(path)
        if dest.exists() and not dest.is_dir():
            raise FaceforgeError(f"gallery path {dest} is a file; expected a directory (or a new name)")
        if dest.is_dir() and any(dest.iterdir()) and not (dest / "manifest.json").is_file():
            raise FaceforgeError(
                f"{dest} is a non-empty directory that is not a gallery; refusing to overwrite"
            )
        parent = dest.parent
        parent.mkdir(parents=True, exist_ok=True)
        writers: list[tuple[str, Callable[[Path], None]]] = [
            ("embeddings.npy", lambda f: np.save(f, self.embeddings, allow_pickle=False)),
            ("ids.npy", lambda f: np.save(f, self.ids, allow_pickle=False)),
            ("entries.json", lambda f: f.write_text(json.dumps(self.entries, allow_nan=False))),
            ("index.faiss", lambda f: faiss.write_index(self.index, str(f))),
            # last: a folder with a manifest was written whole (the recovery of load relies on it)
            ("manifest.json", lambda f: f.write_text(json.dumps(self.manifest(), indent=2))),
        ]
        with dir_lock(parent):
            _recover(dest)
            new = parent / f".{dest.name}.new-{os.getpid()}-{secrets.token_hex(4)}"
            new.mkdir()  # mode 0o777 less the umask
            switched = False
            try:
                for name, write in writers:
                    with naming_errors(dest / name):  # a full disk: the one-line error says which file
                        _step(f"write {name}")
                        write(new / name)
                        _step(f"fsync {name}")
                        fsync_file(new / name)
                _step("fsync folder")
                fsync_dir(new)
                if not dest.exists():
                    _step("switch")
                    os.rename(new, dest)
                    switched = True
                    _step("fsync parent")
                    fsync_dir(parent)
                    return dest
                if USE_EXCHANGE:
                    _step("switch")
                if USE_EXCHANGE and exchange_paths(new, dest):
                    switched = True  # `new` now holds the old version
                else:
                    old = parent / f".{dest.name}.old-{os.getpid()}-{secrets.token_hex(4)}"
                    _step("switch aside")
                    os.rename(dest, old)
                    _step("switch in")
                    os.rename(new, dest)
                    switched = True
                    new = old
                _step("fsync parent")
                fsync_dir(parent)
                _step("remove old")
                shutil.rmtree(new, ignore_errors=True)
            except BaseException:
                if not switched:
                    shutil.rmtree(new, ignore_errors=True)
                raise
        return dest

    @classmethod
    def load(cls, path: str | os.PathLike) -> Gallery:
        """Read a gallery directory written by :meth:`save`, every file checked (docs/security.md)."""
        faiss = _faiss()
        p = Path(path)
        with contextlib.suppress(OSError), dir_lock(p.parent, timeout_s=30, required=False) as locked:
            if locked:
                _recover(p)
        if not p.is_dir():
            raise FaceforgeError(f"gallery {p} does not exist (expected a directory made by 'gallery build')")
        missing = [f for f in _FILES if not (p / f).is_file()]
        if missing:
            raise FaceforgeError(f"gallery {p} is incomplete: missing {', '.join(missing)}")
        man = _read_json(p / "manifest.json", _MAX_MANIFEST_BYTES)
        if not isinstance(man, dict) or man.get("format") != FORMAT:
            raise FaceforgeError(
                f"gallery {p}/manifest.json has format "
                f"{man.get('format') if isinstance(man, dict) else None!r}; "
                f"expected {FORMAT!r}"
            )
        n, dim, mode, params, requested, next_id = _check_manifest(man, p / "manifest.json")
        emb = _read_npy(p / "embeddings.npy", (np.float32, np.float64), n, dim, p)
        ids = _read_npy(p / "ids.npy", (np.int64, np.int32), n, None, p).astype(np.int64)
        if n and (int(ids[0]) < 0 or (np.diff(ids) <= 0).any()):
            raise FaceforgeError(
                f"gallery {p}/ids.npy: ids must be non-negative and strictly increasing (as save writes them)"
            )
        if n and int(ids[-1]) >= next_id:
            raise FaceforgeError(
                f"gallery {p}/manifest.json: next_id {next_id} must exceed the largest id {int(ids[-1])}"
            )
        emb = np.ascontiguousarray(emb, dtype=np.float32)
        if not np.isfinite(emb).all():
            raise FaceforgeError(f"gallery {p}/embeddings.npy holds NaN or infinite values")
        entries = _check_entries(
            _read_json(p / "entries.json", _MAX_MANIFEST_BYTES + n * _MAX_ENTRIES_BYTES_PER_ENTRY), n, p
        )
        kind = params["kind"]
        index = None
        if kind != "flat":
            _check_faiss_file(p / "index.faiss", n, dim, params)
            try:
                index = faiss.read_index(str(p / "index.faiss"))
            except RuntimeError as e:
                raise FaceforgeError(
                    f"gallery {p}/index.faiss cannot be read by faiss: {str(e).splitlines()[0]}"
                ) from None
            if index.ntotal != n or index.d != dim:
                raise FaceforgeError(
                    f"gallery {p}/index.faiss holds {index.ntotal}×{index.d}, expected {n}×{dim}"
                )
        # A flat index is rebuilt from the checked embeddings (exact, and nothing of index.faiss is trusted).
        g = cls(
            emb,
            ids,
            entries,
            index=mode,
            model_info=man.get("model") or {},
            params=params,
            requested=requested,
            faiss_index=index,
        )
        g.next_id = max(g.next_id, next_id)
        if "nprobe" in g.params and index is not None and hasattr(index, "nprobe"):
            index.nprobe = int(g.params["nprobe"])
        return g

    def __repr__(self) -> str:
        return f"Gallery({len(self)} entries, dim {self.dim}, index {self.kind})"


def _pq_subquantizers(d: int) -> int:
    """``d/8`` sub-quantizers (64 bytes for 512-d), the largest divisor of ``d`` not above it."""
    m = max(1, d // 8)
    while d % m:
        m -= 1
    return m


# ------------------------------------------------------------------------------------------ recovery


def _recover(dest: Path) -> None:
    """Under the parent's lock: bring back a gallery a kill left between two renames, remove leftovers.

    ``.G.new-*`` with a manifest is a whole new version, ``.G.old-*`` the previous one; when ``G`` is
    absent the newest whole new version (else the old one) is renamed into place.
    """
    parent = dest.parent
    if not parent.is_dir():
        return
    pat = re.compile(rf"^\.{re.escape(dest.name)}\.(new|old)-\d+-[0-9a-f]+$")
    found = [(m.group(1), q) for q in parent.iterdir() if (m := pat.match(q.name)) and q.is_dir()]
    if not found:
        return
    if not dest.exists():
        whole = [q for kind, q in found if kind == "new" and (q / "manifest.json").is_file()]
        olds = [q for kind, q in found if kind == "old" and (q / "manifest.json").is_file()]
        pick = (
            max(whole, key=lambda q: q.stat().st_mtime)
            if whole
            else (max(olds, key=lambda q: q.stat().st_mtime) if olds else None)
        )
        if pick is not None:
            os.rename(pick, dest)
            fsync_dir(parent)
    for _kind, q in found:
        if q.exists():
            shutil.rmtree(q, ignore_errors=True)


# ------------------------------------------------------------------------------------------ checks


def _read_json(path: Path, max_bytes: int) -> Any:
    size = path.stat().st_size
    if size > max_bytes:
        raise FaceforgeError(f"gallery file {path} is {size} bytes, more than a gallery of its size needs")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError) as e:
        raise FaceforgeError(f"gallery file {path} is not valid JSON: {str(e)[:200]}") from None


def _int_field(man: dict, key: str, where: Path, lo: int, hi: int, default: Any = None) -> int:
    v = man.get(key, default)
    if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
        raise FaceforgeError(f"{where}: {key!r} is {v!r}; expected an integer in {lo}..{hi}")
    return v


def _check_manifest(man: dict, where: Path) -> tuple[int, int, str, dict, dict, int]:
    n = _int_field(man, "count", where, 0, 2**40)
    dim = _int_field(man, "dim", where, 1, MAX_DIM)
    mode = man.get("mode", "auto")
    if mode != "auto" and mode not in INDEX_KINDS:
        raise FaceforgeError(f"{where}: 'mode' is {mode!r}; expected 'auto' or one of {INDEX_KINDS}")
    params = man.get("index") or {"kind": "flat"}
    if not isinstance(params, dict) or params.get("kind") not in INDEX_KINDS:
        raise FaceforgeError(
            f"{where}: 'index' is {params!r}; expected {{'kind': one of {INDEX_KINDS}, ...}}"
        )
    params = dict(params)
    if params["kind"] != "flat":
        nlist = _int_field(params, "nlist", where, 1, max(1, n))
        _int_field(params, "nprobe", where, 1, nlist)
        if params["kind"] == "ivfpq":
            _int_field(params, "pq_m", where, 1, dim)
    requested = man.get("requested") or {}
    if not isinstance(requested, dict) or any(
        k not in ("nlist", "nprobe") or isinstance(v, bool) or not isinstance(v, int) or v < 1
        for k, v in requested.items()
    ):
        raise FaceforgeError(
            f"{where}: 'requested' is {requested!r}; expected positive 'nlist'/'nprobe' integers"
        )
    next_id = _int_field(man, "next_id", where, 0, 2**62, default=n)
    if not isinstance(man.get("model") or {}, dict):
        raise FaceforgeError(f"{where}: 'model' must be an object")
    return n, dim, str(mode), params, dict(requested), next_id


def _read_npy(path: Path, dtypes: tuple[type, ...], n: int, dim: int | None, gallery: Path) -> np.ndarray:
    """An ``.npy`` whose header (dtype, shape, byte count) is checked before the array is read."""
    want = (n, dim) if dim is not None else (n,)
    try:
        with open(path, "rb") as fh:
            version = np.lib.format.read_magic(fh)
            if version == (1, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_1_0(fh)
            elif version in ((2, 0), (3, 0)):
                shape, fortran, dtype = np.lib.format.read_array_header_2_0(fh)
            else:
                raise ValueError(f"unknown .npy version {version}")
            offset = fh.tell()
            if dtype not in [np.dtype(t) for t in dtypes] or tuple(shape) != want or fortran:
                raise FaceforgeError(
                    f"gallery {gallery} is inconsistent: {path.name} holds {dtype} {tuple(shape)}; expected "
                    f"{'/'.join(np.dtype(t).name for t in dtypes)} {want} (the manifest's count and dim)"
                )
            size = path.stat().st_size
            if size != offset + int(np.prod(want, dtype=np.int64)) * dtype.itemsize:
                raise FaceforgeError(
                    f"gallery {gallery}/{path.name} is {size} bytes; its header promises "
                    f"{offset + int(np.prod(want, dtype=np.int64)) * dtype.itemsize}"
                )
            return np.fromfile(fh, dtype=dtype, count=int(np.prod(want, dtype=np.int64))).reshape(want)
    except FaceforgeError:
        raise
    except (OSError, ValueError) as e:
        raise FaceforgeError(f"gallery {gallery}/{path.name} cannot be read as .npy: {e}") from None


def _check_entries(entries: Any, n: int, gallery: Path) -> list[dict[str, Any]]:
    if not isinstance(entries, list) or len(entries) != n:
        raise FaceforgeError(
            f"gallery {gallery} is inconsistent: manifest says {n} entries, entries.json has "
            f"{len(entries) if isinstance(entries, list) else type(entries).__name__}"
        )
    for i, e in enumerate(entries):
        if (
            not isinstance(e, dict)
            or not isinstance(e.get("label"), str)
            or not isinstance(e.get("meta", {}), dict)
        ):
            raise FaceforgeError(
                f"gallery {gallery}/entries.json entry {i} is {str(e)[:80]}; expected "
                '{"label": str, "meta": {...}}'
            )
        e.setdefault("meta", {})
    return entries


class _Reader:
    """Bounds-checked little-endian reads of an index file (nothing is allocated from its numbers)."""

    def __init__(self, data: bytes, where: str) -> None:
        self.data, self.pos, self.where = data, 0, where

    def take(self, n: int) -> bytes:
        if n < 0 or self.pos + n > len(self.data):
            raise FaceforgeError(
                f"{self.where}: a stored length runs past the end of the file (offset {self.pos})"
            )
        b = self.data[self.pos : self.pos + n]
        self.pos += n
        return b

    def u(self, fmt: str) -> int:
        return struct.unpack("<" + fmt, self.take(struct.calcsize("<" + fmt)))[0]

    def vector(self, item: int) -> int:
        """Skip a faiss vector (size_t count, then items); returns the count."""
        count = self.u("Q")
        self.take(count * item)
        return count


def _faiss_header(r: _Reader, d: int, ntotal: int | None) -> None:
    got_d, got_n = r.u("i"), r.u("q")
    r.u("q"), r.u("q"), r.u("B")
    metric = r.u("i")
    if metric > 1:
        r.u("f")
    if got_d != d or (ntotal is not None and got_n != ntotal):
        raise FaceforgeError(f"{r.where}: index of {got_n}×{got_d}, expected {ntotal}×{d}")


def _check_faiss_file(path: Path, n: int, d: int, params: dict) -> None:
    """Walk an IVF-flat / IVF-PQ index file as Faiss writes it, checking every length first."""
    where = f"gallery {path.parent}/{path.name}"
    data = path.read_bytes()
    if len(data) > 64 * (n + 1) * (d * 4 + 64) + 2**24:
        raise FaceforgeError(f"{where} is {len(data)} bytes, far more than {n}×{d} entries need")
    r = _Reader(data, where)
    four = r.take(4)
    want = {"ivf": b"IwFl", "ivfpq": b"IwPQ"}[params["kind"]]
    if four != want:
        raise FaceforgeError(
            f"{where} starts with {four!r}; a {params['kind']} gallery index starts with {want!r}"
        )
    _faiss_header(r, d, n)
    nlist = r.u("Q")
    r.u("Q")  # nprobe
    if nlist != params["nlist"]:
        raise FaceforgeError(f"{where}: {nlist} lists, the manifest says {params['nlist']}")
    if r.take(4) != b"IxFI":
        raise FaceforgeError(f"{where}: the coarse quantizer is not a flat inner-product index")
    _faiss_header(r, d, nlist)
    if r.u("Q") * 4 != nlist * d * 4:  # XB vector of codes in 4-byte units
        raise FaceforgeError(f"{where}: the coarse quantizer does not hold {nlist}×{d} centroids")
    r.take(nlist * d * 4)
    if r.u("b") not in (0, 1, 2):  # direct map type
        raise FaceforgeError(f"{where}: unknown direct map type")
    if r.vector(8) not in (0, n):
        raise FaceforgeError(f"{where}: direct map of the wrong size")
    code_size = d * 4
    if params["kind"] == "ivfpq":
        r.u("B")  # by_residual
        code_size = r.u("Q")
        pq_d, m, nbits = r.u("Q"), r.u("Q"), r.u("Q")
        if pq_d != d or m != params["pq_m"] or not 1 <= nbits <= 16 or code_size != (m * nbits + 7) // 8:
            raise FaceforgeError(f"{where}: product quantizer {m}×{nbits} bits of {pq_d} dims does not fit")
        if r.vector(4) != d * (1 << nbits):
            raise FaceforgeError(f"{where}: product quantizer codebooks of the wrong size")
    if r.take(4) != b"ilar":
        raise FaceforgeError(f"{where}: inverted lists of an unknown kind")
    if r.u("Q") != nlist or r.u("Q") != code_size:
        raise FaceforgeError(f"{where}: inverted lists do not match {nlist} lists of {code_size}-byte codes")
    kind = r.take(4)
    count = r.u("Q")
    if count > 2 * nlist:
        raise FaceforgeError(f"{where}: {count} list sizes for {nlist} lists")
    raw = np.frombuffer(r.take(count * 8), dtype="<u8")
    if kind == b"full" and count == nlist:
        sizes = raw
    elif kind == b"sprs" and count % 2 == 0:
        if (raw[0::2] >= nlist).any():
            raise FaceforgeError(f"{where}: a list number beyond {nlist}")
        sizes = raw[1::2]
    else:
        raise FaceforgeError(f"{where}: malformed inverted list sizes")
    if int(sizes.sum(dtype=np.uint64)) != n or (sizes > n).any():
        raise FaceforgeError(
            f"{where}: inverted lists hold {int(sizes.sum(dtype=np.uint64))} entries, expected {n}"
        )
    r.take(n * (code_size + 8))
