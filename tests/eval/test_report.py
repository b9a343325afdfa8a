"""Tests for faceforge.eval.report: tables, JSON files and ROC plots."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest

from faceforge.errors import FaceforgeError
from faceforge.eval.metrics import evaluate_pairs
from faceforge.eval.report import format_table, plot_roc, to_markdown, write_json

RESULT = {
    "accuracy": 0.9833333333333334,
    "accuracy_std": 0.003574601764921202,
    "threshold_cos": 0.2835,
    "auc": 0.9976077777777778,
    "eer": 0.017000000000000015,
    "tar_at_far": {"0.1": 0.9943333333333333, "0.01": 0.978, "0.001": 0.943},
}
BASELINE = {"accuracy": 0.9745}


def _evaluated(seed: int, n: int = 600) -> dict:
    rng = np.random.default_rng(seed)
    same = rng.random(n) < 0.5
    a = rng.normal(size=(n, 8)).astype(np.float32)
    b = (a + np.where(same, 0.6, 3.0)[:, None] * rng.normal(size=(n, 8))).astype(np.float32)
    return evaluate_pairs(a, b, same)


def test_format_table_numbers_and_alignment():
    text = format_table({"lfw": RESULT, "baseline (paper)": BASELINE})
    lines = text.splitlines()
    assert len(lines) == 4  # header, rule, two rows
    assert len({len(line) for line in lines}) == 1  # fixed width
    header, _, row, base = lines
    for col in ("Set", "Accuracy (%)", "Thr (cos)", "AUC", "EER (%)", "TAR@FAR=1e-2 (%)", "TAR@FAR=1e-3 (%)"):
        assert col in header
    assert row.startswith("lfw ")
    assert row.split()[1:] == ["98.33", "±", "0.36", "0.2835", "0.99761", "1.70", "97.80", "94.30"]
    assert base.split()[2:] == ["97.45", "-", "-", "-", "-", "-"]
    # Numbers sit under their headers (right-aligned to the same column end).
    assert header.index("AUC") + len("AUC") == row.index("0.99761") + len("0.99761")


def test_tar_lookup_tolerates_other_key_spellings():
    r = dict(RESULT, tar_at_far={"1e-2": 0.5, "1e-03": 0.25})
    row = format_table({"x": r}).splitlines()[2]
    assert row.split()[-2:] == ["50.00", "25.00"]


def test_markdown_table():
    md = to_markdown({"lfw": RESULT, "a|b": BASELINE})
    lines = md.strip().splitlines()
    assert lines[0].startswith("| Set | Accuracy (%) |")
    assert lines[1].startswith("| :--- | ---:")
    assert lines[2] == "| lfw | 98.33 ± 0.36 | 0.2835 | 0.99761 | 1.70 | 97.80 | 94.30 |"
    assert lines[3] == "| a\\|b | 97.45 | - | - | - | - | - |"
    assert {line.count(" | ") for line in lines} == {6}


def test_table_rejects_non_dict():
    with pytest.raises(FaceforgeError, match="results\\['lfw'\\] is a float"):
        format_table({"lfw": 0.98})


def test_write_json_round_trip_and_atomic(tmp_path):
    results = {"lfw": _evaluated(1), "extra": {"np": np.float32(0.5), "arr": np.arange(3)}}
    out = tmp_path / "sub" / "metrics.json"
    assert write_json(results, out) == out
    loaded = json.loads(out.read_text())
    assert loaded["lfw"] == json.loads(json.dumps(results["lfw"]))
    assert loaded["lfw"]["fold_accuracy"] == results["lfw"]["fold_accuracy"]
    assert loaded["extra"] == {"np": 0.5, "arr": [0, 1, 2]}
    # Overwrite in place; no temp files are left behind.
    write_json({"lfw": BASELINE}, out)
    assert json.loads(out.read_text()) == {"lfw": BASELINE}
    assert [p.name for p in out.parent.iterdir()] == ["metrics.json"]


def test_write_json_rejects_nan_and_keeps_old_file(tmp_path):
    out = tmp_path / "m.json"
    write_json({"a": 1}, out)
    with pytest.raises(FaceforgeError, match="finite"):
        write_json({"a": float("nan")}, out)
    assert json.loads(out.read_text()) == {"a": 1}
    assert len(list(tmp_path.iterdir())) == 1
    with pytest.raises(FaceforgeError, match="is a directory"):
        write_json({"a": 1}, tmp_path)


def test_plot_roc_writes_png(tmp_path):
    results = {"model A": _evaluated(2), "model B": _evaluated(3), "paper": BASELINE}
    out = plot_roc(results, tmp_path / "roc.png")
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    assert (width, height) == (768, 576)  # 6.4 x 4.8 in at 120 dpi
    assert len(data) > 10_000  # axes, two curves and a legend, not a blank canvas
    assert [p.name for p in tmp_path.iterdir()] == ["roc.png"]


def test_plot_roc_errors(tmp_path):
    with pytest.raises(FaceforgeError, match="none of \\['paper'\\]"):
        plot_roc({"paper": BASELINE}, tmp_path / "roc.png")
    with pytest.raises(FaceforgeError, match=r"roc\.jpg"):
        plot_roc({"a": _evaluated(4)}, tmp_path / "roc.jpg")


def test_reports_without_matplotlib_keep_their_tables(tmp_path, monkeypatch):
    """matplotlib is of the ``train`` extra: without it a report has its JSON and Markdown and says, in one
    line, which plots were left out and how to get them (no ImportError, no stale PNG)."""
    import sys

    from faceforge.eval.classify import classify_by_retrieval, write_classify_report
    from faceforge.eval.report import plots_unavailable, write_report

    res = _evaluated(0)
    assert plots_unavailable() is None  # the dev install has matplotlib: both branches are exercised
    with_plots = write_report({"syn": res}, tmp_path / "a")
    assert {"json", "md", "png", "det"} <= set(with_plots)

    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import machinery: "not installed"
    assert "pip install" in plots_unavailable()
    paths = write_report({"syn": res}, tmp_path / "b")
    assert set(paths) == {"json", "md"} and not (tmp_path / "b" / "roc.png").exists()
    md = paths["md"].read_text()
    assert "ROC and DET plots omitted: matplotlib is not installed" in md and "![ROC]" not in md
    assert "syn" in md and json.loads(paths["json"].read_text())["syn"]["accuracy"] == res["accuracy"]

    rng = np.random.default_rng(0)
    g, q = rng.normal(size=(40, 8)).astype(np.float32), rng.normal(size=(20, 8)).astype(np.float32)
    cres = classify_by_retrieval(g, np.arange(40) % 4, q, np.arange(20) % 4, k=3)
    cpaths = write_classify_report(cres, tmp_path / "c")
    assert set(cpaths) == {"json", "md"} and not (tmp_path / "c" / "confusion.png").exists()
    assert "Confusion-matrix plot omitted: matplotlib is not installed" in cpaths["md"].read_text()
