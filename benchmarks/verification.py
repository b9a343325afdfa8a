"""Benchmark: vectorised ``evaluate_pairs`` vs a plain per-threshold loop of the insightface protocol.

Loads ``reference/vectors/verification.npz`` from the shared folder (``$FACEFORGE_SHARED`` or
``../shared`` next to the repository); without it, synthetic pairs shaped like LFW View 2 are
generated. Both implementations run in the same process on the same input, one thread each; the
script asserts that per-fold accuracies, thresholds and VAL/FAR numbers are identical (exit 1
otherwise) and prints both median timings and the ratio (target >= 100x on the 6,000 LFW pairs).

    PYTHONPATH=src python benchmarks/verification.py [--repeat 20] [--repeat-naive 5] [--min-ratio 100]

The plain loop is insightface's ``evaluate()`` written out (one Python iteration per threshold and
fold); ``evaluate_pairs`` sorts the distances once and reads cumulative per-fold counts at every
threshold (see ``faceforge.eval.metrics``). Both medians come from the same process, so the ratio
holds on a busy machine even when the absolute times do not.
"""

from __future__ import annotations

import os

# One BLAS/OpenMP thread before numpy loads: the ratio must not depend on how many cores are free.
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402

from faceforge.eval.metrics import _PairScores, evaluate_pairs  # noqa: E402


def shared_dir() -> Path:
    """The shared reference folder: ``$FACEFORGE_SHARED`` or ``<repo>/../shared``."""
    env = os.environ.get("FACEFORGE_SHARED")
    return Path(env) if env else Path(__file__).resolve().parents[1].parent / "shared"


def synthetic_pairs(seed: int = 20250601) -> tuple[np.ndarray, np.ndarray, float | None]:
    """6000 pairs in 10 folds of 300 genuine + 300 impostor, cosines drawn like README section 3."""
    rng = np.random.default_rng(seed)
    issame = np.tile(np.r_[np.ones(300, bool), np.zeros(300, bool)], 10)
    cos = np.where(issame, rng.normal(0.60, 0.15, 6000), rng.normal(0.05, 0.10, 6000)).clip(-0.4, 0.97)
    a = rng.standard_normal((6000, 512))
    a /= np.linalg.norm(a, axis=1, keepdims=True)
    r = rng.standard_normal((6000, 512))
    r -= np.sum(r * a, axis=1, keepdims=True) * a
    r /= np.linalg.norm(r, axis=1, keepdims=True)
    b = cos[:, None] * a + np.sqrt(1 - cos[:, None] ** 2) * r
    emb = np.empty((12000, 512), np.float32)
    emb[0::2], emb[1::2] = a, b
    return emb, issame, None


def load_pairs() -> tuple[np.ndarray, np.ndarray, float | None, str]:
    """Reference embeddings/labels (and insightface's timing) or a synthetic stand-in."""
    path = shared_dir() / "reference" / "vectors" / "verification.npz"
    if path.is_file():
        with np.load(path) as z:
            return z["embeddings"], z["issame"], float(z["ref_seconds"]), str(path)
    emb, issame, ref_s = synthetic_pairs()
    return emb, issame, ref_s, "synthetic (shared folder not found)"


# ---- plain loop, one threshold at a time, the way insightface's verification.py is written


def _normalize(x: np.ndarray) -> np.ndarray:
    norms = np.sqrt(np.einsum("ij,ij->i", x, x))
    norms[norms == 0] = 1.0
    return x / norms[:, None]


def _rates(threshold: float, dist: np.ndarray, same: np.ndarray) -> tuple[float, float, float]:
    pred = np.less(dist, threshold)
    tp = np.sum(pred & same)
    fp = np.sum(pred & ~same)
    tn = np.sum(~pred & ~same)
    fn = np.sum(~pred & same)
    tpr = 0.0 if tp + fn == 0 else float(tp) / float(tp + fn)
    fpr = 0.0 if fp + tn == 0 else float(fp) / float(fp + tn)
    return tpr, fpr, float(tp + tn) / dist.size


def naive_evaluate(emb_a: np.ndarray, emb_b: np.ndarray, same: np.ndarray, n_folds: int = 10) -> dict:
    """Per-threshold Python loop over KFold(shuffle=False) folds (accuracy grid 0.01, VAL grid 0.001)."""
    a, b = _normalize(np.asarray(emb_a, np.float32)), _normalize(np.asarray(emb_b, np.float32))
    dist = np.sum(np.square(np.subtract(a, b)), 1)
    n = len(same)
    sizes = np.full(n_folds, n // n_folds)
    sizes[: n % n_folds] += 1
    bounds = np.r_[0, np.cumsum(sizes)]
    acc_grid, val_grid = np.arange(0, 4, 0.01), np.arange(0, 4, 0.001)
    out: dict[str, list[float]] = {"acc": [], "thr": [], "val": [], "far": [], "val_thr": []}
    for k in range(n_folds):
        test = np.arange(bounds[k], bounds[k + 1])
        train = np.setdiff1d(np.arange(n), test)
        d_tr, s_tr, d_te, s_te = dist[train], same[train], dist[test], same[test]
        acc_train = np.array([_rates(t, d_tr, s_tr)[2] for t in acc_grid])
        best = int(np.argmax(acc_train))
        for t in acc_grid:  # the reference also fills the per-threshold test ROC
            _rates(t, d_te, s_te)
        out["thr"].append(float(acc_grid[best]))
        out["acc"].append(_rates(acc_grid[best], d_te, s_te)[2])

        far_train = np.array([float(np.sum((d_tr < t) & ~s_tr)) / float(np.sum(~s_tr)) for t in val_grid])
        if far_train.max() >= 1e-3:
            far_u, first = np.unique(far_train, return_index=True)
            thr = float(np.interp(1e-3, far_u, val_grid[first]))
        else:
            thr = 0.0
        out["val_thr"].append(thr)
        out["val"].append(float(np.sum((d_te < thr) & s_te)) / float(np.sum(s_te)))
        out["far"].append(float(np.sum((d_te < thr) & ~s_te)) / float(np.sum(~s_te)))
    return out


def _timed(fn: Callable[[], Any], repeat: int, times: list[float]) -> Any:
    """Run ``fn`` ``repeat`` times, append each wall time to ``times``, return the last result."""
    result = None
    for _ in range(repeat):
        t0 = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t0)
    return result


def main(argv: list[str] | None = None) -> int:
    """Run both implementations, check they agree, print timings; exit 1 on mismatch or a slow ratio."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeat", type=int, default=20, help="runs of evaluate_pairs per run of the loop")
    p.add_argument("--repeat-naive", type=int, default=5, help="timed runs of the plain loop (median)")
    p.add_argument("--min-ratio", type=float, default=0.0, help="fail when naive/fast is below this")
    args = p.parse_args(argv)

    emb, issame, ref_seconds, source = load_pairs()
    a, b = emb[0::2], emb[1::2]
    print(f"input: {source}: {len(issame)} pairs, dim {emb.shape[1]}")

    evaluate_pairs(a, b, issame)  # warm-up: first-call imports and allocations are not the point
    # Interleaved, so that both medians see the same machine (other jobs come and go on shared cores).
    naive_t: list[float] = []
    fast_t: list[float] = []
    exact_t: list[float] = []
    # Where evaluate_pairs' time goes: the fast pass over every pair (three float32 dot products each;
    # exact distances come later, only near a threshold) vs the rest (exact rows, search, ROC).
    scores_t: list[float] = []
    for _ in range(args.repeat_naive):
        naive = _timed(lambda: naive_evaluate(a, b, issame), 1, naive_t)
        fast = _timed(lambda: evaluate_pairs(a, b, issame), args.repeat, fast_t)
        exact = _timed(lambda: evaluate_pairs(a, b, issame, mode="exact"), args.repeat, exact_t)
        _timed(lambda: _PairScores(a, b), args.repeat, scores_t)
    naive_s, fast_s, exact_s, scores_s = (statistics.median(t) for t in (naive_t, fast_t, exact_t, scores_t))

    checks = {
        "fold accuracy": fast["fold_accuracy"] == naive["acc"],
        "fold threshold": fast["fold_threshold"] == naive["thr"],
        "VAL per fold": fast["val_per_fold"] == naive["val"],
        "FAR per fold": fast["far_per_fold"] == naive["far"],
        # np.interp and scipy's spline evaluate the same line in a different order: last-bit slack.
        "VAL threshold": np.allclose(fast["val_threshold"], naive["val_thr"], rtol=0, atol=1e-12),
        # exact mode only changes the accuracy threshold search; VAL/FAR must not move
        "exact mode VAL": exact["val_per_fold"] == fast["val_per_fold"],
    }
    for name, ok in checks.items():
        print(f"  {name:15s} {'identical' if ok else 'MISMATCH'}")
    print(f"accuracy {fast['accuracy']:.6f} ± {fast['accuracy_std']:.6f}   VAL@FAR=1e-3 {fast['val']:.6f}")
    print(f"exact mode: accuracy {exact['accuracy']:.6f} ± {exact['accuracy_std']:.6f}")
    ratio = naive_s / fast_s
    n_fast = args.repeat * args.repeat_naive
    print(f"plain loop            {naive_s * 1e3:9.1f} ms  (median of {args.repeat_naive})")
    print(f"evaluate_pairs grid   {fast_s * 1e3:9.2f} ms  (median of {n_fast}; also AUC, EER, TAR@FAR, ROC)")
    print(f"evaluate_pairs exact  {exact_s * 1e3:9.2f} ms  (median of {n_fast}; every midpoint threshold)")
    print(f"  of which scores     {scores_s * 1e3:9.2f} ms  (dot products and norms of the {len(a)} pairs)")
    rest_ms = (fast_s - scores_s) * 1e3
    print(f"  exact rows + rest   {rest_ms:9.2f} ms  (exact distances near thresholds, sort, counts, ROC)")
    best = min(naive_t) / min(fast_t)
    print(f"speed-up              {ratio:9.1f}x  (target >= 100x; fastest runs: {best:.1f}x)")
    if fast_s > scores_s:
        print(f"threshold search      {naive_s / (fast_s - scores_s):9.1f}x  (the loop vs protocol + ROC)")
    if ref_seconds is not None:
        print(f"insightface evaluate() on the reference machine: {ref_seconds * 1e3:.1f} ms (not comparable)")
    if not all(checks.values()):
        print("numbers differ from the plain loop", file=sys.stderr)
        return 1
    if ratio < args.min_ratio:
        print(f"speed-up {ratio:.1f}x is below --min-ratio {args.min_ratio}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
