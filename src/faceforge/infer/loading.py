"""``--model NAME|FILE``: one loader for every verb — pretrained names, faceforge files, foreign model zoos.

:func:`load_model` turns what a user typed into an :class:`EmbeddingModel`: a function from the
model's normalised input (:func:`faceforge.models.face_cfg.preprocess`) to raw embeddings, with the
:class:`~faceforge.models.face_cfg.FaceConfig` it needs, its calibration and a record of every fact
that was read, inferred or given. Resolution order: a pretrained name (``dlib``,
:mod:`faceforge.models.pretrained`); a faceforge ``.ckpt``; an ONNX file (faceforge metadata, else
insightface's model-zoo conventions, :mod:`faceforge.export.foreign_onnx`); dlib's ``.dat``; a
foreign PyTorch state dict (arcface_torch, AdaFace, EdgeFace, face.evoLVe —
:mod:`faceforge.models.foreign`). Overrides (``color``, ``mean``, ``std``, ``template``,
``input_size``) replace any fact. Every file is read as data: ``weights_only`` torch loads, ONNX
protobuf, dlib's serialisation; nothing downloads.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from faceforge.errors import FaceforgeError
from faceforge.models.face_cfg import FaceConfig, apply_overrides, preprocess

__all__ = ["EmbeddingModel", "import_model", "load_model", "model_choices", "torch_runner"]


@dataclass
class EmbeddingModel:
    """A loaded recogniser: ``run`` maps normalised float32 NCHW input to raw float32 ``[N, E]``."""

    run: Callable[[np.ndarray], np.ndarray]
    face_cfg: FaceConfig
    name: str
    source: str
    backend: str  # "torch" or "onnx"
    kind: str  # "pretrained", "checkpoint", "onnx", "weights"
    calibration: dict[str, Any] = field(default_factory=dict)
    module: Any = None  # the torch module when backend == "torch"
    facts: dict[str, str] = field(default_factory=dict)  # fact -> how it was found
    arch: str | None = None
    guessed: bool = False  # preprocessing inferred from a foreign file rather than stored with it

    def embed_uint8(self, images: Any) -> np.ndarray:
        """Raw embeddings of uint8 RGB crops (numpy NHWC/NCHW or a torch NCHW tensor)."""
        if hasattr(images, "detach"):
            images = images.detach().cpu().numpy()
        return self.run(preprocess(np.asarray(images), self.face_cfg))

    def torch_embed(self) -> Callable[[Any], Any]:
        """An ``EmbedFn`` for :mod:`faceforge.eval`: uint8 RGB NCHW tensor → raw embedding tensor."""
        import torch

        def embed(x: torch.Tensor) -> torch.Tensor:
            return torch.from_numpy(self.embed_uint8(x))

        return embed

    @functools.cached_property
    def fingerprint(self) -> str:
        """SHA-256 of the weights (torch) or file (ONNX) and the FaceConfig: the eval cache key."""
        import hashlib
        import json

        if self.module is not None:
            from faceforge.eval.cache import model_fingerprint

            return model_fingerprint(self.module, self.face_cfg.to_dict())
        from faceforge.eval.cache import file_sha256

        h = hashlib.sha256(file_sha256(self.source).encode())
        h.update(json.dumps(self.face_cfg.to_dict(), sort_keys=True, default=str).encode())
        return h.hexdigest()

    def describe(self) -> str:
        """One line: name, backend and the preprocessing facts with where each came from."""
        c = self.face_cfg
        h, w = c.input_size
        parts = [
            f"model {self.name} ({self.kind}, {self.backend})",
            f"input {h}x{w} {c.color}",
            f"mean {_fmt3(c.mean)} std {_fmt3(c.std)}",
            f"template {c.template}",
            f"embedding {c.embedding_size}",
        ]
        how = "; ".join(f"{k}: {v}" for k, v in self.facts.items())
        return ", ".join(parts) + (f" [{how}]" if how else "")


def _fmt3(v: Any) -> str:
    return "(" + ", ".join(f"{float(x):.4g}" for x in v) + ")"


def torch_runner(module: Any, device: str) -> Callable[[np.ndarray], np.ndarray]:
    import torch

    try:
        dev = torch.device(device)
        module = module.to(dev).eval()
    except (RuntimeError, AssertionError) as e:
        raise FaceforgeError(f"device {device!r} cannot be used: {e}") from None

    def run(x: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return module(torch.from_numpy(np.ascontiguousarray(x)).to(dev)).float().cpu().numpy()

    return run


def model_choices() -> str:
    """What ``--model`` accepts, for help texts and errors."""
    from faceforge.models.pretrained import list_pretrained

    return (
        f"a pretrained name ({', '.join(list_pretrained())}), a faceforge .ckpt, an ONNX file "
        "(faceforge or insightface model zoo), dlib's .dat, or a state dict from arcface_torch / "
        "AdaFace / EdgeFace / face.evoLVe (.pth/.pt/.ckpt/.safetensors)"
    )


def _is_faceforge_checkpoint(obj: Any) -> bool:
    hp = obj.get("hyper_parameters") if isinstance(obj, Mapping) else None
    return isinstance(hp, Mapping) and isinstance(hp.get("config"), Mapping) and "state_dict" in obj


def load_model(
    spec: str | os.PathLike[str],
    *,
    arch: str | None = None,
    overrides: Mapping[str, Any] | None = None,
    device: str = "cpu",
) -> EmbeddingModel:
    """Load what ``--model`` names (see the module docstring); ``arch`` picks a foreign file's backbone."""
    from faceforge.models.pretrained import list_pretrained, load_pretrained

    overrides = {k: v for k, v in (overrides or {}).items() if v is not None}
    s = os.fspath(spec)
    if s in list_pretrained() and not Path(s).is_file():
        lp = load_pretrained(s)
        cfg, given = apply_overrides(lp.face_cfg, overrides)
        facts = {"weights": f"pretrained {s!r} from {lp.path} (SHA-256 verified)", **given}
        return EmbeddingModel(
            torch_runner(lp.module, device), cfg, s, str(lp.path), "torch", "pretrained",
            dict(lp.calibration), lp.module, facts, lp.entry.arch,
        )  # fmt: skip
    p = Path(s).expanduser()
    if not p.is_file():
        from faceforge.errors import did_you_mean
        from faceforge.models.backbones.registry import MODELS

        if s in MODELS:
            raise FaceforgeError(
                f"--model {s}: {s!r} is an architecture, not a trained model; pass its weights file "
                f"(--model FILE --arch {s})"
            )
        if p.exists():
            raise FaceforgeError(f"--model {s}: {p} is a folder; expected {model_choices()}")
        raise FaceforgeError(
            f"--model {s}: {p} does not exist and is not a pretrained name"
            f"{did_you_mean(s, list_pretrained())}; expected {model_choices()}"
        )
    suffix = p.suffix.lower()
    if suffix == ".onnx":
        from faceforge.export.foreign_onnx import load_onnx_model

        lo = load_onnx_model(p, overrides=overrides)
        guessed = lo.onnx_facts is None or not lo.onnx_facts.has_metadata
        return EmbeddingModel(
            lo.embed, lo.face_cfg, lo.name or p.stem, str(p), "onnx", "onnx", dict(lo.calibration or {}),
            None, dict(lo.facts), None, guessed,
        )  # fmt: skip
    if suffix == ".dat":
        from faceforge.models.backbones.dlib_resnet import load_dlib_resnet

        module = load_dlib_resnet(p)
        cfg, given = apply_overrides(module.face_cfg, overrides)
        facts = {"weights": f"dlib serialisation {p.name}", **given}
        return EmbeddingModel(
            torch_runner(module, device), cfg, p.stem, str(p), "torch", "weights", {}, module, facts,
            "dlib_resnet_v1",
        )  # fmt: skip
    from faceforge.models.checkpoint import load_checkpoint, read_checkpoint_or_none

    try:
        raw = read_checkpoint_or_none(p) if suffix != ".safetensors" else None
    except FaceforgeError:
        raw = None  # not a plain faceforge checkpoint: the foreign loader reads it (and says why not)
    if raw is not None and _is_faceforge_checkpoint(raw):
        if arch is not None:
            name = (raw["hyper_parameters"]["config"].get("model") or {}).get("backbone", {}).get("name")
            if name != arch:
                raise FaceforgeError(
                    f"--arch {arch} does not match {p}: it is a faceforge checkpoint of backbone {name!r}"
                )
        loaded = load_checkpoint(p, ckpt=raw)
        cfg, given = apply_overrides(loaded.face_cfg, overrides)
        name = str((loaded.config.get("model") or {}).get("backbone", {}).get("name", p.stem))
        facts = {"preprocessing": "stored in the checkpoint", **given}
        calibration = dict(loaded.calibration)
        if not calibration:
            calibration = _report_calibration(p)
        return EmbeddingModel(
            torch_runner(loaded.backbone, device), cfg, name, str(p), "torch", "checkpoint", calibration,
            loaded.backbone, facts, name,
        )  # fmt: skip
    from faceforge.models.foreign import load_foreign_weights

    lf = load_foreign_weights(p, arch=arch, overrides=overrides)
    return EmbeddingModel(
        torch_runner(lf.module, device), lf.face_cfg, lf.arch, str(p), "torch", "weights",
        dict(lf.calibration or {}), lf.module, {"layout": lf.layout, **dict(lf.inferred)}, lf.arch,
        lf.layout != "faceforge",
    )  # fmt: skip


def _report_calibration(ckpt: Path) -> dict[str, Any]:
    """The calibration of a ``report.json`` beside a checkpoint (``faceforge eval`` writes one)."""
    from faceforge.infer.recognizer import _calibration_from_report

    p = ckpt.resolve()
    for rep in (p.parent / "report.json", p.parent.parent / "report.json"):
        if rep.is_file():
            cal = _calibration_from_report(rep)
            if cal:
                return cal
    return {}


def import_model(
    src: str | os.PathLike[str],
    dst: str | os.PathLike[str],
    arch: str | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> tuple[Path, dict[str, Any]]:
    """Write a foreign model file as a faceforge file with its preprocessing stored (``models import``).

    ONNX input → the same graph with faceforge ``metadata_props`` (``arch`` then only names it);
    weights → a faceforge checkpoint. Returns the written path and the facts (how each was found).
    """
    from faceforge.models.foreign import import_weights, is_onnx_file

    s = Path(src)
    if not s.is_file():
        raise FaceforgeError(f"model file {s} does not exist")
    if is_onnx_file(s):
        from faceforge.export.foreign_onnx import import_onnx

        return import_onnx(s, dst, name=arch, overrides=overrides)
    return import_weights(s, dst, arch, overrides)
