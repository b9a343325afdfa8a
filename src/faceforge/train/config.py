"""Training configuration: a typed schema (one dataclass per section) parsed by jsonargparse.
:func:`load_config` resolves defaults ← YAML ← ``--section.key value`` overrides, checks every value
against its declared type (one :class:`FaceforgeError` line per mistake, with the closest known key)
and returns a plain nested dict; :func:`dump_config` writes it back as YAML; :func:`validate_components`
checks the open ``model.backbone`` / ``model.head`` sections. Details: docs/training.md.
"""

from __future__ import annotations

import copy
import dataclasses
import os
import re
import types
import typing
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union

import yaml

from faceforge.errors import FaceforgeError, did_you_mean

# The field annotations are read at runtime (typing.get_type_hints): jsonargparse parses each
# value against them and error messages describe them.
Number = int | float
Precision = Literal["auto", "32-true", "bf16-mixed", "16-mixed"]
SchedulerName = Literal["cosine", "cosine_restarts", "multistep", "polynomial", "plateau", "constant", "step"]
LoggerName = Literal["tensorboard", "csv", "wandb", "mlflow"]
Strategy = Literal["auto", "ddp", "ddp_find_unused_parameters_true"]


def _expect(text: str) -> dict[str, str]:
    """Field metadata: how an error message describes what the field accepts."""
    return {"expects": text}


# ------------------------------------------------------------------------------- sub-sections
# Optional mappings (null: off). Given as a mapping, the missing keys take these defaults.
@dataclass
class EarlyStoppingConfig:
    monitor: str | None = "auto"  # auto: the checkpoint's monitor (null is auto too)
    patience: int = 3
    mode: Literal["auto", "min", "max"] = "auto"  # auto: min for losses, max otherwise
    min_delta: float = 0.0


@dataclass
class PartialFCConfig:
    sample_rate: float = 1.0  # share of the class centres sampled per step, in (0, 1]


@dataclass
class SamplerConfig:
    name: Literal["pk"] = "pk"  # P classes x K images per batch (faceforge.data.samplers)
    classes_per_batch: int | None = None  # P; null: as many as fit in data.batch_size
    samples_per_class: int = 4  # K


@dataclass
class RetrievalConfig:
    split: str = "val"  # part of data.split embedded as queries (the train part is the gallery)
    k: int = 20  # neighbours of the kNN vote
    ks: list[int] = field(default_factory=lambda: [1, 5])  # Recall@K logged for these K


# ------------------------------------------------------------------------------------ sections
@dataclass
class DataConfig:
    root: str = "data/synthfaces"  # data set folder; the paths below are relative to it
    train: str = "train"  # ImageFolder of training identities (or a .rec)
    split: str | None = field(  # split file (faceforge data split): train on its train part
        default=None, metadata=_expect("a split file path or null")
    )
    val_pairs: str | None = field(  # pairs for the verification callback (null: none)
        default="val_pairs.txt",
        metadata=_expect("a pair file path or null (several sets: data.val_sets {name: path})"),
    )
    val_sets: dict[str, str] | None = field(  # {name: .bin or pair list}; replaces val_pairs
        default=None, metadata=_expect("a mapping {name: path of a .bin or pair list} or null")
    )
    test_pairs: str | None = field(  # pairs evaluated after training (null: none)
        default="test_pairs.txt", metadata=_expect("a pair file path or null")
    )
    image_size: int = 112  # square input side; sets the backbone's input_size too
    batch_size: int = 128  # per device and per forward pass
    global_batch_size: int | None = None  # images per optimizer step over all devices
    num_workers: Literal["auto"] | int = "auto"  # loader processes; auto: device preset
    cache: bool = True  # decode every training image once into memory
    flip: bool = True  # random horizontal flip (in the batch)
    augment: list[dict[str, Any]] = field(  # per-sample transforms
        default_factory=list,
        metadata=_expect("a list of transforms like [{name: low_resolution, factor: [2, 6], p: 0.2}]"),
    )
    sampler: SamplerConfig | None = None  # {name: pk, classes_per_batch, samples_per_class}
    mixup: str | None = field(  # identity mixup: a name,a,b,phi CSV (SynthFaces: train_mix.csv)
        default=None, metadata=_expect("a mixup CSV path (e.g. train_mix.csv) or null")
    )


@dataclass
class ModelConfig:
    backbone: dict[str, Any] = field(
        default_factory=lambda: {"name": "ghostfacenetv1", "embedding_size": 512}
    )
    head: dict[str, Any] = field(default_factory=lambda: {"name": "arcface", "scale": 64.0, "margin": 0.5})
    partial_fc: PartialFCConfig | None = None  # {sample_rate: 0.3}: class centres sharded over ranks


@dataclass
class OptimizerConfig:
    name: Literal["sgd", "adamw"] = "sgd"
    lr: float = 0.1
    momentum: float = 0.9  # sgd
    nesterov: bool = False  # sgd
    betas: list[float] = field(  # adamw
        default_factory=lambda: [0.9, 0.999], metadata=_expect("two numbers in [0, 1)")
    )
    weight_decay: float = 5.0e-4  # backbone weights (never BatchNorm/PReLU/bias)
    head_weight_decay: float | None = None  # class centres; null: same as weight_decay
    # class centres learn at lr × this: > 1 lets a new head catch up with a pretrained backbone
    # being fine-tuned (docs/training.md, "Optimizer and schedules")
    head_lr_scale: float = 1.0
    clip_grad_norm: float | None = None  # max L2 norm of the backbone's gradient


@dataclass
class SchedulerConfig:
    name: SchedulerName = "cosine"
    warmup_epochs: float = 1.0  # linear warm-up from lr/steps (all but plateau)
    min_lr_ratio: float = 0.0  # floor of cosine / cosine_restarts / polynomial, as a share of lr
    power: float = 2.0  # polynomial: lr * (1 - t)^power
    milestones: list[Number] = field(  # multistep: epochs at which lr is multiplied by gamma
        default_factory=list, metadata=_expect("a list of epochs")
    )
    gamma: float = 0.1  # multistep, step and plateau factor
    decay_steps: list[int] = field(  # step: optimizer steps at which lr is multiplied by gamma
        default_factory=list, metadata=_expect("a list of optimizer steps (integers)")
    )
    restart_epochs: float = 1.0  # cosine_restarts: length of the first cycle (epochs)
    restart_mult: Number = 2  # cosine_restarts: each cycle is this many times longer
    patience: int = 2  # plateau: epochs without improvement before lowering lr
    monitor: str = "auto"  # plateau: metric; auto: the checkpoint's monitor


@dataclass
class TrainerConfig:
    max_epochs: int = 10
    max_steps: int = -1
    precision: Precision = "auto"  # auto: device preset
    accelerator: str = "auto"
    devices: int | str | list[int] = 1
    num_nodes: int = 1
    strategy: Strategy = "auto"
    accumulate_grad_batches: Literal["auto"] | int = "auto"  # auto: from global_batch_size
    log_every_n_steps: int = 10
    gradient_clip_val: float | None = None  # Lightning's clipping of every parameter
    deterministic: bool = False
    enable_progress_bar: bool = True
    num_threads: int = 0  # CPU threads for torch (0: leave torch's default)
    channels_last: bool = False  # NHWC memory format
    compile: bool = False  # torch.compile the backbone
    freeze_backbone_epochs: int = 0  # train only the head for this many first epochs
    ema_decay: float | None = None  # exponential moving average of the backbone weights
    early_stopping: EarlyStoppingConfig | None = None  # {monitor, patience, mode, min_delta}
    checkpoint_every_n_steps: int = 0  # also write last.ckpt every N optimizer steps
    logger: LoggerName | list[LoggerName] | None = field(
        default="tensorboard",
        metadata=_expect("one of tensorboard, csv, wandb, mlflow, a list of them, or null"),
    )
    tf32: Literal["auto"] | bool = "auto"  # TF32 matmuls/convolutions; auto: on for Ampere+
    cudnn_benchmark: Literal["auto"] | bool = "auto"  # auto: on for Ampere+ (fixed input size)


@dataclass
class VerificationConfig:
    every_n_steps: int = 0  # 0: at the end of every epoch
    flip: bool = True  # flip-test fusion (sum of the embeddings of the image and its mirror)
    batch_size: int = 256


@dataclass
class ValidationConfig:
    retrieval: RetrievalConfig | None = None  # {split: val, k: 20, ks: [1, 5]}; needs data.split


@dataclass
class CheckpointConfig:
    keep: Literal["last", "best", "all"] | int = field(
        default="best", metadata=_expect("one of last, best, all, or a number N >= 1 (the N best)")
    )
    monitor: str = "auto"  # metric best.ckpt follows; auto: see resolve_monitor
    mode: Literal["auto", "min", "max"] = "auto"


@dataclass
class TrainConfig:
    name: str = "faceforge"
    seed: int = 0
    run_root: str = "runs"
    run_dir: str | None = None  # explicit run directory; null: run_root/name/<timestamp>
    resume: str | None = field(  # null | auto | path to a checkpoint
        default=None, metadata=_expect("'auto' or a checkpoint path")
    )
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    verification: VerificationConfig = field(default_factory=VerificationConfig)
    validation: ValidationConfig = field(default_factory=ValidationConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)


# Sections whose keys are open (checked against a constructor later, not against the schema).
OPEN_SECTIONS = ("model.backbone", "model.head")


# ------------------------------------------------------------------------ schema introspection
def _args(tp: Any) -> tuple[Any, ...]:
    return typing.get_args(tp)


def _is_union(tp: Any) -> bool:
    return typing.get_origin(tp) in (Union, types.UnionType)


def _sub_dataclass(tp: Any) -> type | None:
    """The dataclass of an ``Optional[SomeConfig]`` field (a nullable sub-section), else None."""
    if _is_union(tp):
        dcs = [a for a in _args(tp) if dataclasses.is_dataclass(a)]
        if len(dcs) == 1 and type(None) in _args(tp):
            return dcs[0]
    return None


@dataclass(frozen=True)
class _Field:
    key: str  # dotted key
    type: Any
    default: Any
    expects: str | None
    sub: type | None  # nullable sub-section dataclass
    open: bool  # open section (model.backbone / model.head)


def _default_of(f: dataclasses.Field) -> Any:
    if f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
        return f.default_factory()  # type: ignore[misc]
    return f.default


def _walk_schema(cls: type, prefix: str = "") -> list[_Field]:
    """Every leaf field of the schema (sections are recursed into; sub-sections are leaves)."""
    out: list[_Field] = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        key = prefix + f.name
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            out += _walk_schema(tp, key + ".")
            continue
        expects, sub = f.metadata.get("expects"), _sub_dataclass(tp)
        out.append(_Field(key, tp, _default_of(f), expects, sub, key in OPEN_SECTIONS))
    return out


FIELDS: dict[str, _Field] = {f.key: f for f in _walk_schema(TrainConfig)}
SECTIONS = tuple(k for k, tp in typing.get_type_hints(TrainConfig).items() if dataclasses.is_dataclass(tp))
# Optional mappings (null: off): a new mapping replaces the old one whole; dotted keys edit it.
NULLABLE_SECTIONS = tuple(k for k, f in FIELDS.items() if f.sub is not None)


def _sub_fields(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


# The type of every dotted key, the keys inside nullable sub-sections included.
TYPES: dict[str, Any] = {k: f.type for k, f in FIELDS.items()}
for _k, _f in FIELDS.items():
    if _f.sub is not None:
        TYPES.update({f"{_k}.{n}": t for n, t in _sub_fields(_f.sub).items()})


def _known_keys() -> list[str]:
    keys = list(SECTIONS)
    for k, f in FIELDS.items():
        keys.append(k)
        if f.sub is not None:
            keys += [f"{k}.{n}" for n in _sub_fields(f.sub)]
    return keys


def _nested_defaults() -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, f in FIELDS.items():
        d = out
        parts = k.split(".")
        for p in parts[:-1]:
            d = d.setdefault(p, {})
        d[parts[-1]] = copy.deepcopy(f.default)
    return out


#: the defaults as the nested dict :func:`load_config` returns (read-only: copy before changing)
DEFAULTS: dict[str, Any] = _nested_defaults()


def _type_name(tp: Any) -> str:
    """A short description of a type for error messages."""
    if tp is type(None):
        return "null"
    if tp is bool:
        return "true or false"
    if tp is int:
        return "an integer"
    if tp is float:
        return "a number"
    if tp is str:
        return "a string"
    if tp is Any:
        return "any value"
    if dataclasses.is_dataclass(tp):
        return "a mapping {" + ", ".join(_sub_fields(tp)) + "}"
    origin = typing.get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(str(a) for a in _args(tp))
    if _is_union(tp):
        parts = list(_args(tp))
        if set(parts) == {int, float}:
            return "a number"
        if int in parts and float in parts:
            parts = [p for p in parts if p is not int]
        names = [_type_name(p) for p in parts if p is not type(None)]
        text = ", ".join(names[:-1]) + (" or " if len(names) > 1 else "") + names[-1]
        return text + (" or null" if type(None) in parts else "")
    if origin is list:
        (item,) = _args(tp) or (Any,)
        inner = _type_name(item)
        return "a list" if item is Any else f"a list of {inner.removeprefix('a ').removeprefix('an ')}s"
    if origin is dict:
        return "a mapping"
    return getattr(tp, "__name__", str(tp))


def _expects(key: str) -> str:
    f = FIELDS.get(key)
    if f is not None and f.expects:
        return f.expects
    return _type_name(TYPES[key]) if key in TYPES else "a valid value"


def _choices(key: str) -> list[str]:
    """The string choices of a key with a Literal type (for did-you-mean)."""
    if key not in TYPES:
        return []
    out: list[str] = []

    def walk(tp: Any) -> None:
        if typing.get_origin(tp) is Literal:
            out.extend(str(a) for a in _args(tp))
        elif _is_union(tp) or typing.get_origin(tp) is list:
            for a in _args(tp):
                walk(a)

    walk(TYPES[key])
    return out


# ------------------------------------------------------------------------------- jsonargparse
def _yaml_load(text: str) -> Any:
    """YAML as jsonargparse reads it: ``5e-4`` and ``1e3`` are floats (PyYAML alone keeps them strings)."""
    from jsonargparse import get_loader

    return get_loader("yaml")(text)


_PARSERS: dict[Any, Any] = {}


def _parser(cls: type = TrainConfig) -> Any:
    """The jsonargparse parser of a schema class: one ``--dotted.key`` argument per leaf field.

    Nullable sub-sections are declared as optional mappings and completed from their own dataclass
    (:func:`_complete_sub`); jsonargparse then merges dotted keys into them
    (``--trainer.early_stopping.patience 5``) and replaces them whole when given a mapping.
    """
    if cls in _PARSERS:
        return _PARSERS[cls]
    from jsonargparse import ArgumentParser

    p = ArgumentParser(exit_on_error=False, allow_abbrev=False, add_help=False)
    for f in _walk_schema(cls):
        tp = dict[str, Any] | None if f.sub is not None else f.type
        p.add_argument(f"--{f.key}", type=tp, default=copy.deepcopy(f.default))
    _PARSERS[cls] = p
    return p


_KEY_RE = re.compile(r'Parser key "([^"]+)"')


def _type_error(err: Exception, where: str, supplied: dict[str, Any], prefix: str = "") -> FaceforgeError:
    """One line for a jsonargparse error: the key, what it expects, the value given."""
    msg = str(err)
    m = _KEY_RE.search(msg)
    if not m:
        first = (msg.strip().splitlines() or [type(err).__name__])[0]
        return FaceforgeError(f"{where}: {first}" if where else first)
    key = prefix + m.group(1)
    value = supplied.get(m.group(1), supplied.get(key))
    if value is None and m.group(1) not in supplied:
        got = re.search(r"Got value: (.*)", msg)
        value = got.group(1).strip() if got else "?"
    expects = _expects(key)
    hint = did_you_mean(str(value), _choices(key)) if isinstance(value, str) else ""
    head = f"{where}: " if where else ""
    return FaceforgeError(f"{head}config key {key!r} must be {expects}, got {value!r}{hint}")


def _complete_sub(key: str, value: Any, cls: type) -> dict[str, Any] | None:
    """A nullable sub-section's mapping with its types checked and its missing keys defaulted."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise FaceforgeError(f"config key {key!r} must be {_type_name(cls)} or null, got {value!r}")
    known = list(_sub_fields(cls))
    for k in value:
        if k not in known:
            raise FaceforgeError(f"unknown config key '{key}.{k}'{did_you_mean(str(k), known)}")
    try:
        ns = _parser(cls).parse_object(dict(value))
    except Exception as e:  # jsonargparse raises argparse.ArgumentError (or TypeError inside)
        raise _type_error(e, "", {f"{key}.{k}": v for k, v in value.items()}, prefix=key + ".") from None
    return _plain(ns.as_dict())


def _plain(v: Any) -> Any:
    """Lists for tuples, dicts for namespaces: what YAML and ``torch.load(weights_only)`` take."""
    if isinstance(v, dict):
        return {k: _plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    return v


# ------------------------------------------------------------------------------ key checking
def _check_keys(d: dict[str, Any], where: str, prefix: str = "") -> None:
    """Refuse keys the schema does not know (with a did-you-mean over every known key)."""
    for k, v in d.items():
        key = f"{prefix}{k}"
        if key in SECTIONS:
            if not isinstance(v, dict):
                raise FaceforgeError(f"{where}: config key {key!r} must be a mapping, got {v!r}")
            _check_keys(v, where, key + ".")
            continue
        f = FIELDS.get(key)
        if f is None:
            raise FaceforgeError(f"{where}: unknown config key {key!r}{did_you_mean(key, _known_keys())}")
        if f.sub is not None and isinstance(v, dict):
            known = list(_sub_fields(f.sub))
            for s in v:
                if s not in known:
                    raise FaceforgeError(
                        f"{where}: unknown config key '{key}.{s}'{did_you_mean(str(s), known)}"
                    )


def _check_dotted(key: str, where: str) -> str:
    """The schema field a dotted override key addresses (or goes into); raises for unknown keys."""
    parts = key.split(".")
    for n in range(len(parts), 0, -1):
        head = ".".join(parts[:n])
        f = FIELDS.get(head)
        if f is None:
            continue
        rest = parts[n:]
        if not rest or f.open:
            return head
        if f.sub is not None and len(rest) == 1:
            known = list(_sub_fields(f.sub))
            if rest[0] in known:
                return head
            raise FaceforgeError(f"{where}: unknown config key {key!r}{did_you_mean(rest[0], known)}")
        if any(typing.get_origin(a) is dict for a in (f.type, *_args(f.type))):
            return head  # one item of a mapping: --data.val_sets.lfw lfw.bin
        break
    if key in SECTIONS:
        raise FaceforgeError(f"{where}: {key!r} is a section; set its keys (--{key}.KEY value)")
    raise FaceforgeError(f"{where}: unknown config key {key!r}{did_you_mean(key, _known_keys())}")


# ------------------------------------------------------------------------------ open sections
def _merge_open(base: dict[str, Any], new: Any, key: str, where: str) -> dict[str, Any]:
    """``model.backbone`` / ``model.head``: a different ``name`` drops the old component's options."""
    if not isinstance(new, dict):
        raise FaceforgeError(f"{where}: {key} must be a mapping with a 'name', got {new!r}")
    if "name" in new and new["name"] != base.get("name"):
        base = {}
    return {**base, **copy.deepcopy(new)}


def _nest(parts: list[str], value: Any) -> dict[str, Any]:
    d: dict[str, Any] = {parts[-1]: value}
    for p in reversed(parts[:-1]):
        d = {p: d}
    return d


# ------------------------------------------------------------------------------------ loading
def _read_file(p: Path) -> dict[str, Any]:
    if not p.is_file():
        raise FaceforgeError(f"config file {p} does not exist")
    try:
        data = _yaml_load(p.read_text()) or {}
    except (yaml.YAMLError, ValueError) as e:
        raise FaceforgeError(f"config file {p} is not valid YAML: {e}".splitlines()[0]) from None
    if not isinstance(data, dict):
        raise FaceforgeError(
            f"config file {p} must hold a mapping at the top level, got {type(data).__name__}"
        )
    return data


def _flat_supplied(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if key in SECTIONS and isinstance(v, dict):
            out.update(_flat_supplied(v, key + "."))
        else:
            out[key] = v
    return out


def load_config(path: str | os.PathLike[str] | None = None, overrides: Sequence[str] = ()) -> dict[str, Any]:
    """Defaults ← YAML file ← ``--key value`` overrides, typed by the schema; returns a nested dict.

    Raises:
        FaceforgeError: a missing or malformed file, an unknown key (with a did-you-mean), a value of
            the wrong type, or a malformed override; one line naming the file or "command line".
    """
    parser = _parser()
    opened = {k: copy.deepcopy(FIELDS[k].default) for k in OPEN_SECTIONS}
    try:
        ns = parser.get_defaults()
    except Exception as e:  # pragma: no cover - the defaults are ours
        raise FaceforgeError(f"training config defaults: {e}") from None
    if path is not None:
        p = Path(path)
        where = str(p)
        data = _read_file(p)
        _check_keys(data, where)
        model = data.get("model")
        if isinstance(model, dict):
            model = dict(model)
            for k in OPEN_SECTIONS:
                short = k.split(".")[1]
                if short in model:
                    opened[k] = _merge_open(opened[k], model.pop(short), k, where)
            data = {**data, "model": model}
        try:
            ns = parser.parse_object(data, cfg_base=ns)
        except Exception as e:
            raise _type_error(e, where, _flat_supplied(data)) from None
    argv: list[str] = []
    supplied: dict[str, Any] = {}
    for key, raw in _split_overrides(overrides):
        head = _check_dotted(key, "command line")
        value = _load_value(raw)
        if FIELDS[head].open:
            rest = key.split(".")[len(head.split(".")) :]
            opened[head] = _merge_open(
                opened[head], _nest(rest, value) if rest else value, head, "command line"
            )
            continue
        supplied[key] = value
        if key == head and _takes_str(FIELDS[head].type) and isinstance(value, (list, dict)):
            # jsonargparse passes a str field's text through unparsed; a YAML list or mapping there
            # is a shape error (e.g. several validation sets given to data.val_pairs).
            raise FaceforgeError(f"command line: config key {key!r} must be {_expects(key)}, got {value!r}")
        argv.append(f"--{key}={raw}")
    if argv:
        try:
            ns = parser.parse_args(argv, namespace=ns)
        except Exception as e:
            raise _type_error(e, "command line", supplied) from None
    cfg = _plain(ns.as_dict())
    cfg["model"]["backbone"], cfg["model"]["head"] = opened["model.backbone"], opened["model.head"]
    for key in NULLABLE_SECTIONS:
        sec, name = key.split(".")
        cfg[sec][name] = _complete_sub(key, cfg[sec][name], FIELDS[key].sub)  # type: ignore[arg-type]
    return cfg


def _takes_str(tp: Any) -> bool:
    """Whether jsonargparse takes the field's command-line text as is (a str, or str or null)."""
    if tp is str:
        return True
    return _is_union(tp) and str in _args(tp) and not any(typing.get_origin(a) for a in _args(tp))


def _load_value(raw: str) -> Any:
    try:
        return _yaml_load(raw)
    except (yaml.YAMLError, ValueError):
        return raw


def _split_overrides(args: Sequence[str]) -> list[tuple[str, str]]:
    """``["--a.b", "1", "--c=x"]`` → ``[("a.b", "1"), ("c", "x")]`` (values still raw strings)."""
    out: list[tuple[str, str]] = []
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
        out.append((key, raw))
    return out


def parse_overrides(args: Sequence[str]) -> list[tuple[str, Any]]:
    """``["--a.b", "1", "--c=x"]`` → ``[("a.b", 1), ("c", "x")]`` (values read as YAML, ``5e-4`` a float)."""
    return [(k, _load_value(raw)) for k, raw in _split_overrides(args)]


def dump_config(cfg: dict[str, Any]) -> str:
    """The resolved config as YAML that ``--config`` reads back to the same dict."""
    return yaml.safe_dump(_plain(cfg), sort_keys=False, default_flow_style=False)


# ------------------------------------------------------------------------------------ metrics
def logged_metrics(cfg: dict[str, Any]) -> list[str]:
    """The epoch-level metrics a run of ``cfg`` logs (what checkpoint/early-stopping monitors may name)."""
    d = cfg["data"]
    out = ["train/loss_epoch"]
    if cfg["model"].get("partial_fc") is None:
        out.append("train/acc_epoch")
    if d.get("val_sets"):
        for name in d["val_sets"]:
            out += [f"val/{name}_acc", f"val/{name}_threshold", f"val/{name}_best"]
        out += ["val/mean_acc", "val/acc", "val/best_acc"]
    elif d.get("val_pairs"):
        out += ["val/acc", "val/threshold", "val/auc", "val/best_acc"]
    r = cfg.get("validation", {}).get("retrieval")
    if r is not None:
        out += ["val/knn_acc", *[f"val/recall@{k}" for k in r["ks"]], "val/map_at_r"]
    return out


def resolve_monitor(
    cfg: dict[str, Any], monitor: str | None = "auto", mode: str | None = "auto"
) -> tuple[str, str]:
    """``(metric, min|max)`` for a monitor setting; ``auto`` picks the run's main validation metric.

    auto: ``val/knn_acc`` with retrieval validation, else ``val/mean_acc`` with ``data.val_sets``,
    else ``val/acc`` with ``data.val_pairs``, else ``train/loss_epoch``. Mode auto: ``min`` for
    losses, ``max`` for everything else.
    """
    if monitor in (None, "auto"):
        d = cfg["data"]
        if cfg.get("validation", {}).get("retrieval") is not None:
            monitor = "val/knn_acc"
        elif d.get("val_sets"):
            monitor = "val/mean_acc"
        elif d.get("val_pairs"):
            monitor = "val/acc"
        else:
            monitor = "train/loss_epoch"
    if mode in (None, "auto"):
        mode = "min" if "loss" in monitor else "max"
    return monitor, mode


def _check_monitor(cfg: dict[str, Any], key: str, monitor: str | None) -> None:
    if monitor in (None, "auto"):
        return
    known = logged_metrics(cfg)
    if monitor not in known:
        raise FaceforgeError(
            f"config key {key!r}: {monitor!r} is not logged by this run{did_you_mean(monitor, known)}; "
            f"it logs {', '.join(known)}"
        )


# --------------------------------------------------------------------------------- validation
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


def _at_least(cfg: dict[str, Any], key: str, lo: float, *, strict: bool = False) -> None:
    v: Any = cfg
    for part in key.split("."):
        v = v[part]
    if v is not None and (v <= lo if strict else v < lo):
        raise FaceforgeError(f"config key {key!r} must be {'>' if strict else '>='} {lo:g}, got {v!r}")


def validate_config(cfg: dict[str, Any]) -> None:
    """Check ranges and combinations of the training keys (types are the schema's); errors name the key."""
    d, o, s, t = cfg["data"], cfg["optimizer"], cfg["scheduler"], cfg["trainer"]
    for key in ("data.batch_size", "data.global_batch_size", "data.image_size", "trainer.num_nodes"):
        _at_least(cfg, key, 1)
    if d["num_workers"] != "auto":
        _at_least(cfg, "data.num_workers", 0)
    for key in ("optimizer.lr", "optimizer.momentum", "optimizer.weight_decay", "optimizer.head_weight_decay",
                "optimizer.head_lr_scale", "optimizer.clip_grad_norm", "scheduler.warmup_epochs",
                "scheduler.min_lr_ratio", "scheduler.power", "scheduler.gamma", "scheduler.restart_epochs",
                "scheduler.patience",
                "trainer.freeze_backbone_epochs", "trainer.checkpoint_every_n_steps", "trainer.ema_decay",
                "trainer.num_threads"):  # fmt: skip
        _at_least(cfg, key, 0)
    _at_least(cfg, "scheduler.restart_mult", 1)
    betas = o["betas"]
    if len(betas) != 2 or not all(0 <= float(b) < 1 for b in betas):
        raise FaceforgeError(f"config key 'optimizer.betas' must be two numbers in [0, 1), got {betas!r}")
    ms = s["milestones"]
    if list(ms) != sorted(ms):
        raise FaceforgeError(f"config key 'scheduler.milestones' must be increasing, got {list(ms)}")
    if s["name"] == "multistep" and not ms:
        raise FaceforgeError("scheduler.name multistep needs scheduler.milestones (e.g. [12, 20, 24])")
    ds = s["decay_steps"]
    if list(ds) != sorted(ds) or any(x < 0 for x in ds):
        raise FaceforgeError(
            f"config key 'scheduler.decay_steps' must be increasing steps >= 0, got {list(ds)}"
        )
    if s["name"] == "step" and not ds:
        raise FaceforgeError(
            "scheduler.name step needs scheduler.decay_steps (optimizer steps, e.g. [2000, 4000])"
        )
    if s["name"] == "cosine_restarts" and not s["restart_epochs"] > 0:
        raise FaceforgeError("config key 'scheduler.restart_epochs' must be > 0 for cosine_restarts")
    if t["accumulate_grad_batches"] != "auto":
        _at_least(cfg, "trainer.accumulate_grad_batches", 1)
    if t["ema_decay"] is not None and not t["ema_decay"] < 1:
        raise FaceforgeError(f"config key 'trainer.ema_decay' must be in [0, 1), got {t['ema_decay']!r}")
    es = t["early_stopping"]
    if es is not None:
        _at_least(cfg, "trainer.early_stopping.patience", 0)
    pfc = cfg["model"]["partial_fc"]
    if pfc is not None and not 0 < pfc["sample_rate"] <= 1:
        raise FaceforgeError(
            f"config key 'model.partial_fc.sample_rate' must be in (0, 1], got {pfc['sample_rate']!r}"
        )
    r = cfg["resume"]
    if r is not None and not isinstance(r, str):
        raise FaceforgeError(f"config key 'resume' must be 'auto' or a checkpoint path, got {r!r}")
    _validate_data(cfg)
    keep = cfg["checkpoint"]["keep"]
    if isinstance(keep, int) and keep < 1:
        raise FaceforgeError(f"config key 'checkpoint.keep' must be last, best, all or N >= 1, got {keep!r}")
    _check_monitor(cfg, "checkpoint.monitor", cfg["checkpoint"]["monitor"])
    if es is not None:
        _check_monitor(cfg, "trainer.early_stopping.monitor", es["monitor"])
    if s["name"] == "plateau":
        _check_monitor(cfg, "scheduler.monitor", s["monitor"])


_SET_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def _validate_data(cfg: dict[str, Any]) -> None:
    d = cfg["data"]
    for name, path in (d["val_sets"] or {}).items():
        if not _SET_NAME.match(str(name)):
            raise FaceforgeError(
                f"config key 'data.val_sets': set name {name!r} must be letters, digits, '_', '.' or '-' "
                "(it names the metrics val/<name>_acc)"
            )
        if not str(path).strip():
            raise FaceforgeError(f"config key 'data.val_sets.{name}' must be a .bin or pair-list path")
    if d["val_sets"] is not None and not d["val_sets"]:
        raise FaceforgeError("config key 'data.val_sets' is an empty mapping; give {name: path} or null")
    sm = d["sampler"]
    if sm is not None:
        _at_least(cfg, "data.sampler.samples_per_class", 1)
        if sm["classes_per_batch"] is not None:
            _at_least(cfg, "data.sampler.classes_per_batch", 1)
            if sm["classes_per_batch"] * sm["samples_per_class"] != d["batch_size"]:
                p, k = sm["classes_per_batch"], sm["samples_per_class"]
                raise FaceforgeError(
                    f"data.sampler: classes_per_batch {p} x samples_per_class {k} = {p * k} images, but "
                    f"data.batch_size is {d['batch_size']}; make them equal or set classes_per_batch null"
                )
        elif sm["samples_per_class"] > d["batch_size"]:
            raise FaceforgeError(
                f"data.sampler.samples_per_class {sm['samples_per_class']} is more than data.batch_size "
                f"{d['batch_size']}: not one class fits in a batch"
            )
    r = cfg["validation"]["retrieval"]
    if r is not None:
        if d["split"] is None:
            raise FaceforgeError(
                "validation.retrieval needs data.split (a split file from `faceforge data split`): its "
                "train part is the gallery and its val part the queries"
            )
        _at_least(cfg, "validation.retrieval.k", 1)
        if not r["ks"] or any(k < 1 for k in r["ks"]):
            raise FaceforgeError(
                f"config key 'validation.retrieval.ks' must be a list of K >= 1, got {r['ks']!r}"
            )
