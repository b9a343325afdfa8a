"""Inference rewrites of a backbone that keep its function: eval-mode BatchNorm folded into the
convolution that feeds it (in eval mode BatchNorm is a fixed per-channel affine map, Ioffe & Szegedy
2015, so ``bn(conv(x)) == conv'(x)``), and NHWC memory (``channels_last``, which oneDNN's CPU
convolutions take natively). Both act on a copy, and each is kept only when the copy's embeddings
match the original's on a seeded probe batch; docs/performance.md has the speed-ups.
"""

from __future__ import annotations

import copy
from collections import Counter
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

__all__ = ["InferenceRewrite", "fold_batchnorm", "optimize_for_inference"]

#: a rewrite is kept when every probe embedding is within this relative L2 distance of the
#: original's; float32 reassociation alone gives ~1e-6, a wrong rewrite gives O(1)
MAX_REL_ERROR = 1e-4


@dataclass(frozen=True)
class InferenceRewrite:
    """What :func:`optimize_for_inference` returns: the module to run and what was done to it."""

    module: nn.Module
    folded: int  # BatchNorm layers folded into their convolution
    channels_last: bool  # the module's 4-D weights (and so its inputs) are NHWC
    max_rel_error: float  # largest ||new - original|| / ||original|| over the probe embeddings
    fact: str  # one line for ``EmbeddingModel.facts``


def _consumers(out: torch.Tensor) -> Counter:
    """How many graph edges consume each autograd node reachable from ``out``."""
    count: Counter = Counter()
    seen = set()
    stack = [out.grad_fn] if out.grad_fn is not None else []
    while stack:
        node = stack.pop()
        if node in seen:
            continue
        seen.add(node)
        for nxt, _ in node.next_functions:
            if nxt is not None:
                count[nxt] += 1
                stack.append(nxt)
    return count


def _foldable_pairs(model: nn.Module, example: torch.Tensor) -> list[tuple[nn.Conv2d, nn.BatchNorm2d]]:
    """(conv, bn) pairs where ``bn``'s input is ``conv``'s output and nothing else reads that output.

    Found by one forward pass with autograd on (the graph shows every consumer of a tensor, which
    forward hooks alone cannot); each layer must run exactly once, and only plain ``nn.Conv2d`` /
    ``nn.BatchNorm2d`` qualify (a subclass may transform its weight in ``forward``, e.g. weight
    standardisation).
    """
    calls: Counter = Counter()
    conv_out: dict[Any, nn.Conv2d] = {}  # output grad_fn -> conv
    bn_in: list[tuple[nn.BatchNorm2d, Any]] = []

    def on_conv(mod: nn.Module, _: Any, out: Any) -> None:
        calls[mod] += 1
        if isinstance(out, torch.Tensor) and out.grad_fn is not None:
            conv_out[out.grad_fn] = mod

    def on_bn(mod: nn.Module, inp: Any, _: Any) -> None:
        calls[mod] += 1
        if inp and isinstance(inp[0], torch.Tensor):
            bn_in.append((mod, inp[0].grad_fn))

    hooks = []
    for m in model.modules():
        if type(m) is nn.Conv2d and not torch.nn.utils.parametrize.is_parametrized(m):
            hooks.append(m.register_forward_hook(on_conv))
        elif type(m) is nn.BatchNorm2d and m.track_running_stats and m.running_var is not None:
            hooks.append(m.register_forward_hook(on_bn))
    params = [p for p in model.parameters()]
    flags = [p.requires_grad for p in params]
    try:
        for p in params:
            p.requires_grad_(True)
        with torch.enable_grad():
            out = model(example)
    finally:
        for h in hooks:
            h.remove()
        for p, f in zip(params, flags):
            p.requires_grad_(f)
    if not isinstance(out, torch.Tensor):
        return []
    used = _consumers(out)
    pairs = []
    for bn, src in bn_in:
        conv = conv_out.get(src)
        if conv is not None and used[src] == 1 and calls[conv] == 1 and calls[bn] == 1:
            pairs.append((conv, bn))
    return pairs


def fold_batchnorm(module: nn.Module, example: torch.Tensor) -> tuple[nn.Module, int]:
    """A copy of ``module`` (eval mode) with each foldable BatchNorm2d folded into its convolution.

    ``w' = w·γ/√(σ²+ε)`` per output channel and ``b' = (b − μ)·γ/√(σ²+ε) + β``; the BatchNorm becomes
    ``nn.Identity``. ``example`` is one input batch for the tracing forward pass.
    Returns (the copy, how many were folded).
    """
    model = copy.deepcopy(module).eval()
    pairs = _foldable_pairs(model, example)
    parents = {id(c): (parent, name) for parent in model.modules() for name, c in parent.named_children()}
    with torch.no_grad():
        for conv, bn in pairs:
            scale = (bn.weight if bn.affine else torch.ones_like(bn.running_var)) / torch.sqrt(
                bn.running_var + bn.eps
            )
            shift = bn.bias if bn.affine else torch.zeros_like(bn.running_mean)
            bias = conv.bias if conv.bias is not None else torch.zeros_like(bn.running_mean)
            conv.weight.mul_(scale.reshape(-1, *([1] * (conv.weight.dim() - 1))))
            conv.bias = nn.Parameter((bias - bn.running_mean) * scale + shift, requires_grad=False)
            parent, name = parents[id(bn)]
            setattr(parent, name, nn.Identity())
    return model, len(pairs)


def _has_layer_norm(module: nn.Module) -> bool:
    """Whether ``module`` normalises over channels itself (LayerNorm, GroupNorm, ConvNeXt-style
    ``LayerNorm2d``): such models (EdgeFace, ConvNeXt, ViT) permute to channels-last on their own, and
    NHWC memory made EdgeFace 0.86-0.99x as fast on a CPU (docs/performance.md)."""
    norms = (nn.LayerNorm, nn.GroupNorm)
    return any(isinstance(m, norms) or "LayerNorm" in type(m).__name__ for m in module.modules())


def _rel_error(new: torch.Tensor, ref: torch.Tensor) -> float:
    new, ref = new.double().flatten(1), ref.double().flatten(1)
    err = (new - ref).norm(dim=1) / ref.norm(dim=1).clamp_min(1e-300)
    return float(err.max()) if torch.isfinite(err).all() else float("inf")


def optimize_for_inference(
    module: nn.Module,
    input_size: tuple[int, int],
    *,
    channels_last: bool = True,
    max_rel_error: float = MAX_REL_ERROR,
) -> InferenceRewrite:
    """``module`` rewritten for CPU inference (BatchNorm folding, then NHWC), checked.

    NHWC is tried only for models without LayerNorm-style layers (:func:`_has_layer_norm`). The
    original is not modified. The rewrite is kept when its embedding of a seeded N(0,1) probe image
    at ``input_size`` is within ``max_rel_error`` (relative L2) of the original's; otherwise each step
    is checked alone and only a passing one is kept. A module with no 2-D convolution is returned as
    it is. Three forward passes of one image in the usual case: the reference, the folding trace and
    the check.
    """
    module = module.eval()
    if not any(isinstance(m, nn.Conv2d) for m in module.modules()):
        return InferenceRewrite(module, 0, False, 0.0, "as built: no 2-D convolutions")
    nhwc = channels_last and not _has_layer_norm(module)
    has_bn = any(type(m) is nn.BatchNorm2d for m in module.modules())
    if not nhwc and not has_bn:  # nothing to rewrite: no forward pass at all
        return InferenceRewrite(
            module, 0, False, 0.0, "as built" + ("; NCHW kept: LayerNorm model" * channels_last)
        )
    h, w = input_size
    probe = torch.randn(1, 3, int(h), int(w), generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        ref = module(probe)

    def error(m: nn.Module, nhwc: bool) -> float:
        with torch.inference_mode():
            return _rel_error(m(probe.contiguous(memory_format=torch.channels_last) if nhwc else probe), ref)

    notes: list[str] = []
    folded, n = None, 0
    try:
        if has_bn:
            folded, n = fold_batchnorm(module, probe)
    except Exception as e:  # a module that cannot be traced this way still runs as it is
        notes.append(f"no BatchNorm folding ({type(e).__name__})")
    if not n:
        folded = None
    if channels_last and not nhwc:
        notes.append("NCHW kept: LayerNorm model")
    best, err, use_fold, use_nhwc = module, 0.0, False, False
    if folded is not None or nhwc:
        # .to() converts a module in place: convert the folded copy, or a copy of the caller's
        cand = folded if folded is not None else copy.deepcopy(module)
        if nhwc:
            cand.to(memory_format=torch.channels_last)
        e = error(cand, nhwc)
        if e <= max_rel_error:
            best, err, use_fold, use_nhwc = cand, e, folded is not None, nhwc
        else:  # find the step at fault: keep the other if it passes alone
            if folded is not None:
                if nhwc:
                    folded.to(memory_format=torch.contiguous_format)
                ef = error(folded, False)
                if ef <= max_rel_error:
                    best, err, use_fold = folded, ef, True
                else:
                    notes.append(f"BatchNorm folding dropped (deviation {ef:.1e})")
            if nhwc and not use_fold:
                alone = copy.deepcopy(module).to(memory_format=torch.channels_last)
                en = error(alone, True)
                if en <= max_rel_error:
                    best, err, use_nhwc = alone, en, True
                else:
                    notes.append(f"channels_last dropped (deviation {en:.1e})")
            elif nhwc:
                notes.append(f"channels_last dropped (deviation {e:.1e} with it)")
    done = [f"{n} BatchNorm folded"] if use_fold else []
    done += ["channels_last"] if use_nhwc else []
    fact = f"{', '.join(done)} (checked: max deviation {err:.1e})" if done else "as built"
    if notes:
        fact += f"; {'; '.join(notes)}"
    return InferenceRewrite(best, n if use_fold else 0, use_nhwc, err, fact)
