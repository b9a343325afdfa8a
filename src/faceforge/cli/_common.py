"""Options and helpers shared by the CLI verbs (the only module ``cli/`` modules import from each other):
the output conventions every verb follows (stdout / stderr, ``--quiet``, ``-v/--verbose``, progress bars,
:func:`show_progress`). Details: docs/architecture.md, "CLI conventions".
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

__all__ = [
    "action_group",
    "add_model_options",
    "add_override_options",
    "add_precision_option",
    "add_progress_option",
    "add_recognizer_options",
    "add_workers_option",
    "is_quiet",
    "load_eval_model",
    "load_recognizer",
    "model_overrides",
    "non_negative_count",
    "note",
    "note_skipped",
    "positive_count",
    "print_result",
    "show_progress",
]


def is_quiet(args: argparse.Namespace) -> bool:
    """Whether ``--quiet`` was given (on the verb or, for verbs that define their own, there)."""
    return bool(getattr(args, "quiet", False))


def note(args: argparse.Namespace, message: str) -> None:
    """A note for the user on stderr (dropped with ``--quiet``)."""
    if not is_quiet(args):
        print(message, file=sys.stderr, flush=True)


def add_progress_option(p: argparse.ArgumentParser) -> None:
    """``--progress``: draw progress bars even when stderr is not a terminal."""
    p.add_argument(
        "--progress",
        action="store_true",
        help="progress bars on stderr even when it is not a terminal (default: only on a terminal)",
    )


def show_progress(args: argparse.Namespace) -> bool:
    """Progress bars: never with ``--quiet``, always with ``--progress``, else only on a terminal."""
    if is_quiet(args):
        return False
    if getattr(args, "progress", False):
        return True
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):  # a replaced or closed stderr
        return False


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


def model_hint() -> str:
    """What ``--model`` can be on this machine: the first pretrained model whose verified file is here,
    else how to get one (nothing is downloaded)."""
    from faceforge.models.pretrained import status

    here = [r["name"] for r in status() if r["available"]]
    if here:
        return f" (e.g. --model {here[0]}: pretrained, its file is installed here; `faceforge models list`)"
    return (
        " (a trained .ckpt, an ONNX file or a pretrained name; none is installed here: "
        "`faceforge models list` says how to get one)"
    )


def add_precision_option(p: argparse.ArgumentParser) -> None:
    """``--precision fp32|bf16|auto`` for PyTorch models on the CPU (auto: bf16 only when it pays)."""
    p.add_argument(
        "--precision",
        choices=("fp32", "bf16", "auto"),
        default="fp32",
        help="PyTorch inference precision: fp32 (default), bf16, or auto (bf16 on CPUs with native bf16 "
        "units when a probe at load shows >= 1.3x and embeddings keep cosine >= 0.999)",
    )


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
    from faceforge.infer.recognizer import build_recognizer

    rec = build_recognizer(
        model or args.model,
        arch=getattr(args, "arch", None),
        overrides=model_overrides(args),
        precision=getattr(args, "precision", None) or "fp32",
        detector=getattr(args, "detector", "auto"),
        detector_model=getattr(args, "detector_model", None),
        threshold=getattr(args, "threshold", None),
        far=getattr(args, "far", None),
    )
    # Facts read from a foreign file are guesses until the user confirms them: say what was inferred.
    if rec.model.guessed and not getattr(args, "json", False):
        note(args, rec.model.describe())
    return rec


def add_recognizer_options(p: argparse.ArgumentParser, required: bool = True, threshold: bool = True) -> None:
    """``--model`` and friends, the detector options, ``--json``; ``--threshold/--far`` where they decide."""
    add_model_options(p, required, "" if required else "default: the gallery's model")
    add_precision_option(p)
    p.add_argument(
        "--detector",
        default="auto",
        help="face detector: auto (yunet, else scrfd), a detector name or a model file path",
    )
    p.add_argument(
        "--detector-model", help="detector model file for --detector NAME (e.g. SCRFD det_10g.onnx)"
    )
    if threshold:
        p.add_argument("--threshold", type=float, help="cosine threshold (default: the model's calibration)")
        p.add_argument("--far", type=float, help="use the calibration's threshold at this false accept rate")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")


def add_workers_option(p: argparse.ArgumentParser) -> None:
    """``--workers N``: threads of the pipelined embedding path."""
    p.add_argument(
        "--workers",
        type=positive_count,
        default=2,
        help="threads that decode, detect and align ahead of the batched model (default 2)",
    )


def print_result(args: argparse.Namespace, payload: dict[str, Any], text: str) -> None:
    """``payload`` as indented JSON with ``--json``, else ``text``, on stdout."""
    if args.json:
        print(json.dumps(payload, indent=2))
    else:
        print(text)


def note_skipped(args: argparse.Namespace, skipped: list[dict]) -> None:
    """The images an embedding run skipped (first 20), on stderr unless ``--json``/``--quiet``."""
    if skipped and not args.json and not is_quiet(args):
        print(f"skipped {len(skipped)} image(s):", file=sys.stderr)
        for s in skipped[:20]:
            print(f"  {s['file']}: {s['reason']}", file=sys.stderr)


def _count(v: str, minimum: int) -> int:
    try:
        n = int(v)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{v!r} is not an integer") from None
    if n < minimum:
        raise argparse.ArgumentTypeError(f"{n} must be >= {minimum}")
    return n


def positive_count(v: str) -> int:
    """argparse type: an integer >= 1 (``'x' is not an integer`` / ``0 must be >= 1``)."""
    return _count(v, 1)


def non_negative_count(v: str) -> int:
    """argparse type: an integer >= 0."""
    return _count(v, 0)


def action_group(
    subparsers: argparse._SubParsersAction, name: str, help: str, dest: str
) -> argparse._SubParsersAction:
    """The ``ACTION`` sub-parsers of verb ``name``, made on first use (modules share one verb)."""
    parser = subparsers.choices.get(name)
    if parser is None:
        parser = subparsers.add_parser(name, help=help)
        sub = parser.add_subparsers(dest=dest, metavar="ACTION")
        sub.required = True
        return sub
    return next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))


def load_eval_model(args: argparse.Namespace, calibrating: bool = False) -> tuple[Any, Any, Any]:
    """(EmbeddingModel, eval ``ModelInfo``, report folder) of ``--model`` (or ``--run``) and ``--out``.

    ``calibrating``: the model must have a place for a calibration (checked before the folder is told).
    """
    from faceforge.eval.run import check_calibration_target, report_dir, resolve_model_spec
    from faceforge.eval.suite import ModelInfo
    from faceforge.infer.loading import load_model

    args.model, said = resolve_model_spec(getattr(args, "model", None), getattr(args, "run", None))
    if said:
        print(said)
    model = load_model(
        args.model, arch=getattr(args, "arch", None), overrides=model_overrides(args),
        device=getattr(args, "device", "cpu"),
    )  # fmt: skip
    print(model.describe())
    info = ModelInfo.from_model(model)
    if calibrating:
        check_calibration_target(model)
    out, said = report_dir(getattr(args, "out", None), model)
    if said:
        print(said)
    return model, info, out
