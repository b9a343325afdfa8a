"""Embedding and crop caches of ``faceforge eval``: re-evaluating a model with other metrics, modes
or FARs does not re-embed anything, and a second run over raw photos skips decoding and detection.
:class:`EmbeddingCache` stores ``float32 [N, E]`` arrays under the SHA-256 of everything they depend
on (:func:`model_fingerprint`, the data set's identity, flip mode, input size, colour order,
degradation); :class:`CropCache` keeps aligned crops of detected faces per image. An unwritable cache
folder never fails a run. Details: docs/evaluation.md, "Embedding cache" and "Caches".
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from faceforge.errors import FaceforgeError
from faceforge.fileio import naming_errors

__all__ = [
    "CropCache",
    "EmbeddingCache",
    "default_cache_dir",
    "default_crop_cache_dir",
    "file_sha256",
    "model_fingerprint",
]


def warn_stderr(message: str) -> None:
    """The default warning sink of the caches and the crop loader: one ``warning: ...`` line on stderr."""
    print(f"warning: {message}", file=sys.stderr, flush=True)


def file_sha256(path: str | os.PathLike[str]) -> str:
    """SHA-256 of a file's bytes (:func:`faceforge.hub.sha256_file`), memoised per
    (path, size, mtime) within the process so a set read twice is hashed once."""
    from faceforge.hub import sha256_cached

    p = Path(path)
    try:
        st = p.stat()
    except OSError as e:
        raise FaceforgeError(f"cannot read {p}: {e}") from None
    return sha256_cached(str(p.resolve()), st.st_size, st.st_mtime_ns)


def default_cache_dir() -> Path:
    """``$FACEFORGE_HOME/cache/embeddings`` (default ``~/.cache/faceforge/cache/embeddings``)."""
    from faceforge.hub import home

    return home() / "cache" / "embeddings"


def default_crop_cache_dir() -> Path:
    """``$FACEFORGE_HOME/cache/crops``: aligned crops of detected faces (:class:`CropCache`)."""
    from faceforge.hub import home

    return home() / "cache" / "crops"


def model_fingerprint(module: torch.nn.Module, face_cfg: Mapping[str, Any] | None = None) -> str:
    """SHA-256 over a model's tensors (name, dtype, shape, bytes) and its face config.

    The weights rather than the checkpoint file are hashed so that rewriting a checkpoint without
    touching its weights (``faceforge eval --write-calibration``, a resumed run's optimizer state)
    keeps the cache valid, while any change to a weight or buffer invalidates it.
    """
    h = hashlib.sha256()
    for name, t in sorted(module.state_dict().items()):
        t = t.detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}\0".encode())
        # bfloat16 has no numpy dtype: hash the raw bytes through a same-size integer view.
        raw = t.view(torch.int16) if t.dtype == torch.bfloat16 else t
        h.update(raw.numpy().tobytes())
    h.update(json.dumps(dict(face_cfg or {}), sort_keys=True, default=str).encode())
    return h.hexdigest()


class _Writable:
    """Shared by the caches: turn the cache off, with one warning, the first time a write fails."""

    directory: Path | None
    what = "cache"

    def __init__(self, directory: str | os.PathLike[str] | None, warn: Callable[[str], None] | None) -> None:
        self.directory = Path(directory) if directory is not None else None
        self.warn = warn or warn_stderr
        self.disabled_reason: str | None = None

    def _disable(self, error: OSError) -> None:
        if self.directory is None:
            return
        self.disabled_reason = f"{self.directory} is not writable ({error.strerror or error})"
        self.warn(f"{self.what} {self.disabled_reason}: {self.what} disabled for this run")
        self.directory = None


class EmbeddingCache(_Writable):
    """Arrays keyed by what produced them; ``directory=None`` disables caching (every ``get`` misses).

    ``warn`` receives the one message printed when the folder turns out not to be writable (default:
    a ``warning:`` line on stderr); the cache is then disabled, never an error.
    """

    what = "embedding cache"

    def __init__(
        self, directory: str | os.PathLike[str] | None, warn: Callable[[str], None] | None = None
    ) -> None:
        super().__init__(directory, warn)
        self.hits = 0
        self.misses = 0

    @staticmethod
    def key(parts: Mapping[str, Any]) -> str:
        """Hex key of ``parts`` (JSON with sorted keys, so argument order does not matter)."""
        text = json.dumps(dict(parts), sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:40]

    def get(self, parts: Mapping[str, Any]) -> np.ndarray | None:
        """The cached array for ``parts`` or None."""
        if self.directory is None:
            self.misses += 1
            return None
        f = self.directory / f"{self.key(parts)}.npy"
        if not f.is_file():
            self.misses += 1
            return None
        try:
            arr = np.load(f, allow_pickle=False)
        except (OSError, ValueError):
            # A damaged entry is recomputed, never trusted.
            self.misses += 1
            return None
        self.hits += 1
        return arr

    def info(self, parts: Mapping[str, Any]) -> dict[str, Any]:
        """The JSON side file of an entry (``parts``, ``shape`` and the ``extra`` given to :meth:`put`)."""
        if self.directory is None:
            return {}
        f = self.directory / f"{self.key(parts)}.json"
        try:
            return dict(json.loads(f.read_text()))
        except (OSError, ValueError, TypeError):
            return {}

    def put(
        self, parts: Mapping[str, Any], array: np.ndarray, extra: Mapping[str, Any] | None = None
    ) -> Path | None:
        """Store ``array`` for ``parts`` atomically; returns the file (None when disabled or unwritable)."""
        if self.directory is None:
            return None
        key = self.key(parts)
        info = {"parts": dict(parts), "shape": list(array.shape), "extra": dict(extra or {})}
        text = json.dumps(info, indent=1, sort_keys=True, default=str)
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            # The side file first: an entry whose .npy exists always has its description.
            _atomic_bytes(self.directory / f"{key}.json", text.encode())
            return _atomic_npy(self.directory / f"{key}.npy", array)
        except OSError as e:
            self._disable(e)
            return None


def _atomic_write(target: Path, write: Callable[[Any], Any]) -> Path:
    """``write(fh)`` into a temporary file beside ``target``, then rename it over ``target``.

    A reader sees a whole entry or none. No fsync: a cache entry lost in a power cut is recomputed.
    A failed write names ``target`` (numpy's short write has no errno; a full disk says so).
    """
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with naming_errors(target), os.fdopen(fd, "wb") as fh:
            write(fh)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target


def _atomic_bytes(target: Path, data: bytes) -> Path:
    return _atomic_write(target, lambda fh: fh.write(data))


def _atomic_npy(target: Path, array: np.ndarray) -> Path:
    return _atomic_write(target, lambda fh: np.save(fh, np.ascontiguousarray(array), allow_pickle=False))


class CropCache(_Writable):
    """Per-image entries of named arrays (``.npz``, read without pickle) under ``<dir>/<k[:2]>/<k>.npz``.

    The crop loader (:mod:`faceforge.eval.crops`) keys an entry by the image file (absolute path, size,
    modification time), the detector (:func:`faceforge.align.choose.detector_identity`), the face
    selection rule, the template and the crop size, and stores the crop, the landmarks and the image
    size. ``directory=None`` disables it.
    """

    what = "crop cache"

    def __init__(
        self, directory: str | os.PathLike[str] | None, warn: Callable[[str], None] | None = None
    ) -> None:
        super().__init__(directory, warn)
        self.hits = 0
        self.misses = 0
        self.writes = 0

    @staticmethod
    def key(parts: Mapping[str, Any]) -> str:
        """Hex key of ``parts`` (as :meth:`EmbeddingCache.key`)."""
        return EmbeddingCache.key(parts)

    def _file(self, key: str) -> Path:
        assert self.directory is not None
        return self.directory / key[:2] / f"{key}.npz"

    def get(self, key: str) -> dict[str, np.ndarray] | None:
        """The arrays stored under ``key`` or None (missing, damaged or disabled)."""
        if self.directory is None:
            self.misses += 1
            return None
        f = self._file(key)
        try:
            with np.load(f, allow_pickle=False) as z:
                out = {k: z[k] for k in z.files}
        except (OSError, ValueError, KeyError, EOFError):
            # Missing or damaged (e.g. a truncated file from another tool): recomputed, never trusted.
            self.misses += 1
            return None
        self.hits += 1
        return out

    def put(self, key: str, arrays: Mapping[str, np.ndarray]) -> Path | None:
        """Store ``arrays`` under ``key`` atomically; None when disabled or the folder is unwritable."""
        if self.directory is None:
            return None
        target = self._file(key)
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            _atomic_write(target, lambda fh: np.savez(fh, **{k: np.asarray(v) for k, v in arrays.items()}))
        except OSError as e:
            self._disable(e)
            return None
        self.writes += 1
        return target
