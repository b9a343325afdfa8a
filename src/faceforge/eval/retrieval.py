"""Embedding retrieval metrics: Recall@K, precision@1, mAP@R and R-precision (Musgrave et al., "A Metric
Learning Reality Check", ECCV 2020, Sec. 3.2), over cosine similarity with exact chunked Faiss search,
IVF (:mod:`faceforge.eval.ivf`) or a numpy fallback without faiss. Entry points:
:func:`retrieval_metrics`, :func:`retrieval_with_neighbours`, :func:`knn_search`,
:func:`resolve_index`. Details: docs/evaluation.md, "Retrieval metrics and search".
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from faceforge.errors import FaceforgeError
from faceforge.eval.ivf import build_ivf

__all__ = ["knn_search", "resolve_index", "retrieval_metrics", "retrieval_with_neighbours"]

INDEXES = ("flat", "ivf")
#: ``index="auto"`` switches from exact search to IVF at this gallery size: below it exhaustive search of a
#: few thousand queries takes seconds, above it IVF's speed-up outweighs its small recall loss.
AUTO_IVF_MIN_GALLERY = 50_000
# Upper bound on the number of (query, neighbour) entries held per chunk; the chunk is shrunk when the
# search depth (driven by the largest class for mAP@R) is large, so memory stays bounded.
_MAX_CHUNK_ENTRIES = 1 << 25
# Row block used when normalising / checking a large gallery, to avoid full-size temporaries.
_ROW_BLOCK = 65536


def _import_faiss() -> Any:
    """Return the faiss module or ``None`` (kept as a function so tests can simulate its absence)."""
    try:
        import faiss
    except ImportError:
        return None
    return faiss


# --------------------------------------------------------------------------------------------------
# input handling


def _to_numpy(x: Any) -> np.ndarray:
    # Duck-typed so that torch stays an optional import for this module.
    if hasattr(x, "detach") and hasattr(x, "cpu"):
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def _embeddings(x: Any, name: str) -> np.ndarray:
    """Validated, L2-normalised float32 C-contiguous ``[N, D]``; no copy if already so."""
    a = _to_numpy(x)
    if a.ndim != 2 or a.shape[0] == 0 or a.shape[1] == 0:
        raise FaceforgeError(f"{name} must be a non-empty 2-D array [N, D], got shape {tuple(a.shape)}")
    if not np.issubdtype(a.dtype, np.number) or np.issubdtype(a.dtype, np.complexfloating):
        raise FaceforgeError(f"{name} must be real numbers, got dtype {a.dtype}")
    a = np.ascontiguousarray(a, dtype=np.float32)
    norms = np.empty(len(a), np.float32)
    # Blockwise so that a 2 GB gallery does not get a 2 GB temporary for a*a.
    for s in range(0, len(a), _ROW_BLOCK):
        blk = a[s : s + _ROW_BLOCK]
        if not np.isfinite(blk).all():
            bad = s + int(np.flatnonzero(~np.isfinite(blk).all(1))[0])
            raise FaceforgeError(f"{name} contains NaN or infinite values (first at row {bad})")
        norms[s : s + _ROW_BLOCK] = np.sqrt(np.einsum("ij,ij->i", blk, blk))
    if (norms == 0).any():
        raise FaceforgeError(f"{name} has an all-zero row ({int(np.flatnonzero(norms == 0)[0])})")
    if np.abs(norms - 1).max() <= 1e-4:
        return a  # already normalised: keep the caller's memory
    out = np.empty_like(a)
    for s in range(0, len(a), _ROW_BLOCK):
        np.divide(a[s : s + _ROW_BLOCK], norms[s : s + _ROW_BLOCK, None], out=out[s : s + _ROW_BLOCK])
    return out


def _labels(y: Any, n: int, name: str) -> np.ndarray:
    a = _to_numpy(y)
    if a.ndim != 1:
        raise FaceforgeError(f"{name} must be 1-D, got shape {tuple(a.shape)}")
    if len(a) != n:
        raise FaceforgeError(f"{name} has {len(a)} labels but there are {n} embeddings")
    return a


def _check_ks(ks: Sequence[int], n_gallery: int) -> tuple[int, ...]:
    ks = tuple(ks) if not isinstance(ks, int) else (ks,)
    if not ks:
        raise FaceforgeError("ks must contain at least one K")
    for k in ks:
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise FaceforgeError(f"ks must be positive integers, got {k!r}")
        if k > n_gallery:
            raise FaceforgeError(f"K={k} is larger than the gallery ({n_gallery} searchable items per query)")
    return tuple(sorted({int(k) for k in ks}))


# --------------------------------------------------------------------------------------------------
# search


def _numpy_knn(
    q: np.ndarray, g: np.ndarray, k: int, exclude: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray]:
    sims = q @ g.T
    if exclude is not None:
        sims[np.arange(len(q)), exclude] = -np.inf
    part = (
        np.argpartition(-sims, k - 1, axis=1)[:, :k]
        if k < sims.shape[1]
        else np.tile(np.arange(k), (len(q), 1))
    )
    ps = np.take_along_axis(sims, part, 1)
    order = np.argsort(-ps, axis=1, kind="stable")
    return np.take_along_axis(ps, order, 1), np.take_along_axis(part, order, 1)


def _drop_self(d: np.ndarray, i: np.ndarray, self_ids: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """From ``k + 1`` results per row keep the first ``k`` that are not the query itself.

    Done by id, not by dropping rank 0: duplicates can tie with (and precede) the query itself.
    """
    is_self = i == self_ids[:, None]
    order = np.argsort(is_self, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(d, order, 1), np.take_along_axis(i, order, 1)


class _Searcher:
    """Top-``k`` inner-product search of query chunks against one gallery."""

    def __init__(self, gallery: np.ndarray, index: str, nlist: int | None, nprobe: int | None) -> None:
        if index not in INDEXES:
            raise FaceforgeError(f"unknown index {index!r}; expected one of {INDEXES}")
        self.gallery = gallery
        self.faiss = _import_faiss()
        self.ivf = None
        if index == "ivf":
            if self.faiss is None:
                raise FaceforgeError("index='ivf' needs faiss: pip install faiss-cpu")
            self.ivf = _build_ivf(self.faiss, gallery, nlist, nprobe)

    def search(self, q: np.ndarray, k: int, self_ids: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        if self.faiss is None:
            return _numpy_knn(q, self.gallery, k, self_ids)
        kk = k + (self_ids is not None)
        if self.ivf is not None:
            d, i = self.ivf.search(q, kk)
        else:
            d, i = self.faiss.knn(q, self.gallery, kk, metric=self.faiss.METRIC_INNER_PRODUCT)
        if self_ids is not None:
            d, i = _drop_self(d, i, self_ids, k)
        return d, i


def _build_ivf(faiss: Any, g: np.ndarray, nlist: int | None, nprobe: int | None) -> Any:
    """The gallery ``g`` in an IVF-flat index built by :func:`faceforge.eval.ivf.build_ivf`."""
    ivf = build_ivf(faiss, g, nlist=nlist, nprobe=nprobe)
    ivf.add(g)
    return ivf


def knn_search(
    query_emb: Any,
    gallery_emb: Any | None = None,
    k: int = 10,
    chunk_size: int = 4096,
    index: str = "flat",
    nlist: int | None = None,
    nprobe: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Cosine top-``k`` neighbours: ``(similarities [Q, k], gallery ids [Q, k])``, best first.

    ``gallery_emb=None`` searches the query set against itself with each query's own row excluded.
    Approximate (``index="ivf"``) search may return id ``-1`` when the probed lists hold fewer than ``k``.
    """
    q = _embeddings(query_emb, "query_emb")
    g = q if gallery_emb is None else _embeddings(gallery_emb, "gallery_emb")
    if q.shape[1] != g.shape[1]:
        raise FaceforgeError(f"query dim {q.shape[1]} != gallery dim {g.shape[1]}")
    n_search = len(g) - (gallery_emb is None)
    _check_ks((k,), n_search)
    if chunk_size < 1:
        raise FaceforgeError(f"chunk_size must be >= 1, got {chunk_size}")
    searcher = _Searcher(g, resolve_index(index, len(g)), nlist, nprobe)
    ds, ids = [], []
    for s in range(0, len(q), chunk_size):
        self_ids = np.arange(s, min(s + chunk_size, len(q))) if gallery_emb is None else None
        d, i = searcher.search(q[s : s + chunk_size], k, self_ids)
        ds.append(d)
        ids.append(i)
    return np.concatenate(ds), np.concatenate(ids)


# --------------------------------------------------------------------------------------------------
# metrics


def resolve_index(index: str, n_gallery: int) -> str:
    """``"auto"`` → ``"flat"`` (exact) below :data:`AUTO_IVF_MIN_GALLERY` gallery items, else ``"ivf"``
    when faiss is installed (exact numpy search otherwise); ``"flat"`` / ``"ivf"`` are returned as given."""
    if index == "auto":
        if n_gallery >= AUTO_IVF_MIN_GALLERY and _import_faiss() is not None:
            return "ivf"
        return "flat"
    if index not in INDEXES:
        raise FaceforgeError(f"unknown index {index!r}; expected one of {(*INDEXES, 'auto')}")
    return index


def retrieval_metrics(
    query_emb: Any,
    query_labels: Any,
    gallery_emb: Any | None = None,
    gallery_labels: Any | None = None,
    ks: Sequence[int] = (1, 5, 10),
    chunk_size: int = 4096,
    index: str = "flat",
    nlist: int | None = None,
    nprobe: int | None = None,
) -> dict[str, Any]:
    """Recall@K, precision@1, mAP@R and R-precision of ``query_emb`` against a gallery.

    ``gallery_emb=None`` is leave-one-out: the query set is also the gallery and each query's own row
    is excluded. Returns ``recall_at_k`` ({K: value}), ``precision_at_1``, ``map_at_r``, ``r_precision``,
    ``n_queries``, ``n_gallery``, ``n_skipped_queries`` (queries with no other same-label gallery item,
    left out of mAP@R / R-precision) and ``index``. ``nlist`` / ``nprobe`` only apply to ``index="ivf"``
    (``None``: the :mod:`faceforge.eval.ivf` defaults).
    """
    metrics, _, _ = retrieval_with_neighbours(
        query_emb, query_labels, gallery_emb, gallery_labels, ks=ks, keep=0,
        chunk_size=chunk_size, index=index, nlist=nlist, nprobe=nprobe,
    )  # fmt: skip
    return metrics


def retrieval_with_neighbours(
    query_emb: Any,
    query_labels: Any,
    gallery_emb: Any | None = None,
    gallery_labels: Any | None = None,
    *,
    ks: Sequence[int] = (1, 5, 10),
    keep: int = 0,
    chunk_size: int = 4096,
    index: str = "flat",
    nlist: int | None = None,
    nprobe: int | None = None,
    exclude_self: bool = False,
) -> tuple[dict[str, Any], np.ndarray, np.ndarray]:
    """:func:`retrieval_metrics` plus each query's ``keep`` nearest gallery items from the same search.

    Returns ``(metrics, similarities [Q, keep], gallery ids [Q, keep])``, best first (id ``-1`` where an
    IVF search found fewer). ``exclude_self=True`` with a separate gallery means row ``i`` of the queries
    is row ``i`` of the gallery (same length) and is left out of its own neighbours, as in leave-one-out.
    ``index`` also accepts ``"auto"`` (:func:`resolve_index`).
    """
    q = _embeddings(query_emb, "query_emb")
    ql = _labels(query_labels, len(q), "query_labels")
    loo = gallery_emb is None or exclude_self
    if gallery_emb is None:
        if gallery_labels is not None:
            raise FaceforgeError("gallery_labels given without gallery_emb")
        g, gl = q, ql
    else:
        if gallery_labels is None:
            raise FaceforgeError("gallery_emb given without gallery_labels")
        g = _embeddings(gallery_emb, "gallery_emb")
        gl = _labels(gallery_labels, len(g), "gallery_labels")
        if q.shape[1] != g.shape[1]:
            raise FaceforgeError(f"query_emb has dim {q.shape[1]} but gallery_emb has dim {g.shape[1]}")
        if exclude_self and len(q) != len(g):
            raise FaceforgeError(
                f"exclude_self needs the queries to be the gallery: {len(q)} queries vs {len(g)} gallery rows"
            )
    n_search = len(g) - loo
    ks = _check_ks(ks, n_search)
    if keep:
        _check_ks((keep,), n_search)
    if chunk_size < 1:
        raise FaceforgeError(f"chunk_size must be >= 1, got {chunk_size}")
    index = resolve_index(index, len(g))

    # Integer label codes shared by query and gallery; -1 marks a missing neighbour (IVF) below.
    try:
        _, codes = np.unique(np.concatenate([ql, gl]), return_inverse=True)
    except TypeError as e:
        raise FaceforgeError(f"query_labels and gallery_labels must be comparable: {e}") from None
    codes = codes.reshape(-1)
    qc, gc = codes[: len(ql)], codes[len(ql) :]
    # R per query: same-label gallery items, minus the query itself in leave-one-out mode.
    r_all = np.bincount(gc, minlength=codes.max() + 1)[qc]
    if loo:
        # Only rows whose own gallery row carries their label lose one (with exclude_self the two
        # label arrays may differ).
        r_all = r_all - (gc[: len(q)] == qc)
    gc_pad = np.append(gc, -1)  # index -1 (faiss "no result") maps to label -1, never relevant

    searcher = _Searcher(g, index, nlist, nprobe)
    # K=1 is always evaluated because precision@1 is recall@1 (the nearest item is or is not a match).
    ks_eval = tuple(sorted({1, *ks}))
    kmax = ks_eval[-1]
    hits_at = np.zeros(len(ks_eval), np.int64)
    ap_sum = rp_sum = 0.0
    kept_d = np.empty((len(q), keep), np.float32)
    kept_i = np.empty((len(q), keep), np.int64)
    # Chunk rows adapt to the depth the largest class needs, so memory stays ~_MAX_CHUNK_ENTRIES.
    depth_all = np.maximum(r_all, max(kmax, keep))
    s = 0
    while s < len(q):
        rows = min(chunk_size, len(q) - s)
        while rows > 1 and rows * int(depth_all[s : s + rows].max()) > _MAX_CHUNK_ENTRIES:
            rows //= 2
        e = s + rows
        r = r_all[s:e]
        depth = min(int(depth_all[s:e].max()), n_search)
        self_ids = np.arange(s, e) if loo else None
        d, ids = searcher.search(q[s:e], depth, self_ids)
        if keep:
            kept_d[s:e] = d[:, :keep]
            kept_i[s:e] = ids[:, :keep]
        rel = gc_pad[ids] == qc[s:e, None]  # [rows, depth]
        first_hit = np.where(rel.any(1), rel.argmax(1), depth)
        hits_at += (first_hit[:, None] < np.asarray(ks_eval)[None, :]).sum(0)
        # mAP@R / R-precision: only the first R ranks of each row count.
        ranks = np.arange(1, depth + 1)
        in_r = ranks[None, :] <= r[:, None]
        rel_r = rel & in_r
        cum = np.cumsum(rel_r, axis=1)
        valid = r > 0
        ap = (cum / ranks * rel_r).sum(1)[valid] / r[valid]
        ap_sum += float(ap.sum())
        rp_sum += float((cum[:, -1][valid] / r[valid]).sum())
        s = e

    n_valid = int((r_all > 0).sum())
    recall = {k: float(h) / len(q) for k, h in zip(ks_eval, hits_at) if k in ks}
    metrics = {
        "recall_at_k": recall,
        "precision_at_1": float(hits_at[0]) / len(q),
        "map_at_r": ap_sum / n_valid if n_valid else float("nan"),
        "r_precision": rp_sum / n_valid if n_valid else float("nan"),
        "n_queries": len(q),
        "n_gallery": len(g),
        "n_skipped_queries": len(q) - n_valid,
        "index": index,
    }
    return metrics, kept_d, kept_i
