"""The preprocessing contract: what a backbone expects of its input and promises of its output. A
:class:`FaceConfig` is attached to every backbone as ``model.face_cfg`` (beside its registry entry),
saved once in checkpoints and as one JSON entry in ONNX metadata, so detection, alignment,
preprocessing and evaluation never guess. :func:`preprocess` is the one function that turns aligned
RGB crops into the model's input; :func:`faceforge.align.crop_face` the one that cuts those crops.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from faceforge.errors import FaceforgeError


@dataclass(frozen=True)
class FaceConfig:
    """Preprocessing and output facts of a recognition backbone.

    Pixels are mapped as ``x = (rgb_or_bgr / 255 - mean) / std`` per channel, in ``color`` order.
    ``template`` names the 5-point alignment template (see ``faceforge.align``) at ``input_size``.
    """

    input_size: tuple[int, int] = (112, 112)  # (height, width)
    color: str = "RGB"  # "RGB" or "BGR": the channel order the weights were trained with
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: tuple[float, float, float] = (0.5, 0.5, 0.5)
    template: str = "arcface"
    embedding_size: int = 512
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Plain-types dict (lists, not tuples) for checkpoints and JSON."""
        d = asdict(self)
        for k in ("input_size", "mean", "std"):
            d[k] = list(d[k])
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> FaceConfig:
        """Inverse of :meth:`to_dict`; unknown keys go to ``extra``."""
        known = {f for f in cls.__dataclass_fields__}
        kw = {k: v for k, v in d.items() if k in known}
        for k in ("input_size", "mean", "std"):
            if k in kw:
                kw[k] = tuple(kw[k])
        extra = dict(kw.pop("extra", {}) or {})
        extra.update({k: v for k, v in d.items() if k not in known})
        return cls(**kw, extra=extra)


def input_params(cfg: FaceConfig, pixel_scale: float = 255.0) -> tuple[list[int], np.ndarray, np.ndarray]:
    """``(channel order, mean, std)`` that turn RGB pixels on ``pixel_scale`` into the model's input.

    ``order`` picks the RGB channels in the model's colour order (``[2, 1, 0]`` for BGR); ``mean``
    and ``std`` are float32 ``[3]`` in that order, on the pixel scale. The one definition both the
    numpy and the torch path of :func:`preprocess` use.
    """
    color = str(cfg.color).upper()
    if color not in ("RGB", "BGR"):
        raise FaceforgeError(f"FaceConfig.color must be 'RGB' or 'BGR', got {cfg.color!r}")
    order = [2, 1, 0] if color == "BGR" else [0, 1, 2]
    mean = np.asarray(cfg.mean, np.float32).reshape(-1)
    std = np.asarray(cfg.std, np.float32).reshape(-1)
    if mean.shape != (3,) or std.shape != (3,) or not (np.isfinite(mean).all() and np.isfinite(std).all()):
        raise FaceforgeError(f"FaceConfig mean/std must be 3 finite numbers each, got {cfg.mean} / {cfg.std}")
    if (std == 0).any():
        raise FaceforgeError(f"FaceConfig std must not be 0, got {cfg.std}")
    # Mean and std are given per RGB channel of the *model's* colour order (the order its weights
    # saw), so they are not permuted: channel 0 of the input gets mean[0] whatever colour it holds.
    scale = np.float32(pixel_scale)
    return order, mean * scale, std * scale


def preprocess(images: Any, cfg: FaceConfig) -> Any:
    """Aligned **RGB** crops → the model's input: ``x = (pixel / 255 - mean) / std`` in ``cfg.color`` order.

    This is the one place where the colour order and normalisation of :class:`FaceConfig` are applied
    (training, evaluation, ``FaceRecognizer``, ONNX parity and the service all call it).

    * torch: uint8 ``[B, 3, H, W]`` RGB → float32 tensor ``[B, 3, H, W]`` on the same device; a float
      tensor is taken as RGB pixels on the 0–1 scale.
    * numpy: uint8 ``[B, H, W, 3]`` (or ``[B, 3, H, W]``) RGB → C-contiguous float32 ``[B, 3, H, W]``.
    """
    if isinstance(images, np.ndarray):
        a = images
        if a.ndim != 4:
            raise FaceforgeError(f"crops must be a 4-D batch [B, H, W, 3] of RGB pixels, got shape {a.shape}")
        if a.shape[-1] == 3 and a.shape[1] != 3:
            a = a.transpose(0, 3, 1, 2)
        if a.shape[1] != 3:
            raise FaceforgeError(f"crops must have 3 colour channels, got shape {images.shape}")
        order, mean, std = input_params(cfg, 255.0 if a.dtype == np.uint8 else 1.0)
        x = a[:, order].astype(np.float32)
        x -= mean.reshape(1, 3, 1, 1)
        x /= std.reshape(1, 3, 1, 1)
        return np.ascontiguousarray(x)
    import torch

    if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[1] != 3:
        raise FaceforgeError(
            f"preprocess needs a [B, 3, H, W] tensor or a [B, H, W, 3] array, got {type(images).__name__} "
            f"{tuple(getattr(images, 'shape', ()))}"
        )
    order, mean, std = input_params(cfg, 255.0 if images.dtype == torch.uint8 else 1.0)
    x = images[:, order] if order != [0, 1, 2] else images
    x = x.float()
    m = torch.from_numpy(mean).to(x.device).view(1, 3, 1, 1)
    s = torch.from_numpy(std).to(x.device).view(1, 3, 1, 1)
    return (x - m) / s


OVERRIDE_KEYS = ("color", "mean", "std", "template", "input_size", "embedding_size")


def _triple(key: str, value: Any) -> tuple[float, float, float]:
    if isinstance(value, str):
        value = [v for v in value.replace(",", " ").split() if v]
    vals = [value] if isinstance(value, (int, float)) else list(value)
    try:
        nums = [float(v) for v in vals]
    except (TypeError, ValueError):
        raise FaceforgeError(
            f"--{key} {value!r}: expected 1 or 3 numbers, e.g. 127.5 or 0.5,0.5,0.5"
        ) from None
    if len(nums) == 1:
        nums *= 3
    if len(nums) != 3 or not all(np.isfinite(nums)):
        raise FaceforgeError(f"--{key} {value!r}: expected 1 or 3 finite numbers")
    # insightface writes 127.5 (0–255 scale); FaceConfig keeps the 0–1 scale.
    return tuple(v / 255.0 if abs(v) > 1.0 else v for v in nums)  # type: ignore[return-value]


def apply_overrides(cfg: FaceConfig, overrides: dict[str, Any] | None) -> tuple[FaceConfig, dict[str, str]]:
    """``cfg`` with user-given facts replaced, and ``{fact: "given (...)"}`` for the report.

    Keys: ``color`` (RGB/BGR), ``mean``/``std`` (1 or 3 numbers; values above 1 are on the 0–255
    scale, e.g. insightface's 127.5, and are divided by 255), ``template`` (``arcface``, ``dlib``,
    ``none``), ``input_size`` (``112``, ``"112x96"`` as height×width, or ``(h, w)``),
    ``embedding_size``. ``None`` values are ignored.
    """
    from dataclasses import replace

    given: dict[str, str] = {}
    kw: dict[str, Any] = {}
    for key, value in (overrides or {}).items():
        if value is None:
            continue
        if key not in OVERRIDE_KEYS:
            from faceforge.errors import did_you_mean

            raise FaceforgeError(
                f"unknown preprocessing override {key!r}{did_you_mean(key, OVERRIDE_KEYS)}; "
                f"known: {', '.join(OVERRIDE_KEYS)}"
            )
        if key == "color":
            c = str(value).upper()
            if c not in ("RGB", "BGR"):
                raise FaceforgeError(f"--color {value!r}: expected RGB or BGR")
            kw[key] = c
        elif key in ("mean", "std"):
            kw[key] = _triple(key, value)
            if key == "std" and 0.0 in kw[key]:
                raise FaceforgeError(f"--std {value!r}: a standard deviation of 0 divides by zero")
        elif key == "template":
            t = str(value)
            if t not in ("arcface", "dlib", "none"):
                raise FaceforgeError(f"--template {value!r}: expected arcface, dlib or none")
            kw[key] = t
        elif key == "input_size":
            kw[key] = _size(value)
        elif key == "embedding_size":
            try:
                kw[key] = int(value)
            except (TypeError, ValueError):
                raise FaceforgeError(f"--embedding-size {value!r}: expected an integer") from None
        given[key] = f"given ({value})"
    return (replace(cfg, **kw) if kw else cfg), given


def _size(value: Any) -> tuple[int, int]:
    try:
        if isinstance(value, str):
            parts = [int(v) for v in value.lower().replace(",", "x").split("x") if v]
        elif isinstance(value, (int, np.integer)):
            parts = [int(value)]
        else:
            parts = [int(v) for v in value]
    except (TypeError, ValueError):
        raise FaceforgeError(f"--input-size {value!r}: expected N or HxW, e.g. 112 or 112x112") from None
    if len(parts) == 1:
        parts *= 2
    if len(parts) != 2 or not all(8 <= v <= 4096 for v in parts):
        raise FaceforgeError(f"--input-size {value!r}: expected N or HxW with sides in [8, 4096]")
    return parts[0], parts[1]


def _fmt(v: float) -> str:
    return f"{float(v):.6g}"


def _fmt3(vals: Sequence[float]) -> str:
    vals = [float(v) for v in vals]
    return _fmt(vals[0]) if len(set(vals)) == 1 else "(" + ", ".join(_fmt(v) for v in vals) + ")"


def parse_overrides(overrides: Mapping[str, Any] | None, where: str = "model") -> dict[str, Any]:
    """Validate ``overrides`` and return them as :class:`FaceConfig` field values.

    The rules are :func:`apply_overrides`'s: ``color`` ("RGB"/"BGR"),
    ``mean`` and ``std`` (3 floats or 1 float; values > 1 are on the 0–255 pixel scale and are divided
    by 255, so ``mean=127.5`` equals ``mean=0.5``; a std of 1 therefore means 1 on the 0–1 scale, and
    raw 0–255 pixels are ``mean=0, std=1/255``), ``template`` (``arcface``, ``dlib``, ``none``),
    ``input_size`` (int, ``"HxW"`` or ``(h, w)``) and ``embedding_size``; ``None`` values are ignored.
    Errors are one line naming ``where``.
    """
    if not overrides:
        return {}
    try:
        cfg, given = apply_overrides(FaceConfig(), dict(overrides))
    except FaceforgeError as e:
        raise FaceforgeError(f"{where}: {e}") from None
    out = {k: getattr(cfg, k) for k in given}
    if out.get("embedding_size", 1) <= 0:
        raise FaceforgeError(f"{where}: embedding_size {out['embedding_size']} must be a positive int")
    return out


def describe_mean_std(mean: Sequence[float], std: Sequence[float]) -> str:
    """``"0.5/0.5 (127.5/127.5 on 0–255)"``: a FaceConfig mean/std in words."""
    m255 = [float(v) * 255.0 for v in mean]
    s255 = [float(v) * 255.0 for v in std]
    return f"{_fmt3(mean)}/{_fmt3(std)} ({_fmt3(m255)}/{_fmt3(s255)} on 0–255)"


def apply_parsed_overrides(cfg: FaceConfig, o: Mapping[str, Any], inferred: dict[str, str]) -> FaceConfig:
    """``cfg`` with :func:`parse_overrides` output applied; each fact recorded in ``inferred`` as given."""
    if not o:
        return cfg
    new = dataclasses.replace(cfg, **o)
    if "color" in o:
        inferred["color"] = f"{new.color}: given"
    if "mean" in o or "std" in o:
        how = "given" if ("mean" in o and "std" in o) else ("mean given" if "mean" in o else "std given")
        inferred["mean/std"] = f"{describe_mean_std(new.mean, new.std)}: {how}"
    if "template" in o:
        inferred["template"] = f"{new.template}: given"
    if "input_size" in o:
        inferred["input_size"] = f"{new.input_size[0]}x{new.input_size[1]}: given"
    if "embedding_size" in o:
        inferred["embedding_size"] = f"{new.embedding_size}: given"
    return new
