"""Face-verification metrics for pair lists: the LFW-style 10-fold accuracy and VAL@FAR of insightface's
``eval/verification.py`` ``evaluate()`` (deepinsight/insightface, arcface_torch), reproduced bit for
bit, and ROC, AUC, EER and TAR@FAR over cosine similarity with scikit-learn's ``roc_curve`` /
``roc_auc_score`` semantics, vectorised over thresholds. Entry points: :func:`evaluate_pairs`,
:func:`roc_curve`, :func:`roc_auc`, :func:`equal_error_rate`, :func:`tar_at_far`. Details:
docs/evaluation.md ("Scores" to "Speed", and "Verification metrics").
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from faceforge.errors import FaceforgeError, did_you_mean

__all__ = ["equal_error_rate", "evaluate_pairs", "roc_auc", "roc_curve", "tar_at_far"]

MODES = ("grid", "exact")
DEFAULT_FAR_TARGETS: tuple[float, ...] = (1e-1, 1e-2, 1e-3, 1e-4, 1e-5, 1e-6)
# insightface evaluate(): accuracy grid step 0.01, VAL grid step 0.001, VAL at FAR = 1e-3.
_ACC_STEP, _VAL_STEP = 0.01, 0.001
_ACC_GRID = np.arange(0, 4, _ACC_STEP)
_VAL_GRID = np.arange(0, 4, _VAL_STEP)
_VAL_FAR_TARGET = 1e-3
_MAX_ROC_POINTS = 2000


# --------------------------------------------------------------------------------------------------
# input handling


def _to_numpy(x: Any, name: str) -> np.ndarray:
    # Duck-typed so that torch stays an optional import for this module.
    if hasattr(x, "detach") and hasattr(x, "cpu"):
        x = x.detach().cpu()
        # numpy has no bfloat16; half-precision tensors are widened here (they become float32 anyway).
        if x.dtype.is_floating_point and x.element_size() < 4:
            x = x.float()
        x = x.numpy()
    try:
        return np.asarray(x)
    except (TypeError, ValueError) as exc:
        raise FaceforgeError(f"{name}: cannot convert {type(x).__name__} to an array ({exc})") from exc


def _as_embeddings(x: Any, name: str) -> np.ndarray:
    """``x`` as a validated 2-D real array (no copy; :class:`_PairScores` casts it to float32)."""
    arr = _to_numpy(x, name)
    if arr.ndim != 2 or arr.shape[1] == 0:
        raise FaceforgeError(f"{name} has shape {tuple(arr.shape)}; expected a 2-D [N, E] array with E >= 1")
    if not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
        raise FaceforgeError(f"{name} has dtype {arr.dtype}; expected a real-valued (float) array")
    return arr


def _as_labels(x: Any, n: int) -> np.ndarray:
    arr = _to_numpy(x, "issame")
    if arr.ndim != 1:
        raise FaceforgeError(f"issame has shape {tuple(arr.shape)}; expected a 1-D bool array of length {n}")
    if arr.shape[0] != n:
        raise FaceforgeError(f"issame has {arr.shape[0]} entries but there are {n} pairs; expected {n}")
    if arr.dtype == np.bool_:
        return arr
    if np.issubdtype(arr.dtype, np.number) and np.isin(arr, (0, 1)).all():
        return arr.astype(bool)
    raise FaceforgeError(f"issame has dtype {arr.dtype} with values other than 0/1; expected bool labels")


def _check_finite(x: np.ndarray, name: str) -> None:
    """Raise for the first row of ``x`` (as float32) that holds NaN or Inf; return if there is none."""
    bad = np.flatnonzero(~np.isfinite(np.asarray(x, dtype=np.float32)).all(axis=1))
    if bad.size:
        raise FaceforgeError(
            f"{name} contains NaN or Inf in {bad.size} row(s) (first: row {int(bad[0])}); "
            "expected finite embeddings"
        )


#: float32 unit roundoff
_U32 = 2.0**-24
#: rows whose squared norm is below this (float32 underflow territory) always take the exact path
_TINY_NORM2 = 2.0**-100
#: rows per block of the exact path (three float32 buffers of 128 × 512 stay in L2 cache)
_BLOCK_BYTES = 1 << 18


def _rows_float32(x: np.ndarray) -> np.ndarray:
    """``x`` as float32 with contiguous rows: the input itself when it already is, else a C-order copy."""
    if x.dtype == np.float32 and x.strides[1] == 4:
        return x
    return np.ascontiguousarray(x, dtype=np.float32)


def _rounding_bound(dim: int) -> float:
    """Bound on |reference distance − fast distance| for ``dim``-d rows, in squared-L2 units.

    Higham's gamma_n = n·u / (1 − n·u) bounds a float32 sum of n products whatever the summation order.
    The reference (normalise, subtract, square, sum; all float32) is within 8·gamma_(E+1) + 24u of the
    true distance, and 2 − 2·(a·b)/√(‖a‖²‖b‖²) from float32 dot products within 4·gamma_E (see
    docs/evaluation.md, "Speed"); the sum plus slack is the margin used around each threshold.
    """
    g = (dim + 1) * _U32 / (1.0 - (dim + 1) * _U32)
    return 12.0 * g + 32.0 * _U32


class _PairScores:
    """Per-pair cosine and squared distance, exact (bit-identical to the reference) where a threshold is near.

    The reference normalises every row in float32 and sums ``square(a − b)``; that pass is most of the
    protocol's time. Here three float32 dot products per pair give every distance to within
    :func:`_rounding_bound`, and only the rows that fall within that margin of a threshold the protocol
    compares against are recomputed the reference's way (:meth:`refine`). A comparison ``dist < t`` made
    on a row at least the margin away from ``t`` has the same outcome for both values.
    """

    def __init__(self, a: np.ndarray, b: np.ndarray) -> None:
        self.a, self.b = _rows_float32(a), _rows_float32(b)
        # The reference's own first step (its norms are sqrt of these very sums).
        self.aa = np.einsum("ij,ij->i", self.a, self.a)
        self.bb = np.einsum("ij,ij->i", self.b, self.b)
        if not (np.isfinite(self.aa).all() and np.isfinite(self.bb).all()):
            _check_finite(a, "emb_a")
            _check_finite(b, "emb_b")
            raise FaceforgeError(
                f"{'emb_b' if np.isfinite(self.aa).all() else 'emb_a'} has values too large to square in "
                "float32; expected |value| < 1e19"
            )
        ab = np.einsum("ij,ij->i", self.a, self.b).astype(np.float64)
        aa64, bb64 = self.aa.astype(np.float64), self.bb.astype(np.float64)
        usual = (aa64 >= _TINY_NORM2) & (bb64 >= _TINY_NORM2)
        with np.errstate(invalid="ignore", divide="ignore"):
            self.cosine = np.where(usual, ab / np.sqrt(aa64 * bb64), 0.0)
        self.dist = 2.0 - 2.0 * self.cosine
        self.margin = _rounding_bound(self.a.shape[1])
        self.exact = np.zeros(self.dist.size, dtype=bool)
        # Zero or underflowing norms: the reference treats a zero norm as 1; take its path for both scores.
        self.refine(~usual, cosine=True)

    @property
    def all_exact(self) -> bool:
        return bool(self.exact.all())

    def near(self, threshold: np.ndarray | float) -> np.ndarray:
        """Rows whose fast distance is within the rounding margin of ``threshold`` (scalar or per row)."""
        return np.abs(self.dist - threshold) < self.margin

    def near_grid(self, step: float) -> np.ndarray:
        """Rows within the rounding margin of a multiple of ``step`` (an ``arange(0, 4, step)`` grid)."""
        # np.arange's k-th value is within a few ulps of k·step: 1e-12 of slack covers it.
        return np.abs(self.dist - step * np.round(self.dist / step)) < self.margin + 1e-12

    def refine(self, rows: np.ndarray, cosine: bool = False) -> None:
        """Recompute the distance of the masked rows exactly as the reference does (float32, in blocks).

        Row-wise operations only, so a block gives the same bits as the whole array. With ``cosine``,
        the cosine becomes the float64 dot product of the two normalised float32 rows.
        """
        idx = np.flatnonzero(rows & ~self.exact)
        if idx.size == 0:
            return
        e = self.a.shape[1]
        step = max(1, _BLOCK_BYTES // (4 * e))
        for start in range(0, idx.size, step):
            sel = idx[start : start + step]
            na, nb = self.a[sel], self.b[sel]  # copies: the caller's arrays are never modified
            for x, sq in ((na, self.aa[sel]), (nb, self.bb[sel])):
                norms = np.sqrt(sq)
                norms[norms == 0.0] = 1.0  # as sklearn.preprocessing.normalize
                np.divide(x, norms[:, np.newaxis], out=x)
            if cosine:
                self.cosine[sel] = np.einsum("ij,ij->i", na, nb, dtype=np.float64)
            d = np.subtract(na, nb, out=na)
            # float32 sum, compared in float64 as numpy 2 does for `float32_array < float64_scalar`
            self.dist[sel] = np.sum(np.square(d, out=d), 1)
        self.exact[idx] = True


def _kfold_sizes(n: int, n_folds: int) -> np.ndarray:
    # sklearn KFold(shuffle=False): the first n % k folds get one extra sample.
    sizes = np.full(n_folds, n // n_folds, dtype=np.int64)
    sizes[: n % n_folds] += 1
    return sizes


# --------------------------------------------------------------------------------------------------
# ROC (sklearn semantics), AUC, EER, TAR@FAR


def roc_curve(labels: Any, scores: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ROC of ``score >= t`` at every distinct score (sklearn ``roc_curve``, ``drop_intermediate=False``).

    Returns ``(fpr, tpr, thresholds)``; the first point is (0, 0) with threshold ``+inf`` and tied
    scores form a single point, exactly as ``sklearn.metrics.roc_curve(..., drop_intermediate=False)``.
    """
    y = np.asarray(labels).astype(bool).ravel()
    s = np.asarray(scores, dtype=np.float64).ravel()
    if y.shape != s.shape:
        raise FaceforgeError(f"roc_curve: {y.size} labels but {s.size} scores; expected equal lengths")
    if not np.isfinite(s).all():
        raise FaceforgeError("roc_curve: scores contain NaN or Inf; expected finite scores")
    n_pos = int(y.sum())
    if n_pos == 0 or n_pos == y.size:
        raise FaceforgeError(
            f"roc_curve: {n_pos} positive of {y.size} labels; expected both positive and negative labels"
        )
    # Any sort order works: a tie run is only read at its last index, after all of its members.
    order = np.argsort(s)[::-1]
    s_sorted = s[order]
    # Only the last index of each run of tied scores is a ROC point, so ties never split.
    last_of_tie = np.r_[np.flatnonzero(np.diff(s_sorted)), s.size - 1]
    tps = np.cumsum(y[order], dtype=np.int64)[last_of_tie]
    fps = 1 + last_of_tie - tps
    tps = np.r_[0, tps]
    fps = np.r_[0, fps]
    thresholds = np.r_[np.inf, s_sorted[last_of_tie]]
    return fps / fps[-1], tps / tps[-1], thresholds


def roc_auc(fpr: np.ndarray, tpr: np.ndarray) -> float:
    """Trapezoidal area under an ROC (sklearn ``auc``/``roc_auc_score``: tied scores count half)."""
    fpr = np.asarray(fpr, dtype=np.float64)
    tpr = np.asarray(tpr, dtype=np.float64)
    return float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1])) / 2.0)


def _finite_threshold(thresholds: np.ndarray, i: int) -> float:
    # Point 0 of the ROC is "accept nothing" with threshold +inf; report the smallest float above the
    # top score instead so the value stays usable (score >= t accepts nothing) and JSON-safe.
    t = thresholds[i]
    if np.isinf(t):
        return float(np.nextafter(thresholds[1], np.inf))
    return float(t)


def equal_error_rate(fpr: np.ndarray, tpr: np.ndarray, thresholds: np.ndarray) -> tuple[float, float]:
    """EER and its score threshold: FPR = 1 − TPR, linearly interpolated between the bracketing ROC points.

    Expects a full ROC from :func:`roc_curve`. Returns ``(eer, threshold)``.
    """
    # fpr - (1 - tpr) rises monotonically from -1 at (0, 0) to +1 at (1, 1).
    gap = fpr + tpr - 1.0
    hi = int(np.argmax(gap >= 0.0))
    if gap[hi] == 0.0 or hi == 0:
        return float(fpr[hi]), _finite_threshold(thresholds, hi)
    lo = hi - 1
    alpha = -gap[lo] / (gap[hi] - gap[lo])
    eer = fpr[lo] + alpha * (fpr[hi] - fpr[lo])
    if lo == 0:
        # Interpolating towards +inf is meaningless; the first real ROC point is the operating point.
        return float(eer), float(thresholds[hi])
    thr = thresholds[lo] + alpha * (thresholds[hi] - thresholds[lo])
    return float(eer), float(thr)


def tar_at_far(
    fpr: np.ndarray, tpr: np.ndarray, thresholds: np.ndarray, far_target: float
) -> tuple[float, float, float]:
    """TAR at the loosest operating point of an all-pairs ROC with FAR <= ``far_target`` (no interpolation).

    Returns ``(tar, far, threshold)`` where ``score >= threshold`` is accepted.
    """
    i = int(np.searchsorted(fpr, far_target, side="right")) - 1
    return float(tpr[i]), float(fpr[i]), _finite_threshold(thresholds, i)


def _downsample_roc(fpr: np.ndarray, tpr: np.ndarray, max_points: int) -> tuple[list[float], list[float]]:
    if fpr.size <= max_points:
        return fpr.tolist(), tpr.tolist()
    # Half the points on a log FPR scale (the plots use a log x-axis), half linear; each target maps
    # to the last ROC point at or below it, so the curve is still made of true operating points.
    positive = fpr[fpr > 0]
    half = max_points // 2
    targets = np.r_[0.0, np.geomspace(positive[0], 1.0, half - 1), np.linspace(0.0, 1.0, half)]
    # targets hold 0 and 1, so the first and last ROC points are always kept.
    idx = np.unique(np.searchsorted(fpr, targets, side="right") - 1)
    return fpr[idx].tolist(), tpr[idx].tolist()


# --------------------------------------------------------------------------------------------------
# 10-fold protocol


class _SortedPairs:
    """The pairs sorted once by distance, with the fold and class (0 genuine, 1 impostor) of each.

    ``counts_below(thresholds)[f, c, j]`` is the number of pairs in fold ``f`` of class ``c`` with
    ``dist < thresholds[j]``: the threshold cuts the sorted list at ``k_j = searchsorted(sorted, t_j)``
    and the count is the cumulative count of the (fold, class) group at ``k_j``. O(N log N) for the one
    sort, then O(N + folds × thresholds) per threshold list, all folds at once.
    """

    def __init__(self, dist: np.ndarray, fold_id: np.ndarray, impostor: np.ndarray, n_folds: int) -> None:
        # Unstable is fine: a cut at searchsorted(..., "left") never splits a run of equal distances.
        order = np.argsort(dist)
        self.dist = dist[order]
        self.group = (fold_id * 2 + impostor)[order]
        self.n_folds = n_folds

    def exact_thresholds(self) -> np.ndarray:
        """Every distinct partition of the pairs: the smallest distance, the midpoints, just above the top."""
        d = self.dist
        u = d[np.r_[True, d[1:] != d[:-1]]]
        return np.r_[u[0], (u[:-1] + u[1:]) / 2.0, np.nextafter(u[-1], np.inf)]

    @staticmethod
    def _cumulative(
        sorted_dist: np.ndarray, group: np.ndarray, n_groups: int, thresholds: np.ndarray
    ) -> np.ndarray:
        """``[n_groups, len(thresholds)]``: members of each group with ``dist < threshold`` (ascending)."""
        n_thr = thresholds.size
        cut = np.searchsorted(sorted_dist, thresholds, side="left")
        # Sorted pair i lies below threshold j exactly when i < cut[j]; with cut ascending, i belongs to
        # segment s = #{j : cut[j] <= i} and is counted for every j >= s. Segments by run length, no search.
        segment = np.repeat(np.arange(n_thr + 1), np.diff(cut, prepend=0, append=sorted_dist.size))
        hist = np.bincount(group * (n_thr + 1) + segment, minlength=n_groups * (n_thr + 1))
        return np.cumsum(hist.reshape(n_groups, n_thr + 1), axis=1)[:, :n_thr]

    def counts_below(self, thresholds: np.ndarray) -> np.ndarray:
        """``[folds, 2, len(thresholds)]`` counts of genuine / impostor pairs with ``dist < threshold``."""
        counts = self._cumulative(self.dist, self.group, 2 * self.n_folds, thresholds)
        return counts.reshape(self.n_folds, 2, thresholds.size)

    @classmethod
    def impostors_below(
        cls, dist: np.ndarray, fold_id: np.ndarray, n_folds: int, thresholds: np.ndarray
    ) -> np.ndarray:
        """``[folds, len(thresholds)]`` counts of the given (impostor) pairs with ``dist < threshold``."""
        order = np.argsort(dist)
        return cls._cumulative(dist[order], fold_id[order], n_folds, thresholds)


def _interp_like_scipy(x: float, x0: float, x1: float, y0: float, y1: float) -> float:
    # Same operation order as scipy's degree-1 B-spline (interp1d kind='slinear', which the reference
    # uses), so the interpolated threshold matches to the last bit.
    w = 1.0 / (x1 - x0)
    return 0.0 + y0 * (w * (x1 - x)) + y1 * (w * (x - x0))


def _val_threshold(fa_train: np.ndarray, n_impostor_train: int, thresholds: np.ndarray) -> tuple[float, int]:
    """Threshold where the training FAR reaches 1e-3 (insightface ``calculate_val``, de-duplicated).

    Also returns the last index of ``thresholds`` whose count was read (the result depends on no other).
    """
    if n_impostor_train == 0:
        return 0.0, 0
    far = fa_train / n_impostor_train
    if far[-1] < _VAL_FAR_TARGET:  # far is non-decreasing, so the last value is its max
        return 0.0, far.size - 1
    hi = int(np.argmax(far >= _VAL_FAR_TARGET))
    if far[hi] == _VAL_FAR_TARGET or hi == 0:
        return float(thresholds[hi]), hi
    # np.unique(far, return_index=True) keeps the first threshold of each distinct FAR value: for the
    # upper point that is `hi` itself, for the lower one the start of the run before it.
    lo = int(np.searchsorted(fa_train, fa_train[hi - 1], side="left"))
    return _interp_like_scipy(_VAL_FAR_TARGET, far[lo], far[hi], thresholds[lo], thresholds[hi]), hi


def _val_thresholds(
    scores: _PairScores, fold_id: np.ndarray, impostor: np.ndarray, n_folds: int, imp_per_fold: np.ndarray
) -> np.ndarray:
    """Each fold's VAL threshold from the other folds' impostors, with exact distances wherever it matters.

    A fold's threshold depends only on the counts at grid values up to the one where its training FAR
    reaches the target; those counts are exact once every impostor below that value is exact (one
    above it is not counted, whichever value it has). Usually a handful of the lowest impostors.
    """
    n_imp = int(impostor.sum())
    imp_fold = fold_id[impostor]
    exact_below = -np.inf
    while True:
        lt = _SortedPairs.impostors_below(scores.dist[impostor], imp_fold, n_folds, _VAL_GRID)
        fa_train = lt.sum(axis=0) - lt
        found = [_val_threshold(fa_train[k], n_imp - int(imp_per_fold[k]), _VAL_GRID) for k in range(n_folds)]
        read_up_to = float(_VAL_GRID[max(hi for _, hi in found)])
        if read_up_to == float(_VAL_GRID[-1]):
            read_up_to = np.inf  # the whole grid was read (FAR never reached the target)
        if scores.all_exact or read_up_to <= exact_below:
            return np.array([thr for thr, _ in found])
        rows = impostor & (scores.dist < read_up_to + scores.margin) & ~scores.exact
        fast = scores.dist[rows]
        scores.refine(rows)
        # A count below grid value t_j depends only on how many grid values each distance reaches
        # (dist < t_j  <=>  j >= searchsorted(grid, dist, "right")); if no recomputed distance moved
        # past one, every count and so every threshold found is already the exact one.
        if np.array_equal(
            np.searchsorted(_VAL_GRID, fast, "right"), np.searchsorted(_VAL_GRID, scores.dist[rows], "right")
        ):
            return np.array([thr for thr, _ in found])
        exact_below = read_up_to


def _nan_to_none(values: np.ndarray) -> list[float | None]:
    return [None if np.isnan(v) else float(v) for v in values]


#: bins of the stored similarity histograms over [-1, 1] (0.005 wide)
HIST_BINS = 400


def score_histogram(cosine: np.ndarray, same: np.ndarray, bins: int = HIST_BINS) -> dict[str, Any]:
    """Genuine and impostor cosine-similarity counts over ``bins`` equal bins of [-1, 1].

    Stored with a calibration so inference can estimate the false-match rate of any similarity
    (:func:`faceforge.eval.calibration.estimate_fmr`) without keeping the pairs.
    """
    edges = np.linspace(-1.0, 1.0, bins + 1)
    c = np.clip(np.asarray(cosine, np.float64), -1.0, 1.0)
    gen = np.histogram(c[same], edges)[0]
    imp = np.histogram(c[~same], edges)[0]
    return {"range": [-1.0, 1.0], "bins": bins, "genuine": gen.tolist(), "impostor": imp.tolist()}


def evaluate_pairs(
    emb_a: Any,
    emb_b: Any,
    issame: Any,
    n_folds: int = 10,
    mode: str = "grid",
    far_targets: Sequence[float] = DEFAULT_FAR_TARGETS,
) -> dict[str, Any]:
    """Evaluate verification pairs with the LFW 10-fold protocol as implemented by insightface ``evaluate()``.

    ``emb_a[i]`` / ``emb_b[i]`` are the two embeddings of pair ``i`` (numpy arrays or torch tensors,
    ``[N, E]``); ``issame[i]`` says whether they show the same identity. Embeddings are L2-normalised
    in float32; the distance is the float32 squared L2 distance and a pair is accepted when
    ``dist < threshold``. Folds are contiguous (``KFold(n_folds, shuffle=False)``). ``mode="grid"``
    picks each fold's threshold from ``arange(0, 4, 0.01)`` on the other folds (the reference);
    ``mode="exact"`` searches every midpoint between sorted distances instead. AUC, EER and TAR@FAR use
    the ROC over all pairs' cosine similarity. Returns a JSON-serialisable dict (see docs/evaluation.md).
    """
    if mode not in MODES:
        raise FaceforgeError(f"mode {mode!r} is not one of {list(MODES)}{did_you_mean(str(mode), MODES)}")
    if isinstance(n_folds, bool) or not isinstance(n_folds, (int, np.integer)) or n_folds < 2:
        raise FaceforgeError(f"n_folds={n_folds!r}; expected an integer >= 2")
    n_folds = int(n_folds)
    targets = [float(f) for f in far_targets]
    for f in targets:
        if not 0.0 < f <= 1.0:
            raise FaceforgeError(f"far_targets contains {f!r}; expected values in (0, 1]")

    a = _as_embeddings(emb_a, "emb_a")
    b = _as_embeddings(emb_b, "emb_b")
    if a.shape != b.shape:
        raise FaceforgeError(
            f"emb_a has shape {a.shape} but emb_b has shape {b.shape}; expected the same [N, E] shape"
        )
    n = a.shape[0]
    same = _as_labels(issame, n)
    if n < n_folds:
        raise FaceforgeError(
            f"{n} pairs is fewer than n_folds={n_folds}; expected at least one pair per fold"
        )
    n_gen = int(same.sum())
    n_imp = n - n_gen
    if n_gen == 0 or n_imp == 0:
        raise FaceforgeError(
            f"issame has {n_gen} genuine and {n_imp} impostor pairs; expected at least one of each"
        )

    # The caller's arrays are never modified. Distances are exact (the reference's float32 bits) for every
    # pair whose comparison with a threshold could depend on the last bits, fast elsewhere (_PairScores).
    scores = _PairScores(a, b)
    if mode == "exact":
        scores.refine(np.ones(n, dtype=bool))  # midpoints between distances: every value is read
    else:
        scores.refine(scores.near_grid(_ACC_STEP))
    cosine = scores.cosine

    sizes = _kfold_sizes(n, n_folds)
    fold_id = np.repeat(np.arange(n_folds), sizes)
    gen_per_fold = np.bincount(fold_id, weights=same, minlength=n_folds).astype(np.int64)
    imp_per_fold = sizes - gen_per_fold
    pairs = _SortedPairs(scores.dist, fold_id, ~same, n_folds)

    # ---- accuracy: threshold chosen on the training folds, measured on the test fold
    thresholds = _ACC_GRID if mode == "grid" else pairs.exact_thresholds()
    counts = pairs.counts_below(thresholds)
    gen_lt, imp_lt = counts[:, 0, :], counts[:, 1, :]
    train_gen_lt = gen_lt.sum(axis=0) - gen_lt
    train_imp_lt = imp_lt.sum(axis=0) - imp_lt
    train_correct = train_gen_lt + ((n_imp - imp_per_fold)[:, None] - train_imp_lt)
    best = np.argmax(train_correct, axis=1)  # first maximum = smallest threshold, as the reference
    rows = np.arange(n_folds)
    test_correct = gen_lt[rows, best] + imp_per_fold - imp_lt[rows, best]
    fold_acc = test_correct / sizes
    fold_thr = thresholds[best]

    # ---- VAL@FAR=1e-3 (insightface calculate_val with the documented de-duplication fix)
    val_thr = _val_thresholds(scores, fold_id, ~same, n_folds, imp_per_fold)
    scores.refine(scores.near(val_thr[fold_id]))
    accepted = scores.dist < val_thr[fold_id]
    ta = np.bincount(fold_id, weights=accepted & same, minlength=n_folds)
    fa = np.bincount(fold_id, weights=accepted & ~same, minlength=n_folds)
    # A test fold without genuine (impostor) pairs has no VAL (FAR); the reference would divide by 0.
    with np.errstate(invalid="ignore", divide="ignore"):
        val_fold = np.where(gen_per_fold > 0, ta / gen_per_fold, np.nan)
        far_fold = np.where(imp_per_fold > 0, fa / imp_per_fold, np.nan)
    val_ok = val_fold[~np.isnan(val_fold)]
    far_ok = far_fold[~np.isnan(far_fold)]

    # ---- ROC over all pairs (cosine similarity, accept score >= t)
    fpr, tpr, roc_thr = roc_curve(same, cosine)
    eer, eer_thr = equal_error_rate(fpr, tpr, roc_thr)
    tar: dict[str, float] = {}
    tar_thr: dict[str, float] = {}
    support: dict[str, dict[str, int]] = {}
    for f in targets:
        # With n_imp impostors the FAR moves in steps of 1/n_imp; a smaller target can only be met by
        # accepting (almost) nothing, which says nothing about the model, so it is left out.
        if f * n_imp < 1.0:
            continue
        tar[str(f)], far_got, tar_thr[str(f)] = tar_at_far(fpr, tpr, roc_thr, f)
        # How many impostor pairs stand behind the number: a FAR measured from a handful of false
        # accepts is noise, which calibration refuses (it wants >= 10/FAR impostors).
        support[str(f)] = {"impostors": n_imp, "false_accepts": round(far_got * n_imp)}
    roc_fpr, roc_tpr = _downsample_roc(fpr, tpr, _MAX_ROC_POINTS)

    mean_thr = float(np.mean(fold_thr))
    return {
        "accuracy": float(np.mean(fold_acc)),
        "accuracy_std": float(np.std(fold_acc)),
        "fold_accuracy": fold_acc.tolist(),
        "fold_threshold": fold_thr.tolist(),
        "threshold": mean_thr,
        "threshold_cos": 1.0 - mean_thr / 2.0,
        "auc": roc_auc(fpr, tpr),
        "eer": eer,
        "eer_threshold_cos": eer_thr,
        "tar_at_far": tar,
        "tar_at_far_threshold_cos": tar_thr,
        "tar_at_far_support": support,
        "score_histogram": score_histogram(cosine, same),
        "val": float(np.mean(val_ok)) if val_ok.size else None,
        "val_std": float(np.std(val_ok)) if val_ok.size else None,
        "far": float(np.mean(far_ok)) if far_ok.size else None,
        "val_per_fold": _nan_to_none(val_fold),
        "far_per_fold": _nan_to_none(far_fold),
        "val_threshold": val_thr.tolist(),
        "roc_fpr": roc_fpr,
        "roc_tpr": roc_tpr,
        "n_pairs": n,
        "n_genuine": n_gen,
        "n_impostor": n_imp,
        "n_folds": n_folds,
        "mode": mode,
    }
