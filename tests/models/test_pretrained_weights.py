"""Pretrained weights without the network: ``pretrained: true`` reads timm's local cache only,
``weights: PATH`` loads a user's state dict, and a checkpoint's stored ``weights`` is never opened."""

from __future__ import annotations

import builtins
import os
import time
import warnings
from pathlib import Path

import pytest
import torch

from faceforge.errors import FaceforgeError
from faceforge.models import build
from faceforge.models.build import build_backbone

timm = pytest.importorskip("timm")


@pytest.fixture
def empty_caches(tmp_path, monkeypatch):
    """Every cache timm / huggingface / torch hub could read points into an empty tmp folder, and
    every download function timm could reach raises (a download attempt is the bug under test)."""
    for key, sub in (("HF_HOME", "hf"), ("HF_HUB_CACHE", "hf/hub"), ("TORCH_HOME", "torch")):
        monkeypatch.setenv(key, str(tmp_path / sub))
    monkeypatch.delenv("HUGGINGFACE_HUB_CACHE", raising=False)
    import huggingface_hub
    from timm.models import _builder, _hub

    def no_network(*a, **k):
        raise AssertionError("a download was attempted")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", no_network)
    monkeypatch.setattr(_hub, "hf_hub_download", no_network)
    monkeypatch.setattr(_builder, "load_state_dict_from_hf", no_network)
    monkeypatch.setattr(_builder, "load_state_dict_from_url", no_network)
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", no_network)
    return tmp_path


def test_pretrained_with_an_empty_cache_fails_fast_with_one_line(empty_caches) -> None:
    t0 = time.perf_counter()
    with pytest.raises(FaceforgeError) as err:
        build_backbone({"name": "timm/resnet18", "pretrained": True, "embedding_size": 16}, 64)
    assert time.perf_counter() - t0 < 5
    msg = str(err.value)
    assert "\n" not in msg
    assert "timm/resnet18.a1_in1k" in msg and "model.backbone.weights: PATH" in msg
    assert str(empty_caches / "hf" / "hub") in msg


def test_pretrained_reads_the_local_hub_cache(empty_caches) -> None:
    from safetensors.torch import save_file

    ref = timm.create_model("resnet18")
    repo = empty_caches / "hf" / "hub" / "models--timm--resnet18.a1_in1k"
    (repo / "snapshots" / "c0ffee").mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("c0ffee")
    save_file(
        {k: v.contiguous() for k, v in ref.state_dict().items()},
        repo / "snapshots" / "c0ffee" / "model.safetensors",
    )
    m = build_backbone({"name": "timm/resnet18", "pretrained": True, "embedding_size": 16}, 64)
    got = m.model.state_dict()
    assert all(torch.equal(got[k], ref.state_dict()[k]) for k in got)
    assert m.face_cfg.mean == pytest.approx((0.485, 0.456, 0.406))


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_weights_file_loads_into_the_timm_backbone(tmp_path, suffix) -> None:
    ref = timm.create_model("resnet18")  # with its 1000-class fc: ignored on load
    sd = {k: v.contiguous() for k, v in ref.state_dict().items()}
    path = tmp_path / f"r18{suffix}"
    if suffix == ".pth":
        torch.save(sd, path)
    else:
        from safetensors.torch import save_file

        save_file(sd, path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing missing or unexpected: no warning
        m = build_backbone({"name": "timm/resnet18", "weights": str(path), "embedding_size": 16}, 64)
    got = m.model.state_dict()
    assert set(got) == {k for k in sd if not k.startswith("fc.")}
    assert all(torch.equal(got[k], sd[k]) for k in got)
    # timm's normalisation of the architecture is in the FaceConfig, and the template is the config's.
    assert m.face_cfg.mean == pytest.approx((0.485, 0.456, 0.406))
    assert m.face_cfg.std == pytest.approx((0.229, 0.224, 0.225))
    assert m.face_cfg.template == "arcface"
    m2 = build_backbone({"name": "timm/resnet18", "weights": str(path), "template": "none"}, 64)
    assert m2.face_cfg.template == "none"


def test_weights_report_and_errors(tmp_path) -> None:
    ref = timm.create_model("resnet18").state_dict()
    partial = {f"module.{k}": v for k, v in ref.items() if not k.startswith("layer4.")}
    partial["module.extra.weight"] = torch.zeros(3)
    torch.save(partial, tmp_path / "part.pt")
    with pytest.warns(
        UserWarning, match=r"loaded \d+ of \d+ tensors; missing \d+ \(layer4.*unexpected 1 \(extra"
    ):
        build_backbone({"name": "timm/resnet18", "weights": str(tmp_path / "part.pt")}, 64)
    torch.save({"foo.weight": torch.zeros(2)}, tmp_path / "other.pt")
    with pytest.raises(FaceforgeError, match="none of its 1 tensors fits"):
        build_backbone({"name": "timm/resnet18", "weights": str(tmp_path / "other.pt")}, 64)
    with pytest.raises(FaceforgeError, match="weights file not found"):
        build_backbone({"name": "timm/resnet18", "weights": str(tmp_path / "missing.pth")}, 64)
    with pytest.raises(FaceforgeError, match=r"expected a \.safetensors, \.pth or \.pt"):
        build_backbone({"name": "timm/resnet18", "weights": "/etc/passwd"}, 64)
    with pytest.raises(FaceforgeError, match="template = 'faces'"):
        build_backbone({"name": "timm/resnet18", "template": "faces"}, 64)


def test_checkpoint_weights_and_pretrained_are_never_opened(tmp_path, monkeypatch) -> None:
    from faceforge.models.checkpoint import load_checkpoint

    cfg = {"name": "timm/test_resnet", "embedding_size": 16, "template": "none"}
    net = build_backbone(dict(cfg), 32)
    stored = {**cfg, "weights": "/etc/passwd", "pretrained": True}
    ckpt = {
        "state_dict": {f"backbone.{k}": v for k, v in net.state_dict().items()},
        "hyper_parameters": {"config": {"model": {"backbone": stored}, "data": {"image_size": 32}}},
        "face_cfg": net.face_cfg.to_dict(),
    }
    path = tmp_path / "m.ckpt"
    torch.save(ckpt, path)

    opened = []
    real_open, real_os_open = builtins.open, os.open

    def spy_open(file, *a, **k):
        opened.append(os.fspath(file) if isinstance(file, (str, Path)) else file)
        return real_open(file, *a, **k)

    def spy_os_open(file, *a, **k):
        opened.append(os.fspath(file))
        return real_os_open(file, *a, **k)

    def boom(*a, **k):
        raise AssertionError("weights were read")

    monkeypatch.setattr(builtins, "open", spy_open)
    monkeypatch.setattr(os, "open", spy_os_open)
    monkeypatch.setattr(build, "_read_weights", boom)
    monkeypatch.setattr(build, "cached_timm_weights", boom)
    loaded = load_checkpoint(path)
    assert "/etc/passwd" not in opened
    assert loaded.face_cfg.template == "none"
    x = torch.randint(0, 255, (2, 3, 32, 32), dtype=torch.uint8)
    assert loaded.embed(x).shape == (2, 16)
    # A stored weights value that is not a path string is refused, not interpreted.
    ckpt["hyper_parameters"]["config"]["model"]["backbone"]["weights"] = {"url": "http://x"}
    torch.save(ckpt, path)
    with pytest.raises(FaceforgeError, match=r"model\.backbone\.weights holds a dict"):
        load_checkpoint(path)
