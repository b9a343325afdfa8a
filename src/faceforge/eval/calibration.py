"""Verification thresholds that travel with a model, so nobody guesses a magic constant.

A *calibration* is a plain dict (stored in checkpoints as ``checkpoint["calibration"]``, in
``report.json`` under ``"calibration"`` and in ONNX ``metadata_props`` as JSON):

``source``
    where the numbers come from (e.g. ``"lfw (6000 pairs)"``).
``threshold_cos_best_accuracy``
    cosine threshold of the 10-fold protocol (mean of the fold thresholds).
``tar_at_far_threshold_cos``
    ``{str(far): cosine threshold}`` from the ROC over all pairs.
``far_target`` / ``threshold``
    the operating point the inference API uses by default: the threshold at ``far_target`` when the
    pair count allowed measuring it, else the best-accuracy threshold (``far_target`` is then None).

Similarity is cosine of L2-normalised embeddings; a pair is "the same person" when
``similarity >= threshold``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from faceforge.errors import FaceforgeError

DEFAULT_FAR = 1e-3


def calibration_from_result(
    result: Mapping[str, Any], source: str, far: float | None = DEFAULT_FAR
) -> dict[str, Any]:
    """A calibration dict from an :func:`~faceforge.eval.metrics.evaluate_pairs` result.

    ``far`` picks the default operating point; None (or a FAR the pair count cannot measure) falls
    back to the threshold of best 10-fold accuracy.
    """
    tar_thr = {str(k): float(v) for k, v in (result.get("tar_at_far_threshold_cos") or {}).items()}
    best = float(result["threshold_cos"])
    chosen_far: float | None = None
    threshold = best
    if far is not None:
        for k, v in tar_thr.items():
            if abs(float(k) - far) <= 1e-12 * max(1.0, far):
                chosen_far, threshold = float(k), v
                break
    return {
        "source": source,
        "metric": "cosine",
        "threshold_cos_best_accuracy": best,
        "tar_at_far_threshold_cos": tar_thr,
        "far_target": chosen_far,
        "threshold": threshold,
        "accuracy": float(result.get("accuracy", float("nan"))),
    }


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
