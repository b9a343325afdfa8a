"""Base class, registry and shared maths for classification / margin heads. :class:`BaseHead` owns the
class-centre matrix ``weight``, the float32 normalised cosine, schedules, the focal wrapper and the loss
reduction; a margin head only overrides :meth:`BaseHead.apply_margin` (labels ``-1``: no target column in
this block, as in Partial FC). :func:`create_head` and :func:`list_heads` use the registry. Details:
docs/heads.md, "Design".
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from faceforge.errors import FaceforgeError
from faceforge.heads.schedules import Schedule, build_schedule
from faceforge.registry import Registry, check_options

__all__ = [
    "HEADS",
    "BaseHead",
    "create_head",
    "focal_from_ce",
    "list_heads",
    "normalized_cosine",
    "replace_target",
    "safe_acos",
    "safe_sqrt",
]

HEADS: Registry[BaseHead] = Registry("head")

REDUCTIONS = ("mean", "sum", "none")


def compute_dtype(t: Tensor) -> torch.dtype:
    """float64 stays float64 (for gradcheck); everything else is computed in float32."""
    return torch.float64 if t.dtype == torch.float64 else torch.float32


def normalized_cosine(embeddings: Tensor, weight: Tensor) -> Tensor:
    """``normalize(embeddings) @ normalize(weight).T`` in float32 (float64 if given), clamped to [-1, 1].

    Autocast is switched off inside, so bf16/fp16 inputs still give a float32 cosine and rounding
    can never push a value past ±1.
    """
    dtype = compute_dtype(embeddings)
    with torch.autocast(device_type=embeddings.device.type, enabled=False):
        e = F.normalize(embeddings.to(dtype), dim=1)
        w = weight.to(dtype)
        # divide the [B, C] product by the centre norms instead of materialising a normalised copy
        # of the [C, D] matrix (less memory and fewer passes over it, forward and backward)
        inv_norm = torch.linalg.vector_norm(w, dim=1).clamp_min(1e-12).reciprocal()
        return ((e @ w.t()) * inv_norm).clamp(-1.0, 1.0)


def safe_sqrt(x: Tensor) -> Tensor:
    """``sqrt(x)`` for ``x >= 0`` with 0 (and a zero gradient, never NaN/inf) where ``x <= 0``."""
    pos = x > 0
    return torch.where(pos, torch.sqrt(torch.where(pos, x, torch.ones_like(x))), torch.zeros_like(x))


def safe_acos(x: Tensor) -> Tensor:
    """``arccos(x)`` with exact values at ±1 but a zero (finite) gradient there instead of ∞."""
    inside = x.abs() < 1
    return torch.where(
        inside, torch.acos(torch.where(inside, x, torch.zeros_like(x))), torch.acos(x.detach().clamp(-1, 1))
    )


def replace_target(cosine: Tensor, labels: Tensor, fn: Callable[[Tensor], Tensor]) -> Tensor:
    """Return ``cosine`` with each row's target entry ``t`` replaced by ``fn(t)`` (out of place).

    ``fn`` receives the target column ``[B, 1]``. Rows with label ``-1`` keep their values.
    Differentiable with respect to ``cosine`` and anything ``fn`` closes over.
    """
    valid = (labels >= 0).unsqueeze(1)
    idx = labels.clamp_min(0).unsqueeze(1).long()
    target = cosine.gather(1, idx)
    new = torch.where(valid, fn(target), target)
    return cosine.scatter(1, idx, new)


def focal_from_ce(ce: Tensor, gamma: float) -> Tensor:
    """Focal loss (Lin et al., ICCV 2017) from per-sample cross-entropy: ``(1 - p_t)^γ · CE``.

    ``p_t = exp(-CE)``; ``1 - p_t`` is computed with ``expm1`` and floored at 1e-30 so the power has
    a finite gradient for every γ >= 0.
    """
    if gamma == 0:
        return ce
    one_minus_p = (-torch.expm1(-ce)).clamp_min(1e-30)
    return one_minus_p**gamma * ce


def _reduce(per_sample: Tensor, reduction: str) -> Tensor:
    if reduction == "mean":
        return per_sample.mean()
    if reduction == "sum":
        return per_sample.sum()
    return per_sample


class BaseHead(nn.Module):
    """A classification head: class centres + (margin) logits + loss.

    Args:
        embedding_size: D, the embedding width.
        num_classes: C, number of identities.
        scale: s, logits are ``s · (margin-adjusted cosine)``.
        margin: m, the head's margin (meaning depends on the head).
        focal_gamma: if set (> 0), :meth:`loss` is the focal loss with this γ instead of cross-entropy.
        margin_schedule, scale_schedule: optional schedules (see :mod:`faceforge.heads.schedules`),
            evaluated by :meth:`set_progress`. The configured ``margin``/``scale`` are the "base" values.
        reduction: ``"mean"`` (default), ``"sum"`` or ``"none"`` (per-sample losses).
        margin_only: build no ``weight`` (Partial FC owns the sharded centres and calls only
            :meth:`apply_margin`).
    """

    #: the cosine is normalised (False only for plain softmax)
    normalize: ClassVar[bool] = True
    #: ``apply_margin`` needs the embedding norms (AdaFace)
    needs_norms: ClassVar[bool] = False
    #: ``apply_margin`` works on a slice of classes with ``-1`` labels (Partial FC)
    supports_partial_fc: ClassVar[bool] = True

    weight: nn.Parameter | None

    def __init__(
        self,
        embedding_size: int,
        num_classes: int,
        *,
        scale: float = 64.0,
        margin: float = 0.0,
        focal_gamma: float | None = None,
        margin_schedule: Schedule | Mapping[str, Any] | None = None,
        scale_schedule: Schedule | Mapping[str, Any] | None = None,
        reduction: str = "mean",
        margin_only: bool = False,
    ) -> None:
        super().__init__()
        for what, v in (("embedding_size", embedding_size), ("num_classes", num_classes)):
            if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
                raise FaceforgeError(f"{what} must be a positive integer, got {v!r}")
        if not scale > 0:
            raise FaceforgeError(f"scale must be > 0, got {scale!r}")
        if focal_gamma is not None and not focal_gamma >= 0:
            raise FaceforgeError(f"focal_gamma must be >= 0, got {focal_gamma!r}")
        if reduction not in REDUCTIONS:
            raise FaceforgeError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
        self.embedding_size = embedding_size
        self.num_classes = num_classes
        self.base_scale = float(scale)
        self.base_margin = float(margin)
        self.scale = float(scale)
        self.margin = float(margin)
        self.focal_gamma = float(focal_gamma or 0.0)
        self.reduction = reduction
        self.margin_schedule = build_schedule(margin_schedule, "margin_schedule")
        self.scale_schedule = build_schedule(scale_schedule, "scale_schedule")
        if margin_only:
            self.register_parameter("weight", None)
        else:
            self.weight = nn.Parameter(torch.empty(self.num_centres, embedding_size))
            self.reset_parameters()

    @property
    def num_centres(self) -> int:
        """Rows of ``weight`` (``num_classes``; sub-center ArcFace has ``num_classes · k``)."""
        return self.num_classes

    def reset_parameters(self) -> None:
        """Initialise the class centres with N(0, 0.01²)."""
        if self.weight is not None:
            nn.init.normal_(self.weight, std=0.01)

    def extra_repr(self) -> str:
        return (
            f"embedding_size={self.embedding_size}, num_classes={self.num_classes}, "
            f"scale={self.scale:g}, margin={self.margin:g}, focal_gamma={self.focal_gamma:g}"
        )

    # ------------------------------------------------------------------ schedules
    def set_progress(self, epoch: float, step: int) -> None:
        """Update the scheduled margin / scale for training position ``epoch`` (float) / ``step``.

        A no-op for quantities without a schedule. Call it before each step (or each epoch).
        """
        if self.margin_schedule is not None:
            self.margin = float(self.margin_schedule.value_at(self.base_margin, epoch, step))
        if self.scale_schedule is not None:
            self.scale = float(self.scale_schedule.value_at(self.base_scale, epoch, step))

    # ------------------------------------------------------------------ checks
    def check_inputs(self, embeddings: Tensor, labels: Tensor | None) -> None:
        """Raise :class:`FaceforgeError` for a wrong embedding shape or out-of-range labels."""
        if embeddings.dim() != 2 or embeddings.shape[1] != self.embedding_size:
            raise FaceforgeError(
                f"embedding size mismatch: head expects [batch, {self.embedding_size}], "
                f"got embeddings of shape {list(embeddings.shape)}"
            )
        if labels is None:
            return
        check_labels(labels, embeddings.shape[0], self.num_classes)

    # ------------------------------------------------------------------ maths
    def cosine(self, embeddings: Tensor) -> Tensor:
        """``[B, C]`` cosine between embeddings and class centres (float32, clamped to [-1, 1])."""
        if self.weight is None:
            raise FaceforgeError("this head was built with margin_only=True and has no class centres")
        return normalized_cosine(embeddings, self.weight)

    def apply_margin(self, cosine: Tensor, labels: Tensor, norms: Tensor | None = None) -> Tensor:
        """Map cosines ``[B, C]`` to logits (already multiplied by the scale). Base: ``s · cos``."""
        return cosine * self.scale

    def forward(self, embeddings: Tensor, labels: Tensor) -> Tensor:
        """Logits ``[B, C]`` in float32 for raw (un-normalised) ``embeddings`` ``[B, D]``."""
        return self.logits_and_cosine(embeddings, labels)[0]

    def logits_and_cosine(self, embeddings: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
        """``(logits, cosine)``, both ``[B, C]`` float32: the margin logits and the plain cosine they
        come from (what a nearest-centre classifier scores, e.g. for a training accuracy)."""
        self.check_inputs(embeddings, labels)
        with torch.autocast(device_type=embeddings.device.type, enabled=False):
            cos = self.cosine(embeddings)
            norms = None
            if self.needs_norms:
                norms = embeddings.detach().to(cos.dtype).norm(dim=1, keepdim=True)
            return self.apply_margin(cos, labels, norms), cos

    def loss_from_logits(self, logits: Tensor, labels: Tensor, weight: Tensor | None = None) -> Tensor:
        """Cross-entropy (or focal, if ``focal_gamma``) of ``logits`` with the head's reduction.

        ``weight`` ``[B]`` scales each sample's loss before the reduction (identity mixup's soft
        label ``phi·a + (1 − phi)·b`` is ``loss(a, phi) + loss(b, 1 − phi)``; SynFace, ICCV 2021).
        """
        with torch.autocast(device_type=logits.device.type, enabled=False):
            ce = F.cross_entropy(logits.to(compute_dtype(logits)), labels, reduction="none")
            per = focal_from_ce(ce, self.focal_gamma)
            return _reduce(per if weight is None else per * weight.to(per.dtype), self.reduction)

    def loss(self, embeddings: Tensor, labels: Tensor) -> Tensor:
        """Training loss for raw ``embeddings`` ``[B, D]`` and integer ``labels`` ``[B]``."""
        return self.loss_from_logits(self(embeddings, labels), labels)


def check_labels(labels: Tensor, batch: int, num_classes: int) -> None:
    """Labels must be a 1-D integer tensor of length ``batch`` with values in ``[0, num_classes)``."""
    if labels.dim() != 1 or labels.shape[0] != batch:
        raise FaceforgeError(f"labels must have shape [{batch}], got {list(labels.shape)}")
    if labels.dtype.is_floating_point or labels.dtype == torch.bool or labels.is_complex():
        raise FaceforgeError(f"labels must be integer class indices, got dtype {labels.dtype}")
    if labels.numel() == 0:
        return
    lo, hi = int(labels.min()), int(labels.max())
    if lo < 0 or hi >= num_classes:
        bad = lo if lo < 0 else hi
        raise FaceforgeError(f"label {bad} out of range: labels must be in [0, {num_classes - 1}]")


def create_head(name: str, embedding_size: int, num_classes: int, **kwargs: Any) -> BaseHead:
    """Build the head registered as ``name`` (see :func:`list_heads`).

    Unknown names and keyword arguments raise :class:`FaceforgeError`.
    """
    factory = HEADS.get(name)
    check_options(f"head {name!r}", kwargs, sorted(head_options(factory)))
    return factory(embedding_size, num_classes, **kwargs)


def head_options(factory: Callable[..., Any]) -> set[str]:
    """Keyword options a head class accepts (following ``**kwargs`` up its base classes)."""
    classes = factory.__mro__ if isinstance(factory, type) else (factory,)
    known: set[str] = set()
    for cls in classes:
        init = cls.__init__ if isinstance(cls, type) else cls
        if isinstance(cls, type) and "__init__" not in vars(cls):
            continue
        params = inspect.signature(init).parameters.values()
        known |= {p.name for p in params if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)}
        if not any(p.kind is p.VAR_KEYWORD for p in params) or cls is BaseHead:
            break
    return known - {"self", "embedding_size", "num_classes"}


def list_heads() -> list[str]:
    """Sorted names of the registered heads."""
    return HEADS.names()
