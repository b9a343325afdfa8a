"""Ensembles of recognition backbones (L. K. Hansen and P. Salamon, "Neural network ensembles",
IEEE TPAMI 1990): several networks read the same aligned crop and their unit embeddings are joined,
scaled by 1/sqrt(n), so the cosine of two joined embeddings is the mean of the members' cosines —
the score fusion face-recognition ensembles use. Members must share their preprocessing (input size,
colour order, mean/std and template). It is a composite, not a registered architecture: a backbone
section ``{name: ensemble, members: [...]}`` builds it, and ``faceforge models fuse`` writes one from
trained checkpoints. Details: docs/backbones.md, "Ensembles".
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from faceforge.errors import FaceforgeError
from faceforge.models.face_cfg import FaceConfig

__all__ = ["MAX_MEMBERS", "Ensemble", "build_ensemble", "common_face_cfg", "ensemble"]

#: an ensemble joins at most this many members (each one a full forward pass per face)
MAX_MEMBERS = 8

# the facts two members must agree on to read the same crop
_SHARED = ("input_size", "color", "mean", "std", "template")


def _fact(cfg: FaceConfig, key: str) -> Any:
    v = getattr(cfg, key)
    return tuple(float(x) for x in v) if isinstance(v, (list, tuple)) else v


def common_face_cfg(cfgs: Sequence[FaceConfig], names: Sequence[str]) -> FaceConfig:
    """The members' shared preprocessing with the joined embedding size; an error names the first mismatch."""
    first = cfgs[0]
    for cfg, name in zip(cfgs[1:], names[1:], strict=True):
        for key in _SHARED:
            a, b = _fact(first, key), _fact(cfg, key)
            if a != b:
                raise FaceforgeError(
                    f"ensemble member {name}: {key} is {b}, but member {names[0]} has {a}; members must "
                    "read the same crop (same input size, colour order, mean/std and template)"
                )
    return dataclasses.replace(
        first,
        embedding_size=sum(c.embedding_size for c in cfgs),
        extra={"family": "ensemble", "members": len(cfgs)},
    )


class Ensemble(nn.Module):
    """Members run on the same input; output: their L2-normalised embeddings joined, times 1/sqrt(n)."""

    def __init__(self, members: Sequence[nn.Module]) -> None:
        super().__init__()
        if not 1 <= len(members) <= MAX_MEMBERS:
            raise FaceforgeError(f"an ensemble takes 1..{MAX_MEMBERS} members, got {len(members)}")
        self.members = nn.ModuleList(members)
        self.scale = 1.0 / math.sqrt(len(members))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Normalising each member first keeps one member with large raw norms from drowning the
        # others; the 1/sqrt(n) makes the joined vector unit length, so its cosine is the mean.
        return torch.cat([F.normalize(m(x), dim=1) for m in self.members], dim=1) * self.scale


def ensemble(members: Sequence[Mapping[str, Any]] = (), input_size: int | Sequence[int] = 112) -> Ensemble:
    """Build each member section (``{"name": ..., **options}``) at ``input_size`` and join them.

    With no stored preprocessing to go by (a config, not a checkpoint), the members' own defaults
    must agree; :func:`build_ensemble` is the path for fused checkpoints.
    """
    return build_ensemble(members, input_size)


def build_ensemble(
    members: Sequence[Mapping[str, Any]], input_size: int | Sequence[int], face_cfg: FaceConfig | None = None
) -> Ensemble:
    """Build and join the member sections; ``face_cfg``: the checked preprocessing a checkpoint stored.

    A checkpoint's stored preprocessing is what its members were trained and fused on
    (:func:`faceforge.models.checkpoint.fuse_checkpoints` checked that they agree), so with it the
    architectures' *default* preprocessing is not compared: an imported BGR member and an RGB one
    that both stored the same facts load. Without it, the members' defaults must agree.
    """
    from faceforge.models.build import build_backbone  # lazy: build imports this registry

    if isinstance(members, (str, bytes)) or not isinstance(members, Sequence) or not members:
        raise FaceforgeError(
            "model.backbone.members: expected a list of backbone sections ({name: ..., options}), "
            f"got a {type(members).__name__}"
        )
    if len(members) > MAX_MEMBERS:
        raise FaceforgeError(f"model.backbone.members: {len(members)} members; at most {MAX_MEMBERS}")
    size = input_size if isinstance(input_size, int) else int(next(iter(input_size)))
    built, names = [], []
    for i, sec in enumerate(members):
        if not isinstance(sec, Mapping) or sec.get("name") == "ensemble":
            raise FaceforgeError(
                f"model.backbone.members[{i}]: expected a backbone section (not an ensemble), got "
                f"{type(sec).__name__} {str(sec.get('name') if isinstance(sec, Mapping) else '')[:40]}"
            )
        built.append(build_backbone(dict(sec), size))
        names.append(f"{i} ({sec.get('name')})")
    model = Ensemble(built)
    if face_cfg is not None:
        model.face_cfg = face_cfg
    else:
        cfgs = [getattr(m, "face_cfg", None) or FaceConfig(input_size=(size, size)) for m in built]
        model.face_cfg = common_face_cfg(cfgs, names)
    return model
