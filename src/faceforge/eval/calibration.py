"""Verification thresholds that travel with a model, so nobody guesses a magic constant: a
*calibration* is a plain dict (in checkpoints, ``report.json`` and ONNX metadata) made by
:func:`calibration_from_result` from an ``evaluate_pairs`` result, with the default operating point
taken at a FAR only when at least ``MIN_FALSE_ACCEPTS / far`` impostor pairs measured it
(:func:`pick_threshold`, :func:`min_impostors`); :func:`estimate_fmr` gives the false-match rate of any
cosine similarity. Details: docs/evaluation.md, "Calibration".
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from faceforge.errors import FaceforgeError

DEFAULT_FAR = 1e-3
#: a threshold at FAR = f is taken only from >= MIN_FALSE_ACCEPTS / f impostor pairs
MIN_FALSE_ACCEPTS = 10


def min_impostors(far: float) -> int:
    """Impostor pairs needed before a threshold at ``far`` is trusted: ``ceil(10 / far)``."""
    return math.ceil(MIN_FALSE_ACCEPTS / float(far) - 1e-9)


def calibration_from_result(
    result: Mapping[str, Any], source: str, far: float | None = DEFAULT_FAR
) -> dict[str, Any]:
    """A calibration dict from an :func:`~faceforge.eval.metrics.evaluate_pairs` result.

    ``far`` picks the default operating point. Thresholds at FARs that fewer than ``10 / far``
    impostors measured are dropped from the table; when ``far`` itself is one of them (or None) the
    default falls back to the threshold of best 10-fold accuracy and ``far_note`` says why.
    """
    n_imp = result.get("n_impostor")
    all_thr = {str(k): float(v) for k, v in (result.get("tar_at_far_threshold_cos") or {}).items()}
    tar_thr = {k: v for k, v in all_thr.items() if n_imp is None or n_imp >= min_impostors(float(k))}
    best = float(result["threshold_cos"])
    chosen_far: float | None = None
    threshold = best
    note = "no FAR asked for: the threshold of best 10-fold accuracy"
    if far is not None:
        need = min_impostors(far)
        if n_imp is not None and n_imp < need:
            note = (
                f"FAR {far:g} needs >= {need:,} impostor pairs ({MIN_FALSE_ACCEPTS}/FAR), the set has "
                f"{n_imp:,}: using the threshold of best 10-fold accuracy instead"
            )
        else:
            note = f"FAR {far:g} not measured: using the threshold of best 10-fold accuracy instead"
            for k, v in tar_thr.items():
                if abs(float(k) - far) <= 1e-12 * max(1.0, far):
                    chosen_far, threshold = float(k), v
                    note = (
                        f"threshold at FAR {far:g} from {n_imp if n_imp is not None else '?'} impostor pairs"
                    )
                    break
    cal: dict[str, Any] = {
        "source": source,
        "metric": "cosine",
        "threshold_cos_best_accuracy": best,
        "tar_at_far_threshold_cos": tar_thr,
        "far_target": chosen_far,
        "far_requested": far,
        "far_note": note,
        "threshold": threshold,
        "accuracy": float(result.get("accuracy", float("nan"))),
        "n_genuine": result.get("n_genuine"),
        "n_impostor": n_imp,
    }
    if isinstance(result.get("score_histogram"), Mapping):
        cal["score_histogram"] = dict(result["score_histogram"])
    return cal


def estimate_fmr(calibration: Mapping[str, Any] | None, similarity: float) -> dict[str, Any] | None:
    """Estimated false-match rate at ``similarity`` from the calibration's impostor histogram.

    Returns ``{"fmr", "upper_bound", "impostors"}``: the fraction of the calibration's impostor pairs
    scoring ``>= similarity`` (linear within a bin); when none does, ``fmr`` is 0 and ``upper_bound``
    is ``1 / impostors`` (the rate the set can resolve). Also ``fnmr``, the fraction of genuine pairs
    below ``similarity``. None when the calibration holds no histogram.
    """
    hist = (calibration or {}).get("score_histogram")
    if not isinstance(hist, Mapping):
        return None
    try:
        lo, hi = (float(v) for v in hist.get("range", (-1.0, 1.0)))
        imp = [float(v) for v in hist["impostor"]]
        gen = [float(v) for v in hist.get("genuine", [])]
    except (KeyError, TypeError, ValueError):
        return None
    n = len(imp)
    total = sum(imp)
    if n == 0 or total <= 0 or not hi > lo:
        return None
    width = (hi - lo) / n

    def above(counts: list[float], s: float) -> float:
        pos = (min(max(s, lo), hi) - lo) / width
        i = min(int(pos), len(counts) - 1)
        frac = pos - i  # part of bin i below s
        return sum(counts[i + 1 :]) + counts[i] * (1.0 - frac)

    s = float(similarity)
    fmr = above(imp, s) / total
    out: dict[str, Any] = {"fmr": fmr, "impostors": int(total), "upper_bound": max(fmr, 1.0 / total)}
    if gen and sum(gen) > 0:
        out["fnmr"] = 1.0 - above(gen, s) / sum(gen)
    return out


def pick_threshold(calibration: Mapping[str, Any] | None, far: float | None = None) -> float | None:
    """The cosine threshold to use: at ``far`` if given and measured, else the calibration's default.

    Returns None when there is no calibration at all (the caller must then ask for a threshold).
    Raises when ``far`` was asked for explicitly but is not in the calibration.
    """
    if not calibration:
        return None
    if far is not None:
        table = calibration.get("tar_at_far_threshold_cos") or {}
        for k, v in table.items():
            if abs(float(k) - far) <= 1e-12 * max(1.0, far):
                return float(v)
        raise FaceforgeError(
            f"calibration from {calibration.get('source', '?')!r} has no threshold at FAR={far:g}; "
            f"measured FARs: {sorted(float(k) for k in table) or 'none'}"
        )
    if calibration.get("threshold") is not None:
        return float(calibration["threshold"])
    if calibration.get("threshold_cos_best_accuracy") is not None:
        return float(calibration["threshold_cos_best_accuracy"])
    return None
