"""``load_backbone_weights``: wrappers, prefixes, and the mismatch error."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from faceforge.errors import FaceforgeError
from faceforge.models import create_model, load_backbone_weights


def _perturbed_state(name: str) -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    src = create_model(name)
    return {k: (v + torch.rand_like(v) if v.is_floating_point() else v) for k, v in src.state_dict().items()}


def _assert_loaded(model: torch.nn.Module, sd: dict[str, torch.Tensor]) -> None:
    own = model.state_dict()
    for k, v in sd.items():
        torch.testing.assert_close(own[k], v)


def test_lightning_checkpoint_with_model_prefix_and_head(tmp_path: Path) -> None:
    sd = _perturbed_state("mobilefacenet")
    ckpt = {
        "epoch": 3,
        "state_dict": {**{f"model.{k}": v for k, v in sd.items()}, "head.kernel": torch.zeros(512, 10)},
    }
    path = tmp_path / "last.ckpt"
    torch.save(ckpt, path)
    model = load_backbone_weights(create_model("mobilefacenet"), path)
    _assert_loaded(model, sd)


@pytest.mark.parametrize("prefix", ["module.", "backbone.", ""])
def test_safetensors_with_prefixes(tmp_path: Path, prefix: str) -> None:
    sd = _perturbed_state("mbf")
    path = tmp_path / "w.safetensors"
    save_file({f"{prefix}{k}": v.contiguous() for k, v in sd.items()}, str(path))
    model = load_backbone_weights(create_model("mbf"), path)
    _assert_loaded(model, sd)


def test_plain_torch_file_and_mapping(tmp_path: Path) -> None:
    sd = _perturbed_state("mobilefacenet")
    path = tmp_path / "w.pt"
    torch.save(sd, path)
    _assert_loaded(load_backbone_weights(create_model("mobilefacenet"), path), sd)
    _assert_loaded(load_backbone_weights(create_model("mobilefacenet"), sd), sd)


def test_mismatch_lists_keys_and_closest_model(tmp_path: Path) -> None:
    path = tmp_path / "mbf.safetensors"
    save_file({k: v.contiguous() for k, v in create_model("mbf").state_dict().items()}, str(path))
    with pytest.raises(FaceforgeError) as ei:
        load_backbone_weights(create_model("mobilefacenet"), path)
    msg = str(ei.value)
    assert "missing 333: bn.bias" in msg  # mobilefacenet keys, sorted
    assert "unexpected 333: conv_sep.layers.0.weight" in msg  # mbf keys, sorted
    assert "'mbf'" in msg
    assert str(path) in msg


def test_shape_mismatch_is_reported(tmp_path: Path) -> None:
    sd = create_model("mobilefacenet", embedding_size=128).state_dict()
    with pytest.raises(FaceforgeError, match=r"wrong shape 5: .*bn\.weight \(128,\) vs model \(512,\)"):
        load_backbone_weights(create_model("mobilefacenet"), sd)
    # non-strict loads what fits and leaves the rest
    model = load_backbone_weights(create_model("mobilefacenet"), sd, strict=False)
    torch.testing.assert_close(model.conv1.conv.weight, sd["conv1.conv.weight"])


def test_missing_and_bad_files(tmp_path: Path) -> None:
    with pytest.raises(FaceforgeError, match="not found"):
        load_backbone_weights(create_model("mbf"), tmp_path / "nope.pt")
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(FaceforgeError, match=r"bad\.pt"):
        load_backbone_weights(create_model("mbf"), bad)


def test_lightning_checkpoint_with_namespace_hparams(tmp_path: Path) -> None:
    import argparse

    sd = _perturbed_state("mobilefacenet")
    ckpt = {
        "hyper_parameters": argparse.Namespace(arch="ir_50", lr=0.1),
        "state_dict": {f"model.{k}": v for k, v in sd.items()},
    }
    path = tmp_path / "adaface_like.ckpt"
    torch.save(ckpt, path)
    _assert_loaded(load_backbone_weights(create_model("mobilefacenet"), path), sd)
