"""``faceforge compare`` puts the reports of several runs side by side."""

from __future__ import annotations

import json

from faceforge.cli.main import main


def _report(acc: float) -> dict:
    return {
        "lfw": {
            "accuracy": acc,
            "accuracy_std": 0.01,
            "threshold_cos": 0.3,
            "auc": 0.99,
            "eer": 0.02,
            "tar_at_far": {"0.01": 0.9, "0.001": 0.8},
        }
    }


def test_compare_two_runs(tmp_path, capsys) -> None:
    for name, acc in (("run_a", 0.9512), ("run_b", 0.9733)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "report.json").write_text(json.dumps(_report(acc)))
    assert main(["compare", str(tmp_path / "run_a"), str(tmp_path / "run_b")]) == 0
    out = capsys.readouterr().out
    a, b = out.index("run_a / lfw"), out.index("run_b / lfw")
    assert a < b and "95.12" in out and "97.33" in out


def test_compare_missing_report(tmp_path, capsys) -> None:
    assert main(["compare", str(tmp_path)]) == 2
    assert "no report.json" in capsys.readouterr().err
