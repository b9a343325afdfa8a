"""Embedding cache: re-evaluating a model with other metrics, modes or FARs does not re-embed anything.

An entry is one ``float32 [N, E]`` array stored as ``<dir>/<key>.npy`` (read with
``allow_pickle=False``) plus ``<key>.json`` saying what it holds. The key is the SHA-256 of a JSON
object of everything the embeddings depend on: the model fingerprint (:func:`model_fingerprint`),
the data set's identity (file hashes or a listing of the images with sizes and modification times),
the flip-fusion mode, the input size, colour order and, where relevant, the degradation. Change
any of them and the key changes; nothing is ever invalidated in place. Files are written to a
temporary name and moved into place (``os.replace``) so an interrupted run leaves no partial entry.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from faceforge.errors import FaceforgeError

__all__ = ["EmbeddingCache", "default_cache_dir", "file_sha256", "model_fingerprint"]


def file_sha256(path: str | os.PathLike[str]) -> str:
    """SHA-256 of a file's bytes (:func:`faceforge.align.store.sha256_file`), memoised per
    (path, size, mtime) within the process so a set read twice is hashed once."""
    from faceforge.align.store import _sha_cached

    p = Path(path)
    try:
        st = p.stat()
    except OSError as e:
        raise FaceforgeError(f"cannot read {p}: {e}") from None
    return _sha_cached(str(p.resolve()), st.st_size, st.st_mtime_ns)


def default_cache_dir() -> Path:
    """``$FACEFORGE_HOME/cache/embeddings`` (default ``~/.cache/faceforge/cache/embeddings``)."""
    from faceforge.align.store import home

    return home() / "cache" / "embeddings"


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


class EmbeddingCache:
    """Arrays keyed by what produced them; ``directory=None`` disables caching (every ``get`` misses)."""

    def __init__(self, directory: str | os.PathLike[str] | None) -> None:
        self.directory = Path(directory) if directory is not None else None
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
        """Store ``array`` for ``parts`` atomically; returns the file (None when disabled)."""
        if self.directory is None:
            return None
        self.directory.mkdir(parents=True, exist_ok=True)
        key = self.key(parts)
        target = self.directory / f"{key}.npy"
        fd, tmp = tempfile.mkstemp(prefix=f".{key}.", suffix=".tmp", dir=self.directory)
        try:
            with os.fdopen(fd, "wb") as fh:
                np.save(fh, np.ascontiguousarray(array), allow_pickle=False)
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        info = {"parts": dict(parts), "shape": list(array.shape), "extra": dict(extra or {})}
        (self.directory / f"{key}.json").write_text(json.dumps(info, indent=1, sort_keys=True, default=str))
        return target
