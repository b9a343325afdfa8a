"""Face-detector benchmark on LFW: detection rate and speed per backend.

For each detector, runs ``detect`` on N LFW images (default 200, a fixed random sample of
identities; never the full set on a shared machine) and prints: success rate (a face whose box
centre is within 40 px of the image centre, where LFW puts the named person), median and p95
milliseconds per image, and images per second (1 / mean). Single process, the detector's default
threads. Model files come from the store or ``--model-dir`` (e.g. ../shared/models/detectors).

    python benchmarks/detectors.py --n 200 --model-dir ../shared/models/detectors:../shared/models/mtcnn
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

from faceforge.align import create_detector, list_detectors
from faceforge.errors import FaceforgeError

REPO = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=200, help="number of LFW images")
    ap.add_argument("--lfw", default=str(REPO.parent / "shared/data/lfw/lfw-deepfunneled"))
    ap.add_argument("--model-dir", default=None, help="extra model folders (os.pathsep-separated)")
    ap.add_argument("--detectors", default=",".join(list_detectors()))
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    if args.model_dir:
        os.environ["FACEFORGE_MODEL_DIRS"] = args.model_dir
    root = Path(args.lfw)
    if not root.is_dir():
        print(f"LFW folder {root} not found (--lfw)", file=sys.stderr)
        return 2
    people = sorted(p for p in root.iterdir() if p.is_dir())
    rng = random.Random(args.seed)
    files = [sorted(p.glob("*.jpg"))[0] for p in rng.sample(people, min(args.n, len(people)))]
    imgs = [cv2.cvtColor(cv2.imread(str(f)), cv2.COLOR_BGR2RGB) for f in files]
    print(f"{len(imgs)} LFW images (250x250), {os.cpu_count()} CPUs, cv2 threads {cv2.getNumThreads()}")
    print(f"{'detector':<12} {'found':>8} {'rate':>7} {'med ms':>8} {'p95 ms':>8} {'img/s':>7}")
    for name in args.detectors.split(","):
        try:
            det = create_detector(name)
        except FaceforgeError as e:
            print(f"{name:<12} skipped: {e}")
            continue
        for im in imgs[: args.warmup]:
            det.detect(im)
        times, found = [], 0
        for im in imgs:
            t = time.perf_counter()
            faces = det.detect(im)
            times.append(time.perf_counter() - t)
            h, w = im.shape[:2]
            found += any(np.abs(f.bbox.reshape(2, 2).mean(0) - (w / 2, h / 2)).max() < 40 for f in faces)
        ms = np.array(times) * 1000
        print(
            f"{name:<12} {found:>4}/{len(imgs):<3} {found / len(imgs):>7.1%} {np.median(ms):>8.1f} "
            f"{np.percentile(ms, 95):>8.1f} {1000 / ms.mean():>7.1f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
