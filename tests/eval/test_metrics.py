"""Tests for faceforge.eval.metrics: the insightface 10-fold protocol, ROC/AUC/EER and TAR@FAR."""

from __future__ import annotations

import json

import numpy as np
import pytest

from faceforge.errors import FaceforgeError
from faceforge.eval.metrics import _MAX_ROC_POINTS, equal_error_rate, evaluate_pairs, roc_curve, tar_at_far

# --------------------------------------------------------------------------------------------------
# helpers


def _pairs_at_cosines(cosines: np.ndarray, dim: int = 16, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Unit vectors a, b with <a_i, b_i> = cosines[i] (up to float32 rounding)."""
    rng = np.random.default_rng(seed)
    n = cosines.size
    a = rng.standard_normal((n, dim))
    a /= np.linalg.norm(a, axis=1, keepdims=True)
    r = rng.standard_normal((n, dim))
    r -= np.sum(r * a, axis=1, keepdims=True) * a
    r /= np.linalg.norm(r, axis=1, keepdims=True)
    b = cosines[:, None] * a + np.sqrt(1.0 - cosines[:, None] ** 2) * r
    return a.astype(np.float32), b.astype(np.float32)


def _random_problem(n: int, seed: int, dim: int = 16) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    same = rng.random(n) < 0.5
    cos = np.where(same, rng.normal(0.55, 0.2, n), rng.normal(0.1, 0.15, n)).clip(-0.95, 0.95)
    a, b = _pairs_at_cosines(cos, dim, seed + 1)
    return a, b, same


def _float32_dist(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    from sklearn.preprocessing import normalize

    a, b = normalize(a), normalize(b)
    return np.sum(np.square(np.subtract(a, b)), 1)


def _cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The scores the ROC is built on: float32 dot products and squared norms, combined in float64."""
    a, b = np.asarray(a, np.float32), np.asarray(b, np.float32)
    ab, aa, bb = (np.einsum("ij,ij->i", x, y).astype(np.float64) for x, y in ((a, b), (a, a), (b, b)))
    return ab / np.sqrt(aa * bb)


def _naive_reference(a: np.ndarray, b: np.ndarray, same: np.ndarray, n_folds: int) -> dict:
    """A plain per-threshold loop with sklearn KFold + scipy interp1d, as insightface evaluate() does it."""
    from scipy import interpolate
    from sklearn.model_selection import KFold

    dist = _float32_dist(a, b)
    acc_grid, val_grid = np.arange(0, 4, 0.01), np.arange(0, 4, 0.001)

    def acc_at(t, d, s):
        p = d < t
        return float(np.sum(p & s) + np.sum(~p & ~s)) / d.size

    def far_at(t, d, s):
        return float(np.sum((d < t) & ~s)) / float(np.sum(~s))

    out = {"acc": [], "thr": [], "val": [], "val_thr": []}
    for train, test in KFold(n_folds, shuffle=False).split(np.arange(len(same))):
        acc_train = [acc_at(t, dist[train], same[train]) for t in acc_grid]
        best = int(np.argmax(acc_train))
        out["thr"].append(acc_grid[best])
        out["acc"].append(acc_at(acc_grid[best], dist[test], same[test]))
        far_train = np.array([far_at(t, dist[train], same[train]) for t in val_grid])
        if far_train.max() >= 1e-3:
            far_u, idx = np.unique(far_train, return_index=True)
            thr = float(interpolate.interp1d(far_u, val_grid[idx], kind="slinear")(1e-3))
        else:
            thr = 0.0
        out["val_thr"].append(thr)
        out["val"].append(float(np.sum((dist[test] < thr) & same[test])) / float(np.sum(same[test])))
    return out


# --------------------------------------------------------------------------------------------------
# against the stored insightface run (README section 3)


@pytest.fixture(scope="module")
def ref(shared_dir):
    with np.load(shared_dir / "reference" / "vectors" / "verification.npz") as z:
        data = {k: z[k] for k in z.files}
    emb = data["embeddings"]
    data["result"] = evaluate_pairs(emb[0::2], emb[1::2], data["issame"])
    return data


def test_reference_fold_accuracy_and_thresholds_identical(ref):
    r = ref["result"]
    np.testing.assert_array_equal(r["fold_accuracy"], ref["accuracy"])
    np.testing.assert_array_equal(r["fold_threshold"], ref["best_threshold"])
    assert abs(r["accuracy"] - ref["acc_mean"]) < 1e-9
    assert abs(r["accuracy_std"] - ref["acc_std"]) < 1e-9
    assert r["threshold"] == pytest.approx(float(np.mean(ref["best_threshold"])), abs=1e-12)
    assert r["threshold_cos"] == pytest.approx(float(np.mean(ref["best_threshold_cos"])), abs=1e-12)


def test_reference_val_far(ref):
    r = ref["result"]
    np.testing.assert_array_equal(r["val_threshold"], ref["val_threshold"])
    np.testing.assert_array_equal(r["val_per_fold"], ref["val_per_fold"])
    np.testing.assert_array_equal(r["far_per_fold"], ref["far_per_fold"])
    assert abs(r["val"] - ref["val"]) < 1e-9
    assert abs(r["val_std"] - ref["val_std"]) < 1e-9
    assert abs(r["far"] - ref["far"]) < 1e-9


def test_reference_auc_eer(ref):
    r = ref["result"]
    assert abs(r["auc"] - ref["roc_auc"]) < 1e-6
    assert abs(r["eer"] - ref["eer"]) < 1e-6
    assert abs(r["eer_threshold_cos"] - ref["eer_threshold_cos"]) < 1e-6
    assert r["n_pairs"] == 6000 and r["n_genuine"] == 3000 and r["n_impostor"] == 3000


def test_reference_tar_at_far_matches_brute_force(ref):
    r = ref["result"]
    same = ref["issame"]
    cos = _cosine(ref["embeddings"][0::2], ref["embeddings"][1::2])
    # 3000 impostors: FAR steps of 1/3000, so 1e-4 and below are not reported.
    assert set(r["tar_at_far"]) == {"0.1", "0.01", "0.001"}
    for key, tar in r["tar_at_far"].items():
        thr = r["tar_at_far_threshold_cos"][key]
        far = np.mean(cos[~same] >= thr)
        assert far <= float(key)
        assert abs(tar - np.mean(cos[same] >= thr)) < 1e-6
        # Loosest: lowering the threshold to the next impostor score would break the FAR target.
        next_imp = np.max(cos[~same][cos[~same] < thr])
        assert np.mean(cos[~same] >= next_imp) > float(key)


def test_reference_exact_mode_never_worse_on_training_folds(ref):
    emb, same = ref["embeddings"], ref["issame"]
    a, b = emb[0::2], emb[1::2]
    grid = ref["result"]
    exact = evaluate_pairs(a, b, same, mode="exact")
    dist = _float32_dist(a, b).astype(np.float64)
    fold = ref["fold"]
    for k in range(10):
        train = fold != k
        acc_grid = np.mean((dist[train] < grid["fold_threshold"][k]) == same[train])
        acc_exact = np.mean((dist[train] < exact["fold_threshold"][k]) == same[train])
        assert acc_exact >= acc_grid
    assert exact["mode"] == "exact" and grid["mode"] == "grid"
    # The ROC part does not depend on the threshold search.
    assert exact["auc"] == grid["auc"] and exact["val_per_fold"] == grid["val_per_fold"]


def test_reference_torch_input_matches_numpy(ref):
    torch = pytest.importorskip("torch")
    emb = ref["embeddings"][:2400]
    same = ref["issame"][:1200]
    r_np = evaluate_pairs(emb[0::2], emb[1::2], same)
    t = torch.from_numpy(emb)
    r_t = evaluate_pairs(t[0::2], t[1::2], torch.from_numpy(same))
    assert r_t == r_np


# --------------------------------------------------------------------------------------------------
# independent of ../shared


def test_matches_naive_loop_with_uneven_folds():
    a, b, same = _random_problem(203, seed=3)
    r = evaluate_pairs(a, b, same, n_folds=7)
    ref = _naive_reference(a, b, same, n_folds=7)
    assert r["fold_accuracy"] == ref["acc"]
    assert r["fold_threshold"] == ref["thr"]
    assert r["val_threshold"] == ref["val_thr"]  # same arithmetic as scipy, to the bit
    assert r["val_per_fold"] == ref["val"]


def test_kfold_layout_is_contiguous_with_larger_first_folds():
    pytest.importorskip("sklearn")
    from sklearn.model_selection import KFold

    # Only fold 2 (pairs 6..8 of 23 in 5 folds: 5,5,5,4,4 -> pairs 10..14) is made unseparable.
    n = 23
    same = np.arange(n) % 2 == 0
    cos = np.where(same, 0.9, -0.5)
    test_fold = list(KFold(5).split(np.arange(n)))[2][1]
    cos[test_fold] = np.where(same[test_fold], -0.5, 0.9)
    a, b = _pairs_at_cosines(cos)
    r = evaluate_pairs(a, b, same, n_folds=5)
    assert r["fold_accuracy"] == [1.0, 1.0, 0.0, 1.0, 1.0]


def test_pair_exactly_on_threshold_is_rejected():
    # Genuine pairs are identical images (dist exactly 0.0 = the first grid threshold); with the strict
    # rule `dist < t`, t = 0.0 accepts nothing, so the first perfect threshold is 0.01.
    rng = np.random.default_rng(1)
    same = np.arange(100) % 2 == 0
    a = rng.normal(size=(100, 8)).astype(np.float32)
    b = np.where(same[:, None], a, -a)  # impostors at dist 4
    r = evaluate_pairs(a, b, same)
    assert r["fold_threshold"] == [0.01] * 10
    assert r["accuracy"] == 1.0


def test_perfectly_separable():
    rng = np.random.default_rng(5)
    same = rng.random(400) < 0.4
    cos = np.where(same, rng.uniform(0.6, 0.9, 400), rng.uniform(-0.3, 0.2, 400))
    a, b = _pairs_at_cosines(cos, seed=6)
    r = evaluate_pairs(a, b, same)
    assert r["accuracy"] == 1.0 and r["accuracy_std"] == 0.0
    assert r["auc"] == 1.0
    assert r["eer"] == 0.0
    assert set(r["tar_at_far"].values()) == {1.0}
    assert r["roc_fpr"][0] == 0.0 and r["roc_tpr"][-1] == 1.0
    # The EER threshold is the lowest genuine score: everything genuine accepted, nothing else.
    assert r["eer_threshold_cos"] == pytest.approx(cos[same].min(), abs=1e-6)
    json.dumps(r, allow_nan=False)


def test_auc_matches_sklearn_with_ties():
    sk = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(11)
    n = 3000
    same = rng.random(n) < 0.5
    # 15 distinct pairs reused many times, so genuine and impostor scores tie exactly.
    base_a, base_b = _pairs_at_cosines(np.linspace(-0.5, 0.9, 15), seed=12)
    level = np.where(same, rng.integers(5, 15, n), rng.integers(0, 11, n))
    a, b = base_a[level], base_b[level]
    r = evaluate_pairs(a, b, same)
    score = _cosine(a, b)
    assert np.unique(score).size == 15
    expected = sk.roc_auc_score(same, score)
    assert r["auc"] == pytest.approx(expected, abs=1e-12)
    # Ties count half: breaking them pessimistically gives a clearly lower AUC.
    assert sk.roc_auc_score(same, score - 1e-9 * same) < expected - 0.01


def test_roc_curve_equals_sklearn():
    sk = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(2)
    y = rng.random(500) < 0.3
    s = np.round(rng.normal(size=500) + y, 1)  # rounded -> ties
    fpr, tpr, thr = roc_curve(y, s)
    fpr_s, tpr_s, thr_s = sk.roc_curve(y, s, drop_intermediate=False)
    np.testing.assert_array_equal(fpr, fpr_s)
    np.testing.assert_array_equal(tpr, tpr_s)
    np.testing.assert_array_equal(thr[1:], thr_s[1:])


def test_eer_matches_root_finding():
    rng = np.random.default_rng(9)
    y = rng.random(700) < 0.5
    s = rng.normal(size=700) + 1.3 * y
    fpr, tpr, thr = roc_curve(y, s)
    eer, eer_thr = equal_error_rate(fpr, tpr, thr)
    # Bisection on 1 - x = TPR(x) with TPR linear in FPR between ROC points.
    lo, hi = 0.0, 1.0
    for _ in range(80):
        mid = (lo + hi) / 2
        if 1.0 - mid - np.interp(mid, fpr, tpr) > 0:
            lo = mid
        else:
            hi = mid
    assert eer == pytest.approx(lo, abs=1e-12)
    # At the threshold, the empirical FAR and FRR bracket the EER.
    far, frr = np.mean(s[~y] >= eer_thr), np.mean(s[y] < eer_thr)
    assert min(far, frr) - 1e-12 <= eer <= max(far, frr) + 1e-12


def test_tar_at_far_only_achievable_targets():
    a, b, same = _random_problem(300, seed=21)
    r = evaluate_pairs(a, b, same, far_targets=(0.1, 0.01, 0.001))
    n_imp = r["n_impostor"]
    assert n_imp == int((~same).sum())
    assert set(r["tar_at_far"]) == {str(f) for f in (0.1, 0.01, 0.001) if f * n_imp >= 1}
    fpr, tpr, thr = roc_curve(same, _cosine(a, b))
    tar, far, _ = tar_at_far(fpr, tpr, thr, 0.1)
    assert far <= 0.1 and tar == pytest.approx(r["tar_at_far"]["0.1"], abs=1e-6)


def test_roc_downsampled_to_true_operating_points():
    a, b, same = _random_problem(9000, seed=4, dim=8)
    r = evaluate_pairs(a, b, same)
    fpr, tpr = np.array(r["roc_fpr"]), np.array(r["roc_tpr"])
    assert 100 < fpr.size <= 2000
    assert fpr[0] == 0.0 and fpr[-1] == 1.0 and tpr[-1] == 1.0
    assert np.all(np.diff(fpr) >= 0) and np.all(np.diff(tpr) >= 0)
    full_fpr, full_tpr, _ = roc_curve(same, _cosine(a, b))
    full = set(zip(full_fpr.round(12), full_tpr.round(12)))
    assert all(p in full for p in zip(fpr.round(12), tpr.round(12)))
    # The low-FAR end (log-scale plots) keeps its resolution: below FAR 0.01 every distinct FAR level
    # of the full curve is kept (its last, highest-TAR point), because the log-spaced targets (ratio
    # r between neighbours) are denser there than the levels k/n (ratio (k+1)/k > r while k < 1/(r-1)).
    n_imp = int((~same).sum())
    r = (1.0 / full_fpr[full_fpr > 0][0]) ** (1.0 / (_MAX_ROC_POINTS // 2 - 2))
    assert 0.01 * n_imp < 1.0 / (r - 1.0)  # the premise holds for this problem's size
    low = (full_fpr > 0) & (full_fpr < 0.01)
    levels = np.unique(full_fpr[low])
    assert levels.size > 20
    kept = dict(zip(fpr.round(12), tpr.round(12)))
    for v in levels:
        assert kept.get(round(float(v), 12)) == round(float(full_tpr[full_fpr == v].max()), 12), v


def test_normalises_embeddings_and_accepts_int_labels():
    a, b, same = _random_problem(200, seed=8)
    r = evaluate_pairs(a, b, same)
    scaled = evaluate_pairs(a * 7.5, b * 0.2, same.astype(np.int64))
    assert scaled["fold_threshold"] == r["fold_threshold"]
    assert scaled["auc"] == pytest.approx(r["auc"], abs=1e-9)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"emb_b": np.zeros((19, 4), np.float32)}, r"\(19, 4\)"),
        ({"issame": np.ones(21, bool)}, "21 entries"),
        ({"n_folds": 30}, "20 pairs is fewer than n_folds=30"),
        ({"n_folds": 1}, "n_folds=1"),
        ({"issame": np.ones(20, bool)}, "20 genuine and 0 impostor"),
        ({"issame": np.zeros(20, bool)}, "0 genuine and 20 impostor"),
        ({"issame": np.full(20, 2)}, "values other than 0/1"),
        ({"mode": "exakt"}, "'exakt'.*did you mean 'exact'"),
        ({"far_targets": (0.1, 0.0)}, "0.0"),
        ({"emb_a": np.zeros(20, np.float32)}, r"emb_a has shape \(20,\)"),
    ],
)
def test_bad_input(kwargs, match):
    rng = np.random.default_rng(0)
    args = {
        "emb_a": rng.normal(size=(20, 4)).astype(np.float32),
        "emb_b": rng.normal(size=(20, 4)).astype(np.float32),
        "issame": np.arange(20) % 2 == 0,
    }
    args.update(kwargs)
    with pytest.raises(FaceforgeError, match=match):
        evaluate_pairs(**args)


def test_nan_embedding_names_input_and_row():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(20, 4)).astype(np.float32)
    b = a.copy()
    b[13, 2] = np.nan
    with pytest.raises(FaceforgeError, match=r"emb_b contains NaN or Inf in 1 row.*row 13"):
        evaluate_pairs(a, b, np.arange(20) % 2 == 0)


def test_bfloat16_tensor_equals_its_float32_values():
    torch = pytest.importorskip("torch")
    a, b, same = _random_problem(120, seed=30)
    ta, tb = torch.from_numpy(a).bfloat16(), torch.from_numpy(b).bfloat16()
    r16 = evaluate_pairs(ta, tb, torch.from_numpy(same))
    r32 = evaluate_pairs(ta.float().numpy(), tb.float().numpy(), same)
    assert r16 == r32


# --------------------------------------------------------------------------------------------------
# sort-based threshold search and block-wise scores (added with the 100x protocol benchmark)


def _exact_reference(dist: np.ndarray, same: np.ndarray, n_folds: int) -> tuple[list[float], list[float]]:
    """Per-fold threshold and accuracy of an exhaustive loop over every distinct partition of the pairs."""
    u = np.unique(dist)
    candidates = np.r_[u[0], (u[:-1] + u[1:]) / 2.0, np.nextafter(u[-1], np.inf)]
    sizes = np.full(n_folds, len(same) // n_folds)
    sizes[: len(same) % n_folds] += 1
    fold = np.repeat(np.arange(n_folds), sizes)
    thr, acc = [], []
    for k in range(n_folds):
        tr, te = fold != k, fold == k
        train_acc = [np.mean((dist[tr] < t) == same[tr]) for t in candidates]
        best = candidates[int(np.argmax(train_acc))]  # first maximum, as the reference
        thr.append(float(best))
        acc.append(float(np.mean((dist[te] < best) == same[te])))
    return thr, acc


def test_exact_mode_matches_an_exhaustive_loop_with_ties():
    # 311 pairs made of 40 distinct pairs: many pairs share a distance, genuine and impostor alike.
    rng = np.random.default_rng(40)
    base_a, base_b = _pairs_at_cosines(np.linspace(-0.4, 0.9, 40), seed=41)
    same = rng.random(311) < 0.5
    level = np.where(same, rng.integers(12, 40, 311), rng.integers(0, 30, 311))
    a, b = base_a[level], base_b[level]
    r = evaluate_pairs(a, b, same, n_folds=6, mode="exact")
    dist = _float32_dist(a, b).astype(np.float64)
    assert np.unique(dist).size <= 40
    thr, acc = _exact_reference(dist, same, 6)
    assert r["fold_threshold"] == thr
    assert r["fold_accuracy"] == acc


def test_many_blocks_match_the_naive_loop():
    # 2,000 pairs of 128-d rows span several of _pair_scores' cache blocks.
    a, b, same = _random_problem(2000, seed=41, dim=128)
    r = evaluate_pairs(a, b, same, n_folds=10)
    ref = _naive_reference(a, b, same, n_folds=10)
    assert r["fold_accuracy"] == ref["acc"]
    assert r["fold_threshold"] == ref["thr"]
    assert r["val_threshold"] == ref["val_thr"]
    assert r["val_per_fold"] == ref["val"]


def test_layout_and_dtype_of_the_input_change_nothing():
    a, b, same = _random_problem(1500, seed=42, dim=96)
    base = evaluate_pairs(a, b, same, mode="exact")
    inter = np.empty((3000, 96), np.float32)
    inter[0::2], inter[1::2] = a, b
    variants = {
        "interleaved views": (inter[0::2], inter[1::2]),
        "fortran order": (np.asfortranarray(a), np.asfortranarray(b)),
        "float64": (a.astype(np.float64), b.astype(np.float64)),
    }
    for what, (x, y) in variants.items():
        assert evaluate_pairs(x, y, same, mode="exact") == base, what
    # The inputs are never modified.
    assert np.array_equal(inter[0::2], a) and np.array_equal(inter[1::2], b)


def test_bad_rows_are_named_whichever_block_they_are_in():
    rng = np.random.default_rng(3)
    a = rng.normal(size=(3000, 64)).astype(np.float32)
    b = rng.normal(size=(3000, 64)).astype(np.float32)
    same = np.arange(3000) % 2 == 0
    b[5, 0] = np.inf  # first block of emb_b ...
    a[2900, 1] = np.nan  # ... and a late block of emb_a: emb_a is reported, as it is checked first
    with pytest.raises(FaceforgeError, match=r"emb_a contains NaN or Inf in 1 row.*row 2900"):
        evaluate_pairs(a, b, same)
    a[2900, 1] = 0.0
    with pytest.raises(FaceforgeError, match=r"emb_b contains NaN or Inf in 1 row.*row 5"):
        evaluate_pairs(a, b, same)
    b[5, 0] = 3e20  # finite, but its square overflows float32
    with pytest.raises(FaceforgeError, match="emb_b has values too large"):
        evaluate_pairs(a, b, same)


# --------------------------------------------------------------------------------------------------
# fast scores, exact where a threshold is near


def _on_grid_problem(dim: int, seed: int = 7) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """2,000 pairs whose distances sit on grid values, where the last bits decide every comparison.

    Genuine pairs on the accuracy grid (0.2-1.5), impostors on the VAL grid (0.7-2.0, so the lowest
    ones, where the VAL threshold is found, are on it too); rows of ``a`` are not unit length.
    """
    rng = np.random.default_rng(seed)
    n = 2000
    same = rng.random(n) < 0.5
    t = np.where(same, rng.integers(20, 150, n) * 0.01, rng.integers(700, 2000, n) * 0.001)
    a, b = _pairs_at_cosines(1.0 - t / 2.0, dim, seed + 1)
    return a * rng.uniform(0.5, 20.0, (n, 1)).astype(np.float32), b, same


@pytest.mark.parametrize("dim", [100, 512])
def test_fast_distances_are_exact_wherever_a_grid_value_is_near(dim):
    from faceforge.eval.metrics import _VAL_GRID, _PairScores

    a, b, _ = _on_grid_problem(dim)
    ref = _float32_dist(a, b).astype(np.float64)
    s = _PairScores(a, b)
    cell = lambda d: np.searchsorted(_VAL_GRID, d)  # noqa: E731 - which grid values a distance is below
    # The fast values alone would put many of these rows on the wrong side of a grid value ...
    assert (cell(s.dist) != cell(ref)).sum() > 100
    # ... but they are within the proven margin of the reference, so the rows near a grid value are
    # exactly the ones that can differ; recomputed, they carry the reference's bits.
    assert np.abs(s.dist - ref).max() <= s.margin
    s.refine(s.near_grid(0.001))
    assert np.array_equal(cell(s.dist), cell(ref))
    assert np.array_equal(s.dist[s.exact], ref[s.exact])


@pytest.mark.parametrize("dim", [100, 512])
def test_distances_on_grid_values_match_the_naive_loop(dim):
    a, b, same = _on_grid_problem(dim)
    r = evaluate_pairs(a, b, same)
    ref = _naive_reference(a, b, same, n_folds=10)
    assert r["fold_accuracy"] == ref["acc"]
    assert r["fold_threshold"] == ref["thr"]
    assert r["val_threshold"] == ref["val_thr"]
    assert r["val_per_fold"] == ref["val"]


def test_without_the_rounding_margin_the_numbers_would_differ(monkeypatch):
    # The check above can fail: with no margin (fast distances trusted everywhere) it does.
    import faceforge.eval.metrics as metrics

    a, b, same = _on_grid_problem(512)
    ref = _naive_reference(a, b, same, n_folds=10)
    monkeypatch.setattr(metrics, "_rounding_bound", lambda dim: 0.0)
    r = evaluate_pairs(a, b, same)
    assert (r["fold_accuracy"], r["val_per_fold"]) != (ref["acc"], ref["val"])


def test_zero_and_tiny_rows_take_the_exact_path():
    from faceforge.eval.metrics import _PairScores

    a, b, same = _random_problem(400, seed=9, dim=32)
    a[3] = 0.0  # sklearn's normalize leaves a zero row at zero: cosine 0, distance |b|^2 = 1
    a[5] *= 1e-25  # its squares underflow float32: the norm is 0 and the row is left as it is
    s = _PairScores(a, b)
    assert s.exact[3] and s.exact[5] and s.exact.sum() == 2
    ref = _float32_dist(a, b).astype(np.float64)
    assert s.dist[3] == ref[3] and s.dist[5] == ref[5] and s.cosine[3] == 0.0
    r = evaluate_pairs(a, b, same, n_folds=4)
    naive = _naive_reference(a, b, same, n_folds=4)
    assert r["fold_accuracy"] == naive["acc"] and r["val_per_fold"] == naive["val"]
