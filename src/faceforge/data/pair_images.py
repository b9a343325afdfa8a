"""The images of a verification pair list, decoded once (LFW View-2 style ``pairs.txt`` and the other
formats of :func:`faceforge.data.pairs.read_pairs`), for evaluation and validation during training."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from faceforge.data.folder import decode_image
from faceforge.data.pairs import Pairs

__all__ = ["PairImages", "load_pair_images"]


@dataclass
class PairImages:
    """The distinct images of a pair list, decoded once, and each pair's two indices into them."""

    images: torch.Tensor  # uint8 [U, 3, H, W]
    index_a: np.ndarray
    index_b: np.ndarray
    issame: np.ndarray
    bad_paths: list[str]


def load_pair_images(pairs: Pairs, size: int) -> PairImages:
    """Decode every distinct image of ``pairs`` at ``size``×``size``, RGB (the model applies its colours).

    An undecodable image is counted in ``bad_paths`` and replaced by a black image (its pairs are
    kept, as the standard protocol scores every pair).
    """
    paths = pairs.unique_paths()
    where = {p: i for i, p in enumerate(paths)}
    arr = np.zeros((len(paths), size, size, 3), np.uint8)
    bad = []
    for i, p in enumerate(paths):
        img = decode_image(p, size)
        if img is None:
            bad.append(p)
        else:
            arr[i] = img
    ia = np.array([where[p] for p in pairs.paths_a])
    ib = np.array([where[p] for p in pairs.paths_b])
    return PairImages(torch.from_numpy(arr).permute(0, 3, 1, 2).contiguous(), ia, ib, pairs.issame, bad)
