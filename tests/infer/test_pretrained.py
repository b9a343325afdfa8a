"""Pretrained models by name (``--model dlib``): registry, missing files, real LFW photos, CLI errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from faceforge.cli.main import main
from faceforge.errors import FaceforgeError
from faceforge.models import pretrained

pytestmark = pytest.mark.usefixtures("one_thread")


def _dlib_available() -> None:
    if pretrained.pretrained_file("dlib") is None:
        pytest.skip("dlib's model file is not installed (pip install face-recognition-models)")


@pytest.fixture
def lfw(shared_dir, monkeypatch) -> Path:
    root = shared_dir / "data" / "lfw" / "lfw-deepfunneled"
    if not root.is_dir():
        pytest.skip(f"LFW not found under {root}")
    monkeypatch.setenv("FACEFORGE_MODEL_DIRS", str(shared_dir / "models" / "detectors"))
    return root


def test_registry_lists_dlib_with_its_facts() -> None:
    assert "dlib" in pretrained.list_pretrained()
    e = pretrained.get_pretrained("dlib")
    assert e.arch == "dlib_resnet_v1" and e.face_cfg.template == "dlib"
    assert tuple(e.face_cfg.input_size) == (150, 150) and e.face_cfg.embedding_size == 128
    with pytest.raises(FaceforgeError, match=r"unknown pretrained model 'dlb'.*did you mean 'dlib'"):
        pretrained.get_pretrained("dlb")
    rows = {r["name"]: r for r in pretrained.status()}
    assert rows["dlib"]["available"] == (pretrained.pretrained_file("dlib") is not None)


def test_missing_or_tampered_file_says_what_to_install(tmp_path, monkeypatch) -> None:
    # A package directory whose copy of the file has the wrong bytes is never used.
    fake = tmp_path / "pkg" / "face_recognition_models"
    (fake / "models").mkdir(parents=True)
    (fake / "__init__.py").write_text("")
    (fake / "models" / "dlib_face_recognition_resnet_model_v1.dat").write_bytes(b"not the model")
    monkeypatch.syspath_prepend(str(tmp_path / "pkg"))
    monkeypatch.setenv("FACEFORGE_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("FACEFORGE_MODEL_DIRS", str(tmp_path / "none"))
    import importlib

    importlib.invalidate_caches()
    monkeypatch.delitem(__import__("sys").modules, "face_recognition_models", raising=False)
    assert pretrained.pretrained_file("dlib") is None
    with pytest.raises(FaceforgeError) as e:
        pretrained.load_pretrained("dlib")
    msg = str(e.value)
    assert "\n" not in msg and "SHA-256 differs" in msg and "pip install face-recognition-models" in msg
    assert "faceforge models fetch dlib_resnet" in msg


def test_written_calibration_replaces_the_shipped_one(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("FACEFORGE_HOME", str(tmp_path))
    cal = {"source": "mine (10 pairs)", "threshold": 0.42, "far_target": None}
    path = pretrained.save_calibration("dlib", cal)
    assert (
        path == tmp_path / "calibration" / "dlib.json" and json.loads(path.read_text())["threshold"] == 0.42
    )
    assert oct(path.stat().st_mode & 0o777) == "0o644"
    assert pretrained._calibration(pretrained.get_pretrained("dlib"))["threshold"] == 0.42
    path.write_text("{broken")
    with pytest.raises(FaceforgeError, match=r"calibration .*dlib\.json.* unreadable"):
        pretrained._calibration(pretrained.get_pretrained("dlib"))


def test_shipped_dlib_calibration_is_from_real_pairs() -> None:
    cal = pretrained.get_pretrained("dlib").calibration
    assert cal, "the dlib entry ships the calibration measured on LFW (faceforge eval --write-calibration)"
    assert "lfw" in cal["source"].lower() and cal["n_impostor"] >= 3000
    # 3,000 impostors cannot measure FAR 1e-3 (needs 10,000): the default is the best-accuracy threshold.
    assert cal["far_target"] is None and cal["threshold"] == pytest.approx(cal["threshold_cos_best_accuracy"])
    assert "needs >= 10,000 impostor pairs" in cal["far_note"]
    assert sum(cal["score_histogram"]["impostor"]) == cal["n_impostor"]


def test_verify_real_photos_with_dlib_and_no_other_flag(lfw, capsys) -> None:
    _dlib_available()
    a = lfw / "Aaron_Peirsol" / "Aaron_Peirsol_0001.jpg"
    b = lfw / "Aaron_Peirsol" / "Aaron_Peirsol_0002.jpg"
    c = lfw / "Abdullah_Gul" / "Abdullah_Gul_0001.jpg"
    assert main(["verify", str(a), str(b), "--model", "dlib"]) == 0
    out = capsys.readouterr()
    assert out.out.startswith("SAME person") and "calibrated on" in out.out and out.err == ""
    assert main(["verify", str(a), str(c), "--model", "dlib", "--json"]) == 1  # 1: different people
    res = json.loads(capsys.readouterr().out)
    assert res["verified"] is False and res["similarity"] < res["threshold"]
    fmr = res["false_match_rate"]
    # The share of the calibration's impostor pairs scoring this high: more than pass the (higher)
    # threshold, fewer than all of them.
    import faceforge.models
    from faceforge.eval.calibration import estimate_fmr

    shipped = Path(faceforge.models.__file__).with_name("calibrations") / "dlib.json"
    at_threshold = estimate_fmr(json.loads(shipped.read_text()), res["threshold"])["fmr"]
    assert fmr["impostors"] == 3000 and at_threshold < fmr["fmr"] < 1.0
    assert res["model"]["template"] == "dlib" and res["model"]["input_size"] == [150, 150]


def test_from_pretrained_matches_the_cli_and_flags_a_lookalike(lfw) -> None:
    _dlib_available()
    from faceforge.infer import FaceRecognizer

    rec = FaceRecognizer.from_pretrained("dlib")
    assert rec.threshold is not None and rec.info()["threshold_source"] == "calibration"
    photos = sorted((lfw / "George_W_Bush").glob("*.jpg"))[:3]
    emb = rec.embed([str(p) for p in photos])
    assert emb.shape == (3, 128) and np.allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    sims = emb @ emb.T
    assert sims[0, 1] >= rec.threshold and sims[0, 2] >= rec.threshold
    with pytest.raises(FaceforgeError, match="unknown pretrained model"):
        FaceRecognizer.from_pretrained("dlib2")


def _write(p: Path, data: bytes) -> Path:
    p.write_bytes(data)
    return p


@pytest.mark.parametrize(
    ("make", "expect"),
    [
        (lambda d: _write(d / "notes.pth", b"just text\n"), "notes.pth"),
        (lambda d: _write(d / "garbage.onnx", b"\x08\x07garbage"), "garbage.onnx"),
        (lambda d: d / "missing.onnx", "missing.onnx does not exist"),
        (lambda d: d, "is a folder"),
    ],
)
def test_cli_model_errors_are_one_line(tmp_path, capsys, make, expect) -> None:
    img = tmp_path / "x.png"
    from PIL import Image

    Image.fromarray(np.zeros((112, 112, 3), np.uint8)).save(img)
    target = make(tmp_path)
    assert main(["verify", str(img), str(img), "--model", str(target)]) == 2
    err = capsys.readouterr().err
    assert expect in err and "Traceback" not in err and err.count("\n") == 1


def test_architecture_name_as_model_says_to_pass_weights(tmp_path, capsys) -> None:
    img = tmp_path / "x.png"
    from PIL import Image

    Image.fromarray(np.zeros((112, 112, 3), np.uint8)).save(img)
    assert main(["embed", str(img), "--out", str(tmp_path / "e.npz"), "--model", "iresnet50"]) == 2
    err = capsys.readouterr().err
    assert "is an architecture" in err and "--arch iresnet50" in err
