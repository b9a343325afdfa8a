"""GhostFaceNetV1/V2: Keras-reference parameter counts, shapes, gradients, face_cfg."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from faceforge.errors import FaceforgeError
from faceforge.models import FaceConfig, create_model


def keras_counts(model: nn.Module) -> tuple[int, int]:
    """(Keras trainable, Keras total): torch params; params + BN running_mean/var (no num_batches_tracked)."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    stats = sum(b.numel() for n, b in model.named_buffers() if n.endswith(("running_mean", "running_var")))
    return trainable, trainable + stats


@pytest.mark.parametrize(
    ("name", "stride", "trainable", "total"),
    [
        ("ghostfacenetv1", 1, 4_059_748, 4_088_300),
        ("ghostfacenetv1", 2, 4_037_836, 4_066_388),
        ("ghostfacenetv2", 1, 6_795_720, 6_880_288),
        ("ghostfacenetv2", 2, 6_754_536, 6_839_104),
    ],
)
def test_param_counts_match_keras_reference(name: str, stride: int, trainable: int, total: int) -> None:
    model = create_model(name, width=1.3, stride=stride)
    assert keras_counts(model) == (trainable, total)


@pytest.mark.parametrize("name", ["ghostfacenetv1", "ghostfacenetv2"])
@pytest.mark.parametrize("stride", [1, 2])
def test_shapes_train_and_eval(name: str, stride: int) -> None:
    torch.manual_seed(0)
    model = create_model(name, width=0.3, stride=stride, embedding_size=128)
    x = torch.randn(2, 3, 112, 112)
    model.train()
    y = model(x)
    assert y.shape == (2, 128)
    model.eval()
    with torch.no_grad():
        y = model(x)
    assert y.shape == (2, 128)
    assert torch.isfinite(y).all()
    # raw embedding: not L2-normalised
    assert not torch.allclose(y.norm(dim=1), torch.ones(2), atol=1e-3)


def test_full_width_stride_variants_shapes() -> None:
    for stride, fmap in ((1, (7, 7)), (2, (4, 4))):
        with torch.device("meta"):  # shapes only: no real compute needed at full width
            model = create_model("ghostfacenetv1", stride=stride).eval()
            feats = model.forward_features(torch.empty(2, 3, 112, 112))
            emb = model.forward_head(feats)
        assert feats.shape == (2, 664, *fmap)
        assert emb.shape == (2, 512)


@pytest.mark.parametrize("input_size", [96, (128, 112), 64])
def test_any_input_size(input_size: int | tuple[int, int]) -> None:
    model = create_model("ghostfacenetv1", width=0.5, stride=2, input_size=input_size).eval()
    hw = (input_size, input_size) if isinstance(input_size, int) else input_size
    with torch.no_grad():
        y = model(torch.randn(1, 3, *hw))
    assert y.shape == (1, 512)
    assert model.face_cfg.input_size == hw


def test_wrong_input_size_is_a_clear_error() -> None:
    model = create_model("ghostfacenetv1", width=0.5, stride=2).eval()
    with pytest.raises(FaceforgeError, match="input_size"):
        model(torch.randn(1, 3, 96, 96))


@pytest.mark.parametrize("name", ["ghostfacenetv1", "ghostfacenetv2"])
def test_gradients_reach_every_parameter(name: str) -> None:
    torch.manual_seed(0)
    model = create_model(name, width=0.3, stride=2, dropout=0.2)
    model.train()
    y = model(torch.randn(2, 3, 112, 112))
    y.pow(2).sum().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing
    zero = [n for n, p in model.named_parameters() if p.grad.abs().sum() == 0]
    assert not zero


def test_prelu_is_per_channel_everywhere_including_se() -> None:
    model = create_model("ghostfacenetv1", width=1.0)
    prelus = [m for m in model.modules() if isinstance(m, nn.PReLU)]
    assert prelus and all(m.num_parameters > 1 for m in prelus)
    assert not any(isinstance(m, (nn.ReLU, nn.ReLU6)) for m in model.modules())
    se_blocks = [m for n, m in model.named_modules() if n.endswith(".se") and not isinstance(m, nn.Identity)]
    assert len(se_blocks) == 7
    assert all(
        isinstance(se.act, nn.PReLU) and se.act.num_parameters == se.conv_reduce.out_channels
        for se in se_blocks
    )


def test_v2_has_dfc_only_after_v1_stacks() -> None:
    v2 = create_model("ghostfacenetv2", width=0.5)
    attn = [b.ghost1.attn is not None for b in v2.blocks]
    assert attn == [False, False] + [True] * 14
    v1 = create_model("ghostfacenetv1", width=0.5)
    assert not any(b.ghost1.attn is not None for b in v1.blocks)
    mixed = create_model("ghostfacenetv1", width=0.5, num_ghost_v1_stacks=10)
    assert sum(b.ghost1.attn is not None for b in mixed.blocks) == 6


@pytest.mark.parametrize("width", [0.3, 0.75, 1.3])
def test_any_width(width: float) -> None:
    model = create_model("ghostfacenetv1", width=width, stride=2).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 112, 112)).shape == (1, 512)


def test_face_cfg() -> None:
    model = create_model("ghostfacenetv2", width=0.5, stride=2, embedding_size=256)
    cfg = model.face_cfg
    assert isinstance(cfg, FaceConfig)
    assert cfg.input_size == (112, 112)
    assert cfg.color == "RGB"
    assert cfg.template == "arcface"
    assert cfg.embedding_size == 256
    assert cfg.extra["family"] == "ghostfacenet" and cfg.extra["version"] == "v2"
    assert FaceConfig.from_dict(cfg.to_dict()) == cfg


@pytest.mark.parametrize(
    ("kwargs", "word"),
    [
        ({"stride": 3}, "stride"),
        ({"width": 0}, "width"),
        ({"dropout": 1.5}, "dropout"),
        ({"input_size": (1, 2, 3)}, "input_size"),
    ],
)
def test_bad_arguments(kwargs: dict, word: str) -> None:
    with pytest.raises(FaceforgeError, match=word):
        create_model("ghostfacenetv1", **kwargs)
