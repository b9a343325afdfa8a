"""Inference rewrites (faceforge.models.optimize): BatchNorm folding and NHWC keep the function, fold
only what is safe to fold, never touch the caller's module, and are dropped when they change outputs."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from faceforge.models import optimize
from faceforge.models.optimize import fold_batchnorm, optimize_for_inference


def _randomise_bn(model: nn.Module, seed: int = 0) -> nn.Module:
    """Trained-looking BatchNorm statistics, so that a wrong fold changes the output."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.normal_(0, 0.5, generator=g)
            m.running_var.uniform_(0.3, 3.0, generator=g)
            m.weight.data.uniform_(0.5, 2.0, generator=g)
            m.bias.data.normal_(0, 0.5, generator=g)
    return model.eval()


class Plain(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.c1, self.b1 = nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8)  # conv with a bias
        self.c2, self.b2 = nn.Conv2d(8, 8, 3, padding=1, groups=8, bias=False), nn.BatchNorm2d(8)
        self.fc = nn.Linear(8 * 8 * 8, 16)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.b1(self.c1(x)))
        x = torch.relu(self.b2(self.c2(x)))
        return self.fc(x.flatten(1))


class PreBnResidual(nn.Module):
    """The conv's output feeds the BatchNorm *and* the residual: folding would change the residual."""

    def __init__(self) -> None:
        super().__init__()
        self.c, self.b = nn.Conv2d(3, 3, 3, padding=1), nn.BatchNorm2d(3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.c(x)
        return (self.b(y) + y).flatten(1)


class Shared(nn.Module):
    """One conv run twice, each time into its own BatchNorm: its weights cannot absorb both."""

    def __init__(self) -> None:
        super().__init__()
        self.c, self.b1, self.b2 = nn.Conv2d(3, 3, 3, padding=1), nn.BatchNorm2d(3), nn.BatchNorm2d(3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (self.b1(self.c(x)) + self.b2(self.c(x))).flatten(1)


class StdConv(nn.Conv2d):
    """Weight standardisation in forward: a scale folded into the weight would be normalised away."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight - self.weight.mean((1, 2, 3), keepdim=True)
        w = w / self.weight.std((1, 2, 3), keepdim=True)
        return self._conv_forward(x, w, self.bias)


class WithStdConv(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.c, self.b = StdConv(3, 4, 3, padding=1), nn.BatchNorm2d(4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.b(self.c(x)).flatten(1)


class WithLayerNorm(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.c, self.b, self.n = nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.LayerNorm(4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.n(self.b(self.c(x)).permute(0, 2, 3, 1)).flatten(1)


X = torch.randn(4, 3, 8, 8, generator=torch.Generator().manual_seed(1))


def _same(a: nn.Module, b: nn.Module, x: torch.Tensor = X) -> float:
    with torch.inference_mode():
        ya, yb = a(x), b(x)
    return float(((ya - yb).norm(dim=1) / ya.norm(dim=1)).max())


def test_fold_keeps_the_function_and_removes_every_batchnorm():
    model = _randomise_bn(Plain())
    folded, n = fold_batchnorm(model, X[:1])
    assert n == 2
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    assert _same(model, folded) < 1e-5
    # the statistics matter: dropping the BatchNorms without folding them changes the output
    unfolded = fold_batchnorm(model, X[:1])[0]
    unfolded.load_state_dict(model.state_dict(), strict=False)
    assert _same(model, unfolded) > 1e-2


@pytest.mark.parametrize("cls", [PreBnResidual, Shared, WithStdConv])
def test_unsafe_pairs_are_not_folded(cls):
    model = _randomise_bn(cls())
    folded, n = fold_batchnorm(model, X[:1])
    assert n == 0
    assert _same(model, folded) < 1e-6


def test_the_callers_module_is_untouched():
    model = _randomise_bn(Plain())
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rw = optimize_for_inference(model, (8, 8))
    assert rw.folded == 2 and rw.channels_last and rw.module is not model
    after = model.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    assert all(p.is_contiguous() for p in model.parameters())  # still NCHW
    assert rw.module.c1.weight.is_contiguous(memory_format=torch.channels_last)
    x = X.contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        assert float(((rw.module(x) - model(X)).norm(dim=1) / model(X).norm(dim=1)).max()) < 1e-5
    assert "2 BatchNorm folded, channels_last (checked: max deviation" in rw.fact


def test_layer_norm_models_stay_nchw():
    rw = optimize_for_inference(_randomise_bn(WithLayerNorm()), (8, 8))
    assert rw.folded == 1 and not rw.channels_last
    assert "NCHW kept: LayerNorm model" in rw.fact


def test_a_rewrite_that_changes_outputs_is_dropped(monkeypatch):
    model = _randomise_bn(Plain())

    def wrong_fold(module, example):
        bad = type(module)()  # fresh weights: a different function
        return bad.eval(), 2

    monkeypatch.setattr(optimize, "fold_batchnorm", wrong_fold)
    rw = optimize_for_inference(model, (8, 8), channels_last=False)
    assert rw.module is model and rw.folded == 0
    assert "BatchNorm folding dropped (deviation" in rw.fact


def test_no_convolution_no_rewrite():
    mlp = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 4)).eval()
    rw = optimize_for_inference(mlp, (8, 8))
    assert rw.module is mlp and rw.folded == 0 and not rw.channels_last


def test_torch_runner_runs_the_checked_rewrite():
    from faceforge.infer.loading import torch_runner

    model = _randomise_bn(Plain())
    x = X.numpy()
    plain = torch_runner(model, "cpu", input_size=(8, 8), rewrite=False)
    fast = torch_runner(model, "cpu", input_size=(8, 8))
    assert plain.rewrite_fact == "as built" and fast.channels_last
    a, b = plain(x), fast(x)
    np.testing.assert_allclose(b, a, rtol=0, atol=1e-5 * float(np.abs(a).max()))
    assert fast.module is model  # the runner keeps the caller's module as given


def test_a_failing_step_is_found_and_the_other_kept(monkeypatch):
    """Fold and NHWC are checked together; when that fails each is checked alone."""
    model = _randomise_bn(Plain())
    monkeypatch.setattr(optimize, "fold_batchnorm", lambda module, example: (type(module)().eval(), 2))
    rw = optimize_for_inference(model, (8, 8))
    assert rw.channels_last and rw.folded == 0 and rw.module is not model
    assert "channels_last (checked" in rw.fact and "BatchNorm folding dropped (deviation" in rw.fact
    assert _same(model, rw.module, X.contiguous(memory_format=torch.channels_last)) < 1e-5
    assert all(p.is_contiguous() for p in model.parameters())  # the caller's module still NCHW
