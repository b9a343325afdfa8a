"""Gallery: exact search equals brute force, IVF / IVF-PQ recall, add/remove/persist, errors."""

from __future__ import annotations

import json

import numpy as np
import pytest

from faceforge.errors import FaceforgeError
from faceforge.infer import Gallery, gallery


def clustered(n: int, dim: int = 64, n_ids: int = 500, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((n_ids, dim))
    lab = rng.integers(0, n_ids, n)
    x = centres[lab] + 0.8 * rng.standard_normal((n, dim))
    return x.astype(np.float32), lab


def brute(q: np.ndarray, g: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Reference top-k by cosine in float64 with a full sort."""
    q = q.astype(np.float64) / np.linalg.norm(q, axis=1, keepdims=True)
    g = g.astype(np.float64) / np.linalg.norm(g, axis=1, keepdims=True)
    sims = q @ g.T
    order = np.argsort(-sims, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(sims, order, 1), order


def test_search_equals_brute_force_on_10k() -> None:
    x, lab = clustered(10_000)
    q, _ = clustered(200, seed=1)
    g = Gallery.build(x, [f"p{v}" for v in lab], [{"row": i} for i in range(len(x))])
    assert g.kind == "flat" and len(g) == 10_000
    res = g.search(q, k=10)
    ref_s, ref_i = brute(q, x, 10)
    got_i = np.array([[h["index"] for h in row] for row in res])
    got_s = np.array([[h["similarity"] for h in row] for row in res])
    assert np.array_equal(got_i, ref_i)
    assert np.abs(got_s - ref_s).max() < 1e-5
    h = res[0][0]
    assert h["label"] == f"p{lab[h['index']]}" and h["meta"] == {"row": h["index"]}


@pytest.mark.parametrize(("kind", "min_recall", "min_recall_all"), [("ivf", 0.85, 1.0), ("ivfpq", 0.8, 0.95)])
def test_approximate_indexes_recall(kind, min_recall, min_recall_all) -> None:
    x, lab = clustered(20_000, dim=64, n_ids=2000)
    q = x[:300] + 0.05 * np.random.default_rng(2).standard_normal((300, 64)).astype(np.float32)
    _, ref_i = brute(q, x, 10)

    def recall(g: Gallery) -> float:
        res = g.search(q, k=10)
        return float(np.mean([len({h["index"] for h in row} & set(r)) / 10 for row, r in zip(res, ref_i)]))

    g = Gallery.build(x, [str(v) for v in lab], index=kind)
    nlist = gallery.default_nlist(20_000)
    assert g.kind == kind and g.params["nlist"] == nlist
    assert g.params["nprobe"] == gallery.default_nprobe(nlist) < nlist
    r_default = recall(g)
    assert r_default >= min_recall
    # Visiting every list: IVF-Flat is exhaustive (exact); IVF-PQ is limited only by the re-ranked candidates.
    g.nprobe = nlist
    assert g.params["nprobe"] == nlist
    assert recall(g) >= max(min_recall_all, r_default)
    # Similarities reported are true cosines of the returned entries (PQ results are re-ranked exactly).
    xn = x / np.linalg.norm(x, axis=1, keepdims=True)
    qn = q / np.linalg.norm(q, axis=1, keepdims=True)
    for row, qq in zip(g.search(q[:20], k=10), qn):
        for h in row:
            assert h["similarity"] == pytest.approx(float(xn[h["index"]] @ qq), abs=1e-4)


def test_auto_picks_the_index_by_size(monkeypatch) -> None:
    assert gallery.choose_index(10) == "flat"
    assert gallery.choose_index(gallery.FLAT_MAX - 1) == "flat"
    assert gallery.choose_index(gallery.FLAT_MAX) == "ivfpq"
    assert gallery.choose_index(10**7) == "ivfpq"
    monkeypatch.setattr(gallery, "FLAT_MAX", 1500)
    monkeypatch.setattr(gallery, "IVFPQ_MIN", 2000)
    x, lab = clustered(3000)
    g = Gallery.build(x[:1400], [str(v) for v in lab[:1400]])
    assert g.kind == "flat"
    g.add(x[1400:], [str(v) for v in lab[1400:]])  # crosses FLAT_MAX: rebuilt as IVF-PQ
    assert g.kind == "ivfpq" and len(g) == 3000 and g.index.ntotal == 3000
    g.remove([str(v) for v in np.unique(lab)[:300]])  # shrinks below: exact again
    assert g.kind == "flat" and g.index.ntotal == len(g) < 1500
    tiny = Gallery.build(x[:50], ["a"] * 50, index="ivf")  # too small to train k-means
    assert tiny.kind == "flat"


def test_add_remove_persist_round_trip(tmp_path) -> None:
    x, _ = clustered(300, dim=32)
    labels = [f"person{i % 30}" for i in range(300)]
    g = Gallery.build(x[:200], labels[:200], [{"i": i} for i in range(200)], model_info={"name": "m"})
    g.add(x[200:], labels[200:], [{"i": i} for i in range(200, 300)])
    assert len(g) == 300
    removed = g.remove(["person3", "person4", "nobody"])
    assert removed == 20 and len(g) == 280 and g.index.ntotal == 280
    assert "person3" not in g.labels and g.remove(["person3"]) == 0
    q = x[[5, 33, 299]]
    before = g.search(q, k=7)
    # Ids are stable and never reused: rows after the removed ones still map to their own meta.
    for row in before:
        for h in row:
            assert g.entries[h["index"]]["meta"]["i"] == h["meta"]["i"]
            assert labels[h["meta"]["i"]] == h["label"]
    path = g.save(tmp_path / "G")
    assert sorted(p.name for p in path.iterdir()) == sorted(gallery._FILES)
    g2 = Gallery.load(path)
    assert g2.search(q, k=7) == before
    assert g2.model_info == {"name": "m"} and g2.labels == g.labels
    g2.add(-x[:1], ["late"])
    assert g2.ids[-1] == 300  # continues after the largest id ever given
    g2.save(path)  # overwrite in place
    assert len(Gallery.load(path)) == 281
    # removing from the middle keeps the search exact against the remaining rows
    res = Gallery.load(path).search(x[:3], k=5)
    keep = np.array([g2.embeddings[i] for i in range(len(g2))])
    _, ref_i = brute(x[:3], keep, 5)
    assert [[h["index"] for h in row] for row in res] == ref_i.tolist()


def test_empty_gallery_and_k_larger_than_gallery() -> None:
    g = Gallery.build(np.zeros((0, 8), np.float32), [])
    assert len(g) == 0 and g.search(np.ones((2, 8), np.float32), k=3) == [[], []]
    g.add(np.eye(3, 8, dtype=np.float32), ["a", "b", "c"])
    res = g.search(np.eye(1, 8, dtype=np.float32), k=10)[0]
    assert res[0]["label"] == "a" and len(res) == 3


def test_gallery_errors(tmp_path) -> None:
    x = np.random.default_rng(0).standard_normal((10, 8)).astype(np.float32)
    with pytest.raises(FaceforgeError, match="3 labels given for 10 embeddings"):
        Gallery.build(x, ["a", "b", "c"])
    with pytest.raises(FaceforgeError, match="not JSON-serialisable"):
        Gallery.build(x[:1], ["a"], [{"x": object()}])
    with pytest.raises(FaceforgeError, match=r"unknown gallery index 'ivff'.*did you mean 'ivf'"):
        Gallery.build(x, list("abcdefghij"), index="ivff")
    g = Gallery.build(x, list("abcdefghij"))
    with pytest.raises(FaceforgeError, match=r"\[N, 8\]"):
        g.add(np.ones((2, 4), np.float32), ["x", "y"])
    with pytest.raises(FaceforgeError, match="NaN"):
        g.search(np.full((1, 8), np.nan, np.float32))
    with pytest.raises(FaceforgeError, match="k must be a positive integer"):
        g.search(x[:1], k=0)
    with pytest.raises(FaceforgeError, match="does not exist"):
        Gallery.load(tmp_path / "none")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FaceforgeError, match=r"incomplete: missing manifest\.json"):
        Gallery.load(tmp_path / "empty")
    p = g.save(tmp_path / "G")
    man = json.loads((p / "manifest.json").read_text())
    (p / "manifest.json").write_text(json.dumps({**man, "count": 11}))
    with pytest.raises(FaceforgeError, match="inconsistent"):
        Gallery.load(p)
    (p / "manifest.json").write_text(json.dumps({**man, "format": "other/9"}))
    with pytest.raises(FaceforgeError, match="expected 'faceforge-gallery/1'"):
        Gallery.load(p)
    other = tmp_path / "docs"
    other.mkdir()
    (other / "keep.txt").write_text("mine")
    with pytest.raises(FaceforgeError, match="not a gallery; refusing"):
        g.save(other)
    assert (other / "keep.txt").read_text() == "mine"
