"""eval.calibration: the threshold dict shared by training, the report, the checkpoint and inference."""

from __future__ import annotations

import numpy as np
import pytest

from faceforge.errors import FaceforgeError
from faceforge.eval.calibration import calibration_from_result, pick_threshold
from faceforge.eval.metrics import evaluate_pairs


@pytest.fixture(scope="module")
def result() -> dict:
    rng = np.random.default_rng(0)
    n = 4000
    ids = rng.integers(0, 50, n)
    same = rng.random(n) < 0.5
    centers = rng.normal(size=(50, 16))
    a = centers[ids] + 0.6 * rng.normal(size=(n, 16))
    other = np.where(same, ids, (ids + 1 + rng.integers(0, 49, n)) % 50)
    b = centers[other] + 0.6 * rng.normal(size=(n, 16))
    return evaluate_pairs(a, b, same)


def test_calibration_at_a_measured_far(result) -> None:
    cal = calibration_from_result(result, "synthetic (4000 pairs)", far=1e-2)
    assert cal["far_target"] == 1e-2
    assert cal["threshold"] == result["tar_at_far_threshold_cos"]["0.01"]
    assert cal["threshold_cos_best_accuracy"] == result["threshold_cos"]
    assert cal["tar_at_far_threshold_cos"] == result["tar_at_far_threshold_cos"]
    assert cal["accuracy"] == result["accuracy"] and cal["source"] == "synthetic (4000 pairs)"
    assert set(cal) == {
        "source", "metric", "threshold_cos_best_accuracy", "tar_at_far_threshold_cos",
        "far_target", "threshold", "accuracy",
    }  # fmt: skip


def test_calibration_falls_back_to_best_accuracy(result) -> None:
    # ~2000 impostor pairs cannot measure FAR = 1e-5: the FAR target is dropped, not invented.
    assert "1e-05" not in result["tar_at_far_threshold_cos"]
    cal = calibration_from_result(result, "s", far=1e-5)
    assert cal["far_target"] is None and cal["threshold"] == result["threshold_cos"]
    cal_none = calibration_from_result(result, "s", far=None)
    assert cal_none["far_target"] is None and cal_none["threshold"] == result["threshold_cos"]


def test_pick_threshold(result) -> None:
    cal = calibration_from_result(result, "s", far=1e-3)
    assert pick_threshold(cal) == cal["threshold"]
    assert pick_threshold(cal, far=0.1) == result["tar_at_far_threshold_cos"]["0.1"]
    assert pick_threshold(None) is None and pick_threshold({}) is None
    # No default threshold stored: the best-accuracy one is used.
    assert pick_threshold({"threshold": None, "threshold_cos_best_accuracy": 0.42}) == 0.42


def test_pick_threshold_unmeasured_far_is_an_error(result) -> None:
    cal = calibration_from_result(result, "lfw (6000 pairs)", far=1e-3)
    with pytest.raises(FaceforgeError, match=r"'lfw \(6000 pairs\)' has no threshold at FAR=1e-06.*0\.001"):
        pick_threshold(cal, far=1e-6)
