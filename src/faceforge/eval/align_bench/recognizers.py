"""The recogniser side of the alignment benchmark: :class:`Recognizer` (template, crop size, batch embed),
:func:`build_recognizer` for dlib's ResNet, a faceforge checkpoint or a backbone with weights, and the
aligned crops of a list of images as that recogniser wants them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from faceforge.errors import FaceforgeError
from faceforge.eval.align_bench.worker import _prefetch

#: crops warped and embedded per call (also the chunk of save_aligned)
_EMBED_BATCH = 32


@dataclass
class Recognizer:
    """What the benchmark needs of a recogniser: its template, crop size and a batch embed function.

    ``embed(crops)`` takes uint8 RGB crops ``[N, H, W, 3]`` aligned with ``template`` at ``size``
    (``(width, height)``) and returns float32 ``[N, E]``.
    """

    name: str
    template: str
    size: tuple[int, int]
    embed: Callable[[np.ndarray], np.ndarray]
    spec: dict[str, Any] = field(default_factory=dict)


def _torch_embed(backbone: Any, face_cfg: Any, flip: bool = True) -> Callable[[np.ndarray], np.ndarray]:
    import torch

    from faceforge.models.face_cfg import preprocess

    backbone.eval()

    @torch.no_grad()
    def embed(crops: np.ndarray) -> np.ndarray:
        t = torch.from_numpy(np.ascontiguousarray(crops)).permute(0, 3, 1, 2)
        e = backbone(preprocess(t, face_cfg)).float()
        if flip:  # insightface's flip-test fusion, as faceforge eval does
            e = e + backbone(preprocess(t.flip(-1), face_cfg)).float()
        return e.numpy().astype(np.float32)

    return embed


def build_recognizer(name_or_ckpt: str, weights: str | None = None) -> Recognizer:
    """``"dlib"`` (dlib's ResNet), a faceforge ``.ckpt`` path, or a backbone name with ``weights``.

    The template and crop size come from the model's :class:`~faceforge.models.face_cfg.FaceConfig`:
    the alignment follows the model.
    """
    spec = {"recognizer": name_or_ckpt, "weights": weights}
    if name_or_ckpt == "dlib":
        from faceforge.models.dlib_resnet import DlibResNet

        model = DlibResNet(weights)
        cfg = model.face_cfg
        return Recognizer("dlib", cfg.template, (cfg.input_size[1], cfg.input_size[0]), model.embed, spec)
    p = Path(name_or_ckpt)
    if p.suffix == ".ckpt" or p.is_file():
        from faceforge.models.checkpoint import load_checkpoint

        loaded = load_checkpoint(p)
        cfg = loaded.face_cfg
        return Recognizer(
            p.name,
            cfg.template,
            (cfg.input_size[1], cfg.input_size[0]),
            _torch_embed(loaded.backbone, cfg),
            spec,
        )
    from faceforge.models.backbones.registry import create_model
    from faceforge.models.backbones.weights import load_backbone_weights

    if not weights:
        raise FaceforgeError(
            f"recogniser {name_or_ckpt!r} is a backbone name, which needs --weights FILE "
            "(or pass 'dlib' or a faceforge .ckpt)"
        )
    model = create_model(name_or_ckpt)
    load_backbone_weights(model, weights)
    cfg = model.face_cfg
    return Recognizer(
        name_or_ckpt, cfg.template, (cfg.input_size[1], cfg.input_size[0]), _torch_embed(model, cfg), spec
    )


def _crops_for(
    paths: list[str],
    idx: Sequence[int],
    lm: np.ndarray,
    readable: np.ndarray,
    rec: Recognizer,
    workers: int = 0,
) -> np.ndarray:
    """The crops ``[len(idx), H, W, 3]`` of ``paths[idx]`` aligned on ``lm`` with ``rec``'s template."""
    from faceforge.align import similarity_matrix, warp

    w, h = rec.size
    out = np.zeros((len(idx), h, w, 3), np.uint8)
    todo = [(k, i) for k, i in enumerate(idx) if readable[i]]
    # an unreadable image stays a black crop: the pair is still scored, as in the standard protocol
    for (k, i), rgb in zip(todo, _prefetch([paths[i] for _, i in todo], workers)):
        if isinstance(rgb, FaceforgeError):
            continue
        out[k] = warp(rgb, similarity_matrix(lm[i], rec.template, rec.size), rec.size)
    return out
