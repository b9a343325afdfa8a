"""Image datasets: a list of ``(path, label)`` files (:class:`FileListDataset`), and ImageFolder trees
(:class:`ImageFolderDataset`, one sub-folder per class). Images that cannot be decoded are never fatal:
they are skipped, their paths are logged, and they are counted (``bad_paths``) so the training loop can
report them in its epoch summary.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from faceforge import imageio
from faceforge.errors import FaceforgeError
from faceforge.imageio import IMAGE_EXTENSIONS, check_encoded, list_images

log = logging.getLogger(__name__)
#: formats decoded with the inference decoder (PIL) rather than OpenCV
_PIL_ONLY_FORMATS = ("GIF",)
#: images above this many pixels are decoded at a reduced scale when the output size allows
_REDUCE_ABOVE = 16_000_000


def decode_image(
    path: str | os.PathLike[str] | bytes, size: int | None = None, color: str = "RGB", *, crop: bool = False
) -> np.ndarray | None:
    """Read an image (a file, or encoded bytes such as a RecordIO record) as uint8 HWC in ``color`` order,
    resized to ``size``²; ``None`` if undecodable.

    A non-square image is stretched to ``size``², or with ``crop`` its shorter side is resized to
    ``size`` and the centre ``size``² cut out; a square image is resized the same way by both.

    The declared size is read from the header first (:func:`faceforge.imageio.check_encoded`): an image
    over the pixel limit counts as undecodable instead of being decoded; a huge one that is allowed is
    decoded at 1/2, 1/4 or 1/8 scale when ``size`` needs no more (OpenCV's reduced JPEG decode).
    """
    if isinstance(path, (bytes, bytearray, memoryview)):
        data, where = bytes(path), "record"
    else:
        where = os.fspath(path)
        try:
            data = Path(path).read_bytes()
        except OSError:
            return None
    if not data:
        return None
    buf = np.frombuffer(data, dtype=np.uint8)
    try:
        header = check_encoded(data, source=where)
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
    # OpenCV decodes JPEG/PNG/WebP/TIFF/BMP/PNM to the very pixels PIL gives inference (tested); its GIF
    # decoder maps palette colours differently (up to 51 levels off), and older builds read no GIF.
    img = None if header.format in _PIL_ONLY_FORMATS else cv2.imdecode(buf, flag)
    if img is None:
        try:
            img = cv2.cvtColor(imageio.decode_image(data, source=where), cv2.COLOR_RGB2BGR)
        except FaceforgeError:
            return None
    if size is not None and img.shape[:2] != (size, size):
        h, w = img.shape[:2]
        if crop and h != w:
            s = size / min(h, w)
            nw, nh = max(size, round(w * s)), max(size, round(h * s))
            if (nw, nh) != (w, h):
                img = cv2.resize(img, (nw, nh), interpolation=cv2.INTER_AREA)
            y0, x0 = (nh - size) // 2, (nw - size) // 2
            img = np.ascontiguousarray(img[y0 : y0 + size, x0 : x0 + size])
        else:
            img = cv2.resize(img, (size, size), interpolation=cv2.INTER_AREA)
    if color == "RGB":
        img = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
    return img


def image_folder_samples(root: str | os.PathLike[str]) -> tuple[list[str], list[tuple[str, int]]]:
    """Class names (sorted sub-folders) and ``(path, label)`` samples of an ImageFolder tree."""
    root = Path(root)
    if not root.is_dir():
        raise FaceforgeError(
            f"data directory {root} does not exist "
            "(expected an ImageFolder: one sub-folder of images per identity)"
        )
    classes = sorted(d.name for d in os.scandir(root) if d.is_dir() and not d.name.startswith("."))
    if not classes:
        raise FaceforgeError(
            f"data directory {root} has no identity sub-folders (expected ROOT/<identity>/<image>)"
        )
    # Every sub-folder is a class, even an empty one: labels stay those of the folder names.
    samples = [
        (str(f), label)
        for label, name in enumerate(classes)
        for f in list_images(root / name, recursive=False)
    ]
    if not samples:
        raise FaceforgeError(
            f"data directory {root} has identity folders but no images ({', '.join(IMAGE_EXTENSIONS)})"
        )
    return classes, samples


class FileListDataset(Dataset):
    """``(uint8 RGB tensor [3, size, size], label)`` samples from a list of ``(path, label)`` files.

    Args:
        samples: ``(image path, label)`` pairs, labels ``0 .. num_classes - 1`` (e.g.
            :meth:`faceforge.data.splits.Split.samples`).
        size: square side of the output (the backbone's input size). A non-square image has its
            shorter side resized to ``size`` and the centre ``size``² cut out (no stretching); a square
            one is only resized.
        cache: decode every image once into one uint8 array (fast epochs for small sets; undecodable
            images are dropped and counted at load time).
        class_names: the name of every label; sets :attr:`num_classes` (a split's val or test part may
            lack some classes). Default: ``"0" .. str(max label)``.

    An image that fails to decode without ``cache`` yields label ``-1`` and a zero image; the training
    step drops such samples and counts them.
    """

    def __init__(
        self,
        samples: Sequence[tuple[str | os.PathLike[str], int]],
        size: int = 112,
        cache: bool = False,
        class_names: Sequence[str] | None = None,
    ) -> None:
        # Always RGB: the model's colour order is applied by faceforge.models.face_cfg.preprocess.
        if int(size) < 1:
            raise FaceforgeError(f"image size {size} must be >= 1 pixel")
        self.size = int(size)
        self.samples = [(os.fspath(p), int(lab)) for p, lab in samples]
        if not self.samples:
            raise FaceforgeError("the image list is empty; expected at least one (path, label)")
        low = min(self.samples, key=lambda s: s[1])
        if low[1] < 0:
            raise FaceforgeError(f"label {low[1]} of {low[0]} is negative; expected labels >= 0")
        high = max(self.samples, key=lambda s: s[1])
        if class_names is None:
            self.classes = [str(i) for i in range(high[1] + 1)]
        else:
            self.classes = [str(c) for c in class_names]
            if high[1] >= len(self.classes):
                raise FaceforgeError(
                    f"label {high[1]} of {high[0]} has no class name: class_names lists "
                    f"{len(self.classes)} (labels 0..{len(self.classes) - 1})"
                )
        self.bad_paths: list[str] = []
        self.images: torch.Tensor | None = None
        if cache:
            self._load_cache()

    def _load_cache(self) -> None:
        arr = np.empty((len(self.samples), self.size, self.size, 3), np.uint8)
        keep = []
        for i, (path, _label) in enumerate(self.samples):
            img = decode_image(path, self.size, crop=True)
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
        """Number of classes (``len(classes)``)."""
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
        img = decode_image(path, self.size, crop=True)
        if img is None:
            log.warning("skipping undecodable image %s", path)
            return torch.zeros(3, self.size, self.size, dtype=torch.uint8), -1
        return torch.from_numpy(img).permute(2, 0, 1).contiguous(), label


class ImageFolderDataset(FileListDataset):
    """:class:`FileListDataset` over an ImageFolder tree (``root/<identity>/<image>``, labels over the
    sorted sub-folders); ``size`` and ``cache`` as there."""

    def __init__(self, root: str | os.PathLike[str], size: int = 112, cache: bool = False) -> None:
        classes, samples = image_folder_samples(root)
        super().__init__(samples, size, cache, classes)
        self.root = Path(root)
