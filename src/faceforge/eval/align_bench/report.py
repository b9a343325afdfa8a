"""The outputs of the alignment benchmark: the Markdown table, the six-panel plot, ``results.csv`` /
``.md`` / ``.json`` and ``outcomes.jsonl`` (:func:`write_outputs`), the sample sheet of aligned crops
(:func:`sample_indices`, :func:`write_sample_sheet`) and every crop on disk (:func:`save_aligned`).
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from faceforge.errors import FaceforgeError
from faceforge.eval.align_bench.recognizers import _EMBED_BATCH, Recognizer, _crops_for
from faceforge.fileio import naming_errors, write_text

#: identities (columns) of the sample sheet aligned_samples.png
SAMPLE_IDENTITIES = 8


_CSV_COLS = [
    "detector", "images", "detected", "success_rate", "unreadable", "time_median_ms", "time_p95_ms",
    "img_per_s", "peak_rss_mib", "rss_over_start_mib", "gpu_mib", "accuracy", "accuracy_std", "auc",
    "eer", "threshold_cos", "batch_size", "device",
]  # fmt: skip


def _fmt_gpu(v: Any) -> str:
    return "n/a" if v is None else f"{float(v):.0f}"


def to_markdown(
    rows: Sequence[dict[str, Any]], outcomes: Sequence[dict[str, Any]] = (), max_outcomes: int = 20
) -> str:
    """The benchmark table (and per-file outcomes) as Markdown."""
    lines = [
        "| detector | detected | success | median ms | p95 ms | img/s | peak RSS MiB | GPU MiB "
        "| accuracy (%) | AUC | EER (%) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['detector']} | {r['detected']}/{r['images']} | {r['success_rate']:.2%} | "
            f"{r['time_median_ms']:.1f} | {r['time_p95_ms']:.1f} | {r['img_per_s']:.1f} | "
            f"{r['peak_rss_mib']:.0f} | {_fmt_gpu(r['gpu_mib'])} | "
            f"{100 * r['accuracy']:.2f} ± {100 * r['accuracy_std']:.2f} | "
            f"{r['auc']:.4f} | {100 * r['eer']:.2f} |"
        )
    if outcomes:
        lines += [
            "",
            f"Per-file outcomes ({len(outcomes)} in outcomes.jsonl; first {max_outcomes} per detector):",
            "",
        ]
        seen: dict[str, int] = {}
        for o in outcomes:
            seen[o["detector"]] = seen.get(o["detector"], 0) + 1
            if seen[o["detector"]] <= max_outcomes:
                lines.append(f"- {o['detector']}: `{o['file']}`: {o['outcome']}")
    return "\n".join(lines) + "\n"


def plot_metrics(rows: Sequence[dict[str, Any]], path: str | os.PathLike[str]) -> Path:
    """One PNG, six bar charts: success rate, median time (p95 as a tick), peak RSS, accuracy, AUC, EER."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [r["detector"] for r in rows]
    panels = [
        ("detection success (%)", [100 * r["success_rate"] for r in rows]),
        ("time per image (ms, median; p95 ▲)", [r["time_median_ms"] for r in rows]),
        ("peak RSS (MiB)", [r["peak_rss_mib"] for r in rows]),
        ("10-fold accuracy (%)", [100 * r["accuracy"] for r in rows]),
        ("ROC AUC", [r["auc"] for r in rows]),
        ("EER (%)", [100 * r["eer"] for r in rows]),
    ]
    fig, axes = plt.subplots(2, 3, figsize=(13, 6.5))
    x = np.arange(len(rows))
    for ax, (title, vals) in zip(axes.ravel(), panels):
        ax.bar(x, vals, color="#4477aa")
        if title.startswith("time"):
            ax.plot(x, [r["time_p95_ms"] for r in rows], "^", color="#cc3311")
        ax.set_title(title, fontsize=10)
        ax.set_xticks(x, names, rotation=35, ha="right", fontsize=8)
        finite = [v for v in vals if np.isfinite(v)]
        if finite and title.split()[0] in ("detection", "10-fold", "ROC"):
            lo = min(finite)
            ax.set_ylim(max(0.0, lo - (max(finite) - lo) * 0.5 - (0.5 if "AUC" not in title else 0.005)),
                        max(finite) + (0.2 if "AUC" not in title else 0.002))  # fmt: skip
        for xi, v in zip(x, vals):
            if np.isfinite(v):
                ax.annotate(f"{v:.4g}", (xi, v), ha="center", va="bottom", fontsize=7)
    fig.suptitle("faceforge bench-align", fontsize=11)
    fig.tight_layout()
    p = Path(path)
    fig.savefig(p, dpi=110)
    plt.close(fig)
    return p


def write_outputs(
    rows: Sequence[dict[str, Any]], outcomes: Sequence[dict[str, Any]], out: Path, meta: dict[str, Any]
) -> None:
    """Write results.csv / .md / .json, outcomes.jsonl and align_bench.png into ``out``.

    (``aligned_samples.png`` is written by :func:`bench_align`, which has the crops.)
    """
    with naming_errors(out / "results.csv"), open(out / "results.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=_CSV_COLS)
        w.writeheader()
        for r in rows:
            w.writerow({k: ("n/a" if k == "gpu_mib" and r[k] is None else r[k]) for k in _CSV_COLS})
    head = (
        f"# bench-align\n\n{meta['pairs']} pairs, {meta['images']} images; recogniser {meta['recognizer']} "
        f"({meta['template']} template, {meta['size'][0]}x{meta['size'][1]}); face kept: {meta['select']}; "
        f"detection batch size {meta.get('batch_size', 1)}, device {meta.get('device', 'auto')}; "
        "failed detections use the fallback crop (see faceforge.eval.align_bench).\n\n"
    )
    head += "".join(f"**Warning:** {w}\n\n" for w in meta.get("warnings", []))
    write_text(out / "results.md", head + to_markdown(rows, outcomes))
    write_text(out / "results.json", json.dumps({"meta": meta, "rows": list(rows)}, indent=2, default=float))
    with naming_errors(out / "outcomes.jsonl"), open(out / "outcomes.jsonl", "w") as f:
        for o in outcomes:
            f.write(json.dumps(o) + "\n")
    plot_metrics(rows, out / "align_bench.png")


def sample_indices(paths: Sequence[str], k: int = SAMPLE_IDENTITIES) -> list[int]:
    """Indices of ``k`` images of different identities: the first image of each of the first ``k``
    identities (parent folder name, LFW's layout) in list order; more images of seen identities
    fill up when there are fewer than ``k``."""
    seen: set[str] = set()
    first: list[int] = []
    for i, p in enumerate(paths):
        who = Path(p).parent.name or Path(p).stem
        if who not in seen:
            seen.add(who)
            first.append(i)
            if len(first) == k:
                return first
    rest = [i for i in range(len(paths)) if i not in set(first)]
    return first + rest[: k - len(first)]


def write_sample_sheet(
    rows: Sequence[tuple[str, np.ndarray]], labels: Sequence[str], path: str | os.PathLike[str]
) -> Path:
    """A PNG: one row per detector (name at the left), its aligned crops ``[k, H, W, 3]`` side by side.

    ``labels`` (one per column, e.g. identities) go above the columns.
    """
    import cv2

    if not rows:
        raise FaceforgeError("no detector rows for the sample sheet")
    k, ch, cw = rows[0][1].shape[:3]
    left, top, gap = 170, 22, 4
    height = top + len(rows) * (ch + gap)
    width = left + k * (cw + gap)
    sheet = np.full((height, width, 3), 255, np.uint8)
    font = cv2.FONT_HERSHEY_SIMPLEX
    for j, lab in enumerate(labels[:k]):
        text = lab if len(lab) <= 18 else lab[:16] + ".."
        text = text.encode("ascii", "replace").decode()  # cv2's Hershey fonts draw ASCII only
        cv2.putText(sheet, text, (left + j * (cw + gap), top - 7), font, 0.33, (60, 60, 60), 1, cv2.LINE_AA)
    for r, (name, crops) in enumerate(rows):
        y = top + r * (ch + gap)
        cv2.putText(sheet, name[:20], (6, y + ch // 2 + 5), font, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
        for j in range(min(k, len(crops))):
            x = left + j * (cw + gap)
            sheet[y : y + ch, x : x + cw] = crops[j]
    from PIL import Image

    p = Path(path)
    Image.fromarray(sheet).save(p)
    return p


def save_aligned(
    paths: list[str],
    lm: np.ndarray,
    readable: np.ndarray,
    rec: Recognizer,
    folder: Path,
    workers: int = 0,
) -> int:
    """Write every readable image's aligned crop as ``folder/<path relative to the images' common
    folder>.jpg`` (written to a temp name, then renamed); returns the number written."""
    import cv2

    base = Path(os.path.commonpath([str(Path(p).parent) for p in paths])) if paths else Path(".")
    written = 0
    for s in range(0, len(paths), _EMBED_BATCH):
        idx = [i for i in range(s, min(s + _EMBED_BATCH, len(paths))) if readable[i]]
        crops = _crops_for(paths, idx, lm, readable, rec, workers)
        for i, crop in zip(idx, crops):
            try:
                rel = Path(paths[i]).relative_to(base)
            except ValueError:
                rel = Path(Path(paths[i]).name)
            dst = (folder / rel).with_suffix(".jpg")
            dst.parent.mkdir(parents=True, exist_ok=True)
            tmp = dst.with_name(dst.name + ".tmp.jpg")
            cv2.imwrite(str(tmp), crop[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, 95])
            os.replace(tmp, dst)
            written += 1
    return written
