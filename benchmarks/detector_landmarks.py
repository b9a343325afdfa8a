"""Which detector's 5 points are the true ones? Detectors against exact landmarks on SynthFaces v2 renders.

A model trained on SynthFaces sees its training faces aligned by the exact projected landmarks (iris
centres, nose tip, mouth corners) and real photos aligned by a detector's points; every detector has
its own idea of where those points lie, and the difference shifts, scales and turns the real crops
against the training ones. This renders v2 faces with the face at half the usual scale on a 224-pixel
canvas (pose, light, expression and accessories as in training), runs each detector, and prints the
normalised mean error (NME: distance over the inter-ocular distance) of each point and the mean
offset in the pixels of a 64×64 ArcFace crop, YuNet's first as the baseline of the ratio column.
No photo is involved, so the choice it supports is not fitted to a benchmark.

    python benchmarks/detector_landmarks.py [--n 400] [--detectors yunet,scrfd,retinaface,yolo5face,dlib]
        [--model-dir ../shared/models/detectors]

Measured (AMD EPYC 2-vCPU VM, 400 renders, 41 s): YuNet 0.132, RetinaFace 0.100, SCRFD 0.088, dlib
0.084 (40 profile faces missed), YOLO5-Face 0.075; on LFW a SynthFaces model scores 0.6-1.4 points more
with any of the last four than with YuNet (docs/synthfaces.md).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np

_FILES = {
    "yunet": "yunet_s_640_640.onnx",
    "scrfd": "scrfd_500m_bnkps.onnx",
    "retinaface": "retinaface_mbnet0.25.onnx",
    "yolo5face": "yolo5face_500m_320x320.onnx",
}


def renders(n: int, seed: int = 123) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """``n`` v2 renders (224 px, the face at half the aligned scale) and their exact landmarks."""
    import faceforge.data.synth.render_v2 as r2
    from faceforge.data.synth import SynthFaces

    template = r2.ALIGN_TEMPLATE_112
    c = template.mean(0)
    # The renderer aligns to this module-level template; scaled about its centre the face keeps its
    # pose and light but sits in a scene a detector can work on. The exact points are measured in
    # whatever frame results, so the template's own offset does not enter the comparison.
    r2.ALIGN_TEMPLATE_112 = (c + (template - c) * 0.5).astype(np.float32)
    try:
        sf = SynthFaces(seed=seed, version=2, size=224)
        out = [sf.image(10_000 + i, i % 7) for i in range(n)]
    finally:
        r2.ALIGN_TEMPLATE_112 = template
    return [np.ascontiguousarray(img) for img, _ in out], [np.asarray(lm, np.float64) for _, lm in out]


def measure(det: object, images: list[np.ndarray], exact: list[np.ndarray]) -> dict[str, object]:
    """NME per point, mean offset in 64-px crop pixels, and the renders where no face was matched."""
    from faceforge.align.templates import get_template
    from faceforge.align.transform import estimate_similarity, transform_points

    tpl = get_template("arcface", 64).astype(np.float64)
    err, off, miss = [], [], 0
    for img, lm in zip(images, exact, strict=True):
        iod = float(np.linalg.norm(lm[1] - lm[0]))
        faces = det.detect(img)  # type: ignore[attr-defined]
        near = [f for f in faces if np.linalg.norm(np.asarray(f.landmarks).mean(0) - lm.mean(0)) < 0.5 * iod]
        if not near:
            miss += 1
            continue
        pts = np.asarray(min(near, key=lambda f: -f.score).landmarks, np.float64)
        err.append(np.linalg.norm(pts - lm, axis=1) / iod)
        m = estimate_similarity(lm, tpl)
        off.append(transform_points(pts, m) - transform_points(lm, m))
    e = np.asarray(err)
    return {
        "n": len(err),
        "missed": miss,
        "nme": float(e.mean()) if len(e) else float("nan"),
        "per_point": e.mean(0) if len(e) else None,
        "offset": np.asarray(off).mean(0) if off else None,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=400)
    ap.add_argument("--detectors", default="yunet,scrfd,retinaface,yolo5face,dlib")
    ap.add_argument("--model-dir", type=Path, default=Path("../shared/models/detectors"))
    args = ap.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import cv2

    cv2.setNumThreads(1)
    from faceforge.align.detectors.base import create_detector
    from faceforge.errors import FaceforgeError

    images, exact = renders(args.n)
    rows = {}
    for name in args.detectors.split(","):
        f = args.model_dir / _FILES[name] if name in _FILES else None
        try:
            det = create_detector(name, f if f is not None and f.is_file() else None)
        except (FaceforgeError, ImportError) as e:
            print(f"{name}: skipped ({str(e).splitlines()[0][:120]})")
            continue
        rows[name] = measure(det, images, exact)
    base = rows.get("yunet", {}).get("nme")
    names = ("left eye", "right eye", "nose", "mouth L", "mouth R")
    print(f"{len(images)} SynthFaces v2 renders, 224 px; NME = point error / inter-ocular distance")
    print(f"{'detector':<11} {'found':>5} {'NME':>6} {'vs yunet':>8}  " + "  ".join(f"{n:>9}" for n in names))
    for name, r in sorted(rows.items(), key=lambda kv: kv[1]["nme"]):
        ratio = f"{r['nme'] / base:.2f}x" if base else "-"
        pp = "  ".join(f"{v:9.3f}" for v in r["per_point"]) if r["per_point"] is not None else ""
        print(f"{name:<11} {r['n']:>5} {r['nme']:6.3f} {ratio:>8}  {pp}")
    print("mean offset of each point in a 64x64 ArcFace crop (x, y pixels; + is right / down):")
    for name, r in rows.items():
        if r["offset"] is not None:
            print(f"  {name:<11} " + "  ".join(f"({x:+.2f}, {y:+.2f})" for x, y in r["offset"]))


if __name__ == "__main__":
    main()
