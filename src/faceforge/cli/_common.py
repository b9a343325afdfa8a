"""Options and helpers shared by the CLI verbs (the only module ``cli/`` modules import from each other)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from faceforge.errors import FaceforgeError

__all__ = ["add_model_options", "add_override_options", "load_recognizer", "model_overrides"]


def add_model_options(p: argparse.ArgumentParser, required: bool = True, default_note: str = "") -> None:
    """``--model NAME|FILE``, ``--arch`` and the preprocessing overrides, the same on every verb."""
    p.add_argument(
        "--model",
        required=required,
        metavar="NAME|FILE",
        help="pretrained name (dlib), faceforge .ckpt/.onnx, insightface .onnx, dlib .dat, or a "
        "arcface_torch/AdaFace/EdgeFace/evoLVe state dict" + (f" ({default_note})" if default_note else ""),
    )
    p.add_argument(
        "--arch", help="backbone of a foreign state dict when its keys fit several (e.g. iresnet50)"
    )
    add_override_options(p)


def add_override_options(p: argparse.ArgumentParser) -> None:
    """``--color --mean --std --template --input-size``: replace a model's stored or inferred facts."""
    g = p.add_argument_group("preprocessing overrides (replace what the file says or what was inferred)")
    g.add_argument("--color", choices=("RGB", "BGR"), help="channel order the weights were trained with")
    g.add_argument("--mean", help="per-channel mean: 1 or 3 numbers, 0-1 or 0-255 scale (e.g. 127.5)")
    g.add_argument("--std", help="per-channel std: 1 or 3 numbers, 0-1 or 0-255 scale (e.g. 127.5)")
    g.add_argument(
        "--template", choices=("arcface", "dlib", "none"), help="alignment template (none: whole image)"
    )
    g.add_argument("--input-size", help="model input as N or HxW, e.g. 112")


def model_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The preprocessing overrides given on the command line (absent ones left out)."""
    keys = ("color", "mean", "std", "template", "input_size")
    return {k: getattr(args, k) for k in keys if getattr(args, k, None) is not None}


def load_recognizer(args: argparse.Namespace, model: str | None = None) -> Any:
    """A :class:`~faceforge.infer.FaceRecognizer` for ``--model`` (or ``model``) and the verb's options."""
    from faceforge.infer import FaceRecognizer

    detector: Any = getattr(args, "detector", "auto")
    det_model = getattr(args, "detector_model", None)
    if det_model:
        from faceforge.align.detectors.base import create_detector, list_detectors

        if detector in ("auto", None) or detector not in list_detectors():
            raise FaceforgeError(
                f"--detector-model {det_model} needs --detector NAME (one of {', '.join(list_detectors())})"
            )
        if not Path(det_model).is_file():
            raise FaceforgeError(f"--detector-model {det_model} does not exist")
        detector = create_detector(detector, model_path=det_model)
    rec = FaceRecognizer.from_model(
        model or args.model,
        arch=getattr(args, "arch", None),
        overrides=model_overrides(args),
        detector=detector,
        threshold=getattr(args, "threshold", None),
        far=getattr(args, "far", None),
    )
    # Facts read from a foreign file are guesses until the user confirms them: say what was inferred.
    if rec.model.guessed and not getattr(args, "json", False):
        print(rec.model.describe(), file=sys.stderr)
    return rec
