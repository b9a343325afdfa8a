"""Partial FC (An et al., ICCVW 2021 / CVPR 2022): model-parallel class centres with sampled negatives.
:class:`PartialFC` splits the centre matrix over the ranks (:func:`shard_range`), samples negatives per
rank, applies a margin head and computes a distributed softmax cross-entropy; its checkpoints hold the
full matrix, so a run can resume at another world size. :func:`ddp_ignore_partial_fc` keeps DDP from
averaging the shards. Details: docs/heads.md, "Partial FC".
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from faceforge.errors import FaceforgeError
from faceforge.heads.base import BaseHead, check_labels, create_head, focal_from_ce, normalized_cosine

__all__ = ["PartialFC", "ddp_ignore_partial_fc", "shard_range"]


def shard_range(num_classes: int, world_size: int, rank: int) -> tuple[int, int]:
    """``(start, count)`` of the contiguous class slice held by ``rank``."""
    base, extra = divmod(num_classes, world_size)
    return rank * base + min(rank, extra), base + (1 if rank < extra else 0)


def _dist_info(group: Any) -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(group), dist.get_world_size(group)
    return 0, 1


class _GatherWithGrad(torch.autograd.Function):
    """All-gather along dim 0; backward sums the gradient over ranks and returns this rank's rows."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, group: Any, rank: int, world: int) -> Tensor:
        ctx.group, ctx.rank, ctx.n = group, rank, x.shape[0]
        parts = [torch.empty_like(x) for _ in range(world)]
        dist.all_gather(parts, x.contiguous(), group=group)
        return torch.cat(parts, dim=0)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:
        grad = grad.contiguous().clone()
        n, r = ctx.n, ctx.rank
        if dist.get_backend(ctx.group) == "nccl":
            out = torch.empty((n, *grad.shape[1:]), dtype=grad.dtype, device=grad.device)
            dist.reduce_scatter_tensor(out, grad, group=ctx.group)
            return out, None, None, None
        dist.all_reduce(grad, group=ctx.group)
        return grad[r * n : (r + 1) * n], None, None, None


class _SumOfReplicated(torch.autograd.Function):
    """All-reduce SUM whose result feeds a computation replicated on every rank: gradient passes as is."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, group: Any) -> Tensor:
        y = x.clone()
        dist.all_reduce(y, group=group)
        return y

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:
        return grad, None


class PartialFC(nn.Module):
    """Sharded, sampled margin-softmax head. ``forward(embeddings, labels)`` returns the loss.

    Args:
        embedding_size: D.
        num_classes: C, the total number of identities (over all ranks).
        margin_head: a head name (``create_head(name, …, margin_only=True, **head_kwargs)``) or a
            head built with ``margin_only=True``. Its ``focal_gamma`` and ``reduction`` are used.
        sample_rate: fraction of each rank's classes used per step, in (0, 1]; positives are always kept.
        process_group: the group to shard over (default: the world group when initialised).
        full_checkpoint: ``state_dict()`` holds the full matrix (default) instead of the local shard.
        generator: optional RNG for the negative sampling (on the weight's device).
        **head_kwargs: ``scale``, ``margin``, schedules, ``focal_gamma``, … for the margin head.
    """

    def __init__(
        self,
        embedding_size: int,
        num_classes: int,
        *,
        margin_head: str | BaseHead = "arcface",
        sample_rate: float = 1.0,
        process_group: Any = None,
        full_checkpoint: bool = True,
        generator: torch.Generator | None = None,
        **head_kwargs: Any,
    ) -> None:
        super().__init__()
        if (
            isinstance(sample_rate, bool)
            or not isinstance(sample_rate, (int, float))
            or not 0 < sample_rate <= 1
        ):
            raise FaceforgeError(f"sample_rate must be in (0, 1], got {sample_rate!r}")
        if isinstance(margin_head, str):
            head = create_head(margin_head, embedding_size, num_classes, margin_only=True, **head_kwargs)
        else:
            if head_kwargs:
                raise FaceforgeError(f"pass head options to the head itself, got {sorted(head_kwargs)}")
            head = margin_head
            if head.weight is not None:
                raise FaceforgeError("a margin head for PartialFC must be built with margin_only=True")
        if not head.supports_partial_fc or not head.normalize:
            what = margin_head if isinstance(margin_head, str) else type(head).__name__
            raise FaceforgeError(
                f"head {what!r} cannot run inside PartialFC (it needs every row's target or its own centres)"
            )
        self.margin_head = head
        self.embedding_size = embedding_size
        self.num_classes = num_classes
        self.sample_rate = float(sample_rate)
        self.process_group = process_group
        self.full_checkpoint = full_checkpoint
        self.generator = generator
        self.rank, self.world_size = _dist_info(process_group)
        if num_classes < self.world_size:
            raise FaceforgeError(
                f"num_classes={num_classes} is smaller than the world size {self.world_size}"
            )
        self.class_start, self.num_local = shard_range(num_classes, self.world_size, self.rank)
        self.num_sample = max(1, int(self.sample_rate * self.num_local))
        self.weight = nn.Parameter(torch.empty(self.num_local, embedding_size))
        self.reset_parameters()
        #: indices (into the local shard) of the centres used by the last forward, sorted (None: all)
        self.last_index: Tensor | None = None
        self.register_state_dict_post_hook(PartialFC._state_dict_hook)
        self.register_load_state_dict_pre_hook(PartialFC._load_pre_hook)

    def reset_parameters(self) -> None:
        """N(0, 0.01²) from a generator seeded by ``torch.initial_seed() + rank`` (shards differ)."""
        g = torch.Generator(device=self.weight.device)
        g.manual_seed((torch.initial_seed() + 7919 * self.rank) % 2**63)
        with torch.no_grad():
            self.weight.normal_(0.0, 0.01, generator=g)

    def extra_repr(self) -> str:
        return (
            f"embedding_size={self.embedding_size}, num_classes={self.num_classes}, "
            f"sample_rate={self.sample_rate:g}, rank={self.rank}/{self.world_size}, "
            f"classes=[{self.class_start}, {self.class_start + self.num_local})"
        )

    def set_progress(self, epoch: float, step: int) -> None:
        """Forward to the margin head's schedules."""
        self.margin_head.set_progress(epoch, step)

    # ------------------------------------------------------------------ helpers
    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def _gather_plain(self, x: Tensor) -> Tensor:
        if not self.distributed:
            return x
        parts = [torch.empty_like(x) for _ in range(self.world_size)]
        dist.all_gather(parts, x.contiguous(), group=self.process_group)
        return torch.cat(parts, dim=0)

    def _gather_inputs(self, embeddings: Tensor, labels: Tensor | None) -> tuple[Tensor, Tensor | None]:
        if embeddings.dim() != 2 or embeddings.shape[1] != self.embedding_size:
            raise FaceforgeError(
                f"embedding size mismatch: head expects [batch, {self.embedding_size}], "
                f"got embeddings of shape {list(embeddings.shape)}"
            )
        if labels is not None:
            check_labels(labels, embeddings.shape[0], self.num_classes)
        if not self.distributed:
            return embeddings, labels
        sizes = self._gather_plain(torch.tensor([embeddings.shape[0]], device=embeddings.device))
        if bool((sizes != sizes[0]).any()):
            raise FaceforgeError(f"PartialFC needs the same batch size on every rank, got {sizes.tolist()}")
        emb = _GatherWithGrad.apply(embeddings, self.process_group, self.rank, self.world_size)
        return emb, (None if labels is None else self._gather_plain(labels))

    def _norms(self, embeddings: Tensor) -> Tensor | None:
        if not self.margin_head.needs_norms:
            return None
        return self._gather_plain(embeddings.detach().float().norm(dim=1, keepdim=True))

    def _local_labels(self, labels: Tensor) -> Tensor:
        inside = (labels >= self.class_start) & (labels < self.class_start + self.num_local)
        return torch.where(inside, labels - self.class_start, torch.full_like(labels, -1))

    def _sample(self, local: Tensor) -> tuple[Tensor, Tensor]:
        """Centre indices to use (sorted) and the labels re-indexed into them."""
        positive = torch.unique(local[local >= 0])  # sorted
        if self.num_sample <= positive.numel():
            index = positive
        else:
            score = torch.rand(self.num_local, device=local.device, generator=self.generator)
            score[positive] = 2.0
            index = torch.topk(score, k=self.num_sample).indices.sort().values
        remapped = torch.searchsorted(index, local.clamp_min(0))
        return index, torch.where(local >= 0, remapped, local)

    # ------------------------------------------------------------------ forward
    def forward(self, embeddings: Tensor, labels: Tensor) -> Tensor:
        """The loss (same value on every rank) for this rank's raw ``embeddings`` [b, D] and ``labels`` [b].

        With reduction ``"mean"`` it is the mean over the **global** batch; ``"none"`` gives ``[B_global]``.
        """
        emb, labels_all = self._gather_inputs(embeddings, labels)
        assert labels_all is not None
        norms = self._norms(embeddings)
        with torch.autocast(device_type=embeddings.device.type, enabled=False):
            local = self._local_labels(labels_all)
            if self.num_sample < self.num_local:
                index, local = self._sample(local)
                weight = self.weight[index]
            else:
                index, weight = None, self.weight
            self.last_index = index
            cos = normalized_cosine(emb, weight)
            logits = self.margin_head.apply_margin(cos, local, norms)
            ce = self._distributed_ce(logits, local)
            per_sample = focal_from_ce(ce, self.margin_head.focal_gamma)
            red = self.margin_head.reduction
            return per_sample.mean() if red == "mean" else per_sample.sum() if red == "sum" else per_sample

    loss = forward

    def _distributed_ce(self, logits: Tensor, local: Tensor) -> Tensor:
        """Per-sample cross-entropy over the classes of all ranks."""
        valid = local >= 0
        row_max = logits.detach().amax(dim=1)
        if self.distributed:
            dist.all_reduce(row_max, op=dist.ReduceOp.MAX, group=self.process_group)
        sum_exp = torch.exp(logits - row_max.unsqueeze(1)).sum(dim=1)
        target = torch.where(valid, logits.gather(1, local.clamp_min(0).unsqueeze(1)).squeeze(1), 0.0)
        if self.distributed:
            sum_exp = _SumOfReplicated.apply(sum_exp, self.process_group)
            target = _SumOfReplicated.apply(target, self.process_group)
        return torch.log(sum_exp) + row_max - target

    @torch.no_grad()
    def logits(self, embeddings: Tensor, labels: Tensor | None = None) -> Tensor:
        """Full margin logits ``[B_global, C]`` over all classes (no sampling, no gradient; collective).

        Without ``labels`` no margin is applied (``s · cos``).
        """
        emb, labels_all = self._gather_inputs(embeddings, labels)
        with torch.autocast(device_type=embeddings.device.type, enabled=False):
            cos = normalized_cosine(emb, self.weight)
            if labels_all is None:
                local = torch.full((cos.shape[0],), -1, dtype=torch.long, device=cos.device)
            else:
                local = self._local_labels(labels_all)
            out = self.margin_head.apply_margin(cos, local, self._norms(embeddings))
        if not self.distributed:
            return out
        width = shard_range(self.num_classes, self.world_size, 0)[1]
        padded = F.pad(out, (0, width - out.shape[1]))
        parts = [torch.empty_like(padded) for _ in range(self.world_size)]
        dist.all_gather(parts, padded.contiguous(), group=self.process_group)
        cols = [p[:, : shard_range(self.num_classes, self.world_size, r)[1]] for r, p in enumerate(parts)]
        return torch.cat(cols, dim=1)

    # ------------------------------------------------------------------ checkpoints
    @torch.no_grad()
    def gather_full_weight(self) -> Tensor:
        """The full ``[C, D]`` centre matrix on CPU (collective: every rank must call it)."""
        return self.gather_full(self.weight.detach())

    @torch.no_grad()
    def gather_full(self, local: Tensor) -> Tensor:
        """Concatenate every rank's ``[n_r, ...]`` shard-shaped tensor (e.g. an optimizer state) on CPU.

        Collective: every rank must call it with its tensor for its own shard.
        """
        if not self.distributed:
            return local.detach().cpu().clone()
        full = torch.empty(self.num_classes, *local.shape[1:], dtype=local.dtype)
        for r in range(self.world_size):
            start, count = shard_range(self.num_classes, self.world_size, r)
            buf = local.detach().contiguous() if r == self.rank else local.new_empty(count, *local.shape[1:])
            src = r if self.process_group is None else dist.get_global_rank(self.process_group, r)
            dist.broadcast(buf, src=src, group=self.process_group)
            full[start : start + count] = buf.cpu()
        return full

    def local_rows(self, full: Tensor) -> Tensor:
        """This rank's slice of a full ``[C, ...]`` tensor (the inverse of :meth:`gather_full`)."""
        return full[self.class_start : self.class_start + self.num_local]

    @staticmethod
    def _state_dict_hook(
        module: PartialFC, state_dict: dict[str, Any], prefix: str, local_metadata: Any
    ) -> None:
        if module.full_checkpoint and module.distributed:
            state_dict[prefix + "weight"] = module.gather_full_weight()

    @staticmethod
    def _load_pre_hook(self: PartialFC, state_dict: dict[str, Any], prefix: str, *args: Any) -> None:
        key = prefix + "weight"
        if key not in state_dict:
            return
        w = state_dict[key]
        if w.dim() != 2 or w.shape[1] != self.embedding_size:
            raise FaceforgeError(
                f"checkpoint {key!r} has shape {list(w.shape)}, "
                f"expected [{self.num_classes}, {self.embedding_size}]"
            )
        if w.shape[0] == self.num_classes:
            state_dict[key] = w[self.class_start : self.class_start + self.num_local]
        elif w.shape[0] != self.num_local:
            raise FaceforgeError(
                f"checkpoint {key!r} has {w.shape[0]} class centres, expected {self.num_classes} "
                f"(full) or {self.num_local} (this rank's shard)"
            )

    def full_state_dict(self) -> dict[str, Tensor]:
        """State dict with the full ``[C, D]`` matrix whatever ``full_checkpoint`` says (collective)."""
        sd = self.state_dict()
        if not (self.full_checkpoint and self.distributed):
            sd["weight"] = self.gather_full_weight()
        return sd

    def load_full_state_dict(self, state_dict: Mapping[str, Any], strict: bool = True) -> Any:
        """Load a state dict holding the full matrix (saved at any world size); keeps this rank's slice."""
        return self.load_state_dict(dict(state_dict), strict=strict)


def ddp_ignore_partial_fc(model: nn.Module) -> list[str]:
    """Tell DDP (before wrapping ``model``) to leave every :class:`PartialFC` inside it alone.

    Each rank's shard is different, so its gradient must not be averaged over ranks. Returns the
    ignored parameter and buffer names. Uses DDP's ``_set_params_and_buffers_to_ignore_for_model``.
    """
    names = [
        f"{prefix}.{name}" if prefix else name
        for prefix, mod in model.named_modules()
        if isinstance(mod, PartialFC)
        for name, _ in [*mod.named_parameters(), *mod.named_buffers()]
    ]
    from torch.nn.parallel import DistributedDataParallel

    DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(model, names)
    return names
