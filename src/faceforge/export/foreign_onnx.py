"""Load ONNX face recognisers that carry no faceforge metadata, such as the insightface model-zoo files
(``w600k_r50.onnx``, ``glintr100.onnx``, ``w600k_mbf.onnx``) or exports by arcface_torch's
``torch2onnx.py``, by inferring their preprocessing from the graph the way insightface's own
``ArcFaceONNX`` loader does: if the first 8 graph nodes (Identity and Constant nodes skipped) include a
Sub and a Mul, the graph normalises its input itself and is fed raw 0–255 pixels, otherwise pixels are
mapped as ``(p - 127.5) / 127.5``; channels are RGB and the crop uses the ArcFace 5-point template at
the graph's input size. Every inferred fact is recorded with how it was found, any fact can be given
instead through ``overrides``, and files written by :func:`faceforge.export.export_onnx` are read from
their metadata, not guessed."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from faceforge.errors import FaceforgeError
from faceforge.fileio import atomic_write_bytes
from faceforge.models.face_cfg import (
    OVERRIDE_KEYS,
    FaceConfig,
    apply_parsed_overrides,
    describe_mean_std,
    parse_overrides,
)

__all__ = [
    "OVERRIDE_KEYS",
    "LoadedOnnx",
    "OnnxFacts",
    "import_onnx",
    "inspect_onnx",
    "load_onnx_model",
    "write_imported_onnx",
]

#: largest input side accepted from a foreign graph (face crops are 96–480 px)
MAX_INPUT_SIDE = 1024

# insightface's ArcFaceONNX looks at this many leading nodes for its Sub/Mul normalisation pair.
_NORM_NODES = 8
_DYNAMIC_CHUNK = 64  # images per run for graphs with a dynamic batch axis

# ONNX TensorProto element types (onnx.proto: FLOAT = 1, FLOAT16 = 10)
_FLOAT, _FLOAT16 = 1, 10


@dataclass
class OnnxFacts:
    """What an ONNX recogniser expects, and how each fact was found (``inferred``: fact → reason)."""

    face_cfg: FaceConfig
    input_name: str
    fixed_batch: int | None
    inferred: dict[str, str] = field(default_factory=dict)
    input_dtype: str = "float32"  # "float32" or "float16"
    output_name: str = ""
    has_metadata: bool = False
    calibration: dict[str, Any] = field(default_factory=dict)
    name: str = ""


@dataclass
class LoadedOnnx:
    """An onnxruntime recogniser: ``embed`` maps normalised float32 NCHW to raw float32 ``[N, E]``."""

    embed: Callable[[np.ndarray], np.ndarray]
    face_cfg: FaceConfig
    calibration: dict[str, Any]
    name: str
    facts: dict[str, str]
    source: str
    session: Any = None
    onnx_facts: OnnxFacts | None = None


# ------------------------------------------------------------------------------------------ inspection


def _require_onnx() -> Any:
    try:
        import onnx
    except ImportError:
        raise FaceforgeError("reading ONNX models needs the onnx package: pip install onnx") from None
    return onnx


def _load_proto(p: Path, external: bool = False) -> Any:
    onnx = _require_onnx()
    if not p.is_file():
        raise FaceforgeError(f"ONNX model {p} does not exist")
    try:
        return onnx.load(str(p), load_external_data=external)
    except Exception as e:  # protobuf DecodeError and friends
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise FaceforgeError(f"{p} is not a readable ONNX file: {first}") from None


def _dims(value_info: Any) -> list[int | str]:
    """Dims of a graph input/output: ints where fixed, the dim_param (or "?") where symbolic."""
    shape = value_info.type.tensor_type.shape
    out: list[int | str] = []
    for d in shape.dim:
        if d.HasField("dim_value") and d.dim_value > 0:
            out.append(int(d.dim_value))
        else:
            out.append(d.dim_param or "?")
    return out


def _image_input(proto: Any, where: str) -> tuple[Any, list[int | str]]:
    g = proto.graph
    inits = {i.name for i in g.initializer} | {s.values.name for s in g.sparse_initializer}
    inputs = [i for i in g.input if i.name not in inits]
    expected = "expected one image input [N, 3, H, W]"
    if len(inputs) != 1:
        names = ", ".join(i.name for i in inputs) or "none"
        raise FaceforgeError(f"{where} has {len(inputs)} inputs ({names}); {expected}")
    inp = inputs[0]
    if not inp.type.HasField("tensor_type") or not inp.type.tensor_type.HasField("shape"):
        raise FaceforgeError(f"{where} input {inp.name!r} has no tensor shape; {expected}")
    dims = _dims(inp)
    if len(dims) != 4 or dims[1] != 3:
        shown = "[" + ", ".join(str(d) for d in dims) + "]"
        raise FaceforgeError(f"{where} input {inp.name!r} has shape {shown}; {expected}")
    if inp.type.tensor_type.elem_type not in (_FLOAT, _FLOAT16):
        raise FaceforgeError(
            f"{where} input {inp.name!r} has element type {inp.type.tensor_type.elem_type} "
            f"(ONNX TensorProto code); expected float32 or float16 [N, 3, H, W]"
        )
    return inp, dims


def _normalises_itself(proto: Any) -> tuple[bool, str]:
    """insightface's rule: a Sub and a Mul among the first 8 nodes (by op type or mxnet-style name).

    Identity and Constant nodes compute nothing from the image and are skipped before counting:
    torch's exporter with ``do_constant_folding=False`` puts hundreds of Identity nodes (one per
    duplicated BatchNorm buffer) at the head of the graph, which would hide a leading Sub/Mul.
    """
    sub = mul = None
    nodes = [n for n in proto.graph.node if n.op_type not in ("Identity", "Constant")]
    for node in nodes[:_NORM_NODES]:
        if sub is None and (node.op_type == "Sub" or node.name.startswith(("Sub", "_minus"))):
            sub = node.name or node.op_type
        if mul is None and (node.op_type == "Mul" or node.name.startswith(("Mul", "_mul"))):
            mul = node.name or node.op_type
    if sub is not None and mul is not None:
        return True, f"graph starts with Sub and Mul nodes ({sub}, {mul}): it normalises raw 0–255 pixels"
    return False, (
        f"no Sub+Mul pair among the first {_NORM_NODES} nodes (Identity/Constant skipped): "
        "(p - 127.5) / 127.5, as insightface"
    )


def _inspect(
    path: str | os.PathLike, overrides: Mapping[str, Any] | None, get_session: Callable[[], Any]
) -> OnnxFacts:
    p = Path(path)
    where = str(p)
    proto = _load_proto(p)
    inp, dims = _image_input(proto, where)
    dtype = "float16" if inp.type.tensor_type.elem_type == _FLOAT16 else "float32"
    if not proto.graph.output:
        raise FaceforgeError(f"{where} has no graph output; expected an embedding [N, E]")
    out = proto.graph.output[0]
    fixed_batch = dims[0] if isinstance(dims[0], int) else None
    inferred: dict[str, str] = {
        "input": f"{inp.name!r} {dtype} [" + ", ".join(str(d) for d in dims) + "]",
        "batch": f"fixed at {fixed_batch}: graph input dim 0; images run in chunks of {fixed_batch}"
        if fixed_batch
        else f"dynamic ({dims[0]}): graph input dim 0",
    }
    if len(proto.graph.output) > 1:
        inferred["output"] = f"{out.name!r}: first of {len(proto.graph.output)} graph outputs"
    given = parse_overrides(overrides, where)
    raw = {m.key: m.value for m in proto.metadata_props}
    calibration: dict[str, Any] = {}
    name = p.stem
    if "faceforge.format" in raw:
        from faceforge.export.onnx import read_metadata

        meta = read_metadata(p)
        cfg = meta["face_cfg"]
        calibration = dict(meta.get("calibration") or {})
        name = meta.get("name") or p.stem
        src = f"faceforge metadata ({raw.get('faceforge.format')})"
        inferred.update(
            {
                "color": f"{cfg.color}: {src}",
                "mean/std": f"{describe_mean_std(cfg.mean, cfg.std)}: {src}",
                "template": f"{cfg.template}: {src}",
                "input_size": f"{cfg.input_size[0]}x{cfg.input_size[1]}: {src}",
                "embedding_size": f"{cfg.embedding_size}: {src}",
            }
        )
    else:
        raw_pixels, why = _normalises_itself(proto)
        if raw_pixels:
            mean, std = (0.0, 0.0, 0.0), (1 / 255.0,) * 3
        else:
            mean, std = (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)
        inferred["mean/std"] = f"{describe_mean_std(mean, std)}: {why}"
        inferred["color"] = "RGB: insightface feeds RGB (cv2.dnn.blobFromImages swapRB=True)"
        inferred["template"] = "arcface: insightface's 5-point alignment template"
        if isinstance(dims[2], int) and isinstance(dims[3], int):
            hw = (dims[2], dims[3])
            # A crafted graph may declare any size; every crop and batch is allocated from it.
            if not all(1 <= v <= MAX_INPUT_SIDE for v in hw):
                raise FaceforgeError(
                    f"{where}: graph input {inp.name!r} declares {hw[0]}x{hw[1]} pixels; expected a face "
                    f"crop with sides of at most {MAX_INPUT_SIDE}"
                )
            inferred["input_size"] = f"{hw[0]}x{hw[1]}: graph input shape"
        else:
            hw = (112, 112)
            inferred["input_size"] = (
                f"112x112: graph input H/W are symbolic ({dims[2]}, {dims[3]}); arcface default"
            )
        emb = None
        if "embedding_size" not in given:
            odims = _dims(out) if out.type.tensor_type.HasField("shape") else []
            if len(odims) == 2 and isinstance(odims[1], int):
                emb = odims[1]
                inferred["embedding_size"] = f"{emb}: graph output shape"
            else:
                sess = get_session()
                b = fixed_batch or 1
                h, w = given.get("input_size", hw)
                x = np.zeros((b, 3, h, w), np.float16 if dtype == "float16" else np.float32)
                try:
                    y = np.asarray(sess.run([out.name], {inp.name: x})[0])
                except Exception as e:  # onnxruntime raises its own types
                    first = (str(e).strip().splitlines() or [type(e).__name__])[0]
                    raise FaceforgeError(
                        f"{where}: a dummy inference to size the output failed: {first}"
                    ) from None
                emb = int(np.prod(y.shape[1:])) if y.ndim >= 2 else int(y.size // b)
                inferred["embedding_size"] = f"{emb}: one dummy inference (output dims are symbolic)"
        cfg = FaceConfig(
            input_size=hw,
            color="RGB",
            mean=mean,
            std=std,
            template="arcface",
            embedding_size=int(emb or 512),
            extra={"family": "onnx", "source_format": "foreign-onnx"},
        )
    cfg = apply_parsed_overrides(cfg, given, inferred)
    if isinstance(dims[2], int) and isinstance(dims[3], int) and tuple(cfg.input_size) != (dims[2], dims[3]):
        raise FaceforgeError(
            f"{where}: input_size {cfg.input_size[0]}x{cfg.input_size[1]} does not fit the graph input "
            f"{dims[2]}x{dims[3]}; expected input_size=({dims[2]}, {dims[3]})"
        )
    odims = _dims(out) if out.type.tensor_type.HasField("shape") else []
    if len(odims) == 2 and isinstance(odims[1], int) and odims[1] != cfg.embedding_size:
        raise FaceforgeError(
            f"{where}: embedding_size {cfg.embedding_size} does not fit the graph output {odims[1]}; "
            f"expected embedding_size={odims[1]}"
        )
    return OnnxFacts(
        face_cfg=cfg,
        input_name=inp.name,
        fixed_batch=fixed_batch,
        inferred=inferred,
        input_dtype=dtype,
        output_name=out.name,
        has_metadata="faceforge.format" in raw,
        calibration=calibration,
        name=name,
    )


def inspect_onnx(path: str | os.PathLike, overrides: Mapping[str, Any] | None = None) -> OnnxFacts:
    """Infer the preprocessing of an ONNX recogniser (insightface model zoo, arcface_torch exports).

    Files written by faceforge (``metadata_props`` ``faceforge.format``) are read with
    :func:`faceforge.export.onnx.read_metadata`. Others follow insightface's ``ArcFaceONNX``: a Sub and
    a Mul among the first 8 nodes mean raw pixels (mean 0, std 1/255), else mean/std 0.5 (127.5/127.5);
    RGB; ArcFace template; input size from the graph input ``[N, 3, H, W]``; embedding size from the
    output shape (one dummy inference when it is symbolic). ``overrides``: see :func:`parse_overrides`.
    """
    from faceforge.export.onnx import onnx_session

    return _inspect(path, overrides, lambda: onnx_session(path, 1))


def _make_embed(sess: Any, facts: OnnxFacts, where: str) -> Callable[[np.ndarray], np.ndarray]:
    dtype = np.float16 if facts.input_dtype == "float16" else np.float32
    h, w = (int(v) for v in facts.face_cfg.input_size)
    step = facts.fixed_batch or _DYNAMIC_CHUNK
    emb = int(facts.face_cfg.embedding_size)

    def embed(x: np.ndarray) -> np.ndarray:
        """Raw float32 embeddings ``[N, E]`` of normalised float32 ``[N, 3, H, W]`` input."""
        a = np.asarray(x)
        if a.ndim != 4 or a.shape[1:] != (3, h, w):
            raise FaceforgeError(
                f"{where} expects normalised input [N, 3, {h}, {w}], got shape {list(a.shape)}"
            )
        a = np.ascontiguousarray(a, dtype=dtype)
        n = len(a)
        if n == 0:
            return np.zeros((0, emb), np.float32)
        outs = []
        for s in range(0, n, step):
            xb = a[s : s + step]
            k = len(xb)
            if facts.fixed_batch and k < facts.fixed_batch:  # pad the last chunk of a fixed-batch graph
                xb = np.concatenate([xb, np.zeros((facts.fixed_batch - k, 3, h, w), dtype)])
            y = np.asarray(sess.run([facts.output_name], {facts.input_name: xb})[0], np.float32)
            outs.append(y.reshape(len(xb), -1)[:k])
        return np.concatenate(outs)

    return embed


def load_onnx_model(
    path: str | os.PathLike, overrides: Mapping[str, Any] | None = None, threads: int | None = None
) -> LoadedOnnx:
    """An onnxruntime (CPU) recogniser for any ONNX face-embedding file, with its preprocessing facts.

    Facts come from faceforge metadata when present, else as :func:`inspect_onnx` infers them;
    ``overrides`` replace any of them. ``embed`` takes normalised float32 NCHW (``(p / 255 - mean) /
    std`` in ``face_cfg.color`` order) and returns raw float32 ``[N, E]``; for a graph with a fixed
    batch size it runs chunks of that size (padding the last), and it feeds float16 to float16 graphs.
    """
    from faceforge.export.onnx import onnx_session

    sessions: list[Any] = []

    def get_session() -> Any:
        if not sessions:
            sessions.append(onnx_session(path, threads))
        return sessions[0]

    facts = _inspect(path, overrides, get_session)
    sess = get_session()
    return LoadedOnnx(
        embed=_make_embed(sess, facts, str(path)),
        face_cfg=facts.face_cfg,
        calibration=dict(facts.calibration),
        name=facts.name,
        facts=dict(facts.inferred),
        source=str(path),
        session=sess,
        onnx_facts=facts,
    )


def write_imported_onnx(
    src: str | os.PathLike, dst: str | os.PathLike, facts: OnnxFacts, name: str | None = None
) -> Path:
    """Copy the graph of ``src`` to ``dst`` with faceforge ``metadata_props`` for ``facts``.

    Metadata as :func:`faceforge.export.onnx.metadata_dict` writes it, plus ``faceforge.imported_from``
    and ``faceforge.inferred`` (JSON). Written atomically: temporary file, fsync, ``os.replace``.
    """

    from faceforge.export.onnx import metadata_dict

    out = Path(dst)
    if out.is_dir():
        raise FaceforgeError(
            f"import output {out} is a directory; expected a file path such as {out}/model.onnx"
        )
    proto = _load_proto(Path(src), external=True)
    precision = "fp16" if facts.input_dtype == "float16" else "fp32"
    meta = {m.key: m.value for m in proto.metadata_props if not m.key.startswith("faceforge.")}
    meta.update(metadata_dict(facts.face_cfg, facts.calibration, name or facts.name, precision))
    meta["faceforge.imported_from"] = Path(src).name
    meta["faceforge.inferred"] = json.dumps(facts.inferred)
    del proto.metadata_props[:]
    for k, v in meta.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = k, v
    return atomic_write_bytes(out, proto.SerializeToString())


def import_onnx(
    src: str | os.PathLike,
    dst: str | os.PathLike,
    name: str | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> tuple[Path, dict[str, Any]]:
    """Copy the ONNX recogniser ``src`` to ``dst`` with faceforge metadata (facts inferred or given)."""
    s, out = Path(src), Path(dst)
    if out.is_dir():
        raise FaceforgeError(f"import output {out} is a directory; expected a file path")
    facts = inspect_onnx(s, overrides)
    name = name or facts.name
    write_imported_onnx(s, out, facts, name)
    return out, {
        "format": "onnx",
        "name": name,
        "face_cfg": facts.face_cfg.to_dict(),
        "inferred": dict(facts.inferred),
        "fixed_batch": facts.fixed_batch,
        "source": str(s),
    }
