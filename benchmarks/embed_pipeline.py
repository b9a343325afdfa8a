"""Benchmark: pipelined folder embedding (``faceforge.infer.pipeline``) vs one image at a time.

Both paths use the same components on the same LFW photos (``lfw-deepfunneled`` from the shared
folder, sorted, the first ``--n``): the guarded decoder, YuNet (``--detector``), the crop for the
model's template, and the dlib ResNet (``FaceRecognizer.from_pretrained("dlib")``, 128-d, flip test).

* **sequential**: ``recognizer.embed(path)`` per photo: decode → detect → crop → embed a batch of 1;
* **pipeline**: :func:`faceforge.infer.pipeline.embed_folder`: ``--workers`` threads decode, detect
  and crop (each with its own YuNet), the main thread embeds batches of ``--batch``.

Torch runs one intra-op thread in both (the machine's other core is what the workers use; on a
shared machine two torch threads stall). The script checks that both give the same outcome per
photo and the same embeddings (max |diff| printed, 1e-5 asserted), prints img/s of each and the
ratio (target >= 1.8x on 2 cores for 1,000 photos), then the peak RSS of the pipeline on
``--rss-sizes`` photos, each in a fresh subprocess (model loaded, peak reset, then the run): equal
peaks for 1,000 and 5,000 photos mean memory does not grow with the folder. Skips (exit 0) when
the photos or the detector file are absent.

    PYTHONPATH=src python benchmarks/embed_pipeline.py                      # 1,000 photos, RSS 1k/5k
    PYTHONPATH=src python benchmarks/embed_pipeline.py --n 200 --rss-sizes ''   # quick look
"""

from __future__ import annotations

import os

# One thread for BLAS/OpenMP before numpy/torch load (see above); torch.set_num_threads(1) below.
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import json  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("FACEFORGE_SHARED", REPO.parent / "shared"))


def lfw_photos(root: Path, n: int) -> list[Path]:
    """The first ``n`` LFW photos in sorted order (identity folders, then file names)."""
    return sorted(root.glob("*/*.jpg"))[:n]


def _status_mb(field: str) -> float:
    """A ``/proc/self/status`` memory field (``VmRSS``: now, ``VmHWM``: peak) in MiB."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024.0
    raise RuntimeError(f"{field} not in /proc/self/status")


def reset_peak_rss() -> bool:
    """Start a new peak-RSS window (Linux >= 4.0: ``echo 5 > /proc/self/clear_refs``)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def build(detector: str) -> Any:
    """The dlib ResNet recognizer with ``detector``, warmed up (first-call allocations untimed)."""
    import numpy as np
    import torch

    from faceforge import FaceRecognizer

    torch.set_num_threads(1)
    rec = FaceRecognizer.from_pretrained("dlib", detector=detector)
    rec.embed_crops(np.zeros((2, *rec.face_cfg.input_size, 3), np.uint8))
    return rec


def rss_child(args: argparse.Namespace) -> int:
    """Subprocess mode: load the model, run the pipeline on ``--rss-child`` photos, print JSON.

    The peak is taken over the run only (the model load's own transient peak is cleared first), so the
    numbers for different folder sizes compare what the pipeline holds.
    """
    from faceforge.infer.pipeline import embed_folder

    rec = build(args.detector)
    files = lfw_photos(Path(args.lfw), args.rss_child)
    windowed = reset_peak_rss()
    before = _status_mb("VmRSS")
    t0 = time.perf_counter()
    res = embed_folder(rec, files, workers=args.workers, batch_size=args.batch, progress=False)
    seconds = time.perf_counter() - t0
    out = {"n": len(files), "rss_before_mb": before, "peak_rss_mb": _status_mb("VmHWM"), "windowed": windowed,
           "img_per_s": len(files) / seconds, "ok": res.counts["ok"]}  # fmt: skip
    print(json.dumps(out))
    return 0


def main(argv: list[str] | None = None) -> int:
    """Time both paths on the same photos, check they agree, print the ratio and the RSS runs."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=1000, help="photos timed with both paths")
    ap.add_argument("--workers", type=int, default=2, help="decode/detect/crop threads of the pipeline")
    ap.add_argument("--batch", type=int, default=32, help="recognition batch of the pipeline")
    ap.add_argument("--detector", default="yunet")
    ap.add_argument("--lfw", default=str(SHARED / "data/lfw/lfw-deepfunneled"))
    ap.add_argument("--rss-sizes", default="1000,5000", help="photo counts for the peak-RSS runs ('' = none)")
    ap.add_argument("--min-ratio", type=float, default=0.0, help="exit 1 when pipeline/sequential is below")
    ap.add_argument("--rss-child", type=int, default=0, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    os.environ.setdefault("FACEFORGE_MODEL_DIRS", str(SHARED / "models/detectors"))

    if not Path(args.lfw).is_dir():
        print(f"skipped: LFW photos not found at {args.lfw} (set FACEFORGE_SHARED or --lfw)")
        return 0
    from faceforge.align.choose import auto_detector_name

    if args.detector in ("yunet", "auto") and auto_detector_name() not in ("yunet", "scrfd"):
        print(f"skipped: no YuNet file in $FACEFORGE_MODEL_DIRS={os.environ['FACEFORGE_MODEL_DIRS']}")
        return 0
    if args.rss_child:
        return rss_child(args)

    import numpy as np
    import torch

    from faceforge.errors import FaceforgeError
    from faceforge.infer.pipeline import embed_folder

    files = lfw_photos(Path(args.lfw), args.n)
    for f in files:  # warm the page cache, so that neither run pays for the disk
        f.read_bytes()
    rec = build(args.detector)
    rec.embed(files[0])  # builds the sequential path's detector
    load = os.getloadavg()
    print(f"{len(files)} LFW photos, detector {args.detector}, model dlib ResNet ({rec.backend}), "
          f"torch {torch.__version__} with {torch.get_num_threads()} thread, {os.cpu_count()} CPUs, "
          f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")  # fmt: skip

    t0 = time.perf_counter()
    res = embed_folder(rec, files, workers=args.workers, batch_size=args.batch, progress=False)
    pipe_s = time.perf_counter() - t0

    t0 = time.perf_counter()
    seq: list[np.ndarray | None] = []
    for f in files:
        try:
            seq.append(rec.embed(f)[0])
        except FaceforgeError:
            seq.append(None)
    seq_s = time.perf_counter() - t0

    same_outcomes = [o.ok for o in res.outcomes] == [e is not None for e in seq]
    ok_seq = np.stack([e for e in seq if e is not None])
    diff = float(np.abs(res.embeddings - ok_seq).max()) if same_outcomes else float("inf")
    seq_ips, pipe_ips = len(files) / seq_s, len(files) / pipe_s
    ratio = pipe_ips / seq_ips
    print(f"outcomes: {res.counts}; identical per photo: {same_outcomes}; max |embedding diff| {diff:.2e}")
    print("| path | s | img/s |")
    print("|---|---:|---:|")
    print(f"| sequential (embed per photo) | {seq_s:.1f} | {seq_ips:.1f} |")
    print(f"| pipeline ({args.workers} workers, batch {args.batch}) | {pipe_s:.1f} | {pipe_ips:.1f} |")
    print(f"pipeline / sequential: {ratio:.2f}x (target >= 1.8x)")
    if not same_outcomes or diff > 1e-5:
        print("the pipeline and the sequential loop disagree", file=sys.stderr)
        return 1

    sizes = [int(s) for s in args.rss_sizes.split(",") if s.strip()]
    if sizes:
        print(
            "| photos | RSS before the run (MiB) | peak RSS during the run (MiB) | increase (MiB) | img/s |"
        )
        print("|---:|---:|---:|---:|---:|")
    for n in sizes:
        cmd = [sys.executable, __file__, "--rss-child", str(n), "--workers", str(args.workers),
               "--batch", str(args.batch), "--detector", args.detector, "--lfw", args.lfw]  # fmt: skip
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]
        r = json.loads(out)
        grow = r["peak_rss_mb"] - r["rss_before_mb"]
        note = "" if r["windowed"] else " (peak includes the model load)"
        print(f"| {r['n']} | {r['rss_before_mb']:.0f} | {r['peak_rss_mb']:.0f}{note} | {grow:.0f} | "
              f"{r['img_per_s']:.1f} |")  # fmt: skip
    if ratio < args.min_ratio:
        print(f"ratio {ratio:.2f}x is below --min-ratio {args.min_ratio}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
