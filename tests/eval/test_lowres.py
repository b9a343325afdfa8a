"""Low-resolution degradation and per-factor verification."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from faceforge.errors import FaceforgeError
from faceforge.eval.lowres import degrade, evaluate_low_resolution
from faceforge.eval.verification import PairImages


def textured_pairs(n_ids: int = 20, per_id: int = 2, size: int = 32, seed: int = 0) -> PairImages:
    """Identity = a fine random texture (destroyed by downscaling) plus per-image noise."""
    g = torch.Generator().manual_seed(seed)
    base = torch.rand(n_ids, 3, size, size, generator=g) * 200
    imgs = base.repeat_interleave(per_id, 0) + torch.randn(n_ids * per_id, 3, size, size, generator=g) * 25
    images = imgs.clamp(0, 255).to(torch.uint8)
    ia, ib, same = [], [], []
    for i in range(n_ids):
        j = (i + 1) % n_ids
        ia += [i * per_id, i * per_id]
        ib += [i * per_id + 1, j * per_id]
        same += [True, False]
    return PairImages(images, np.array(ia), np.array(ib), np.array(same), [])


def pixel_embed(x: torch.Tensor) -> torch.Tensor:
    """Fake model: mean-centred pixels (a pixel-statistics embedding)."""
    f = x.float().flatten(1)
    return f - f.mean(1, keepdim=True)


def high_freq_energy(x: torch.Tensor) -> float:
    x = x.float()
    return float((x[..., 1:] - x[..., :-1]).abs().mean())


def test_factor_one_is_identity():
    x = textured_pairs().images
    assert torch.equal(degrade(x, 1), x)
    assert degrade(x, 1).data_ptr() != x.data_ptr()


def test_larger_factors_lose_detail():
    x = textured_pairs().images
    energies = [high_freq_energy(degrade(x, f)) for f in (1, 2, 4, 8)]
    assert all(a > b for a, b in itertools.pairwise(energies)), energies
    assert energies[-1] < 0.3 * energies[0]
    for f in (2, 4, 8, 3.5):
        y = degrade(x, f)
        assert y.dtype == torch.uint8 and y.shape == x.shape
    # Smooth content survives: a constant image stays constant.
    flat = torch.full((1, 3, 32, 32), 77, dtype=torch.uint8)
    assert torch.equal(degrade(flat, 4), flat)


def test_per_factor_accuracy_and_keys():
    data = textured_pairs()
    res = evaluate_low_resolution(pixel_embed, data, factors=(1, 2, 8), batch_size=7, flip=False)
    assert list(res) == ["x1", "x2", "x8"]
    acc = {k: v["accuracy"] for k, v in res.items()}
    assert acc["x1"] > 0.9
    assert acc["x8"] < acc["x1"]
    # Every factor scores the same 40 pairs (10 folds of 4): a whole number of right decisions.
    for row in res.values():
        assert row["n_pairs"] == 40 and abs(row["accuracy"] * 40 - round(row["accuracy"] * 40)) < 1e-6


class RecordingSR(torch.nn.Module):
    """Nearest upscaling that records the sizes it was given."""

    def __init__(self, size: int) -> None:
        super().__init__()
        self.size = size
        self.seen: list[tuple[int, ...]] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.append(tuple(x.shape))
        assert x.dtype == torch.float32 and 0 <= float(x.min()) and float(x.max()) <= 1
        return torch.nn.functional.interpolate(x, size=(self.size, self.size), mode="nearest")


def test_sr_path_gets_small_images():
    data = textured_pairs()
    sr = RecordingSR(32)
    res = evaluate_low_resolution(pixel_embed, data, factors=(1, 4), sr_module=sr, batch_size=16)
    assert list(res) == ["x1", "x4", "x4+sr"]
    assert {s[-2:] for s in sr.seen} == {(8, 8)}
    assert sum(s[0] for s in sr.seen) == len(data.images)
    sr_row = res["x4+sr"]
    assert sr_row["n_pairs"] == res["x4"]["n_pairs"] == 40
    assert abs(sr_row["accuracy"] * 40 - round(sr_row["accuracy"] * 40)) < 1e-6


def test_sr_wrong_size_and_bad_inputs():
    data = textured_pairs()
    with pytest.raises(FaceforgeError, match="sr_module returned size"):
        evaluate_low_resolution(pixel_embed, data, factors=(2,), sr_module=RecordingSR(20))
    with pytest.raises(FaceforgeError, match=r"factor must be >= 1, got 0\.5"):
        degrade(data.images, 0.5)
    with pytest.raises(FaceforgeError, match="unknown interpolation 'cubic'"):
        degrade(data.images, 2, "cubic")
    with pytest.raises(FaceforgeError, match="uint8"):
        degrade(data.images.float(), 2)
