"""SCRFD (onnxruntime) with our own anchor-centre decoding and NMS.

Implements: J. Guo, J. Deng, A. Lattas, S. Zafeiriou, "Sample and Computation Redistribution for
Efficient Face Detection", ICLR 2022 (insightface's SCRFD). File: ``scrfd_500m_bnkps.onnx``
(SCRFD-0.5GF with keypoints) with outputs ``score_{8,16,32}`` [1, N, 1] (sigmoid already applied),
``bbox_{8,16,32}`` [1, N, 4] (distances left/top/right/bottom in stride units) and
``kps_{8,16,32}`` [1, N, 10] (offsets in stride units), 2 anchors per feature-map cell.
Input: RGB, (x − 127.5) / 128. Landmarks come in our order (left eye = smaller x).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from faceforge.align.detectors._onnx import OnnxDetector
from faceforge.align.detectors.base import DETECTORS, Face, faces_from_arrays

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
    """SCRFD-0.5GF with 5 keypoints."""

    name = "scrfd"
    store_name = "scrfd"

    def _detect(self, rgb: np.ndarray) -> list[Face]:
        canvas, scale = self._canvas(rgb)
        x = ((canvas.astype(np.float32) - 127.5) / 128.0).transpose(2, 0, 1)[None]
        outs = dict(
            zip([o.name for o in self.session.get_outputs()], self.session.run(None, {self.input_name: x}))
        )
        h, w = canvas.shape[:2]
        boxes, scores, kps = [], [], []
        for s in _STRIDES:
            sc = outs[f"score_{s}"][0, :, 0]
            keep = np.nonzero(sc >= self.score_threshold)[0]
            if keep.size == 0:
                continue
            c = anchor_centres(h, w, s, _ANCHORS_PER_CELL)[keep]
            d = outs[f"bbox_{s}"][0, keep] * s
            k = outs[f"kps_{s}"][0, keep].reshape(-1, 5, 2) * s
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
