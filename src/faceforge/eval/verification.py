"""Verification runner: embed the images of a pair list with a model, once per distinct image, with
optional flip-test fusion (:data:`FLIP_MODES`: ``none``, ``sum`` (the default), ``concat``, ``norm``,
the last weighting each view by its feature norm as in MagFace, Meng et al., CVPR 2021, and AdaFace,
Kim et al., CVPR 2022), and score the pairs. Entry points: :func:`evaluate_model`,
:func:`embed_images`, :func:`fuse_flip`, :func:`evaluate_embeddings`. Details: docs/evaluation.md,
"Flip fusion".
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from faceforge.data.pair_images import PairImages
from faceforge.errors import FaceforgeError, did_you_mean
from faceforge.eval.metrics import evaluate_pairs
from faceforge.progress import progress_bar

EmbedFn = Callable[[torch.Tensor], torch.Tensor]
FLIP_MODES = ("none", "sum", "concat", "norm")


def flip_mode(flip: bool | str) -> str:
    """Normalise a flip argument: ``True`` is ``"sum"``, ``False`` is ``"none"``, names are checked."""
    if flip is True:
        return "sum"
    if flip is False or flip is None:
        return "none"
    if flip not in FLIP_MODES:
        raise FaceforgeError(
            f"flip mode {flip!r} is not one of {list(FLIP_MODES)}{did_you_mean(str(flip), FLIP_MODES)}"
        )
    return str(flip)


def fuse_flip(e: torch.Tensor, f: torch.Tensor | None, mode: str) -> torch.Tensor:
    """Fuse raw embeddings ``e`` of images and ``f`` of their mirrors (docs/evaluation.md, "Flip fusion")."""
    if mode == "none" or f is None:
        return e
    if mode == "sum":
        return e + f
    if mode == "concat":
        return torch.cat([e, f], dim=1)
    if mode == "norm":
        ne, nf = e.norm(dim=1, keepdim=True), f.norm(dim=1, keepdim=True)
        # An all-zero pair of views stays zero instead of dividing by zero.
        return (ne * e + nf * f) / (ne + nf).clamp_min(1e-12)
    raise FaceforgeError(f"flip mode {mode!r} is not one of {list(FLIP_MODES)}")


@torch.no_grad()
def embed_images(
    embed: EmbedFn,
    images: torch.Tensor,
    batch_size: int = 256,
    flip: bool | str = True,
    progress: bool | None = None,
    desc: str = "embedding",
) -> np.ndarray:
    """Embeddings ``[N, E]`` (float32 numpy) of uint8 ``images`` ``[N, 3, H, W]`` with flip fusion.

    ``flip`` is a mode of ``FLIP_MODES`` (``True`` = ``"sum"``, ``False`` = ``"none"``). Images go
    through ``embed`` in batches of ``batch_size``; ``progress`` shows a bar (default: on a TTY only).
    """
    mode = flip_mode(flip)
    if batch_size < 1:
        raise FaceforgeError(f"batch_size={batch_size}; expected an integer >= 1")
    bar = progress_bar(len(images), desc, enabled=progress, leave=False)
    out = []
    try:
        for s in range(0, len(images), batch_size):
            x = images[s : s + batch_size]
            e = embed(x).float()
            f = embed(x.flip(-1)).float() if mode != "none" else None
            out.append(fuse_flip(e, f, mode).cpu())
            bar.update(len(x))
    finally:
        bar.close()
    if not out:
        raise FaceforgeError("no images to embed")
    return torch.cat(out).numpy()


def evaluate_embeddings(
    emb: np.ndarray, data: PairImages, n_folds: int = 10, mode: str = "grid"
) -> dict[str, Any]:
    """10-fold verification metrics (see :func:`faceforge.eval.metrics.evaluate_pairs`)."""
    if not np.isfinite(emb).all():
        raise FaceforgeError("the model produced NaN or infinite embeddings; the checkpoint is unusable")
    res = evaluate_pairs(emb[data.index_a], emb[data.index_b], data.issame, n_folds=n_folds, mode=mode)
    res["undecodable_images"] = len(data.bad_paths)
    return res


def accuracy_at_threshold(emb: np.ndarray, data: PairImages, threshold: float) -> float:
    """Share of the pairs a fixed cosine ``threshold`` decides right (``cosine >= threshold`` = same)."""
    e = np.asarray(emb, np.float64)
    e = e / np.maximum(np.linalg.norm(e, axis=1, keepdims=True), 1e-12)
    cos = np.einsum("ij,ij->i", e[data.index_a], e[data.index_b])
    return float(np.mean((cos >= float(threshold)) == np.asarray(data.issame, bool)))


def evaluate_model(
    embed: EmbedFn,
    data: PairImages,
    batch_size: int = 256,
    flip: bool | str = True,
    n_folds: int = 10,
    mode: str = "grid",
) -> dict[str, Any]:
    """Embed ``data`` with ``embed`` and return the verification metrics."""
    return evaluate_embeddings(embed_images(embed, data.images, batch_size, flip), data, n_folds, mode)


def pixel_baseline(data: PairImages, n_folds: int = 10, mode: str = "grid") -> dict[str, Any]:
    """Raw-pixel nearest-neighbour baseline: each image's mean-centred pixels are its embedding.

    This is what a model must beat by far to show that it learnt identity rather than colour or
    layout: cosine similarity of the raw pixel vectors, scored with the same 10-fold protocol.
    """
    x = data.images.reshape(len(data.images), -1).float()
    x = x - x.mean(1, keepdim=True)
    return evaluate_embeddings(x.numpy(), data, n_folds, mode)
