"""Decoders of YOLOv8-Face, RTMPose and SCRFD on hand-made ONNX graphs in each model's exact layout.

No real weights: the graphs emit known boxes, scores, keypoints and SimCC peaks (or compute them from
the crop they are fed), so letterbox / affine inverses, NMS, layouts and batching are checked to
0.5 px. Also: the CPU fallback of ``device="cuda"`` (one log line), device validation, file hints.
"""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path

import numpy as np
import pytest

from faceforge.align import Face, create_detector
from faceforge.align.detectors import base
from faceforge.align.detectors.base import DETECTORS, Detector
from faceforge.errors import FaceforgeError

pytest.importorskip("onnxruntime")
_spec = importlib.util.spec_from_file_location("_onnx_graphs", Path(__file__).with_name("_onnx_graphs.py"))
G = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(G)  # type: ignore[union-attr]

# ------------------------------------------------------------------------------------------ YOLOv8-Face

SIZE = 320  # input side of the test graphs (A = 40² + 20² + 10² rows)
A = (SIZE // 8) ** 2 + (SIZE // 16) ** 2 + (SIZE // 32) ** 2
# A 400x300 image letterboxed into 320x320: r = 0.8, 320x240 placed at top = 40 (centred), left = 0.
R, LEFT, TOP = 0.8, 0, 40

# faces in image pixels: box x1, y1, x2, y2; score; 5 keypoints
FACES = [
    ((100.0, 60.0, 180.0, 160.0), 0.9, [(120, 95), (160, 95), (140, 120), (125, 140), (155, 140)]),
    ((104.0, 62.0, 184.0, 162.0), 0.8, [(124, 97), (164, 97), (144, 122), (129, 142), (159, 142)]),  # dup
    ((250.0, 120.0, 330.0, 220.0), 0.7, [(270, 150), (310, 150), (290, 175), (275, 195), (305, 195)]),
    ((20.0, 20.0, 60.0, 70.0), 0.3, [(30, 35), (50, 35), (40, 45), (32, 55), (48, 55)]),  # below 0.5
]
KEPT = [0, 2]


def _yolov8_rows(channels: int = 20) -> np.ndarray:
    """``[1, C, A]``: the FACES mapped into the letterboxed canvas, at scattered anchor rows."""
    out = np.zeros((1, channels, A), np.float32)
    for j, (box, score, kps) in zip((17, 901, 1500, 2050), FACES):
        x1, y1, x2, y2 = (np.array(box) * R + [LEFT, TOP, LEFT, TOP]).tolist()
        out[0, :5, j] = [(x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1, score]
        pts = np.array(kps, np.float32) * R + [LEFT, TOP]
        if channels == 20:
            out[0, 5:, j] = np.concatenate([pts, np.full((5, 1), 0.9)], axis=1).reshape(-1)
        else:
            out[0, 5:, j] = pts.reshape(-1)
    return out


def _check_faces(faces: list[Face]) -> None:
    assert [round(f.score, 3) for f in faces] == [FACES[i][1] for i in KEPT]
    for f, i in zip(faces, KEPT):
        np.testing.assert_allclose(f.bbox, FACES[i][0], atol=0.5)
        np.testing.assert_allclose(f.landmarks, FACES[i][2], atol=0.5)


def _image(seed: int = 0, w: int = 400, h: int = 300) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 255, (h, w, 3), dtype=np.uint8)


@pytest.mark.parametrize("layout", ["channels_first", "anchors_first", "no_visibility"])
def test_yolov8_decode_letterbox_and_nms(tmp_path, layout):
    rows = _yolov8_rows(15 if layout == "no_visibility" else 20)
    if layout == "anchors_first":
        rows = rows.transpose(0, 2, 1).copy()
    f = G.const_graph(tmp_path / "yolov8n-face.onnx", [1, 3, SIZE, SIZE], {"output0": rows})
    det = create_detector("yolov8_face", model_path=f, device="cpu")
    assert det.input_size == (SIZE, SIZE) and not det._batchable  # a default export: batch fixed to 1
    _check_faces(det.detect(_image()))
    # one output per image in a batch call too (the loop path)
    for faces in det.detect_batch([_image(1), _image(2)]):
        _check_faces(faces)


def test_yolov8_letterbox_is_ultralytics():
    from faceforge.align.detectors.yolov8face import letterbox_centred

    canvas, r, (left, top) = letterbox_centred(np.full((300, 400, 3), 7, np.uint8), (SIZE, SIZE))
    assert (r, left, top) == (R, LEFT, TOP)
    assert canvas[TOP, 0, 0] == 7 and canvas[TOP - 1, 0, 0] == 114 and canvas[TOP + 240, 0, 0] == 114
    _, r, (left, top) = letterbox_centred(np.zeros((101, 50, 3), np.uint8), (64, 64))
    assert top == 0 and left == round((64 - round(50 * r)) / 2 - 0.1)


def test_yolov8_dynamic_batch_equals_one_at_a_time(tmp_path):
    shift = np.zeros((1, 20, A), np.float32)
    shift[0, 0] = 40.0  # box centre x moves with the image's mean (0..1): every image decodes differently
    shift[0, 5::3] = 40.0  # and so do the keypoints' x
    f = G.const_graph(
        tmp_path / "dyn.onnx", ["N", 3, SIZE, SIZE], {"output0": _yolov8_rows()}, shift={"output0": shift}
    )
    det = create_detector("yolov8_face", model_path=f, device="cpu")
    assert det._batchable
    imgs = [
        _image(3),
        np.full((300, 400, 3), 250, np.uint8),
        np.zeros((240, 200, 3), np.uint8),
        _image(4, 640),
    ]
    one = [det.detect(im) for im in imgs]
    assert len({round(float(fs[0].bbox[0]), 3) for fs in one}) == len(imgs)  # the shift is per image
    many = det.detect_batch(imgs)
    assert det._batchable  # it really ran as a batch
    for a, b in zip(one, many):
        assert len(a) == len(b) == 2
        for fa, fb in zip(a, b):
            np.testing.assert_allclose(fa.bbox, fb.bbox, atol=1e-4)
            np.testing.assert_allclose(fa.landmarks, fb.landmarks, atol=1e-4)
            assert fa.score == pytest.approx(fb.score)


def test_yolov8_rejects_other_layouts(tmp_path):
    f = G.const_graph(tmp_path / "bad.onnx", [1, 3, SIZE, SIZE], {"out": np.zeros((1, 7, A), np.float32)})
    with pytest.raises(FaceforgeError, match="20 \\(or 15\\) channels"):
        create_detector("yolov8_face", model_path=f, device="cpu")


def test_model_file_names_pick_the_backend(tmp_path):
    from faceforge.align.choose import detector_for_file, resolve_detector

    assert detector_for_file("x/yolov8n-face.onnx") == "yolov8_face"
    assert detector_for_file("yoloface_8n.onnx") == "yolov8_face"
    assert detector_for_file("rtmpose-m_simcc-face6_256x256.onnx") == "rtmpose"
    assert detector_for_file("det_10g.onnx") == "scrfd"
    assert detector_for_file("yolo5face_500m_320x320.onnx") == "yolo5face"
    f = G.const_graph(tmp_path / "yolov8n-face.onnx", [1, 3, SIZE, SIZE], {"output0": _yolov8_rows()})
    det, name = resolve_detector(str(f))
    assert name == "yolov8_face"
    _check_faces(det.detect(_image()))


# ------------------------------------------------------------------------------------------ RTMPose


class FixedBoxes(Detector):
    """A stand-in box detector: the same boxes in every image (scores 0.9, 0.8, ...)."""

    name = "fixed"

    def __init__(self, boxes: list[tuple[float, float, float, float]]) -> None:
        super().__init__(0.5, 0.4)
        self.boxes = boxes
        self.batch_calls = 0

    def _detect(self, rgb: np.ndarray) -> list[Face]:
        return [
            Face(bbox=np.array(b, np.float32), score=0.9 - 0.1 * k, landmarks=np.zeros((5, 2)))
            for k, b in enumerate(self.boxes)
        ]

    def detect_batch(self, images):
        self.batch_calls += 1
        return super().detect_batch(images)


class BrightestSpot(Detector):
    """A stand-in box detector: an 80×100 box centred on the image's brightest pixel."""

    name = "spot"

    def __init__(self) -> None:
        super().__init__(0.5, 0.4)

    def _detect(self, rgb: np.ndarray) -> list[Face]:
        y, x = np.unravel_index(int(rgb[:, :, 0].argmax()), rgb.shape[:2])
        box = np.array([x - 37, y - 53, x + 43, y + 47], np.float32)  # off-centre on purpose
        return [Face(bbox=box, score=0.95, landmarks=np.zeros((5, 2)))]


def _simcc(bins: np.ndarray, length: int) -> np.ndarray:
    """``[K, length]`` vectors with a Gaussian peak (σ 1.5 bins) at each of ``bins``."""
    t = np.arange(length, dtype=np.float32)
    return np.exp(-((t[None, :] - bins[:, None]) ** 2) / (2 * 1.5**2)).astype(np.float32)


@pytest.mark.parametrize(("layout", "k"), [("lapa106", 106), ("wflw98", 98), ("ibug68", 68)])
def test_rtmpose_simcc_decode_affine_inverse_and_layout(tmp_path, layout, k):
    from faceforge.align.detectors.rtmpose import LAYOUTS

    box = (100.0, 80.0, 200.0, 220.0)  # 100 x 140: × 1.25 = 125 x 175, square input → 175 x 175
    centre, side = np.array([150.0, 150.0]), 175.0
    rng = np.random.default_rng(k)
    gt = rng.uniform([110, 90], [190, 210], size=(k, 2))
    # image → crop, written out here (not the detector's code): u = (x − (c − side/2)) · 256 / side
    u = (gt - (centre - side / 2)) * 256 / side
    bins = np.rint(u * 2)  # SimCC split ratio 2: half-pixel bins
    f = G.const_graph(
        tmp_path / "rtm.onnx",
        [1, 3, 256, 256],
        {"simcc_x": _simcc(bins[:, 0], 512)[None], "simcc_y": _simcc(bins[:, 1], 512)[None]},
        input_name="input",
    )
    det = create_detector("rtmpose", model_path=f, box_detector=FixedBoxes([box]), device="cpu")
    assert det._layout.name == layout
    (face,) = det.detect(_image(0))
    np.testing.assert_allclose(face.landmarks_extra, gt, atol=0.5)
    np.testing.assert_allclose(face.landmarks, LAYOUTS[layout].five_points(gt), atol=0.5)
    np.testing.assert_allclose(face.bbox, box) and face.score == pytest.approx(0.9)
    with pytest.raises(FaceforgeError, match="keypoints, but layout"):
        create_detector(
            "rtmpose", model_path=f, box_detector=FixedBoxes([box]), layout="wflw98" if k != 98 else "ibug68"
        )


def test_rtmpose_five_points_are_eye_centres_nose_mouth_corners():
    from faceforge.align.detectors.rtmpose import LAYOUTS

    pts = np.zeros((106, 2))
    pts[66:74] = [[10 + i, 20 + (i % 2)] for i in range(8)]  # image-left eye contour, centre (13.5, 20.5)
    pts[75:83] = [[40 + i, 20 + (i % 2)] for i in range(8)]
    pts[54], pts[84], pts[90] = (27, 40), (15, 55), (42, 56)
    np.testing.assert_allclose(
        LAYOUTS["lapa106"].five_points(pts), [[13.5, 20.5], [43.5, 20.5], [27, 40], [15, 55], [42, 56]]
    )


def _dot_image(x: int, y: int, w: int = 400, h: int = 300) -> np.ndarray:
    yy, xx = np.mgrid[:h, :w]
    v = 255 * np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * 2.0**2))
    return np.repeat(np.rint(v).astype(np.uint8)[:, :, None], 3, axis=2)


@pytest.mark.parametrize(
    ("dot", "box"),
    [
        ((137, 171), (100.0, 120.0, 180.0, 220.0)),  # tall box: the width grows to the square input
        ((210, 140), (120.0, 110.0, 300.0, 170.0)),  # wide box: the height grows
        ((12, 20), (-30.0, -20.0, 60.0, 70.0)),  # crop hangs over the image corner (black border)
    ],
)
def test_rtmpose_crop_roundtrip_finds_a_dot(tmp_path, dot, box):
    """The graph's SimCC peaks are where the crop it is fed is brightest: a dot must come back in place."""
    f = G.simcc_from_crop_graph(tmp_path / "dot.onnx")
    det = create_detector("rtmpose", model_path=f, box_detector=FixedBoxes([box]), device="cpu")
    (face,) = det.detect(_dot_image(*dot))
    np.testing.assert_allclose(face.landmarks_extra, np.tile(dot, (106, 1)), atol=0.5)
    np.testing.assert_allclose(face.landmarks, np.tile(dot, (5, 1)), atol=0.5)


def test_rtmpose_batch_equals_one_at_a_time(tmp_path):
    f = G.simcc_from_crop_graph(tmp_path / "dot.onnx")
    det = create_detector("rtmpose", model_path=f, box_detector=BrightestSpot(), device="cpu")
    assert det._batchable
    dots = [(137, 171), (60, 90), (333, 222), (200, 40)]
    imgs = [_dot_image(*d) for d in dots]
    one = [det.detect(im) for im in imgs]
    many = det.detect_batch(imgs)
    assert det._batchable
    for d, a, b in zip(dots, one, many):
        assert len(a) == len(b) == 1
        np.testing.assert_allclose(a[0].landmarks_extra, b[0].landmarks_extra)
        np.testing.assert_allclose(a[0].landmarks, np.tile(d, (5, 1)), atol=0.5)


def test_rtmpose_options_are_checked(tmp_path):
    f = G.simcc_from_crop_graph(tmp_path / "dot.onnx", k=106)
    with pytest.raises(FaceforgeError, match="box_detector='rtmpose'"):
        create_detector("rtmpose", model_path=f, box_detector="rtmpose")
    with pytest.raises(FaceforgeError, match="padding"):
        create_detector("rtmpose", model_path=f, box_detector=FixedBoxes([]), padding=0)
    with pytest.raises(FaceforgeError, match="layout='x'"):
        create_detector("rtmpose", model_path=f, box_detector=FixedBoxes([]), layout="x")
    g = G.simcc_from_crop_graph(tmp_path / "k5.onnx", k=5)
    with pytest.raises(FaceforgeError, match="5 keypoints; known face layouts"):
        create_detector("rtmpose", model_path=g, box_detector=FixedBoxes([]))
    det = create_detector("rtmpose", model_path=f, box_detector=FixedBoxes([]))
    assert det.detect(_image()) == [] and det.detect_batch([_image(), _image(1)]) == [[], []]


# ------------------------------------------------------------------------------------------ SCRFD


def test_scrfd_unnamed_outputs_without_batch_axis(tmp_path):
    """insightface model-zoo exports (det_10g.onnx): outputs in order, ``[anchors, C]`` without batch."""
    side = 64
    n = {s: (side // s) ** 2 * 2 for s in (8, 16, 32)}
    outs = {}
    for kind, c in (("score", 1), ("bbox", 4), ("kps", 10)):
        for s in (8, 16, 32):
            outs[f"{kind}{s}_{len(outs)}"] = np.zeros((n[s], c), np.float32)
    names = list(outs)
    # stride 8, cell (x 3, y 2) = anchor 2·(2·8 + 3) = 38 (and its twin 39): centre (24, 16) in the canvas
    sc, bb, kp = outs[names[0]], outs[names[3]], outs[names[6]]
    sc[38], bb[38] = 0.9, [1.5, 1.0, 2.0, 2.5]  # distances in stride units → canvas box (12, 8, 40, 36)
    kp[38] = np.array([[-1, -0.5], [1, -0.5], [0, 0.25], [-0.75, 1], [0.75, 1]]).reshape(-1)
    sc[39], bb[39] = 0.6, [1.6, 1.0, 2.0, 2.5]  # nearly the same box, lower score: NMS drops it
    f = G.const_graph(
        tmp_path / "det_10g.onnx", [1, 3, side, side], outs, batched=False, input_name="input.1"
    )
    det = create_detector("scrfd", model_path=f, device="cpu")
    assert det._flat and not det._batchable
    img = _image(0, 128, 96)  # letterboxed to 64x64 at scale 0.5 (top-left): image = canvas / 0.5
    (face,) = det.detect(img)
    np.testing.assert_allclose(face.bbox, [24, 16, 80, 72], atol=0.5)
    kps_canvas = np.array([24, 16]) + kp[38].reshape(5, 2) * 8
    np.testing.assert_allclose(face.landmarks, kps_canvas / 0.5, atol=0.5)
    assert face.score == pytest.approx(0.9)
    assert [len(x) for x in det.detect_batch([img, img])] == [1, 1]


# ------------------------------------------------------------------------------------------ devices


@pytest.fixture
def fresh_cpu_notes(monkeypatch, caplog):
    monkeypatch.setattr(base, "_SAID_CPU", set())
    caplog.set_level(logging.INFO, logger="faceforge.align.detectors")
    return caplog


def _cpu_lines(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if "running on the CPU" in r.getMessage()]


def test_cuda_without_cuda_logs_one_line_and_runs_on_cpu(tmp_path, fresh_cpu_notes):
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this onnxruntime has CUDA: the fallback is not what runs here")
    f = G.const_graph(tmp_path / "yolov8n-face.onnx", [1, 3, SIZE, SIZE], {"output0": _yolov8_rows()})
    dets = [create_detector("yolov8_face", model_path=f, device="cuda") for _ in range(2)]
    lines = _cpu_lines(fresh_cpu_notes)
    assert len(lines) == 1 and "yolov8_face: device=cuda" in lines[0], lines
    assert all(r.levelno == logging.WARNING for r in fresh_cpu_notes.records if "CPU" in r.getMessage())
    for det in dets:
        assert det.providers == ["CPUExecutionProvider"]
        _check_faces(det.detect(_image()))
    cpu = create_detector("yolov8_face", model_path=f, device="cpu")
    assert cpu.providers == ["CPUExecutionProvider"] and len(_cpu_lines(fresh_cpu_notes)) == 1


def test_yunet_cuda_fallback(shared_dir, fresh_cpu_notes):
    from faceforge.align.detectors.yunet import opencv_cuda_available

    f = shared_dir / "models/detectors/yunet_s_320_320.onnx"
    if not f.is_file():
        pytest.skip(f"{f} not in shared/")
    if opencv_cuda_available():
        pytest.skip("this OpenCV has CUDA")
    det = create_detector("yunet", model_path=f, device="cuda")
    create_detector("yunet", model_path=f, device="cuda")
    assert len(_cpu_lines(fresh_cpu_notes)) == 1 and not det._on_cuda
    assert det.detect(np.zeros((64, 64, 3), np.uint8)) == []


def test_device_is_validated_and_cpu_only_backends_say_so(tmp_path, fresh_cpu_notes, monkeypatch):
    f = G.const_graph(tmp_path / "yolov8n-face.onnx", [1, 3, SIZE, SIZE], {"output0": _yolov8_rows()})
    with pytest.raises(FaceforgeError, match="device='gpu'"):
        create_detector("yolov8_face", model_path=f, device="gpu")

    class CpuOnly(FixedBoxes):
        name = "cpu_only"

    monkeypatch.setitem(DETECTORS._factories, "cpu_only", lambda model_path=None: CpuOnly([]))
    det = base.create_detector_loose("cpu_only", None, {"threads": 1, "device": "cuda"})
    assert isinstance(det, CpuOnly)
    assert _cpu_lines(fresh_cpu_notes) == [
        "cpu_only: device=cuda but this backend runs on the CPU only; running on the CPU"
    ]
