"""``timm/<name>`` backbones."""

from __future__ import annotations

import pytest
import torch

from faceforge.errors import FaceforgeError
from faceforge.models import create_model
from faceforge.models.backbones.timm_wrapper import TimmBackbone

pytest.importorskip("timm")


def test_timm_resnet_with_embedding_neck() -> None:
    model = create_model("timm/resnet18", embedding_size=128)
    assert model.face_cfg.embedding_size == 128 and model.face_cfg.extra["arch"] == "resnet18"
    model.train()
    y = model(torch.randn(2, 3, 112, 112))
    assert y.shape == (2, 128)
    y.sum().backward()
    assert model.neck[0].weight.grad is not None


def test_timm_kwargs_pass_through() -> None:
    model = create_model("timm/vit_tiny_patch16_224", img_size=112, embedding_size=64).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 112, 112)).shape == (1, 64)


def test_unknown_timm_name() -> None:
    with pytest.raises(FaceforgeError, match=r"resnet18"):
        create_model("timm/resnet181")


def test_bad_timm_kwarg() -> None:
    with pytest.raises(FaceforgeError, match="bogus"):
        create_model("timm/resnet18", bogus=1)


def test_timm_names_resolve_through_the_registry() -> None:
    from faceforge.models.backbones.registry import MODELS

    assert "timm/resnet18" in MODELS
    assert "timm/" not in MODELS
    model = MODELS.get("timm/resnet18")(embedding_size=32)
    assert model.face_cfg.embedding_size == 32


@pytest.mark.parametrize("name", ["lcnet_050", "mobilenetv3_small_050"])
def test_models_with_a_conv_head_after_pooling_get_the_right_neck_width(name: str) -> None:
    # pre_logits of these models is head_hidden_size wide (conv head after pooling), not num_features
    m = TimmBackbone(name, embedding_size=32).eval()
    with torch.no_grad():
        pooled = m.model.forward_head(m.model.forward_features(torch.randn(2, 3, 64, 64)), pre_logits=True)
        out = m(torch.randn(2, 3, 64, 64))
    assert m.neck[0].in_features == pooled.shape[1] != m.model.num_features
    assert out.shape == (2, 32)
