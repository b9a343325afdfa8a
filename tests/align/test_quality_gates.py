"""No detector returns a box without a face in it; MediaPipe finds the faces or says they are out of range.

The group photo is six SynthFaces "wild" scenes (identities 1000-1005, seed 0) tiled 3 x 2 into a
750 x 500 image, so the true 5 landmarks of every face are known. The properties asserted hold with a
margin (a box may be 10 % off; MediaPipe must find 4 of the 6 faces where it finds 5 today), so a
slightly different ONNX Runtime / OpenCV build gives the same verdicts.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from faceforge.align import create_detector
from faceforge.cli.main import main

#: every backend, each with what it needs; dlib_mmod (a CNN, ~25 s on this image on one core) is slow
DETECTORS = [
    "yunet",
    "scrfd",
    "retinaface",
    "yolo5face",
    "mtcnn",
    "mediapipe",
    "mediapipe_full",
    "dlib",
    pytest.param("dlib_mmod", marks=pytest.mark.slow),
]
_NEEDS = {
    "scrfd": "onnxruntime",
    "retinaface": "onnxruntime",
    "yolo5face": "onnxruntime",
    "mediapipe": "ai_edge_litert",
    "mediapipe_full": "ai_edge_litert",
    "dlib": "dlib",
    "dlib_mmod": "dlib",
}


@pytest.fixture
def model_dirs(shared_dir, monkeypatch, tmp_path):
    monkeypatch.setenv("FACEFORGE_HOME", str(tmp_path / "home"))
    dirs = [shared_dir / "models" / d for d in ("detectors", "mediapipe", "mtcnn")]
    monkeypatch.setenv("FACEFORGE_MODEL_DIRS", ":".join(map(str, dirs)))
    return shared_dir


@pytest.fixture(scope="module")
def group() -> tuple[np.ndarray, np.ndarray]:
    """(750x500 RGB image, true landmarks [6, 5, 2]) of six SynthFaces wild scenes."""
    from faceforge.data.synth import SynthFaces

    sf = SynthFaces(0, mode="wild", difficulty=0.5)
    tiles, lms = [], []
    for k in range(6):
        img, lm = sf.image(1000 + k, 0)
        tiles.append(img)
        lms.append(lm + np.array([250 * (k % 3), 250 * (k // 3)]))
    rows = [np.concatenate(tiles[:3], 1), np.concatenate(tiles[3:], 1)]
    return np.ascontiguousarray(np.concatenate(rows, 0)), np.stack(lms)


def _inside(points: np.ndarray, box: np.ndarray, margin: float) -> bool:
    x1, y1, x2, y2 = (float(v) for v in box)
    mx, my = margin * (x2 - x1), margin * (y2 - y1)
    p = np.asarray(points, np.float64)
    return bool(
        ((p[:, 0] >= x1 - mx) & (p[:, 0] <= x2 + mx) & (p[:, 1] >= y1 - my) & (p[:, 1] <= y2 + my)).all()
    )


def _detector(name: str):
    if name in _NEEDS:
        pytest.importorskip(_NEEDS[name])
    return create_detector(name)


def _faces_found(faces, truth: np.ndarray) -> tuple[set[int], list]:
    """Indices of the true faces some box contains, and the boxes that contain none (false boxes)."""
    found, false = set(), []
    for f in faces:
        hits = [k for k, lm in enumerate(truth) if _inside(lm, f.bbox, 0.1)]
        found.update(hits)
        if not hits:
            false.append(f.to_dict())
    return found, false


@pytest.mark.parametrize("name", DETECTORS)
def test_no_box_without_a_face_on_the_group_photo(name, model_dirs, group) -> None:
    img, truth = group
    faces = _detector(name).detect(img)
    _, false = _faces_found(faces, truth)
    assert not false, f"{name} returned boxes holding none of the 6 faces: {false}"
    for f in faces:  # and each box holds its own landmarks (not points scattered over a body)
        assert _inside(f.landmarks, f.bbox, 0.1), f.to_dict()


def test_mediapipe_finds_the_group(model_dirs, group) -> None:
    """Short range sees the whole image at 128 px: tiling brings the six ~100 px faces into its range."""
    img, truth = group
    det = _detector("mediapipe")
    found, _ = _faces_found(det.detect(img), truth)
    assert len(found) >= 4, found  # 5 of 6 when this was written
    single = create_detector("mediapipe", tiles=1)  # mediapipe's own single pass, for contrast
    assert len(_faces_found(single.detect(img), truth)[0]) < len(found)


def test_mediapipe_says_when_faces_are_out_of_range(model_dirs, group, tmp_path, capsys) -> None:
    """One 60-px face in a 4000 x 3000 photo: nothing found, and ``detect`` says why."""
    pytest.importorskip("ai_edge_litert")
    from PIL import Image

    scene = group[0][:250, :250]  # face 0, about 60 px between the eyes and the chin
    canvas = np.full((3000, 4000, 3), 128, np.uint8)
    canvas[1500:1750, 2000:2250] = scene
    path = tmp_path / "far.png"
    Image.fromarray(canvas).save(path)
    det = create_detector("mediapipe")
    assert det.detect(canvas) == []
    assert det.smallest_face(4000, 3000) > 100  # its smallest pass (1000 px tiles) needs ~125 px faces
    assert main(["detect", str(path), "--detector", "mediapipe", "--json"]) == 1  # 1: no face
    rec = json.loads(capsys.readouterr().out)
    assert rec["faces"] == [] and "out of its range" in rec["note"] and "4000x3000" in rec["note"]
    # Where the range covers the image, no note: the face is simply not there.
    assert main(["detect", str(path), "--detector", "yunet", "--json"]) in (0, 1)
    assert "note" not in json.loads(capsys.readouterr().out)


def _lfw_singles(shared_dir: Path, n: int = 40) -> list[np.ndarray]:
    from faceforge.align.io import read_image

    root = shared_dir / "data/lfw/lfw-deepfunneled"
    if not root.is_dir():
        pytest.skip(f"LFW not found at {root}")
    files = sorted(root.rglob("*.jpg"))[::331][:n]  # spread over the alphabet, the same on every machine
    return [read_image(f) for f in files]


@pytest.mark.parametrize("name", [d for d in DETECTORS if isinstance(d, str)])
def test_lfw_boxes_hold_their_landmarks(name, model_dirs) -> None:
    """On 40 LFW photos every box holds its own 5 points (clipped to the image: faces cut by the border)."""
    det = _detector(name)
    bad = []
    for img in _lfw_singles(model_dirs):
        h, w = img.shape[:2]
        for f in det.detect(img):
            pts = np.clip(f.landmarks, 0, [w, h])
            if not _inside(pts, f.bbox, 0.1):
                bad.append(f.to_dict())
    assert not bad, bad


def test_mediapipe_finds_lfw_faces(model_dirs) -> None:
    """The calibrated score threshold (0.7) keeps LFW's faces: 39 of these 40 centres are found."""
    det = _detector("mediapipe")
    imgs = _lfw_singles(model_dirs)
    centred = sum(any(_inside(np.array([[125.0, 125.0]]), f.bbox, 0) for f in det.detect(i)) for i in imgs)
    assert centred >= 36
    assert det.score_threshold == pytest.approx(0.7)


@pytest.mark.parametrize(("w", "h"), [(250, 250), (750, 500), (1000, 1000), (4000, 3000), (333, 1201)])
def test_tile_grid_holds_every_face_of_a_level_whole(w, h) -> None:
    """Each level's 50 %-overlapping tiles lie in the image, cover it, and hold any box of half a tile."""
    from faceforge.align.detectors.mediapipe import MediaPipeDetector

    det = object.__new__(MediaPipeDetector)  # the grid needs no model file
    det.tiles, det.min_tile, det.min_face_fraction = 3, 160, 1 / 8
    grid = det.tile_grid(w, h)
    assert grid[0] == (0, 0, w, h)
    if max(w, h) / 2 < 160:
        assert grid == [(0, 0, w, h)]  # LFW's 250 x 250: one pass, as mediapipe does
    rng = np.random.default_rng(0)
    for level in range(1, 3):
        side = round(max(w, h) / 2**level)
        tiles = [t for t in grid[1:] if max(t[2] - t[0], t[3] - t[1]) == min(side, max(w, h))]
        if side < 160:
            assert not tiles
            continue
        assert all(0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h for x0, y0, x1, y1 in tiles)
        half = side // 2
        for _ in range(200):  # a random box of half a tile side, anywhere in the image
            bw, bh = min(half, w), min(half, h)
            x, y = int(rng.integers(0, w - bw + 1)), int(rng.integers(0, h - bh + 1))
            assert any(x0 <= x and y0 <= y and x + bw <= x1 and y + bh <= y1 for x0, y0, x1, y1 in tiles)
    assert det.smallest_face(w, h) == pytest.approx(min(max(t[2] - t[0], t[3] - t[1]) for t in grid) / 8)
