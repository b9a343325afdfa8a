"""The backbone zoo against the reference state dicts (keys, shapes, counts, FLOPs) and basic behaviour.

Heavy models are built on the meta device: key/shape/count/FLOP checks need no real tensors
(``FlopCounterMode`` counts from shapes). ``test_meta_flops_equal_real_flops`` checks that shortcut.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from faceforge.errors import FaceforgeError
from faceforge.models import FaceConfig, create_model, list_models

HAS_TIMM = importlib.util.find_spec("timm") is not None

# reference file stem -> our registered name
REFERENCE_NAMES = {
    "insightface_r18": "iresnet18",
    "insightface_r34": "iresnet34",
    "insightface_r50": "iresnet50",
    "insightface_r100": "iresnet100",
    "insightface_mbf": "mbf",
    "evolve_ir_se_50": "ir_se50",
    "evolve_ir_50": "ir50",
    "evolve_mobilefacenet": "mobilefacenet",
    "adaface_ir_50": "adaface_ir50",
    "adaface_ir_101": "adaface_ir101",
    "edgeface_base": "edgeface_base",
    "edgeface_s_gamma_05": "edgeface_s_gamma_05",
    "edgeface_xs_gamma_06": "edgeface_xs_gamma_06",
    "edgeface_xxs": "edgeface_xxs",
}

EXPECTED_NAMES = {
    *REFERENCE_NAMES.values(),
    "iresnet200",
    "ghostfacenetv1",
    "ghostfacenetv2",
}


def _needs_timm(name: str) -> None:
    if name.startswith("edgeface") and not HAS_TIMM:
        pytest.skip("timm not installed")


def _flops(model: nn.Module, device: str) -> int:
    model.eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(torch.zeros(1, 3, 112, 112, device=device))
    return counter.get_total_flops()


def test_registry_lists_the_whole_zoo() -> None:
    assert EXPECTED_NAMES <= set(list_models())


def test_every_reference_file_is_mapped(shared_dir: Path) -> None:
    stems = {p.stem for p in (shared_dir / "reference" / "state_dicts").glob("*.json")}
    assert stems, "no reference state dicts found"
    assert stems <= set(REFERENCE_NAMES), f"unmapped reference files: {sorted(stems - set(REFERENCE_NAMES))}"


@pytest.mark.parametrize("stem", sorted(REFERENCE_NAMES))
def test_matches_reference_state_dict(stem: str, shared_dir: Path) -> None:
    path = shared_dir / "reference" / "state_dicts" / f"{stem}.json"
    if not path.is_file():
        pytest.skip(f"{path} missing")
    name = REFERENCE_NAMES[stem]
    _needs_timm(name)
    ref = json.loads(path.read_text())
    with torch.device("meta"):
        model = create_model(name, embedding_size=ref["embedding_size"])
    sd = model.state_dict()
    ours = {k: list(v.shape) for k, v in sd.items()}
    theirs = {k: list(shape) for k, shape, _ in ref["keys"]}
    assert sorted(set(theirs) - set(ours)) == [], "missing keys"
    assert sorted(set(ours) - set(theirs)) == [], "unexpected keys"
    assert ours == theirs
    assert len(sd) == ref["num_state_dict_entries"]
    assert sum(p.numel() for p in model.parameters()) == ref["num_params"]
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == ref["num_trainable"]
    assert sorted(n for n, p in model.named_parameters() if not p.requires_grad) == sorted(
        ref["frozen_params"]
    )
    flops = _flops(model, "meta")
    assert abs(flops - ref["flops_112"]) <= 0.02 * ref["flops_112"], (flops, ref["flops_112"])


@pytest.mark.parametrize("name", ["mbf", "mobilefacenet"])
def test_meta_flops_equal_real_flops(name: str) -> None:
    real = _flops(create_model(name), "cpu")
    with torch.device("meta"):
        meta_model = create_model(name)
    assert _flops(meta_model, "meta") == real > 0


def test_iresnet200_layout() -> None:
    with torch.device("meta"):
        model = create_model("iresnet200")
    assert [len(getattr(model, f"layer{i}")) for i in range(1, 5)] == [6, 26, 60, 6]
    assert not model.features.weight.requires_grad


LIGHT = ["mbf", "mobilefacenet", "edgeface_xxs", "edgeface_xs_gamma_06"]


@pytest.mark.parametrize("name", LIGHT)
def test_forward_train_and_eval(name: str) -> None:
    _needs_timm(name)
    torch.manual_seed(0)
    model = create_model(name, embedding_size=128)
    x = torch.randn(2, 3, 112, 112)
    model.train()
    y = model(x)
    assert y.shape == (2, 128)
    y.square().mean().backward()
    no_grad = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not no_grad
    model.eval()
    with torch.no_grad():
        feats = model.forward_features(x)
        emb = model.forward_head(feats)
    assert emb.shape == (2, 128)
    torch.testing.assert_close(emb, model(x).detach())


@pytest.mark.parametrize(
    "name", ["iresnet50", "ir50", "ir_se50", "adaface_ir50", "adaface_ir101", "iresnet200"]
)
def test_heavy_models_shape_on_meta(name: str) -> None:
    with torch.device("meta"):
        model = create_model(name, embedding_size=256).eval()
        assert model(torch.empty(2, 3, 112, 112)).shape == (2, 256)


@pytest.mark.parametrize("name", sorted(EXPECTED_NAMES))
def test_face_cfg_everywhere(name: str) -> None:
    _needs_timm(name)
    with torch.device("meta"):
        model = create_model(name)
    cfg = model.face_cfg
    assert isinstance(cfg, FaceConfig)
    assert cfg.input_size == (112, 112)
    assert cfg.embedding_size == 512 == model.embedding_size
    assert cfg.template == "arcface"
    assert cfg.color == ("BGR" if name.startswith("adaface") else "RGB")
    assert FaceConfig.from_dict(cfg.to_dict()) == cfg


def test_iresnet_non_default_input_size() -> None:
    model = create_model("iresnet18", input_size=(128, 96), embedding_size=64).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 128, 96)).shape == (1, 64)
    assert model.fc.in_features == 512 * 8 * 6
    with pytest.raises(FaceforgeError, match="input_size"):
        create_model("iresnet18", input_size=100)


def test_mbf_without_scale_and_blocks() -> None:
    model = create_model("mbf", scale=1, blocks=(2, 2, 2, 2)).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 112, 112)).shape == (1, 512)
    with pytest.raises(FaceforgeError, match="blocks"):
        create_model("mbf", blocks=(1, 2))


def test_adaface_returns_raw_embedding_not_normalised() -> None:
    with torch.device("meta"):
        model = create_model("adaface_ir50")
    # output BN has no affine parameters, as in AdaFace
    assert model.output_layer[4].weight is None
    assert model.face_cfg.color == "BGR"
