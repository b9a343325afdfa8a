"""Weights files of other projects, as they are saved there: arcface_torch, AdaFace (Lightning), EdgeFace,
face.evoLVe; architecture detection, colour order, refusals, and import to a faceforge checkpoint."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pytest
import torch

import faceforge
from faceforge.errors import FaceforgeError
from faceforge.infer.loading import import_model
from faceforge.models.face_cfg import preprocess
from faceforge.models.foreign import detect_arch, load_foreign_weights

pytestmark = pytest.mark.usefixtures("one_thread")

SHARED = Path(__file__).resolve().parents[2].parent / "shared"
REF = SHARED / "reference" / "state_dicts"


def _reference(name: str) -> set[tuple[str, tuple[int, ...]]]:
    """(key, shape) pairs of a reference implementation's state dict; skip when ../shared is absent."""
    f = REF / f"{name}.json"
    if not f.is_file():
        pytest.skip(f"reference key list {f} not found (../shared absent)")
    return {(k, tuple(shape)) for k, shape, _dtype in json.loads(f.read_text())["keys"]}


def _pairs(sd: dict[str, torch.Tensor], prefix: str = "") -> set[tuple[str, tuple[int, ...]]]:
    return {(k[len(prefix) :], tuple(v.shape)) for k, v in sd.items() if k.startswith(prefix)}


def _crops(n: int, seed: int = 0) -> torch.Tensor:
    """Smooth random uint8 RGB crops ``[n, 3, 112, 112]`` whose channels differ."""
    g = torch.Generator().manual_seed(seed)
    small = torch.randint(0, 256, (n, 3, 14, 14), generator=g).float()
    big = torch.nn.functional.interpolate(small, size=(112, 112), mode="bilinear", align_corners=False)
    return big.clamp(0, 255).to(torch.uint8)


def _calibrated(name: str, **kw) -> torch.nn.Module:
    """Seeded random weights, BatchNorm statistics from one train-mode pass, eval mode."""
    torch.manual_seed(0)
    m = faceforge.create_model(name, **kw)
    for mod in m.modules():
        if isinstance(mod, torch.nn.modules.batchnorm._BatchNorm):
            mod.reset_running_stats()
            mod.momentum = None
    m.train()
    with torch.no_grad():
        m(preprocess(_crops(4, seed=99), m.face_cfg))
    return m.eval()


def _light(name: str, **kw) -> dict[str, torch.Tensor]:
    """A state dict of backbone ``name`` whose tensors are stride-0 views (a tiny file; values constant)."""
    with torch.device("meta"):
        sd = faceforge.create_model(name, **kw).state_dict()
    return {
        k: torch.full((), 0.5 if v.is_floating_point() else 0, dtype=v.dtype).expand(v.shape)
        for k, v in sd.items()
    }


def _same_weights(module: torch.nn.Module, sd: dict[str, torch.Tensor], prefix: str = "") -> None:
    own = module.state_dict()
    for k, v in sd.items():
        if k.startswith(prefix):
            torch.testing.assert_close(own[k[len(prefix) :]], v, rtol=0, atol=0)


def _cos(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a, b = a.astype(np.float64), b.astype(np.float64)
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


# ---------------------------------------------------------------------------------- layouts

# (reference key list, registered backbone, how the project saves it)
LAYOUTS = [
    *[(f"insightface_r{d}", f"iresnet{d}", "plain") for d in (18, 34, 50, 100)],
    ("insightface_mbf", "mbf", "plain"),
    ("adaface_ir_50", "adaface_ir50", "lightning"),
    ("adaface_ir_101", "adaface_ir101", "lightning"),
    ("evolve_ir_50", "ir50", "plain"),
    ("evolve_ir_se_50", "ir_se50", "plain"),
    ("evolve_mobilefacenet", "mobilefacenet", "plain"),
    *[(f"edgeface_{v}", f"edgeface_{v}", "plain") for v in ("base", "s_gamma_05", "xs_gamma_06", "xxs")],
]


@pytest.mark.parametrize(("ref", "arch", "how"), LAYOUTS, ids=[r for r, _, _ in LAYOUTS])
def test_layout_keys_equal_reference_and_are_detected(ref: str, arch: str, how: str) -> None:
    """The file each project writes has exactly the reference key list, and is recognised as ``arch``."""
    if arch.startswith("edgeface"):
        pytest.importorskip("timm")
    with torch.device("meta"):
        sd = faceforge.create_model(arch).state_dict()
    if how == "lightning":  # AdaFace: LightningModule with self.model (backbone) and self.head
        saved = {
            "state_dict": {**{f"model.{k}": v for k, v in sd.items()}, "head.kernel": torch.empty(512, 9)}
        }
        backbone_keys = _pairs(saved["state_dict"], "model.") - {("kernel", (512, 9))}
    else:
        saved, backbone_keys = sd, _pairs(sd)
    assert backbone_keys == _reference(ref)
    ranked = detect_arch(saved)
    assert ranked[0] == (arch, 1.0) and all(score < 1.0 for _, score in ranked[1:])


@pytest.fixture(scope="module")
def mbf() -> torch.nn.Module:
    return _calibrated("mbf")


@pytest.fixture(scope="module")
def adaface_file(tmp_path_factory) -> tuple[Path, torch.nn.Module]:
    """AdaFace's Lightning checkpoint: state_dict of ``model.*`` backbone keys + ``head.kernel``."""
    model = _calibrated("adaface_ir50")
    sd = model.state_dict()
    ckpt = {
        "epoch": 25,
        "global_step": 1000,
        "state_dict": {**{f"model.{k}": v for k, v in sd.items()}, "head.kernel": torch.randn(512, 70)},
        "hyper_parameters": argparse.Namespace(arch="ir_50", head="adaface", m=0.4, h=0.333),
    }
    path = tmp_path_factory.mktemp("adaface") / "adaface_ir50_ms1mv2.ckpt"
    torch.save(ckpt, path)
    return path, model


def test_arcface_torch_mbf(tmp_path, mbf) -> None:
    sd = mbf.state_dict()
    path = tmp_path / "model.pt"  # arcface_torch: torch.save(backbone.module.state_dict(), "model.pt")
    torch.save(sd, path)
    loaded = load_foreign_weights(path)
    assert (loaded.arch, loaded.layout) == ("mbf", "arcface_torch")
    cfg = loaded.face_cfg
    assert (cfg.color, cfg.mean, cfg.std, cfg.template) == ("RGB", (0.5,) * 3, (0.5,) * 3, "arcface")
    assert cfg.input_size == (112, 112) and cfg.embedding_size == 512
    assert not loaded.module.training
    _same_weights(loaded.module, sd)
    x = preprocess(_crops(2), cfg)
    with torch.no_grad():
        np.testing.assert_array_equal(loaded.embed(x), mbf(x).numpy())
    assert loaded.inferred["arch"].startswith("mbf: key/shape match score 1.000")
    assert "arcface_torch trains on RGB" in loaded.inferred["color"]
    assert loaded.source == str(path)


def test_arcface_torch_iresnet18_dataparallel_and_resume_checkpoint(tmp_path) -> None:
    torch.manual_seed(1)
    sd = faceforge.create_model("iresnet18").state_dict()
    dp = tmp_path / "r18_dp.pth"
    torch.save({f"module.{k}": v for k, v in sd.items()}, dp)
    resume = tmp_path / "checkpoint_gpu_0.pt"  # arcface_torch's resume checkpoint
    torch.save(
        {
            "epoch": 3,
            "global_step": 99,
            "state_dict_backbone": sd,
            "state_dict_softmax_fc": {"weight": torch.zeros(4)},
        },
        resume,
    )
    for path, where in [(dp, "top level"), (resume, "['state_dict_backbone']")]:
        loaded = load_foreign_weights(path)
        assert (loaded.arch, loaded.layout, loaded.face_cfg.color) == ("iresnet18", "arcface_torch", "RGB")
        assert where in loaded.inferred["keys"]
        _same_weights(loaded.module, sd)
    assert "prefix 'module.' stripped" in load_foreign_weights(dp).inferred["keys"]


def test_adaface_lightning_checkpoint_is_bgr(adaface_file) -> None:
    path, _ = adaface_file
    ckpt = torch.load(path, weights_only=False)
    loaded = load_foreign_weights(path)
    assert (loaded.arch, loaded.layout) == ("adaface_ir50", "adaface")
    assert loaded.face_cfg.color == "BGR" and loaded.face_cfg.mean == (0.5,) * 3
    assert "head.kernel" in loaded.inferred["ignored"]
    assert "Lightning" in loaded.inferred["layout"] and loaded.inferred["color"].startswith("BGR")
    _same_weights(loaded.module, ckpt["state_dict"], "model.")


def test_adaface_fed_rgb_by_mistake_changes_the_embedding(adaface_file) -> None:
    path, _ = adaface_file
    bgr = load_foreign_weights(path)
    rgb = load_foreign_weights(path, overrides={"color": "RGB"})
    assert rgb.face_cfg.color == "RGB" and rgb.inferred["color"] == "RGB: given"
    crop = _crops(2, seed=5)  # RGB crops, as the aligner produces them
    e_bgr = bgr.embed(preprocess(crop, bgr.face_cfg))
    e_rgb = rgb.embed(preprocess(crop, rgb.face_cfg))
    assert _cos(e_bgr, e_rgb).max() < 0.99  # the colour order matters to these weights
    # the BGR path is the module run on the channel-reversed normalised input
    x = (crop.float()[:, [2, 1, 0]] - 127.5) / 127.5
    with torch.no_grad():
        np.testing.assert_allclose(e_bgr, bgr.module(x).numpy(), rtol=1e-5, atol=1e-4)
        np.testing.assert_allclose(e_rgb, bgr.module(x[:, [2, 1, 0]]).numpy(), rtol=1e-5, atol=1e-4)


def test_edgeface_model_prefixed_keys(tmp_path) -> None:
    pytest.importorskip("timm")
    m = _calibrated("edgeface_xxs")
    sd = m.state_dict()
    assert all(k.startswith("model.") for k in sd)
    path = tmp_path / "edgeface_xxs.pt"
    torch.save(sd, path)
    loaded = load_foreign_weights(path)
    assert (loaded.arch, loaded.layout, loaded.face_cfg.color) == ("edgeface_xxs", "edgeface", "RGB")
    assert loaded.face_cfg.mean == (0.5,) * 3 and loaded.face_cfg.std == (0.5,) * 3
    _same_weights(loaded.module, sd)
    x = preprocess(_crops(2), loaded.face_cfg)
    with torch.no_grad():
        np.testing.assert_array_equal(loaded.embed(x), m(x).numpy())


def test_evolve_ir_se50(tmp_path) -> None:
    sd = _light("ir_se50")
    path = tmp_path / "backbone_ir_se50_ms1m_epoch120.pth"
    torch.save(sd, path)
    loaded = load_foreign_weights(path)
    assert (loaded.arch, loaded.layout, loaded.face_cfg.color) == ("ir_se50", "evolve", "RGB")
    assert loaded.face_cfg.mean == (0.5,) * 3 and loaded.face_cfg.template == "arcface"
    assert [a for a, _ in detect_arch(torch.load(path, weights_only=True))][:1] == ["ir_se50"]


def test_old_file_without_num_batches_tracked(tmp_path) -> None:
    sd = {k: v for k, v in _light("mobilefacenet").items() if not k.endswith("num_batches_tracked")}
    path = tmp_path / "MobileFaceNet_old.pth"
    torch.save(sd, path)
    loaded = load_foreign_weights(path)
    assert (loaded.arch, loaded.layout) == ("mobilefacenet", "evolve")


def test_other_embedding_and_input_size_are_read_from_shapes(tmp_path) -> None:
    path = tmp_path / "r18_256d_96px.safetensors"
    from safetensors.torch import save_file

    save_file(
        {k: v.contiguous() for k, v in _light("iresnet18", embedding_size=256, input_size=96).items()},
        str(path),
    )
    loaded = load_foreign_weights(path)
    assert loaded.arch == "iresnet18" and loaded.options == {"embedding_size": 256, "input_size": 96}
    assert loaded.face_cfg.embedding_size == 256 and loaded.face_cfg.input_size == (96, 96)
    assert loaded.inferred["input_size"] == "96x96: from the weight shapes (FC input width)"
    assert loaded.inferred["embedding_size"] == "256: from the weight shapes"


# ---------------------------------------------------------------------------------- detection


def test_detect_arch_ranks_and_unwraps() -> None:
    sd = _light("mbf")
    ranked = detect_arch({"state_dict": {f"module.{k}": v for k, v in sd.items()}, "epoch": 1})
    assert ranked[0] == ("mbf", 1.0)
    assert all(s < 1.0 for _, s in ranked[1:]) and ranked == [
        ranked[0],
        *sorted(ranked[1:], key=lambda t: -t[1]),
    ]
    # half of the keys: nothing reaches 0.99 -> one line listing candidates and asking for arch=
    half = dict(list(sd.items())[: len(sd) // 2])
    with pytest.raises(FaceforgeError) as ei:
        detect_arch(half, where="half.pt")
    msg = str(ei.value)
    assert (
        "\n" not in msg and msg.startswith("half.pt: unknown layout") and "mbf (0." in msg and "arch=" in msg
    )


# ---------------------------------------------------------------------------------- refusals


def test_unknown_layout_refused_in_one_line(tmp_path) -> None:
    path = tmp_path / "mystery.pth"
    torch.save(
        {"encoder.conv.weight": torch.zeros(8, 3, 3, 3), "encoder.fc.weight": torch.zeros(10, 8)}, path
    )
    with pytest.raises(FaceforgeError) as ei:
        load_foreign_weights(path)
    msg = str(ei.value)
    assert "\n" not in msg and str(path) in msg and "unknown layout" in msg and "arch=" in msg
    empty = tmp_path / "empty.pt"
    torch.save({"epoch": 3, "optimizer": {"lr": 0.1}}, empty)
    with pytest.raises(FaceforgeError, match=r"empty\.pt holds no weight tensors"):
        load_foreign_weights(empty)


def test_pickled_module_refused_in_one_line(tmp_path) -> None:
    path = tmp_path / "whole_model.pth"
    torch.save(faceforge.create_model("mbf"), path)  # torch.save(model): a pickled nn.Module
    with pytest.raises(FaceforgeError) as ei:
        load_foreign_weights(path)
    msg = str(ei.value)
    assert "\n" not in msg and str(path) in msg
    assert "pickled Python object (faceforge.models.backbones.mobilefacenet.MBF)" in msg
    assert "only state dicts / weights are accepted" in msg and "weights_only=True" in msg


def test_mismatched_arch_refused_in_one_line(tmp_path) -> None:
    path = tmp_path / "mbf.pt"
    torch.save(_light("mbf"), path)
    with pytest.raises(FaceforgeError) as ei:
        load_foreign_weights(path, arch="iresnet18")
    msg = str(ei.value)
    assert "\n" not in msg and str(path) in msg and "'iresnet18'" in msg and "looks most like 'mbf'" in msg
    # a deeper net holds every key of a shallower one: the extra keys must not be ignored
    r34 = tmp_path / "r34.pt"
    torch.save(_light("iresnet34"), r34)
    with pytest.raises(FaceforgeError, match=r"does not fit arch 'iresnet18' .*unexpected keys.*'iresnet34'"):
        load_foreign_weights(r34, arch="iresnet18")
    with pytest.raises(FaceforgeError, match=r"unknown arch 'mbff' \(did you mean 'mbf'\?\)"):
        load_foreign_weights(path, arch="mbff")
    assert load_foreign_weights(path, arch="mbf").inferred["arch"].startswith("mbf: given")


# ---------------------------------------------------------------------------------- import


def test_import_round_trip_to_faceforge_checkpoint(tmp_path, mbf) -> None:
    from faceforge.models.checkpoint import load_checkpoint

    src = tmp_path / "model.pt"
    torch.save({f"module.{k}": v for k, v in mbf.state_dict().items()}, src)
    dst = tmp_path / "out" / "mbf_imported.ckpt"
    out, facts = import_model(src, dst, overrides={"color": "BGR"})
    assert out == dst and facts["name"] == "mbf" and facts["layout"] == "arcface_torch"
    assert facts["inferred"]["color"] == "BGR: given"
    assert not list(dst.parent.glob(".*"))  # the temporary file was renamed into place

    ck = load_checkpoint(dst)
    assert ck.face_cfg.color == "BGR" and ck.face_cfg.mean == (0.5,) * 3
    assert ck.config["model"]["backbone"]["name"] == "mbf" and ck.calibration == {}
    x = preprocess(_crops(2, seed=7), ck.face_cfg)
    with torch.no_grad():
        np.testing.assert_array_equal(ck.backbone(x).numpy(), mbf(x).numpy())

    again = load_foreign_weights(dst)  # no guessing on the second load
    assert (again.arch, again.layout, again.face_cfg.color) == ("mbf", "faceforge", "BGR")
    assert again.inferred["arch"] == "mbf: faceforge checkpoint (hyper_parameters.config)"
    assert all("faceforge checkpoint" in v for v in again.inferred.values())
    np.testing.assert_array_equal(again.embed(x), mbf(x).detach().numpy())
    with pytest.raises(FaceforgeError, match=r"is a faceforge checkpoint of 'mbf', not of arch 'iresnet18'"):
        load_foreign_weights(dst, arch="iresnet18")


def test_import_keeps_adaface_bgr_and_sizes(tmp_path) -> None:
    from faceforge.models.checkpoint import load_checkpoint

    src = tmp_path / "last.ckpt"
    sd = _light("iresnet18", embedding_size=128)
    torch.save({"state_dict": {f"backbone.{k}": v for k, v in sd.items()}, "epoch": 1}, src)
    out, facts = import_model(src, tmp_path / "r18.ckpt")
    ck = load_checkpoint(out)
    assert ck.face_cfg.embedding_size == 128 and ck.backbone.embedding_size == 128
    assert facts["options"] == {"embedding_size": 128}

    ada = tmp_path / "adaface.ckpt"
    torch.save({"state_dict": {f"model.{k}": v for k, v in _light("adaface_ir50").items()}}, ada)
    out, facts = import_model(ada, tmp_path / "ada.ckpt")
    assert load_checkpoint(out).face_cfg.color == "BGR" and facts["face_cfg"]["color"] == "BGR"
