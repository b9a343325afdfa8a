"""Decoded + augmented images per second: insightface RecordIO vs a plain folder of the same JPEGs.

Writes N synthetic 112x112 JPEGs to a temporary folder, packs the same bytes into a ``.rec``, then
times shuffled epochs (best of ``--repeats``, interleaved) through a DataLoader for each reader and
each worker count (the first batch, which includes worker start-up, is not timed). Prints img/s and
the RecordIO / folder ratio (target >= 1.0). Small by default; ``--images`` and ``--workers`` scale it up.
Then the training path's per-sample seeding (each image's augmentation drawn from its own seed, so
it does not depend on workers or resume): 64x64 crops through ``DIGIFACE_AUGMENT`` unseeded, seeded
as training does, and seeded through ``torch.manual_seed`` (the earlier way, which also queues a seed
for every accelerator backend); target: seeded / unseeded >= 0.8 (saving and restoring the
global generator is the rest).

    python benchmarks/data_loading.py [--images 1500] [--workers 0 1 2] [--batch 64]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from faceforge.data.recordio import FaceRecordDataset, decode_image, write_face_rec
from faceforge.data.transforms import DIGIFACE_AUGMENT, build_transforms
from faceforge.train.datamodule import _Augmented

AUG = [
    {"name": "flip", "p": 0.5},
    {"name": "random_resized_crop", "size": 112, "scale": [0.9, 1.0]},
    {"name": "color_jitter", "brightness": 0.2, "contrast": 0.2},
]


class FolderDataset(Dataset):
    """The plain-folder baseline: open, read, decode, augment."""

    def __init__(self, samples: list[tuple[str, int]], transform: object) -> None:
        self.samples = samples
        self.transform = transform

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        path, label = self.samples[i]
        img = decode_image(Path(path).read_bytes())
        img = self.transform(img)
        return torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1))), label


def make_images(root: Path, n: int, classes: int, seed: int = 0) -> list[tuple[str, int, bytes]]:
    """Write ``n`` face-sized JPEGs (smooth random texture, ~5-8 KB each) in ``classes`` folders."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        label = i * classes // n
        small = rng.integers(0, 256, (14, 14, 3), dtype=np.uint8)
        img = cv2.resize(small, (112, 112), interpolation=cv2.INTER_CUBIC)
        img = cv2.add(img, rng.integers(0, 12, img.shape, dtype=np.uint8))
        data = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 90])[1].tobytes()
        d = root / f"id{label:05d}"
        d.mkdir(parents=True, exist_ok=True)
        p = d / f"id{label:05d}_{i:06d}.jpg"
        p.write_bytes(data)
        out.append((str(p), label, data))
    return out


def images_per_second(ds: Dataset, workers: int, batch: int, seed: int = 0) -> float:
    """Time one shuffled epoch (after the first batch)."""
    g = torch.Generator().manual_seed(seed)
    dl = DataLoader(ds, batch_size=batch, shuffle=True, num_workers=workers, generator=g, drop_last=True)
    it = iter(dl)
    next(it)
    n = 0
    t0 = time.perf_counter()
    for x, _ in it:
        n += x.shape[0]
    dt = time.perf_counter() - t0
    return n / dt if dt > 0 else float("nan")


class _Crops(Dataset):
    """Cached 64x64 CHW uint8 crops, as ``data.cache: true`` holds them."""

    def __init__(self, n: int) -> None:
        g = torch.Generator().manual_seed(0)
        self.x = torch.randint(0, 256, (n, 3, 64, 64), dtype=torch.uint8, generator=g)

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.x[i], 0


class _GlobalSeeded(_Augmented):
    """The baseline: each sample seeded through ``torch.manual_seed`` (every backend's generator)."""

    def __getitem__(self, key: tuple[int, int]) -> tuple[torch.Tensor, int]:
        i, sample_seed = key
        img, label = self.base[i]
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(sample_seed % 2**63)
            return self.transform(img), label


def seeding(n: int, repeats: int) -> None:
    """Augmented 64x64 crops per second: unseeded, seeded as training does, seeded the old way."""
    tf = build_transforms(list(DIGIFACE_AUGMENT))
    base = _Crops(n)
    seeded, old = _Augmented(base, tf), _GlobalSeeded(base, tf)
    runs = {
        "unseeded": lambda: [tf(base[i][0]) for i in range(n)],
        "seeded (training)": lambda: [seeded[(i, 7 * i + 1)] for i in range(n)],
        "torch.manual_seed": lambda: [old[(i, 7 * i + 1)] for i in range(n)],
    }
    best = dict.fromkeys(runs, 0.0)
    for _ in range(repeats):  # interleaved, best of N
        for name, run in runs.items():
            t0 = time.perf_counter()
            run()
            best[name] = max(best[name], n / (time.perf_counter() - t0))
    print(f"\nper-sample seeding, {n} crops 64x64, DIGIFACE_AUGMENT, 1 thread")
    for name, v in best.items():
        print(f"{name:>18} {v:>8.0f} img/s {v / best['unseeded']:>6.2f}x of unseeded")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=1500)
    ap.add_argument("--classes", type=int, default=100)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--repeats", type=int, default=2, help="timed epochs per reader (best is kept)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    with tempfile.TemporaryDirectory(prefix="ff_bench_") as tmp:
        root = Path(tmp)
        items = make_images(root / "folder", args.images, args.classes)
        write_face_rec(root / "rec", [(lab, data) for _, lab, data in items])
        mb = sum(len(d) for *_, d in items) / 2**20
        print(f"{args.images} JPEGs 112x112 ({mb:.1f} MiB), {args.classes} classes, batch {args.batch}")
        print(f"augmentations: {[a['name'] for a in AUG]}")
        tf = build_transforms(AUG)
        rec_ds = FaceRecordDataset(root / "rec", transform=tf)
        folder_ds = FolderDataset([(p, lab) for p, lab, _ in items], tf)
        print(f"{'workers':>7} {'recordio img/s':>15} {'folder img/s':>13} {'ratio':>6}")
        for w in args.workers:
            images_per_second(rec_ds, w, args.batch)  # warm the page cache and the code paths
            images_per_second(folder_ds, w, args.batch)
            r = f = 0.0
            for rep in range(args.repeats):  # interleaved; best of N (the machine may be shared)
                r = max(r, images_per_second(rec_ds, w, args.batch, seed=rep))
                f = max(f, images_per_second(folder_ds, w, args.batch, seed=rep))
            print(f"{w:>7} {r:>15.0f} {f:>13.0f} {r / f:>6.2f}")
    seeding(args.images, args.repeats + 1)


if __name__ == "__main__":
    main()
