"""ONNX export on a disk that cannot take the file: one line naming the output, no temporary file left
behind (int8 quantisation writes beside its input and used to leave a copy when it failed)."""

from __future__ import annotations

import errno
import shutil
from pathlib import Path

import pytest
import torch

import faceforge
from faceforge.errors import FaceforgeError
from faceforge.export import onnx as export


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, 2), torch.nn.Flatten(), torch.nn.LazyLinear(8)).eval()


def _export(path, precision: str = "fp32"):
    m = _model()
    m(torch.zeros(1, 3, 112, 112))  # materialise the lazy layer
    return export.export_onnx(m, path, face_cfg=faceforge.FaceConfig(), precision=precision)


def test_int8_refused_up_front_when_its_temporary_copies_do_not_fit(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(export, "free_bytes", lambda folder: 1000)
    with pytest.raises(OSError) as e:
        _export(tmp_path / "m.onnx", "int8")
    assert e.value.errno == errno.ENOSPC and e.value.filename == str(tmp_path / "m.onnx")
    assert "int8 quantisation: it needs about" in e.value.strerror and "0.0 MB free" in e.value.strerror
    assert list(tmp_path.iterdir()) == []


def test_failed_quantisation_leaves_nothing_behind(tmp_path, monkeypatch) -> None:
    import onnxruntime.quantization as q

    def half_done(src, dst, **kw) -> None:  # what onnxruntime does before failing: a copy beside src
        shutil.copy(src, Path(src).with_name(Path(src).stem + "-inferred.onnx"))
        raise ValueError("unsupported operator")

    monkeypatch.setattr(q, "quantize_dynamic", half_done)
    with pytest.raises(FaceforgeError, match="int8 quantisation failed: ValueError: unsupported operator"):
        _export(tmp_path / "m.onnx", "int8")
    assert list(tmp_path.iterdir()) == []
    _export(tmp_path / "m.onnx", "fp32")  # the other precisions do not go through it
    assert [p.name for p in tmp_path.iterdir()] == ["m.onnx"]


def test_a_write_that_fails_names_the_output(tmp_path, monkeypatch) -> None:
    def full(path) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(export, "fsync_file", full)
    with pytest.raises(OSError) as e:
        _export(tmp_path / "m.onnx")
    assert (e.value.errno, e.value.filename) == (errno.ENOSPC, str(tmp_path / "m.onnx"))
    assert list(tmp_path.iterdir()) == []
