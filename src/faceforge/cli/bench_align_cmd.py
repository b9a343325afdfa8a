"""``faceforge bench-align``: compare detectors by what a recogniser makes of their alignment (detection
rate, speed, memory, 10-fold accuracy / AUC / EER per detector); the work is in
:mod:`faceforge.eval.align_bench`. Details: docs/align.md, "Alignment benchmark", and
docs/architecture.md, "cli/bench_align_cmd.py".
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

import numpy as np

from faceforge.cli._common import add_model_options, model_overrides
from faceforge.cli._common import positive_count as _positive

__all__ = ["cmd_bench_align", "register"]


def _recognizer(args: argparse.Namespace) -> Any:
    """The benchmark's recogniser from ``--model`` (PyTorch or ONNX; flip-test fusion as eval does)."""
    from faceforge.errors import FaceforgeError
    from faceforge.eval.align_bench import Recognizer
    from faceforge.infer.loading import load_model

    if args.model and args.recognizer and args.model != args.recognizer:
        raise FaceforgeError("give the recogniser once: --model (or its older name --recognizer)")
    spec = args.model or args.recognizer or "dlib"
    arch = args.arch
    if args.weights:
        if arch:
            raise FaceforgeError(
                "--weights FILE names the file for --model ARCH; with --arch use --model FILE"
            )
        spec, arch = args.weights, spec
    model = load_model(spec, arch=arch, overrides=model_overrides(args))
    h, w = (int(v) for v in model.face_cfg.input_size)

    def embed(crops: np.ndarray) -> np.ndarray:
        return model.embed_uint8(crops) + model.embed_uint8(np.ascontiguousarray(crops[:, :, ::-1]))

    return Recognizer(model.name, model.face_cfg.template, (w, h), embed, {"recognizer": spec, "arch": arch})


def _detector_kwargs(args: argparse.Namespace, known: list[str]) -> dict[str, dict[str, Any]]:
    """Per-detector options from ``--detector-model NAME=FILE`` and ``--rtmpose-box-detector``."""
    from pathlib import Path

    from faceforge.errors import FaceforgeError, did_you_mean

    out: dict[str, dict[str, Any]] = {}
    for spec in args.detector_model or []:
        name, sep, file = spec.partition("=")
        if not sep or not name or not file:
            raise FaceforgeError(
                f"--detector-model {spec}: expected NAME=FILE, e.g. yolov8_face=yolov8n-face.onnx"
            )
        if name not in known:
            raise FaceforgeError(
                f"--detector-model {spec}: unknown detector {name!r}{did_you_mean(name, known)}"
            )
        if not Path(file).expanduser().is_file():
            raise FaceforgeError(f"--detector-model {spec}: {file} does not exist")
        out.setdefault(name, {})["model_path"] = str(Path(file).expanduser())
    if args.rtmpose_box_detector:
        box = args.rtmpose_box_detector
        if box not in known or box == "rtmpose":
            raise FaceforgeError(
                f"--rtmpose-box-detector {box}: expected a face detector{did_you_mean(box, known)} "
                "such as yunet, scrfd or retinaface"
            )
        out.setdefault("rtmpose", {})["box_detector"] = box
    return out


def _non_negative(v: str) -> int:
    x = int(v)
    if x < 0:
        raise argparse.ArgumentTypeError(f"{v} is negative")
    return x


def cmd_bench_align(args: argparse.Namespace) -> int:
    """Run the benchmark and print its table (and the img/s of each detector)."""
    if not args.model_dir:
        return _run(args)
    # --model-dir reaches the detectors' worker processes through the environment they inherit; it is
    # put back afterwards, so an in-process caller (a test, a notebook) keeps the one it had.
    before = os.environ.get("FACEFORGE_MODEL_DIRS")
    os.environ["FACEFORGE_MODEL_DIRS"] = os.pathsep.join(p for p in (args.model_dir, before or "") if p)
    try:
        return _run(args)
    finally:
        if before is None:
            os.environ.pop("FACEFORGE_MODEL_DIRS", None)
        else:
            os.environ["FACEFORGE_MODEL_DIRS"] = before


def _run(args: argparse.Namespace) -> int:
    from faceforge.errors import FaceforgeError
    from faceforge.eval.align_bench import NATIVE_ROW, bench_align, to_markdown

    dets = [d.strip() for d in args.detectors.split(",") if d.strip()]
    if NATIVE_ROW in dets:
        raise FaceforgeError(f"{NATIVE_ROW!r} is the baseline row, added with --model dlib; not a detector")
    from faceforge.align import list_detectors
    from faceforge.errors import did_you_mean

    known = list_detectors()
    for d in dets:
        if d not in known:
            raise FaceforgeError(f"unknown detector {d!r}{did_you_mean(d, known)}; known: {', '.join(known)}")
    det_kwargs = _detector_kwargs(args, known)
    log = None if args.quiet else (lambda s: print(s, file=sys.stderr, flush=True))

    def warn(s: str) -> None:  # said even with --quiet: the numbers need it
        print(f"warning: {s}", file=sys.stderr, flush=True)

    rows = bench_align(
        args.pairs,
        dets,
        _recognizer(args),
        root=args.root,
        out=args.out,
        folds=args.folds,
        native=False if args.no_native else None,
        select=args.select,
        use_cache=not args.no_cache,
        log=log,
        warn=warn,
        detector_kwargs=det_kwargs,
        batch_size=args.batch_size,
        workers=args.workers,
        device=args.device,
        save_aligned_to=args.save_aligned,
    )
    if args.json:
        print(json.dumps(rows, default=float))
    else:
        print(to_markdown(rows), end="")
        for r in rows:
            how = f"batch {r['batch_size']}, device {r['device']}"
            print(f"{r['detector']}: {r['img_per_s']:.1f} img/s (detection only, 1 thread, {how})")
        print(f"results: {args.out}/results.md, results.csv, align_bench.png, aligned_samples.png")
        if args.save_aligned:
            print(f"aligned crops: {args.save_aligned}/<detector>/")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``bench-align`` command."""
    p = subparsers.add_parser(
        "bench-align", help="alignment benchmark: detectors × one recogniser on a pair list"
    )
    p.add_argument("--pairs", required=True, help="pair list (LFW pairs.txt, CSV, ...)")
    p.add_argument("--root", default=None, help="image folder the pair list refers to")
    p.add_argument(
        "--detectors",
        default="yunet",
        help="comma list, e.g. yunet,scrfd,retinaface,yolo5face,yolov8_face,rtmpose,mediapipe,mtcnn,dlib",
    )
    add_model_options(p, required=False, default_note="default dlib")
    p.add_argument("--recognizer", default=None, help="same as --model (kept for older scripts)")
    p.add_argument(
        "--weights", default=None, help="weights file for --model ARCH (same as --model FILE --arch)"
    )
    p.add_argument("--out", default="runs/bench_align", help="output folder")
    p.add_argument(
        "--folds", type=_positive, default=None, help="use only the first N folds (1 = 600 LFW pairs)"
    )
    p.add_argument(
        "--select", default="center", choices=("center", "largest", "score"), help="face kept per image"
    )
    p.add_argument("--model-dir", default=None, help="extra model-file folders (os.pathsep-separated)")
    p.add_argument("--no-native", action="store_true", help="leave out the dlib-native baseline row")
    p.add_argument("--no-cache", action="store_true", help="ignore OUT/cache/*.npz from an earlier run")
    p.add_argument(
        "--batch-size", type=_positive, default=1, help="images per detector call (detect_batch; default 1)"
    )
    p.add_argument(
        "--workers", type=_non_negative, default=0, help="image-decoding threads (default 0: in the loop)"
    )
    p.add_argument(
        "--device", default="auto", choices=("auto", "cpu", "cuda"), help="where ONNX / YuNet detectors run"
    )
    p.add_argument(
        "--detector-model",
        action="append",
        metavar="NAME=FILE",
        help="model file of one detector (repeatable), e.g. yolov8_face=yolov8n-face.onnx",
    )
    p.add_argument(
        "--rtmpose-box-detector",
        default=None,
        help="detector whose boxes RTMPose starts from (default yunet)",
    )
    p.add_argument(
        "--save-aligned", default=None, metavar="DIR", help="write every aligned crop to DIR/<detector>/"
    )
    p.add_argument("--json", action="store_true", help="print the rows as JSON")
    p.add_argument(
        "--quiet",
        action="store_true",
        help="no progress lines (warnings about the pairs still print)",
    )
    p.set_defaults(func=cmd_bench_align)
