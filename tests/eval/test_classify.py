"""Classification by retrieval against a brute-force numpy kNN written here, and sklearn's metrics."""

from __future__ import annotations

import json
from collections import defaultdict

import numpy as np
import pytest
from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

from faceforge.errors import FaceforgeError
from faceforge.eval import retrieval
from faceforge.eval.classify import (
    classify_by_retrieval,
    format_classify,
    vote,
    worst_confusions,
    write_classify_report,
)

N_CLASSES = 10


def clustered(n: int, seed: int, dim: int = 32, noise: float = 1.2, skew: float = 1.0):
    """Vectors around 10 fixed class centres, class ``c`` drawn with weight ``skew**c``.

    A skewed gallery puts few, close neighbours of the rare classes beside many, farther ones of the
    common classes, so that the majority and the similarity-weighted vote disagree on some queries.
    """
    centres = np.random.default_rng(1234).standard_normal((N_CLASSES, dim))
    rng = np.random.default_rng(seed)
    p = skew ** np.arange(N_CLASSES)
    labels = rng.choice(N_CLASSES, n, p=p / p.sum())
    # Scaled rows: normalisation inside must make the result independent of the norms.
    scale = rng.uniform(0.5, 3.0, (n, 1))
    return ((centres[labels] + noise * rng.standard_normal((n, dim))) * scale).astype(np.float32), labels


def brute_force(g, gl, q, ql, k, ks, exclude_self=False):
    """Reference from the definitions: float64 cosine, full sort, per-query Python votes."""
    g = g.astype(np.float64) / np.linalg.norm(g, axis=1, keepdims=True)
    q = q.astype(np.float64) / np.linalg.norm(q, axis=1, keepdims=True)
    sims = q @ g.T
    if exclude_self:
        np.fill_diagonal(sims, -np.inf)
    order = np.argsort(-sims, axis=1, kind="stable")
    maj, wei, top1, recall, aps = [], [], [], {K: 0 for K in ks}, []
    for i in range(len(q)):
        nn = order[i, :k]
        count, total, first = defaultdict(int), defaultdict(float), {}
        for rank, j in enumerate(nn):
            c = int(gl[j])
            count[c] += 1
            total[c] += sims[i, j]
            first.setdefault(c, rank)
        maj.append(max(count, key=lambda c: (count[c], total[c], -first[c])))
        wei.append(max(total, key=lambda c: (total[c], -first[c])))
        top1.append(int(gl[nn[0]]))
        rel = gl[order[i]] == ql[i]
        if exclude_self:
            rel = rel[:-1]  # the query itself sorts last (-inf) and is not a gallery item
        for K in ks:
            recall[K] += bool(rel[:K].any())
        r = int(rel.sum())
        if r:
            hits = rel[:r]
            prec = np.cumsum(hits) / np.arange(1, r + 1)
            aps.append(float((prec * hits).sum() / r))
    return (
        np.array(maj),
        np.array(wei),
        np.array(top1),
        {K: v / len(q) for K, v in recall.items()},
        float(np.mean(aps)),
    )


@pytest.fixture(scope="module")
def data():
    g, gl = clustered(2000, seed=0, skew=0.6)
    q, ql = clustered(3000, seed=1)
    return g, gl, q, ql


@pytest.fixture(scope="module")
def result(data):
    g, gl, q, ql = data
    return classify_by_retrieval(g, gl, q, ql, k=20, ks=(1, 5))


def test_matches_brute_force_knn(data, result):
    g, gl, q, ql = data
    maj, wei, top1, recall, map_r = brute_force(g, gl, q, ql, k=20, ks=(1, 5))
    # Not trivially 0 or 1, and the three rules disagree on some queries (else the test proves little).
    assert 0.3 < result.accuracy < 0.95
    assert (maj != wei).sum() > 20 and (top1 != wei).sum() > 100
    np.testing.assert_array_equal(result.predictions_majority, maj)
    np.testing.assert_array_equal(result.predictions, wei)
    np.testing.assert_array_equal(result.predictions_top1, top1)
    assert result.accuracy == pytest.approx((wei == ql).mean(), abs=1e-12)
    assert result.accuracy_majority == pytest.approx((maj == ql).mean(), abs=1e-12)
    assert result.accuracy_top1 == pytest.approx((top1 == ql).mean(), abs=1e-12)
    assert set(result.recall_at) == {1, 5}
    for K in (1, 5):
        assert result.recall_at[K] == pytest.approx(recall[K], abs=1e-12)
    assert result.recall_at[1] == result.accuracy_top1
    assert result.map_at_r == pytest.approx(map_r, abs=1e-6)
    assert result.neighbour_indices.shape == (3000, 20) and result.neighbour_scores.shape == (3000, 20)
    assert (np.diff(result.neighbour_scores, axis=1) <= 1e-6).all()


def test_per_class_and_confusion_match_sklearn(data, result):
    _, _, _, ql = data
    labels = list(range(N_CLASSES))
    np.testing.assert_array_equal(result.confusion, confusion_matrix(ql, result.predictions, labels=labels))
    p, r, f, s = precision_recall_fscore_support(ql, result.predictions, labels=labels, zero_division=0)
    for c in labels:
        m = result.per_class[str(c)]
        assert m["precision"] == pytest.approx(p[c]) and m["recall"] == pytest.approx(r[c])
        assert m["f1"] == pytest.approx(f[c]) and m["support"] == s[c]
    _, _, macro, _ = precision_recall_fscore_support(ql, result.predictions, average="macro", zero_division=0)
    assert result.macro_f1 == pytest.approx(macro)


def test_worst_confusions_and_dict(result):
    worst = worst_confusions(result, n=3)
    off = result.confusion.copy()
    np.fill_diagonal(off, 0)
    assert [c for _, _, c in worst] == sorted(off.ravel(), reverse=True)[:3]
    t, p, c = worst[0]
    assert off[int(t), int(p)] == c
    d = result.to_dict()
    json.dumps(d, allow_nan=False)
    assert d["accuracy"] == result.accuracy and d["recall_at_k"]["5"] == result.recall_at[5]


def test_class_names_exclude_self_and_string_labels():
    g, gl = clustered(600, seed=3)
    names = [f"plant_{i}" for i in range(N_CLASSES)] + ["never_seen"]
    res = classify_by_retrieval(g, gl, g, gl, k=7, class_names=names, exclude_self=True)
    maj, wei, _, recall, map_r = brute_force(g, gl, g, gl, k=7, ks=(1, 5), exclude_self=True)
    np.testing.assert_array_equal(res.predictions, wei)
    np.testing.assert_array_equal(res.predictions_majority, maj)
    assert res.recall_at[5] == pytest.approx(recall[5]) and res.map_at_r == pytest.approx(map_r, abs=1e-6)
    assert res.confusion.shape == (11, 11) and res.per_class["never_seen"]["support"] == 0
    # Same answer with string labels (no class_names) and no query labels given (exclude_self default).
    sl = np.array(names)[gl]
    res2 = classify_by_retrieval(g, sl, g, k=7, exclude_self=True)
    np.testing.assert_array_equal(res2.predictions, np.array(names)[wei])
    assert res2.accuracy == res.accuracy
    # Without query labels: predictions only.
    res3 = classify_by_retrieval(g[:300], gl[:300], g[300:], k=5)
    assert res3.predictions.shape == (300,) and np.isnan(res3.accuracy) and res3.recall_at == {}


def test_vote_ties():
    # Majority: classes 1 and 2 both have two votes; 2's summed similarity is larger -> 2.
    codes = np.array([[1, 2, 2, 1, 3], [4, 5, 5, 4, -1]])
    scores = np.array([[0.9, 0.8, 0.8, 0.5, 0.4], [0.9, 0.7, 0.2, 0.0, 0.0]])
    assert vote(codes, scores, weighted=False).tolist() == [2, 4]
    # Exact tie in count and sum -> the class of the nearest neighbour; -1 entries never vote.
    codes = np.array([[7, 3, 3, 7], [-1, -1, -1, -1]])
    scores = np.array([[0.5, 0.5, 0.5, 0.5], [0.1, 0.1, 0.1, 0.1]])
    assert vote(codes, scores, weighted=False).tolist() == [7, -1]
    assert vote(codes, scores, weighted=True).tolist() == [7, -1]


def test_k_is_clamped_and_torch_inputs_work(data):
    torch = pytest.importorskip("torch")
    g, gl, q, ql = data
    res = classify_by_retrieval(
        torch.from_numpy(g[:8]), torch.from_numpy(gl[:8]), q[:20], torch.from_numpy(ql[:20])
    )
    assert res.k == 8 and res.neighbour_indices.shape == (20, 8)
    ref = classify_by_retrieval(g[:8], gl[:8], q[:20], ql[:20], k=8)
    np.testing.assert_array_equal(res.predictions, ref.predictions)


def test_auto_index_switches_to_ivf(monkeypatch):
    pytest.importorskip("faiss")
    g, gl = clustered(2000, seed=5, noise=0.3)
    q, ql = clustered(200, seed=6, noise=0.3)
    assert classify_by_retrieval(g, gl, q, ql, k=5).index == "flat"
    monkeypatch.setattr(retrieval, "AUTO_IVF_MIN_GALLERY", 1000)
    res = classify_by_retrieval(g, gl, q, ql, k=5)
    assert res.index == "ivf" and res.accuracy > 0.9


def test_report_files(tmp_path, data):
    g, gl, q, ql = data
    res = classify_by_retrieval(
        g[:500], gl[:500], q[:300], ql[:300], k=5, class_names=[f"c{i}" for i in range(10)]
    )
    qp = [f"/data/q/{i}.jpg" for i in range(300)]
    gp = [f"/data/g/{i}.jpg" for i in range(500)]
    paths = write_classify_report(
        res, tmp_path / "rep", query_paths=qp, gallery_paths=gp, extra={"model": "m"}
    )
    d = json.loads(paths["json"].read_text())
    wrong = int((res.prediction_codes != ql[:300]).sum())
    assert d["n_misclassified"] == wrong > 0 and d["model"] == "m"
    first = d["misclassified"][0]
    i = first["index"]
    assert first["file"] == qp[i] and first["true"] == f"c{ql[i]}" and first["predicted"] != first["true"]
    assert first["neighbours"][0]["file"] == gp[res.neighbour_indices[i, 0]]
    assert first["neighbours"][0]["score"] == pytest.approx(float(res.neighbour_scores[i, 0]), abs=1e-5)
    md = paths["md"].read_text()
    assert "Misclassified" in md and "c0" in md and qp[i] in md
    assert paths["confusion"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "R@5 (%)" in format_classify(res)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"k": 0}, "k must be a positive integer"),
        ({"ks": (1, 600)}, "larger than the gallery"),
        ({"class_names": ["a", "b"]}, "class index 9"),
        ({"index": "hnsw"}, "unknown index 'hnsw'"),
    ],
)
def test_user_errors(data, kwargs, match):
    g, gl, q, ql = data
    with pytest.raises(FaceforgeError, match=match):
        classify_by_retrieval(g[:500], gl[:500], q[:50], ql[:50], **kwargs)


def test_mean_row_over_verification_sets() -> None:
    from faceforge.eval.run import mean_row

    a = {"accuracy": 0.9, "auc": 0.95, "eer": 0.1, "tar_at_far": {"0.001": 0.5, "0.01": 0.7}}
    b = {"accuracy": 0.7, "auc": 0.75, "eer": 0.3, "tar_at_far": {"0.01": 0.3}}
    m = mean_row({"a": a, "b": b})
    assert m["accuracy"] == pytest.approx(0.8) and m["eer"] == pytest.approx(0.2)
    assert m["tar_at_far"] == {"0.01": pytest.approx(0.5)} and m["sets"] == ["a", "b"]
    assert mean_row({"a": a}) is None


@pytest.mark.slow  # two evaluations of a checkpoint: ~9 s on 2 cores
def test_eval_prints_and_writes_the_mean_row(synth_data, tmp_path, capsys, ckpt_factory, monkeypatch) -> None:
    from faceforge.cli.main import main
    from faceforge.eval.run import MEAN_ROW

    monkeypatch.setenv("FACEFORGE_HOME", str(tmp_path / "home"))
    ckpt = ckpt_factory(tmp_path / "c.ckpt")
    pairs = str(synth_data / "test_pairs.txt")
    out = tmp_path / "rep"
    assert (
        main(["eval", "--model", str(ckpt), "--sets", f"one={pairs}", f"two={pairs}", "--out", str(out)]) == 0
    )
    table = capsys.readouterr().out
    assert any(line.startswith(MEAN_ROW + " ") for line in table.splitlines())
    rep = json.loads((out / "report.json").read_text())
    assert rep[MEAN_ROW]["accuracy"] == pytest.approx((rep["one"]["accuracy"] + rep["two"]["accuracy"]) / 2)
    assert rep[MEAN_ROW]["sets"] == ["one", "two"]
