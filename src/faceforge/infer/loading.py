"""``--model NAME|FILE``: one loader for every verb — pretrained names, faceforge files, foreign model zoos.
:func:`load_model` turns what a user typed into an :class:`EmbeddingModel` (normalised input → raw
embeddings, with its ``FaceConfig``, calibration and a record of every fact), reading every file as data;
``precision`` picks fp32 / bf16 / ``auto`` (:func:`probe_inference`). Details: docs/inference.md,
"Where a model comes from" and "Loaded models and precision".
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from faceforge.errors import FaceforgeError
from faceforge.models.face_cfg import FaceConfig, apply_overrides, preprocess

if TYPE_CHECKING:
    from faceforge.train.presets import Bf16Probe

__all__ = [
    "MIN_BF16_COSINE",
    "PRECISIONS",
    "EmbeddingModel",
    "TorchRunner",
    "import_model",
    "load_model",
    "model_choices",
    "probe_inference",
    "torch_runner",
]

log = logging.getLogger(__name__)

PRECISIONS = ("fp32", "bf16", "auto")
MIN_BF16_COSINE = 0.999  # ``auto`` keeps bf16 only when every probe embedding is this close to fp32


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
    facts: dict[str, str] = field(default_factory=dict)  # fact -> how it was found ("precision" too)
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


class TorchRunner:
    """A torch module as :attr:`EmbeddingModel.run`, in eval mode on ``device``, optionally under
    bf16 autocast; ``bf16`` says whether it is, ``fact`` which precision and how it was chosen.

    On a CPU, ``rewrite=True`` runs a checked copy with BatchNorm folded and NHWC memory
    (:func:`faceforge.models.optimize.optimize_for_inference`; ``rewrite_fact`` says what was kept);
    ``module`` stays the caller's module, untouched.
    """

    def __init__(
        self,
        module: Any,
        device: str,
        precision: str = "fp32",
        input_size: tuple[int, int] | None = None,
        rewrite: bool = True,
    ) -> None:
        import torch

        if precision not in PRECISIONS:
            raise FaceforgeError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
        try:
            self.device = torch.device(device)
            self.module = module.to(self.device).eval()
        except (RuntimeError, AssertionError) as e:
            raise FaceforgeError(f"device {device!r} cannot be used: {e}") from None
        self._run, self.channels_last, self.rewrite_fact = self.module, False, "as built"
        size = input_size or getattr(getattr(module, "face_cfg", None), "input_size", None)
        if rewrite and self.device.type == "cpu" and size is not None:
            from faceforge.models.optimize import optimize_for_inference

            rw = optimize_for_inference(self.module, (int(size[0]), int(size[1])))
            self._run, self.channels_last, self.rewrite_fact = rw.module, rw.channels_last, rw.fact
        self.bf16, self.fact = _choose_precision(self._run, self.device, precision, input_size)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """Raw float32 embeddings ``[N, E]`` of normalised float32 NCHW input."""
        import torch

        bf16 = torch.autocast(self.device.type, dtype=torch.bfloat16) if self.bf16 else None
        with torch.inference_mode(), bf16 or contextlib.nullcontext():
            t = torch.from_numpy(np.ascontiguousarray(x)).to(self.device)
            if self.channels_last and t.dim() == 4:
                t = t.contiguous(memory_format=torch.channels_last)
            return self._run(t).float().cpu().numpy()


def torch_runner(
    module: Any,
    device: str,
    precision: str = "fp32",
    input_size: tuple[int, int] | None = None,
    rewrite: bool = True,
) -> TorchRunner:
    """``module`` as an :attr:`EmbeddingModel.run` (see :class:`TorchRunner`; ``input_size`` is what
    the ``auto`` probe and the rewrite check feed, by default the module's ``face_cfg.input_size``)."""
    return TorchRunner(module, device, precision, input_size, rewrite)


def probe_inference(module: Any, input_size: tuple[int, int], seconds: float | None = None) -> Bf16Probe:
    """fp32 vs bf16-autocast forward passes of ``module`` (eval, CPU) on seeded random inputs.

    Returns a :class:`faceforge.train.presets.Bf16Probe` whose ``cosine`` is the smallest cosine
    between the bf16 and fp32 embeddings of the probe batch (the same inputs in both precisions).
    """
    import torch

    from faceforge.train.presets import PROBE_SECONDS, Bf16Probe, time_fp32_vs_bf16

    start = time.perf_counter()
    h, w = input_size
    gen = torch.Generator().manual_seed(0)
    out: dict[bool, torch.Tensor] = {}

    def make_step(batch: int) -> Callable[[bool], object]:
        x = torch.randn(batch, 3, h, w, generator=gen)
        out.clear()

        def step(bf16: bool) -> object:
            with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                out[bf16] = module(x).float()
            return out[bf16]

        return step

    batch, t32, t16 = time_fp32_vs_bf16(make_step, 32, PROBE_SECONDS if seconds is None else seconds)
    # float64: an untrained deep net's embeddings can reach 1e26, whose squared norm overflows fp32.
    cosine = float(torch.nn.functional.cosine_similarity(out[False].double(), out[True].double()).min())
    what = f"{type(module).__name__} forward {h}x{w} batch {batch}"
    return Bf16Probe(what, batch / t32, batch / t16, time.perf_counter() - start, cosine)


def _choose_precision(
    module: Any, device: Any, precision: str, input_size: tuple[int, int] | None
) -> tuple[bool, str]:
    """(bf16 autocast?, the ``facts["precision"]`` text) for ``precision`` on ``device``."""
    if precision == "fp32":
        return False, "fp32: default"
    if precision == "bf16":
        return True, "bf16 autocast: given"
    if device.type != "cpu":
        return False, f"fp32: auto probes CPUs only (device {device})"
    from faceforge.train import presets

    size = input_size or getattr(getattr(module, "face_cfg", None), "input_size", None) or (112, 112)
    cp = presets.choose_cpu_precision(
        presets.cpu_bf16_support(), lambda: probe_inference(module, (int(size[0]), int(size[1])))
    )
    cos = cp.probe.cosine if cp.probe is not None else None
    if cp.bf16 and cos is not None and not cos >= MIN_BF16_COSINE:  # NaN fails too
        log.warning(
            "bf16 embeddings deviate from fp32 (cosine %.4f < %g on random inputs): using fp32", cos,
            MIN_BF16_COSINE,
        )  # fmt: skip
        return False, f"fp32: auto, bf16 cosine to fp32 {cos:.4f} < {MIN_BF16_COSINE:g} ({cp.reason})"
    checked = f", cosine to fp32 {cos:.4f}" if cp.bf16 and cos is not None else ""
    return cp.bf16, f"{'bf16 autocast' if cp.bf16 else 'fp32'}: auto, {cp.reason}{checked}"


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
    precision: str = "fp32",
    rewrite: bool = True,
) -> EmbeddingModel:
    """Load what ``--model`` names (docs/inference.md); ``arch`` picks a foreign file's backbone.

    ``precision`` (``fp32``, ``bf16``, ``auto``) applies to PyTorch models; any other than ``fp32`` is
    recorded in ``facts["precision"]``. ONNX files run in the precision of their graph. ``rewrite``:
    on a CPU, run a checked copy with BatchNorm folded and NHWC weights (:class:`TorchRunner`; it holds
    the convolution weights twice); ``facts["inference graph"]`` says what was kept.
    """
    from faceforge.models.pretrained import list_pretrained, load_pretrained

    if precision not in PRECISIONS:
        raise FaceforgeError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")

    def runner(module: Any, cfg: FaceConfig, facts: dict[str, str]) -> TorchRunner:
        r = torch_runner(module, device, precision, cfg.input_size, rewrite)
        if precision != "fp32":
            facts["precision"] = r.fact
        if r.rewrite_fact != "as built" and not r.rewrite_fact.startswith("as built: no"):
            facts["inference graph"] = r.rewrite_fact
        return r

    overrides = {k: v for k, v in (overrides or {}).items() if v is not None}
    s = os.fspath(spec)
    if s in list_pretrained() and not Path(s).is_file():
        lp = load_pretrained(s)
        cfg, given = apply_overrides(lp.face_cfg, overrides)
        facts = {"weights": f"pretrained {s!r} from {lp.path} (SHA-256 verified)", **given}
        return EmbeddingModel(
            runner(lp.module, cfg, facts), cfg, s, str(lp.path), "torch", "pretrained",
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

        if precision == "bf16":
            raise FaceforgeError(
                f"precision bf16 applies to PyTorch models; {p} is ONNX (export it with --precision fp16)"
            )
        lo = load_onnx_model(p, overrides=overrides)
        guessed = lo.onnx_facts is None or not lo.onnx_facts.has_metadata
        facts = dict(lo.facts)
        if precision == "auto":
            facts["precision"] = "the graph's own: auto applies to PyTorch models"
        return EmbeddingModel(
            lo.embed, lo.face_cfg, lo.name or p.stem, str(p), "onnx", "onnx", dict(lo.calibration or {}),
            None, facts, None, guessed,
        )  # fmt: skip
    if suffix == ".dat":
        from faceforge.models.backbones.dlib_resnet import load_dlib_resnet

        module = load_dlib_resnet(p)
        cfg, given = apply_overrides(module.face_cfg, overrides)
        facts = {"weights": f"dlib serialisation {p.name}", **given}
        return EmbeddingModel(
            runner(module, cfg, facts), cfg, p.stem, str(p), "torch", "weights", {}, module, facts,
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
        adapted = raw.get("adaptation")  # data only: shown, never acted on
        if isinstance(adapted, dict):
            n = adapted.get("faces")
            ok = isinstance(n, int) and not isinstance(n, bool)
            facts["adapted"] = f"BatchNorm statistics from {n if ok else 'some'} unlabeled photos (AdaBN)"
        elif not calibration:
            # not for an adapted copy: a report beside it scored the model it was adapted from
            calibration = _report_calibration(p)
        return EmbeddingModel(
            runner(loaded.backbone, cfg, facts), cfg, name, str(p), "torch", "checkpoint", calibration,
            loaded.backbone, facts, name,
        )  # fmt: skip
    from faceforge.models.foreign import load_foreign_weights

    lf = load_foreign_weights(p, arch=arch, overrides=overrides)
    facts = {"layout": lf.layout, **dict(lf.inferred)}
    return EmbeddingModel(
        runner(lf.module, lf.face_cfg, facts), lf.face_cfg, lf.arch, str(p), "torch", "weights",
        dict(lf.calibration or {}), lf.module, facts, lf.arch, lf.layout != "faceforge",
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
