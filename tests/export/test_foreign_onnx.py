"""Foreign ONNX recognisers: arcface_torch-style exports without metadata, graphs that normalise
themselves (insightface's Sub/Mul rule), refusal of non-image graphs, overrides, fixed batches,
float16 inputs and the import round trip to a faceforge ONNX file."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

import faceforge
from faceforge.errors import FaceforgeError
from faceforge.export.foreign_onnx import inspect_onnx, load_onnx_model, parse_overrides
from faceforge.models.face_cfg import FaceConfig, preprocess

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

HALF = FaceConfig()  # RGB, mean/std 0.5: what arcface_torch trains with


pytestmark = pytest.mark.usefixtures("one_thread")


def _crops(n: int, seed: int = 0, size: int = 112) -> torch.Tensor:
    """Smooth random uint8 "faces" ``[n, 3, size, size]`` (RGB)."""
    g = torch.Generator().manual_seed(seed)
    small = torch.randint(0, 256, (n, 3, size // 8, size // 8), generator=g).float()
    big = torch.nn.functional.interpolate(small, size=(size, size), mode="bilinear", align_corners=False)
    noise = torch.randint(-20, 21, big.shape, generator=g).float()
    return (big + noise).clamp(0, 255).to(torch.uint8)


def _calibrated(name: str) -> torch.nn.Module:
    """Seeded random weights with BatchNorm statistics from one train-mode pass, in eval mode."""
    torch.manual_seed(0)
    m = faceforge.create_model(name)
    for mod in m.modules():
        if isinstance(mod, torch.nn.modules.batchnorm._BatchNorm):
            mod.reset_running_stats()
            mod.momentum = None
    m.train()
    with torch.no_grad():
        m(preprocess(_crops(8, seed=99), HALF))
    return m.eval()


class _RawPixels(torch.nn.Module):
    """A graph that normalises itself: raw 0–255 pixels in, ``(x - 127.5) / 127.5`` first."""

    def __init__(self, backbone: torch.nn.Module) -> None:
        super().__init__()
        self.backbone = backbone

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone((x - 127.5) * (1.0 / 127.5))


def _torch2onnx(module: torch.nn.Module, path: Path, **kw) -> Path:
    """Export as arcface_torch's torch2onnx.py: opset 11, fixed batch 1, no metadata, scaled outside."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module,
            (torch.zeros(1, 3, 112, 112),),
            str(path),
            dynamo=False,
            opset_version=11,
            input_names=["input.1"],
            do_constant_folding=False,
            **kw,
        )
    return path


@pytest.fixture(scope="module")
def mbf() -> torch.nn.Module:
    return _calibrated("mbf")


@pytest.fixture(scope="module")
def files(tmp_path_factory, mbf) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("foreign_onnx")
    return {
        "plain": _torch2onnx(mbf, d / "w600k_mbf.onnx"),
        # old exporters list the initializers as graph inputs too
        # (.eval(): the exporter restores the wrapper's mode, which would put mbf in train mode)
        "raw": _torch2onnx(_RawPixels(mbf).eval(), d / "raw_pixels.onnx", keep_initializers_as_inputs=True),
        # without constant folding the exporter puts one Identity node per BatchNorm buffer first
        "raw_identity": _torch2onnx(_RawPixels(mbf).eval(), d / "raw_identity.onnx"),
    }


def _cos(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a, b = a.astype(np.float64), b.astype(np.float64)
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def _reference(mbf: torch.nn.Module, crops: torch.Tensor) -> np.ndarray:
    with torch.no_grad():
        return mbf(preprocess(crops, HALF)).numpy()


def test_arcface_torch_export_loads_and_matches(files, mbf) -> None:
    path = files["plain"]
    assert len(onnx.load(str(path)).metadata_props) == 0
    facts = inspect_onnx(path)
    assert facts.fixed_batch == 1 and facts.input_name == "input.1" and not facts.has_metadata
    cfg = facts.face_cfg
    assert (cfg.color, cfg.template, cfg.input_size, cfg.embedding_size) == (
        "RGB",
        "arcface",
        (112, 112),
        512,
    )
    assert cfg.mean == (0.5, 0.5, 0.5) and cfg.std == (0.5, 0.5, 0.5)
    assert "no Sub+Mul" in facts.inferred["mean/std"]
    assert "graph output" in facts.inferred["embedding_size"]

    loaded = load_onnx_model(path, threads=1)
    crops = _crops(5, seed=1)  # 5 images through the batch-1 graph: the fixed-batch loop
    got = loaded.embed(preprocess(crops, loaded.face_cfg).numpy())
    ref = _reference(mbf, crops)
    assert got.shape == (5, 512) and got.dtype == np.float32
    assert _cos(got, ref).min() >= 0.99999
    assert loaded.name == "w600k_mbf" and loaded.calibration == {}
    assert loaded.facts["batch"].startswith("fixed at 1")


def test_graph_that_normalises_itself_gets_raw_pixels(files, mbf) -> None:
    path = files["raw"]
    proto = onnx.load(str(path))
    assert len(proto.graph.input) > 1  # initializers listed as inputs do not count as image inputs
    ops = [n.op_type for n in proto.graph.node if n.op_type not in ("Identity", "Constant")]
    assert ops[:2] == ["Sub", "Mul"]
    facts = inspect_onnx(path)
    assert facts.face_cfg.mean == (0.0, 0.0, 0.0)
    assert facts.face_cfg.std == pytest.approx((1 / 255,) * 3)
    assert "Sub and Mul" in facts.inferred["mean/std"]

    loaded = load_onnx_model(path, threads=1)
    crops = _crops(3, seed=2)
    x = preprocess(crops, loaded.face_cfg).numpy()
    np.testing.assert_allclose(x, crops.float().numpy(), atol=1e-3)  # raw 0–255 pixels go in
    assert _cos(loaded.embed(x), _reference(mbf, crops)).min() >= 0.99999
    # fed the 0.5/0.5 normalisation instead, the embeddings would be wrong
    wrong = loaded.embed(preprocess(crops, HALF).numpy())
    assert _cos(wrong, _reference(mbf, crops)).min() < 0.999


def test_leading_identity_nodes_do_not_hide_sub_and_mul(files) -> None:
    nodes = list(onnx.load(str(files["raw_identity"])).graph.node)
    assert [n.op_type for n in nodes[:8]] == ["Identity"] * 8
    facts = inspect_onnx(files["raw_identity"])
    assert facts.face_cfg.mean == (0.0, 0.0, 0.0) and "Sub and Mul" in facts.inferred["mean/std"]


def test_two_inputs_refused_in_one_line(tmp_path) -> None:
    class Two(torch.nn.Module):
        def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
            return (a + b).flatten(1)

    path = tmp_path / "two.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            Two(), (torch.zeros(1, 3, 8, 8), torch.zeros(1, 3, 8, 8)), str(path), dynamo=False,
            opset_version=11, input_names=["a", "b"],
        )  # fmt: skip
    for fn in (inspect_onnx, load_onnx_model):
        with pytest.raises(FaceforgeError) as ei:
            fn(path)
        msg = str(ei.value)
        assert "\n" not in msg
        assert str(path) in msg and "2 inputs (a, b)" in msg and "[N, 3, H, W]" in msg


def test_non_image_input_refused(tmp_path) -> None:
    class Flat(torch.nn.Module):
        def forward(self, a: torch.Tensor) -> torch.Tensor:
            return a * 2

    path = tmp_path / "flat.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(Flat(), (torch.zeros(1, 112, 112, 3),), str(path), dynamo=False, opset_version=11)
    with pytest.raises(FaceforgeError, match=r"flat\.onnx input .* has shape \[1, 112, 112, 3\]"):
        inspect_onnx(path)
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a protobuf at all")
    with pytest.raises(FaceforgeError, match="not a readable ONNX file"):
        inspect_onnx(bad)


def test_overrides_replace_facts_and_are_reported_given(files) -> None:
    over = {"color": "bgr", "mean": 127.5, "std": [127.5, 127.5, 127.5], "template": "none"}
    facts = inspect_onnx(files["plain"], over)
    cfg = facts.face_cfg
    assert (cfg.color, cfg.template) == ("BGR", "none")
    assert cfg.mean == pytest.approx((0.5,) * 3) and cfg.std == pytest.approx((0.5,) * 3)  # /255
    for key in ("color", "mean/std", "template"):
        assert facts.inferred[key].endswith("given"), facts.inferred[key]
    assert "given" not in facts.inferred["input_size"]

    facts = inspect_onnx(files["plain"], {"input_size": 112, "embedding_size": 512, "mean": [0.1, 0.2, 0.3]})
    assert facts.face_cfg.mean == (0.1, 0.2, 0.3) and facts.face_cfg.std == (0.5, 0.5, 0.5)
    assert facts.inferred["input_size"] == "112x112: given"
    assert facts.inferred["embedding_size"] == "512: given"
    assert "mean given" in facts.inferred["mean/std"]

    loaded = load_onnx_model(files["plain"], {"color": "BGR"}, threads=1)
    assert loaded.face_cfg.color == "BGR" and loaded.facts["color"] == "BGR: given"

    # overrides that contradict the graph, or are malformed, fail in one line naming the file
    for bad, pattern in [
        ({"input_size": 128}, r"input_size 128x128 does not fit the graph input 112x112"),
        ({"embedding_size": 256}, r"embedding_size 256 does not fit the graph output 512"),
        ({"colour": "RGB"}, r"override 'colour' \(did you mean 'color'\?\)"),
        ({"color": "YUV"}, r"'YUV': expected RGB or BGR"),
        ({"std": 0}, r"std 0: a standard deviation of 0"),
    ]:
        with pytest.raises(FaceforgeError, match=pattern) as ei:
            inspect_onnx(files["plain"], bad)
        assert str(files["plain"]) in str(ei.value) and "\n" not in str(ei.value)


def test_parse_overrides_scale_rule() -> None:
    o = parse_overrides({"mean": [123.675, 116.28, 103.53], "std": 0.5, "input_size": (112, 96)})
    assert o["mean"] == pytest.approx((0.485, 0.456, 0.406))
    assert o["std"] == (0.5, 0.5, 0.5) and o["input_size"] == (112, 96)
    assert parse_overrides({"std": 1})["std"] == (1.0, 1.0, 1.0)  # 1 is on the 0–1 scale
    assert parse_overrides({"std": 127.5, "color": None}) == {"std": pytest.approx((0.5,) * 3)}
    assert parse_overrides(None) == {}
    with pytest.raises(FaceforgeError, match=r"^x\.onnx: .*embedding"):
        parse_overrides({"embedding_size": "many"}, "x.onnx")


def _tiny_graph(path: Path, batch: int | str, elem: int, out_dims: list) -> Path:
    """``x [batch, 3, 4, 4]`` → Cast(float) → Flatten → ``y``: the embedding is the flattened input."""
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", elem, [batch, 3, 4, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, out_dims)
    nodes = [
        helper.make_node("Cast", ["x"], ["xf"], to=TensorProto.FLOAT),
        helper.make_node("Flatten", ["xf"], ["y"], axis=1),
    ]
    model = helper.make_model(
        helper.make_graph(nodes, "tiny", [x], [y]), opset_imports=[helper.make_opsetid("", 13)]
    )
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def test_float16_input_and_fixed_batch_padding(tmp_path) -> None:
    from onnx import TensorProto

    path = _tiny_graph(tmp_path / "half.onnx", 2, TensorProto.FLOAT16, [2, 48])
    loaded = load_onnx_model(path, threads=1)
    assert loaded.onnx_facts.input_dtype == "float16" and loaded.onnx_facts.fixed_batch == 2
    assert loaded.face_cfg.input_size == (4, 4) and loaded.face_cfg.embedding_size == 48
    x = np.random.default_rng(0).standard_normal((3, 3, 4, 4)).astype(np.float32)  # 3 = 2 + padded 1
    got = loaded.embed(x)
    assert got.shape == (3, 48) and got.dtype == np.float32
    np.testing.assert_array_equal(got, x.astype(np.float16).astype(np.float32).reshape(3, -1))
    assert loaded.embed(x[:0]).shape == (0, 48)
    with pytest.raises(FaceforgeError, match=r"expects normalised input \[N, 3, 4, 4\]"):
        loaded.embed(x[:, :, :2])


def test_symbolic_output_sized_by_a_dummy_inference(tmp_path) -> None:
    from onnx import TensorProto

    path = _tiny_graph(tmp_path / "dyn.onnx", "batch", TensorProto.FLOAT, ["batch", "emb"])
    facts = inspect_onnx(path)
    assert facts.fixed_batch is None and facts.face_cfg.embedding_size == 48
    assert "dummy inference" in facts.inferred["embedding_size"]
    assert facts.inferred["batch"].startswith("dynamic")
    facts = inspect_onnx(path, {"embedding_size": 48})
    assert facts.inferred["embedding_size"] == "48: given"


def test_import_round_trip_writes_faceforge_metadata(files, mbf, tmp_path) -> None:
    from faceforge.export.onnx import FORMAT, read_metadata
    from faceforge.infer.loading import import_model

    dst = tmp_path / "imported" / "mbf_ff.onnx"
    out, facts = import_model(files["raw"], dst, overrides={"template": "arcface"})
    assert out == dst and dst.is_file() and facts["format"] == "onnx"
    assert not list(dst.parent.glob(".*"))  # no temporary file left behind
    meta = read_metadata(dst)
    assert meta["raw"]["faceforge.format"] == FORMAT
    assert meta["face_cfg"].mean == (0.0, 0.0, 0.0) and meta["face_cfg"].std == pytest.approx((1 / 255,) * 3)
    assert meta["name"] == "raw_pixels" and meta["raw"]["faceforge.imported_from"] == "raw_pixels.onnx"

    again = load_onnx_model(dst, threads=1)  # no guessing the second time
    assert all("faceforge metadata" in v for k, v in again.facts.items() if k not in ("input", "batch"))
    assert again.onnx_facts.has_metadata and again.onnx_facts.fixed_batch == 1
    crops = _crops(2, seed=3)
    first = load_onnx_model(files["raw"], threads=1)
    a = first.embed(preprocess(crops, first.face_cfg).numpy())
    b = again.embed(preprocess(crops, again.face_cfg).numpy())
    np.testing.assert_array_equal(a, b)
    assert _cos(b, _reference(mbf, crops)).min() >= 0.99999


def test_declared_huge_input_is_refused_before_anything_is_allocated(tmp_path) -> None:
    import onnx
    from onnx import TensorProto, helper

    from faceforge.errors import FaceforgeError

    # A crafted graph declaring a 30000x30000 input: every crop and batch would be sized from it.
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 30000, 30000])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])
    nodes = [
        helper.make_node("GlobalAveragePool", ["x"], ["p"]),
        helper.make_node("Flatten", ["p"], ["y"]),
    ]
    model = helper.make_model(
        helper.make_graph(nodes, "huge", [x], [y]), opset_imports=[helper.make_opsetid("", 13)]
    )
    path = tmp_path / "huge.onnx"
    onnx.save(model, str(path))
    with pytest.raises(FaceforgeError, match=r"huge\.onnx: graph input 'x' declares 30000x30000"):
        inspect_onnx(path)
