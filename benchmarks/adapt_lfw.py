"""Unlabeled adaptation (AdaBN) of trained checkpoints to real photos, measured on LFW.

For each checkpoint the script scores LFW's 6,000 View-2 pairs of raw photos as ``faceforge eval``
does, then writes adapted copies (``faceforge models adapt``: BatchNorm statistics re-estimated, the
weights unchanged; Li et al., ICLR workshop 2017) from N photos of the 1,468 LFW people who appear in
no pair of pairs.txt (1,549 photos; no label is read, and nobody in the test pairs is among them) and
scores those. With several checkpoints it adds the fused row (mean cosine) before and after.

    python benchmarks/adapt_lfw.py [CKPT ...] [--lfw ../shared/data/lfw] [--sizes 100,400,0]
        [--detector scrfd --detector-model FILE] [--threads 2] [--work runs/adapt_lfw]

``--sizes``: adaptation set sizes (an even seeded sample; 0 = all 1,549). Prints accuracy, AUC, EER
and TAR@FAR=1e-3 per model and size.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

# LFW scoring, the adaptation photos and the fused row are synth_to_real.py's (this script's folder is
# on sys.path when it runs).
from synth_to_real import fused_row, lfw_other_people, score_lfw


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("checkpoints", nargs="*", help="default: the newest demo run's best.ckpt")
    ap.add_argument("--lfw", type=Path, default=Path("../shared/data/lfw"))
    ap.add_argument("--sizes", default="100,400,0", help="adaptation photos per run; 0: all of them")
    ap.add_argument("--detector", default="scrfd")
    ap.add_argument("--detector-model", default=None)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--work", type=Path, default=Path("runs/adapt_lfw"))
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    if not (args.lfw / "pairs.txt").is_file() or not (args.lfw / "lfw-deepfunneled").is_dir():
        print(f"skipped: LFW not found at {args.lfw} (expected pairs.txt and lfw-deepfunneled/; --lfw PATH)")
        return
    if not args.checkpoints:
        found = sorted(Path("runs/quickstart").glob("*/checkpoints/best.ckpt"))
        if not found:
            print("skipped: no checkpoint named and none from `make demo` in runs/quickstart/")
            return
        args.checkpoints = [str(found[-1])]
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    import cv2
    import torch

    from faceforge.eval.report import format_table
    from faceforge.infer.adapt import adapt_checkpoint

    torch.set_num_threads(args.threads)
    cv2.setNumThreads(args.threads)
    det_model = args.detector_model
    if det_model is None and args.detector == "scrfd":
        f = args.lfw.parents[1] / "models/detectors/scrfd_500m_bnkps.onnx"
        det_model = str(f) if f.is_file() else None
    args.work.mkdir(parents=True, exist_ok=True)
    photos = lfw_other_people(args.lfw)
    sizes = [int(s) for s in args.sizes.split(",")]
    print(f"adaptation photos: {len(photos)} of LFW people in no pair of pairs.txt")
    table: dict[str, Any] = {}
    results: list[dict[str, Any]] = []
    embs: dict[int, list[Any]] = {}
    for i, ck in enumerate(args.checkpoints):
        row, e = score_lfw(ck, args.lfw, args.detector, det_model, args.work / "crops")
        table[f"model {i} ({Path(ck).name})"] = row
        embs.setdefault(-1, []).append(e)
        results.append({"checkpoint": ck, "adapt_photos": None, "lfw": row})
        for n in sizes:
            k = n if n > 0 else len(photos)
            out = args.work / f"m{i}_adapted_{k}.ckpt"
            r = adapt_checkpoint(
                ck, photos, out, detector=args.detector, detector_model=det_model, max_images=k,
                seed=args.seed, warn=lambda _m: None,
            )  # fmt: skip
            row, e = score_lfw(str(out), args.lfw, args.detector, det_model, args.work / "crops")
            table[f"model {i}, adapted on {r.faces} photos"] = row
            embs.setdefault(k, []).append(e)
            results.append({"checkpoint": ck, "adapt_photos": r.faces, "lfw": row, "adapted": str(out)})
    if len(args.checkpoints) > 1:
        for k, es in embs.items():
            row = fused_row([{"embeddings": e} for e in es], args.lfw)
            table["fused" + ("" if k < 0 else f", adapted on {k} photos")] = row
            results.append({"fused": args.checkpoints, "adapt_photos": None if k < 0 else k, "lfw": row})
    print(format_table(table))
    if args.json:
        args.json.write_text(json.dumps(results, indent=1, default=float))


if __name__ == "__main__":
    main()
