"""Backbone registry: names, kwargs checking, error messages."""

from __future__ import annotations

import pytest
from torch import nn

from faceforge.errors import FaceforgeError
from faceforge.models import FaceConfig, create_model, list_models, register_model
from faceforge.models.backbones.registry import MODELS


def test_list_models_contains_ghostfacenets() -> None:
    names = list_models()
    assert names == sorted(names)
    assert {"ghostfacenetv1", "ghostfacenetv2"} <= set(names)


def test_unknown_name_lists_known_and_suggests() -> None:
    with pytest.raises(FaceforgeError) as ei:
        create_model("ghostfacenetv3")
    msg = str(ei.value)
    assert "'ghostfacenetv3'" in msg
    assert "did you mean" in msg
    assert "ghostfacenetv1" in msg and "known:" in msg


def test_unknown_kwarg_lists_accepted_with_did_you_mean() -> None:
    with pytest.raises(FaceforgeError) as ei:
        create_model("ghostfacenetv1", widht=0.5)
    msg = str(ei.value)
    assert "'widht'" in msg
    assert "did you mean 'width'" in msg
    for accepted in ("width", "stride", "embedding_size", "dropout", "input_size"):
        assert accepted in msg


def test_register_model_roundtrip() -> None:
    name = "_test_tiny_backbone"
    if name not in MODELS:

        @register_model(name)
        def _tiny(embedding_size: int = 8) -> nn.Module:
            m = nn.Sequential(nn.Flatten(), nn.LazyLinear(embedding_size))
            m.face_cfg = FaceConfig(embedding_size=embedding_size)
            return m

    m = create_model(name, embedding_size=4)
    assert m.face_cfg.embedding_size == 4
    with pytest.raises(ValueError, match="registered twice"):
        register_model(name)(lambda: nn.Identity())
    with pytest.raises(FaceforgeError, match="embeding_size"):
        create_model(name, embeding_size=4)


def test_non_string_name() -> None:
    with pytest.raises(FaceforgeError):
        create_model(None)  # type: ignore[arg-type]


def test_one_option_check_behind_backbones_heads_transforms_and_config() -> None:
    """Backbone arguments, head options, transform options and backbone config keys are checked by one
    function (:func:`faceforge.registry.check_options`): the same one-line shape everywhere."""
    from faceforge.data.transforms import build_transforms
    from faceforge.heads import create_head
    from faceforge.models.build import build_backbone

    messages = []
    for call in (
        lambda: create_model("mobilefacenet", embeding_size=8),
        lambda: create_head("arcface", 8, 4, margn=0.5),
        lambda: build_transforms([{"name": "rotation", "degree": 3}]),
        lambda: build_backbone({"name": "mobilefacenet", "embeding_size": 8}),
    ):
        with pytest.raises(FaceforgeError) as ei:
            call()
        messages.append(str(ei.value))
    for msg in messages:
        assert "\n" not in msg and "did you mean" in msg and "; accepted: " in msg, msg
    assert "unknown config key 'model.backbone.embeding_size' (did you mean 'embedding_size'?)" in messages[3]
