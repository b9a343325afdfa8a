"""Detectors: interface, input validation, a real photo, LFW, SynthFaces (rates are measured)."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest

from faceforge.align import Face, create_detector, list_detectors
from faceforge.align.detectors.base import Detector, letterbox, nms, to_rgb_uint8
from faceforge.errors import FaceforgeError

ONNX = ["scrfd", "retinaface", "yolo5face"]
ALL = ["yunet", *ONNX, "mtcnn"]


@pytest.fixture
def model_dirs(shared_dir, monkeypatch):
    monkeypatch.setenv("FACEFORGE_HOME", str(shared_dir / "nonexistent-home"))
    monkeypatch.setenv(
        "FACEFORGE_MODEL_DIRS",
        f"{shared_dir / 'models/detectors'}:{shared_dir / 'models/mtcnn'}",
    )
    return shared_dir


_CACHE: dict[str, Detector] = {}


def _det(name: str) -> Detector:
    if name in ONNX:
        pytest.importorskip("onnxruntime")
    if name not in _CACHE:
        _CACHE[name] = create_detector(name)
    return _CACHE[name]


def test_registry():
    assert set(ALL) <= set(list_detectors())
    with pytest.raises(FaceforgeError, match="did you mean 'yunet'"):
        create_detector("yunett")


def test_missing_model_file_says_what_to_fetch(tmp_path, monkeypatch):
    monkeypatch.setenv("FACEFORGE_HOME", str(tmp_path))
    monkeypatch.delenv("FACEFORGE_MODEL_DIRS", raising=False)
    with pytest.raises(FaceforgeError, match="faceforge models fetch yunet"):
        create_detector("yunet")
    with pytest.raises(FaceforgeError, match="does not exist"):
        create_detector("scrfd", model_path=tmp_path / "missing.onnx")


def test_auto_prefers_scrfd_and_needs_onnxruntime_for_it(model_dirs, monkeypatch):
    """``auto``: SCRFD (nearer landmarks, faster) before YuNet; without onnxruntime its file cannot run."""
    import importlib.util

    from faceforge.align.choose import auto_detector_name

    pytest.importorskip("onnxruntime")
    assert auto_detector_name() == "scrfd"
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda n, *a: None if n == "onnxruntime" else real(n, *a)
    )
    assert auto_detector_name() == "yunet"


def test_to_rgb_uint8():
    g = np.arange(100, dtype=np.uint8).reshape(10, 10)
    assert to_rgb_uint8(g).shape == (10, 10, 3)
    assert to_rgb_uint8(g[:, :, None]).shape == (10, 10, 3)
    rgba = np.zeros((4, 4, 4), np.uint8)
    rgba[..., 0] = 7
    assert to_rgb_uint8(rgba)[0, 0].tolist() == [7, 0, 0]
    assert to_rgb_uint8(np.full((2, 2), 65535, np.uint16)).max() == 255
    assert to_rgb_uint8(np.full((2, 2, 3), 0.5, np.float32))[0, 0, 0] == 128
    with pytest.raises(FaceforgeError, match="shape"):
        to_rgb_uint8(np.zeros((4, 4, 5), np.uint8))
    with pytest.raises(FaceforgeError, match="numpy array"):
        to_rgb_uint8([[1, 2]])


def test_nms_and_letterbox():
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [20, 20, 30, 30]], np.float32)
    assert nms(boxes, np.array([0.9, 0.8, 0.7]), 0.4).tolist() == [0, 2]
    assert nms(boxes, np.array([0.5, 0.8, 0.7]), 0.4).tolist() == [1, 2]
    canvas, s = letterbox(np.full((50, 100, 3), 9, np.uint8), (200, 200))
    assert s == 2 and canvas[99, 199, 0] == 9 and canvas[100, 0, 0] == 0


def _plausible(f: Face) -> None:
    le, re, nose, lm, rm = f.landmarks
    assert le[0] < re[0] and lm[0] < rm[0]  # left = smaller x
    assert max(le[1], re[1]) < nose[1] < min(lm[1], rm[1])  # eyes above nose above mouth
    x1, y1, x2, y2 = f.bbox
    assert np.all((f.landmarks[:, 0] > x1) & (f.landmarks[:, 0] < x2))
    assert np.all((f.landmarks[:, 1] > y1) & (f.landmarks[:, 1] < y2))


@pytest.mark.parametrize("name", ALL)
def test_astronaut(name, model_dirs):
    skimage_data = pytest.importorskip("skimage.data")
    img = skimage_data.astronaut()
    faces = _det(name).detect(img)
    assert len(faces) == 1, [f.to_dict() for f in faces]
    f = faces[0]
    _plausible(f)
    # Eileen Collins' face: eyes at about (203, 103) and (245, 104) in the 512x512 photo.
    np.testing.assert_allclose(f.landmarks[:2], [[203, 103], [245, 104]], atol=8)
    assert 0.5 < f.score <= 1.0


@pytest.mark.parametrize("name", ALL)
def test_bad_inputs_never_crash(name, model_dirs):
    det = _det(name)
    assert det.detect(np.zeros((10, 10, 3), np.uint8)) == []
    assert det.detect(np.zeros((0, 0, 3), np.uint8)) == []
    skimage_data = pytest.importorskip("skimage.data")
    img = skimage_data.astronaut()
    gray = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)
    assert len(det.detect(gray)) >= 1
    rgba = np.concatenate([img, np.full((*img.shape[:2], 1), 255, np.uint8)], axis=2)
    assert len(det.detect(rgba)) == 1
    assert len(det.detect(img.astype(np.uint16) * 257)) == 1
    assert isinstance(det.detect(np.zeros((300, 40, 3), np.uint8)), list)


def _lfw_sample(shared_dir, n: int) -> list:
    root = shared_dir / "data/lfw/lfw-deepfunneled"
    if not root.is_dir():
        pytest.skip("LFW not in shared/")
    people = sorted(p for p in root.iterdir() if p.is_dir())
    rng = np.random.default_rng(123)
    files = [sorted(people[i].glob("*.jpg"))[0] for i in rng.choice(len(people), n, replace=False)]
    return [cv2.cvtColor(cv2.imread(str(f)), cv2.COLOR_BGR2RGB) for f in files]


@pytest.mark.parametrize("name", ALL)
def test_lfw_sample(name, model_dirs):
    imgs = _lfw_sample(model_dirs, 20)
    det = _det(name)
    found = 0
    for img in imgs:
        faces = det.detect(img)
        # LFW centres the named person: take the face nearest the centre, as the CLI's default.
        if faces:
            f = min(faces, key=lambda f: np.abs(f.bbox.reshape(2, 2).mean(0) - 125).max())
            found += np.abs(f.bbox.reshape(2, 2).mean(0) - 125).max() < 40
    assert found >= 19


def test_detectors_agree_on_landmarks(model_dirs):
    skimage_data = pytest.importorskip("skimage.data")
    img = skimage_data.astronaut()
    pts = [_det(n).detect(img)[0].landmarks for n in ALL]
    spread = np.max([np.abs(p - pts[0]).max() for p in pts])
    assert spread < 12


@pytest.mark.parametrize("name", ["yunet", "scrfd"])
def test_synthfaces_wild(name, model_dirs):
    """Detection rate and landmark error on SynthFaces wild scenes (cartoonish: measured, loosely checked).

    Measured (seed 5, 40 scenes, difficulty 1): see docs/align.md. The assertion only guards
    against a broken pipeline: when a face is found, its eyes must be near the ground truth.
    """
    from faceforge.data.synth.render import SynthFaces

    sf = SynthFaces(seed=5, mode="wild")
    det = _det(name)
    n, hits, errs = 40, 0, []
    for i in range(n):
        img, gt = sf.image(i, 0)
        faces = det.detect(img)
        if not faces:
            continue
        iod = float(np.linalg.norm(gt[1] - gt[0]))
        best = min(faces, key=lambda f: float(np.abs(f.landmarks - gt).mean()))
        err = float(np.linalg.norm(best.landmarks - gt, axis=1).mean()) / iod
        if err < 0.5:
            hits += 1
            errs.append(err)
    print(
        f"{name}: synthfaces wild detection {hits}/{n}, "
        f"mean NME(iod) {np.mean(errs) if errs else math.nan:.3f}"
    )
    assert hits >= 1
    assert np.median(errs) < 0.35


def test_check_detector_finds_every_error_without_building(tmp_path, monkeypatch):
    # demo --lfw checks its detector before rendering but builds it only after training: a built
    # detector's native threads must not be inherited by the forked rendering workers.
    import faceforge.align.choose as choose

    monkeypatch.setenv("FACEFORGE_HOME", str(tmp_path / "home"))

    def never(*a, **k):
        raise AssertionError("check_detector built a detector")

    monkeypatch.setattr(choose, "create_detector", never)
    with pytest.raises(FaceforgeError, match=r"unknown detector 'yunett'.*did you mean 'yunet'"):
        choose.check_detector("yunett")
    with pytest.raises(FaceforgeError, match=r"not found in .*faceforge models fetch yunet"):
        choose.check_detector("yunet")  # nothing in the (empty) store
    with pytest.raises(FaceforgeError, match=r"detector model file .*missing.onnx does not exist"):
        choose.check_detector("scrfd", tmp_path / "missing.onnx")
    f = tmp_path / "my_scrfd_10g.onnx"
    f.write_bytes(b"not checked here: the file is read when the detector is built")
    assert choose.check_detector("scrfd", f) == "scrfd"
    assert choose.check_detector(str(f)) == "scrfd"
    with pytest.raises(AssertionError, match="built a detector"):
        choose.resolve_detector("scrfd", f)  # resolve_detector does build
