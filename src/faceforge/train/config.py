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
    "run_dir": None,  # explicit run directory (multi-node launches); null: run_root/name/<timestamp>
    "resume": None,  # null | auto (newest run of this name with a last.ckpt) | path to a checkpoint
    "data": {
        "root": "data/synthfaces",  # data set folder; the paths below are relative to it
        "train": "train",  # ImageFolder of training identities
        "val_pairs": "val_pairs.txt",  # pairs for the verification callback (null: none)
        "test_pairs": "test_pairs.txt",  # pairs evaluated after training (null: none)
        "image_size": 112,  # square input side; sets the backbone's input_size too
        "batch_size": 128,  # per device and per forward pass
        "global_batch_size": None,  # images per optimizer step over all devices (sets accumulation)
        "num_workers": "auto",  # loader processes; auto: chosen by the device preset
        "cache": True,  # decode every training image once into memory
        "flip": True,  # random horizontal flip (in the batch)
        "augment": [],  # per-sample transforms: [{name: low_resolution, factor: [2, 6], p: 0.2}]
    },
    "model": {
        "backbone": {"name": "ghostfacenetv1", "embedding_size": 512},
        "head": {"name": "arcface", "scale": 64.0, "margin": 0.5},
        "partial_fc": None,  # {sample_rate: 0.3}: class centres sharded over ranks (An et al. 2022)
    },
    "optimizer": {
        "name": "sgd",  # sgd | adamw
        "lr": 0.1,
        "momentum": 0.9,  # sgd
        "nesterov": False,  # sgd
        "betas": [0.9, 0.999],  # adamw
        "weight_decay": 5.0e-4,  # backbone weights (never BatchNorm/PReLU/bias)
        "head_weight_decay": None,  # class centres; null: same as weight_decay
        "clip_grad_norm": None,  # max L2 norm of the backbone's gradient (arcface_torch: 5)
    },
    "scheduler": {
        "name": "cosine",  # cosine | cosine_restarts | multistep | polynomial | plateau | constant
        "warmup_epochs": 1.0,  # linear warm-up from lr/steps (all but plateau)
        "min_lr_ratio": 0.0,  # floor of cosine / cosine_restarts / polynomial, as a share of lr
        "power": 2.0,  # polynomial: lr * (1 - t)^power
        "milestones": [],  # multistep: epochs at which lr is multiplied by gamma
        "gamma": 0.1,  # multistep and plateau factor
        "restart_epochs": 1.0,  # cosine_restarts: length of the first cycle (epochs)
        "restart_mult": 2,  # cosine_restarts: each cycle is this many times longer
        "patience": 2,  # plateau: epochs without improvement before lowering lr
        "monitor": "auto",  # plateau: metric; auto: val/acc (max), or train/loss_epoch (min) without pairs
    },
    "trainer": {
        "max_epochs": 10,
        "max_steps": -1,
        "precision": "auto",  # auto (device preset) | 32-true | bf16-mixed | 16-mixed
        "accelerator": "auto",
        "devices": 1,
        "num_nodes": 1,
        "strategy": "auto",  # auto | ddp | ddp_find_unused_parameters_true
        "accumulate_grad_batches": "auto",  # auto: global_batch_size / (batch_size * devices * nodes)
        "log_every_n_steps": 10,
        "gradient_clip_val": None,  # Lightning's clipping of every parameter (see optimizer.clip_grad_norm)
        "deterministic": False,
        "enable_progress_bar": True,
        "num_threads": 0,  # CPU threads for torch (0: leave torch's default)
        "channels_last": False,  # NHWC memory format (faster convolutions on tensor cores)
        "compile": False,  # torch.compile the backbone
        "freeze_backbone_epochs": 0,  # train only the head for this many first epochs
        "ema_decay": None,  # keep an exponential moving average of the backbone weights (e.g. 0.999)
        "early_stopping": None,  # {monitor: val/acc, patience: 3, mode: max, min_delta: 0.0}
        "checkpoint_every_n_steps": 0,  # also write last.ckpt every N optimizer steps (mid-epoch resume)
        "logger": "tensorboard",  # tensorboard | csv | wandb | mlflow | a list of them | null
    },
    "verification": {
        "every_n_steps": 0,  # 0: at the end of every epoch
        "flip": True,  # flip-test fusion (sum of the embeddings of the image and its mirror)
        "batch_size": 256,
    },
}

# Sections whose keys are open (checked against a constructor later, not against DEFAULTS).
OPEN_SECTIONS = ("model.backbone", "model.head")
# Optional mappings (null: off): a new value replaces the old one whole.
NULLABLE_SECTIONS = ("model.partial_fc", "trainer.early_stopping")


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
        if key in NULLABLE_SECTIONS:
            base[k] = copy.deepcopy(v)
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
    """Check every value of ``cfg`` and the backbone/head names and options, without building anything."""
    from faceforge.heads.base import HEADS, head_options
    from faceforge.models.build import check_backbone_config

    validate_config(cfg)
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


PRECISIONS = ("auto", "32-true", "bf16-mixed", "16-mixed")
SCHEDULERS = ("cosine", "cosine_restarts", "multistep", "polynomial", "plateau", "constant")
OPTIMIZERS = ("sgd", "adamw")
LOGGERS = ("tensorboard", "csv", "wandb", "mlflow")
STRATEGIES = ("auto", "ddp", "ddp_find_unused_parameters_true")
EARLY_STOPPING_KEYS = ("monitor", "patience", "mode", "min_delta")


def _num(
    cfg: dict[str, Any], key: str, *, lo: float | None = None, integer: bool = False, none: bool = False
) -> None:
    """Check that the dotted ``key`` of ``cfg`` is a number (an int if ``integer``) ``>= lo``."""
    v: Any = cfg
    for part in key.split("."):
        v = v[part]
    if v is None and none:
        return
    kind = "an integer" if integer else "a number"
    ok = not isinstance(v, bool) and isinstance(v, int if integer else (int, float))
    if not ok or (lo is not None and v < lo):
        bound = f" >= {lo:g}" if lo is not None else ""
        raise FaceforgeError(
            f"config key {key!r} must be {kind}{bound}{' or null' if none else ''}, got {v!r}"
        )


def _choice(value: Any, key: str, choices: Sequence[str]) -> None:
    if value not in choices:
        raise FaceforgeError(
            f"config key {key!r} must be one of {', '.join(choices)}, got {value!r}"
            f"{did_you_mean(str(value), choices)}"
        )


def validate_config(cfg: dict[str, Any]) -> None:
    """Check the values of the training keys (types, ranges, choices); errors name the key."""
    d, o, s, t = cfg["data"], cfg["optimizer"], cfg["scheduler"], cfg["trainer"]
    _num(cfg, "data.batch_size", lo=1, integer=True)
    _num(cfg, "data.global_batch_size", lo=1, integer=True, none=True)
    if d["num_workers"] != "auto":
        _num(cfg, "data.num_workers", lo=0, integer=True)
    _choice(o["name"], "optimizer.name", OPTIMIZERS)
    _num(cfg, "optimizer.lr", lo=0)
    _num(cfg, "optimizer.momentum", lo=0)
    _num(cfg, "optimizer.weight_decay", lo=0)
    _num(cfg, "optimizer.head_weight_decay", lo=0, none=True)
    _num(cfg, "optimizer.clip_grad_norm", lo=0, none=True)
    betas = o["betas"]
    if not (isinstance(betas, (list, tuple)) and len(betas) == 2 and all(0 <= float(b) < 1 for b in betas)):
        raise FaceforgeError(f"config key 'optimizer.betas' must be two numbers in [0, 1), got {betas!r}")
    _choice(s["name"], "scheduler.name", SCHEDULERS)
    _num(cfg, "scheduler.warmup_epochs", lo=0)
    _num(cfg, "scheduler.min_lr_ratio", lo=0)
    _num(cfg, "scheduler.power", lo=0)
    _num(cfg, "scheduler.gamma", lo=0)
    _num(cfg, "scheduler.restart_epochs", lo=0)
    _num(cfg, "scheduler.restart_mult", lo=1)
    _num(cfg, "scheduler.patience", lo=0, integer=True)
    ms = s["milestones"]
    if not isinstance(ms, (list, tuple)) or any(
        isinstance(m, bool) or not isinstance(m, (int, float)) for m in ms
    ):
        raise FaceforgeError(f"config key 'scheduler.milestones' must be a list of epochs, got {ms!r}")
    if list(ms) != sorted(ms):
        raise FaceforgeError(f"config key 'scheduler.milestones' must be increasing, got {list(ms)}")
    if s["name"] == "multistep" and not ms:
        raise FaceforgeError("scheduler.name multistep needs scheduler.milestones (e.g. [12, 20, 24])")
    if s["name"] == "cosine_restarts" and not s["restart_epochs"] > 0:
        raise FaceforgeError("config key 'scheduler.restart_epochs' must be > 0 for cosine_restarts")
    _choice(t["precision"], "trainer.precision", PRECISIONS)
    _choice(t["strategy"], "trainer.strategy", STRATEGIES)
    if t["accumulate_grad_batches"] != "auto":
        _num(cfg, "trainer.accumulate_grad_batches", lo=1, integer=True)
    _num(cfg, "trainer.num_nodes", lo=1, integer=True)
    _num(cfg, "trainer.freeze_backbone_epochs", lo=0, integer=True)
    _num(cfg, "trainer.checkpoint_every_n_steps", lo=0, integer=True)
    _num(cfg, "trainer.ema_decay", lo=0, none=True)
    if t["ema_decay"] is not None and not t["ema_decay"] < 1:
        raise FaceforgeError(f"config key 'trainer.ema_decay' must be in [0, 1), got {t['ema_decay']!r}")
    for key in ("channels_last", "compile", "deterministic"):
        if not isinstance(t[key], bool):
            raise FaceforgeError(f"config key 'trainer.{key}' must be true or false, got {t[key]!r}")
    es = t["early_stopping"]
    if es is not None:
        if not isinstance(es, dict):
            raise FaceforgeError(f"config key 'trainer.early_stopping' must be a mapping or null, got {es!r}")
        for k in es:
            if k not in EARLY_STOPPING_KEYS:
                raise FaceforgeError(
                    f"unknown config key 'trainer.early_stopping.{k}'{did_you_mean(k, EARLY_STOPPING_KEYS)}"
                )
        if "mode" in es:
            _choice(es["mode"], "trainer.early_stopping.mode", ("min", "max"))
        if "patience" in es and (isinstance(es["patience"], bool) or not isinstance(es["patience"], int)):
            raise FaceforgeError(
                f"config key 'trainer.early_stopping.patience' must be an integer, got {es['patience']!r}"
            )
    loggers = t["logger"]
    for lg in [] if loggers is None else loggers if isinstance(loggers, list) else [loggers]:
        _choice(lg, "trainer.logger", LOGGERS)
    pfc = cfg["model"]["partial_fc"]
    if pfc is not None:
        if not isinstance(pfc, dict):
            raise FaceforgeError(f"config key 'model.partial_fc' must be a mapping or null, got {pfc!r}")
        for k in pfc:
            if k != "sample_rate":
                raise FaceforgeError(
                    f"unknown config key 'model.partial_fc.{k}'{did_you_mean(k, ['sample_rate'])}"
                )
        rate = pfc.get("sample_rate", 1.0)
        if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0 < rate <= 1:
            raise FaceforgeError(f"config key 'model.partial_fc.sample_rate' must be in (0, 1], got {rate!r}")
    r = cfg["resume"]
    if r is not None and not isinstance(r, str):
        raise FaceforgeError(f"config key 'resume' must be 'auto' or a checkpoint path, got {r!r}")
