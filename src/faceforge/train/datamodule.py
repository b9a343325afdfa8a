"""LightningDataModule over an ImageFolder training set and the verification pairs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch.utils.data import DataLoader

from faceforge.data.folder import ImageFolderDataset
from faceforge.data.pairs import read_pairs
from faceforge.errors import FaceforgeError
from faceforge.eval.verification import PairImages, load_pair_images


def resolve(root: str | Path, rel: str | None) -> Path | None:
    """``rel`` joined to the data root (absolute paths are kept); ``None`` stays ``None``."""
    if rel is None:
        return None
    p = Path(rel)
    return p if p.is_absolute() else Path(root) / p


class FaceDataModule(L.LightningDataModule):
    """Training images from ``data.root/data.train`` and the validation/test pair sets of the config."""

    def __init__(self, data_cfg: dict[str, Any], color: str = "RGB", seed: int = 0) -> None:
        super().__init__()
        self.cfg = data_cfg
        self.color = color
        self.seed = seed
        root = Path(data_cfg["root"])
        if not root.is_dir():
            raise FaceforgeError(
                f"data directory {root} does not exist (set --data.root; `faceforge data synth --out {root}` "
                "makes a SynthFaces set there)"
            )
        self.train_dir = resolve(root, data_cfg["train"])
        size = int(data_cfg["image_size"])
        self.train_set: Any
        if self.train_dir.suffix == ".rec":
            from faceforge.data.recordio import FaceRecordDataset

            self.train_set = FaceRecordDataset(self.train_dir, transform=_RecordTransform(size, color))
        else:
            self.train_set = ImageFolderDataset(self.train_dir, size, color, cache=bool(data_cfg["cache"]))
        if data_cfg.get("augment"):
            from faceforge.data.transforms import build_transforms

            self.train_set = _Augmented(self.train_set, build_transforms(data_cfg["augment"]))
        if len(self.train_set) < data_cfg["batch_size"]:
            raise FaceforgeError(
                f"{self.train_dir} has {len(self.train_set)} decodable images, fewer than one batch "
                f"(data.batch_size={data_cfg['batch_size']})"
            )

    @property
    def num_classes(self) -> int:
        """Number of training identities."""
        return self._base.num_classes

    @property
    def _base(self) -> Any:
        return self.train_set.base if isinstance(self.train_set, _Augmented) else self.train_set

    @property
    def load_time_skipped(self) -> int:
        """Samples dropped before training: undecodable images (cache fill) or truncated records."""
        if hasattr(self._base, "bad_paths"):
            return len(self._base.bad_paths)
        return int(self._base.num_truncated)

    def runtime_skipped(self) -> int:
        """Records skipped while reading so far (RecordIO, counted in this process; 0 for folders)."""
        return int(getattr(self._base, "num_skipped", 0))

    def pair_images(self, which: str) -> PairImages | None:
        """Decoded images of ``data.val_pairs`` or ``data.test_pairs`` (``None`` when not configured)."""
        path = resolve(self.cfg["root"], self.cfg[f"{which}_pairs"])
        if path is None:
            return None
        if not path.is_file():
            raise FaceforgeError(f"data.{which}_pairs: pair file {path} does not exist")
        pairs = read_pairs(path)
        return load_pair_images(pairs, self.cfg["image_size"], self.color)

    def train_dataloader(self) -> DataLoader:
        g = torch.Generator()
        g.manual_seed(self.seed)
        workers = int(self.cfg["num_workers"])
        return DataLoader(
            self.train_set,
            batch_size=int(self.cfg["batch_size"]),
            shuffle=True,
            drop_last=True,
            num_workers=workers,
            persistent_workers=workers > 0,
            generator=g,
        )


class _RecordTransform:
    """RecordIO images (RGB HWC uint8) → the backbone's size and colour order, CHW uint8 tensor."""

    def __init__(self, size: int, color: str) -> None:
        self.size, self.color = size, color

    def __call__(self, img: Any) -> torch.Tensor:
        import cv2

        if img.shape[:2] != (self.size, self.size):
            img = cv2.resize(img, (self.size, self.size), interpolation=cv2.INTER_AREA)
        if self.color == "BGR":
            img = img[:, :, ::-1]
        return torch.from_numpy(img.copy()).permute(2, 0, 1).contiguous()


class _Augmented(torch.utils.data.Dataset):
    """Applies the config's per-sample transforms to a dataset's CHW uint8 images (not to skipped ones)."""

    def __init__(self, base: Any, transform: Any) -> None:
        self.base, self.transform = base, transform

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        img, label = self.base[i]
        return (self.transform(img) if label >= 0 else img), label
