"""A cache folder that cannot be written (read-only, full, not a folder) degrades to "cache disabled" with
one warning instead of failing after the work is done."""

from __future__ import annotations

import errno

import numpy as np

from faceforge.eval.cache import EmbeddingCache


def test_unwritable_cache_folder_disables_the_cache(tmp_path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    warnings: list[str] = []
    cache = EmbeddingCache(blocker / "cache", warn=warnings.append)  # mkdir fails: a file is in the way
    assert cache.put({"k": 1}, np.ones(3)) is None
    assert cache.put({"k": 2}, np.ones(3)) is None  # no second warning
    assert len(warnings) == 1 and "disabled" in warnings[0] and "\n" not in warnings[0]
    assert cache.get({"k": 1}) is None


def test_full_disk_disables_the_cache(tmp_path, monkeypatch) -> None:
    import faceforge.eval.cache as cache_mod

    def full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(cache_mod, "_atomic_bytes", full)
    warnings: list[str] = []
    cache = EmbeddingCache(tmp_path / "c", warn=warnings.append)
    assert cache.put({"k": 1}, np.ones(3)) is None
    assert len(warnings) == 1 and "No space left" in warnings[0] and "disabled" in warnings[0]
