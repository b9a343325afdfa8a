"""Build a backbone from its config section (``{"name": ..., **options}``) with :func:`build_backbone`,
including the keys every section may carry (``template``, ``weights: PATH``, and ``pretrained: true``
of a ``timm/<name>`` backbone, read from the local cache only by :func:`cached_timm_weights`: nothing is
ever downloaded); a checkpoint's stored section never opens a file (:func:`safe_backbone_config`).
Details: docs/backbones.md, "Config keys every backbone section takes".
"""

from __future__ import annotations

import dataclasses
import inspect
import math
import os
import re
import warnings
from pathlib import Path
from typing import Any

import torch

from faceforge.errors import FaceforgeError, did_you_mean
from faceforge.registry import check_options

#: keys every backbone section accepts on top of its factory's options (applied by build_backbone)
BUILD_KEYS = ("template", "weights")
#: the composite backbone (faceforge.models.backbones.ensemble): built here, not a registry entry, so
#: listings and architecture guesses over the registry never meet it
ENSEMBLE = "ensemble"
TEMPLATES = ("arcface", "dlib", "none")


def build_backbone(backbone_cfg: dict[str, Any], image_size: int | None = None) -> torch.nn.Module:
    """Create the backbone ``backbone_cfg["name"]`` with the other keys as options.

    ``input_size`` follows ``image_size`` when the backbone takes one and the config does not set it.
    Unknown options fail with the config key, a did-you-mean and the known options. ``template`` and
    ``weights`` are applied here (docs/backbones.md, "Config keys every backbone section takes");
    ``pretrained: true`` of a ``timm/`` backbone loads cached weights only (:func:`cached_timm_weights`).
    """
    from faceforge.models.backbones.registry import create_model

    name, bcfg = check_backbone_config(backbone_cfg)
    template = bcfg.pop("template", None)
    weights = bcfg.pop("weights", None)
    if template is not None and template not in TEMPLATES:
        raise FaceforgeError(
            f"model.backbone.template = {template!r}: expected one of {', '.join(TEMPLATES)}"
            f"{did_you_mean(str(template), TEMPLATES)}"
        )
    if image_size is not None and "input_size" not in bcfg and "input_size" in _params(name):
        bcfg["input_size"] = image_size
    is_timm = name.startswith("timm/")
    if is_timm and bcfg.get("pretrained"):
        if weights is not None:
            raise FaceforgeError(
                f"model.backbone sets both pretrained: true and weights: {weights}; keep one of them"
            )
        sd = _read_weights(cached_timm_weights(name[len("timm/") :]), "timm cache")
        # Handing timm the state dict (not a file or hub id) keeps its own adaptation (classifier
        # removal, input-channel filters) while making sure it never reaches for the network.
        overlay = dict(bcfg.pop("pretrained_cfg_overlay", None) or {}, state_dict=sd)
        model = create_model(name, **bcfg, pretrained_cfg_overlay=overlay)
    elif name == ENSEMBLE:
        model = _factory(name)(**bcfg)
    else:
        model = create_model(name, **bcfg)
    if weights is not None:
        load_weights(model, weights)
    cfg = getattr(model, "face_cfg", None)
    if cfg is not None and template is not None:
        model.face_cfg = dataclasses.replace(cfg, template=template)
    return model


# --------------------------------------------------------------------------------------------------
# weights at training time: a user's file, or timm's cache (never the network)


def _read_weights(path: str | os.PathLike[str], what: str) -> dict[str, torch.Tensor]:
    """Tensors of a ``.safetensors`` or a torch file read with ``weights_only=True``, unwrapped."""
    from faceforge.models.backbones.weights import read_state_dict

    p = Path(path).expanduser()
    if p.suffix.lower() not in (".safetensors", ".pth", ".pt", ".bin", ".ckpt"):
        raise FaceforgeError(f"{what} {p}: expected a .safetensors, .pth or .pt state dict")
    return read_state_dict(p)


def load_weights(model: torch.nn.Module, path: str | os.PathLike[str]) -> dict[str, list[str]]:
    """Load ``model.backbone.weights: PATH`` into a freshly built backbone; returns the key report.

    For a ``timm/`` backbone the file is a plain state dict of the timm model (``timm.create_model(
    name).state_dict()``, ``.safetensors`` or ``.pth``/``.pt`` read with ``torch.load(weights_only=True)``;
    ``module.`` / ``model.`` prefixes are stripped, the classifier's keys ignored); for the others a
    state dict of the backbone. Tensors whose name and shape fit are loaded; missing, unexpected and
    wrongly shaped keys are reported in one warning line, and a file that fits nothing is an error.
    """
    from faceforge.models.backbones.timm_wrapper import TimmBackbone

    sd = _read_weights(path, "model.backbone.weights")
    # A timm backbone's file is the timm network's own state dict; the embedding neck starts fresh.
    target = model.model if isinstance(model, TimmBackbone) else model
    own = target.state_dict()
    best, hits = "", -1
    for prefix in ("", "module.", "model.", "backbone.", "module.model.", "backbone.model."):
        n = sum(1 for k in sd if k.startswith(prefix) and k[len(prefix) :] in own)
        if n > hits:
            best, hits = prefix, n
    sd = {k[len(best) :]: v for k, v in sd.items() if k.startswith(best)}
    tcfg = getattr(target, "pretrained_cfg", None) or {}
    heads = tcfg.get("classifier") or ()
    heads = (heads,) if isinstance(heads, str) else tuple(heads)
    ignored = [k for k in sd if k not in own and any(k.startswith(h + ".") or k == h for h in heads)]
    for k in ignored:
        sd.pop(k)
    wrong = [k for k in sd if k in own and tuple(sd[k].shape) != tuple(own[k].shape)]
    fits = {k: v for k, v in sd.items() if k in own and k not in wrong}
    if not fits:
        raise FaceforgeError(
            f"model.backbone.weights {path}: none of its {len(sd)} tensors fits the backbone "
            f"(its keys: {', '.join(list(sd)[:3])}...; the backbone's: {', '.join(list(own)[:3])}...)"
        )
    report = {
        "missing": sorted(k for k in own if k not in fits),
        "unexpected": sorted(k for k in sd if k not in own),
        "wrong_shape": sorted(wrong),
        "ignored_classifier": sorted(ignored),
    }
    target.load_state_dict(fits, strict=False)
    problems = [f"{key.replace('_', ' ')} {len(v)} ({', '.join(v[:3])}{', ...' if len(v) > 3 else ''})"
                for key, v in report.items() if v and key != "ignored_classifier"]  # fmt: skip
    if problems:
        warnings.warn(
            f"model.backbone.weights {path}: loaded {len(fits)} of {len(own)} tensors; "
            + "; ".join(problems),
            stacklevel=2,
        )
    return report


def _hf_cache_dir() -> Path:
    """The Hugging Face hub cache, from the environment at call time (``HF_HUB_CACHE``, ``HF_HOME``...)."""
    env = os.environ
    for key in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if env.get(key):
            return Path(env[key]).expanduser()
    if env.get("HF_HOME"):
        return Path(env["HF_HOME"]).expanduser() / "hub"
    base = Path(env["XDG_CACHE_HOME"]).expanduser() if env.get("XDG_CACHE_HOME") else Path.home() / ".cache"
    return base / "huggingface" / "hub"


def _hf_filenames(filename: str | None) -> list[str]:
    """File names timm tries for a hub id: the safetensors alternative first (timm's own order)."""
    name = filename or "pytorch_model.bin"
    if name == "pytorch_model.bin":
        return ["model.safetensors", name]
    if name.endswith(".bin"):
        return [name[: -len(".bin")] + ".safetensors", name]
    return [name]


def _timm_pretrained_cfg(name: str) -> dict[str, Any]:
    import timm

    known = timm.list_models()
    if name not in known and name.split(".")[0] not in known:
        raise FaceforgeError(f"unknown timm model {name!r}{did_you_mean(name, known)}")
    try:  # the model on the meta device: its resolved pretrained config, no memory, no download
        with torch.device("meta"):
            m = timm.create_model(name, pretrained=False, num_classes=0)
    except RuntimeError as e:  # e.g. an unknown pretrained tag
        raise FaceforgeError(f"timm model {name!r}: {str(e).splitlines()[0]}") from None
    return dict(getattr(m, "pretrained_cfg", None) or {})


def cached_timm_weights(name: str) -> Path:
    """The local file holding timm's pretrained weights of ``name``, or a one-line error naming what to fetch.

    Looked up without any network access: the Hugging Face hub cache (``HF_HUB_CACHE`` / ``HF_HOME``)
    for the model's hub id, then torch hub's ``checkpoints/`` folder (``TORCH_HOME``) for its URL.
    """
    cfg = _timm_pretrained_cfg(name)
    hub_id, url = cfg.get("hf_hub_id"), cfg.get("url")
    looked = []
    if cfg.get("file") and Path(cfg["file"]).is_file():
        return Path(cfg["file"])
    if hub_id:
        from huggingface_hub import try_to_load_from_cache

        repo, _, revision = str(hub_id).partition("@")
        cache = _hf_cache_dir()
        for fname in _hf_filenames(cfg.get("hf_hub_filename")):
            found = try_to_load_from_cache(repo, fname, cache_dir=str(cache), revision=revision or None)
            if isinstance(found, str) and Path(found).is_file():
                return Path(found)
        looked.append(f"{cache} (hub {repo})")
    if url:
        file = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(str(url).split("?")[0])
        if file.is_file():
            return file
        looked.append(str(file))
    if not hub_id and not url:
        raise FaceforgeError(
            f"model.backbone.pretrained: timm model {name!r} has no pretrained weights; drop pretrained "
            "or set model.backbone.weights: PATH"
        )
    fetch = f"{hub_id.split('@')[0]}/{_hf_filenames(cfg.get('hf_hub_filename'))[0]}" if hub_id else url
    raise FaceforgeError(
        f"model.backbone.pretrained: timm/{name} weights are not in the local cache ({'; '.join(looked)}) "
        f"and faceforge never downloads; fetch {fetch} elsewhere and set model.backbone.weights: PATH "
        "(or put it in the cache)"
    )


def _factory(name: str) -> Any:
    """The function that builds backbone ``name``: a registry entry, or the ensemble composite."""
    if name == ENSEMBLE:
        from faceforge.models.backbones.ensemble import ensemble

        return ensemble
    from faceforge.models.backbones.registry import MODELS

    return MODELS.get(name)


def _params(name: str) -> dict[str, inspect.Parameter]:
    return dict(inspect.signature(_factory(name)).parameters)


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
        check_options(f"backbone {name!r}", bcfg, [*params, *BUILD_KEYS], "config key", "model.backbone.")
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


def _safe_members(members: Any, where: str) -> list[dict[str, Any]]:
    """An ensemble's member sections, each checked as a backbone section of its own (never nested)."""
    from faceforge.models.backbones.ensemble import MAX_MEMBERS

    if not isinstance(members, list) or not 1 <= len(members) <= MAX_MEMBERS:
        # described by type and length: a hostile file's list may be huge
        what = f"a {type(members).__name__}" + (
            f" of {len(members)}" if isinstance(members, (list, dict)) else ""
        )
        raise FaceforgeError(
            f"{where}: model.backbone.members ({what}) is refused; expected a list of "
            f"1..{MAX_MEMBERS} backbone sections"
        )
    out = []
    for i, sec in enumerate(members):
        if isinstance(sec, dict) and sec.get("name") == "ensemble":
            raise FaceforgeError(f"{where}: model.backbone.members[{i}] is refused: ensembles do not nest")
        name, options = safe_backbone_config(sec, f"{where} member {i}")
        out.append({"name": name, **options})
    return out


def safe_backbone_config(backbone_cfg: Any, where: str) -> tuple[str, dict[str, Any]]:
    """The ``model.backbone`` section of a checkpoint, reduced to what may build a model; else an error.

    Allowed: a registered backbone name with options that its factory's signature names, or
    ``timm/<name>`` (a plain timm model name) with ``embedding_size``/``input_size`` and the shape
    options of :data:`TIMM_SHAPE_OPTIONS`; values are numbers, booleans, short identifiers or short lists
    of them. ``pretrained`` and ``weights`` may be recorded (a run that started from ImageNet weights
    or a file) but are never passed on and no file is opened: the checkpoint's own weights are loaded.
    ``template`` may be stored too. URLs, paths, ``pretrained_cfg*``, ``checkpoint_path`` and any other
    keyword are refused with one line naming the key. An ``ensemble``'s ``members`` are checked as
    sections of their own (at most ``MAX_MEMBERS``, never nested).
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
    # The file the run started from (model.backbone.weights) is history: the checkpoint's own tensors
    # are loaded, so the path is dropped unread, whatever it names.
    weights = bcfg.pop("weights", None)
    if weights is not None and not isinstance(weights, str):
        raise FaceforgeError(
            f"{where}: model.backbone.weights holds a {type(weights).__name__} and is refused; "
            "expected a path (never opened on load) or null"
        )
    if name.startswith("timm/"):
        rest = name[len("timm/") :]
        if not _TIMM_NAME.match(rest) or ".." in rest:
            raise FaceforgeError(
                f"{where}: model.backbone.name {name[:80]!r} is refused; expected timm/<model name> "
                "(no hub prefixes, URLs or paths)"
            )
        allowed = TIMM_SHAPE_OPTIONS | {"embedding_size", "input_size", "template"}
    else:
        if name != ENSEMBLE and (name not in MODELS or name.startswith("_")):
            raise FaceforgeError(
                f"{where}: model.backbone.name {name[:80]!r} is not a registered backbone"
                f"{did_you_mean(name, MODELS.names())}"
            )
        params = _params(name)
        allowed = frozenset(
            k for k, p in params.items() if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)
        ) | {"template"}
    out: dict[str, Any] = {}
    if name == "ensemble":
        out["members"] = _safe_members(bcfg.pop("members", None), where)
    for key, value in bcfg.items():
        if not isinstance(key, str) or key not in allowed:
            raise FaceforgeError(
                f"{where}: model.backbone.{str(key)[:60]} is refused: not a shape option of {name!r} "
                f"(allowed: {', '.join(sorted(allowed))})"
            )
        out[key] = _safe_value(value, key, where)
    return name, out
