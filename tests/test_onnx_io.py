"""``faceforge.onnx_io``: the one ONNX Runtime session factory the detectors and the ONNX export share."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from faceforge import onnx_io
from faceforge.errors import FaceforgeError

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

_spec = importlib.util.spec_from_file_location(
    "_onnx_graphs", Path(__file__).parent / "align" / "_onnx_graphs.py"
)
G = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(G)  # type: ignore[union-attr]

SIZE = 320
ANCHORS = (SIZE // 8) ** 2 + (SIZE // 16) ** 2 + (SIZE // 32) ** 2


@pytest.fixture
def calls(monkeypatch) -> list[tuple[str, dict]]:
    """Spy on ``create_session`` where each caller looks it up; every call still builds a real session."""
    from faceforge.align.detectors import base
    from faceforge.export import onnx as export_onnx

    seen: list[tuple[str, dict]] = []
    real = onnx_io.create_session

    def spy(path, **kw):
        seen.append((str(path), kw))
        return real(path, **kw)

    monkeypatch.setattr(base, "create_session", spy)
    monkeypatch.setattr(export_onnx, "create_session", spy)
    return seen


def test_detector_session_goes_through_create_session(tmp_path, calls) -> None:
    from faceforge.align import create_detector

    f = G.const_graph(
        tmp_path / "yolov8n-face.onnx",
        [1, 3, SIZE, SIZE],
        {"output0": np.zeros((1, 20, ANCHORS), np.float32)},
    )
    det = create_detector("yolov8_face", model_path=f, device="cpu", threads=1)
    assert det.session is not None
    assert [(p, kw["device"], kw["threads"]) for p, kw in calls] == [(str(f), "cpu", 1)]
    assert calls[0][1]["what"] == "yolov8_face model"


def test_export_session_goes_through_create_session(tmp_path, calls) -> None:
    from faceforge.export.onnx import onnx_session

    f = G.const_graph(tmp_path / "m.onnx", ["N", 3, 112, 112], {"embedding": np.ones((1, 8), np.float32)})
    sess = onnx_session(f, threads=2)
    assert sess.get_providers() == ["CPUExecutionProvider"]
    assert calls == [(str(f), {"device": "cpu", "threads": 2, "inter_op_threads": 1})]


def test_broken_file_is_one_line_naming_the_path(tmp_path) -> None:
    bad = tmp_path / "broken.onnx"
    bad.write_bytes(b"\x08\x07 this is not a protobuf \xff\xfe" * 8)
    with pytest.raises(FaceforgeError) as info:
        onnx_io.create_session(bad)
    msg = str(info.value)
    assert "\n" not in msg and str(bad) in msg and msg.startswith("cannot load ONNX model")


def test_unknown_device_and_metadata_props(tmp_path) -> None:
    import onnx

    with pytest.raises(FaceforgeError, match="device='tpu'"):
        onnx_io.create_session(tmp_path / "x.onnx", device="tpu")
    f = G.const_graph(tmp_path / "m.onnx", [1, 3, 4, 4], {"y": np.zeros((1, 2), np.float32)})
    proto = onnx.load(str(f))
    onnx.helper.set_model_props(proto, {"a": "1", "b": "{}"})
    assert onnx_io.metadata_props(proto) == {"a": "1", "b": "{}"}
