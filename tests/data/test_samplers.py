"""Tests for faceforge.data.samplers.PKBatchSampler."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from faceforge.data.samplers import PKBatchSampler
from faceforge.errors import FaceforgeError


def _labels() -> np.ndarray:
    rng = np.random.default_rng(0)
    return np.repeat(np.arange(20), rng.integers(4, 12, 20))


def test_batches_are_p_by_k() -> None:
    labels = _labels()
    s = PKBatchSampler(labels, p=5, k=4, seed=1)
    batches = list(s)
    assert len(batches) == len(s) > 0
    for b in batches:
        assert len(b) == 20
        cls = Counter(labels[b].tolist())
        assert len(cls) == 5 and set(cls.values()) == {4}
        assert len(set(b)) == 20  # no repeats: every class has >= k samples
    # classes are used evenly
    use = Counter(c for b in batches for c in set(labels[b].tolist()))
    assert max(use.values()) - min(use.values()) <= 1


def test_all_classes_when_p_unset_and_small_classes() -> None:
    labels = np.array([0, 0, 0, 1, 2, 2])
    b = next(iter(PKBatchSampler(labels, k=3)))
    assert sorted(Counter(labels[b].tolist()).items()) == [(0, 3), (1, 3), (2, 3)]


def test_epoch_determinism() -> None:
    labels = _labels()
    a = PKBatchSampler(labels, p=4, k=2, seed=5)
    b = PKBatchSampler(labels, p=4, k=2, seed=5)
    assert list(a) == list(b)
    a.set_epoch(1)
    e1 = list(a)
    assert e1 != list(b)
    b.set_epoch(1)
    assert e1 == list(b)


def test_ranks_get_disjoint_batches() -> None:
    labels = np.repeat(np.arange(16), 20)
    world = 3
    samplers = [PKBatchSampler(labels, p=4, k=2, rank=r, world_size=world, seed=2) for r in range(world)]
    for s in samplers:
        s.set_epoch(7)
    per_rank = [list(s) for s in samplers]
    assert len({len(x) for x in per_rank}) == 1  # equal length: no DDP hang
    assert [b for r in range(world) for b in per_rank[r]] != []
    flat = [set(b) for r in per_rank for b in r]
    seen: set[int] = set()
    for b in flat:  # pools are drawn without replacement: no index in two batches this epoch
        assert not (seen & b)
        seen |= b
    glob = samplers[0].global_batches()
    for r in range(world):
        assert per_rank[r] == glob[r::world]


def test_bad_args() -> None:
    with pytest.raises(FaceforgeError, match=r"p=9 must be between 1 and the number of classes \(3\)"):
        PKBatchSampler([0, 1, 2], p=9)
    with pytest.raises(FaceforgeError, match="rank=2"):
        PKBatchSampler([0, 1], rank=2, world_size=2)
