"""MediaPipe BlazeFace + face mesh: anchors, weighted NMS, mouth estimate, a real photo, errors."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from faceforge.align import create_detector, list_detectors
from faceforge.align.detectors.mediapipe import (
    MESH_MOUTH_LEFT,
    MESH_MOUTH_RIGHT,
    blazeface_anchors,
    mouth_corners_from_centre,
    weighted_nms,
)
from faceforge.align.templates import ARCFACE_112
from faceforge.errors import FaceforgeError


@pytest.fixture
def mp_dirs(shared_dir, monkeypatch, tmp_path):
    pytest.importorskip("ai_edge_litert")
    monkeypatch.setenv("FACEFORGE_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("FACEFORGE_MODEL_DIRS", str(shared_dir / "models/mediapipe"))
    return shared_dir


_CACHE: dict = {}


def _det(name: str = "mediapipe", **kw):
    key = (name, tuple(sorted(kw.items())))
    if key not in _CACHE:
        _CACHE[key] = create_detector(name, **kw)
    return _CACHE[key]


def test_registered():
    assert {"mediapipe", "mediapipe_full"} <= set(list_detectors())


def test_anchors_match_the_model_outputs():
    short = blazeface_anchors(128, (8, 16, 16, 16), 2)
    full = blazeface_anchors(192, (4,), 1)
    assert short.shape == (896, 2) and full.shape == (2304, 2)
    # stride 8: 16x16 cells, 2 anchors each, row-major; first cell centre at (0.5/16, 0.5/16)
    np.testing.assert_allclose(short[0], short[1])
    np.testing.assert_allclose(short[0], [0.5 / 16, 0.5 / 16])
    np.testing.assert_allclose(short[2], [1.5 / 16, 0.5 / 16])
    np.testing.assert_allclose(short[32], [0.5 / 16, 1.5 / 16])
    # stride 16 group: 3 layers merged → 6 anchors per 8x8 cell
    np.testing.assert_allclose(short[512:518], np.tile([0.5 / 8, 0.5 / 8], (6, 1)))
    np.testing.assert_allclose(short[518], [1.5 / 8, 0.5 / 8])
    np.testing.assert_allclose(full[-1], [47.5 / 48, 47.5 / 48])


def test_weighted_nms_averages_clusters():
    boxes = np.array([[0, 0, 10, 10], [2, 0, 12, 10], [50, 50, 60, 60]], np.float64)
    scores = np.array([0.75, 0.25, 0.6])
    kps = np.arange(3 * 2 * 2, dtype=np.float64).reshape(3, 2, 2)
    out = weighted_nms(boxes, scores, kps, 0.3)
    assert len(out) == 2
    box, score, k = out[0]
    # IoU(0, 1) = 80/120 > 0.3 → one cluster, weights 0.75/0.25
    np.testing.assert_allclose(box, [0.5, 0, 10.5, 10])
    np.testing.assert_allclose(k, 0.75 * kps[0] + 0.25 * kps[1])
    assert score == 0.75
    np.testing.assert_allclose(out[1][0], boxes[2])
    assert out[1][1] == 0.6
    # Below the overlap threshold boxes stay apart.
    assert len(weighted_nms(boxes, scores, kps, 0.7)) == 3


def test_mouth_estimate_reproduces_the_arcface_template():
    t = ARCFACE_112.astype(np.float64)
    centre = t[3:].mean(0)
    est = mouth_corners_from_centre(t[0], t[1], centre)
    np.testing.assert_allclose(est, t[3:], atol=0.3)
    # rotated face: the corners follow the eye line
    est = mouth_corners_from_centre(np.array([0.0, 0.0]), np.array([0.0, 10.0]), np.array([5.0, 5.0]))
    np.testing.assert_allclose(est, [[5, 0.86], [5, 9.14]], atol=1e-5)
    assert (MESH_MOUTH_LEFT, MESH_MOUTH_RIGHT) == (61, 291)


@pytest.mark.parametrize("name", ["mediapipe", "mediapipe_full"])
def test_astronaut(name, mp_dirs):
    img = pytest.importorskip("skimage.data").astronaut()
    faces = _det(name).detect(img)
    assert len(faces) == 1, [f.to_dict() for f in faces]
    f = faces[0]
    le, re, nose, lm, rm = f.landmarks
    np.testing.assert_allclose(f.landmarks[:2], [[203, 103], [245, 104]], atol=8)
    assert le[0] < re[0] and lm[0] < rm[0]
    assert max(le[1], re[1]) < nose[1] < min(lm[1], rm[1])
    # mouth corners: about (203, 145) and (242, 145) in this photo (other detectors agree within 8 px)
    np.testing.assert_allclose(f.landmarks[3:], [[203, 144], [243, 144]], atol=9)
    assert 0.8 < f.score <= 1.0
    assert f.landmarks_extra.shape == (6, 2)


def test_refine_none_differs_only_in_the_mouth(mp_dirs):
    img = pytest.importorskip("skimage.data").astronaut()
    a = _det("mediapipe").detect(img)[0]
    b = _det("mediapipe", refine="none").detect(img)[0]
    np.testing.assert_allclose(a.landmarks[:3], b.landmarks[:3])
    assert np.abs(a.landmarks[3:] - b.landmarks[3:]).max() > 0.5
    np.testing.assert_allclose(b.landmarks[3:], [[203, 144], [243, 144]], atol=12)


def test_rotated_face_keeps_the_order(mp_dirs):
    img = pytest.importorskip("skimage.data").astronaut()[20:260, 120:340]
    import cv2

    m = cv2.getRotationMatrix2D((110, 120), 25, 1.0)  # 25° counter-clockwise
    rot = cv2.warpAffine(img, m, (220, 240))
    f = _det("mediapipe").detect(rot)[0]
    eye = f.landmarks[1] - f.landmarks[0]
    assert eye[0] > 0 and -40 < np.degrees(np.arctan2(eye[1], eye[0])) < -10
    mouth = f.landmarks[4] - f.landmarks[3]
    assert np.degrees(np.arccos(eye @ mouth / np.linalg.norm(eye) / np.linalg.norm(mouth))) < 15


def test_no_face_and_bad_inputs(mp_dirs):
    det = _det("mediapipe")
    assert det.detect(np.full((200, 200, 3), 90, np.uint8)) == []
    assert det.detect(np.zeros((10, 10, 3), np.uint8)) == []
    img = pytest.importorskip("skimage.data").astronaut()
    assert len(det.detect(img.mean(2).astype(np.uint8))) == 1
    assert len(det.detect(img.astype(np.uint16) * 257)) == 1


def test_errors(tmp_path, monkeypatch):
    monkeypatch.setenv("FACEFORGE_HOME", str(tmp_path))
    monkeypatch.delenv("FACEFORGE_MODEL_DIRS", raising=False)
    pytest.importorskip("ai_edge_litert")
    with pytest.raises(FaceforgeError, match="faceforge models fetch mediapipe_short"):
        create_detector("mediapipe")
    with pytest.raises(FaceforgeError, match="variant"):
        create_detector("mediapipe", variant="mid")
    bad = tmp_path / "x.tflite"
    bad.write_bytes(b"not a model")
    with pytest.raises(FaceforgeError, match="cannot load mediapipe model"):
        create_detector("mediapipe", model_path=bad, refine="none")
    monkeypatch.setitem(sys.modules, "ai_edge_litert.interpreter", None)
    with pytest.raises(FaceforgeError, match=r"pip install 'faceforge\[detectors\]'"):
        create_detector("mediapipe", model_path=bad, refine="none")
