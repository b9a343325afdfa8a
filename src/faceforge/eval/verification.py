"""Verification runner: embed the images of a pair list with a model and score the pairs.

Embeddings are extracted once per distinct image (LFW repeats images across pairs), with optional
flip-test fusion: the embedding of an image is the sum of the raw embeddings of the image and its
mirror (insightface's evaluation), which the metrics then L2-normalise.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from faceforge.data.folder import decode_image
from faceforge.data.pairs import Pairs
from faceforge.errors import FaceforgeError
from faceforge.eval.metrics import evaluate_pairs

EmbedFn = Callable[[torch.Tensor], torch.Tensor]


@dataclass
class PairImages:
    """The distinct images of a pair list, decoded once, and each pair's two indices into them."""

    images: torch.Tensor  # uint8 [U, 3, H, W]
    index_a: np.ndarray
    index_b: np.ndarray
    issame: np.ndarray
    bad_paths: list[str]


def load_pair_images(pairs: Pairs, size: int, color: str = "RGB") -> PairImages:
    """Decode every distinct image of ``pairs`` at ``size``×``size``.

    An undecodable image is counted in ``bad_paths`` and replaced by a black image (its pairs are
    kept, as the standard protocol scores every pair).
    """
    paths = pairs.unique_paths()
    where = {p: i for i, p in enumerate(paths)}
    arr = np.zeros((len(paths), size, size, 3), np.uint8)
    bad = []
    for i, p in enumerate(paths):
        img = decode_image(p, size, color)
        if img is None:
            bad.append(p)
        else:
            arr[i] = img
    ia = np.array([where[p] for p in pairs.paths_a])
    ib = np.array([where[p] for p in pairs.paths_b])
    return PairImages(torch.from_numpy(arr).permute(0, 3, 1, 2).contiguous(), ia, ib, pairs.issame, bad)


@torch.no_grad()
def embed_images(
    embed: EmbedFn, images: torch.Tensor, batch_size: int = 256, flip: bool = True
) -> np.ndarray:
    """Raw embeddings ``[N, E]`` (float32 numpy) of uint8 ``images`` ``[N, 3, H, W]``; flip fusion by sum."""
    out = []
    for s in range(0, len(images), batch_size):
        x = images[s : s + batch_size]
        e = embed(x).float()
        if flip:
            e = e + embed(x.flip(-1)).float()
        out.append(e.cpu())
    return torch.cat(out).numpy()


def evaluate_embeddings(emb: np.ndarray, data: PairImages, n_folds: int = 10) -> dict[str, Any]:
    """10-fold verification metrics (see :func:`faceforge.eval.metrics.evaluate_pairs`)."""
    if not np.isfinite(emb).all():
        raise FaceforgeError("the model produced NaN or infinite embeddings; the checkpoint is unusable")
    res = evaluate_pairs(emb[data.index_a], emb[data.index_b], data.issame, n_folds=n_folds)
    res["undecodable_images"] = len(data.bad_paths)
    return res


def evaluate_model(
    embed: EmbedFn, data: PairImages, batch_size: int = 256, flip: bool = True, n_folds: int = 10
) -> dict[str, Any]:
    """Embed ``data`` with ``embed`` and return the verification metrics."""
    return evaluate_embeddings(embed_images(embed, data.images, batch_size, flip), data, n_folds)


def pixel_baseline(data: PairImages, n_folds: int = 10) -> dict[str, Any]:
    """Raw-pixel nearest-neighbour baseline: each image's mean-centred pixels are its embedding.

    This is what a model must beat by far to show that it learnt identity rather than colour or
    layout: cosine similarity of the raw pixel vectors, scored with the same 10-fold protocol.
    """
    x = data.images.reshape(len(data.images), -1).float()
    x = x - x.mean(1, keepdim=True)
    return evaluate_embeddings(x.numpy(), data, n_folds)
