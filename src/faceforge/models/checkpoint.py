"""Load a trained faceforge checkpoint (a Lightning checkpoint) for inference with
``torch.load(weights_only=True)``, without unpickling arbitrary objects; its stored config is data, checked
before anything is built or allocated. Entry points: :func:`load_checkpoint`, :func:`read_checkpoint`,
:func:`checkpoint_model_config`, :func:`check_face_cfg`; :func:`fuse_checkpoints` writes an ensemble.
Details: docs/backbones.md, "Checkpoints" and "Ensembles"; docs/security.md.
"""

from __future__ import annotations

import dataclasses
import math
import os
import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from faceforge.errors import FaceforgeError
from faceforge.models.build import ENSEMBLE, build_backbone, safe_backbone_config
from faceforge.models.face_cfg import FaceConfig

#: input sides a stored preprocessing contract may name (ONNX metadata too)
MAX_INPUT_SIDE = 1024
MAX_EMBEDDING = 65_536


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
        # Only errors that describe the file are worth repeating; a KeyError's "101" is noise.
        first = (str(e).strip().splitlines() or [""])[0] if isinstance(e, (OSError, RuntimeError)) else ""
        raise FaceforgeError(
            f"checkpoint {p} cannot be read (truncated or not a PyTorch file)"
            + (f": {first}" if first else "")
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


def check_face_cfg(d: Any, where: str) -> FaceConfig:
    """A stored :class:`FaceConfig` dict checked field by field (types, ranges), with one-line errors."""
    from faceforge.align.templates import TEMPLATE_NAMES

    if not isinstance(d, dict):
        raise FaceforgeError(f"{where}: face_cfg is {type(d).__name__}; expected a mapping")
    size = d.get("input_size", (112, 112))
    if (
        not isinstance(size, (list, tuple))
        or len(size) != 2
        or not all(isinstance(v, int) and not isinstance(v, bool) and 8 <= v <= MAX_INPUT_SIDE for v in size)
    ):
        raise FaceforgeError(
            f"{where}: face_cfg.input_size is {str(size)[:60]}; expected [height, width], integers in "
            f"8..{MAX_INPUT_SIDE}"
        )
    for key in ("mean", "std"):
        v = d.get(key, (0.5, 0.5, 0.5))
        if (
            not isinstance(v, (list, tuple))
            or len(v) != 3
            or not all(
                isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) for x in v
            )
            or (key == "std" and any(x == 0 for x in v))
        ):
            raise FaceforgeError(
                f"{where}: face_cfg.{key} is {str(v)[:60]}; expected 3 finite numbers"
                + (", none 0" if key == "std" else "")
            )
    color = d.get("color", "RGB")
    if color not in ("RGB", "BGR"):
        raise FaceforgeError(f"{where}: face_cfg.color is {str(color)[:20]!r}; expected 'RGB' or 'BGR'")
    template = d.get("template", "arcface")
    known = [*TEMPLATE_NAMES, "none"]
    if template not in known:
        raise FaceforgeError(
            f"{where}: face_cfg.template is {str(template)[:40]!r}; expected one of {', '.join(known)}"
        )
    emb = d.get("embedding_size", 512)
    if isinstance(emb, bool) or not isinstance(emb, int) or not 1 <= emb <= MAX_EMBEDDING:
        raise FaceforgeError(
            f"{where}: face_cfg.embedding_size is {emb!r}; expected an integer in 1..{MAX_EMBEDDING}"
        )
    if not isinstance(d.get("extra", {}) or {}, dict):
        raise FaceforgeError(f"{where}: face_cfg.extra must be a mapping")
    try:
        return FaceConfig.from_dict(d)
    except (TypeError, ValueError) as e:
        raise FaceforgeError(f"{where}: face_cfg cannot be read: {e}") from None


def checkpoint_model_config(ckpt: dict[str, Any], where: str) -> tuple[str, dict[str, Any], int]:
    """``(backbone name, options, image_size)`` of a checkpoint, checked (see docs/backbones.md)."""
    hp = ckpt.get("hyper_parameters") or {}
    config = hp.get("config") if isinstance(hp, dict) else None
    if not isinstance(config, dict):
        raise FaceforgeError(f"checkpoint {where} has no training config in hyper_parameters['config']")
    model, data = config.get("model"), config.get("data")
    if not isinstance(model, dict) or not isinstance(data, dict):
        raise FaceforgeError(
            f"checkpoint {where}: hyper_parameters['config'] lacks its 'model' / 'data' sections"
        )
    name, options = safe_backbone_config(model.get("backbone"), f"checkpoint {where}")
    size = data.get("image_size")
    if isinstance(size, bool) or not isinstance(size, int) or not 8 <= size <= MAX_INPUT_SIDE:
        raise FaceforgeError(
            f"checkpoint {where}: data.image_size is {str(size)[:40]}; "
            f"expected an integer in 8..{MAX_INPUT_SIDE}"
        )
    # an ensemble's members are bounded like a single backbone (safe_backbone_config checked their keys)
    for section, label in [(options, "model.backbone")] + [
        (m, f"model.backbone.members[{i}]") for i, m in enumerate(options.get("members") or ())
    ]:
        for key in ("input_size", "img_size"):
            v = section.get(key)
            sides = v if isinstance(v, list) else [v]
            if v is not None and not all(isinstance(x, int) and 8 <= x <= MAX_INPUT_SIDE for x in sides):
                raise FaceforgeError(
                    f"checkpoint {where}: {label}.{key} is {v!r}; expected sides in 8..{MAX_INPUT_SIDE}"
                )
        emb = section.get("embedding_size")
        if emb is not None and (
            not isinstance(emb, int) or isinstance(emb, bool) or not 1 <= emb <= MAX_EMBEDDING
        ):
            raise FaceforgeError(
                f"checkpoint {where}: {label}.embedding_size is {emb!r}; expected 1..{MAX_EMBEDDING}"
            )
    return name, options, size


def _build(name: str, options: dict[str, Any], size: int, stored: FaceConfig | None) -> torch.nn.Module:
    """The checkpoint's backbone; an ensemble goes by the preprocessing the file stored, if any."""
    if name == ENSEMBLE and stored is not None:
        from faceforge.models.backbones.ensemble import build_ensemble

        return build_ensemble(options["members"], size, face_cfg=stored)
    return build_backbone({"name": name, **options}, size)


def _meta_shapes(
    name: str, options: dict[str, Any], size: int, stored: FaceConfig | None = None
) -> dict[str, tuple[int, ...]] | None:
    """Parameter/buffer shapes of the backbone built on the ``meta`` device (nothing allocated)."""
    try:
        with torch.device("meta"):
            m = _build(name, options, size, stored)
    except FaceforgeError:
        raise
    except Exception:  # a model that cannot be built on meta: the real build is still bounded by options
        return None
    return {k: tuple(v.shape) for k, v in m.state_dict().items()}


def load_checkpoint(path: str | os.PathLike[str], ckpt: dict[str, Any] | None = None) -> LoadedModel:
    """Rebuild the backbone of a faceforge checkpoint and load its weights strictly.

    ``ckpt``: the already-read checkpoint dict of ``path`` (saves reading the file twice). The stored
    config is checked first (docs/backbones.md, "Checkpoints"); nothing it says reaches a downloader
    or a file.
    """
    if ckpt is None or "state_dict" not in ckpt:
        ckpt = read_checkpoint(path)
    name, options, size = checkpoint_model_config(ckpt, str(path))
    state = ckpt.get("state_dict")
    if not isinstance(state, dict):
        raise FaceforgeError(f"checkpoint {path}: 'state_dict' is not a mapping of tensors")
    sd = {
        k[len("backbone.") :]: v for k, v in state.items() if isinstance(k, str) and k.startswith("backbone.")
    }
    if not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise FaceforgeError(
            f"checkpoint {path}: the backbone's state_dict holds values that are not tensors"
        )
    stored = check_face_cfg(ckpt["face_cfg"], f"checkpoint {path}") if "face_cfg" in ckpt else None
    want = _meta_shapes(name, options, size, stored)
    if want is not None:
        missing = sorted(set(want) - set(sd))
        unexpected = sorted(set(sd) - set(want))
        wrong = [k for k in want if k in sd and tuple(sd[k].shape) != want[k]]
        if missing or unexpected or wrong:
            raise FaceforgeError(
                f"checkpoint {path} does not match backbone {name!r}: missing keys {missing[:5]}, unexpected "
                f"keys {unexpected[:5]}, wrong shapes {wrong[:5]}"
            )
    backbone = _build(name, options, size, stored)
    missing, unexpected = backbone.load_state_dict(sd, strict=False)
    if missing or unexpected:
        raise FaceforgeError(
            f"checkpoint {path} does not match backbone {name!r}: "
            f"missing keys {missing[:5]}, unexpected keys {unexpected[:5]}"
        )
    backbone.eval()
    face_cfg = stored if stored is not None else getattr(backbone, "face_cfg", FaceConfig())
    calibration = ckpt.get("calibration") or {}
    if not isinstance(calibration, dict):
        raise FaceforgeError(
            f"checkpoint {path}: 'calibration' is {type(calibration).__name__}; expected a mapping"
        )
    config = ckpt["hyper_parameters"]["config"]
    return LoadedModel(backbone, face_cfg, config, dict(calibration), str(path))


def fuse_checkpoints(
    paths: list[str | os.PathLike[str]] | tuple[str | os.PathLike[str], ...], out: str | os.PathLike[str]
) -> tuple[Path, FaceConfig]:
    """Write one faceforge checkpoint whose backbone is the ensemble of the given checkpoints' backbones.

    Each input is loaded and checked as :func:`load_checkpoint` does; an input that is itself an
    ensemble contributes its members. The members must read the same crop (input size, colour order,
    mean/std, template). The file holds ``backbone.members.<i>.*`` tensors, the members' checked
    sections under ``model.backbone`` (``name: ensemble``), the shared ``face_cfg`` with the joined
    embedding size and no calibration (evaluate the fused model to calibrate it); it is written
    atomically. Returns the path and the ensemble's preprocessing.
    """
    import io

    from faceforge.fileio import atomic_write_bytes
    from faceforge.models.backbones.ensemble import MAX_MEMBERS, common_face_cfg

    if not paths:
        raise FaceforgeError("models fuse: name two or more checkpoints to fuse")
    sections: list[dict[str, Any]] = []
    state: dict[str, torch.Tensor] = {}
    cfgs: list[FaceConfig] = []
    names: list[str] = []
    sizes: set[int] = set()
    for p in paths:
        raw = read_checkpoint(p)
        name, options, size = checkpoint_model_config(raw, str(p))
        loaded = load_checkpoint(p, ckpt=raw)
        sizes.add(size)
        if name == "ensemble":  # its members join the new ensemble, with the preprocessing it stored
            parts = [
                (sec, dataclasses.replace(loaded.face_cfg, embedding_size=m.face_cfg.embedding_size), m)
                for sec, m in zip(options["members"], loaded.backbone.members, strict=True)
            ]
        else:
            parts = [({"name": name, **options}, loaded.face_cfg, loaded.backbone)]
        for sec, cfg, module in parts:
            i = len(sections)
            if i >= MAX_MEMBERS:
                raise FaceforgeError(f"models fuse: more than {MAX_MEMBERS} members; fuse fewer checkpoints")
            sections.append(sec)
            cfgs.append(cfg)
            names.append(f"{p}" + (f" [{sec['name']}]" if name == "ensemble" else ""))
            state.update(
                {f"backbone.members.{i}.{k}": v.detach().clone() for k, v in module.state_dict().items()}
            )
    if len(sizes) != 1:
        raise FaceforgeError(
            f"models fuse: the checkpoints were trained at different data.image_size ({sorted(sizes)}); "
            "members must read the same crop"
        )
    cfg = common_face_cfg(cfgs, names)
    ckpt = {
        "state_dict": state,
        "hyper_parameters": {
            "config": {
                "model": {"backbone": {"name": "ensemble", "members": sections}},
                "data": {"image_size": sizes.pop()},
            }
        },
        "face_cfg": cfg.to_dict(),
        "calibration": {},
    }
    buf = io.BytesIO()
    torch.save(ckpt, buf)
    return atomic_write_bytes(out, buf.getvalue()), cfg
