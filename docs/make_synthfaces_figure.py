"""Write the SynthFaces figures of docs/synthfaces.md into docs/img/.

* ``synthfaces_v2.png``: 6 v2 identities (rows) × 6 images (columns: pose, expression, lighting,
  accessories and camera vary; identity, hair and texture stay), then one row of v1 for comparison.
* ``lfw_aligned.png``: 2 rows of 6 real LFW photos aligned by the same 5-point ArcFace similarity
  (YuNet landmarks), only when ``../shared/data/lfw`` and the YuNet model are there. These are
  pictures for the documentation: no LFW image is ever part of the package or used for training.

    python docs/make_synthfaces_figure.py [--lfw ../shared/data/lfw]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np

from faceforge.data.synth import SynthFaces


def _grid(rows: list[list[np.ndarray]], gap: int = 2) -> np.ndarray:
    h, w = rows[0][0].shape[:2]
    out = np.full((len(rows) * (h + gap) - gap, len(rows[0]) * (w + gap) - gap, 3), 255, np.uint8)
    for r, row in enumerate(rows):
        for c, img in enumerate(row):
            out[r * (h + gap) : r * (h + gap) + h, c * (w + gap) : c * (w + gap) + w] = img
    return out


def _lfw_crops(lfw: Path, n: int = 12) -> list[np.ndarray]:
    from faceforge.align.detectors.base import create_detector
    from faceforge.align.transform import align_face

    model = next((p / "models/detectors/yunet_s_640_640.onnx" for p in (lfw, *lfw.parents)
                  if (p / "models/detectors/yunet_s_640_640.onnx").is_file()), None)  # fmt: skip
    if model is None:
        return []
    det = create_detector("yunet", model_path=model)
    people = sorted(p for p in (lfw / "lfw-deepfunneled").iterdir() if p.is_dir())
    crops = []
    for person in people[:: max(1, len(people) // (3 * n))]:
        img = cv2.cvtColor(cv2.imread(str(next(person.glob("*.jpg")))), cv2.COLOR_BGR2RGB)
        faces = det.detect(img)
        if faces:
            face = min(
                faces, key=lambda f: np.linalg.norm(f.landmarks.mean(0) - np.array(img.shape[1::-1]) / 2)
            )
            crops.append(align_face(img, face.landmarks, "arcface", 112))
        if len(crops) == n:
            break
    return crops


def main() -> None:
    """Render the figures."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--lfw", type=Path, default=Path("../shared/data/lfw"))
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "img")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    v2 = SynthFaces(seed=2024, version=2)
    rows = [[v2.image(ident, k)[0] for k in range(6)] for ident in range(6)]
    v1 = SynthFaces(seed=2024)
    rows.append([v1.image(ident, 0)[0] for ident in range(6)])
    path = args.out / "synthfaces_v2.png"
    cv2.imwrite(str(path), cv2.cvtColor(_grid(rows), cv2.COLOR_RGB2BGR), [cv2.IMWRITE_PNG_COMPRESSION, 9])
    print(f"wrote {path}")
    if (args.lfw / "lfw-deepfunneled").is_dir():
        crops = _lfw_crops(args.lfw)
        if len(crops) >= 6:
            full = len(crops) // 6 * 6
            grid = _grid([crops[k : k + 6] for k in range(0, full, 6)])
            path = args.out / "lfw_aligned.png"
            cv2.imwrite(str(path), cv2.cvtColor(grid, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_PNG_COMPRESSION, 9])
            print(f"wrote {path}")


if __name__ == "__main__":
    main()
