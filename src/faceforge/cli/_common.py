"""Options and helpers shared by the CLI verbs (the only module ``cli/`` modules import from each other).

Output conventions every verb follows: results on stdout; notes, warnings and progress on stderr;
``--quiet`` drops notes and progress, ``-v/--verbose`` adds library log lines; progress bars only
on a terminal unless ``--progress`` (:func:`show_progress`).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from faceforge.errors import FaceforgeError

__all__ = [
    "RESERVED_KEYS",
    "add_model_options",
    "add_override_options",
    "add_progress_option",
    "check_config_types",
    "is_quiet",
    "load_recognizer",
    "model_overrides",
    "note",
    "read_report",
    "show_progress",
    "write_report",
]

# Top-level keys of report.json that are not result rows.
RESERVED_KEYS = ("calibration",)


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


def check_config_types(cfg: dict[str, Any]) -> None:
    """Every training-config value whose default is a number or a boolean must be one too.

    ``--trainer.max_epochs three`` is then a one-line error naming the key before a run folder is
    made, instead of a ``ValueError`` from deep inside the trainer. ``trainer.devices`` also takes
    ``auto``, a list or ``"0,1"``, so it is left to Lightning.
    """
    from faceforge.train.config import DEFAULTS, OPEN_SECTIONS

    def walk(default: dict[str, Any], value: dict[str, Any], prefix: str) -> None:
        for k, d in default.items():
            key = prefix + k
            if key in OPEN_SECTIONS or key == "trainer.devices" or k not in value:
                continue
            v = value[k]
            if isinstance(d, dict):
                if isinstance(v, dict):
                    walk(d, v, key + ".")
            elif isinstance(d, bool):
                if not isinstance(v, bool):
                    raise FaceforgeError(f"config key {key!r} must be true or false, got {v!r}")
            elif isinstance(d, (int, float)) and (isinstance(v, bool) or not isinstance(v, (int, float))):
                kind = "an integer" if isinstance(d, int) else "a number"
                raise FaceforgeError(f"config key {key!r} must be {kind}, got {v!r}")

    walk(DEFAULTS, cfg, "")


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
    from faceforge.infer import FaceRecognizer
    from faceforge.infer.loading import load_model

    detector: Any = getattr(args, "detector", "auto")
    det_model = getattr(args, "detector_model", None)
    if det_model:
        from faceforge.align.detectors.base import list_detectors

        if detector in ("auto", None) or detector not in list_detectors():
            raise FaceforgeError(
                f"--detector-model {det_model} needs --detector NAME (one of {', '.join(list_detectors())})"
            )
        if not Path(det_model).is_file():
            raise FaceforgeError(f"--detector-model {det_model} does not exist")
    loaded = load_model(
        model or args.model,
        arch=getattr(args, "arch", None),
        overrides=model_overrides(args),
        precision=getattr(args, "precision", None) or "fp32",
    )
    # A whole-image model (template "none": objects, products) never builds a face detector.
    if det_model and loaded.face_cfg.template != "none":
        from faceforge.align.detectors.base import create_detector

        detector = create_detector(detector, model_path=det_model)
    rec = FaceRecognizer(
        loaded,
        detector=detector,
        threshold=getattr(args, "threshold", None),
        far=getattr(args, "far", None),
    )
    # Facts read from a foreign file are guesses until the user confirms them: say what was inferred.
    if rec.model.guessed and not getattr(args, "json", False):
        note(args, rec.model.describe())
    return rec


# ---------------------------------------------------------------------------------------- reports
# (eval, demo and train write the same report.json / report.md / roc.png into a run folder)


def read_report(path: Path) -> dict[str, Any]:
    """An existing ``report.json`` (``{}`` when absent); unreadable ones are an error, never overwritten."""
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text())
    except ValueError as e:
        raise FaceforgeError(f"{path} is not valid JSON ({e}); move it away or pass --fresh") from None
    if not isinstance(data, dict):
        raise FaceforgeError(
            f"{path}: expected an object of set name -> metrics; move it away or pass --fresh"
        )
    return data


def write_report(
    results: dict[str, Any],
    out: Path,
    calibration: dict[str, Any] | None = None,
    merge: bool = False,
) -> dict[str, Path]:
    """``report.json``, ``report.md``, ``roc.png`` and ``det.png`` in ``out``.

    ``report.json`` is ``{row name: metrics}`` plus, when given, the top-level ``"calibration"``
    block (:mod:`faceforge.eval.calibration`). With ``merge`` the rows (and calibration) of an
    existing report are kept unless replaced by a row of the same name.
    """
    from faceforge.eval.report import format_report, plot_det, plot_roc, split_rows, write_json

    out.mkdir(parents=True, exist_ok=True)
    data: dict[str, Any] = read_report(out / "report.json") if merge else {}
    data.update(results)
    if calibration is not None:
        data["calibration"] = calibration
    rows = {k: v for k, v in data.items() if k not in RESERVED_KEYS and isinstance(v, dict)}
    paths: dict[str, Path] = {"json": write_json(data, out / "report.json")}
    curves = {
        k: v for kind, g in split_rows(rows).items() if kind in ("verification", "ijb") for k, v in g.items()
    }
    curves = {k: v for k, v in curves.items() if v.get("roc_fpr")}
    md = ["# Evaluation report", "", format_report(rows, markdown=True)]
    cal = data.get("calibration")
    if isinstance(cal, dict):
        md += ["", "## Calibration", "", _calibration_text(cal)]
    if curves:
        paths["png"] = plot_roc(curves, out / "roc.png")
        md += ["", "![ROC](roc.png)"]
        try:
            paths["det"] = plot_det(curves, out / "det.png")
            md += ["", "![DET](det.png)"]
        except FaceforgeError as e:
            # Every curve is error-free: a log-log DET has nothing to show, so say so in the report.
            md += ["", f"DET plot omitted: {e}"]
    (out / "report.md").write_text("\n".join(md) + "\n")
    paths["md"] = out / "report.md"
    return paths


def _calibration_text(cal: dict[str, Any]) -> str:
    far = cal.get("far_target")
    at = f"FAR = {far:g}" if far is not None else "best 10-fold accuracy"
    lines = [
        f"- source: {cal.get('source')}",
        f"- default threshold (cosine, accept `>=`): {cal.get('threshold'):.4f} at {at}",
    ]
    if cal.get("far_note"):
        lines.append(f"- why: {cal['far_note']}")
    n_imp, n_gen = cal.get("n_impostor"), cal.get("n_genuine")
    if n_imp is not None:
        gen = f", {n_gen:,} genuine" if n_gen is not None else ""
        lines.append(f"- pairs behind it: {n_imp:,} impostor{gen}")
    lines.append(f"- best-accuracy threshold: {cal.get('threshold_cos_best_accuracy'):.4f}")
    for k, v in (cal.get("tar_at_far_threshold_cos") or {}).items():
        lines.append(f"- threshold at FAR = {float(k):g}: {v:.4f}")
    return "\n".join(lines)
