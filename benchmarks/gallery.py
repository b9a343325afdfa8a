"""Gallery at scale on embeddings shaped like real ones: flat / IVF / IVF-PQ / HNSW (Faiss) side by side.

A face gallery is many identities with a few tight images each, not uniform noise. The generator
draws ``--ids`` identity directions (random unit vectors, so two identities have cosine ≈ 0 ± 1/√dim)
and ``--per-id`` embeddings per identity, ``x = normalise(√g·c + √(1−g)·u)`` with ``u`` a random unit
vector and ``g`` drawn per identity from ``--genuine ± --spread/2``: two images of one person then have
cosine ≈ g (≈ 0.6 by default, the level of a good face model on unconstrained photos), impostors ≈ 0.
Queries are *new* images of gallery identities (not copies of gallery rows). The measured genuine /
impostor cosines are printed with the parameters.

For each index: build time (training + adding), memory (the bytes its structure holds),
search time per query one query at a time (a service's latency) and in one batch, and recall@1 /
recall@10 against exact search (the fraction of the exact top-k the index also returns), over a sweep
of its search parameter (IVF: ``nprobe``; HNSW: ``efSearch``). The first value that reaches
recall@10 >= 0.95 is reported per index, and the fastest such index is the suggested default.

Index construction follows ``faceforge.infer.gallery``: ``nlist = 2·√N``, k-means with 10 iterations on
at most ``64·nlist`` samples (trained once, shared by IVF and IVF-PQ; its time counts in both builds);
IVF-PQ with ``dim/8`` 8-bit sub-quantizers whose ``max(10k, 100)`` candidates are re-ranked exactly with
the stored embeddings (IVF-PQ's memory column is its codes and codebooks: the re-rank reads the float
gallery, which a faceforge gallery keeps anyway); HNSW is ``IndexHNSWFlat`` (Malkov & Yashunin,
TPAMI 2020) with ``--hnsw-m`` links and ``efConstruction`` ``--ef-construction``. Searches run one
Faiss thread (``--threads``), single-query latency is the median over ``--single`` queries; builds
use ``--build-threads`` (1 by default; the 1M HNSW build takes ~20 min on one core).

    PYTHONPATH=src python benchmarks/gallery.py                 # --small: 10k ids × 10 = 100k (minutes)
    PYTHONPATH=src python benchmarks/gallery.py --full          # 100k ids × 10 = 1M × 512 (~25 min)
    PYTHONPATH=src python benchmarks/gallery.py --ids 2000 --indexes ivf hnsw   # a quick look
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

RECALL_TARGET = 0.95
LATENCY_TARGET_MS = 10.0
NPROBE_SWEEP = (1, 2, 4, 8, 16, 32, 64, 128, 256)
EF_SWEEP = (10, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512)


# ---------------------------------------------------------------------------------------- data


def _unit_rows(rng: np.random.Generator, n: int, dim: int, scale: np.ndarray | None = None) -> np.ndarray:
    x = rng.standard_normal((n, dim), dtype=np.float32)
    if scale is not None:
        x *= scale
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x


def participation_ratio(lam: np.ndarray) -> float:
    """Effective number of dimensions of a spectrum: ``(Σλ)² / Σλ²``."""
    return float(lam.sum() ** 2 / (lam**2).sum())


def centre_spectrum(dim: int, genuine: float, impostor_std: float) -> np.ndarray:
    """Variances ``λ_k = (k+1)^-α`` of the identity directions, ``α`` chosen so that two images of
    different identities have cosine std ≈ ``impostor_std``.

    With ``x = √g·c + √(1−g)·u`` the impostor cosine has variance ``≈ g²/PR + (2g(1−g) + (1−g)²)/dim``,
    ``PR`` the participation ratio of the centres; real embeddings are not isotropic (their impostor
    cosines spread more than ``1/√dim``), which this reproduces. Isotropic when the target is below
    what ``dim`` dimensions give.
    """
    k = np.arange(1, dim + 1, dtype=np.float64)
    noise = (2 * genuine * (1 - genuine) + (1 - genuine) ** 2) / dim
    want = genuine**2 / max(impostor_std**2 - noise, 1e-12)
    if want >= dim:
        return np.ones(dim)
    lo, hi = 0.0, 8.0
    for _ in range(60):  # the participation ratio falls as alpha grows
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if participation_ratio(k**-mid) > want else (lo, mid)
    return k**-hi


def make_gallery(
    n_ids: int,
    per_id: int,
    dim: int,
    genuine: float,
    spread: float,
    impostor_std: float,
    n_queries: int,
    seed: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, float]:
    """``(gallery [n_ids·per_id, dim], identity labels, queries [n_queries, dim], their labels, PR)``.

    Rows are unit vectors ``normalise(√g·c + √(1−g)·u)`` (see the module docstring) with identity
    directions ``c`` drawn with the spectrum of :func:`centre_spectrum`, turned by one random rotation
    (so that no index sees axis-aligned structure, which would favour PQ's sub-vectors), generated in
    blocks so that the gallery is the only large allocation. Query identities are drawn uniformly.
    """
    rng = np.random.default_rng(seed)
    lam = centre_spectrum(dim, genuine, impostor_std)
    rotation, _ = np.linalg.qr(rng.standard_normal((dim, dim)))
    centres = _unit_rows(rng, n_ids, dim, np.sqrt(lam).astype(np.float32)) @ rotation.astype(np.float32).T
    g = np.clip(rng.uniform(genuine - spread / 2, genuine + spread / 2, n_ids), 0.0, 1.0).astype(np.float32)
    labels = np.repeat(np.arange(n_ids), per_id)
    gallery = np.empty((n_ids * per_id, dim), np.float32)

    def sample(lab: np.ndarray) -> np.ndarray:
        gl = g[lab][:, None]
        x = np.sqrt(gl) * centres[lab] + np.sqrt(1.0 - gl) * _unit_rows(rng, len(lab), dim)
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        return x

    for s in range(0, len(labels), 65536):
        gallery[s : s + 65536] = sample(labels[s : s + 65536])
    q_labels = rng.integers(0, n_ids, n_queries)
    return gallery, labels, sample(q_labels), q_labels, participation_ratio(lam)


def cosine_stats(gallery: np.ndarray, labels: np.ndarray, per_id: int, seed: int) -> dict[str, float]:
    """Mean ± std of genuine (same identity) and impostor cosines over 20,000 sampled pairs each."""
    rng = np.random.default_rng(seed + 1)
    n = len(gallery)
    i = rng.integers(0, n, 20000)
    j = (i - i % per_id) + (i % per_id + rng.integers(1, per_id, 20000)) % per_id  # same identity, not i
    k = rng.integers(0, n, 20000)
    k = k[labels[k] != labels[i]]
    gen = np.einsum("ij,ij->i", gallery[i], gallery[j])
    imp = np.einsum("ij,ij->i", gallery[i[: len(k)]], gallery[k])
    return {"genuine": float(gen.mean()), "genuine_std": float(gen.std()),
            "impostor": float(imp.mean()), "impostor_std": float(imp.std())}  # fmt: skip


# ---------------------------------------------------------------------------------------- measuring


def index_mb(name: str, index: Any, n: int, d: int) -> float:
    """Bytes the index structure holds, from its layout (MiB).

    flat: the vectors; IVF: vectors + 8-byte ids in the lists + centroids; IVF-PQ: codes + ids +
    centroids + PQ codebooks (the exact re-rank also reads the float gallery, not counted); HNSW: the
    vectors + the link lists (4-byte ids) + per-node offsets and levels.
    """
    if name == "flat":
        size = n * d * 4
    elif name == "ivf":
        size = n * (d * 4 + 8) + index.nlist * d * 4
    elif name == "ivfpq":
        size = (
            n * (index.code_size + 8) + index.nlist * d * 4 + index.pq.M * index.pq.ksub * index.pq.dsub * 4
        )
    else:
        hnsw = index.hnsw
        size = n * d * 4 + hnsw.neighbors.size() * 4 + hnsw.offsets.size() * 8 + hnsw.levels.size() * 4
    return size / 2**20


def recall(found: np.ndarray, exact: np.ndarray, k: int) -> float:
    """Mean fraction of each query's exact top-``k`` ids that ``found[:, :k]`` also holds."""
    hits = [len(set(f[:k].tolist()) & set(e[:k].tolist())) for f, e in zip(found, exact)]
    return float(np.mean(hits)) / k


@dataclass
class Row:
    """One search setting of one index."""

    param: int | None
    single_ms: float
    batch_ms: float
    r1: float
    r10: float


@dataclass
class Result:
    """Everything measured for one index."""

    name: str
    build_s: float
    memory_mb: float
    knob: str | None
    settings: dict[str, Any]
    rows: list[Row] = field(default_factory=list)

    def first_reaching(self, target: float) -> Row | None:
        """The first (cheapest) setting whose recall@10 reaches ``target``."""
        return next((r for r in self.rows if r.r10 >= target), None)


class Searcher:
    """An index with a ``search(queries, k) -> ids`` and an optional search knob."""

    knob: str | None = None

    def set(self, value: int) -> None:
        """Set the search parameter (nprobe / efSearch)."""

    def search(self, q: np.ndarray, k: int) -> np.ndarray:
        raise NotImplementedError


class FaissSearcher(Searcher):
    """A Faiss index searched as it is (flat, IVF-flat, HNSW)."""

    def __init__(self, index: Any, knob: str | None) -> None:
        self.index = index
        self.knob = knob

    def set(self, value: int) -> None:
        if self.knob == "nprobe":
            self.index.nprobe = value
        elif self.knob == "efSearch":
            self.index.hnsw.efSearch = value

    def search(self, q: np.ndarray, k: int) -> np.ndarray:
        return self.index.search(q, k)[1]


class RerankedPQ(FaissSearcher):
    """IVF-PQ whose ``max(10k, 100)`` candidates are re-ranked with the exact embeddings (as the gallery)."""

    def __init__(self, index: Any, gallery: np.ndarray) -> None:
        super().__init__(index, "nprobe")
        self.gallery = gallery

    def search(self, q: np.ndarray, k: int) -> np.ndarray:
        cand = self.index.search(q, max(10 * k, 100))[1]
        out = np.full((len(q), k), -1, np.int64)
        for i in range(len(q)):
            c = cand[i][cand[i] >= 0]
            s = self.gallery[c] @ q[i]
            top = c[np.argsort(-s, kind="stable")[:k]]
            out[i, : len(top)] = top
        return out


def nlist_for(n: int) -> int:
    """``faceforge.infer.gallery.default_nlist``: ``≈ 2·√n``, at least 39 training points per list."""
    return max(1, min(round(2 * np.sqrt(n)), n // 39))


def train_coarse(gallery: np.ndarray, nlist: int) -> Any:
    """The IVF coarse quantizer as the gallery trains it: an ``IndexIVFFlat`` (inner product, so Faiss
    runs spherical k-means) with 10 iterations on at most ``64·nlist`` sampled rows; returns its trained
    ``IndexFlatIP`` of centroids, which IVF and IVF-PQ then share (Faiss skips training a quantizer that
    already holds ``nlist`` centroids)."""
    import faiss

    n, d = gallery.shape
    ivf = faiss.IndexIVFFlat(faiss.IndexFlatIP(d), d, nlist, faiss.METRIC_INNER_PRODUCT)
    ivf.cp.niter = 10
    pick = np.sort(np.random.default_rng(0).choice(n, min(n, 64 * nlist), replace=False))
    ivf.train(gallery[pick])
    return faiss.clone_index(ivf.quantizer)


def build_index(
    name: str, gallery: np.ndarray, args: argparse.Namespace, coarse: Any
) -> tuple[Searcher, dict[str, Any]]:
    """Build ``name`` (flat, ivf, ivfpq, hnsw) over ``gallery``; returns the searcher and its settings."""
    import faiss

    n, d = gallery.shape
    if name == "flat":
        index = faiss.IndexFlatIP(d)
        index.add(gallery)
        return FaissSearcher(index, None), {}
    if name == "hnsw":
        index = faiss.IndexHNSWFlat(d, args.hnsw_m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = args.ef_construction
        index.add(gallery)
        return FaissSearcher(index, "efSearch"), {"M": args.hnsw_m, "efConstruction": args.ef_construction}
    quantizer = faiss.clone_index(coarse)
    nlist = quantizer.ntotal
    if name == "ivf":
        index = faiss.IndexIVFFlat(quantizer, d, nlist, faiss.METRIC_INNER_PRODUCT)
        settings: dict[str, Any] = {"nlist": nlist}
    else:
        m = max(1, d // 8)
        index = faiss.IndexIVFPQ(quantizer, d, nlist, m, 8, faiss.METRIC_INNER_PRODUCT)
        settings = {"nlist": nlist, "pq_m": m, "bits": 8, "rerank": "max(10k, 100)"}
        # PQ codebooks on the residuals of the same sample size as the gallery (>= 10,000 rows).
        n_train = min(n, max(64 * nlist, 10_000))
        pick = np.sort(np.random.default_rng(0).choice(n, n_train, replace=False))
        index.train(gallery[pick])
    index.is_trained = True
    index.add(gallery)
    searcher: Searcher = RerankedPQ(index, gallery) if name == "ivfpq" else FaissSearcher(index, "nprobe")
    return searcher, settings


def measure(s: Searcher, queries: np.ndarray, exact: np.ndarray, n_single: int, param: int | None) -> Row:
    """Median ms of single queries (one at a time), ms/query of one batched call, recall@1/@10."""
    if param is not None:
        s.set(param)
    for q in queries[:5]:  # warm-up
        s.search(q[None], 10)
    times = []
    for q in queries[:n_single]:
        t = time.perf_counter()
        s.search(q[None], 10)
        times.append(time.perf_counter() - t)
    t = time.perf_counter()
    found = s.search(queries, 10)
    batch = 1000 * (time.perf_counter() - t) / len(queries)
    return Row(
        param, 1000 * float(np.median(times)), batch, recall(found, exact, 1), recall(found, exact, 10)
    )


def run_index(
    name: str,
    gallery: np.ndarray,
    queries: np.ndarray,
    exact: np.ndarray,
    args: argparse.Namespace,
    coarse: tuple[Any, float] | None,
    log: Callable[[str], None],
) -> Result:
    """Build one index, sweep its knob until recall@10 >= 0.995 (or the sweep ends), free it.

    ``coarse`` is the shared IVF quantizer and the seconds its k-means took (added to IVF build times).
    """
    import faiss

    faiss.omp_set_num_threads(args.build_threads)
    t = time.perf_counter()
    searcher, settings = build_index(name, gallery, args, coarse[0] if coarse else None)
    build_s = time.perf_counter() - t + (coarse[1] if coarse and name in ("ivf", "ivfpq") else 0.0)
    faiss.omp_set_num_threads(args.threads)
    mem = index_mb(name, searcher.index, *gallery.shape)  # type: ignore[attr-defined]
    res = Result(name, build_s, mem, searcher.knob, settings)
    log(f"{name}: built in {build_s:.1f} s ({args.build_threads} thread(s)), index {mem:.0f} MiB, {settings}")
    sweep: tuple[int | None, ...] = (None,)
    if searcher.knob == "nprobe":
        sweep = tuple(p for p in NPROBE_SWEEP if p <= settings["nlist"])
    elif searcher.knob == "efSearch":
        sweep = EF_SWEEP
    n_single = args.single if name != "flat" else min(args.single, args.single_flat)
    for p in sweep:
        row = measure(searcher, queries, exact, n_single, p)
        res.rows.append(row)
        what = f"{searcher.knob} {p}" if p is not None else "exact"
        log(f"  {what}: {row.single_ms:.3f} ms/query single (median), {row.batch_ms:.3f} ms/query batched, "
            f"recall@1 {row.r1:.4f}, recall@10 {row.r10:.4f}")  # fmt: skip
        if row.r10 >= 0.995:
            break
    del searcher
    return res


# ---------------------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    """Generate the gallery, take exact neighbours, run every index, print the tables."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    size = ap.add_mutually_exclusive_group()
    size.add_argument("--small", action="store_true", help="10,000 identities × 10 (the default)")
    size.add_argument("--full", action="store_true", help="100,000 identities × 10 = 1M entries")
    size.add_argument("--ids", type=int, help="identities (overrides --small/--full)")
    ap.add_argument("--per-id", type=int, default=10, help="embeddings per identity")
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--genuine", type=float, default=0.6, help="mean cosine of two images of one identity")
    ap.add_argument("--spread", type=float, default=0.3, help="per-identity genuine level: ± spread/2")
    ap.add_argument("--impostor-std", type=float, default=0.07, help="std of impostor cosines (anisotropy)")
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--single", type=int, default=200, help="queries timed one at a time")
    ap.add_argument("--single-flat", type=int, default=20, help="... for the exhaustive flat index")
    ap.add_argument("--indexes", nargs="+", default=["flat", "ivf", "ivfpq", "hnsw"])
    ap.add_argument("--nlist", type=int, help="IVF lists (default 2·sqrt(N), as the gallery)")
    ap.add_argument("--hnsw-m", type=int, default=32)
    ap.add_argument("--ef-construction", type=int, default=64)
    ap.add_argument("--threads", type=int, default=1, help="Faiss threads for searching (1: single-thread)")
    ap.add_argument("--build-threads", type=int, default=1, help="Faiss threads for building the indexes")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    n_ids = args.ids or (100_000 if args.full else 10_000)

    import faiss

    faiss.omp_set_num_threads(args.threads)

    def log(msg: str) -> None:
        print(msg, flush=True)

    t = time.perf_counter()
    gallery, labels, queries, q_labels, pr = make_gallery(
        n_ids, args.per_id, args.dim, args.genuine, args.spread, args.impostor_std, args.queries, args.seed
    )
    stats = cosine_stats(gallery, labels, args.per_id, args.seed)
    load = os.getloadavg()
    log(f"gallery {gallery.shape[0]:,} × {args.dim} float32 ({gallery.nbytes / 2**20:.0f} MiB): "
        f"{n_ids:,} identities × {args.per_id}; genuine level {args.genuine} ± {args.spread / 2} per "
        f"identity, identity directions of participation ratio {pr:.0f} (impostor std target "
        f"{args.impostor_std}); {len(queries)} queries = new images of gallery identities; seed {args.seed}; "
        f"generated in {time.perf_counter() - t:.1f} s")  # fmt: skip
    log(f"measured cosine: genuine {stats['genuine']:.3f} ± {stats['genuine_std']:.3f}, "
        f"impostor {stats['impostor']:.3f} ± {stats['impostor_std']:.3f}")  # fmt: skip
    log(f"faiss {faiss.__version__}, search {args.threads} thread(s), build {args.build_threads}, "
        f"{os.cpu_count()} CPUs, "
        f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")  # fmt: skip

    t = time.perf_counter()
    flat = faiss.IndexFlatIP(args.dim)
    flat.add(gallery)
    exact = flat.search(queries, 10)[1]
    del flat
    top1 = float(np.mean(labels[exact[:, 0]] == q_labels))
    log(f"exact top-10 of {len(queries)} queries: {time.perf_counter() - t:.1f} s; rank-1 identification "
        f"(exact) {top1:.4f}")  # fmt: skip

    coarse = None
    if {"ivf", "ivfpq"} & set(args.indexes):
        faiss.omp_set_num_threads(args.build_threads)
        t = time.perf_counter()
        quantizer = train_coarse(gallery, args.nlist or nlist_for(len(gallery)))
        coarse = (quantizer, time.perf_counter() - t)
        faiss.omp_set_num_threads(args.threads)
        log(f"k-means for IVF / IVF-PQ ({quantizer.ntotal} lists, shared): {coarse[1]:.1f} s")
    results = [run_index(name, gallery, queries, exact, args, coarse, log) for name in args.indexes]

    print()
    print("| index | settings | build s | memory MiB | search param | single ms/query (median) | "
          "batched ms/query | recall@1 | recall@10 |")  # fmt: skip
    print("|---|---|---:|---:|---|---:|---:|---:|---:|")
    for r in results:
        best = r.first_reaching(RECALL_TARGET) or (r.rows[-1] if r.rows else None)
        if best is None:
            continue
        reached = "" if best.r10 >= RECALL_TARGET else " (target not reached)"
        param = f"{r.knob} {best.param}{reached}" if r.knob else "exact"
        settings = ", ".join(f"{k}={v}" for k, v in r.settings.items()) or "-"
        print(f"| {r.name} | {settings} | {r.build_s:.1f} | {r.memory_mb:.0f} | {param} | "
              f"{best.single_ms:.3f} | {best.batch_ms:.3f} | {best.r1:.4f} | {best.r10:.4f} |")  # fmt: skip
    ok = [
        (row.single_ms, r.name, row.param, r.knob)
        for r in results
        if (row := r.first_reaching(RECALL_TARGET)) is not None
    ]
    if ok:
        ms, name, param, knob = min(ok)
        verdict = "within" if ms <= LATENCY_TARGET_MS else "OVER"
        log(f"fastest index reaching recall@10 >= {RECALL_TARGET} at {gallery.shape[0]:,} entries: {name}"
            f"{f' {knob} {param}' if knob else ''}, {ms:.3f} ms/query single-thread ({verdict} the "
            f"{LATENCY_TARGET_MS:.0f} ms target)")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
