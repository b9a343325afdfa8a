"""Low-resolution robustness: verification accuracy of images downscaled by a factor and upscaled
back. :func:`degrade` simulates a low-resolution capture at the model's input size (antialiased
downscale by ``factor``, then upscale to the original size); :func:`evaluate_low_resolution` runs the
standard pair protocol (:func:`faceforge.eval.verification.evaluate_model`) on each degraded copy and,
optionally, on the output of a super-resolution module fed the small image. Details:
docs/evaluation.md, "Low resolution".
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import torch
import torch.nn.functional as F

from faceforge.errors import FaceforgeError
from faceforge.eval.verification import EmbedFn, PairImages, evaluate_model

__all__ = ["degrade", "evaluate_low_resolution"]

INTERPOLATIONS = ("nearest", "bilinear", "bicubic", "area")


def _small_size(h: int, w: int, factor: float) -> tuple[int, int]:
    return max(1, round(h / factor)), max(1, round(w / factor))


def _check(images: torch.Tensor, factor: float, interpolation: str) -> None:
    if images.dtype != torch.uint8 or images.ndim != 4:
        raise FaceforgeError(f"images must be uint8 [N, C, H, W], got {images.dtype} {tuple(images.shape)}")
    if not factor >= 1:  # also rejects NaN
        raise FaceforgeError(f"factor must be >= 1, got {factor}")
    if interpolation not in INTERPOLATIONS:
        raise FaceforgeError(f"unknown interpolation {interpolation!r}; expected one of {INTERPOLATIONS}")


def _resize(x: torch.Tensor, size: tuple[int, int], interpolation: str) -> torch.Tensor:
    align = None if interpolation in ("nearest", "area") else False
    # Antialias on the way down so that downscaling behaves like a real low-resolution sensor.
    anti = interpolation in ("bilinear", "bicubic")
    return F.interpolate(x, size=size, mode=interpolation, align_corners=align, antialias=anti)


def _down(images: torch.Tensor, factor: float, interpolation: str) -> torch.Tensor:
    """Float [0, 1] images at the small size."""
    h, w = images.shape[-2:]
    return _resize(images.float() / 255, _small_size(h, w, factor), interpolation).clamp(0, 1)


def _to_uint8(x: torch.Tensor) -> torch.Tensor:
    return (x.clamp(0, 1) * 255).round().to(torch.uint8)


def degrade(images_uint8_nchw: torch.Tensor, factor: float, interpolation: str = "bilinear") -> torch.Tensor:
    """Downscale uint8 NCHW images by ``factor``, then upscale back to the original size (uint8)."""
    _check(images_uint8_nchw, factor, interpolation)
    if factor == 1:
        return images_uint8_nchw.clone()  # exact identity: no resampling round trip
    h, w = images_uint8_nchw.shape[-2:]
    up = F.interpolate(
        _down(images_uint8_nchw, factor, interpolation),
        size=(h, w),
        mode=interpolation,
        align_corners=None if interpolation in ("nearest", "area") else False,
    )
    return _to_uint8(up)


@torch.no_grad()
def _super_resolve(
    sr_module: torch.nn.Module, images: torch.Tensor, factor: float, interpolation: str, batch_size: int
) -> torch.Tensor:
    h, w = images.shape[-2:]
    out = []
    for s in range(0, len(images), batch_size):
        y = sr_module(_down(images[s : s + batch_size], factor, interpolation))
        if tuple(y.shape[-2:]) != (h, w):
            raise FaceforgeError(f"sr_module returned size {tuple(y.shape[-2:])}, expected {(h, w)}")
        out.append(_to_uint8(y.float().cpu()))
    return torch.cat(out)


def evaluate_low_resolution(
    embed_fn: EmbedFn,
    pair_images: PairImages,
    factors: Sequence[float] = (1, 2, 4, 8),
    sr_module: torch.nn.Module | None = None,
    batch_size: int = 256,
    flip: bool = True,
    interpolation: str = "bilinear",
) -> dict[str, dict[str, Any]]:
    """Verification metrics per degradation: keys ``"x{f}"`` and, with ``sr_module``, ``"x{f}+sr"``.

    Each value is :func:`~faceforge.eval.verification.evaluate_model`'s dict (``accuracy`` etc.).
    ``sr_module`` maps float [0, 1] NCHW images at the small size to the full size; it is not applied
    at factor 1 (there is nothing to restore).
    """
    if not factors:
        raise FaceforgeError("factors must contain at least one factor")
    results: dict[str, dict[str, Any]] = {}
    for f in factors:
        _check(pair_images.images, f, interpolation)
        name = f"x{f:g}"
        data = replace(pair_images, images=degrade(pair_images.images, f, interpolation))
        results[name] = evaluate_model(embed_fn, data, batch_size=batch_size, flip=flip)
        if sr_module is not None and f != 1:
            sr = _super_resolve(sr_module, pair_images.images, f, interpolation, batch_size)
            results[name + "+sr"] = evaluate_model(
                embed_fn, replace(pair_images, images=sr), batch_size=batch_size, flip=flip
            )
    return results
