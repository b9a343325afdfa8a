"""Each bad input is a per-file outcome of ``faceforge align`` / ``detect``, for every kind of detector."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from faceforge.cli.main import main

GOOD = {"good.jpg", "gray.png", "rgba.png", "deep16.png", "exif6.jpg"}
BAD = {"tiny.png": "no face", "noface.png": "no face", "notes.jpg": "not an image"}


def make_bad_inputs(folder: Path) -> Path:
    """good.jpg, gray, RGBA, 16-bit PNG, an EXIF-rotated JPEG, a 10x10 image, no face, a text file."""
    face = pytest.importorskip("skimage.data").astronaut()[20:260, 120:340]
    folder.mkdir(parents=True, exist_ok=True)
    Image.fromarray(face).save(folder / "good.jpg")
    Image.fromarray(face).convert("L").save(folder / "gray.png")
    Image.fromarray(face).convert("RGBA").save(folder / "rgba.png")
    deep = Image.fromarray(face[:, :, 1].astype(np.uint16) * 257)
    assert deep.mode.startswith("I")
    deep.save(folder / "deep16.png")
    exif = Image.Exif()
    exif[274] = 6  # stored on its side; viewers rotate 90° clockwise
    Image.fromarray(np.ascontiguousarray(np.rot90(face, k=1))).save(folder / "exif6.jpg", exif=exif)
    Image.fromarray(np.zeros((10, 10, 3), np.uint8)).save(folder / "tiny.png")
    Image.fromarray(np.full((200, 200, 3), 90, np.uint8)).save(folder / "noface.png")
    (folder / "notes.jpg").write_text("this is not a JPEG")
    return folder


@pytest.fixture
def env(shared_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("FACEFORGE_HOME", str(tmp_path / "home"))
    monkeypatch.setenv(
        "FACEFORGE_MODEL_DIRS",
        f"{shared_dir / 'models/detectors'}:{shared_dir / 'models/mediapipe'}:{shared_dir / 'models/mtcnn'}",
    )
    return tmp_path


def _needs(detector: str) -> None:
    if detector.startswith("mediapipe"):
        pytest.importorskip("ai_edge_litert")
    if detector.startswith("dlib"):
        pytest.importorskip("dlib")
    if detector in ("scrfd", "retinaface", "yolo5face"):
        pytest.importorskip("onnxruntime")


@pytest.mark.parametrize("detector", ["yunet", "scrfd", "mediapipe", "dlib"])
def test_align_every_bad_input_is_an_outcome(detector, env, capsys):
    _needs(detector)
    src = make_bad_inputs(env / "src")
    dst = env / f"dst_{detector}"
    rc = main(
        ["align", str(src), str(dst), "--detector", detector, "--template", "dlib", "--json", "--quiet"]
    )
    assert rc == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    fails = {
        json.loads(x)["file"]: json.loads(x)["reason"]
        for x in (dst / "failures.jsonl").read_text().splitlines()
    }
    assert set(fails) == set(BAD), fails
    for name, why in BAD.items():
        assert why in fails[name], (name, fails[name])
    assert summary == {**summary, "aligned": len(GOOD), "failed": len(BAD)}
    crops = {}
    for name in GOOD:
        im = Image.open(dst / (Path(name).stem + ".jpg"))
        assert im.size == (150, 150) and im.mode == "RGB"  # --template dlib → 150 px by default
        crops[name] = np.asarray(im, dtype=np.float32)
    # The EXIF-rotated file was turned upright: its crop looks like the upright one's.
    assert np.abs(crops["good.jpg"] - crops["exif6.jpg"]).mean() < 12
    assert np.abs(crops["good.jpg"] - crops["rgba.png"]).mean() < 12  # JPEG vs lossless PNG source


@pytest.mark.parametrize("detector", ["mediapipe", "dlib"])
def test_detect_json_per_file(detector, env, capsys):
    _needs(detector)
    src = make_bad_inputs(env / "src")
    files = [str(src / n) for n in ("good.jpg", "exif6.jpg", "notes.jpg", "tiny.png")]
    assert main(["detect", *files, "--detector", detector, "--json"]) == 2  # 2: some file failed
    recs = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [len(r.get("faces", [])) for r in recs] == [1, 1, 0, 0]
    assert "not an image" in recs[2]["error"] and "error" not in recs[3]
    a, b = (np.array(r["faces"][0]["landmarks"]) for r in recs[:2])
    np.testing.assert_allclose(a, b, atol=5)
