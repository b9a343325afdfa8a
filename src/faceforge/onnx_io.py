"""ONNX Runtime sessions and ONNX metadata, one way for every layer (https://onnxruntime.ai, https://onnx.ai).
:func:`create_session` is the only place that builds ``onnxruntime.SessionOptions`` and ``InferenceSession``
(detectors and exported recognisers alike); :func:`metadata_props` reads ``ModelProto.metadata_props``
into a dict; :func:`import_onnxruntime` imports the optional extra lazily. Details: docs/align.md,
"Implementation notes" ("ONNX Runtime sessions").
"""

from __future__ import annotations

import os
from collections.abc import Callable
from types import ModuleType
from typing import Any

from faceforge.errors import FaceforgeError

__all__ = ["DEVICES", "create_session", "import_onnxruntime", "metadata_props", "session_providers"]

#: what ``device=`` accepts: ``auto`` (CUDA when present, else CPU), ``cpu`` or ``cuda``
DEVICES = ("auto", "cpu", "cuda")

_INSTALL_HINT = "running ONNX models needs onnxruntime: pip install onnxruntime"
_CPU = "CPUExecutionProvider"
_CUDA = "CUDAExecutionProvider"


def import_onnxruntime(install_hint: str = _INSTALL_HINT) -> ModuleType:
    """Import onnxruntime or raise a one-line :class:`FaceforgeError` with ``install_hint``."""
    try:
        import onnxruntime as ort
    except ImportError:
        raise FaceforgeError(install_hint) from None
    return ort


def session_providers(
    device: str,
    on_cpu_fallback: Callable[[str], None] | None = None,
    install_hint: str = _INSTALL_HINT,
) -> list[str]:
    """Execution providers for ``device``: ``cpu`` -> CPU only; ``auto``/``cuda`` -> CUDA then CPU.

    When ``auto``/``cuda`` is asked for but this onnxruntime build has no CUDA provider (the plain
    ``onnxruntime`` wheel, not ``onnxruntime-gpu``), the CPU alone is returned and ``on_cpu_fallback``
    is called with the reason, so the caller can say so once in its own words.
    """
    if device not in DEVICES:
        raise FaceforgeError(f"device={device!r}: expected one of {', '.join(DEVICES)}")
    ort = import_onnxruntime(install_hint)
    if device == "cpu":
        return [_CPU]
    if _CUDA in ort.get_available_providers():
        return [_CUDA, _CPU]
    if on_cpu_fallback is not None:
        on_cpu_fallback("this onnxruntime has no CUDAExecutionProvider (pip install onnxruntime-gpu)")
    return [_CPU]


def create_session(
    path: str | os.PathLike,
    *,
    device: str = "cpu",
    threads: int | None = None,
    inter_op_threads: int | None = None,
    what: str = "ONNX model",
    install_hint: str = _INSTALL_HINT,
    on_cpu_fallback: Callable[[str], None] | None = None,
) -> Any:
    """An ``onnxruntime.InferenceSession`` for ``path`` on ``device`` (see :func:`session_providers`).

    ``threads``: intra-op threads; ``None`` or 0 leaves onnxruntime's default (one per core).
    ``inter_op_threads``: likewise for inter-op parallelism. Warnings from onnxruntime's own logger
    are silenced (severity 3 = errors only): they repeat per session and say nothing actionable.
    A file onnxruntime cannot load raises one line, ``cannot load <what> <path>: <reason>``. When CUDA
    was listed but the session still came up on the CPU (no driver, no device),
    ``on_cpu_fallback`` is called too.
    """
    ort = import_onnxruntime(install_hint)
    providers = session_providers(device, on_cpu_fallback, install_hint)
    opts = ort.SessionOptions()
    if threads:
        opts.intra_op_num_threads = int(threads)
    if inter_op_threads:
        opts.inter_op_num_threads = int(inter_op_threads)
    opts.log_severity_level = 3
    try:
        sess = ort.InferenceSession(str(path), sess_options=opts, providers=providers)
    except Exception as e:  # onnxruntime raises its own exception types
        reason = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise FaceforgeError(f"cannot load {what} {path}: {reason}; expected an ONNX file") from None
    if providers[0] == _CUDA and _CUDA not in sess.get_providers() and on_cpu_fallback is not None:
        on_cpu_fallback("onnxruntime could not start CUDA here (driver or device missing)")
    return sess


def metadata_props(proto: Any) -> dict[str, str]:
    """``ModelProto.metadata_props`` (repeated ``StringStringEntryProto``) as a ``{key: value}`` dict."""
    return {m.key: m.value for m in proto.metadata_props}
