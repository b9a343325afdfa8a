"""Face proportions and pose spread: SynthFaces v2 renders against a detector's landmarks on real photos.

A model trained on renders and tested on real photos sees both through the same 5-point similarity
alignment, so the renders' landmark geometry should be the geometry a detector reports on real faces:
otherwise the crops frame the faces differently (mouth lower, eyes closer, face wider) and the model
learns an arrangement that photos do not have. This prints, for real photos (any folder tree of
images; LFW from ../shared by default) and for v2 renders of the same count, the similarity-invariant
ratios of the five landmarks — eye-to-mouth distance, mouth width and eye-to-nose distance over the
inter-ocular distance (IOD) — for all faces and for near-frontal ones (|nose offset| < 0.05 IOD), and
the spread of the nose's offset along the eye line (a yaw proxy) and of eye-to-nose (a pitch proxy).

    python benchmarks/synth_geometry.py [--photos ../shared/data/lfw/lfw-deepfunneled] [--n 2000]

The photos are only measured, never written or trained on.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np

_NAMES = ("eye-mouth / IOD", "mouth width / IOD", "eye-nose / IOD", "nose offset / IOD")
_YUNET = Path("models/detectors/yunet_s_640_640.onnx")


def ratios(lms: np.ndarray) -> np.ndarray:
    """[4] similarity-invariant ratios of 5 landmarks (eyes, nose tip, mouth corners; InsightFace order)."""
    p = np.asarray(lms, np.float64)
    eyes, mouth = (p[0] + p[1]) / 2, (p[3] + p[4]) / 2
    axis = p[1] - p[0]
    iod = float(np.linalg.norm(axis))
    return np.array(
        [
            np.linalg.norm(mouth - eyes) / iod,
            np.linalg.norm(p[4] - p[3]) / iod,
            np.linalg.norm(p[2] - eyes) / iod,
            float(np.dot(p[2] - eyes, axis / iod)) / iod,
        ]
    )


def photo_ratios(root: Path, n: int, detector: str, model: str | None) -> np.ndarray:
    """Ratios of the largest face in up to ``n`` photos under ``root`` (sorted, every k-th file)."""
    from faceforge.align.choose import resolve_detector
    from faceforge.align.io import read_image

    det, _ = resolve_detector(detector, model)
    files = sorted(f for f in root.rglob("*") if f.suffix.lower() in {".jpg", ".jpeg", ".png"})
    if not files:
        raise SystemExit(f"no images under {root}")
    step = max(1, len(files) // n)
    out = []
    for f in files[::step][:n]:
        faces = det.detect(read_image(f))
        if faces:
            out.append(ratios(max(faces, key=lambda fc: fc.area).landmarks))
    return np.array(out)


def render_ratios(n: int, seed: int = 0) -> np.ndarray:
    """Ratios of ``n`` v2 renders (``n // 8`` identities × 8 images, the default pose distribution)."""
    from faceforge.data.synth.render_v2 import SynthFacesV2

    sf = SynthFacesV2(seed=seed)
    return np.array([ratios(sf.image(i, j)[1]) for i in range(max(1, n // 8)) for j in range(8)])


def _row(name: str, r: np.ndarray) -> str:
    front = r[np.abs(r[:, 3]) < 0.05]
    cells = [f"{r[:, k].mean():.3f} ± {r[:, k].std():.3f}" for k in range(4)]
    fcells = [f"{front[:, k].mean():.3f}" if len(front) else "-" for k in range(3)]
    return f"| {name} ({len(r)}, frontal {len(front)}) | " + " | ".join(cells + fcells) + " |"


def main() -> None:
    """Print the table."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--photos", type=Path, default=Path("../shared/data/lfw/lfw-deepfunneled"))
    ap.add_argument("--n", type=int, default=2000, help="photos and renders to measure")
    ap.add_argument("--detector", default=None, help="default: YuNet from ../shared, else auto")
    ap.add_argument("--detector-model", default=None)
    args = ap.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    detector, model = args.detector, args.detector_model
    if detector is None:
        found = [b / _YUNET for b in (args.photos, *args.photos.parents) if (b / _YUNET).is_file()]
        detector, model = ("yunet", str(found[0])) if found else ("auto", None)
    rows = []
    if args.photos.is_dir():
        rows.append(
            _row(
                f"photos: {args.photos.name}, {detector}", photo_ratios(args.photos, args.n, detector, model)
            )
        )
    else:
        print(f"({args.photos} not found: renders only)")
    rows.append(_row("SynthFaces v2", render_ratios(args.n)))
    head = " | ".join(f"{n} (all)" for n in _NAMES) + " | " + " | ".join(f"{n} (frontal)" for n in _NAMES[:3])
    print(f"| set | {head} |")
    print("|---" * 8 + "|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
