"""Build a backbone from its config section (``{"name": ..., **options}``)."""

from __future__ import annotations

import inspect
import math
import re
from typing import Any

import torch

from faceforge.errors import FaceforgeError, did_you_mean


def build_backbone(backbone_cfg: dict[str, Any], image_size: int | None = None) -> torch.nn.Module:
    """Create the backbone ``backbone_cfg["name"]`` with the other keys as options.

    ``input_size`` follows ``image_size`` when the backbone takes one and the config does not set it.
    Unknown options fail with the config key, a did-you-mean and the known options.
    """
    from faceforge.models.backbones.registry import create_model

    name, bcfg = check_backbone_config(backbone_cfg)
    if image_size is not None and "input_size" not in bcfg and "input_size" in _params(name):
        bcfg["input_size"] = image_size
    return create_model(name, **bcfg)


def _params(name: str) -> dict[str, inspect.Parameter]:
    from faceforge.models.backbones.registry import MODELS

    return dict(inspect.signature(MODELS.get(name)).parameters)


def check_backbone_config(backbone_cfg: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """Validate a backbone section without building it; returns ``(name, options)``.

    An unknown name lists the known backbones; an unknown option names the config key with a
    did-you-mean and the options the backbone accepts.
    """
    bcfg = dict(backbone_cfg)
    name = bcfg.pop("name", None)
    if not name:
        raise FaceforgeError("model.backbone.name is missing (e.g. --model.backbone.name ghostfacenetv1)")
    params = _params(name)
    if not any(p.kind == p.VAR_KEYWORD for p in params.values()):
        for key in bcfg:
            if key not in params:
                raise FaceforgeError(
                    f"unknown config key 'model.backbone.{key}' for backbone {name!r}"
                    f"{did_you_mean(key, params)}; known: {', '.join(params)}"
                )
    return name, bcfg


# --------------------------------------------------------------------------------------------------
# backbone sections read from files (checkpoints): data, never instructions


#: timm keyword arguments a checkpoint may carry: shapes and regularisation, nothing that names a
#: file, a URL or pretrained weights (``pretrained_cfg``, ``checkpoint_path``, ``cache_dir``, ... are
#: refused). Anything else must be a parameter of a registered factory's signature.
TIMM_SHAPE_OPTIONS = frozenset(
    {
        "img_size", "in_chans", "drop_rate", "drop_path_rate", "attn_drop_rate", "proj_drop_rate",
        "pos_drop_rate", "drop_block_rate", "global_pool", "patch_size", "window_size", "embed_dim",
        "embed_dims", "depth", "depths", "dims", "num_heads", "mlp_ratio", "qkv_bias", "class_token",
        "no_embed_class", "reg_tokens", "init_values", "layer_scale_init_value", "output_stride",
        "channel_multiplier", "depth_multiplier", "width_multiplier", "stem_width", "stem_type",
        "dynamic_img_size", "dynamic_img_pad", "fc_norm", "pool_size",
    }
)  # fmt: skip
_WORD = re.compile(r"^[A-Za-z0-9_]{0,32}$")
_TIMM_NAME = re.compile(r"^[A-Za-z0-9_.\-]{1,128}$")
_MAX_INT = 1 << 16


def _safe_value(value: Any, key: str, where: str, depth: int = 0) -> Any:
    """A number, bool, short identifier or a short list of them; anything else is refused."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        if abs(value) > _MAX_INT:
            raise FaceforgeError(
                f"{where}: model.backbone.{key} = {value} is out of range (|value| <= {_MAX_INT})"
            )
        return value
    if isinstance(value, float):
        if not math.isfinite(value) or abs(value) > _MAX_INT:
            raise FaceforgeError(f"{where}: model.backbone.{key} = {value} is not a finite number in range")
        return value
    if isinstance(value, str):
        if not _WORD.match(value):
            raise FaceforgeError(
                f"{where}: model.backbone.{key} = {value[:60]!r} is refused: a checkpoint may hold numbers "
                "and short identifiers, never paths, URLs or file names"
            )
        return value
    if isinstance(value, (list, tuple)) and depth == 0 and len(value) <= 32:
        return [_safe_value(v, key, where, 1) for v in value]
    raise FaceforgeError(
        f"{where}: model.backbone.{key} holds a {type(value).__name__} and is refused; a checkpoint may hold "
        "numbers, booleans and short identifiers (or short lists of them) only"
    )


def safe_backbone_config(backbone_cfg: Any, where: str) -> tuple[str, dict[str, Any]]:
    """The ``model.backbone`` section of a checkpoint, reduced to what may build a model; else an error.

    Allowed: a registered backbone name with options that its factory's signature names, or
    ``timm/<name>`` (a plain timm model name) with ``embedding_size``/``input_size`` and the shape
    options of :data:`TIMM_SHAPE_OPTIONS`; values are numbers, booleans, short identifiers or short lists
    of them. ``pretrained`` may be recorded (a run that started from ImageNet weights) but is never
    passed on: the checkpoint's own weights are loaded. URLs, paths, ``pretrained_cfg*``,
    ``checkpoint_path`` and any other keyword are refused with one line naming the key.
    """
    from faceforge.models.backbones.registry import MODELS

    if not isinstance(backbone_cfg, dict):
        raise FaceforgeError(f"{where}: model.backbone is {type(backbone_cfg).__name__}; expected a mapping")
    bcfg = dict(backbone_cfg)
    name = bcfg.pop("name", None)
    if not isinstance(name, str) or not name:
        raise FaceforgeError(f"{where}: model.backbone.name is missing or not a string")
    pretrained = bcfg.pop("pretrained", False)
    if not isinstance(pretrained, bool):
        raise FaceforgeError(
            f"{where}: model.backbone.pretrained = {str(pretrained)[:60]!r} is refused; a checkpoint never "
            "names weights to fetch"
        )
    if name.startswith("timm/"):
        rest = name[len("timm/") :]
        if not _TIMM_NAME.match(rest) or ".." in rest:
            raise FaceforgeError(
                f"{where}: model.backbone.name {name[:80]!r} is refused; expected timm/<model name> "
                "(no hub prefixes, URLs or paths)"
            )
        allowed = TIMM_SHAPE_OPTIONS | {"embedding_size", "input_size"}
    else:
        if name not in MODELS or name.startswith("_"):
            raise FaceforgeError(
                f"{where}: model.backbone.name {name[:80]!r} is not a registered backbone"
                f"{did_you_mean(name, MODELS.names())}"
            )
        params = _params(name)
        allowed = frozenset(
            k for k, p in params.items() if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)
        )
    out: dict[str, Any] = {}
    for key, value in bcfg.items():
        if not isinstance(key, str) or key not in allowed:
            raise FaceforgeError(
                f"{where}: model.backbone.{str(key)[:60]} is refused: not a shape option of {name!r} "
                f"(allowed: {', '.join(sorted(allowed))})"
            )
        out[key] = _safe_value(value, key, where)
    return name, out
