"""Training configuration: YAML files with dotted command-line overrides (LightningCLI style).

``faceforge train --config a.yaml --trainer.max_epochs 3 --model.backbone.width 0.5`` loads the
defaults below, merges ``a.yaml`` onto them, then applies each ``--key value`` (values are parsed as
YAML, so ``3`` is an int, ``null`` is None and ``[1, 2]`` a list). A key that does not exist is an
error with a did-you-mean. ``model.backbone`` and ``model.head`` hold a ``name`` plus that
component's own keyword options, which are checked against the component's constructor.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from faceforge.errors import FaceforgeError, did_you_mean

DEFAULTS: dict[str, Any] = {
    "name": "faceforge",
    "seed": 0,
    "run_root": "runs",
    "data": {
        "root": "data/synthfaces",  # data set folder; the paths below are relative to it
        "train": "train",  # ImageFolder of training identities
        "val_pairs": "val_pairs.txt",  # pairs for the verification callback (null: none)
        "test_pairs": "test_pairs.txt",  # pairs evaluated after training (null: none)
        "image_size": 112,  # square input side; sets the backbone's input_size too
        "batch_size": 128,
        "num_workers": 0,
        "cache": True,  # decode every training image once into memory
        "flip": True,  # random horizontal flip (in the batch)
        "augment": [],  # per-sample transforms: [{name: low_resolution, factor: [2, 6], p: 0.2}]
    },
    "model": {
        "backbone": {"name": "ghostfacenetv1", "embedding_size": 512},
        "head": {"name": "arcface", "scale": 64.0, "margin": 0.5},
    },
    "optimizer": {
        "name": "sgd",  # sgd | adamw
        "lr": 0.1,
        "momentum": 0.9,
        "weight_decay": 5.0e-4,
        "head_weight_decay": None,  # null: same as weight_decay
    },
    "scheduler": {
        "name": "cosine",  # cosine | constant
        "warmup_epochs": 1.0,
        "min_lr_ratio": 0.0,
    },
    "trainer": {
        "max_epochs": 10,
        "max_steps": -1,
        "precision": "32-true",  # 32-true | bf16-mixed | 16-mixed
        "accelerator": "auto",
        "devices": 1,
        "log_every_n_steps": 10,
        "gradient_clip_val": None,
        "deterministic": False,
        "enable_progress_bar": True,
        "num_threads": 0,  # CPU threads for torch (0: leave torch's default)
    },
    "verification": {
        "every_n_steps": 0,  # 0: at the end of every epoch
        "flip": True,  # flip-test fusion (sum of the embeddings of the image and its mirror)
        "batch_size": 256,
    },
}

# Sections whose keys are open (checked against a constructor later, not against DEFAULTS).
OPEN_SECTIONS = ("model.backbone", "model.head")


def _flat_keys(d: dict[str, Any], prefix: str = "") -> list[str]:
    keys = []
    for k, v in d.items():
        key = f"{prefix}{k}"
        keys.append(key)
        if isinstance(v, dict) and key not in OPEN_SECTIONS:
            keys += _flat_keys(v, key + ".")
    return keys


def _is_open(key: str) -> bool:
    return any(key == s or key.startswith(s + ".") for s in OPEN_SECTIONS)


def _merge(base: dict[str, Any], new: dict[str, Any], where: str, prefix: str = "") -> None:
    """Merge ``new`` into ``base`` in place, refusing keys that ``DEFAULTS`` does not know."""
    for k, v in new.items():
        key = f"{prefix}{k}"
        if key in OPEN_SECTIONS:
            if not isinstance(v, dict):
                raise FaceforgeError(f"{where}: {key} must be a mapping with a 'name', got {v!r}")
            if "name" in v and v["name"] != base.get(k, {}).get("name"):
                base[k] = {}  # a different component: the old one's options do not apply
            base.setdefault(k, {}).update(v)
            continue
        if k not in base:
            known = [x for x in _flat_keys(DEFAULTS) if not _is_open(x) or x in OPEN_SECTIONS]
            raise FaceforgeError(f"{where}: unknown config key {key!r}{did_you_mean(key, known)}")
        if isinstance(base[k], dict):
            if not isinstance(v, dict):
                raise FaceforgeError(f"{where}: {key} must be a mapping, got {v!r}")
            _merge(base[k], v, where, key + ".")
        else:
            base[k] = v


def load_config(path: str | os.PathLike[str] | None = None, overrides: Sequence[str] = ()) -> dict[str, Any]:
    """Defaults ← YAML file ← ``--key value`` overrides; returns the resolved config dict."""
    cfg = copy.deepcopy(DEFAULTS)
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise FaceforgeError(f"config file {p} does not exist")
        try:
            data = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as e:
            raise FaceforgeError(f"config file {p} is not valid YAML: {e}".splitlines()[0]) from None
        if not isinstance(data, dict):
            raise FaceforgeError(
                f"config file {p} must hold a mapping at the top level, got {type(data).__name__}"
            )
        _merge(cfg, data, str(p))
    for key, value in parse_overrides(overrides):
        _merge(cfg, _nest(key, value), "command line")
    return cfg


def parse_overrides(args: Sequence[str]) -> list[tuple[str, Any]]:
    """``["--a.b", "1", "--c=x"]`` → ``[("a.b", 1), ("c", "x")]`` (values parsed as YAML)."""
    out: list[tuple[str, Any]] = []
    i = 0
    args = list(args)
    while i < len(args):
        tok = args[i]
        if not tok.startswith("--") or len(tok) < 3:
            raise FaceforgeError(f"unexpected argument {tok!r}: overrides look like --section.key value")
        if "=" in tok:
            key, raw = tok[2:].split("=", 1)
            i += 1
        else:
            if i + 1 >= len(args):
                raise FaceforgeError(f"override {tok} needs a value")
            key, raw = tok[2:], args[i + 1]
            i += 2
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError:
            value = raw
        out.append((key, value))
    return out


def _nest(key: str, value: Any) -> dict[str, Any]:
    parts = key.split(".")
    d: dict[str, Any] = {parts[-1]: value}
    for p in reversed(parts[:-1]):
        d = {p: d}
    return d


def dump_config(cfg: dict[str, Any]) -> str:
    """The resolved config as YAML that ``--config`` reads back to the same dict."""
    return yaml.safe_dump(cfg, sort_keys=False, default_flow_style=False)


def validate_components(cfg: dict[str, Any]) -> None:
    """Check the backbone and head names and options of ``cfg`` without building anything."""
    from faceforge.heads.base import HEADS, head_options
    from faceforge.models.build import check_backbone_config

    check_backbone_config(cfg["model"]["backbone"])
    hcfg = dict(cfg["model"]["head"])
    name = hcfg.pop("name", None)
    if not name:
        raise FaceforgeError("model.head.name is missing (e.g. --model.head.name arcface)")
    known = head_options(HEADS.get(name))
    for key in hcfg:
        if key not in known:
            raise FaceforgeError(
                f"unknown config key 'model.head.{key}' for head {name!r}{did_you_mean(key, known)}; "
                f"known: {', '.join(sorted(known))}"
            )
