"""Face-detector benchmark on LFW: detection rate and speed per backend.

For each detector, runs ``detect`` on N LFW images (default 200, a fixed random sample of
identities; never the full set on a shared machine) and prints: success rate (a face whose box
centre is within 40 px of the image centre, where LFW puts the named person), median and p95
milliseconds per image, and images per second (1 / mean). Single process, the detector's default
threads. Model files come from the store or ``--model-dir`` (e.g. ../shared/models/detectors).

    python benchmarks/detectors.py --n 200 --model-dir ../shared/models/detectors:../shared/models/mtcnn

``--batch-size N`` runs ``detect_batch`` on N images at a time (real batches for SCRFD / RetinaFace /
dynamic-batch YOLOv8-Face files, a loop elsewhere) and charges each image the call's time / N, so
img/s compares directly with batch 1; ``--threads`` sets the onnxruntime / LiteRT threads and
``--device auto|cpu|cuda`` where the onnxruntime / YuNet detectors run.

    python benchmarks/detectors.py --n 200 --detectors scrfd,retinaface --batch-size 16 --threads 1 \
        --model-dir ../shared/models/detectors

``--full-lfw`` runs every image of the LFW folder (13,233) instead of a sample, one thread (cv2,
onnxruntime, LiteRT, torch), and prints per detector: images with any face ("any"), with a face
centred within 40 px ("centred"), median / p95 ms and img/s of ``detect`` (decoding not timed),
and the first few files without a face. Images are decoded one at a time (no 13k-image cache).

    python benchmarks/detectors.py --full-lfw --detectors yunet,scrfd,retinaface \
        --model-dir ../shared/models/detectors
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import time
from pathlib import Path

import cv2
import numpy as np

from faceforge.align import list_detectors
from faceforge.align.detectors.base import create_detector_loose
from faceforge.errors import FaceforgeError

REPO = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=200, help="number of LFW images")
    ap.add_argument("--lfw", default=str(REPO.parent / "shared/data/lfw/lfw-deepfunneled"))
    ap.add_argument("--model-dir", default=None, help="extra model folders (os.pathsep-separated)")
    # dlib_mmod (the MMOD CNN) takes ~2.4 s per LFW image on one core: only when named.
    ap.add_argument("--detectors", default=",".join(d for d in list_detectors() if d != "dlib_mmod"))
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--full-lfw", action="store_true", help="all LFW images, one thread (long)")
    ap.add_argument("--batch-size", type=int, default=1, help="images per detect_batch call")
    ap.add_argument("--threads", type=int, default=None, help="onnxruntime / LiteRT threads")
    ap.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    args = ap.parse_args(argv)
    if args.threads:
        cv2.setNumThreads(args.threads)
    if args.model_dir:
        os.environ["FACEFORGE_MODEL_DIRS"] = args.model_dir
    root = Path(args.lfw)
    if not root.is_dir():
        print(f"LFW folder {root} not found (--lfw)", file=sys.stderr)
        return 2
    if args.full_lfw:
        return full_lfw(root, args.detectors.split(","), args.warmup, args.batch_size, args.device)
    people = sorted(p for p in root.iterdir() if p.is_dir())
    rng = random.Random(args.seed)
    files = [sorted(p.glob("*.jpg"))[0] for p in rng.sample(people, min(args.n, len(people)))]
    imgs = [cv2.cvtColor(cv2.imread(str(f)), cv2.COLOR_BGR2RGB) for f in files]
    print(
        f"{len(imgs)} LFW images (250x250), {os.cpu_count()} CPUs, cv2 threads {cv2.getNumThreads()}, "
        f"batch {args.batch_size}, device {args.device}"
    )
    print(f"{'detector':<12} {'found':>8} {'rate':>7} {'med ms':>8} {'p95 ms':>8} {'img/s':>7}")
    opts = {"device": args.device} | ({"threads": args.threads} if args.threads else {})
    b = max(1, args.batch_size)
    for name in args.detectors.split(","):
        try:
            det = create_detector_loose(name, None, opts)
        except FaceforgeError as e:
            print(f"{name:<12} skipped: {e}")
            continue
        det.detect_batch(imgs[: max(args.warmup, b)])
        times, found = [], 0
        for s in range(0, len(imgs), b):
            chunk = imgs[s : s + b]
            t = time.perf_counter()
            per_image = det.detect_batch(chunk) if b > 1 else [det.detect(chunk[0])]
            times += [(time.perf_counter() - t) / len(chunk)] * len(chunk)
            for im, faces in zip(chunk, per_image):
                h, w = im.shape[:2]
                found += any(np.abs(f.bbox.reshape(2, 2).mean(0) - (w / 2, h / 2)).max() < 40 for f in faces)
        ms = np.array(times) * 1000
        print(
            f"{name:<12} {found:>4}/{len(imgs):<3} {found / len(imgs):>7.1%} {np.median(ms):>8.1f} "
            f"{np.percentile(ms, 95):>8.1f} {1000 / ms.mean():>7.1f}"
        )
    return 0


def _centred(faces: list, w: int, h: int) -> bool:
    return any(np.abs(f.bbox.reshape(2, 2).mean(0) - (w / 2, h / 2)).max() < 40 for f in faces)


def full_lfw(root: Path, names: list[str], warmup: int, batch_size: int = 1, device: str = "auto") -> int:
    """Every image under ``root``: detection rate (any face / centred face) and speed per detector."""
    cv2.setNumThreads(1)
    try:
        import torch

        torch.set_num_threads(1)
    except ImportError:
        pass
    files = sorted(root.glob("*/*.jpg"))
    print(f"{len(files)} LFW images under {root}, 1 thread, {os.cpu_count()} CPUs (shared machine)")
    print(f"{'detector':<14} {'any':>13} {'centred':>13} {'med ms':>8} {'p95 ms':>8} {'img/s':>7}")
    for name in names:
        try:
            det = create_detector_loose(name, None, {"threads": 1, "device": device})
        except FaceforgeError as e:
            print(f"{name:<14} skipped: {e}")
            continue
        first = cv2.cvtColor(cv2.imread(str(files[0])), cv2.COLOR_BGR2RGB)
        for _ in range(warmup):
            det.detect(first)
        times, anyf, centred, missed = [], 0, 0, []
        b = max(1, batch_size)
        for s in range(0, len(files), b):
            chunk = files[s : s + b]
            ims = [cv2.cvtColor(cv2.imread(str(f)), cv2.COLOR_BGR2RGB) for f in chunk]
            t = time.perf_counter()
            per_image = det.detect_batch(ims) if b > 1 else [det.detect(ims[0])]
            times += [(time.perf_counter() - t) / len(ims)] * len(ims)
            for f, im, faces in zip(chunk, ims, per_image):
                h, w = im.shape[:2]
                anyf += bool(faces)
                centred += _centred(faces, w, h)
                if not faces:
                    missed.append(f.name)
        ms = np.array(times) * 1000
        n = len(files)
        print(
            f"{name:<14} {anyf:>5} {anyf / n:>7.2%} {centred:>5} {centred / n:>7.2%} {np.median(ms):>8.1f} "
            f"{np.percentile(ms, 95):>8.1f} {1000 / ms.mean():>7.1f}",
            flush=True,
        )
        if missed:
            print(
                f"{'':<14} no face in {len(missed)}: {', '.join(missed[:8])}"
                + (" ..." if len(missed) > 8 else "")
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
