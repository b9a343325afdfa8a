"""Pretrained recognisers by name: ``dlib`` and whatever else is registered, never downloaded implicitly.
An entry (:class:`PretrainedModel`, :func:`register_pretrained`) maps a name to a backbone, a weights
file known to the model store by name and SHA-256, its licence, its
:class:`~faceforge.models.face_cfg.FaceConfig` and a calibration; :func:`load_pretrained` only ever
reads local files that match their checksum (``faceforge models fetch NAME`` downloads), and a
calibration written by ``faceforge eval --write-calibration`` replaces the shipped one. Details:
docs/inference.md, "Where a model comes from".
"""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from faceforge.errors import FaceforgeError, did_you_mean
from faceforge.fileio import atomic_write_bytes
from faceforge.models.backbones.dlib_resnet import DLIB_RESNET_V1_CFG
from faceforge.models.face_cfg import FaceConfig

__all__ = [
    "PretrainedModel",
    "calibration_path",
    "get_pretrained",
    "list_pretrained",
    "load_pretrained",
    "pretrained_file",
    "register_pretrained",
    "save_calibration",
]


@dataclass(frozen=True)
class PretrainedModel:
    """One named pretrained recogniser (see docs/inference.md, "Where a model comes from")."""

    name: str
    arch: str  # registered backbone name (faceforge.models.create_model)
    store_file: str  # name of the weights file in faceforge.hub.KNOWN_FILES
    license: str
    description: str
    face_cfg: FaceConfig
    loader: Callable[[Path], Any]  # weights file -> nn.Module (eval mode) with .face_cfg
    package: str | None = None  # import name of a pip package that ships the file (found, not imported)
    package_subdir: str = "models"
    install: str = ""  # what to pip install when the file is missing
    calibration: dict[str, Any] = field(default_factory=dict)
    published: str = ""  # the accuracy the authors report, for the models table


_REGISTRY: dict[str, PretrainedModel] = {}


def register_pretrained(entry: PretrainedModel) -> PretrainedModel:
    """Add (or replace) a named pretrained model; returns it."""
    _REGISTRY[entry.name] = entry
    return entry


def list_pretrained() -> list[str]:
    """Names of every registered pretrained model, sorted."""
    return sorted(_REGISTRY)


def get_pretrained(name: str) -> PretrainedModel:
    """The entry called ``name``; an unknown name lists the known ones."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise FaceforgeError(
            f"unknown pretrained model {name!r}{did_you_mean(name, _REGISTRY)}; "
            f"known: {', '.join(list_pretrained())}"
        ) from None


def _package_file(entry: PretrainedModel) -> Path | None:
    if not entry.package:
        return None
    try:
        spec = importlib.util.find_spec(entry.package)  # locate without importing (side effects)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    from faceforge import hub as store

    fn = store.KNOWN_FILES[entry.store_file].filename
    for loc in spec.submodule_search_locations:
        p = Path(loc) / entry.package_subdir / fn
        if p.is_file():
            return p
    return None


def pretrained_file(name: str) -> Path | None:
    """The verified local weights file of ``name`` (store first, then its pip package), or None.

    A file whose SHA-256 differs from the registered one is never used.
    """
    from faceforge import hub as store

    entry = get_pretrained(name)
    p = store.find(entry.store_file)
    if p is not None:
        return p
    q = _package_file(entry)
    if q is not None and store.matches(q, entry.store_file):
        return q
    return None


def _missing_message(entry: PretrainedModel) -> str:
    from faceforge import hub as store

    spec = store.KNOWN_FILES[entry.store_file]
    q = _package_file(entry)
    bad = f" ({q} exists but its SHA-256 differs from {spec.sha256[:16]}…)" if q is not None else ""
    how = f"pip install {entry.install}" if entry.install else ""
    return (
        f"pretrained model {entry.name!r} needs {spec.filename}{bad}; "
        + (f"install it with `{how}` or " if how else "")
        + f"fetch it with `faceforge models fetch {entry.store_file}` (licence: {entry.license})"
    )


def calibration_path(name: str) -> Path:
    """Where ``faceforge eval --model NAME --write-calibration`` stores a pretrained model's calibration."""
    from faceforge import hub as store

    return store.home() / "calibration" / f"{name}.json"


def save_calibration(name: str, calibration: dict[str, Any]) -> Path:
    """Store ``calibration`` for pretrained ``name`` (atomic write with fsync); returns the path."""
    get_pretrained(name)
    p = calibration_path(name)
    p.parent.mkdir(parents=True, exist_ok=True)
    data = json.dumps(calibration, indent=1, sort_keys=True, default=float, allow_nan=False)
    atomic_write_bytes(p, data.encode())
    return p


def _calibration(entry: PretrainedModel) -> dict[str, Any]:
    p = calibration_path(entry.name)
    if p.is_file():
        try:
            data = json.loads(p.read_text())
        except (OSError, ValueError) as e:
            raise FaceforgeError(
                f"calibration {p} of pretrained model {entry.name!r} is unreadable: {e}"
            ) from None
        if not isinstance(data, dict) or not isinstance(data.get("threshold"), (int, float)):
            raise FaceforgeError(
                f"calibration {p} of pretrained model {entry.name!r} has no numeric 'threshold'; "
                "delete it or rewrite it with `faceforge eval --model NAME --write-calibration`"
            )
        return data
    return dict(entry.calibration)


@dataclass
class LoadedPretrained:
    """A pretrained backbone in eval mode with its preprocessing, calibration and file."""

    module: Any
    face_cfg: FaceConfig
    calibration: dict[str, Any]
    path: Path
    entry: PretrainedModel


def load_pretrained(name: str) -> LoadedPretrained:
    """Build pretrained ``name`` from its verified local file (raises, saying what to install, if absent)."""
    entry = get_pretrained(name)
    path = pretrained_file(name)
    if path is None:
        raise FaceforgeError(_missing_message(entry))
    module = entry.loader(path)
    module.eval()
    return LoadedPretrained(module, entry.face_cfg, _calibration(entry), path, entry)


def status() -> list[dict[str, Any]]:
    """One row per pretrained model: name, arch, available, file, licence, description."""
    rows = []
    for name in list_pretrained():
        e = _REGISTRY[name]
        p = pretrained_file(name)
        rows.append(
            {
                "name": name,
                "arch": e.arch,
                "available": p is not None,
                "file": str(p) if p else None,
                "license": e.license,
                "description": e.description,
                "install": e.install,
                "published": e.published,
                "embedding_size": e.face_cfg.embedding_size,
                "input_size": list(e.face_cfg.input_size),
                "template": e.face_cfg.template,
            }
        )
    return rows


# ---------------------------------------------------------------------------------------------- entries


def _load_dlib(path: Path) -> Any:
    from faceforge.models.backbones.dlib_resnet import load_dlib_resnet

    return load_dlib_resnet(path)


def _shipped_calibration(name: str) -> dict[str, Any]:
    p = Path(__file__).with_name("calibrations") / f"{name}.json"
    return json.loads(p.read_text()) if p.is_file() else {}


register_pretrained(
    PretrainedModel(
        name="dlib",
        arch="dlib_resnet_v1",
        store_file="dlib_resnet",
        license="CC0 (dlib-models, D. E. King)",
        description="dlib's ResNet-34-like face recogniser (128-d, 150x150 dlib chips), run in PyTorch",
        face_cfg=DLIB_RESNET_V1_CFG,
        loader=_load_dlib,
        package="face_recognition_models",
        install="face-recognition-models  (or 'faceforge[detectors]')",
        calibration=_shipped_calibration("dlib"),
        published="99.38% LFW (dlib's own pipeline)",
    )
)
