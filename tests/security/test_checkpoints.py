"""Checkpoints are data: a stored config that asks for pretrained weights, URLs, paths or arbitrary keyword
arguments is refused with one line before anything is built or fetched; pickled code never runs; faceforge's
own checkpoints (training, ``models import``) still load."""

from __future__ import annotations

import os
import pickle

import pytest
import torch

from faceforge.errors import FaceforgeError
from faceforge.models.checkpoint import check_face_cfg, load_checkpoint

_GHOST = {"name": "ghostfacenetv1"}
HOSTILE = {
    "pretrained url": {"name": "timm/resnet18", "pretrained": True, "pretrained_cfg_overlay": {"url": "http://evil.example/w.pth"}},
    "pretrained dict": {"name": "timm/resnet18", "pretrained": {"url": "http://evil.example/w.pth"}},
    "checkpoint path": {"name": "timm/resnet18", "checkpoint_path": "/etc/passwd"},
    "cache dir": {"name": "timm/resnet18", "cache_dir": "/tmp/x"},
    "hub name": {"name": "timm/hf-hub:evil/model"},
    "url name": {"name": "timm/https://evil.example/m"},
    "path option": {"name": "ghostfacenetv1", "width": "/etc/passwd"},
    "unknown kwarg": {"name": "ghostfacenetv1", "init_file": "w.pth"},
    "weights not a path": {"name": "ghostfacenetv1", "weights": {"url": "http://evil.example/w.pth"}},
    "nested value": {"name": "ghostfacenetv1", "width": {"url": "http://x"}},
    "unregistered": {"name": "os.system"},
    "huge embedding": {"name": "ghostfacenetv1", "embedding_size": 2**31},
    # an ensemble's members are sections of their own: every refusal above holds inside one
    "ensemble member path": {"name": "ensemble", "members": [{"name": "timm/resnet18", "cache_dir": "/x"}]},
    "ensemble member url": {"name": "ensemble", "members": [_GHOST, {"name": "timm/https://evil.example/m"}]},
    "ensemble nested": {"name": "ensemble", "members": [{"name": "ensemble", "members": [_GHOST]}]},
    "ensemble members a path": {"name": "ensemble", "members": "/etc/passwd"},
    "ensemble too many members": {"name": "ensemble", "members": [_GHOST] * 100_000},
    "ensemble member huge embedding": {"name": "ensemble", "members": [{**_GHOST, "embedding_size": 2**31}]},
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_configs_are_refused_without_network(case, tmp_path, no_network, h) -> None:
    from faceforge.infer.loading import load_model

    p = h.write_checkpoint(tmp_path / "evil.ckpt", HOSTILE[case])
    for load in (lambda: load_checkpoint(p), lambda: load_model(p)):
        with pytest.raises(FaceforgeError) as ei:
            load()
        msg = h.one_line(ei.value)
        assert "evil.ckpt" in msg and ("refused" in msg or "not a registered" in msg or "range" in msg), msg
    assert no_network == []


def test_recorded_pretrained_flag_is_never_passed_on(tmp_path, no_network) -> None:
    """A run that started from ImageNet weights records pretrained: true; its own weights are loaded."""
    from faceforge.models.build import build_backbone

    cfg = {"name": "timm/resnet18", "embedding_size": 16, "input_size": 32, "pretrained": True}
    state = build_backbone({k: v for k, v in cfg.items() if k != "pretrained"}, 32).state_dict()
    p = tmp_path / "run.ckpt"
    torch.save(
        {
            "state_dict": {f"backbone.{k}": v for k, v in state.items()},
            "hyper_parameters": {"config": {"model": {"backbone": cfg}, "data": {"image_size": 32}}},
        },
        p,
    )
    m = load_checkpoint(p)
    assert no_network == []
    got = m.backbone.state_dict()
    assert all(torch.equal(got[k], state[k]) for k in state)


def test_gigantic_declared_shape_is_refused_before_allocating(tmp_path, h) -> None:
    # width 40 within the numeric bounds: only the meta-device build shows it does not fit the tensors
    p = h.write_checkpoint(
        tmp_path / "wide.ckpt", {**h.tiny_backbone_cfg(), "width": 40.0, "embedding_size": 4096}
    )
    err, rise = h.peak_rss_mib(lambda: load_checkpoint(p))
    assert isinstance(err, FaceforgeError) and "does not match backbone" in h.one_line(err), err
    assert rise < 150, f"{rise:.0f} MiB allocated for a refused checkpoint"


def test_pickled_code_in_a_checkpoint_never_runs(tmp_path, h) -> None:
    from faceforge.infer.loading import load_model

    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    p = tmp_path / "code.ckpt"
    with open(p, "wb") as fh:
        pickle.dump({"state_dict": {}, "x": Evil()}, fh)
    for load in (lambda: load_checkpoint(p), lambda: load_model(p)):
        with pytest.raises(FaceforgeError) as ei:
            load()
        h.one_line(ei.value)
    assert not marker.exists()


def test_stored_face_cfg_is_range_checked(tmp_path, h) -> None:
    base = {"input_size": [112, 112], "color": "RGB", "mean": [0.5] * 3, "std": [0.5] * 3,
            "template": "arcface", "embedding_size": 16}  # fmt: skip
    assert check_face_cfg(base, "x").input_size == (112, 112)
    bad = {
        "input_size": [30000, 30000],
        "mean": [0.5, 0.5],
        "std": [0.5, 0.0, 0.5],
        "color": "RGBA",
        "template": "../../t",
        "embedding_size": True,
    }
    for key, value in bad.items():
        with pytest.raises(FaceforgeError, match=f"face_cfg.{key}") as ei:
            check_face_cfg({**base, key: value}, "model.ckpt")
        h.one_line(ei.value)
    p = h.write_checkpoint(
        tmp_path / "fc.ckpt", h.tiny_backbone_cfg(), face_cfg={**base, "input_size": [30000, 30000]}
    )
    with pytest.raises(FaceforgeError, match="input_size"):
        load_checkpoint(p)


def test_own_checkpoints_still_load(tmp_path, h) -> None:
    """A training checkpoint (full config, shape options) and a ``models import`` file load."""
    from faceforge.models.backbones import create_model
    from faceforge.models.foreign import import_weights

    p = h.write_checkpoint(tmp_path / "train.ckpt", h.tiny_backbone_cfg())
    assert load_checkpoint(p).face_cfg.embedding_size == 16
    mbf = create_model("mbf", embedding_size=64)
    src = tmp_path / "backbone.pth"
    torch.save(mbf.state_dict(), src)
    out, _ = import_weights(src, tmp_path / "imported.ckpt", arch="mbf")
    loaded = load_checkpoint(out)
    assert loaded.face_cfg.embedding_size == 64
