"""One Faiss IVF builder and one ``nlist``/``nprobe`` rule for every inverted-file index faceforge
makes (IVF: Jégou, Douze, Schmid, "Product quantization for nearest neighbor search", TPAMI 2011;
Faiss: Johnson, Douze, Jégou, "Billion-scale similarity search with GPUs", IEEE TBD 2019):
:func:`build_ivf`, :func:`default_nlist`, :func:`default_nprobe`, :func:`train_sample_size`. Details:
docs/evaluation.md, "IVF index".
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from faceforge.errors import FaceforgeError

__all__ = ["build_ivf", "default_nlist", "default_nprobe", "train_sample_size"]


def default_nlist(n: int) -> int:
    """``≈ 2·sqrt(n)`` inverted lists, with at least 39 training points per list (Faiss's minimum)."""
    return max(1, min(round(2 * math.sqrt(n)), n // 39))


def default_nprobe(nlist: int) -> int:
    """Lists visited per query: ``nlist / 32`` clipped to [16, 128] (and to ``nlist``).

    At 1M entries (nlist 2000) that is 62 lists, ~31k scanned vectors: under 10 ms per query on one
    core of the CI machine (``benchmarks/gallery.py`` prints the recall/latency trade-off).
    """
    return min(nlist, max(16, min(128, nlist // 32)))


def train_sample_size(n: int, nlist: int, min_train: int = 0) -> int:
    """Rows k-means trains on: ``64·nlist`` (at least ``min_train``), at most ``n``.

    64 points per list is plenty (Faiss itself caps at 256) and keeps a 1M-row build in seconds
    rather than minutes on a small CPU.
    """
    return min(n, max(64 * nlist, min_train))


def build_ivf(
    faiss: Any,
    x: np.ndarray,
    *,
    nlist: int | None = None,
    nprobe: int | None = None,
    pq_m: int | None = None,
    min_train: int = 0,
) -> Any:
    """A trained, empty inner-product ``IndexIVFFlat`` (``IndexIVFPQ`` with ``pq_m`` 8-bit codes) for ``x``.

    ``x``: float32 ``[N, D]`` rows to train on (a seeded sample of :func:`train_sample_size` rows when
    there are more). ``nlist`` / ``nprobe`` default to :func:`default_nlist` / :func:`default_nprobe`;
    ``nprobe`` is clipped to ``nlist``. The caller adds the rows (with or without ids).
    """
    n, dim = x.shape
    nlist = default_nlist(n) if nlist is None else int(nlist)
    if not 1 <= nlist <= n:
        raise FaceforgeError(f"nlist must be in [1, {n}] (the gallery size), got {nlist}")
    nprobe = default_nprobe(nlist) if nprobe is None else int(nprobe)
    if nprobe < 1:
        raise FaceforgeError(f"nprobe must be >= 1, got {nprobe}")
    quantizer = faiss.IndexFlatIP(dim)
    if pq_m is None:
        index = faiss.IndexIVFFlat(quantizer, dim, nlist, faiss.METRIC_INNER_PRODUCT)
    else:
        index = faiss.IndexIVFPQ(quantizer, dim, nlist, pq_m, 8, faiss.METRIC_INNER_PRODUCT)
    n_train = train_sample_size(n, nlist, min_train)
    if n_train < n:
        # seeded, sorted sample: the same rows give the same index on every build
        sample = x[np.sort(np.random.default_rng(0).choice(n, n_train, replace=False))]
    else:
        sample = x
    # 10 k-means iterations instead of Faiss's 25: the lists barely change, the build time halves.
    index.cp.niter = 10
    index.train(sample)
    index.nprobe = min(nprobe, nlist)
    return index
