"""``faceforge eval``: 10-fold verification of a checkpoint on a pair list, with a report."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from faceforge.errors import FaceforgeError


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``eval`` command."""
    p = sub.add_parser(
        "eval", help="verification accuracy of a checkpoint on a pair list (table, JSON, ROC PNG)"
    )
    p.add_argument("--checkpoint", required=True, help="faceforge checkpoint (.ckpt)")
    p.add_argument(
        "--pairs", required=True, help="pair list: LFW pairs.txt, 'label p1 p2', 'p1 p2 label' or CSV"
    )
    p.add_argument(
        "--root", help="image folder the pair list refers to (default: found next to the pair file)"
    )
    p.add_argument("--out", help="report folder (default: the checkpoint's run directory)")
    p.add_argument("--name", help="name of the set in the report (default: the pair file's name)")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--no-flip", action="store_true", help="disable flip-test fusion")
    p.add_argument("--baseline", action="store_true", help="add the raw-pixel nearest-neighbour baseline row")
    p.set_defaults(func=run)


def default_report_dir(checkpoint: Path) -> Path:
    """``runs/<name>/<ts>`` for ``runs/<name>/<ts>/checkpoints/x.ckpt``, else the checkpoint's folder."""
    parent = checkpoint.resolve().parent
    return parent.parent if parent.name == "checkpoints" else parent


def evaluate_checkpoint(
    checkpoint: str | Path,
    pairs_path: str | Path,
    root: str | Path | None = None,
    batch_size: int = 256,
    flip: bool = True,
    baseline: bool = False,
    name: str | None = None,
) -> dict[str, dict[str, Any]]:
    """Results keyed by row name: the model on the pairs (and the raw-pixel baseline)."""
    from faceforge.data.pairs import read_pairs
    from faceforge.eval.verification import evaluate_model, load_pair_images, pixel_baseline
    from faceforge.models.checkpoint import load_checkpoint

    model = load_checkpoint(checkpoint)
    pairs = read_pairs(pairs_path, root=root)
    h, w = model.face_cfg.input_size
    if h != w:
        raise FaceforgeError(
            f"checkpoint {checkpoint}: non-square input size {h}x{w} is not supported by eval yet"
        )
    data = load_pair_images(pairs, h, model.face_cfg.color)
    label = name or Path(pairs_path).stem
    out = {label: evaluate_model(model.embed, data, batch_size, flip)}
    if baseline:
        out[f"{label} (raw pixels)"] = pixel_baseline(data)
    return out


def write_report(results: dict[str, dict[str, Any]], out: Path) -> dict[str, Path]:
    """``report.json``, ``report.md`` and ``roc.png`` in ``out``."""
    from faceforge.eval.report import plot_roc, to_markdown, write_json

    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": write_json(results, out / "report.json"), "png": plot_roc(results, out / "roc.png")}
    md = out / "report.md"
    md.write_text("# Verification report\n\n" + to_markdown(results) + "\n\n![ROC](roc.png)\n")
    paths["md"] = md
    return paths


def run(args: argparse.Namespace) -> int:
    """Evaluate, print the table, write the report."""
    from faceforge.eval.report import format_table

    ckpt = Path(args.checkpoint)
    results = evaluate_checkpoint(
        ckpt, args.pairs, args.root, args.batch_size, not args.no_flip, args.baseline, args.name
    )
    print(format_table(results))
    for r in results.values():
        if r.get("undecodable_images"):
            print(
                f"warning: {r['undecodable_images']} image(s) could not be decoded "
                "and were scored as black images"
            )
            break
    paths = write_report(results, Path(args.out) if args.out else default_report_dir(ckpt))
    print(f"report: {paths['md']}  ({paths['json'].name}, {paths['png'].name})")
    return 0
