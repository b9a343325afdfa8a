"""Load a trained faceforge checkpoint for inference, without unpickling arbitrary objects.

A checkpoint is a Lightning checkpoint whose ``state_dict`` holds ``backbone.*`` and ``head.*``,
with ``hyper_parameters["config"]`` (the resolved training config), ``face_cfg`` and
``calibration`` as plain types. It is read with ``torch.load(weights_only=True)``, so a crafted file
is refused instead of executing code.
"""

from __future__ import annotations

import os
import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from faceforge.errors import FaceforgeError
from faceforge.models.build import build_backbone
from faceforge.models.face_cfg import FaceConfig


@dataclass
class LoadedModel:
    """A backbone in eval mode with what is needed to use it."""

    backbone: torch.nn.Module
    face_cfg: FaceConfig
    config: dict[str, Any]
    calibration: dict[str, Any] = field(default_factory=dict)
    path: str = ""

    @torch.no_grad()
    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """Raw embeddings of uint8 images ``[B, 3, H, W]`` in the model's colour order."""
        from faceforge.models.face_cfg import preprocess

        return self.backbone(preprocess(images, self.face_cfg))


def _load(p: Path) -> Any:
    """``torch.load(p, weights_only=True)`` with one-line errors for missing, unsafe or unreadable files."""
    if not p.is_file():
        raise FaceforgeError(f"checkpoint {p} does not exist")
    try:
        ckpt = torch.load(p, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else "unsupported content"
        raise FaceforgeError(
            f"checkpoint {p} was refused: it holds objects other than tensors and plain types ({first})"
        ) from None
    except Exception as e:  # torch's unpickler raises KeyError, IndexError, ... on garbage
        first = (str(e).strip().splitlines() or [""])[0]
        raise FaceforgeError(
            f"checkpoint {p} cannot be read (truncated or not a PyTorch file): {type(e).__name__} {first}"
        ) from None
    return ckpt


def read_checkpoint_or_none(path: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The checkpoint dict when ``path`` is a PyTorch file holding a dict, else None (unsafe files raise)."""
    p = Path(path)
    if not p.is_file():
        raise FaceforgeError(f"checkpoint {p} does not exist")
    ckpt = _load(p)
    return ckpt if isinstance(ckpt, dict) else None


def read_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """``torch.load(path, weights_only=True)`` with one-line errors for missing or unsafe files."""
    p = Path(path)
    if not p.is_file():
        raise FaceforgeError(f"checkpoint {p} does not exist")
    ckpt = _load(p)
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt:
        raise FaceforgeError(f"checkpoint {p} has no 'state_dict' (expected a faceforge training checkpoint)")
    return ckpt


def load_checkpoint(path: str | os.PathLike[str], ckpt: dict[str, Any] | None = None) -> LoadedModel:
    """Rebuild the backbone of a faceforge checkpoint and load its weights strictly.

    ``ckpt``: the already-read checkpoint dict of ``path`` (saves reading the file twice).
    """
    if ckpt is None or "state_dict" not in ckpt:
        ckpt = read_checkpoint(path)
    hp = ckpt.get("hyper_parameters") or {}
    config = hp.get("config")
    if not isinstance(config, dict):
        raise FaceforgeError(f"checkpoint {path} has no training config in hyper_parameters['config']")
    backbone = build_backbone(config["model"]["backbone"], config["data"]["image_size"])
    sd = {k[len("backbone.") :]: v for k, v in ckpt["state_dict"].items() if k.startswith("backbone.")}
    missing, unexpected = backbone.load_state_dict(sd, strict=False)
    if missing or unexpected:
        raise FaceforgeError(
            f"checkpoint {path} does not match backbone {config['model']['backbone'].get('name')!r}: "
            f"missing keys {missing[:5]}, unexpected keys {unexpected[:5]}"
        )
    backbone.eval()
    face_cfg = (
        FaceConfig.from_dict(ckpt["face_cfg"])
        if "face_cfg" in ckpt
        else getattr(backbone, "face_cfg", FaceConfig())
    )
    return LoadedModel(backbone, face_cfg, config, dict(ckpt.get("calibration") or {}), str(path))
