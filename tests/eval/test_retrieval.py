"""Retrieval metrics against a brute-force numpy reference written here from the definitions."""

from __future__ import annotations

import numpy as np
import pytest

from faceforge.errors import FaceforgeError
from faceforge.eval import retrieval
from faceforge.eval.retrieval import knn_search, retrieval_metrics


def clustered(n: int, n_ids: int, dim: int = 32, noise: float = 0.9, seed: int = 0):
    """``n`` vectors around ``n_ids`` random centres (uneven class sizes, some singletons possible)."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((n_ids, dim))
    labels = rng.integers(0, n_ids, n)
    x = centres[labels] + noise * rng.standard_normal((n, dim))
    return x.astype(np.float32), labels


def brute_force(q, ql, g=None, gl=None, ks=(1, 5, 10)):
    """Reference: full float64 similarity matrix, full argsort, per-query loops over the definitions."""
    loo = g is None
    q = q.astype(np.float64)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    if loo:
        g, gl = q, ql
    else:
        g = g.astype(np.float64)
        g /= np.linalg.norm(g, axis=1, keepdims=True)
    sims = q @ g.T
    if loo:
        np.fill_diagonal(sims, -np.inf)
    # R from the labels; only the top max(R, K) ranks matter, so a partial sort keeps this quick.
    r_all = (gl[None, :] == ql[:, None]).sum(1) - loo
    depth = max(int(r_all.max()), max(ks))
    top = np.argpartition(-sims, depth - 1, axis=1)[:, :depth]
    order = np.take_along_axis(top, np.argsort(-np.take_along_axis(sims, top, 1), axis=1), 1)
    rel = gl[order] == ql[:, None]
    recall = {k: float(np.mean(rel[:, :k].any(1))) for k in ks}
    aps, rps = [], []
    for i in range(len(q)):
        r = int(r_all[i])
        if r == 0:
            continue
        hits = 0
        ap = 0.0
        for j in range(r):
            if rel[i, j]:
                hits += 1
                ap += hits / (j + 1)
        aps.append(ap / r)
        rps.append(hits / r)
    return {
        "recall_at_k": recall,
        "precision_at_1": float(rel[:, 0].mean()),
        "map_at_r": float(np.mean(aps)),
        "r_precision": float(np.mean(rps)),
        "n_skipped_queries": len(q) - len(aps),
    }


def assert_match(got, ref, atol=1e-4):
    # atol allows for the odd float32-vs-float64 rank swap of near-tied neighbours (1 query in 10k).
    for k, v in ref["recall_at_k"].items():
        assert got["recall_at_k"][k] == pytest.approx(v, abs=atol), k
    for key in ("precision_at_1", "map_at_r", "r_precision"):
        assert got[key] == pytest.approx(ref[key], abs=atol), key
    assert got["n_skipped_queries"] == ref["n_skipped_queries"]


@pytest.fixture(scope="module")
def data10k():
    return clustered(10_000, 800, dim=32, noise=1.0)


@pytest.mark.slow  # several seconds: runs in make test, not make test-fast
def test_leave_one_out_10k_matches_brute_force(data10k):
    pytest.importorskip("faiss")
    x, y = data10k
    got = retrieval_metrics(x, y, ks=(1, 5, 10), chunk_size=1500)
    ref = brute_force(x, y)
    assert_match(got, ref)
    assert got["n_queries"] == got["n_gallery"] == 10_000
    # Non-trivial data: neither perfect nor chance, so the comparison can fail.
    assert 0.1 < got["map_at_r"] < 0.9
    assert 0.2 < got["recall_at_k"][1] < got["recall_at_k"][10] < 1.0


def test_separate_gallery_matches_brute_force(data10k):
    x, y = data10k
    q, ql, g, gl = x[:1500], y[:1500], x[1500:], y[1500:]
    got = retrieval_metrics(q, ql, g, gl, ks=(1, 3, 20), chunk_size=700)
    assert_match(got, brute_force(q, ql, g, gl, ks=(1, 3, 20)))
    assert got["n_gallery"] == 8500


def test_numpy_fallback_without_faiss(data10k, monkeypatch):
    x, y = data10k
    x, y = x[:3000], y[:3000]
    monkeypatch.setattr(retrieval, "_import_faiss", lambda: None)
    assert_match(retrieval_metrics(x, y, chunk_size=1000), brute_force(x, y))
    with pytest.raises(FaceforgeError, match="pip install faiss-cpu"):
        retrieval_metrics(x, y, index="ivf")


def test_leave_one_out_excludes_self():
    # Each identity has exactly two items; a retrieval that returned the query itself would be perfect.
    rng = np.random.default_rng(1)
    x = rng.standard_normal((200, 16)).astype(np.float32)
    y = np.repeat(np.arange(100), 2)
    res = retrieval_metrics(x, y, ks=(1,))
    ref = brute_force(x, y, ks=(1,))
    assert res["precision_at_1"] == pytest.approx(ref["precision_at_1"])
    assert res["precision_at_1"] < 0.2
    ids = knn_search(x, None, k=5)[1]
    assert not (ids == np.arange(200)[:, None]).any()
    # Identical duplicates: the partner ties with self and must still be found (self dropped by id).
    dup = np.repeat(x[::2], 2, axis=0)
    res = retrieval_metrics(dup, y, ks=(1,))
    assert res["precision_at_1"] == 1.0
    assert res["map_at_r"] == 1.0


def test_singletons_skipped_in_map_at_r():
    x = np.array([[1, 0, 0, 0], [0.9, 0.1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]], np.float32)
    y = np.array([0, 0, 1, 2])
    res = retrieval_metrics(x, y, ks=(1, 2))
    assert res["n_skipped_queries"] == 2
    assert res["map_at_r"] == 1.0 and res["r_precision"] == 1.0
    assert res["recall_at_k"] == {1: 0.5, 2: 0.5}  # the singletons count as misses


def test_ivf_close_to_exact():
    pytest.importorskip("faiss")
    x, y = clustered(10_000, 100, dim=32, noise=0.5, seed=2)
    exact = retrieval_metrics(x, y, ks=(10,))
    approx = retrieval_metrics(x, y, ks=(10,), index="ivf", nprobe=8)
    assert approx["index"] == "ivf"
    assert approx["recall_at_k"][10] == pytest.approx(exact["recall_at_k"][10], abs=0.02)
    _, ids_e = knn_search(x, k=10)
    _, ids_a = knn_search(x, k=10, index="ivf", nprobe=8)
    overlap = np.mean([len(set(a) & set(e)) / 10 for a, e in zip(ids_a, ids_e)])
    assert overlap > 0.8


def test_torch_inputs_and_labels_of_any_type():
    torch = pytest.importorskip("torch")
    x, y = clustered(300, 20, seed=3)
    names = np.array([f"id{v}" for v in y])
    a = retrieval_metrics(torch.from_numpy(x), names)
    b = retrieval_metrics(x, torch.from_numpy(y))
    assert a["map_at_r"] == pytest.approx(b["map_at_r"])


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"query_labels": np.zeros(9)}, "9 labels but there are 10"),
        ({"gallery_emb": np.ones((5, 4)), "gallery_labels": np.zeros(4)}, "4 labels but there are 5"),
        ({"gallery_emb": np.ones((5, 3)), "gallery_labels": np.zeros(5)}, "dim 4 but gallery_emb has dim 3"),
        ({"ks": (1, 10)}, "K=10 is larger than the gallery"),  # leave-one-out: 9 searchable
        ({"gallery_emb": np.ones((5, 4)), "gallery_labels": np.zeros(5), "ks": (6,)}, "K=6"),
        ({"ks": (0,)}, "positive integers, got 0"),
        ({"query_emb": np.full((10, 4), np.nan)}, "NaN or infinite values \\(first at row 0\\)"),
        ({"gallery_emb": np.array([[1, 1, 1, np.inf]] * 3), "gallery_labels": np.zeros(3)}, "gallery_emb"),
        ({"query_emb": np.zeros(10)}, "2-D array"),
        ({"index": "hnsw"}, "unknown index 'hnsw'"),
        ({"chunk_size": 0}, "chunk_size must be >= 1, got 0"),
        ({"gallery_labels": np.zeros(10)}, "gallery_labels given without gallery_emb"),
    ],
)
def test_errors(kwargs, match):
    rng = np.random.default_rng(0)
    args = {
        "query_emb": rng.standard_normal((10, 4)),
        "query_labels": np.arange(10) % 3,
        "ks": (1,),
        **kwargs,
    }
    with pytest.raises(FaceforgeError, match=match):
        retrieval_metrics(**args)
