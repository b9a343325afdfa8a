"""A small IJB-B/C data set in the release layout, rendered by SynthFaces (a test fixture, not library code).

Imported by the IJB tests as ``ijb_synth`` (``tests/helpers`` is on pytest's ``pythonpath``).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from faceforge.errors import FaceforgeError
from faceforge.eval.ijb import _GALLERIES, TARGETS, _check_target

__all__ = ["write_synthetic_ijb"]


def write_synthetic_ijb(
    out: str | os.PathLike[str],
    n_ids: int = 20,
    templates_per_id: int = 3,
    images_per_template: int = 2,
    target: str = "IJBC",
    seed: int = 0,
    one_to_n: bool = True,
    size: int | None = None,
) -> Path:
    """Write a small IJB-layout data set rendered by SynthFaces ``mode="wild"`` with its true landmarks.

    ``out/<target>/loose_crop/<k>.jpg`` and the meta files of the module docstring: every template
    holds ``images_per_template`` images of one identity (consecutive pairs of images share a media,
    like frames of one video); the 1:1 list holds every template pair (genuine: same identity); faceness
    scores are drawn from U(0.5, 1). With ``one_to_n``, the first template of the first half of the
    identities forms gallery 1, of the second half gallery 2, and all other templates are probes.
    Returns ``out/<target>``.
    """
    import cv2

    from faceforge.data.synth import SynthFaces

    t = _check_target(target)
    if n_ids < 2 or templates_per_id < 2 or images_per_template < 1:
        raise FaceforgeError(
            f"write_synthetic_ijb: n_ids={n_ids} and templates_per_id={templates_per_id} must be >= 2, "
            f"images_per_template={images_per_template} >= 1"
        )
    pre = TARGETS[t]
    d = Path(out) / t
    (d / "loose_crop").mkdir(parents=True, exist_ok=True)
    (d / "meta").mkdir(parents=True, exist_ok=True)
    synth = SynthFaces(seed=seed, mode="wild", size=size)
    rng = np.random.default_rng([seed, 2718])
    tid_lines, pts_lines = [], []
    t_subject: list[tuple[int, int, str]] = []  # (template id, subject id, first file)
    k = 0
    media = 0
    for ident in range(n_ids):
        for tp in range(templates_per_id):
            tid = ident * templates_per_id + tp + 1
            first = ""
            for im in range(images_per_template):
                if im % 2 == 0:
                    media += 1
                k += 1
                name = f"{k}.jpg"
                first = first or name
                img, lms = synth.image(ident, tp * images_per_template + im)
                ok, buf = cv2.imencode(
                    ".jpg", cv2.cvtColor(img, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 95]
                )
                if not ok:
                    raise FaceforgeError(f"JPEG encoding failed for {name}")
                (d / "loose_crop" / name).write_bytes(buf.tobytes())
                tid_lines.append(f"{name} {tid} {media}")
                score = rng.uniform(0.5, 1.0)
                pts_lines.append(name + " " + " ".join(f"{v:.3f}" for v in lms.reshape(-1)) + f" {score:.3f}")
            t_subject.append((tid, ident + 1, first))
    pair_lines = []
    for i in range(len(t_subject)):
        for j in range(i + 1, len(t_subject)):
            same = int(t_subject[i][1] == t_subject[j][1])
            pair_lines.append(f"{t_subject[i][0]} {t_subject[j][0]} {same}")
    (d / "meta" / f"{pre}_face_tid_mid.txt").write_text("\n".join(tid_lines) + "\n")
    (d / "meta" / f"{pre}_name_5pts_score.txt").write_text("\n".join(pts_lines) + "\n")
    (d / "meta" / f"{pre}_template_pair_label.txt").write_text("\n".join(pair_lines) + "\n")
    if one_to_n:
        g1_name, g2_name = _GALLERIES[t]
        header = "TEMPLATE_ID,SUBJECT_ID,FILENAME\n"
        half = n_ids // 2
        g1 = [r for r in t_subject if r[1] <= half and (r[0] - 1) % templates_per_id == 0]
        g2 = [r for r in t_subject if r[1] > half and (r[0] - 1) % templates_per_id == 0]
        probes = [r for r in t_subject if (r[0] - 1) % templates_per_id != 0]
        for fname, rows in (
            (f"{pre}_1N_gallery_{g1_name}.csv", g1),
            (f"{pre}_1N_gallery_{g2_name}.csv", g2),
            (f"{pre}_1N_probe_mixed.csv", probes),
        ):
            (d / "meta" / fname).write_text(header + "".join(f"{a},{b},img/{c}\n" for a, b, c in rows))
    return d
