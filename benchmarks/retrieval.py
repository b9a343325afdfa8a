"""Exact chunked retrieval on a big random gallery: time, peak RSS (must stay <= 4 GB), IVF speed/recall.

Builds an N×512 float32 gallery of ``N / 10`` identities (clustered so that the metrics are meaningful),
queries it with 1,000 noisy copies of gallery items, and reports exact-search seconds and peak RSS, then
IVF (``IndexIVFFlat``) milliseconds per query and recall@10 against the exact neighbours (the fraction of
the exact top-10 that IVF also returns).

    PYTHONPATH=src python benchmarks/retrieval.py               # N = 1,000,000 (2 GB gallery)
    PYTHONPATH=src python benchmarks/retrieval.py --n 100000    # quick
"""

from __future__ import annotations

import argparse
import resource
import sys
import time

import numpy as np

from faceforge.eval.retrieval import knn_search, retrieval_metrics

RSS_LIMIT = 4 * 1024**3


def peak_rss() -> int:
    """Peak resident set size of this process in bytes (ru_maxrss is KiB on Linux, bytes on macOS)."""
    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return r if sys.platform == "darwin" else r * 1024


def build(
    n: int, dim: int, n_queries: int, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    n_ids = max(1, n // 10)
    centres = rng.standard_normal((n_ids, dim), dtype=np.float32)
    labels = rng.integers(0, n_ids, n)
    gallery = np.empty((n, dim), np.float32)
    # Filled and normalised in blocks so the only big allocation is the gallery itself.
    for s in range(0, n, 65536):
        blk = centres[labels[s : s + 65536]] + rng.standard_normal(
            (len(labels[s : s + 65536]), dim), dtype=np.float32
        )
        blk /= np.linalg.norm(blk, axis=1, keepdims=True)
        gallery[s : s + 65536] = blk
    pick = rng.choice(n, n_queries, replace=False)
    queries = gallery[pick] + 0.5 * rng.standard_normal((n_queries, dim), dtype=np.float32) / np.sqrt(dim)
    return gallery, labels, queries.astype(np.float32), labels[pick]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1_000_000, help="gallery size")
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--chunk-size", type=int, default=256)
    ap.add_argument("--nprobe", type=int, default=16)
    ap.add_argument("--skip-ivf", action="store_true")
    args = ap.parse_args()

    gallery, gl, queries, ql = build(args.n, args.dim, args.queries, seed=0)
    print(f"gallery {gallery.shape} float32 = {gallery.nbytes / 1e9:.2f} GB; {len(queries)} queries")

    t = time.perf_counter()
    res = retrieval_metrics(queries, ql, gallery, gl, ks=(1, 10), chunk_size=args.chunk_size)
    exact_s = time.perf_counter() - t
    rss = peak_rss()
    print(
        f"exact: {exact_s:.2f} s ({1000 * exact_s / len(queries):.2f} ms/query), peak RSS {rss / 1e9:.2f} GB"
    )
    print(
        f"  recall@1 {res['recall_at_k'][1]:.4f} recall@10 {res['recall_at_k'][10]:.4f} "
        f"mAP@R {res['map_at_r']:.4f} R-precision {res['r_precision']:.4f}"
    )
    ok = rss <= RSS_LIMIT
    print(f"  peak RSS <= 4 GiB: {'OK' if ok else 'FAIL'}")

    if not args.skip_ivf:
        _, exact_ids = knn_search(queries, gallery, k=10, chunk_size=args.chunk_size)
        t = time.perf_counter()
        # Index build (k-means + add, which copies the gallery) is reported separately from search.
        import faiss

        from faceforge.eval.retrieval import _build_ivf

        ivf = _build_ivf(faiss, gallery, None, args.nprobe)
        build_s = time.perf_counter() - t
        t = time.perf_counter()
        _, ivf_ids = ivf.search(queries, 10)
        ms = 1000 * (time.perf_counter() - t) / len(queries)
        rec = np.mean([len(set(a) & set(e)) / 10 for a, e in zip(ivf_ids, exact_ids)])
        print(
            f"ivf (nlist {ivf.nlist}, nprobe {ivf.nprobe}): build {build_s:.1f} s, {ms:.3f} ms/query, "
            f"recall@10 vs exact {rec:.4f}"
        )
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
