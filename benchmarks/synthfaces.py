"""SynthFaces rendering speed: aligned 112x112 images/s on one core.

Target: >= 500 aligned images/s per core. The baseline, measured in the same run, renders the same
images without the per-identity geometry cache (every image rebuilds its identity's polygons), which
is how the renderer would work without the affine-in-expression precomputation.

    python benchmarks/synthfaces.py [--n 2000] [--identities 50]
"""

from __future__ import annotations

import argparse
import os
import time

import cv2

from faceforge.data.synth.render import SynthFaces, render


def main() -> None:
    """Print images/s for cached and uncached rendering, and their ratio."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--n", type=int, default=2000, help="images to render per variant")
    ap.add_argument("--identities", type=int, default=50)
    ap.add_argument("--mode", default="aligned", choices=["aligned", "wild"])
    args = ap.parse_args()
    cv2.setNumThreads(1)  # per-core figure
    os.environ.setdefault("OMP_NUM_THREADS", "1")

    synth = SynthFaces(seed=0, mode=args.mode)
    t = time.perf_counter()
    for k in range(args.n):
        synth.image(k % args.identities, k)
    cached = args.n / (time.perf_counter() - t)  # includes building each identity's geometry once

    n_base = max(1, args.n // 4)
    t = time.perf_counter()
    for k in range(n_base):
        ident = k % args.identities
        render(synth.identity(ident), synth.variation(ident, k), args.mode)
    baseline = n_base / (time.perf_counter() - t)

    print(f"SynthFaces {args.mode}: {cached:.0f} img/s per core (target >= 500)")
    print(f"baseline without geometry cache: {baseline:.0f} img/s per core")
    print(f"ratio cached / baseline: {cached / baseline:.2f}x")


if __name__ == "__main__":
    main()
