"""Alignment benchmark: face selection, fallback, folds, bad inputs, outputs, and the CI run on LFW fold 1."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from faceforge.align import Face
from faceforge.align.templates import get_template
from faceforge.data.pairs import Pairs
from faceforge.errors import FaceforgeError
from faceforge.eval.align_bench import (
    Recognizer,
    bench_align,
    fallback_landmarks,
    select_face,
    subset_folds,
)


def _face(box, score):
    return Face(bbox=np.array(box, np.float32), score=score, landmarks=np.zeros((5, 2)))


def test_select_face():
    a = _face([0, 0, 100, 100], 0.9)  # large, off-centre
    b = _face([90, 90, 130, 130], 0.7)  # small, centred in a 220x220 image
    c = _face([150, 0, 200, 60], 0.95)
    assert select_face([a, b, c], 220, 220, "center") is b
    assert select_face([a, b, c], 220, 220, "largest") is a
    assert select_face([a, b, c], 220, 220, "score") is c
    with pytest.raises(FaceforgeError, match="center"):
        select_face([a], 10, 10, "middle")


def test_fallback_landmarks():
    lm = np.array([np.full((5, 2), 50.0), np.full((5, 2), 100.0)])
    sizes = np.array([[200, 100], [200, 200]])
    # relative positions (0.25, 0.5) and (0.5, 0.5) → mean (0.375, 0.5) → in a 400x300 image (150, 150)
    np.testing.assert_allclose(fallback_landmarks(lm, sizes, 400, 300, None), np.full((5, 2), [150, 150]))
    t = get_template("dlib", 150)
    fb = fallback_landmarks(np.zeros((0, 5, 2)), np.zeros((0, 2)), 250, 250, t)
    assert fb.shape == (5, 2)
    # the template fills the central 45 %: eye distance scales by 0.45*250/max(t)
    np.testing.assert_allclose(fb[1, 0] - fb[0, 0], (t[1, 0] - t[0, 0]) * 0.45 * 250 / t.max(), rtol=1e-5)
    assert 62 < fb[:, 0].min() and fb[:, 0].max() < 188


def test_subset_folds():
    n = 40
    p = Pairs(
        [f"a{i}" for i in range(n)], [f"b{i}" for i in range(n)], np.arange(n) % 2 == 0, np.arange(n) // 10
    )
    q = subset_folds(p, 1)
    assert len(q) == 10 and q.paths_a[-1] == "a9" and q.n_folds == 1
    assert subset_folds(p, None) is p and subset_folds(p, 9) is p
    with pytest.raises(FaceforgeError):
        subset_folds(p, 0)


def _photos(folder: Path) -> dict[str, Path]:
    face = pytest.importorskip("skimage.data").astronaut()[20:260, 120:340]
    folder.mkdir(parents=True)
    f = {}
    f["good"] = folder / "good.jpg"
    Image.fromarray(face).save(f["good"])
    f["gray"] = folder / "gray.png"
    Image.fromarray(face).convert("L").save(f["gray"])
    f["rgba"] = folder / "rgba.png"
    Image.fromarray(face).convert("RGBA").save(f["rgba"])
    f["deep16"] = folder / "deep16.png"
    Image.fromarray(face[:, :, 1].astype(np.uint16) * 257).save(f["deep16"])
    exif = Image.Exif()
    exif[274] = 6
    f["exif6"] = folder / "exif6.jpg"
    Image.fromarray(np.ascontiguousarray(np.rot90(face, k=1))).save(f["exif6"], exif=exif)
    f["tiny"] = folder / "tiny.png"
    Image.fromarray(np.zeros((10, 10, 3), np.uint8)).save(f["tiny"])
    f["noface"] = folder / "noface.png"
    Image.fromarray(np.full((200, 200, 3), 90, np.uint8)).save(f["noface"])
    f["notes"] = folder / "notes.jpg"
    f["notes"].write_text("not an image")
    return f


def _mean_colour_recognizer() -> Recognizer:
    """A stand-in recogniser: the crop's 4x4 colour layout (no model; deterministic)."""

    def embed(crops: np.ndarray) -> np.ndarray:
        n = len(crops)
        x = crops.reshape(n, 4, 28, 4, 28, 3).astype(np.float32).mean((2, 4)).reshape(n, -1)
        return x - 100.0

    return Recognizer("mean-colour", "arcface", (112, 112), embed, {"recognizer": "mean-colour"})


@pytest.fixture
def model_env(shared_dir, monkeypatch, tmp_path):
    monkeypatch.setenv("FACEFORGE_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("FACEFORGE_MODEL_DIRS", str(shared_dir / "models/detectors"))
    return shared_dir


def test_bad_inputs_are_per_file_outcomes(model_env, tmp_path):
    f = _photos(tmp_path / "img")
    names = list(f)
    rows = []
    for i in range(20):  # 10 genuine-labelled, 10 impostor-labelled pairs over all 8 files
        a, b = names[i % 8], names[(i * 3 + 1) % 8]
        rows.append(f"{f[a]},{f[b]},{int(i < 10)}")
    pairs = tmp_path / "pairs.csv"
    pairs.write_text("path_a,path_b,label\n" + "\n".join(rows) + "\n")
    out = tmp_path / "bench"
    logs: list[str] = []
    res = bench_align(pairs, ["yunet"], _mean_colour_recognizer(), out=out, subprocess=False, log=logs.append)
    (row,) = res
    assert row["images"] == 8 and row["detected"] == 5 and row["unreadable"] == 1
    assert row["success_rate"] == pytest.approx(5 / 8)
    assert row["gpu_mib"] is None and row["time_median_ms"] > 0 and row["img_per_s"] > 0
    outcomes = {Path(o["file"]).name: o["outcome"] for o in map(json.loads, (out / "outcomes.jsonl").open())}
    assert set(outcomes) == {"tiny.png", "noface.png", "notes.jpg"}
    assert outcomes["notes.jpg"].startswith("unreadable") and "not an image" in outcomes["notes.jpg"]
    assert "no face" in outcomes["noface.png"] and "fallback" in outcomes["tiny.png"]
    md = (out / "results.md").read_text()
    assert "| yunet | 5/8 | 62.50% |" in md and "notes.jpg" in md
    with open(out / "results.csv") as fh:
        (csv_row,) = list(csv.DictReader(fh))
    assert csv_row["gpu_mib"] == "n/a" and float(csv_row["success_rate"]) == pytest.approx(0.625)
    png = Image.open(out / "align_bench.png")
    assert png.size[0] > 800 and png.size[1] > 400
    # A re-run with the same inputs takes the detector's results from the cache.
    again = bench_align(
        pairs, ["yunet"], _mean_colour_recognizer(), out=out, subprocess=False, log=logs.append
    )
    assert any("from cache" in s for s in logs)
    assert again[0]["accuracy"] == row["accuracy"] and again[0]["detected"] == 5


def test_subprocess_reports_its_own_peak_rss(model_env, tmp_path):
    f = _photos(tmp_path / "img")
    pairs = tmp_path / "pairs.csv"
    lines = [
        f"{f['good']},{f['exif6']},1" if i % 2 == 0 else f"{f['good']},{f['noface']},0" for i in range(10)
    ]
    pairs.write_text("path_a,path_b,label\n" + "\n".join(lines) + "\n")
    (row,) = bench_align(pairs, ["yunet"], _mean_colour_recognizer(), subprocess=True)
    assert row["detected"] == 2 and 20 < row["peak_rss_mib"] < 4000
    assert 0 <= row["rss_over_start_mib"] < row["peak_rss_mib"]


def test_cli_errors(capsys, tmp_path):
    from faceforge.cli.main import main

    assert main(["bench-align", "--pairs", str(tmp_path / "none.txt"), "--detectors", "yunnet"]) == 2
    assert "did you mean 'yunet'" in capsys.readouterr().err
    assert main(["bench-align", "--pairs", str(tmp_path / "none.txt"), "--detectors", "yunet"]) == 2
    assert "does not exist" in capsys.readouterr().err
    # --model-dir is in force while the command runs and gone after it, whether it failed or not
    before = os.environ.get("FACEFORGE_MODEL_DIRS")
    argv = ["bench-align", "--pairs", str(tmp_path / "none.txt"), "--detectors", "yunet"]
    assert main([*argv, "--model-dir", str(tmp_path / "models")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert os.environ.get("FACEFORGE_MODEL_DIRS") == before


@pytest.mark.slow
def test_ci_lfw_fold1_yunet_dlib(shared_dir, tmp_path, monkeypatch):
    """The CI benchmark: LFW View-2 fold 1 (600 pairs), YuNet crops, dlib ResNet → ≥ 97 % accuracy."""
    pytest.importorskip("dlib")
    lfw = shared_dir / "data/lfw"
    if not (lfw / "pairs.txt").is_file():
        pytest.skip("LFW not in shared/")
    from faceforge.align.detectors.dlib import dlib_model_file
    from faceforge.cli.main import main

    try:
        dlib_model_file(None, "dlib_resnet", "dlib ResNet")
    except FaceforgeError:
        pytest.skip("dlib ResNet model (face_recognition_models) not installed")
    monkeypatch.setenv("FACEFORGE_HOME", str(tmp_path / "home"))
    before = os.environ.get("FACEFORGE_MODEL_DIRS")
    out = tmp_path / "bench"
    rc = main(
        [
            "bench-align", "--pairs", str(lfw / "pairs.txt"), "--root", str(lfw / "lfw-deepfunneled"),
            "--detectors", "yunet", "--recognizer", "dlib", "--folds", "1", "--no-native",
            "--model-dir", str(shared_dir / "models/detectors"), "--out", str(out), "--quiet",
        ]
    )  # fmt: skip
    assert rc == 0
    assert os.environ.get("FACEFORGE_MODEL_DIRS") == before  # --model-dir leaves no trace behind
    with open(out / "results.csv") as fh:
        (row,) = list(csv.DictReader(fh))
    print(row)
    assert int(row["images"]) == 807  # distinct images of fold 1
    assert float(row["success_rate"]) >= 0.995
    assert float(row["accuracy"]) >= 0.97
