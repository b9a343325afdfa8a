"""Loading backbone weights from safetensors / torch checkpoints, with helpful mismatch errors:
:func:`load_backbone_weights` (unwraps the common checkpoint wrappings and key prefixes),
:func:`read_state_dict`, :func:`closest_model_name`. Details: docs/backbones.md, "Loading weights" and
"Weight files".
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import os
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from faceforge.errors import FaceforgeError

__all__ = ["closest_model_name", "load_backbone_weights", "read_state_dict"]

_PREFIXES = ("", "module.", "model.", "backbone.", "model.module.", "module.model.", "module.backbone.")
_WRAPPERS = ("state_dict", "model", "backbone", "model_state_dict", "module")


def read_state_dict(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """Read a tensor dict from ``.safetensors`` or a torch checkpoint (``weights_only=True``)."""
    p = Path(path)
    if not p.is_file():
        raise FaceforgeError(f"weights file not found: {str(p)!r}")
    try:
        if p.suffix == ".safetensors":
            from safetensors.torch import load_file

            sd: object = load_file(str(p), device="cpu")
        else:
            # Lightning checkpoints (e.g. AdaFace) may pickle their hyper-parameters as a Namespace
            safe = getattr(torch.serialization, "safe_globals", None)
            with safe([argparse.Namespace]) if safe else contextlib.nullcontext():
                sd = torch.load(str(p), map_location="cpu", weights_only=True)
    except Exception as e:  # corrupt file, pickle with disallowed globals, ...
        raise FaceforgeError(f"cannot read weights from {str(p)!r}: {e}") from None
    for _ in range(3):  # unwrap {"state_dict": {...}} and similar
        if isinstance(sd, Mapping) and not any(isinstance(v, torch.Tensor) for v in sd.values()):
            inner = next((sd[k] for k in _WRAPPERS if isinstance(sd.get(k), Mapping)), None)
            if inner is None:
                break
            sd = inner
    if not isinstance(sd, Mapping):
        raise FaceforgeError(f"{str(p)!r} does not hold a state dict (got {type(sd).__name__})")
    return {k: v for k, v in sd.items() if isinstance(v, torch.Tensor)}


def _best_prefix(keys: set[str], wanted: set[str]) -> str:
    best, best_hits = "", -1
    for prefix in _PREFIXES:
        hits = sum(1 for k in keys if k.startswith(prefix) and k[len(prefix) :] in wanted)
        if hits > best_hits:
            best, best_hits = prefix, hits
    return best


@functools.cache
def _signature(name: str) -> dict[str, tuple[int, ...]] | None:
    """``{key: shape}`` of the default-built backbone ``name`` (built on the meta device), or None."""
    from faceforge.models.backbones.registry import MODELS

    try:
        with torch.device("meta"):
            return {k: tuple(v.shape) for k, v in MODELS.create(name).state_dict().items()}
    except Exception:
        return None


def closest_model_name(state_dict: Mapping[str, torch.Tensor]) -> tuple[str | None, float]:
    """The registered backbone whose (key, shape) set best matches ``state_dict``, and the Jaccard score.

    Models are built on the meta device, so this is cheap; families that cannot be built (e.g. EdgeFace
    without timm) are skipped.
    """
    from faceforge.models.backbones.registry import MODELS

    best: tuple[str | None, float] = (None, 0.0)
    for name in MODELS.names():
        ref = None if name.startswith("_") else _signature(name)
        if ref is None:
            continue
        prefix = _best_prefix(set(state_dict), set(ref))
        got = {(k[len(prefix) :], tuple(v.shape)) for k, v in state_dict.items() if k.startswith(prefix)}
        want = set(ref.items())
        score = len(got & want) / max(1, len(got | want))
        if score > best[1]:
            best = (name, score)
            if score == 1.0:
                break
    return best


def _fmt(keys: list[str], n: int = 8) -> str:
    more = f" ... (+{len(keys) - n} more)" if len(keys) > n else ""
    return ", ".join(keys[:n]) + more


def load_backbone_weights(
    model: nn.Module, path: str | os.PathLike[str] | Mapping[str, torch.Tensor], strict: bool = True
) -> nn.Module:
    """Load weights from ``path`` (or a state dict) into ``model``; returns ``model``.

    Keys prefixed ``test.`` (reference test vectors) are ignored. With ``strict`` any missing,
    unexpected or wrongly shaped key raises a :class:`FaceforgeError` that lists them and names the
    registered backbone the file most likely belongs to.
    """
    raw = dict(path) if isinstance(path, Mapping) else read_state_dict(path)
    where = "state dict" if isinstance(path, Mapping) else repr(str(path))
    raw = {k: v for k, v in raw.items() if not k.startswith("test.")}
    own = model.state_dict()
    prefix = _best_prefix(set(raw), set(own))
    sd = {k[len(prefix) :]: v for k, v in raw.items() if k.startswith(prefix)}
    missing = sorted(k for k in own if k not in sd)
    unexpected = sorted(k for k in sd if k not in own)
    wrong = sorted(
        f"{k} {tuple(sd[k].shape)} vs model {tuple(own[k].shape)}"
        for k in own
        if k in sd and sd[k].shape != own[k].shape
    )
    if strict and (missing or unexpected or wrong):
        name, score = closest_model_name(raw)
        hint = (
            f"; the file looks most like backbone {name!r} ({score:.0%} of keys/shapes match)" if name else ""
        )
        parts = [f"weights {where} do not fit {type(model).__name__}"]
        if missing:
            parts.append(f"missing {len(missing)}: {_fmt(missing)}")
        if unexpected:
            parts.append(f"unexpected {len(unexpected)}: {_fmt(unexpected)}")
        if wrong:
            parts.append(f"wrong shape {len(wrong)}: {_fmt(wrong, 4)}")
        raise FaceforgeError("; ".join(parts) + hint)
    if not strict:
        sd = {k: v for k, v in sd.items() if k in own and v.shape == own[k].shape}
    model.load_state_dict(sd, strict=strict)
    return model
