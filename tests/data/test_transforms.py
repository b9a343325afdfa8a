"""Tests for faceforge.data.transforms."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from faceforge.data.transforms import build_transforms
from faceforge.errors import FaceforgeError


def _img() -> np.ndarray:
    rng = np.random.default_rng(0)
    x = np.zeros((32, 24, 3), np.uint8)
    x[:, :12] = 200  # left half bright
    return x + rng.integers(0, 20, x.shape, dtype=np.uint8)


def test_flip_numpy_and_tensor() -> None:
    t = build_transforms([{"name": "flip", "p": 1.0}])
    x = _img()
    y = t(x)
    assert isinstance(y, np.ndarray) and y.dtype == np.uint8 and np.array_equal(y, x[:, ::-1])
    xt = torch.from_numpy(x).permute(2, 0, 1).contiguous()
    yt = t(xt)
    assert isinstance(yt, torch.Tensor) and yt.shape == (3, 32, 24) and yt.dtype == torch.uint8
    assert torch.equal(yt, xt.flip(-1))
    assert np.array_equal(build_transforms([{"name": "flip", "p": 0.0}])(x), x)


def test_float_tensor_stays_float() -> None:
    x = torch.rand(3, 16, 16)
    y = build_transforms([{"name": "color_jitter", "brightness": 0.5}, {"name": "rotation", "degrees": 20}])(
        x
    )
    assert y.dtype == torch.float32 and y.shape == x.shape and float(y.min()) >= 0 and float(y.max()) <= 1
    assert not torch.equal(x, y)


def test_random_resized_crop_and_resize_sizes() -> None:
    torch.manual_seed(0)
    t = build_transforms([{"name": "random_resized_crop", "size": [20, 10], "scale": [0.5, 0.9]}])
    outs = [t(_img()) for _ in range(5)]
    assert all(o.shape == (20, 10, 3) for o in outs)
    assert any(not np.array_equal(outs[0], o) for o in outs[1:])
    assert build_transforms([{"name": "resize", "size": 8}])(_img()).shape == (8, 8, 3)


def test_color_jitter_changes_brightness() -> None:
    x = _img()
    torch.manual_seed(0)
    y = build_transforms([{"name": "color_jitter", "brightness": 0.9}])(x)
    assert y.shape == x.shape and y.dtype == np.uint8
    assert abs(float(y.mean()) - float(x.mean())) > 0.5
    g = build_transforms([{"name": "color_jitter", "saturation": 0.0, "hue": 0.3}])(x)
    assert not np.array_equal(g, x)


def test_low_resolution_loses_detail_keeps_size() -> None:
    rng = np.random.default_rng(1)
    x = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    y = build_transforms([{"name": "low_resolution", "factor": [4, 4], "p": 1.0}])(x)
    assert y.shape == x.shape
    # high-frequency energy drops a lot after 4x down/up-scaling of noise
    hf = lambda a: float(np.abs(np.diff(a.astype(np.float32), axis=1)).mean())  # noqa: E731
    assert hf(y) < 0.6 * hf(x)


def test_rotation_moves_pixels_and_seeding() -> None:
    x = _img()
    t = build_transforms([{"name": "rotate", "degrees": [30, 30]}])
    y = t(x)
    assert y.shape == x.shape and not np.array_equal(x, y)
    torch.manual_seed(3)
    c = build_transforms([{"name": "flip"}, {"name": "rotation", "degrees": 15}, {"name": "low_resolution"}])
    a = [c(x) for _ in range(4)]
    torch.manual_seed(3)
    b = [c(x) for _ in range(4)]
    assert all(np.array_equal(u, v) for u, v in zip(a, b))


def test_normalize_returns_float_chw() -> None:
    y = build_transforms([{"name": "normalize", "mean": [0.5] * 3, "std": [0.5] * 3}])(
        np.full((4, 4, 3), 255, np.uint8)
    )
    assert isinstance(y, torch.Tensor) and y.shape == (3, 4, 4) and torch.allclose(y, torch.ones(3, 4, 4))


def test_config_errors() -> None:
    with pytest.raises(
        FaceforgeError, match=r"transforms\[0\]: unknown transform 'flp' \(did you mean 'flip'\?\)"
    ):
        build_transforms([{"name": "flp"}])
    with pytest.raises(FaceforgeError, match=r"transforms\[1\] \(rotation\): unknown option 'degree'"):
        build_transforms([{"name": "flip"}, {"name": "rotation", "degree": 3}])
    with pytest.raises(FaceforgeError, match=r"transforms\[0\]: transform 'flip': p=2 must be in \[0, 1\]"):
        build_transforms([{"name": "flip", "p": 2}])
    with pytest.raises(FaceforgeError, match="factor"):
        build_transforms([{"name": "low_resolution", "factor": [0.5, 2]}])
    with pytest.raises(FaceforgeError, match="missing 'name'"):
        build_transforms([{"p": 0.5}])


def test_random_conv_keeps_shape_and_scrambles_texture() -> None:
    """RandConv: a 1×1 kernel is a per-pixel colour map (an affine function of the input channels,
    so edges stay where they were); larger kernels change the local texture; ``mix`` 1 is the input."""
    x = _img()
    torch.manual_seed(0)
    one = build_transforms([{"name": "random_conv", "kernel_sizes": [1], "mix": 0.0, "p": 1.0}])(x)
    assert one.shape == x.shape and one.dtype == np.uint8
    design = np.concatenate([x.reshape(-1, 3).astype(np.float64), np.ones((x.size // 3, 1))], axis=1)
    for c in range(3):
        y = one[..., c].reshape(-1).astype(np.float64)
        keep = (y > 0) & (y < 255)  # clipped pixels are not on the plane
        assert keep.mean() > 0.5
        coef, *_ = np.linalg.lstsq(design[keep], y[keep], rcond=None)
        assert np.abs(y[keep] - design[keep] @ coef).max() < 1.0  # rounding only
    assert not np.array_equal(one, x)
    # The convolved image keeps each channel's mean (before clipping and rounding).
    assert np.abs(one.reshape(-1, 3).mean(0) - x.reshape(-1, 3).mean(0)).max() < 3.0
    torch.manual_seed(1)
    seven = build_transforms([{"name": "random_conv", "kernel_sizes": [7], "mix": 0.0, "p": 1.0}])(x)
    coef, *_ = np.linalg.lstsq(design, seven[..., 0].reshape(-1).astype(np.float64), rcond=None)
    assert np.abs(seven[..., 0].reshape(-1) - design @ coef).max() > 5  # spatial mixing, not per pixel
    same = build_transforms([{"name": "random_conv", "mix": 1.0, "p": 1.0}])(x)
    assert np.array_equal(same, x)
    # Follows torch's generator; tensors keep their layout and dtype.
    t = build_transforms([{"name": "random_conv", "p": 1.0}])
    torch.manual_seed(3)
    a = t(x)
    torch.manual_seed(3)
    assert np.array_equal(a, t(x))
    xt = torch.from_numpy(x.transpose(2, 0, 1).copy()).float() / 255
    out = t(xt)
    assert isinstance(out, torch.Tensor) and out.shape == xt.shape and out.dtype == torch.float32
    assert 0.0 <= float(out.min()) and float(out.max()) <= 1.0


def test_random_conv_option_errors() -> None:
    with pytest.raises(FaceforgeError, match="kernel_sizes"):
        build_transforms([{"name": "random_conv", "kernel_sizes": [2]}])
    with pytest.raises(FaceforgeError, match="mix"):
        build_transforms([{"name": "random_conv", "mix": [0.2, 1.5]}])


def _coords(n: int = 64) -> np.ndarray:
    """A float image whose first two channels hold each pixel's own x and y (divided by n)."""
    ys, xs = np.mgrid[0:n, 0:n].astype(np.float32) / n
    return np.ascontiguousarray(np.stack([xs, ys, np.zeros_like(xs)], axis=2))


def test_elastic_warp_moves_parts_against_each_other_within_its_bound() -> None:
    n, mag = 64, 0.05
    op = build_transforms([{"name": "elastic_warp", "magnitude": mag, "grid": 4, "p": 1.0}])
    x = _coords(n)
    ys, xs = np.mgrid[0:n, 0:n].astype(np.float64)
    for seed in range(5):
        torch.manual_seed(seed)
        y = op(x)
        assert y.shape == x.shape and y.dtype == np.float32
        dx, dy = y[..., 0] * n - xs, y[..., 1] * n - ys  # where each output pixel was sampled from
        # the border replicates: only pixels whose source cannot leave the crop say where it lay
        m = int(np.ceil(mag * n)) + 1
        dx, dy = dx[m:-m, m:-m], dy[m:-m, m:-m]
        assert np.abs(dx).max() <= mag * n + 1e-3 and np.abs(dy).max() <= mag * n + 1e-3
        assert np.abs(dx).max() > 0.3 * mag * n
        # not one affine map for the whole crop (what corner_warp's similarity would be)
        a = np.stack([xs[m:-m, m:-m].ravel(), ys[m:-m, m:-m].ravel(), np.ones(dx.size)], axis=1)
        for d in (dx, dy):
            resid = d.ravel() - a @ np.linalg.lstsq(a, d.ravel(), rcond=None)[0]
            assert resid.std() > 0.12 * mag * n  # a corner warp's is about 0.06
        # smooth: neighbouring pixels move nearly alike
        assert np.abs(np.diff(dx, axis=1)).max() < 0.25 * mag * n


def test_elastic_warp_zero_is_identity_and_seeded() -> None:
    img = _img()
    still = build_transforms([{"name": "elastic_warp", "magnitude": 0.0, "p": 1.0}])
    assert np.array_equal(still(img), img)
    op = build_transforms([{"name": "elastic_warp", "magnitude": 0.04, "grid": 3, "p": 1.0}])
    torch.manual_seed(3)
    a = op(img)
    torch.manual_seed(3)
    assert np.array_equal(a, op(img))
    torch.manual_seed(4)
    assert not np.array_equal(a, op(img))
    t = torch.from_numpy(img).permute(2, 0, 1).contiguous()
    torch.manual_seed(3)
    assert torch.equal(op(t), torch.from_numpy(a).permute(2, 0, 1))  # tensors warp alike


@pytest.mark.parametrize(
    ("opts", "word"),
    [({"magnitude": -0.1}, "magnitude"), ({"magnitude": 0.5}, "magnitude"), ({"grid": 1}, "grid"),
     ({"grid": 2.5}, "grid"), ({"grid": True}, "grid"), ({"p": 2}, "p=2")],
)  # fmt: skip
def test_elastic_warp_option_errors(opts: dict, word: str) -> None:
    with pytest.raises(FaceforgeError, match=f"transforms\\[0\\].*{word}"):
        build_transforms([{"name": "elastic_warp", **opts}])
