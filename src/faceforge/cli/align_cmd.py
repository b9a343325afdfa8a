"""``faceforge detect`` / ``faceforge align``: find faces and landmarks in images, or mirror a folder of
photos into aligned crops (the work is in :mod:`faceforge.align`); ``register(subparsers)`` adds both
verbs. Details: docs/align.md, "CLI", and docs/architecture.md, "cli/align_cmd.py".
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from faceforge.cli._common import add_progress_option, show_progress
from faceforge.errors import FaceforgeError

__all__ = ["cmd_align", "cmd_detect", "register"]


def _detector_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    kw: dict[str, Any] = {}
    if getattr(args, "model_path", None):
        kw["model_path"] = args.model_path
    if getattr(args, "score_threshold", None) is not None:
        kw["score_threshold"] = args.score_threshold
    return kw


def cmd_detect(args: argparse.Namespace) -> int:
    """Detect faces in each image; print one JSON object (or a text line) per image."""
    from faceforge.align import create_detector
    from faceforge.align.batch import detect_file, expand_image_inputs

    images = expand_image_inputs(args.images)
    det = create_detector(args.detector, **_detector_kwargs(args))
    out = Path(args.out) if args.out else None
    many = len(images) > 1
    if out is not None and many:
        if out.exists() and not out.is_dir():
            raise FaceforgeError(f"--out {out} is a file; with several images --out must be a folder")
        out.mkdir(parents=True, exist_ok=True)
    failed = without_face = 0
    for name in images:
        draw_to = (out / (Path(name).stem + ".png") if many else out) if out is not None else None
        rec = detect_file(det, name, draw_to)
        failed += "error" in rec
        without_face += "faces" in rec and not rec["faces"]
        if args.json:
            print(json.dumps(rec))
        elif "error" in rec:
            print(f"{name}: error: {rec['error']}")
        else:
            print(f"{name}: {len(rec['faces'])} face(s)" + (f" ({rec['note']})" if "note" in rec else ""))
            for f in rec["faces"]:
                print(f"  score {f['score']:.3f} bbox {f['bbox']} landmarks {f['landmarks']}")
    return 2 if failed else 1 if without_face else 0


def cmd_align(args: argparse.Namespace) -> int:
    """Detect + align every image under SRC into DST; per-file failures go to DST/failures.jsonl."""
    from faceforge.align.batch import align_folder

    result = align_folder(
        Path(args.src),
        Path(args.dst),
        detector=args.detector,
        detector_kwargs=_detector_kwargs(args),
        size=args.size,
        template=args.template,
        ext=args.ext,
        all_faces=args.all,
        workers=args.workers,
        retry_failed=args.retry_failed,
        progress=show_progress(args),
    )
    summary = result.summary()
    print(json.dumps(summary) if args.json else " ".join(f"{k}={v}" for k, v in summary.items()))
    reason = result.empty_reason()
    if reason:
        raise FaceforgeError(reason)
    return 0


def _threshold(v: str) -> float:
    x = float(v)
    if not 0 <= x <= 1:
        raise argparse.ArgumentTypeError(f"{v} is not in [0, 1]")
    return x


def _non_negative(v: str) -> int:
    x = int(v)
    if x < 0:
        raise argparse.ArgumentTypeError(f"{v} is negative")
    return x


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``detect`` and ``align`` commands to ``subparsers``."""
    from faceforge.align.detectors.base import list_detectors

    names = ", ".join(list_detectors())
    p = subparsers.add_parser(
        "detect",
        help="detect faces and 5 landmarks in images",
        description="Detect faces and 5 landmarks. Exit code 0: every image holds a face; 1: every "
        "image was read but at least one holds none; 2: an image could not be read (its line says why).",
    )
    p.add_argument("images", nargs="+", metavar="IMG", help="image files or folders (searched recursively)")
    p.add_argument("--detector", default="yunet", help=f"backend (default yunet): {names}")
    p.add_argument("--model-path", help="model file (or MTCNN folder) instead of the model store")
    p.add_argument(
        "--score-threshold",
        type=_threshold,
        default=None,
        help="minimum face score in [0, 1] (default: the detector's own, see docs/align.md)",
    )
    p.add_argument("--json", action="store_true", help="one JSON object per image")
    p.add_argument("--out", help="draw boxes/landmarks: a PNG path (one image) or a folder (several)")
    p.set_defaults(func=cmd_detect)

    p = subparsers.add_parser(
        "align",
        help="detect + 5-point align a folder of photos into crops",
        description="Detect and align every photo under SRC into DST (per-file failures in "
        "DST/failures.jsonl). Exit code 0 when DST holds at least one crop, 2 when no face at all "
        "could be aligned.",
    )
    p.add_argument("src", help="folder of photos (walked recursively)")
    p.add_argument("dst", help="output folder (mirrors SRC's tree)")
    p.add_argument("--detector", default="yunet", help=f"backend (default yunet): {names}")
    p.add_argument("--model-path", help="model file (or MTCNN folder) instead of the model store")
    p.add_argument(
        "--score-threshold",
        type=_threshold,
        default=None,
        help="minimum face score in [0, 1] (default: the detector's own, see docs/align.md)",
    )
    p.add_argument(
        "--size",
        default=None,
        help="crop size: 112 (default; 150 with --template dlib), 128, 224, 96x112, ...",
    )
    p.add_argument("--template", default="arcface", help="alignment template: arcface or dlib")
    g = p.add_mutually_exclusive_group()
    g.add_argument(
        "--largest", action="store_true", default=True, help="one crop: the largest face (default)"
    )
    g.add_argument("--all", action="store_true", help="one crop per detected face (name_0, name_1, ...)")
    p.add_argument("--ext", default="jpg", help="crop file type: jpg (default) or png")
    p.add_argument("--workers", type=_non_negative, default=1, help="processes (0 = all cores)")
    p.add_argument("--retry-failed", action="store_true", help="retry files listed in failures.jsonl")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    add_progress_option(p)
    p.set_defaults(func=cmd_align)
