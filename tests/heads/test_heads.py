"""Heads: registry and errors, gradients (float64 gradcheck), autocast safety, focal loss, semantics."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch.func import functional_call

from faceforge.errors import FaceforgeError
from faceforge.heads import HEADS, BaseHead, create_head, focal_from_ce, list_heads

ALL = [
    "softmax",
    "normface",
    "arcface",
    "cosface",
    "combined",
    "adaface",
    "curricularface",
    "subcenter_arcface",
]


def _make(name: str, d: int = 5, c: int = 7, **kw) -> BaseHead:
    extra = {"combined": {"m1": 1.0, "m2": 0.3, "m3": 0.2}, "subcenter_arcface": {"k": 2}}.get(name, {})
    return create_head(name, d, c, **{**extra, **kw})


# ----------------------------------------------------------------- registry, API, errors
def test_list_heads() -> None:
    assert list_heads() == sorted(ALL)
    assert set(HEADS) == set(ALL)


@pytest.mark.parametrize("name", ALL)
def test_forward_shapes_and_weight(name: str) -> None:
    head = _make(name, d=6, c=9)
    k = 2 if name == "subcenter_arcface" else 1
    assert head.weight.shape == (9 * k, 6)
    logits = head(torch.randn(4, 6), torch.tensor([0, 3, 8, 3]))
    assert logits.shape == (4, 9) and logits.dtype == torch.float32
    loss = head.loss(torch.randn(4, 6), torch.tensor([0, 3, 8, 3]))
    assert loss.dim() == 0 and torch.isfinite(loss)


@pytest.mark.parametrize("name", ALL)
def test_logits_and_cosine_are_the_forward_and_its_plain_cosine(name: str) -> None:
    head = _make(name, d=6, c=9, **({} if name in ("softmax", "normface") else {"margin": 0.3}))
    head.eval()  # AdaFace: the same batch statistics on both calls
    x, y = torch.randn(4, 6), torch.tensor([0, 3, 8, 3])
    logits, cos = head.logits_and_cosine(x, y)
    torch.testing.assert_close(logits, head(x, y))
    torch.testing.assert_close(cos, head.cosine(x))


def test_unknown_head_name_suggests() -> None:
    with pytest.raises(FaceforgeError, match=r"'arcfce'.*did you mean 'arcface'"):
        create_head("arcfce", 8, 10)


def test_unknown_keyword_is_a_user_error() -> None:
    with pytest.raises(FaceforgeError, match="margn"):
        create_head("arcface", 8, 10, margn=0.3)


def test_labels_out_of_range_name_the_value() -> None:
    head = create_head("arcface", 8, 10)
    with pytest.raises(FaceforgeError, match=r"label 10 .*\[0, 9\]"):
        head(torch.randn(2, 8), torch.tensor([1, 10]))
    with pytest.raises(FaceforgeError, match="label -3"):
        head.loss(torch.randn(2, 8), torch.tensor([-3, 1]))
    with pytest.raises(FaceforgeError, match=r"shape \[2\]"):
        head(torch.randn(2, 8), torch.tensor([1, 2, 3]))


def test_embedding_size_mismatch_names_shapes() -> None:
    head = create_head("cosface", 8, 10)
    with pytest.raises(FaceforgeError, match=r"\[batch, 8\].*\[2, 7\]"):
        head(torch.randn(2, 7), torch.tensor([1, 2]))


@pytest.mark.parametrize(
    ("kw", "match"),
    [({"scale": 0}, "scale"), ({"focal_gamma": -1}, "focal_gamma"), ({"reduction": "avg"}, "avg")],
)
def test_bad_options(kw: dict, match: str) -> None:
    with pytest.raises(FaceforgeError, match=match):
        create_head("arcface", 8, 10, **kw)


def test_margin_on_marginless_head_is_rejected() -> None:
    with pytest.raises(FaceforgeError, match="normface"):
        create_head("normface", 8, 10, margin=0.3)


def test_combined_margin_alias() -> None:
    assert create_head("combined", 4, 3, margin=0.2).m2 == 0.2
    with pytest.raises(FaceforgeError, match="disagree"):
        create_head("combined", 4, 3, margin=0.2, m2=0.3)


# ----------------------------------------------------------------- margins: semantics
def test_arcface_target_always_decreases_and_fallback_branch() -> None:
    head = create_head("arcface", 4, 1, scale=1.0, margin=0.5)
    t = torch.linspace(-1, 1, 2001).unsqueeze(1)
    out = head.apply_margin(t, torch.zeros(2001, dtype=torch.long))
    assert torch.all(out < t)
    th = math.cos(math.pi - 0.5)
    below = t[:, 0] <= th
    torch.testing.assert_close(out[below], t[below] - 0.5 * math.sin(0.5))
    torch.testing.assert_close(out[~below], torch.cos(torch.acos(t[~below]) + 0.5), atol=1e-6, rtol=0)


def test_arcface_easy_margin() -> None:
    head = create_head("arcface", 4, 2, scale=1.0, margin=0.5, easy_margin=True)
    cos = torch.tensor([[-0.3, 0.1], [0.6, 0.2]])
    out = head.apply_margin(cos, torch.tensor([0, 0]))
    assert out[0, 0] == pytest.approx(-0.3)  # cos <= 0: unchanged
    assert out[1, 0] == pytest.approx(math.cos(math.acos(0.6) + 0.5), abs=1e-6)
    assert out[1, 1] == pytest.approx(0.2)


def test_label_minus_one_rows_untouched() -> None:
    for name in ["arcface", "cosface", "combined"]:
        head = _make(name, scale=2.0)
        cos = torch.rand(3, 7) * 1.6 - 0.8
        out = head.apply_margin(cos, torch.tensor([-1, 2, -1]))
        torch.testing.assert_close(out[[0, 2]], 2.0 * cos[[0, 2]])
        assert out[1, 2] < 2.0 * cos[1, 2]


def test_curricularface_modulates_only_hard_negatives() -> None:
    head = create_head("curricularface", 4, 4, scale=1.0, margin=0.5)
    head.eval()
    head.t.fill_(0.4)
    cos = torch.tensor([[0.5, 0.9, 0.0, -0.2]])  # target 0.5: cos(θ+m) ≈ 0.0328 → 0.9 is hard, 0.0 is not
    out = head.apply_margin(cos, torch.tensor([0]))
    assert out[0, 1].item() == pytest.approx(0.9 * (0.4 + 0.9))
    assert out[0, 2].item() == pytest.approx(0.0) and out[0, 3].item() == pytest.approx(-0.2)
    assert out[0, 0].item() == pytest.approx(math.cos(math.acos(0.5) + 0.5), abs=1e-6)
    head.train()
    head.apply_margin(cos, torch.tensor([0]))
    assert head.t.item() == pytest.approx(0.01 * 0.5 + 0.99 * 0.4)


def test_subcenter_uses_nearest_subcenter() -> None:
    head = create_head("subcenter_arcface", 2, 2, k=3, scale=1.0, margin=0.0)
    with torch.no_grad():
        head.weight.copy_(torch.tensor([[1.0, 0], [0, 1], [-1, 0], [0, -1], [-1, -1], [1, -1]]))
    cos = head.cosine(torch.tensor([[1.0, 1.0]]))
    torch.testing.assert_close(cos, torch.tensor([[math.sqrt(0.5), 0.0]]))


def test_softmax_is_a_plain_linear_layer() -> None:
    head = create_head("softmax", 4, 3)
    x = torch.randn(2, 4)
    torch.testing.assert_close(head(x, torch.tensor([0, 1])), x @ head.weight.t())


def test_normface_is_scaled_cosine() -> None:
    head = create_head("normface", 4, 3, scale=10.0)
    x = torch.randn(2, 4)
    expected = 10.0 * F.normalize(x) @ F.normalize(head.weight).t()
    torch.testing.assert_close(head(x, torch.tensor([0, 1])), expected)


def test_adaface_eval_mode_freezes_batch_statistics() -> None:
    head = create_head("adaface", 4, 3)
    head.eval()
    head(torch.randn(5, 4) * 30, torch.tensor([0, 1, 2, 0, 1]))
    assert head.batch_mean.item() == 20.0 and head.batch_std.item() == 100.0
    head.train()
    head(torch.randn(5, 4) * 30, torch.tensor([0, 1, 2, 0, 1]))
    assert head.batch_mean.item() != 20.0


# ----------------------------------------------------------------- focal loss
def test_focal_gamma_zero_is_cross_entropy() -> None:
    head = create_head("arcface", 6, 5, focal_gamma=0.0)
    x, y = torch.randn(4, 6), torch.tensor([0, 1, 2, 3])
    torch.testing.assert_close(head.loss(x, y), F.cross_entropy(head(x, y), y))


def test_focal_matches_definition() -> None:
    head = create_head("cosface", 6, 5, focal_gamma=2.0, scale=4.0, reduction="none")
    x, y = torch.randn(4, 6), torch.tensor([0, 1, 2, 3])
    logits = head(x, y)
    p = logits.softmax(1)[torch.arange(4), y]
    torch.testing.assert_close(head.loss(x, y), -((1 - p) ** 2) * torch.log(p))


def test_focal_down_weights_easy_samples() -> None:
    ce = torch.tensor([0.01, 3.0])
    fl = focal_from_ce(ce, 2.0)
    assert fl[0] / ce[0] < 1e-3 and fl[1] / ce[1] > 0.9


@pytest.mark.parametrize("gamma", [0.5, 1.0, 2.0])
def test_focal_gradient_finite_at_zero_loss(gamma: float) -> None:
    ce = torch.tensor([0.0, 1e-30, 2.0], requires_grad=True)
    focal_from_ce(ce, gamma).sum().backward()
    assert torch.isfinite(ce.grad).all()


# ----------------------------------------------------------------- gradcheck (float64)
def _gradcheck_forward(head: BaseHead, wrt_embeddings: bool = True) -> None:
    torch.manual_seed(0)
    head = head.double()
    x = torch.randn(4, head.embedding_size, dtype=torch.float64, requires_grad=wrt_embeddings)
    w = head.weight.detach().clone().normal_().requires_grad_(True)
    y = torch.tensor([0, 3, 6, 3])

    def f(x: torch.Tensor, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = functional_call(head, {"weight": w}, (x, y))
        return logits, head.loss_from_logits(logits, y)

    assert torch.autograd.gradcheck(f, (x, w), eps=1e-6, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("name", [n for n in ALL if n != "adaface"])
def test_gradcheck_forward_and_loss(name: str) -> None:
    head = _make(name, scale=4.0)
    head.eval()  # frozen running statistics (CurricularFace t) so the function is deterministic
    if name == "curricularface":
        head.t.fill_(0.3)
    _gradcheck_forward(head)


def test_gradcheck_focal() -> None:
    _gradcheck_forward(_make("arcface", scale=4.0, focal_gamma=2.0))


def test_gradcheck_adaface() -> None:
    """The norms enter AdaFace as constants (paper); check w.r.t. the centres and the cosine."""
    head = _make("adaface", scale=4.0).eval()
    head.batch_mean.fill_(1.0)
    head.batch_std.fill_(0.5)
    _gradcheck_forward(head, wrt_embeddings=False)
    head = head.double()
    cos = (torch.rand(4, 7, dtype=torch.float64) * 1.8 - 0.9).requires_grad_(True)
    norms = torch.tensor([[0.5], [1.0], [1.5], [3.0]], dtype=torch.float64)
    y = torch.tensor([0, 3, 6, 3])
    assert torch.autograd.gradcheck(lambda c: head.apply_margin(c, y, norms), (cos,), eps=1e-6, atol=1e-5)


@pytest.mark.parametrize("name", ["arcface", "cosface", "combined", "curricularface", "subcenter_arcface"])
def test_gradcheck_margin_on_all_branches(name: str) -> None:
    """Targets in every branch: below cos(π − m) (fallback), negative, positive, near 1."""
    head = _make(name, scale=4.0).double().eval()
    cos = torch.tensor(
        [
            [-0.95, 0.1, -0.3, 0.2, 0.0, 0.5, -0.6],
            [0.2, -0.4, 0.3, -0.7, 0.1, 0.05, 0.6],
            [0.1, 0.2, 0.3, 0.4, 0.5, 0.97, -0.2],
            [0.3, 0.1, -0.1, 0.999, -0.5, 0.2, 0.4],
        ],
        dtype=torch.float64,
        requires_grad=True,
    )
    y = torch.tensor([0, 3, 5, 3])
    assert torch.autograd.gradcheck(lambda c: head.apply_margin(c, y), (cos,), eps=1e-7, atol=1e-5)


# ----------------------------------------------------------------- autocast, cosines at exactly ±1
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("name", ALL)
def test_autocast_cosine_at_plus_minus_one_is_finite(name: str, dtype: torch.dtype) -> None:
    d = c = 6
    head = _make(name, d=d, c=c, **({} if name == "softmax" else {"scale": 64.0}))
    k = getattr(head, "k", 1)
    with torch.no_grad():
        head.weight.zero_()
        for cls in range(c):  # every (sub-)centre of a class = its basis vector, un-normalised
            head.weight[cls * k : (cls + 1) * k, cls] = 0.01 * (cls + 1)
    basis = torch.eye(d)
    # rows: target cos +1, target cos −1, a non-target at +1, a non-target at −1
    raw = torch.stack([basis[0], -basis[1], basis[2], -basis[3]])
    labels = torch.tensor([0, 1, 5, 4])
    proj = torch.nn.Linear(d, d, bias=False)
    with torch.no_grad():
        proj.weight.copy_(torch.eye(d))
    x = raw.clone().requires_grad_(True)
    with torch.autocast("cpu", dtype=dtype):
        emb = proj(x)
        assert emb.dtype == dtype
        logits = head(emb, labels)
        loss = head.loss(emb, labels)
    assert logits.dtype == torch.float32 and loss.dtype == torch.float32
    if head.normalize:
        cos = head.cosine(raw)
        assert cos.max() == 1.0 and cos.min() == -1.0  # really at ±1
    loss.backward()
    assert torch.isfinite(logits).all() and torch.isfinite(loss)
    assert torch.isfinite(x.grad).all() and torch.isfinite(head.weight.grad).all()
    assert torch.isfinite(proj.weight.grad).all()


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("name", [n for n in ALL if n != "softmax"])
def test_apply_margin_gradient_finite_at_plus_minus_one(name: str, dtype: torch.dtype) -> None:
    """The cosine itself at ±1 (targets and non-targets): arccos/sqrt must not leak inf or NaN."""
    head = _make(name, d=4, c=4, scale=64.0)
    cos = torch.tensor(
        [[1.0, -1.0, 0.2, 0.0], [-1.0, 1.0, 0.3, -0.5], [0.1, 0.2, -1.0, 1.0], [0.0, 0.0, 1.0, -1.0]],
        requires_grad=True,
    )
    labels = torch.tensor([0, 0, 2, 3])  # targets at +1, −1, −1, −1; non-targets at ±1
    norms = torch.tensor([[5.0], [20.0], [40.0], [0.0]])
    with torch.autocast("cpu", dtype=dtype):
        logits = head.apply_margin(cos, labels, norms)
        loss = head.loss_from_logits(logits, labels)
    loss.backward()
    assert torch.isfinite(logits).all() and torch.isfinite(loss)
    assert torch.isfinite(cos.grad).all()
