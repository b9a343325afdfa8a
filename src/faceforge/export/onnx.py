"""ONNX export of any faceforge backbone, with the preprocessing recorded in the file, and a parity check.
Format: ONNX (https://onnx.ai), the graph ``input`` float32 ``[batch, 3, H, W]`` → ``embedding``
float32 ``[batch, E]``, and the faceforge ``metadata_props`` (``faceforge-onnx/1``); precisions fp32,
fp16 weights and int8 dynamic quantisation (Jacob et al., "Quantization and Training of Neural Networks
for Efficient Integer-Arithmetic-Only Inference", CVPR 2018). Entry points: :func:`export_onnx`,
:func:`check_parity`, :func:`read_metadata`. Details: docs/export.md.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from faceforge.errors import FaceforgeError
from faceforge.fileio import free_bytes, fsync_dir, fsync_file, naming_errors, public_file_mode
from faceforge.models.face_cfg import FaceConfig, preprocess
from faceforge.onnx_io import create_session, metadata_props

__all__ = [
    "FORMAT",
    "PRECISIONS",
    "check_parity",
    "compare_on_pairs",
    "export_onnx",
    "parse_metadata",
    "read_metadata",
    "synth_crops",
]

FORMAT = "faceforge-onnx/1"
PRECISIONS = ("fp32", "fp16", "int8")
MIN_OPSET = 17
#: longest JSON metadata value parsed (a calibration with its impostor histogram is a few 100 KB)
_MAX_META_CHARS = 16 * 2**20


def _require_onnx() -> Any:
    try:
        import onnx
    except ImportError:
        raise FaceforgeError(
            "ONNX export needs the onnx package: pip install onnx (or 'faceforge[onnx]')"
        ) from None
    return onnx


def _unwrap(model: Any) -> tuple[Any, FaceConfig | None, dict[str, Any], str | None]:
    """``(nn.Module, face_cfg, calibration, name)`` from a module or a loaded checkpoint."""
    import torch

    from faceforge.models.checkpoint import LoadedModel

    if isinstance(model, LoadedModel):
        name = (model.config.get("model") or {}).get("backbone", {}).get("name")
        return model.backbone, model.face_cfg, dict(model.calibration), name
    if not isinstance(model, torch.nn.Module):
        raise FaceforgeError(
            f"export_onnx needs a torch.nn.Module (a faceforge backbone) or a loaded checkpoint, "
            f"got {type(model).__name__}"
        )
    return model, getattr(model, "face_cfg", None), {}, getattr(model, "model_name", None)


def metadata_dict(
    face_cfg: FaceConfig, calibration: dict[str, Any] | None, name: str | None, precision: str
) -> dict[str, str]:
    """The ``metadata_props`` written into the ONNX file (see docs/export.md, "`metadata_props`")."""
    from faceforge import __version__
    from faceforge.eval.calibration import pick_threshold

    cal = dict(calibration or {})
    thr = pick_threshold(cal) if cal else None
    return {
        "faceforge.format": FORMAT,
        "input_size": json.dumps([int(v) for v in face_cfg.input_size]),
        "color": face_cfg.color,
        "mean": json.dumps([float(v) for v in face_cfg.mean]),
        "std": json.dumps([float(v) for v in face_cfg.std]),
        "template": str(face_cfg.template),
        "embedding_size": str(int(face_cfg.embedding_size)),
        "threshold": "" if thr is None else repr(float(thr)),
        "calibration": json.dumps(cal, allow_nan=False, default=float),
        "face_cfg": json.dumps(face_cfg.to_dict(), default=str),
        "model_name": name or "",
        "precision": precision,
        "faceforge_version": __version__,
    }


def export_onnx(
    model: Any,
    path: str | os.PathLike,
    *,
    opset: int = MIN_OPSET,
    dynamic_batch: bool = True,
    face_cfg: FaceConfig | None = None,
    calibration: dict[str, Any] | None = None,
    precision: str = "fp32",
    name: str | None = None,
) -> Path:
    """Export ``model`` (a backbone, or a :class:`~faceforge.models.checkpoint.LoadedModel`) to ``path``.

    ``face_cfg`` defaults to ``model.face_cfg``; ``calibration`` to the checkpoint's. The file is
    written atomically (temporary file, fsync, rename, fsync of the folder) with the mode the user's
    umask gives (0644 usually) and checked with ``onnx.checker``.
    """
    import torch

    onnx = _require_onnx()
    module, cfg0, cal0, name0 = _unwrap(model)
    cfg = face_cfg or cfg0
    if cfg is None:
        raise FaceforgeError(
            f"{type(module).__name__} has no face_cfg; pass face_cfg=FaceConfig(input_size=..., ...)"
        )
    if precision not in PRECISIONS:
        raise FaceforgeError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if int(opset) < MIN_OPSET:
        raise FaceforgeError(f"opset must be >= {MIN_OPSET} (LayerNormalization and friends), got {opset}")
    cal = dict(calibration if calibration is not None else cal0)
    out = Path(path)
    if out.is_dir():
        raise FaceforgeError(
            f"ONNX output {out} is a directory; expected a file path such as {out}/model.onnx"
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    h, w = (int(v) for v in cfg.input_size)
    x = torch.zeros(2, 3, h, w)
    was_training = module.training
    module.eval()
    fd, tmp_name = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".onnx", dir=out.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        with warnings.catch_warnings():
            # The TorchScript exporter is deprecated in favour of torch.export (which needs onnxscript,
            # not a dependency); its tracer warnings are about Python control flow the models lack.
            warnings.simplefilter("ignore")
            try:
                with naming_errors(out):  # a full disk: the one-line error says which file
                    torch.onnx.export(
                        module,
                        (x,),
                        str(tmp),
                        dynamo=False,
                        opset_version=int(opset),
                        input_names=["input"],
                        output_names=["embedding"],
                        dynamic_axes={"input": {0: "batch"}, "embedding": {0: "batch"}}
                        if dynamic_batch
                        else None,
                        do_constant_folding=True,
                    )
            except OSError:
                raise  # the disk, not the model
            except Exception as e:  # the exporter raises many types; the user needs the model name
                raise FaceforgeError(
                    f"ONNX export of {name or name0 or type(module).__name__} failed: {type(e).__name__}: {e}"
                ) from None
        with naming_errors(out):  # a full disk: the one-line error says which file
            proto = onnx.load(str(tmp))
            if precision == "fp16":
                proto = _weights_to_fp16(proto)
            elif precision == "int8":
                proto = _quantize_int8(proto, tmp)
            del proto.metadata_props[:]
            for k, v in metadata_dict(cfg, cal, name or name0, precision).items():
                entry = proto.metadata_props.add()
                entry.key, entry.value = k, v
            proto.doc_string = f"faceforge {name or name0 or type(module).__name__} face embedding"
            onnx.checker.check_model(proto)
            onnx.save(proto, str(tmp))
            fsync_file(tmp)
        os.chmod(tmp, public_file_mode())  # mkstemp made it 0600; the user's umask decides
        os.replace(tmp, out)
        fsync_dir(out.parent)
    finally:
        module.train(was_training)
        if tmp.exists():
            tmp.unlink()
    return out


def _weights_to_fp16(proto: Any) -> Any:
    """Store float32 initializers as float16, each followed by a Cast back to float32 (docs/export.md)."""
    from onnx import TensorProto, helper, numpy_helper

    g = proto.graph
    new_inits, casts = [], []
    for init in g.initializer:
        if init.data_type == TensorProto.FLOAT and int(np.prod(init.dims, dtype=np.int64)) > 1:
            arr = numpy_helper.to_array(init)
            if np.abs(arr).max(initial=0.0) > 65504.0:
                new_inits.append(init)  # would overflow half precision: keep it exact
                continue
            half = numpy_helper.from_array(arr.astype(np.float16), init.name + "__fp16")
            new_inits.append(half)
            casts.append(helper.make_node("Cast", [half.name], [init.name], to=TensorProto.FLOAT))
        else:
            new_inits.append(init)
    del g.initializer[:]
    g.initializer.extend(new_inits)
    nodes = list(g.node)
    del g.node[:]
    g.node.extend(casts + nodes)
    return proto


def _quantize_int8(proto: Any, tmp: Path) -> Any:
    onnx = _require_onnx()
    try:
        from onnxruntime.quantization import QuantType, quantize_dynamic
    except ImportError:
        raise FaceforgeError("int8 export needs onnxruntime: pip install onnxruntime") from None
    # quantize_dynamic writes beside its input (a shape-inferred copy) and leaves that behind when it
    # fails: all of it happens in a private folder next to the output, removed in every case.
    work = Path(tempfile.mkdtemp(prefix=f".{tmp.name}.", dir=tmp.parent))
    src, q = work / "fp32.onnx", work / "int8.onnx"
    try:
        os.replace(tmp, src)
        # a shape-inferred fp32 copy plus the int8 model (about a quarter of it) while both exist
        need, free = int(1.3 * src.stat().st_size) + (1 << 20), free_bytes(work)
        no_space = OSError(
            errno.ENOSPC,
            f"no space left for int8 quantisation: it needs about {need / 1e6:.1f} MB of temporary "
            f"space beside the output, {free / 1e6:.1f} MB free",
        )
        if free < need:
            raise no_space
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                # quantize_dynamic logs a "consider pre-processing" advice on the root logger each call.
                logging.disable(logging.WARNING)
                try:
                    quantize_dynamic(str(src), str(q), weight_type=QuantType.QInt8)
                finally:
                    logging.disable(logging.NOTSET)
            return onnx.load(str(q))
        except OSError:
            raise
        except Exception as e:  # a truncated write surfaces as a protobuf DecodeError when read back
            if free_bytes(work) < (1 << 20):
                raise no_space from e
            raise FaceforgeError(f"int8 quantisation failed: {type(e).__name__}: {e}") from e
    finally:
        shutil.rmtree(work, ignore_errors=True)


def read_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """Parse the faceforge ``metadata_props`` of an ONNX file.

    Returns ``face_cfg`` (:class:`FaceConfig`), ``calibration`` (dict), ``threshold`` (float|None),
    ``name``, ``precision`` and ``raw`` (the string map). Raises :class:`FaceforgeError` for a file
    that is not ONNX or was not written by faceforge.
    """
    onnx = _require_onnx()
    p = Path(path)
    if not p.is_file():
        raise FaceforgeError(f"ONNX model {p} does not exist")
    try:
        proto = onnx.load(str(p), load_external_data=False)
    except Exception as e:  # protobuf DecodeError and friends
        raise FaceforgeError(f"{p} is not a readable ONNX file: {e}") from None
    raw = metadata_props(proto)
    if raw.get("faceforge.format") != FORMAT:
        raise FaceforgeError(
            f"{p} has no faceforge metadata (metadata_props 'faceforge.format' is "
            f"{str(raw.get('faceforge.format'))[:40]!r}, expected {FORMAT!r}); "
            "export it with `faceforge export`"
        )
    return parse_metadata(raw, str(p))


def _json_field(raw: dict[str, str], key: str, where: str, default: str | None = None) -> Any:
    text = raw.get(key, default)
    if text is None:
        raise FaceforgeError(f"{where}: faceforge metadata lacks {key!r}")
    if len(text) > _MAX_META_CHARS:
        raise FaceforgeError(
            f"{where}: metadata {key!r} is {len(text)} characters long (at most {_MAX_META_CHARS})"
        )
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        raise FaceforgeError(f"{where}: metadata {key!r} is not valid JSON: {text[:60]!r}") from None


def parse_metadata(raw: dict[str, str], where: str) -> dict[str, Any]:
    """Check and parse faceforge ``metadata_props`` (docs/export.md): every field's type and range is
    validated (:func:`faceforge.models.checkpoint.check_face_cfg`), errors are one line naming the key."""
    from faceforge.models.checkpoint import check_face_cfg

    embedded = _json_field(raw, "face_cfg", where)
    if not isinstance(embedded, dict):
        raise FaceforgeError(
            f"{where}: metadata 'face_cfg' is {type(embedded).__name__}; expected a JSON object"
        )
    fields: dict[str, Any] = dict(embedded)
    # The readable keys win over the embedded face_cfg so a hand-edited file is honoured.
    for key in ("input_size", "mean", "std"):
        fields[key] = _json_field(raw, key, where)
    for key in ("color", "template"):
        if key not in raw:
            raise FaceforgeError(f"{where}: faceforge metadata lacks {key!r}")
        fields[key] = raw[key]
    try:
        fields["embedding_size"] = int(raw["embedding_size"])
    except KeyError:
        raise FaceforgeError(f"{where}: faceforge metadata lacks 'embedding_size'") from None
    except ValueError:
        raise FaceforgeError(
            f"{where}: metadata 'embedding_size' is {raw['embedding_size'][:20]!r}; expected an integer"
        ) from None
    cfg = check_face_cfg(fields, f"{where} metadata")
    calibration = _json_field(raw, "calibration", where, default="{}")
    if not isinstance(calibration, dict):
        raise FaceforgeError(
            f"{where}: metadata 'calibration' is {type(calibration).__name__}; expected a JSON object"
        )
    threshold = None
    if raw.get("threshold"):
        try:
            threshold = float(raw["threshold"])
        except ValueError:
            threshold = float("nan")
        if not -1.0 <= threshold <= 1.0:
            raise FaceforgeError(
                f"{where}: metadata 'threshold' is {raw['threshold'][:20]!r}; expected a cosine in [-1, 1]"
            )
    precision = raw.get("precision", "fp32")
    if precision not in PRECISIONS:
        raise FaceforgeError(
            f"{where}: metadata 'precision' is {precision[:20]!r}; expected one of {PRECISIONS}"
        )
    name = raw.get("model_name") or None
    if name is not None and len(name) > 200:
        raise FaceforgeError(f"{where}: metadata 'model_name' is {len(name)} characters long (at most 200)")
    return {
        "face_cfg": cfg,
        "calibration": calibration,
        "threshold": threshold,
        "name": name,
        "precision": precision,
        "raw": raw,
    }


def _to_input(images: Any, cfg: FaceConfig) -> np.ndarray:
    """Model input from uint8 RGB ``[N, H, W, 3]`` / ``[N, 3, H, W]`` crops (via :func:`preprocess`, the one
    definition), or an already-normalised float NCHW batch passed through."""
    if hasattr(images, "detach"):
        images = images.detach().cpu().numpy()
    a = np.asarray(images)
    if a.ndim != 4:
        raise FaceforgeError(f"parity images must be a 4-D batch, got shape {a.shape}")
    if a.dtype != np.uint8:
        return np.ascontiguousarray(a, dtype=np.float32)
    return preprocess(a, cfg)


def onnx_session(path: str | os.PathLike, threads: int | None = None) -> Any:
    """A CPU onnxruntime session for ``path`` (``threads`` defaults to ``torch.get_num_threads()``).

    Built by :func:`faceforge.onnx_io.create_session`, with one inter-op thread so that ``threads`` is
    the session's whole CPU budget.
    """
    if threads is None:
        import torch

        threads = torch.get_num_threads()
    return create_session(path, device="cpu", threads=max(1, int(threads)), inter_op_threads=1)


def check_parity(
    model: Any, onnx_path: str | os.PathLike, images: Any, batch_size: int = 32
) -> dict[str, Any]:
    """Compare PyTorch and onnxruntime embeddings of the same ``images``.

    ``images``: uint8 RGB crops (``[N, H, W, 3]`` or ``[N, 3, H, W]``; preprocessed with the model's
    face_cfg) or an already-normalised float batch. Returns ``cosine_min``, ``cosine_mean``,
    ``max_abs_diff`` (of the raw embeddings), ``max_abs`` (largest raw value, for scale) and ``n``.
    """
    import torch

    module, cfg0, _, _ = _unwrap(model)
    cfg = cfg0 or FaceConfig()
    x = _to_input(images, cfg)
    sess = onnx_session(onnx_path)
    was_training = module.training
    module.eval()
    ref, got = [], []
    try:
        with torch.inference_mode():
            for s in range(0, len(x), batch_size):
                xb = x[s : s + batch_size]
                ref.append(module(torch.from_numpy(xb)).float().numpy())
                got.append(np.asarray(sess.run(None, {sess.get_inputs()[0].name: xb})[0], np.float32))
    finally:
        module.train(was_training)
    a, b = np.concatenate(ref).astype(np.float64), np.concatenate(got).astype(np.float64)
    if a.shape != b.shape:
        raise FaceforgeError(f"ONNX output shape {b.shape} differs from PyTorch {a.shape}")
    cos = (a * b).sum(1) / np.maximum(np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), 1e-30)
    return {
        "n": len(a),
        "cosine_min": float(cos.min()),
        "cosine_mean": float(cos.mean()),
        "max_abs_diff": float(np.abs(a - b).max()),
        "max_abs": float(np.abs(a).max()),
    }


def synth_crops(face_cfg: FaceConfig, n: int, seed: int = 1, first_identity: int = 100_000) -> np.ndarray:
    """``n`` aligned SynthFaces crops (RGB uint8 ``[n, H, W, 3]``) at the model's input size.

    Identities from ``first_identity`` up are far beyond any training set the CLI writes, so the
    crops are unseen faces; two images per identity.
    """
    import cv2

    from faceforge.data.synth import SynthFaces

    sf = SynthFaces(seed)
    h, w = (int(v) for v in face_cfg.input_size)
    out = np.empty((n, h, w, 3), np.uint8)
    for i in range(n):
        img, _ = sf.image(first_identity + i // 2, i % 2)
        out[i] = img if img.shape[:2] == (h, w) else cv2.resize(img, (w, h), interpolation=cv2.INTER_AREA)
    return out


def compare_on_pairs(
    model: Any, onnx_path: str | os.PathLike, n_identities: int = 100, seed: int = 1
) -> dict[str, Any]:
    """Verification accuracy of PyTorch vs ONNX embeddings on SynthFaces pairs of unseen identities.

    ``n_identities`` genuine pairs (two images of one identity) and as many impostor pairs
    (consecutive identities); both embeddings are scored with the 10-fold protocol of
    :func:`faceforge.eval.metrics.evaluate_pairs`. Returns both accuracies, their difference and
    the fraction of pairs whose same/different decision at the calibrated (or best-accuracy)
    threshold agrees.
    """
    import torch

    from faceforge.eval.metrics import evaluate_pairs

    module, cfg0, cal, _ = _unwrap(model)
    cfg = cfg0 or FaceConfig()
    x = _to_input(synth_crops(cfg, 2 * n_identities, seed), cfg)
    sess = onnx_session(onnx_path)
    was_training = module.training
    module.eval()
    try:
        with torch.inference_mode():
            ref = np.concatenate(
                [module(torch.from_numpy(x[s : s + 64])).numpy() for s in range(0, len(x), 64)]
            )
    finally:
        module.train(was_training)
    got = np.concatenate(
        [
            np.asarray(sess.run(None, {sess.get_inputs()[0].name: x[s : s + 64]})[0])
            for s in range(0, len(x), 64)
        ]
    ).astype(np.float32)
    ia = np.concatenate([np.arange(0, 2 * n_identities, 2), np.arange(0, 2 * n_identities - 2, 2)])
    ib = np.concatenate([np.arange(1, 2 * n_identities, 2), np.arange(2, 2 * n_identities, 2)])
    issame = np.concatenate([np.ones(n_identities, bool), np.zeros(n_identities - 1, bool)])
    r_ref = evaluate_pairs(ref[ia], ref[ib], issame)
    r_got = evaluate_pairs(got[ia], got[ib], issame)

    def cos(e: np.ndarray) -> np.ndarray:
        e = e / np.linalg.norm(e, axis=1, keepdims=True)
        return (e[ia] * e[ib]).sum(1)

    from faceforge.eval.calibration import pick_threshold

    thr = pick_threshold(cal) if cal else float(r_ref["threshold_cos"])
    agree = float(np.mean((cos(ref) >= thr) == (cos(got) >= thr)))
    return {
        "n_pairs": len(issame),
        "accuracy_torch": float(r_ref["accuracy"]),
        "accuracy_onnx": float(r_got["accuracy"]),
        "accuracy_change": float(r_got["accuracy"] - r_ref["accuracy"]),
        "threshold": float(thr),
        "decision_agreement": agree,
    }
