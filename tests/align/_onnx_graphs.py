"""Tiny ONNX graphs (``onnx.helper``) that emit hand-made outputs in a detector's exact layout.

The decoders are tested without real weights: a graph either returns constants (expanded to the
input's batch, optionally shifted per image by the image's mean so batched runs are told apart) or
computes its output from the input it is fed (RTMPose's SimCC vectors as the column / row maxima of
the crop, so the affine crop itself is checked).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

OPSET = 13


def _const(name: str, value: np.ndarray) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(value), name)


def _save(path: Path, nodes: list, inputs: list, outputs: list, inits: list) -> Path:
    graph = helper.make_graph(nodes, "test", inputs, outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def const_graph(
    path: Path,
    input_shape: list,
    outputs: dict[str, np.ndarray],
    *,
    input_name: str = "images",
    batched: bool = True,
    shift: dict[str, np.ndarray] | None = None,
) -> Path:
    """Outputs = the given constants ``[1, ...]``; with ``batched`` expanded to the input's batch N.

    ``shift[name]`` (same shape as the constant) adds ``mean(image_n) × shift`` to image n's output.
    ``input_shape`` entries that are strings are symbolic dimensions. Without ``batched`` the
    constants are returned as they are (e.g. insightface's SCRFD outputs without a batch axis).
    """
    nodes, inits, outs = [], [], []
    x = helper.make_tensor_value_info(input_name, TensorProto.FLOAT, input_shape)
    if batched:
        inits += [_const("zero", np.array([0], np.int64)), _const("one", np.array([1], np.int64))]
        nodes += [
            helper.make_node("Shape", [input_name], ["shp"]),
            helper.make_node("Slice", ["shp", "zero", "one"], ["n"]),
        ]
    if shift:
        inits.append(_const("minus_one_11", np.array([-1, 1, 1], np.int64)))
        nodes += [
            helper.make_node("ReduceMean", [input_name], ["m4"], axes=[1, 2, 3], keepdims=1),
            helper.make_node("Reshape", ["m4", "minus_one_11"], ["m3"]),
        ]
    for name, value in outputs.items():
        value = np.asarray(value, np.float32)
        inits.append(_const(f"{name}_c", value))
        src = f"{name}_c"
        if batched:
            inits.append(_const(f"{name}_rest", np.array(value.shape[1:], np.int64)))
            nodes += [
                helper.make_node("Concat", ["n", f"{name}_rest"], [f"{name}_shape"], axis=0),
                helper.make_node("Expand", [src, f"{name}_shape"], [f"{name}_e"]),
            ]
            src = f"{name}_e"
        if shift and name in shift:
            inits.append(_const(f"{name}_d", np.asarray(shift[name], np.float32)))
            nodes += [
                helper.make_node("Mul", ["m3", f"{name}_d"], [f"{name}_md"]),
                helper.make_node("Add", [src, f"{name}_md"], [name]),
            ]
        else:
            nodes.append(helper.make_node("Identity", [src], [name]))
        dims = ["N", *value.shape[1:]] if batched else list(value.shape)
        outs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, dims))
    return _save(path, nodes, [x], outs, inits)


def simcc_from_crop_graph(path: Path, size: int = 256, k: int = 106, batch: str | int = "N") -> Path:
    """RTMPose-shaped graph whose SimCC vectors are the crop's column / row maxima (channel 0).

    ``simcc_x[n, j]`` = max over rows of crop column ``j // 2`` (nearest-neighbour ×2 upsampling,
    split ratio 2), the same for every one of the ``k`` keypoints; likewise ``simcc_y``. A bright
    dot in the image therefore decodes to the dot's position if the crop and its inverse are right.
    """
    nodes, inits = [], []
    inits += [
        _const("c0", np.array([0], np.int64)),
        _const("c1", np.array([1], np.int64)),
        _const("axis1", np.array([1], np.int64)),
        _const("flat", np.array([0, 1, -1], np.int64)),
        _const("kshape", np.array([1, k, 1], np.int64)),
    ]
    for axis, name in ((2, "simcc_x"), (3, "simcc_y")):
        p = name
        nodes += [
            helper.make_node("ReduceMax", ["input"], [f"{p}_r"], axes=[axis], keepdims=0),  # [N, 3, L]
            helper.make_node("Slice", [f"{p}_r", "c0", "c1", "axis1"], [f"{p}_c"]),  # [N, 1, L]
            helper.make_node("Unsqueeze", [f"{p}_c", "minus1"], [f"{p}_u"]),  # [N, 1, L, 1]
            helper.make_node("Concat", [f"{p}_u", f"{p}_u"], [f"{p}_2"], axis=-1),  # [N, 1, L, 2]
            helper.make_node("Reshape", [f"{p}_2", "flat"], [f"{p}_f"]),  # [N, 1, 2L]
            helper.make_node("Expand", [f"{p}_f", "kshape"], [p]),  # [N, k, 2L]
        ]
    inits.append(_const("minus1", np.array([-1], np.int64)))
    x = helper.make_tensor_value_info("input", TensorProto.FLOAT, [batch, 3, size, size])
    outs = [
        helper.make_tensor_value_info(n, TensorProto.FLOAT, [batch, k, 2 * size])
        for n in ("simcc_x", "simcc_y")
    ]
    return _save(path, nodes, [x], outs, inits)
