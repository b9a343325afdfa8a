"""Tampered faceforge ONNX metadata: every field type- and range-checked with one-line errors (no 2.7 GB
input, no traceback); ``faceforge export`` writes files under the user's umask."""

from __future__ import annotations

import json
import os

import pytest

from faceforge.errors import FaceforgeError

onnx = pytest.importorskip("onnx")


def _model(path, meta: dict[str, str]) -> str:
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, 112, 112])
    y = helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["N", 3])
    nodes = [
        helper.make_node("GlobalAveragePool", ["input"], ["p"]),
        helper.make_node("Flatten", ["p"], ["embedding"]),
    ]
    m = helper.make_model(
        helper.make_graph(nodes, "g", [x], [y]), opset_imports=[helper.make_opsetid("", 17)]
    )
    for k, v in meta.items():
        e = m.metadata_props.add()
        e.key, e.value = k, v
    onnx.save(m, str(path))
    return str(path)


GOOD = {
    "faceforge.format": "faceforge-onnx/1",
    "input_size": "[112, 112]",
    "color": "RGB",
    "mean": "[0.5, 0.5, 0.5]",
    "std": "[0.5, 0.5, 0.5]",
    "template": "arcface",
    "embedding_size": "3",
    "threshold": "0.3",
    "calibration": "{}",
    "face_cfg": json.dumps({"input_size": [112, 112], "embedding_size": 3}),
    "precision": "fp32",
}

BAD = {
    "input_size": ("[30000, 30000]", "input_size"),
    "mean": ("[0.5, 0.5]", "mean"),
    "std": ('"x"', "std"),
    "face_cfg": ("[1, 2]", "face_cfg"),
    "threshold": ("abc", "threshold"),
    "calibration": ("[]", "calibration"),
    "embedding_size": ("1e9", "embedding_size"),
    "color": ("XYZ", "color"),
    "precision": ("fp64", "precision"),
}


def test_good_metadata_reads(tmp_path) -> None:
    from faceforge.export.onnx import read_metadata

    meta = read_metadata(_model(tmp_path / "m.onnx", GOOD))
    assert meta["face_cfg"].input_size == (112, 112) and meta["threshold"] == 0.3


@pytest.mark.parametrize("key", sorted(BAD))
def test_tampered_field_is_a_one_line_error(key, tmp_path, h, no_network) -> None:
    from faceforge.export.onnx import read_metadata
    from faceforge.infer.loading import load_model

    value, match = BAD[key]
    path = _model(tmp_path / "m.onnx", {**GOOD, key: value})
    for load in (lambda: read_metadata(path), lambda: load_model(path)):
        err, rise = h.peak_rss_mib(load)
        assert isinstance(err, FaceforgeError), err
        assert match in h.one_line(err) and "m.onnx" in str(err)
        assert rise < 100
    assert no_network == []


def test_export_follows_the_umask(tmp_path) -> None:
    pytest.importorskip("onnxruntime")
    from faceforge.export.onnx import export_onnx
    from faceforge.models.backbones import create_model

    prev = os.umask(0o022)
    try:
        out = export_onnx(create_model("mobilefacenet", embedding_size=32), tmp_path / "m.onnx")
    finally:
        os.umask(prev)
    assert out.stat().st_mode & 0o777 == 0o644
    assert [p.name for p in tmp_path.iterdir()] == ["m.onnx"]  # no temporary file left
