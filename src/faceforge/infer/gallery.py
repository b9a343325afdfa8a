"""A face gallery: embeddings + labels/metadata + a Faiss index, saved together, searched by cosine.

Index kinds (Johnson, Douze, Jégou, "Billion-scale similarity search with GPUs", IEEE TBD 2019 —
the Faiss library; IVF = inverted file over a k-means coarse quantizer, PQ = Jégou et al., "Product
quantization for nearest neighbor search", TPAMI 2011):

``flat``
    ``IndexFlatIP`` in an ``IndexIDMap2``: exhaustive inner product, exact.
``ivf``
    ``IndexIVFFlat`` (inner product), ``nlist ≈ 2·sqrt(N)`` lists trained by k-means (10
    iterations) on at most ``64·nlist`` sampled entries; ``nprobe = nlist/32`` (clipped to
    [16, 128]) lists visited per query, settable with :attr:`Gallery.nprobe`.
``ivfpq``
    ``IndexIVFPQ`` (``dim/8`` sub-quantizers of 8 bits): the index stores 1/8 of the float bytes
    per entry; the candidates it returns are re-ranked with the exact stored embeddings.
``auto`` (default)
    ``flat`` below 50,000 entries, ``ivf`` below 1,000,000, ``ivfpq`` above; an ``auto`` gallery
    is rebuilt with the fitting kind when :meth:`Gallery.add` / :meth:`Gallery.remove` cross a
    boundary. Galleries too small to train k-means (IVF below 1,000 entries, IVF-PQ below 10,000)
    search exactly whatever kind was asked for.

Embeddings are L2-normalised on the way in, so inner product is cosine similarity. Every entry has a
stable 64-bit id (Faiss ids); results give its current row ``index``.

On disk a gallery is a directory::

    manifest.json     format, dim, count, index kind and parameters, model info
    embeddings.npy    float32 [N, D] (numpy .npy, read with allow_pickle=False)
    ids.npy           int64 [N]
    entries.json      [{"label": str, "meta": {...}}, ...]
    index.faiss       faiss.write_index of the search index

It is written into a temporary sibling directory and renamed into place, so a crash never leaves a
half-written gallery.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from faceforge.errors import FaceforgeError

__all__ = ["FORMAT", "INDEX_KINDS", "Gallery", "choose_index"]

FORMAT = "faceforge-gallery/1"
INDEX_KINDS = ("flat", "ivf", "ivfpq")
FLAT_MAX = 50_000
IVF_MAX = 1_000_000
IVF_MIN = 1_000  # below this an IVF gallery searches exactly (too few points to train k-means)
IVFPQ_MIN = 10_000  # 8-bit PQ codebooks want 39·256 training points (Faiss's own warning level)
_FILES = ("manifest.json", "embeddings.npy", "ids.npy", "entries.json", "index.faiss")


def _faiss() -> Any:
    try:
        import faiss
    except ImportError:
        raise FaceforgeError("galleries need faiss: pip install faiss-cpu (or 'faceforge[faiss]')") from None
    return faiss


def choose_index(n: int) -> str:
    """The index kind ``auto`` picks for ``n`` entries."""
    if n < FLAT_MAX:
        return "flat"
    return "ivf" if n < IVF_MAX else "ivfpq"


def default_nlist(n: int) -> int:
    """``≈ 2·sqrt(n)`` inverted lists, with at least 39 training points per list (Faiss's minimum)."""
    return max(1, min(round(2 * math.sqrt(n)), n // 39))


def default_nprobe(nlist: int) -> int:
    """Lists visited per query: ``nlist / 32`` clipped to [16, 128] (and to ``nlist``).

    At 1M entries (nlist 2000) that is 62 lists, ~31k scanned vectors: under 10 ms per query on one
    core of the CI machine (``benchmarks/gallery.py`` prints the recall/latency trade-off).
    """
    return min(nlist, max(16, min(128, nlist // 32)))


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
    """Labelled, L2-normalised embeddings with a Faiss index; see the module docstring."""

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
            nprobe = int(self.requested.get("nprobe") or default_nprobe(nlist))
            quantizer = faiss.IndexFlatIP(d)
            if kind == "ivf":
                index = faiss.IndexIVFFlat(quantizer, d, nlist, faiss.METRIC_INNER_PRODUCT)
            else:
                index = faiss.IndexIVFPQ(
                    quantizer, d, nlist, _pq_subquantizers(d), 8, faiss.METRIC_INNER_PRODUCT
                )
            # k-means on a sample: 64 points per list is plenty (Faiss itself caps at 256) and keeps
            # a 1M-entry build in seconds rather than minutes on a small CPU.
            n_train = min(n, max(64 * nlist, IVFPQ_MIN if kind == "ivfpq" else 0))
            if n_train < n:
                pick = np.sort(np.random.default_rng(0).choice(n, n_train, replace=False))
                sample = self.embeddings[pick]
            else:
                sample = self.embeddings
            # 10 k-means iterations instead of Faiss's 25: the lists barely change, the build time halves.
            index.cp.niter = 10
            index.train(sample)
            index.nprobe = min(nprobe, nlist)
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
        """Write the gallery directory ``path`` (replacing an existing gallery there); returns it."""
        faiss = _faiss()
        dest = Path(path)
        if dest.exists() and not dest.is_dir():
            raise FaceforgeError(f"gallery path {dest} is a file; expected a directory (or a new name)")
        if dest.is_dir() and any(dest.iterdir()) and not (dest / "manifest.json").is_file():
            raise FaceforgeError(
                f"{dest} is a non-empty directory that is not a gallery; refusing to overwrite"
            )
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
        try:
            np.save(tmp / "embeddings.npy", self.embeddings, allow_pickle=False)
            np.save(tmp / "ids.npy", self.ids, allow_pickle=False)
            (tmp / "entries.json").write_text(json.dumps(self.entries, allow_nan=False))
            faiss.write_index(self.index, str(tmp / "index.faiss"))
            (tmp / "manifest.json").write_text(json.dumps(self.manifest(), indent=2))
            old = None
            if dest.exists():
                old = dest.with_name(f".{dest.name}.old{os.getpid()}")
                os.replace(dest, old)
            os.replace(tmp, dest)
            if old is not None:
                shutil.rmtree(old, ignore_errors=True)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
        return dest

    @classmethod
    def load(cls, path: str | os.PathLike) -> Gallery:
        """Read a gallery directory written by :meth:`save` (no pickle anywhere)."""
        faiss = _faiss()
        p = Path(path)
        if not p.is_dir():
            raise FaceforgeError(f"gallery {p} does not exist (expected a directory made by 'gallery build')")
        missing = [f for f in _FILES if not (p / f).is_file()]
        if missing:
            raise FaceforgeError(f"gallery {p} is incomplete: missing {', '.join(missing)}")
        try:
            man = json.loads((p / "manifest.json").read_text())
            entries = json.loads((p / "entries.json").read_text())
        except (OSError, ValueError) as e:
            raise FaceforgeError(
                f"gallery {p}: manifest.json or entries.json is not valid JSON: {e}"
            ) from None
        if not isinstance(man, dict) or man.get("format") != FORMAT:
            raise FaceforgeError(
                f"gallery {p}/manifest.json has format "
                f"{man.get('format') if isinstance(man, dict) else None!r}; "
                f"expected {FORMAT!r}"
            )
        try:
            emb = np.load(p / "embeddings.npy", allow_pickle=False)
            ids = np.load(p / "ids.npy", allow_pickle=False)
        except (OSError, ValueError) as e:
            raise FaceforgeError(f"gallery {p}: embeddings.npy / ids.npy cannot be read: {e}") from None
        n = int(man.get("count", -1))
        if (
            emb.ndim != 2
            or len(emb) != n
            or len(ids) != n
            or not isinstance(entries, list)
            or len(entries) != n
        ):
            raise FaceforgeError(
                f"gallery {p} is inconsistent: manifest says {n} entries, embeddings {emb.shape}, "
                f"ids {ids.shape}, entries {len(entries) if isinstance(entries, list) else '?'}"
            )
        try:
            index = faiss.read_index(str(p / "index.faiss"))
        except RuntimeError as e:
            raise FaceforgeError(f"gallery {p}/index.faiss cannot be read by faiss: {e}") from None
        if index.ntotal != n or index.d != emb.shape[1]:
            raise FaceforgeError(
                f"gallery {p}/index.faiss holds {index.ntotal}×{index.d}, expected {n}×{emb.shape[1]}"
            )
        g = cls(
            np.ascontiguousarray(emb, dtype=np.float32),
            ids.astype(np.int64),
            entries,
            index=str(man.get("mode", "auto")),
            model_info=man.get("model") or {},
            params=man.get("index") or {"kind": "flat"},
            requested=man.get("requested") or {},
            faiss_index=index,
        )
        g.next_id = max(g.next_id, int(man.get("next_id", 0)))
        if "nprobe" in g.params and hasattr(index, "nprobe"):
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
