"""Benchmark: vectorised ``evaluate_pairs`` vs a plain per-threshold loop of the insightface protocol.

Loads ``reference/vectors/verification.npz`` from the shared folder (``$FACEFORGE_SHARED`` or
``../shared`` next to the repository); without it, synthetic pairs shaped like LFW View 2 are
generated. Both implementations run in the same process on the same input; the script checks that
per-fold accuracies, thresholds and VAL numbers are identical and prints both timings and the ratio.

    PYTHONPATH=src python benchmarks/verification.py [--repeat 3] [--min-ratio 20]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

from faceforge.eval.metrics import evaluate_pairs


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


def _timed(fn, repeat: int) -> tuple[float, object]:
    times, result = [], None
    for _ in range(repeat):
        t0 = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), result


def main(argv: list[str] | None = None) -> int:
    """Run both implementations, check they agree, print timings; exit 1 on mismatch or a slow ratio."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeat", type=int, default=3, help="timed runs of the fast path (median)")
    p.add_argument("--repeat-naive", type=int, default=1, help="timed runs of the plain loop (median)")
    p.add_argument("--min-ratio", type=float, default=0.0, help="fail when naive/fast is below this")
    args = p.parse_args(argv)

    emb, issame, ref_seconds, source = load_pairs()
    a, b = emb[0::2], emb[1::2]
    print(f"input: {source}: {len(issame)} pairs, dim {emb.shape[1]}")

    evaluate_pairs(a, b, issame)  # warm-up: first-call imports and allocations are not the point
    fast_s, fast = _timed(lambda: evaluate_pairs(a, b, issame), args.repeat)
    naive_s, naive = _timed(lambda: naive_evaluate(a, b, issame), args.repeat_naive)

    checks = {
        "fold accuracy": fast["fold_accuracy"] == naive["acc"],
        "fold threshold": fast["fold_threshold"] == naive["thr"],
        "VAL per fold": fast["val_per_fold"] == naive["val"],
        "FAR per fold": fast["far_per_fold"] == naive["far"],
        # np.interp and scipy's spline evaluate the same line in a different order: last-bit slack.
        "VAL threshold": np.allclose(fast["val_threshold"], naive["val_thr"], rtol=0, atol=1e-12),
    }
    for name, ok in checks.items():
        print(f"  {name:15s} {'identical' if ok else 'MISMATCH'}")
    print(f"accuracy {fast['accuracy']:.6f} ± {fast['accuracy_std']:.6f}   VAL@FAR=1e-3 {fast['val']:.6f}")
    ratio = naive_s / fast_s
    print(f"plain loop     {naive_s * 1e3:9.1f} ms")
    print(f"evaluate_pairs {fast_s * 1e3:9.1f} ms   (also computes AUC, EER, TAR@FAR, ROC)")
    print(f"speed-up       {ratio:9.1f}x  (target >= 20x)")
    if ref_seconds is not None:
        print(f"insightface evaluate() on the reference machine: {ref_seconds * 1e3:.1f} ms (not comparable)")
    if not all(checks.values()):
        return 1
    if ratio < args.min_ratio:
        print(f"speed-up {ratio:.1f}x is below --min-ratio {args.min_ratio}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
