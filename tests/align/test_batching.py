"""``detect_batch`` on the real detector files of ../shared (identical to one-at-a-time), real YOLOv8-Face /
RTMPose files from ``$FACEFORGE_HOME`` when there, and bench-align's batches, threads and sample sheet.

Everything here skips cleanly without ../shared (or without the user's model files).
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import ClassVar

import cv2
import numpy as np
import pytest
from PIL import Image

from faceforge import hub as store
from faceforge.align import create_detector
from faceforge.errors import FaceforgeError

pytest.importorskip("onnxruntime")

#: detector → whether its shared file takes real batches (YOLO5-Face's output fixes the batch to 1)
BATCHABLE = {"scrfd": True, "retinaface": True, "yolo5face": False, "yunet": False}


@pytest.fixture
def model_dirs(shared_dir, monkeypatch, tmp_path):
    monkeypatch.setenv("FACEFORGE_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("FACEFORGE_MODEL_DIRS", str(shared_dir / "models/detectors"))
    return shared_dir


def _lfw(shared_dir: Path, n: int) -> list[Path]:
    root = shared_dir / "data/lfw/lfw-deepfunneled"
    if not root.is_dir():
        pytest.skip("LFW not in shared/")
    people = sorted(p for p in root.iterdir() if p.is_dir())[::97][:n]
    return [sorted(p.glob("*.jpg"))[0] for p in people]


@pytest.mark.parametrize("name", list(BATCHABLE))
def test_detect_batch_equals_detect_on_real_files(name, model_dirs):
    skimage_data = pytest.importorskip("skimage.data")
    imgs = [cv2.cvtColor(cv2.imread(str(f)), cv2.COLOR_BGR2RGB) for f in _lfw(model_dirs, 10)]
    imgs += [skimage_data.astronaut(), np.zeros((10, 10, 3), np.uint8), imgs[0][:200, :180]]
    det = create_detector(name, device="cpu", **({} if name == "yunet" else {"threads": 1}))
    one = [det.detect(im) for im in imgs]
    many = det.detect_batch(imgs)
    assert getattr(det, "_batchable", False) is BATCHABLE[name]
    assert sum(map(len, one)) >= 11 and many[-2] == []
    for a, b in zip(one, many):
        assert len(a) == len(b)
        for fa, fb in zip(a, b):
            np.testing.assert_allclose(fa.bbox, fb.bbox, atol=1e-3)
            np.testing.assert_allclose(fa.landmarks, fb.landmarks, atol=1e-3)
            assert fa.score == pytest.approx(fb.score, abs=1e-5)


def _user_file(name: str) -> Path:
    """The user's own copy of a store file (their ``$FACEFORGE_HOME``), or skip saying how to get it."""
    try:
        return store.resolve(name, what=name)
    except FaceforgeError as e:
        pytest.skip(f"{name} not in $FACEFORGE_HOME (faceforge models fetch {name}): {e}")


def test_real_yolov8_face_on_the_astronaut():
    f = _user_file("yolov8n-face")
    img = pytest.importorskip("skimage.data").astronaut()
    faces = create_detector("yolov8_face", model_path=f).detect(img)
    assert len(faces) == 1
    np.testing.assert_allclose(faces[0].landmarks[:2], [[203, 103], [245, 104]], atol=8)


def test_real_rtmpose_on_the_astronaut(shared_dir, monkeypatch):
    f = _user_file("rtmpose_face6_m")
    monkeypatch.setenv("FACEFORGE_MODEL_DIRS", str(shared_dir / "models/detectors"))
    img = pytest.importorskip("skimage.data").astronaut()
    det = create_detector("rtmpose", model_path=f)
    (face,) = det.detect(img)
    assert face.landmarks_extra.shape == (106, 2)
    np.testing.assert_allclose(face.landmarks[:2], [[203, 103], [245, 104]], atol=8)
    assert face.landmarks[3, 0] < face.landmarks[4, 0]


def test_store_never_fetches_files_without_a_sha(tmp_path, monkeypatch):
    monkeypatch.setenv("FACEFORGE_HOME", str(tmp_path))
    monkeypatch.delenv("FACEFORGE_MODEL_DIRS", raising=False)
    spec = store.KNOWN_FILES["yolov8n-face"]
    assert not spec.verified and store.find(spec) is None
    with pytest.raises(FaceforgeError, match="no SHA-256 is published") as e:
        store.fetch("yolov8n-face")
    assert "derronqi/yolov8-face" in str(e.value) and "--detector-model" in str(e.value)
    assert not (tmp_path / "models").exists()
    with pytest.raises(FaceforgeError, match="no SHA-256 is published"):
        create_detector("rtmpose")
    # a copy the user put there under the table's name is used as it is
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "yoloface_8n.onnx").write_bytes(b"x")
    assert store.find("yolov8n-face") == tmp_path / "models" / "yoloface_8n.onnx"
    assert not store.matches(tmp_path / "models" / "yoloface_8n.onnx", "yolov8n-face")
    row = {r["name"]: r for r in store.files_status()}["yolov8n-face"]
    assert row["verified"] is False and row["path"]


# ------------------------------------------------------------------------------------------ bench-align


def _mean_colour_recognizer():
    from faceforge.eval.align_bench import Recognizer

    def embed(crops: np.ndarray) -> np.ndarray:
        n = len(crops)
        return crops.reshape(n, 4, 28, 4, 28, 3).astype(np.float32).mean((2, 4)).reshape(n, -1) - 100.0

    return Recognizer("mean-colour", "arcface", (112, 112), embed, {"recognizer": "mean-colour"})


@pytest.fixture
def lfw_pairs(model_dirs, tmp_path) -> tuple[Path, Path]:
    """12 pairs of LFW View-2 fold 1 (6 genuine, 6 impostor) as a CSV, and the image root."""
    lfw = model_dirs / "data/lfw"
    if not (lfw / "pairs.txt").is_file():
        pytest.skip("LFW not in shared/")
    lines = (lfw / "pairs.txt").read_text().splitlines()[1:601]
    root = lfw / "lfw-deepfunneled"

    def img(name: str, k: str) -> str:
        return f"{name}/{name}_{int(k):04d}.jpg"

    rows = []
    for line in lines[:6] + lines[300:306]:
        p = line.split()
        a, b = (img(p[0], p[1]), img(p[0], p[2])) if len(p) == 3 else (img(p[0], p[1]), img(p[2], p[3]))
        rows.append(f"{a},{b},{int(len(p) == 3)}")
    out = tmp_path / "pairs.csv"
    out.write_text("path_a,path_b,label\n" + "\n".join(rows) + "\n")
    return out, root


_SAME = ("images", "detected", "success_rate", "unreadable", "accuracy", "accuracy_std", "auc", "eer")


@pytest.mark.slow  # ~9 s on the shared 2-core machine (imports, two runs of two detectors, plots)
def test_bench_batches_and_threads_give_the_same_numbers(lfw_pairs, tmp_path):
    from faceforge.eval.align_bench import bench_align

    dets = ["yunet", "scrfd"]
    rec = _mean_colour_recognizer()
    pairs, root = lfw_pairs
    a = bench_align(pairs, dets, rec, root=root, out=tmp_path / "a", subprocess=False, warmup=1)
    b = bench_align(
        pairs, dets, rec, root=root, out=tmp_path / "b", subprocess=False, warmup=1, batch_size=16, workers=2,
        device="cpu", save_aligned_to=tmp_path / "crops",
    )  # fmt: skip
    for ra, rb in zip(a, b):
        assert {k: ra[k] for k in _SAME} == {k: rb[k] for k in _SAME}
        assert (ra["batch_size"], rb["batch_size"], rb["device"]) == (1, 16, "cpu") and rb["img_per_s"] > 0
    for name in dets:
        za, zb = np.load(tmp_path / "a/cache" / f"{name}.npz"), np.load(tmp_path / "b/cache" / f"{name}.npz")
        np.testing.assert_allclose(za["landmarks"], zb["landmarks"], atol=1e-3)
        np.testing.assert_allclose(za["embeddings"], zb["embeddings"], atol=1e-3)
        assert len(list((tmp_path / "crops" / name).rglob("*.jpg"))) == a[0]["images"]
    sheet = Image.open(tmp_path / "b/aligned_samples.png")
    assert sheet.size == (170 + 8 * (112 + 4), 22 + len(dets) * (112 + 4))  # one row per detector
    meta = json.loads((tmp_path / "b/results.json").read_text())["meta"]
    assert (meta["batch_size"], meta["workers"], meta["device"]) == (16, 2, "cpu")


@pytest.mark.slow  # ~9 s: three CLI runs (two detectors, then RTMPose on SCRFD boxes)
def test_cli_batch_options_print_img_per_s(lfw_pairs, tmp_path, capsys, monkeypatch):
    from faceforge.cli import bench_align_cmd
    from faceforge.cli.main import main
    from faceforge.eval import align_bench

    monkeypatch.setattr(bench_align_cmd, "_recognizer", lambda args: _mean_colour_recognizer())
    monkeypatch.setattr(align_bench, "_in_subprocess", lambda fn, *a: fn(*a))  # seconds, not a spawn each
    out = tmp_path / "bench"
    pairs, root = lfw_pairs
    base = ["bench-align", "--pairs", str(pairs), "--root", str(root), "--detectors", "yunet,yolo5face"]
    base += ["--no-native", "--quiet"]
    assert main([*base, "--out", str(out), "--batch-size", "16", "--workers", "2", "--device", "cpu"]) == 0
    printed = capsys.readouterr().out
    assert "yunet: " in printed and "img/s (detection only, 1 thread, batch 16, device cpu)" in printed
    assert main([*base, "--out", str(tmp_path / "one")]) == 0
    capsys.readouterr()
    rows = [list(csv.DictReader(open(d / "results.csv"))) for d in (out, tmp_path / "one")]
    for ra, rb in zip(*rows):
        assert {k: ra[k] for k in _SAME} == {k: rb[k] for k in _SAME}
    assert Image.open(out / "aligned_samples.png").size[1] == 22 + 2 * (112 + 4)
    # RTMPose through the CLI: a hand-made file (a face's 106 points at fixed crop positions) on SCRFD's boxes
    rtm = _rtmpose_const_file(tmp_path / "rtmpose-test.onnx")
    args = [
        "--out",
        str(tmp_path / "rtm"),
        "--detector-model",
        f"rtmpose={rtm}",
        "--rtmpose-box-detector",
        "scrfd",
    ]
    assert main([*base[:6], "rtmpose", *base[7:], *args]) == 0
    (row,) = json.loads((tmp_path / "rtm/results.json").read_text())["rows"]
    assert row["detector"] == "rtmpose" and row["success_rate"] == 1.0
    capsys.readouterr()
    assert main([*base, "--out", str(out), "--detector-model", "yolov8_face"]) == 2
    assert "expected NAME=FILE" in capsys.readouterr().err
    assert main([*base, "--out", str(out), "--rtmpose-box-detector", "rtmpose"]) == 2
    assert "expected a face detector" in capsys.readouterr().err


def _rtmpose_const_file(path: Path) -> Path:
    """An RTMPose-layout file whose 106 points sit where a face's would in a 256×256 crop."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("_onnx_graphs", Path(__file__).with_name("_onnx_graphs.py"))
    graphs = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(graphs)  # type: ignore[union-attr]
    pts = np.tile([128.0, 140.0], (106, 1))
    pts[66:74], pts[75:83] = [95, 110], [161, 110]  # eye contours (collapsed onto the centres)
    pts[54], pts[84], pts[90] = [128, 145], [103, 175], [153, 175]
    t = np.arange(512, dtype=np.float32)

    def peaks(v: np.ndarray) -> np.ndarray:
        return np.exp(-((t[None] - 2 * v[:, None]) ** 2) / 4.5)[None].astype(np.float32)

    return graphs.const_graph(
        path,
        ["N", 3, 256, 256],
        {"simcc_x": peaks(pts[:, 0]), "simcc_y": peaks(pts[:, 1])},
        input_name="input",
    )


# ------------------------------------------------------------------------------------------ fast parts


def test_sample_sheet_and_sample_identities(tmp_path):
    from faceforge.eval.align_bench import sample_indices, write_sample_sheet

    paths = [f"/d/{who}/{who}_{k}.jpg" for who in "ABCDEFGHIJ" for k in (1, 2)]
    assert sample_indices(paths) == [0, 2, 4, 6, 8, 10, 12, 14]
    assert sample_indices(paths[:6]) == [0, 2, 4, 1, 3, 5]  # 3 identities, then their 2nd images
    crops = np.full((8, 40, 30, 3), 200, np.uint8)
    p = write_sample_sheet(
        [("yunet", crops), ("scrfd", crops), ("rtmpose", crops)], list("ABCDEFGH"), tmp_path / "s.png"
    )
    assert Image.open(p).size == (170 + 8 * 34, 22 + 3 * 44)


def test_prefetch_keeps_order_and_reports_bad_files(tmp_path):
    from faceforge.eval.align_bench import _prefetch

    files = []
    for k in range(11):
        f = tmp_path / f"{k}.png"
        Image.fromarray(np.full((20, 20 + k, 3), k, np.uint8)).save(f)
        files.append(str(f))
    (tmp_path / "bad.jpg").write_text("not an image")
    files.insert(5, str(tmp_path / "bad.jpg"))
    for workers in (0, 1, 3):
        got = list(_prefetch(files, workers))
        assert isinstance(got[5], FaceforgeError)
        assert [g.shape[1] for g in got if not isinstance(g, FaceforgeError)] == [20 + k for k in range(11)]


def test_detect_worker_batches_equal_single(tmp_path, monkeypatch):
    """The bench's detection loop: batch 1 vs batch 4 with 2 reader threads, bad files included."""
    from faceforge.align.detectors.base import DETECTORS, Detector, Face
    from faceforge.eval.align_bench import _detect_worker

    class Brightest(Detector):
        name = "brightest"
        calls: ClassVar[list[int]] = []

        def _detect(self, rgb):
            y, x = np.unravel_index(int(rgb[:, :, 0].argmax()), rgb.shape[:2])
            if rgb.max() == 0:
                return []
            lm = np.array(
                [[x - 5, y - 5], [x + 5, y - 5], [x, y], [x - 4, y + 5], [x + 4, y + 5]], np.float32
            )
            return [Face(bbox=np.array([x - 10, y - 10, x + 10, y + 10]), score=0.9, landmarks=lm)]

        def detect_batch(self, images):
            Brightest.calls.append(len(images))
            return super().detect_batch(images)

    monkeypatch.setitem(DETECTORS._factories, "brightest", lambda model_path=None: Brightest())
    files = []
    for k in range(9):
        img = np.zeros((60, 80, 3), np.uint8)
        if k != 4:
            img[10 + k * 4, 20 + k * 5] = 255
        f = tmp_path / f"{k}.png"
        Image.fromarray(img).save(f)
        files.append(str(f))
    files.append(str(tmp_path / "missing.jpg"))
    one = _detect_worker("brightest", {}, files, "center", 1)
    many = _detect_worker("brightest", {}, files, "center", 1, batch_size=4, workers=2)
    assert Brightest.calls == [4, 4, 4, 1]  # warm-up batch, then 3 timed batches (9 readable images)
    for key in ("landmarks", "found", "readable", "n_faces", "sizes"):
        np.testing.assert_array_equal(one[key], many[key])
    assert one["outcomes"] == many["outcomes"] and set(one["outcomes"]) == {4, 9}
    assert np.isfinite(many["times"][:9]).all() and many["times"][0] == many["times"][1]
