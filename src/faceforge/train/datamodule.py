"""LightningDataModule: the training images (an ImageFolder, a ``.rec`` or a split file's train part),
the validation sets and the retrieval validation data of the config. The training order comes from
:class:`ResumableSampler` (one permutation per ``(seed, epoch)``, cut into global batches of
``batch_size · world_size`` images, rank ``r`` taking the ``r``-th slice of each) or, with
``data.sampler: {name: pk}``, from :class:`ResumablePKSampler` (P classes × K images per batch);
the module saves how many images of the current epoch were trained (``state_dict``), so a run
resumed from a mid-epoch checkpoint continues with the very next batch, also at another world size.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Sampler

from faceforge.data.folder import FileListDataset, ImageFolderDataset
from faceforge.data.pair_images import PairImages, load_pair_images
from faceforge.data.pairs import read_pairs
from faceforge.data.samplers import PKBatchSampler
from faceforge.errors import FaceforgeError
from faceforge.train._lightning import batches_processed


def resolve(root: str | Path, rel: str | None) -> Path | None:
    """``rel`` joined to the data root (absolute paths are kept); ``None`` stays ``None``."""
    if rel is None:
        return None
    p = Path(rel)
    return p if p.is_absolute() else Path(root) / p


class FaceDataModule(L.LightningDataModule):
    """Training images of ``data.train`` (or ``data.split``'s train part) and the config's validation sets."""

    def __init__(self, data_cfg: dict[str, Any], seed: int = 0) -> None:
        super().__init__()
        self.cfg = data_cfg
        self.seed = seed
        self._resume: dict[str, Any] | None = None
        self.sampler: ResumableSampler | ResumablePKSampler | None = None
        self.split: Any = None
        root = Path(data_cfg["root"])
        size = int(data_cfg["image_size"])
        self.train_set: Any
        if data_cfg.get("split"):
            from faceforge.data.splits import Split

            path = resolve(root, data_cfg["split"])
            assert path is not None
            if not path.is_file():
                raise FaceforgeError(
                    f"data.split: split file {path} does not exist (`faceforge data split` writes one)"
                )
            self.split = Split.load(path)
            self.train_dir = path
            # Paths in the split are absolute: nothing is copied or linked.
            self.train_set = FileListDataset(
                self.split.samples("train", label="auto"),
                size,
                cache=bool(data_cfg["cache"]),
                class_names=self.split.classes,
            )
        else:
            if not root.is_dir():
                raise FaceforgeError(
                    f"data directory {root} does not exist (set --data.root; `faceforge data synth --out "
                    f"{root}` makes a SynthFaces set there)"
                )
            self.train_dir = resolve(root, data_cfg["train"])
            if self.train_dir.suffix == ".rec":
                from faceforge.data.recordio import FaceRecordDataset

                self.train_set = FaceRecordDataset(self.train_dir, transform=_RecordTransform(size))
            elif data_cfg.get("mixup"):
                from faceforge.data.mixup import MixupFolderDataset

                mix = resolve(root, data_cfg["mixup"])
                assert mix is not None
                self.train_set = MixupFolderDataset(self.train_dir, mix, size, cache=bool(data_cfg["cache"]))
            else:
                self.train_set = ImageFolderDataset(self.train_dir, size, cache=bool(data_cfg["cache"]))
        if data_cfg.get("mixup") and not hasattr(self._base, "mixup"):
            raise FaceforgeError("data.mixup needs an ImageFolder data.train (not data.split or a .rec file)")
        if data_cfg.get("augment"):
            from faceforge.data.transforms import build_transforms

            self.train_set = _Augmented(self.train_set, build_transforms(data_cfg["augment"]))
        self.pk: tuple[int, int] | None = None
        sm = data_cfg.get("sampler")
        if sm is not None and data_cfg.get("mixup"):
            raise FaceforgeError(
                "data.mixup and data.sampler (P×K) cannot be combined: a mixed identity is no class"
            )
        if sm is not None:
            k = int(sm["samples_per_class"])
            p = sm["classes_per_batch"]
            n_cls = len(np.unique(self._base.labels))
            if p is None:  # as many classes as fit in a batch (and exist)
                p = min(int(data_cfg["batch_size"]) // k, n_cls)
            if int(p) > n_cls:
                raise FaceforgeError(
                    f"data.sampler.classes_per_batch {p} is more than the {n_cls} classes of {self.train_dir}"
                )
            self.pk = (int(p), k)
        if len(self.train_set) < self.batch_size:
            raise FaceforgeError(
                f"{self.train_dir} has {len(self.train_set)} decodable images, fewer than one batch "
                f"(data.batch_size={data_cfg['batch_size']})"
            )

    @property
    def batch_size(self) -> int:
        """Images per device and step: ``data.batch_size``, or P·K with the P×K sampler."""
        return self.pk[0] * self.pk[1] if self.pk is not None else int(self.cfg["batch_size"])

    def global_micro_batch(self, world_size: int) -> int:
        """Images of one forward pass over all ``world_size`` ranks."""
        return self.batch_size * int(world_size)

    @property
    def num_classes(self) -> int:
        """Number of training identities."""
        return self._base.num_classes

    @property
    def mixup(self) -> Any:
        """The :class:`~faceforge.data.mixup.MixupTable` of ``data.mixup`` (labels past
        :attr:`num_classes`), or ``None``."""
        return getattr(self._base, "mixup", None)

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
        return load_pair_images(pairs, self.cfg["image_size"])

    def val_sets(self) -> dict[str | None, PairImages]:
        """The verification sets scored during training: ``data.val_sets`` by name, else ``data.val_pairs``
        under the name ``None`` (logged as plain ``val/acc``), else none."""
        sets = self.cfg.get("val_sets")
        if not sets:
            val = self.pair_images("val")
            return {} if val is None else {None: val}
        out: dict[str | None, PairImages] = {}
        for name, rel in sets.items():
            path = resolve(self.cfg["root"], rel)
            assert path is not None
            if not path.is_file():
                raise FaceforgeError(f"data.val_sets.{name}: {path} does not exist (a .bin or a pair list)")
            out[name] = load_verification_set(path, int(self.cfg["image_size"]))
        return out

    def retrieval_data(self, part: str) -> tuple[Any, Any]:
        """``(gallery, queries)`` datasets of retrieval validation: the split's train part (the
        training images without augmentation) and its ``part``, both with class labels."""
        if self.split is None:
            raise FaceforgeError(
                "validation.retrieval needs data.split (a split file from `faceforge data split`)"
            )
        if self.split.classes is None:
            raise FaceforgeError(
                f"validation.retrieval needs a class-layout split (root/<class>/<ID>_<seq>.jpg): "
                f"{self.train_dir} has layout {self.split.layout!r}, whose parts share no labels"
            )
        queries = FileListDataset(
            self.split.samples(part, label="class"),
            int(self.cfg["image_size"]),
            cache=bool(self.cfg["cache"]),
            class_names=self.split.classes,
        )
        return self._base, queries

    def make_sampler(self, world_size: int = 1, rank: int = 0) -> ResumableSampler | ResumablePKSampler:
        """The training sampler for this rank, positioned where a loaded checkpoint left off."""
        sampler: ResumableSampler | ResumablePKSampler
        with_seed = isinstance(self.train_set, _Augmented)
        if self.pk is not None:
            sampler = ResumablePKSampler(
                self._base.labels,
                *self.pk,
                world_size=world_size,
                rank=rank,
                seed=self.seed,
                with_seed=with_seed,
            )
        else:
            sampler = ResumableSampler(
                len(self.train_set),
                int(self.cfg["batch_size"]),
                world_size=world_size,
                rank=rank,
                seed=self.seed,
                with_seed=with_seed,
            )
        if self._resume is not None:
            sampler.resume(int(self._resume["epoch"]), int(self._resume["consumed_samples"]))
        return sampler

    def train_dataloader(self) -> DataLoader:
        trainer = getattr(self, "trainer", None)
        world, rank = (trainer.world_size, trainer.global_rank) if trainer is not None else (1, 0)
        self.sampler = self.make_sampler(world, rank)
        # The loader's own generator (not torch's global one) seeds worker processes, so fetching
        # batches never moves the global RNG that the training step draws from.
        g = torch.Generator()
        g.manual_seed(self.seed)
        workers = int(self.cfg["num_workers"]) if self.cfg["num_workers"] != "auto" else 0
        if isinstance(self.sampler, ResumablePKSampler):
            return DataLoader(
                self.train_set,
                batch_sampler=self.sampler,
                num_workers=workers,
                persistent_workers=workers > 0,
                generator=g,
            )
        return DataLoader(
            self.train_set,
            batch_size=int(self.cfg["batch_size"]),
            sampler=self.sampler,
            drop_last=True,
            num_workers=workers,
            persistent_workers=workers > 0,
            generator=g,
        )

    def state_dict(self) -> dict[str, Any]:
        """Training position: epoch and images of it already trained (over all ranks)."""
        trainer = getattr(self, "trainer", None)
        if trainer is None or getattr(self, "sampler", None) is None:
            return {}
        done = batches_processed(trainer)
        return {
            "epoch": int(trainer.current_epoch),
            "batches_done": done,
            "consumed_samples": done * self.sampler.global_batch,
            "global_micro_batch": self.sampler.global_batch,
            "seed": self.seed,
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Remember the position; :meth:`train_dataloader` starts the sampler there."""
        self._resume = dict(state_dict) if state_dict else None


def load_verification_set(path: Path, size: int) -> PairImages:
    """A verification set from an insightface ``.bin`` (image pairs inline) or a pair list, at ``size``²."""
    if path.suffix.lower() == ".bin":
        from faceforge.data.binset import read_bin

        bs = read_bin(path)
        arr, ok = bs.decode_all((size, size))
        n = len(bs.issame)
        bad = [f"{path} image {i}" for i in np.flatnonzero(~ok)]
        return PairImages(
            torch.from_numpy(arr).permute(0, 3, 1, 2).contiguous(),
            np.arange(0, 2 * n, 2),
            np.arange(1, 2 * n, 2),
            np.asarray(bs.issame, dtype=bool),
            bad,
        )
    return load_pair_images(read_pairs(path), size)


class _EpochPosition(Sampler):
    """Where a resumable sampler stands: the epoch (``set_epoch``) and the first step to yield.

    Subclasses set ``global_batch`` (images per optimizer step over all ranks) and ``num_batches``
    (steps per epoch); a run resumed mid-epoch continues with the very next step.
    """

    global_batch: int
    num_batches: int
    epoch: int = 0
    resume_epoch: int = -1
    start_batch: int = 0

    def set_epoch(self, epoch: int) -> None:
        """Select the batches of ``epoch`` (Lightning calls this before each epoch)."""
        self.epoch = int(epoch)

    def resume(self, epoch: int, consumed_samples: int) -> None:
        """Skip the first ``consumed_samples`` images of ``epoch`` (rounded down to whole steps)."""
        start = consumed_samples // self.global_batch
        if start >= self.num_batches:  # saved at the end of the epoch: the next one starts afresh
            epoch, start = epoch + 1, 0
        self.epoch = self.resume_epoch = int(epoch)
        self.start_batch = int(start)


class ResumableSampler(_EpochPosition):
    """Seeded per-epoch permutation, sharded over ranks by global batch, that can start mid-epoch.

    Args:
        n: dataset length.
        batch_size: images per rank per step.
        world_size, rank: the data-parallel group.
        seed: permutation seed (the same on every rank).
        with_seed: yield ``(index, sample_seed)`` pairs for datasets whose augmentation must not draw
            from the global RNG (see :class:`_Augmented`).
    """

    def __init__(
        self,
        n: int,
        batch_size: int,
        *,
        world_size: int = 1,
        rank: int = 0,
        seed: int = 0,
        with_seed: bool = False,
    ) -> None:
        self.n, self.batch_size, self.world_size, self.rank = n, batch_size, world_size, rank
        self.seed, self.with_seed = seed, with_seed
        self.global_batch = batch_size * world_size
        self.num_batches = n // self.global_batch
        if self.num_batches == 0:
            raise FaceforgeError(
                f"the training set has {n} images, fewer than one global batch (data.batch_size "
                f"{batch_size} x {world_size} devices)"
            )
        self.epoch = 0
        self.resume_epoch = -1
        self.start_batch = 0

    def __len__(self) -> int:
        # A full epoch, also when resuming: Lightning counts the batches already done itself.
        return self.num_batches * self.batch_size

    def __iter__(self):  # type: ignore[no-untyped-def]
        g = torch.Generator()
        g.manual_seed(self.seed * 1_000_003 + self.epoch)
        perm = torch.randperm(self.n, generator=g).tolist()
        skip = self.start_batch if self.epoch == self.resume_epoch else 0
        for k in range(skip, self.num_batches):
            base = k * self.global_batch + self.rank * self.batch_size
            for i in perm[base : base + self.batch_size]:
                yield (i, (self.seed * 1_000_003 + self.epoch) * 2_654_435_761 + i) if self.with_seed else i


class ResumablePKSampler(_EpochPosition):
    """P×K batches (:class:`~faceforge.data.samplers.PKBatchSampler`) that can start mid-epoch.

    The epoch's batches are a function of ``(seed, epoch)``; step ``s`` of rank ``r`` is batch
    ``s · world_size + r`` (PKBatchSampler's rank rule), so one step trains ``world_size`` P×K
    batches and the position is kept, like :class:`ResumableSampler`'s, in images over all ranks.
    Yields lists of indices (``(index, sample_seed)`` pairs with ``with_seed``): use it as a
    ``batch_sampler``.
    """

    def __init__(
        self,
        labels: Any,
        p: int,
        k: int,
        *,
        world_size: int = 1,
        rank: int = 0,
        seed: int = 0,
        with_seed: bool = False,
    ) -> None:
        self.pk = PKBatchSampler(labels, p, k, rank=rank, world_size=world_size, seed=seed)
        self.p, self.k, self.world_size, self.rank = p, k, world_size, rank
        self.seed, self.with_seed = seed, with_seed
        self.batch_size = p * k
        self.global_batch = self.batch_size * world_size
        self.num_batches = self.pk.num_batches // world_size  # steps per epoch
        self.epoch = 0
        self.resume_epoch = -1
        self.start_batch = 0

    @property
    def sampler(self) -> ResumablePKSampler:
        """Itself: Lightning calls ``set_epoch`` on ``loader.batch_sampler.sampler`` (not on the batch
        sampler), so without this every epoch would repeat the batches of epoch 0."""
        return self

    def __len__(self) -> int:
        # A full epoch, also when resuming: Lightning counts the batches already done itself.
        return self.num_batches

    def __iter__(self):  # type: ignore[no-untyped-def]
        self.pk.set_epoch(self.epoch)
        batches = self.pk.global_batches()
        skip = self.start_batch if self.epoch == self.resume_epoch else 0
        base = (self.seed * 1_000_003 + self.epoch) * 2_654_435_761
        for step in range(skip, self.num_batches):
            g = step * self.world_size + self.rank
            batch = batches[g]
            if self.with_seed:
                # One augmentation seed per position in the epoch (an image can recur in an epoch).
                yield [(i, base + g * self.batch_size + j) for j, i in enumerate(batch)]
            else:
                yield list(batch)


class _RecordTransform:
    """RecordIO images (RGB HWC uint8) → the backbone's size, RGB CHW uint8 tensor.

    Colour order and normalisation are the model's business (:func:`faceforge.models.face_cfg.preprocess`).
    """

    def __init__(self, size: int) -> None:
        self.size = size

    def __call__(self, img: Any) -> torch.Tensor:
        import cv2

        if img.shape[:2] != (self.size, self.size):
            img = cv2.resize(img, (self.size, self.size), interpolation=cv2.INTER_AREA)
        return torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1).contiguous()


class _Augmented(torch.utils.data.Dataset):
    """Applies the config's per-sample transforms to a dataset's CHW uint8 images (not to skipped ones).

    Indexed with ``(index, sample_seed)`` (from :class:`ResumableSampler`), the transforms draw from
    torch's RNG re-seeded for that sample and the global RNG is restored afterwards: an image's
    augmentation depends on (seed, epoch, index) only, not on worker count, prefetching or resume.
    """

    def __init__(self, base: Any, transform: Any) -> None:
        self.base, self.transform = base, transform

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, key: int | tuple[int, int]) -> tuple[torch.Tensor, int]:
        i, sample_seed = key if isinstance(key, tuple) else (key, None)
        img, label = self.base[i]
        if label < 0:
            return img, label
        if sample_seed is None:
            return self.transform(img), label
        with torch.random.fork_rng(devices=[]):
            # The CPU generator only, as fork_rng saves: torch.manual_seed would also queue a seed
            # for every accelerator backend, recording a stack trace each time (1.1 ms per image,
            # more than the augmentation itself on a 64-pixel crop). The draws are the same.
            torch.default_generator.manual_seed(sample_seed % 2**63)
            return self.transform(img), label
