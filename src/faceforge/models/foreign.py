"""Load PyTorch weights saved by other face-recognition projects, as they are: arcface_torch (insightface)
iresnet/mbf ``model.pt`` files and resume checkpoints, AdaFace Lightning ``.ckpt`` files (``model.*``
backbone keys plus ``head.kernel``), EdgeFace ``.pt`` files (timm EdgeNeXt under ``model.``), face.evoLVe
IR / IR-SE / MobileFaceNet files, and faceforge checkpoints. The architecture is recognised by matching
the file's (key, shape) set against every registered backbone (built on the meta device), the
preprocessing comes from that backbone's ``face_cfg`` (which records each project's convention, e.g.
BGR for AdaFace), every fact is recorded with how it was found, and :func:`import_weights` writes a
faceforge checkpoint (or an ONNX file with faceforge metadata) so the next load needs no guessing.
Files are read with ``torch.load(weights_only=True)``: a pickled ``nn.Module`` is refused.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import functools
import inspect
import io
import os
import pickle
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

import faceforge.models.backbones  # noqa: F401  (registers every backbone family)
from faceforge.errors import FaceforgeError, did_you_mean
from faceforge.fileio import atomic_write_bytes
from faceforge.models.backbones.registry import MODELS
from faceforge.models.backbones.weights import _WRAPPERS, _best_prefix, _signature, read_state_dict
from faceforge.models.face_cfg import FaceConfig, apply_parsed_overrides, describe_mean_std, parse_overrides

__all__ = ["LoadedForeign", "detect_arch", "import_weights", "is_onnx_file", "load_foreign_weights"]

# arcface_torch's resume checkpoints hold the backbone under "state_dict_backbone"
_UNWRAP = (*_WRAPPERS, "state_dict_backbone")
_NBT = "num_batches_tracked"
_MIN_SCORE = 0.99
_SIZES = (112, 128, 96, 64, 160, 224, 256)  # input sizes tried when only the FC input width differs

# face_cfg.extra["family"] -> the project whose file layout (and preprocessing convention) it follows
_LAYOUT = {
    "iresnet": "arcface_torch",
    "mbf": "arcface_torch",
    "adaface": "adaface",
    "edgeface": "edgeface",
    "evolve": "evolve",
    "mobilefacenet": "evolve",
}
_CONVENTION = {
    "arcface_torch": "arcface_torch trains on RGB, (p/255 - 0.5)/0.5",
    "adaface": "AdaFace trains on BGR crops, (p/255 - 0.5)/0.5 (its inference.py reverses RGB)",
    "edgeface": "EdgeFace feeds RGB with Normalize(0.5, 0.5)",
    "evolve": "face.evoLVe feeds RGB with Normalize(0.5, 0.5)",
}


@dataclass
class LoadedForeign:
    """A backbone in eval mode loaded from another project's file, with its facts."""

    module: nn.Module
    face_cfg: FaceConfig
    arch: str
    layout: str
    inferred: dict[str, str]
    source: str
    options: dict[str, Any] = field(default_factory=dict)  # factory keyword arguments used
    calibration: dict[str, Any] = field(default_factory=dict)

    @torch.no_grad()
    def embed(self, x: np.ndarray | torch.Tensor) -> np.ndarray:
        """Raw float32 embeddings ``[N, E]`` of normalised float32 NCHW input (as ``LoadedOnnx.embed``)."""
        t = x if isinstance(x, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(x, np.float32))
        return self.module(t.float()).float().cpu().numpy()


@dataclass
class _Candidate:
    name: str
    score: float
    prefix: str = ""
    options: dict[str, Any] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)
    wrong: list[str] = field(default_factory=list)
    extra: list[str] = field(default_factory=list)


# ------------------------------------------------------------------------------------------ reading


def _first_line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0].strip()


def _read_raw(p: Path) -> Any:
    """The object stored in ``p`` (``torch.load(weights_only=True)``; safetensors via read_state_dict)."""
    if not p.is_file():
        raise FaceforgeError(f"weights file {p} does not exist")
    if p.suffix.lower() == ".onnx":
        raise FaceforgeError(
            f"{p} is an ONNX file; load it with faceforge.export.foreign_onnx.load_onnx_model"
        )
    if p.suffix == ".safetensors":
        return read_state_dict(p)
    safe = getattr(torch.serialization, "safe_globals", None)
    try:
        # Lightning checkpoints (e.g. AdaFace) may pickle their hyper-parameters as a Namespace
        with safe([argparse.Namespace]) if safe else contextlib.nullcontext():
            return torch.load(str(p), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        m = re.search(r"GLOBAL ([\w.]+)", str(e))
        if m is None and "global" not in str(e).lower():
            # Not a refused object but bytes that are no pickle at all (a text file, a truncated copy).
            raise FaceforgeError(
                f"{p} is not a PyTorch weights file (or is truncated): expected a state dict saved with "
                "torch.save, a .safetensors file or an ONNX file"
            ) from None
        what = f" ({m.group(1)})" if m else ""
        raise FaceforgeError(
            f"{p} holds a pickled Python object{what}, not a state dict: torch.load(weights_only=True) "
            f"refuses it because unpickling can run arbitrary code; only state dicts / weights are accepted "
            f"(save model.state_dict() in the project that made it)"
        ) from None
    except RuntimeError as e:
        if "TorchScript" in str(e):
            raise FaceforgeError(
                f"{p} is a TorchScript archive, not a state dict; only state dicts / weights are accepted"
            ) from None
        raise FaceforgeError(
            f"{p} cannot be read (truncated or not a PyTorch file): {_first_line(e)}"
        ) from None
    except Exception as e:  # EOFError, zipfile errors, ...
        raise FaceforgeError(
            f"{p} cannot be read (truncated or not a PyTorch file): {_first_line(e)}"
        ) from None


def _unwrap(obj: Any, where: str) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Tensors of a (possibly wrapped) state dict, without ``test.*`` keys, and the wrapper keys used."""
    path: list[str] = []
    for _ in range(3):
        if isinstance(obj, Mapping) and not any(isinstance(v, torch.Tensor) for v in obj.values()):
            key = next((k for k in _UNWRAP if isinstance(obj.get(k), Mapping)), None)
            if key is None:
                break
            path.append(key)
            obj = obj[key]
    if not isinstance(obj, Mapping):
        raise FaceforgeError(f"{where} does not hold a state dict (got {type(obj).__name__})")
    sd = {
        k: v
        for k, v in obj.items()
        if isinstance(k, str) and isinstance(v, torch.Tensor) and not k.startswith("test.")
    }
    if not sd:
        keys = ", ".join(str(k) for k in list(obj)[:6]) or "none"
        raise FaceforgeError(
            f"{where} holds no weight tensors (top-level keys: {keys}); expected a face backbone state dict"
        )
    return sd, path


# ------------------------------------------------------------------------------------------ matching


def _factory_params(name: str) -> set[str]:
    return set(inspect.signature(MODELS.get(name)).parameters)


@functools.cache
def _variant_signature(name: str, options: tuple[tuple[str, Any], ...]) -> dict[str, tuple[int, ...]] | None:
    if not options:
        return _signature(name)
    try:
        with torch.device("meta"):
            return {k: tuple(v.shape) for k, v in MODELS.create(name, **dict(options)).state_dict().items()}
    except Exception:
        return None


def _compare(sd: Mapping[str, torch.Tensor], ref: Mapping[str, tuple[int, ...]], name: str) -> _Candidate:
    """Jaccard score of (key, shape) pairs under the best prefix; num_batches_tracked are ignored."""
    ref = {k: s for k, s in ref.items() if not k.endswith(_NBT)}
    prefix = _best_prefix(set(sd), set(ref))
    got = {k[len(prefix) :]: tuple(v.shape) for k, v in sd.items() if k.startswith(prefix)}
    got = {k: s for k, s in got.items() if not k.endswith(_NBT)}
    pairs_got, pairs_ref = set(got.items()), set(ref.items())
    score = len(pairs_got & pairs_ref) / max(1, len(pairs_got | pairs_ref))
    return _Candidate(
        name,
        score,
        prefix,
        missing=sorted(k for k in ref if k not in got),
        wrong=sorted(f"{k} {got[k]} vs {ref[k]}" for k in ref if k in got and got[k] != ref[k]),
        extra=sorted(k for k in got if k not in ref),
    )


def _candidate(
    sd: Mapping[str, torch.Tensor], name: str, fixed: Mapping[str, Any] | None = None
) -> _Candidate:
    """How well ``sd`` fits backbone ``name``, trying other embedding/input sizes when only shapes differ."""
    params = _factory_params(name)
    base = tuple(sorted((k, v) for k, v in (fixed or {}).items() if k in params))
    ref = _variant_signature(name, base)
    if ref is None:
        return _Candidate(name, 0.0)
    best = _compare(sd, ref, name)
    best.options = dict(base)
    if best.score == 1.0 or best.missing or not best.wrong:
        return best
    # same key names, some shapes differ: another embedding size and/or input size?
    embs = set()
    for k, s in ref.items():
        full = best.prefix + k
        if len(s) == 1 and full in sd and sd[full].ndim == 1 and tuple(sd[full].shape) != s:
            embs.add(int(sd[full].shape[0]))
    can_emb = "embedding_size" in params and "embedding_size" not in dict(base) and len(embs) == 1
    emb_opts: list[dict[str, Any]] = [{}] + ([{"embedding_size": embs.pop()}] if can_emb else [])
    size_opts: list[dict[str, Any]] = [{}]
    if "input_size" in params and "input_size" not in dict(base):
        size_opts += [{"input_size": s} for s in _SIZES if s != 112]
    for eo in emb_opts:
        for so in size_opts:
            opts = {**dict(base), **eo, **so}
            key = tuple(sorted(opts.items()))
            if key == base:
                continue
            r = _variant_signature(name, key)
            if r is None:
                continue
            c = _compare(sd, r, name)
            if c.score > best.score:
                c.options = opts
                best = c
            if best.score == 1.0:
                return best
    return best


def _rank(sd: Mapping[str, torch.Tensor], fixed: Mapping[str, Any] | None = None) -> list[_Candidate]:
    cands = [_candidate(sd, n, fixed) for n in MODELS.names() if not n.startswith("_")]
    return sorted((c for c in cands if c.score > 0), key=lambda c: (-c.score, c.name))


def _fmt_cands(cands: list[_Candidate], n: int = 3) -> str:
    return ", ".join(f"{c.name} ({c.score:.3f})" for c in cands[:n]) or "none"


def _fits(c: _Candidate) -> bool:
    return not c.missing and not c.wrong and c.score >= _MIN_SCORE


def _choose(ranked: list[_Candidate], where: str) -> _Candidate:
    exact = [c for c in ranked if c.score == 1.0]
    if len(exact) == 1:
        return exact[0]
    if len(exact) > 1:
        raise FaceforgeError(
            f"{where} matches several backbones exactly: {_fmt_cands(exact, 5)}; pass arch=<name> to choose"
        )
    if ranked and _fits(ranked[0]) and (len(ranked) == 1 or ranked[1].score < ranked[0].score):
        return ranked[0]
    raise FaceforgeError(
        f"{where}: unknown layout, no registered backbone matches its keys/shapes "
        f"(best: {_fmt_cands(ranked)}; need >= {_MIN_SCORE}); pass arch=<name> (see faceforge.list_models())"
    )


def detect_arch(state_dict: Mapping[str, Any], *, where: str = "state dict") -> list[tuple[str, float]]:
    """Registered backbones ranked by how well ``state_dict``'s (key, shape) pairs match them.

    Handles the wrappers ``{"state_dict": ...}`` (Lightning, AdaFace), ``{"model": ...}``,
    ``{"state_dict_backbone": ...}`` (arcface_torch resume checkpoints) and key prefixes ``module.``,
    ``model.``, ``backbone.``; keys outside the backbone prefix (AdaFace's ``head.kernel``) and
    ``num_batches_tracked`` are ignored. The score is the Jaccard index of the (key, shape) sets; when
    only shapes differ, other embedding / input sizes are tried. Returns ``[(name, score), ...]`` best
    first. Raises :class:`FaceforgeError` (naming ``where``) when no single backbone matches exactly
    and none reaches 0.99, or when several match exactly.
    """
    sd, _ = _unwrap(state_dict, where)
    ranked = _rank(sd)
    winner = _choose(ranked, where)
    return [(winner.name, winner.score)] + [(c.name, c.score) for c in ranked if c is not winner]


# ------------------------------------------------------------------------------------------ loading


def _faceforge_checkpoint(raw: Any) -> str | None:
    """The backbone name when ``raw`` is a faceforge training checkpoint, else None."""
    if not isinstance(raw, Mapping) or not isinstance(raw.get("state_dict"), Mapping):
        return None
    hp = raw.get("hyper_parameters")
    cfg = hp.get("config") if isinstance(hp, Mapping) else None
    try:
        name = cfg["model"]["backbone"]["name"]  # type: ignore[index]
        cfg["data"]["image_size"]  # type: ignore[index]
    except (KeyError, TypeError):
        return None
    if "face_cfg" not in raw or not any(str(k).startswith("backbone.") for k in raw["state_dict"]):
        return None
    return str(name)


def _describe(cfg: FaceConfig, why: str) -> dict[str, str]:
    return {
        "color": f"{cfg.color}: {why}",
        "mean/std": f"{describe_mean_std(cfg.mean, cfg.std)}: {why}",
        "template": f"{cfg.template}: {why}",
        "input_size": f"{cfg.input_size[0]}x{cfg.input_size[1]}: {why}",
        "embedding_size": f"{cfg.embedding_size}: {why}",
    }


def _load_faceforge(p: Path, name: str, arch: str | None, overrides: Any) -> LoadedForeign:
    from faceforge.models.checkpoint import load_checkpoint

    where = str(p)
    if arch is not None and arch != name:
        raise FaceforgeError(f"{where} is a faceforge checkpoint of {name!r}, not of arch {arch!r}")
    given = parse_overrides(overrides, where)
    loaded = load_checkpoint(p)
    inferred = {"arch": f"{name}: faceforge checkpoint (hyper_parameters.config)"}
    inferred.update(_describe(loaded.face_cfg, "faceforge checkpoint face_cfg"))
    cfg = apply_parsed_overrides(loaded.face_cfg, given, inferred)
    _check_embedding(cfg, loaded.backbone, where)
    options = {k: v for k, v in loaded.config["model"]["backbone"].items() if k != "name"}
    return LoadedForeign(
        loaded.backbone.eval(), cfg, name, "faceforge", inferred, where, options, dict(loaded.calibration)
    )


def _check_embedding(cfg: FaceConfig, module: nn.Module, where: str) -> None:
    own = getattr(module, "embedding_size", None)
    if own is not None and int(own) != int(cfg.embedding_size):
        raise FaceforgeError(
            f"{where}: embedding_size {cfg.embedding_size} does not fit the weights ({own}); "
            f"expected embedding_size={own}"
        )


def load_foreign_weights(
    path: str | os.PathLike[str], arch: str | None = None, overrides: Mapping[str, Any] | None = None
) -> LoadedForeign:
    """Build the right registered backbone for a weights file from another project and load it strictly.

    Layouts: arcface_torch (iresnet*/mbf keys, optionally ``module.``-prefixed or in a resume
    checkpoint's ``state_dict_backbone``), AdaFace Lightning ``.ckpt`` (``state_dict`` of ``model.*`` +
    ``head.kernel``), EdgeFace (``model.``-prefixed timm EdgeNeXt), face.evoLVe IR/IR-SE/MobileFaceNet,
    and faceforge checkpoints; ``.safetensors`` too. ``arch`` skips detection (and must fit the keys).
    Preprocessing comes from the backbone's ``face_cfg`` (AdaFace: BGR; the others RGB; all mean/std
    0.5, ArcFace template 112x112), then ``overrides`` (see
    :func:`faceforge.models.face_cfg.parse_overrides`; ``input_size`` also sizes the model).
    """
    p = Path(path)
    where = str(p)
    raw = _read_raw(p)
    ff_name = _faceforge_checkpoint(raw)
    if ff_name is not None:
        return _load_faceforge(p, ff_name, arch, overrides)
    given = parse_overrides(overrides, where)
    sd, wrappers = _unwrap(raw, where)
    fixed = {"input_size": given["input_size"]} if "input_size" in given else {}
    inferred: dict[str, str] = {}
    if arch is None:
        ranked = _rank(sd, fixed)
        cand = _choose(ranked, where)
        nxt = next((c for c in ranked if c is not cand), None)
        runner = f"; next {nxt.name} {nxt.score:.3f}" if nxt else ""
        inferred["arch"] = f"{cand.name}: key/shape match score {cand.score:.3f}{runner}"
    else:
        if not isinstance(arch, str) or arch not in MODELS or arch.startswith("_"):
            raise FaceforgeError(
                f"{where}: unknown arch {arch!r}{did_you_mean(str(arch), MODELS.names())}; "
                f"known: {', '.join(MODELS.names())}"
            )
        cand = _candidate(sd, arch, fixed)
        if not _fits(cand):
            ranked = _rank(sd, fixed)
            best = next((c for c in ranked if c.name != arch), None)
            problems = []
            if cand.missing:
                problems.append(f"missing {len(cand.missing)} keys e.g. {cand.missing[0]}")
            if cand.wrong:
                problems.append(f"{len(cand.wrong)} wrong shapes e.g. {cand.wrong[0]}")
            if cand.extra:
                problems.append(f"{len(cand.extra)} unexpected keys e.g. {cand.extra[0]}")
            hint = f"; it looks most like {best.name!r} (score {best.score:.3f})" if best else ""
            raise FaceforgeError(
                f"{where} does not fit arch {arch!r} (score {cand.score:.3f}: {'; '.join(problems)}){hint}"
            )
        inferred["arch"] = f"{arch}: given (key/shape match score {cand.score:.3f})"
    if wrappers or cand.prefix:
        inside = "".join(f"[{w!r}]" for w in wrappers)
        inferred["keys"] = f"backbone tensors at {inside or 'top level'}, prefix {cand.prefix!r} stripped"
    outside = sorted(k for k in sd if not k.startswith(cand.prefix))
    ignored = outside + [cand.prefix + k for k in cand.extra]
    if ignored:
        more = f" (+{len(ignored) - 3} more)" if len(ignored) > 3 else ""
        inferred["ignored"] = f"{len(ignored)} non-backbone keys: {', '.join(ignored[:3])}{more}"
    if "input_size" in cand.options and "input_size" not in given:
        size = cand.options["input_size"]
        h, w = (size, size) if isinstance(size, int) else size
        inferred["input_size"] = f"{h}x{w}: from the weight shapes (FC input width)"

    module = MODELS.create(cand.name, **cand.options)
    own = module.state_dict()
    state = {k[len(cand.prefix) :]: v for k, v in sd.items() if k.startswith(cand.prefix)}
    state = {k: v for k, v in state.items() if k in own}
    for k, v in own.items():  # old files lack BatchNorm's num_batches_tracked
        if k.endswith(_NBT) and k not in state:
            state[k] = v
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise FaceforgeError(f"{where}: weights do not load into {cand.name!r}: {_first_line(e)}") from None
    module.eval()

    cfg0 = getattr(module, "face_cfg", None) or FaceConfig()
    family = str(cfg0.extra.get("family", ""))
    layout = _LAYOUT.get(family, family or "faceforge")
    why = f"{cand.name}'s face_cfg"
    described = _describe(cfg0, why)
    if layout in _CONVENTION:
        for k in ("color", "mean/std"):
            described[k] += f" ({_CONVENTION[layout]})"
    inferred.update({k: v for k, v in described.items() if k not in inferred})
    inferred["embedding_size"] = f"{cfg0.embedding_size}: from the weight shapes"
    inferred["layout"] = layout + (
        f" (Lightning checkpoint: {'/'.join(wrappers)})" if "state_dict" in wrappers else ""
    )
    cfg = apply_parsed_overrides(cfg0, given, inferred)
    cfg = dataclasses.replace(cfg, extra={**cfg.extra, "layout": layout})
    _check_embedding(cfg, module, where)
    return LoadedForeign(module, cfg, cand.name, layout, inferred, where, dict(cand.options))


# ------------------------------------------------------------------------------------------ import


def is_onnx_file(p: Path) -> bool:
    """Whether ``p`` is an ONNX protobuf (by suffix, else by its first byte) rather than a torch file."""
    if p.suffix.lower() == ".onnx":
        return True
    if p.suffix.lower() in (".pt", ".pth", ".ckpt", ".bin", ".tar", ".safetensors"):
        return False
    with contextlib.suppress(OSError), open(p, "rb") as f:
        head = f.read(4)
        return not head.startswith(b"PK") and head[:1] == b"\x08"  # protobuf field 1 (ir_version)
    return False


def import_weights(
    src: str | os.PathLike[str],
    dst: str | os.PathLike[str],
    arch: str | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> tuple[Path, dict[str, Any]]:
    """Write the foreign weights file ``src`` as a faceforge checkpoint at ``dst``; return it and the facts.

    The checkpoint holds the ``state_dict`` of ``backbone.*``, ``hyper_parameters.config`` with
    ``model.backbone.name`` and ``data.image_size``, ``face_cfg`` and an empty ``calibration``, as
    :func:`faceforge.models.checkpoint.load_checkpoint` reads it; it is written atomically (temporary
    file, fsync, ``os.replace``). The facts: ``format``, ``name``, ``face_cfg`` (dict), ``inferred``,
    ``source``, ``layout`` and ``options``.
    """
    s, out = Path(src), Path(dst)
    if not s.is_file():
        raise FaceforgeError(f"model file {s} does not exist")
    if out.is_dir():
        raise FaceforgeError(f"import output {out} is a directory; expected a file path")
    loaded = load_foreign_weights(s, arch, overrides)
    cfg = loaded.face_cfg
    h, w = (int(v) for v in cfg.input_size)
    backbone_cfg: dict[str, Any] = {"name": loaded.arch}
    backbone_cfg.update({k: (list(v) if isinstance(v, tuple) else v) for k, v in loaded.options.items()})
    if "input_size" in _factory_params(loaded.arch):
        backbone_cfg["input_size"] = h if h == w else [h, w]
    ckpt = {
        "state_dict": {f"backbone.{k}": v.detach().clone() for k, v in loaded.module.state_dict().items()},
        "hyper_parameters": {"config": {"model": {"backbone": backbone_cfg}, "data": {"image_size": h}}},
        "face_cfg": cfg.to_dict(),
        "calibration": dict(loaded.calibration),
        "faceforge_import": {"source": s.name, "layout": loaded.layout, "inferred": dict(loaded.inferred)},
    }
    buf = io.BytesIO()
    torch.save(ckpt, buf)
    atomic_write_bytes(out, buf.getvalue())
    return out, {
        "format": "checkpoint",
        "name": loaded.arch,
        "layout": loaded.layout,
        "options": dict(loaded.options),
        "face_cfg": cfg.to_dict(),
        "inferred": dict(loaded.inferred),
        "source": str(s),
    }
