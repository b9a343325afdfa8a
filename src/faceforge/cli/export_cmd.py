"""``faceforge export --model M --format onnx``: ONNX with preprocessing metadata
(:func:`faceforge.export.export_onnx`), then a parity check against PyTorch and, optionally, the
verification accuracy of both on SynthFaces pairs. Details: docs/export.md, "Command line".
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from faceforge.cli._common import add_model_options, model_overrides
from faceforge.errors import FaceforgeError

__all__ = ["cmd_export", "register"]

FORMATS = ("onnx",)


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``export`` command."""
    p = sub.add_parser("export", help="export a checkpoint to ONNX (metadata, parity check, fp16/int8)")
    p.add_argument("checkpoint", nargs="?", help="faceforge checkpoint (.ckpt); same as --model CKPT")
    add_model_options(p, required=False)
    p.add_argument("--format", default="onnx", help="export format (onnx)")
    p.add_argument(
        "--out",
        help="output file (default: the model file's path or ./<name>, with .onnx/.fp16.onnx/.int8.onnx)",
    )
    p.add_argument(
        "--precision", default="fp32", help="fp32, fp16 (half weights) or int8 (dynamic quantisation)"
    )
    p.add_argument("--opset", type=int, default=17, help="ONNX opset (>= 17)")
    p.add_argument(
        "--no-dynamic-batch", action="store_true", help="fix the batch size to 2 instead of dynamic"
    )
    p.add_argument(
        "--parity-images", type=int, default=32, help="SynthFaces crops for the parity check (0: skip)"
    )
    p.add_argument("--pairs", type=int, default=100, help="genuine pairs for the accuracy check (0: skip)")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    p.set_defaults(func=cmd_export)


def cmd_export(args: argparse.Namespace) -> int:
    """Export, then check parity (and the pair accuracy) against the PyTorch model."""
    from faceforge.export.onnx import PRECISIONS, check_parity, compare_on_pairs, export_onnx, synth_crops
    from faceforge.infer.loading import load_model
    from faceforge.models.checkpoint import LoadedModel

    if args.format not in FORMATS:
        raise FaceforgeError(f"--format {args.format!r} is not supported; expected one of {FORMATS}")
    if args.precision not in PRECISIONS:
        raise FaceforgeError(f"--precision {args.precision!r} is not supported; expected one of {PRECISIONS}")
    if args.parity_images < 0 or args.pairs < 0:
        raise FaceforgeError("--parity-images and --pairs must be >= 0")
    if args.checkpoint and args.model and args.checkpoint != args.model:
        raise FaceforgeError("give the model once: either the CKPT argument or --model")
    spec = args.model or args.checkpoint
    if not spec:
        raise FaceforgeError(
            "faceforge export: pass --model NAME|FILE (e.g. --model dlib) or a checkpoint path"
        )
    model = load_model(spec, arch=args.arch, overrides=model_overrides(args))
    if model.module is None:
        raise FaceforgeError(f"--model {spec} is already an ONNX file; export needs a PyTorch model")
    config = {"model": {"backbone": {"name": model.arch or model.name}}}
    loaded = LoadedModel(model.module, model.face_cfg, config, dict(model.calibration), model.source)
    suffix = ".onnx" if args.precision == "fp32" else f".{args.precision}.onnx"
    src = Path(spec)
    default = src.with_suffix(suffix) if src.is_file() else Path(f"{model.name}{suffix}")
    out = Path(args.out) if args.out else default
    path = export_onnx(
        loaded, out, opset=args.opset, dynamic_batch=not args.no_dynamic_batch, precision=args.precision
    )
    report: dict = {"onnx": str(path), "precision": args.precision, "bytes": path.stat().st_size}
    if args.parity_images:
        if args.no_dynamic_batch:
            report["parity"] = "skipped (fixed batch size)"
        else:
            report["parity"] = check_parity(loaded, path, synth_crops(loaded.face_cfg, args.parity_images))
    if args.pairs and not args.no_dynamic_batch:
        report["pairs"] = compare_on_pairs(loaded, path, args.pairs)
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(f"wrote {path} ({report['bytes'] / 1e6:.2f} MB, {args.precision}, opset {args.opset})")
    par = report.get("parity")
    if isinstance(par, dict):
        print(
            f"parity vs PyTorch on {par['n']} SynthFaces crops: cosine min {par['cosine_min']:.7f}, "
            f"max abs diff {par['max_abs_diff']:.2e} (largest value {par['max_abs']:.2f})"
        )
    pr = report.get("pairs")
    if pr:
        print(
            f"verification on {pr['n_pairs']} SynthFaces pairs: PyTorch {100 * pr['accuracy_torch']:.2f}% "
            f"ONNX {100 * pr['accuracy_onnx']:.2f}% (change {100 * pr['accuracy_change']:+.2f} points), "
            f"same decision at threshold {pr['threshold']:.4f} on "
            f"{100 * pr['decision_agreement']:.1f}% of pairs"
        )
    return 0
