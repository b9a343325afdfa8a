"""P x K balanced batch sampler (P identities x K images each), DDP-rank aware: :class:`PKBatchSampler`.
Batches depend only on ``(seed, epoch)`` (call :meth:`PKBatchSampler.set_epoch` each epoch) and rank
``r`` of ``world_size`` takes batches ``r, r + world_size, ...``, so ranks never get the same batch. Use
it as ``DataLoader(ds, batch_sampler=PKBatchSampler(ds.labels, ...))``. Details: docs/data.md, "P×K
sampler".
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
from torch.utils.data import Sampler

from faceforge.errors import FaceforgeError

__all__ = ["PKBatchSampler"]


class PKBatchSampler(Sampler[list[int]]):
    """Yield lists of ``P*K`` dataset indices (class-major: K indices of class 1, then class 2, ...).

    Args:
        labels: class label of every dataset index.
        p: classes per batch (``None``: all classes).
        k: samples per class.
        rank, world_size: this process's DDP rank and the number of ranks.
        seed: base seed (the same on every rank).
        num_batches: batches per epoch over all ranks; default ``ceil(len(labels) / (p * k))``, rounded
            down to a multiple of ``world_size`` (at least ``world_size``).
    """

    def __init__(
        self,
        labels: Sequence[int] | np.ndarray,
        p: int | None = None,
        k: int = 4,
        *,
        rank: int = 0,
        world_size: int = 1,
        seed: int = 0,
        num_batches: int | None = None,
    ) -> None:
        lab = np.asarray(labels)
        if lab.ndim != 1 or len(lab) == 0:
            raise FaceforgeError(
                f"PKBatchSampler: labels must be a non-empty 1-D sequence, got shape {lab.shape}"
            )
        classes, inverse = np.unique(lab, return_inverse=True)
        self.classes = classes
        self.pools = [np.flatnonzero(inverse == c) for c in range(len(classes))]
        n_cls = len(classes)
        if p is None:
            p = n_cls
        if not 1 <= p <= n_cls:
            raise FaceforgeError(
                f"PKBatchSampler: p={p} must be between 1 and the number of classes ({n_cls})"
            )
        if k < 1:
            raise FaceforgeError(f"PKBatchSampler: k={k} must be >= 1")
        if world_size < 1 or not 0 <= rank < world_size:
            raise FaceforgeError(f"PKBatchSampler: rank={rank} must be in [0, world_size={world_size})")
        self.p, self.k, self.rank, self.world_size, self.seed = p, k, rank, world_size, seed
        if num_batches is None:
            num_batches = -(-len(lab) // (p * k))
            num_batches = max(world_size, num_batches - num_batches % world_size)
        if num_batches < world_size:
            raise FaceforgeError(
                f"PKBatchSampler: num_batches={num_batches} must be >= world_size={world_size}"
            )
        self.num_batches = num_batches
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Choose the epoch; batches are a pure function of ``(seed, epoch)``."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(range(self.rank, self.num_batches, self.world_size))

    def global_batches(self) -> list[list[int]]:
        """Every rank's batches of this epoch, in order (rank ``r`` gets ``[r::world_size]``)."""
        rng = np.random.default_rng([self.seed, self.epoch])
        n_cls = len(self.pools)
        pools = [rng.permutation(pool) for pool in self.pools]
        pos = [0] * n_cls
        stream: list[int] = []
        batches: list[list[int]] = []
        for _ in range(self.num_batches):
            chosen: list[int] = []
            deferred: list[int] = []
            while len(chosen) < self.p:
                if not stream:
                    stream = rng.permutation(n_cls).tolist()
                c = stream.pop()
                if c in chosen:
                    deferred.append(c)
                else:
                    chosen.append(c)
            stream.extend(deferred)
            batch: list[int] = []
            for c in chosen:
                pool = pools[c]
                if len(pool) < self.k:
                    batch.extend(pool.tolist())
                    batch.extend(rng.choice(pool, self.k - len(pool), replace=True).tolist())
                    continue
                if pos[c] + self.k > len(pool):
                    pools[c] = pool = rng.permutation(pool)
                    pos[c] = 0
                batch.extend(pool[pos[c] : pos[c] + self.k].tolist())
                pos[c] += self.k
            batches.append(batch)
        return batches

    def __iter__(self) -> Iterator[list[int]]:
        yield from self.global_batches()[self.rank :: self.world_size]
