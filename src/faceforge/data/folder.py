"""ImageFolder datasets: one sub-folder per identity (torchvision's ImageFolder layout).

Images that cannot be decoded are never fatal: they are skipped, their paths are logged, and they are
counted (``bad_count``) so the training loop can report them in its epoch summary.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from faceforge.errors import FaceforgeError
from faceforge.imageio import check_encoded

log = logging.getLogger(__name__)
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
#: images above this many pixels are decoded at a reduced scale when the output size allows
_REDUCE_ABOVE = 16_000_000


def decode_image(
    path: str | os.PathLike[str], size: int | None = None, color: str = "RGB"
) -> np.ndarray | None:
    """Read an image as uint8 HWC in ``color`` order, resized to ``size``²; ``None`` if undecodable.

    The declared size is read from the header first (:func:`faceforge.imageio.check_encoded`): an image
    over the pixel limit counts as undecodable instead of being decoded; a huge one that is allowed is
    decoded at 1/2, 1/4 or 1/8 scale when ``size`` needs no more (OpenCV's reduced JPEG decode).
    """
    try:
        data = Path(path).read_bytes()
    except OSError:
        return None
    if not data:
        return None
    buf = np.frombuffer(data, dtype=np.uint8)
    try:
        header = check_encoded(data, source=os.fspath(path))
    except FaceforgeError as e:
        log.warning("skipping image %s", e)
        return None
    flag = cv2.IMREAD_COLOR
    if size is not None and header.pixels > _REDUCE_ABOVE:
        for r, f in (
            (8, cv2.IMREAD_REDUCED_COLOR_8),
            (4, cv2.IMREAD_REDUCED_COLOR_4),
            (2, cv2.IMREAD_REDUCED_COLOR_2),
        ):
            if min(header.width, header.height) // r >= size:
                flag = f
                break
    img = cv2.imdecode(buf, flag)
    if img is None:
        return None
    if size is not None and img.shape[:2] != (size, size):
        img = cv2.resize(img, (size, size), interpolation=cv2.INTER_AREA)
    if color == "RGB":
        img = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
    return img


def scan_folder(root: str | os.PathLike[str]) -> tuple[list[str], list[tuple[str, int]]]:
    """Class names (sorted sub-folders) and ``(path, label)`` samples of an ImageFolder tree."""
    root = Path(root)
    if not root.is_dir():
        raise FaceforgeError(
            f"data directory {root} does not exist "
            "(expected an ImageFolder: one sub-folder of images per identity)"
        )
    classes = sorted(d.name for d in os.scandir(root) if d.is_dir())
    if not classes:
        raise FaceforgeError(
            f"data directory {root} has no identity sub-folders (expected ROOT/<identity>/<image>)"
        )
    samples = []
    for label, name in enumerate(classes):
        for f in sorted(os.scandir(root / name), key=lambda e: e.name):
            if f.is_file() and f.name.lower().endswith(IMAGE_EXTENSIONS):
                samples.append((f.path, label))
    if not samples:
        raise FaceforgeError(
            f"data directory {root} has identity folders but no images ({', '.join(IMAGE_EXTENSIONS)})"
        )
    return classes, samples


class ImageFolderDataset(Dataset):
    """``(uint8 RGB tensor [3, size, size], label)`` samples from an ImageFolder tree.

    Args:
        root: the tree (``root/<identity>/<image>``).
        size: square side the images are resized to (the backbone's input size).
        cache: decode every image once into one uint8 array (fast epochs for small sets; undecodable
            images are dropped and counted at load time).

    An image that fails to decode without ``cache`` yields label ``-1`` and a zero image; the training
    step drops such samples and counts them.
    """

    def __init__(self, root: str | os.PathLike[str], size: int = 112, cache: bool = False) -> None:
        # Always RGB: the model's colour order is applied by faceforge.models.face_cfg.preprocess.
        self.root, self.size = Path(root), size
        self.classes, self.samples = scan_folder(root)
        self.bad_paths: list[str] = []
        self.images: torch.Tensor | None = None
        if cache:
            self._load_cache()

    def _load_cache(self) -> None:
        arr = np.empty((len(self.samples), self.size, self.size, 3), np.uint8)
        keep = []
        for i, (path, _label) in enumerate(self.samples):
            img = decode_image(path, self.size)
            if img is None:
                self.bad_paths.append(path)
                log.warning("skipping undecodable image %s", path)
                continue
            arr[len(keep)] = img
            keep.append(i)
        self.samples = [self.samples[i] for i in keep]
        self.images = torch.from_numpy(arr[: len(keep)]).permute(0, 3, 1, 2)

    @property
    def num_classes(self) -> int:
        """Number of identities (sub-folders)."""
        return len(self.classes)

    @property
    def labels(self) -> np.ndarray:
        """Label of every sample."""
        return np.array([lab for _, lab in self.samples], dtype=np.int64)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        if self.images is not None:
            return self.images[i], self.samples[i][1]
        path, label = self.samples[i]
        img = decode_image(path, self.size)
        if img is None:
            log.warning("skipping undecodable image %s", path)
            return torch.zeros(3, self.size, self.size, dtype=torch.uint8), -1
        return torch.from_numpy(img).permute(2, 0, 1).contiguous(), label
