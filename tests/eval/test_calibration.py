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
    # Only FARs with >= 10/FAR impostor pairs behind them keep a threshold (~2000 impostors: not 1e-3).
    n_imp = result["n_impostor"]
    assert 1000 < n_imp < 10_000
    kept = {k: v for k, v in result["tar_at_far_threshold_cos"].items() if n_imp * float(k) >= 10}
    assert cal["tar_at_far_threshold_cos"] == kept and "0.001" not in kept
    assert cal["accuracy"] == result["accuracy"] and cal["source"] == "synthetic (4000 pairs)"
    assert cal["n_impostor"] == n_imp and f"from {n_imp}" in cal["far_note"]
    assert set(cal) == {
        "source", "metric", "threshold_cos_best_accuracy", "tar_at_far_threshold_cos",
        "far_target", "far_requested", "far_note", "threshold", "accuracy", "n_genuine", "n_impostor",
        "score_histogram",
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
    with pytest.raises(FaceforgeError, match=r"'lfw \(6000 pairs\)' has no threshold at FAR=1e-06.*0\.01"):
        pick_threshold(cal, far=1e-6)


def test_fallback_with_1000_impostors_at_far_1e4_says_why_in_the_report(tmp_path) -> None:
    from faceforge.eval.report import format_report, write_report

    rng = np.random.default_rng(1)
    n = 2000
    same = np.arange(n) < n // 2  # 1,000 genuine and 1,000 impostor pairs
    a = rng.normal(size=(n, 16))
    b = np.where(same[:, None], a + 0.7 * rng.normal(size=(n, 16)), rng.normal(size=(n, 16)))
    res = evaluate_pairs(a, b, same)
    assert res["n_impostor"] == 1000
    cal = calibration_from_result(res, "synthetic (2000 pairs)", far=1e-4)
    # FAR 1e-4 needs 100,000 impostor pairs: the best-accuracy threshold, and the reason, are stored.
    assert cal["far_target"] is None and cal["far_requested"] == 1e-4
    assert cal["threshold"] == res["threshold_cos"]
    assert "FAR 0.0001 needs >= 100,000 impostor pairs" in cal["far_note"] and "has 1,000" in cal["far_note"]
    # The table's notes say how many impostors (and false accepts) stand behind each TAR@FAR.
    text = format_report({"syn": res})
    sup = res["tar_at_far_support"]["0.001"]
    assert sup["impostors"] == 1000 and sup["false_accepts"] <= 1
    assert "syn: TAR@FAR=0.1 from 1,000 impostor pairs" in text
    assert f"FAR=0.001 from 1,000 impostor pairs ({sup['false_accepts']} false accept" in text
    assert "noisy" in text.split("FAR=0.001", 1)[1]
    paths = write_report({"syn": res}, tmp_path, cal)
    md = paths["md"].read_text()
    assert "## Calibration" in md and f"- why: {cal['far_note']}" in md
    assert "- pairs behind it: 1,000 impostor, 1,000 genuine" in md
    assert "at best 10-fold accuracy" in md
