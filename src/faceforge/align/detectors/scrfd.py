"""SCRFD (onnxruntime) with our own anchor-centre decoding and NMS.
Implements J. Guo, J. Deng, A. Lattas, S. Zafeiriou, "Sample and Computation Redistribution for
Efficient Face Detection", ICLR 2022 (insightface's SCRFD; file ``scrfd_500m_bnkps.onnx``).
Entry point: :class:`SCRFDDetector` (``scrfd``). Details: docs/align.md, "Implementation notes" ("SCRFD").
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from faceforge.align.detectors._onnx import OnnxDetector
from faceforge.align.detectors.base import DETECTORS, Face, faces_from_arrays
from faceforge.errors import FaceforgeError

__all__ = ["SCRFDDetector"]

_STRIDES = (8, 16, 32)
_ANCHORS_PER_CELL = 2


def anchor_centres(height: int, width: int, stride: int, per_cell: int) -> np.ndarray:
    """``[fh·fw·per_cell, 2]`` (x, y) pixel centres, row-major, each cell repeated ``per_cell`` times."""
    fh, fw = height // stride, width // stride
    ys, xs = np.mgrid[:fh, :fw]
    c = np.stack([xs, ys], axis=-1).reshape(-1, 2).astype(np.float32) * stride
    return np.repeat(c, per_cell, axis=0)


class SCRFDDetector(OnnxDetector):
    """SCRFD with 5 keypoints (any insightface ``*_bnkps`` / ``*_kps`` export, e.g. ``det_10g.onnx``).

    Outputs are taken by name (``score_8`` …) when the file has those names, else in insightface's
    order (scores, boxes, keypoints; strides 8, 16, 32). Exports whose outputs have no batch
    dimension (``[N_anchors, 1]``, as in insightface's model zoo) run one image at a time.
    """

    name = "scrfd"
    store_name = "scrfd"

    def __init__(self, model_path: str | Path | None = None, **kw: object) -> None:
        super().__init__(model_path=model_path, **kw)  # type: ignore[arg-type]
        names = self._output_names
        wanted = [f"{k}_{s}" for k in ("score", "bbox", "kps") for s in _STRIDES]
        if set(wanted) <= set(names):
            self._order = [names.index(n) for n in wanted]
        elif len(names) == 9:
            self._order = list(range(9))
        else:
            raise FaceforgeError(
                f"{self.model_path}: {len(names)} outputs {names}; expected SCRFD's 9 (score, bbox, kps "
                "at strides 8, 16, 32; a model with 5 keypoints)"
            )
        self._flat = len(self.session.get_outputs()[self._order[0]].shape) == 2
        if self._flat:
            self._batchable = False

    def _prepare(self, rgb: np.ndarray) -> tuple[np.ndarray, tuple[float, int, int]]:
        canvas, scale = self._canvas(rgb)
        x = ((canvas.astype(np.float32) - 127.5) / 128.0).transpose(2, 0, 1)
        return np.ascontiguousarray(x), (scale, canvas.shape[0], canvas.shape[1])

    def _decode(self, outs: list[np.ndarray], meta: tuple[float, int, int]) -> list[Face]:
        scale, h, w = meta
        arr = [outs[k] if self._flat else outs[k][0] for k in self._order]
        boxes, scores, kps = [], [], []
        for j, s in enumerate(_STRIDES):
            sc = arr[j].reshape(-1)
            keep = np.nonzero(sc >= self.score_threshold)[0]
            if keep.size == 0:
                continue
            c = anchor_centres(h, w, s, _ANCHORS_PER_CELL)[keep]
            d = arr[3 + j].reshape(-1, 4)[keep] * s
            k = arr[6 + j].reshape(-1, 5, 2)[keep] * s
            boxes.append(np.concatenate([c - d[:, :2], c + d[:, 2:]], axis=1))
            kps.append(c[:, None, :] + k)
            scores.append(sc[keep])
        if not boxes:
            return []
        return faces_from_arrays(
            np.concatenate(boxes) / scale,
            np.concatenate(scores),
            np.concatenate(kps) / scale,
            self.nms_threshold,
        )


@DETECTORS.register("scrfd")
def _scrfd(model_path: str | Path | None = None, **kwargs: object) -> SCRFDDetector:
    return SCRFDDetector(model_path=model_path, **kwargs)  # type: ignore[arg-type]
