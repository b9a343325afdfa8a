"""MTCNN: our own PyTorch P-/R-/O-Net and cascade, with the facenet-pytorch weight files.
Implements K. Zhang, Z. Zhang, Z. Li, Y. Qiao, "Joint Face Detection and Alignment using Multi-task
Cascaded Convolutional Networks", IEEE SPL 2016. Entry point: :class:`MTCNNDetector` (``mtcnn``).
Details: docs/align.md, "Implementation notes" ("MTCNN").
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from faceforge.align.detectors._model import model_file
from faceforge.align.detectors.base import DETECTORS, Detector, Face, nms
from faceforge.errors import FaceforgeError

__all__ = ["MTCNNDetector"]


def _nets():  # built lazily so that importing the package does not import torch
    import torch
    from torch import nn

    class PNet(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv1, self.prelu1 = nn.Conv2d(3, 10, 3), nn.PReLU(10)
            self.pool1 = nn.MaxPool2d(2, 2, ceil_mode=True)
            self.conv2, self.prelu2 = nn.Conv2d(10, 16, 3), nn.PReLU(16)
            self.conv3, self.prelu3 = nn.Conv2d(16, 32, 3), nn.PReLU(32)
            self.conv4_1, self.conv4_2 = nn.Conv2d(32, 2, 1), nn.Conv2d(32, 4, 1)

        def forward(self, x):
            x = self.pool1(self.prelu1(self.conv1(x)))
            x = self.prelu3(self.conv3(self.prelu2(self.conv2(x))))
            return torch.softmax(self.conv4_1(x), 1), self.conv4_2(x)

    class RNet(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv1, self.prelu1 = nn.Conv2d(3, 28, 3), nn.PReLU(28)
            self.pool1 = nn.MaxPool2d(3, 2, ceil_mode=True)
            self.conv2, self.prelu2 = nn.Conv2d(28, 48, 3), nn.PReLU(48)
            self.pool2 = nn.MaxPool2d(3, 2, ceil_mode=True)
            self.conv3, self.prelu3 = nn.Conv2d(48, 64, 2), nn.PReLU(64)
            self.dense4, self.prelu4 = nn.Linear(576, 128), nn.PReLU(128)
            self.dense5_1, self.dense5_2 = nn.Linear(128, 2), nn.Linear(128, 4)

        def forward(self, x):
            x = self.pool1(self.prelu1(self.conv1(x)))
            x = self.pool2(self.prelu2(self.conv2(x)))
            x = self.prelu3(self.conv3(x)).permute(0, 3, 2, 1).reshape(x.shape[0], -1)
            x = self.prelu4(self.dense4(x))
            return torch.softmax(self.dense5_1(x), 1), self.dense5_2(x)

    class ONet(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv1, self.prelu1 = nn.Conv2d(3, 32, 3), nn.PReLU(32)
            self.pool1 = nn.MaxPool2d(3, 2, ceil_mode=True)
            self.conv2, self.prelu2 = nn.Conv2d(32, 64, 3), nn.PReLU(64)
            self.pool2 = nn.MaxPool2d(3, 2, ceil_mode=True)
            self.conv3, self.prelu3 = nn.Conv2d(64, 64, 3), nn.PReLU(64)
            self.pool3 = nn.MaxPool2d(2, 2, ceil_mode=True)
            self.conv4, self.prelu4 = nn.Conv2d(64, 128, 2), nn.PReLU(128)
            self.dense5, self.prelu5 = nn.Linear(1152, 256), nn.PReLU(256)
            self.dense6_1, self.dense6_2, self.dense6_3 = (
                nn.Linear(256, 2),
                nn.Linear(256, 4),
                nn.Linear(256, 10),
            )

        def forward(self, x):
            x = self.pool1(self.prelu1(self.conv1(x)))
            x = self.pool2(self.prelu2(self.conv2(x)))
            x = self.pool3(self.prelu3(self.conv3(x)))
            x = self.prelu4(self.conv4(x)).permute(0, 3, 2, 1).reshape(x.shape[0], -1)
            x = self.prelu5(self.dense5(x))
            return torch.softmax(self.dense6_1(x), 1), self.dense6_2(x), self.dense6_3(x)

    return PNet, RNet, ONet


def _square(b: np.ndarray) -> np.ndarray:
    """Grow boxes to squares about their centres (the cascade's ``rerec``)."""
    w, h = b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]
    side = np.maximum(w, h)
    out = b.copy()
    out[:, 0] = b[:, 0] + w / 2 - side / 2
    out[:, 1] = b[:, 1] + h / 2 - side / 2
    out[:, 2:4] = out[:, :2] + side[:, None]
    return out


def _regress(b: np.ndarray, reg: np.ndarray) -> np.ndarray:
    w, h = b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]
    out = b.copy()
    out[:, :4] = b[:, :4] + reg * np.stack([w, h, w, h], 1)
    return out


def _crops(rgb: np.ndarray, boxes: np.ndarray, size: int) -> np.ndarray:
    """Crop (zero-padded outside the image) and resize each box to ``size``²; returns N×3×S×S."""
    h, w = rgb.shape[:2]
    out = np.empty((len(boxes), 3, size, size), np.float32)
    for i, (x1, y1, x2, y2) in enumerate(np.round(boxes[:, :4]).astype(int)):
        bw, bh = max(x2 - x1, 1), max(y2 - y1, 1)
        patch = np.zeros((bh, bw, 3), np.uint8)
        sx1, sy1, sx2, sy2 = max(x1, 0), max(y1, 0), min(x2, w), min(y2, h)
        if sx2 > sx1 and sy2 > sy1:
            patch[sy1 - y1 : sy2 - y1, sx1 - x1 : sx2 - x1] = rgb[sy1:sy2, sx1:sx2]
        patch = cv2.resize(patch, (size, size), interpolation=cv2.INTER_AREA)
        out[i] = patch.transpose(2, 0, 1)
    return (out - 127.5) / 128.0


def _nms_min(boxes: np.ndarray, scores: np.ndarray, thr: float) -> np.ndarray:
    """NMS with intersection over the *smaller* box (the cascade's last-stage 'Min' mode)."""
    order, keep = np.argsort(-scores, kind="stable"), []
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    while order.size:
        i, rest = order[0], order[1:]
        keep.append(i)
        iw = np.maximum(0, np.minimum(boxes[i, 2], boxes[rest, 2]) - np.maximum(boxes[i, 0], boxes[rest, 0]))
        ih = np.maximum(0, np.minimum(boxes[i, 3], boxes[rest, 3]) - np.maximum(boxes[i, 1], boxes[rest, 1]))
        inter = iw * ih
        order = rest[inter / np.maximum(np.minimum(areas[i], areas[rest]), 1e-9) <= thr]
    return np.asarray(keep, dtype=np.int64)


class MTCNNDetector(Detector):
    """MTCNN cascade on CPU PyTorch.

    ``model_path`` is a folder holding ``pnet.pt``, ``rnet.pt``, ``onet.pt`` (default: the store).
    ``score_threshold`` is the O-Net threshold (0.9 here, not the paper's 0.7, which lets through
    face-like textures such as the badge on skimage's astronaut at 0.85); P-/R-Net use
    ``thresholds`` (0.6, 0.7) as in the paper.
    """

    name = "mtcnn"

    def __init__(
        self,
        model_path: str | Path | None = None,
        score_threshold: float = 0.9,
        nms_threshold: float = 0.7,
        min_face_size: int = 20,
        factor: float = 0.709,
        thresholds: tuple[float, float] = (0.6, 0.7),
    ) -> None:
        super().__init__(score_threshold, nms_threshold)
        try:
            import torch
        except ImportError:
            raise FaceforgeError("detector 'mtcnn' needs PyTorch: pip install torch") from None
        if model_path is not None and not Path(model_path).is_dir():
            raise FaceforgeError(
                f"mtcnn model_path {model_path} must be a folder with pnet.pt, rnet.pt, onet.pt"
            )
        PNet, RNet, ONet = _nets()
        self.nets = []
        for part, cls in (("pnet", PNet), ("rnet", RNet), ("onet", ONet)):
            p = (
                model_file(Path(model_path) / f"{part}.pt", "", "mtcnn")
                if model_path is not None
                else model_file(None, f"mtcnn_{part}", "mtcnn")
            )
            net = cls()
            try:
                net.load_state_dict(torch.load(p, map_location="cpu", weights_only=True))
            except Exception as e:
                raise FaceforgeError(f"cannot load MTCNN weights {p}: {e}") from None
            self.nets.append(net.eval())
        self.min_face_size, self.factor, self.thresholds = int(min_face_size), float(factor), thresholds

    def _detect(self, rgb: np.ndarray) -> list[Face]:
        import torch

        with torch.inference_mode():
            return self._cascade(rgb, torch)

    def _cascade(self, rgb: np.ndarray, torch) -> list[Face]:
        pnet, rnet, onet = self.nets
        h, w = rgb.shape[:2]
        m = 12.0 / self.min_face_size
        scales, side = [], min(h, w) * m
        while side >= 12:
            scales.append(m * self.factor ** len(scales))
            side *= self.factor
        cand = []
        for s in scales:
            sh, sw = int(h * s + 1), int(w * s + 1)
            im = cv2.resize(rgb, (sw, sh), interpolation=cv2.INTER_AREA).astype(np.float32)
            x = torch.from_numpy(((im - 127.5) / 128.0).transpose(2, 0, 1)[None].copy())
            prob, reg = pnet(x)
            prob, reg = prob[0, 1].numpy(), reg[0].numpy()
            ys, xs = np.nonzero(prob >= self.thresholds[0])
            if ys.size == 0:
                continue
            # Each P-Net output cell sees a 12x12 window at stride 2 of the scaled image.
            b = np.stack([xs * 2 / s, ys * 2 / s, (xs * 2 + 12) / s, (ys * 2 + 12) / s, prob[ys, xs]], 1)
            r = reg[:, ys, xs].T
            k = nms(b[:, :4], b[:, 4], 0.5)
            cand.append(np.concatenate([b[k], r[k]], 1))
        if not cand:
            return []
        c = np.concatenate(cand)
        c = c[nms(c[:, :4], c[:, 4], 0.7)]
        boxes = _square(_regress(c[:, :5], c[:, 5:9]))

        prob, reg = rnet(torch.from_numpy(_crops(rgb, boxes, 24)))
        sc = prob[:, 1].numpy()
        keep = sc >= self.thresholds[1]
        if not keep.any():
            return []
        boxes, reg, sc = boxes[keep], reg.numpy()[keep], sc[keep]
        boxes[:, 4] = sc
        k = nms(boxes[:, :4], sc, 0.7)
        boxes = _square(_regress(boxes[k], reg[k]))

        prob, reg, pts = onet(torch.from_numpy(_crops(rgb, boxes, 48)))
        sc = prob[:, 1].numpy()
        keep = sc >= self.score_threshold
        if not keep.any():
            return []
        boxes, reg, pts, sc = boxes[keep], reg.numpy()[keep], pts.numpy()[keep], sc[keep]
        bw, bh = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
        lm = np.stack([boxes[:, 0:1] + bw[:, None] * pts[:, :5], boxes[:, 1:2] + bh[:, None] * pts[:, 5:]], 2)
        boxes = _regress(boxes, reg)
        k = _nms_min(boxes[:, :4], sc, self.nms_threshold)
        return [Face(bbox=boxes[i, :4], score=float(sc[i]), landmarks=lm[i]) for i in k]


@DETECTORS.register("mtcnn")
def _mtcnn(model_path: str | Path | None = None, **kwargs: object) -> MTCNNDetector:
    return MTCNNDetector(model_path=model_path, **kwargs)  # type: ignore[arg-type]
