"""``faceforge eval``: verification on any number of sets, retrieval, IJB-B/C, low resolution, reports.

::

    faceforge eval --model M --pairs lfw/pairs.txt --root lfw/lfw-deepfunneled   (raw photos: detected)
    faceforge eval --model M --sets lfw=lfw.bin data/cfp_fp.bin mine=pairs.txt:images/
    faceforge eval --model M --bin lfw.bin --bin agedb_30.bin --lowres 2,4,8 [--sr mod:fn]
    faceforge eval retrieval --model M --split DIR | --query DIR --gallery DIR
    faceforge eval classify --model M --split split.json [--gallery-split train --query-split test]
    faceforge eval classify --run runs/NAME --gallery DIR --query DIR --k 20
    faceforge eval ijb --model M --root IJB_ROOT --target IJBC

``M`` (``--model``, or its old name ``--checkpoint``) is a pretrained name (``dlib``), a faceforge
``.ckpt`` or ``.onnx``, an insightface ONNX, dlib's ``.dat`` or a foreign state dict (``--arch``);
``--color --mean --std --template --input-size`` replace its preprocessing facts. ``--run runs/NAME``
instead takes the newest run under that folder (its ``checkpoints/best.ckpt``, else ``last.ckpt``).
Several verification sets get a ``mean`` row (their average) in the table and the report.

Images of pair lists and folders that are not already aligned crops are detected and aligned to the
model's template like ``faceforge verify`` does (``--detector auto``: YuNet, else SCRFD; ``none`` for
pre-aligned sets; a detector name, with ``--detector-model FILE`` for its file). Images where no face
is found are cropped at the typical face position and counted in the report. Detected crops and
embeddings are cached under ``$FACEFORGE_HOME/cache`` (``--cache-dir``, ``--no-cache``).

Every command adds its rows to ``report.json`` / ``report.md`` (and ``roc.png`` / ``det.png``) in the
report folder (default: the checkpoint's run directory for a ``.ckpt``, else
``./eval_reports/<model name>``); rows of the same name are replaced.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path
from typing import Any

from faceforge.cli._common import RESERVED_KEYS, note, read_report, write_report
from faceforge.errors import FaceforgeError

__all__ = ["RESERVED_KEYS", "read_report", "register", "write_report"]


def _common(p: argparse.ArgumentParser, sub: bool) -> None:
    # In a sub-command an option left out must not overwrite the value given before the sub-command
    # name (``faceforge eval --model M ijb ...``), hence SUPPRESS there.
    d = (lambda v: argparse.SUPPRESS) if sub else (lambda v: v)
    p.add_argument(
        "--model",
        "--checkpoint",
        dest="model",
        metavar="NAME|FILE",
        default=d(None),
        help="pretrained name (dlib), faceforge .ckpt/.onnx, insightface .onnx, dlib .dat, or an "
        "arcface_torch/AdaFace/EdgeFace/evoLVe state dict (--checkpoint is the old name)",
    )
    p.add_argument(
        "--arch", default=d(None), help="backbone of a foreign state dict when its keys fit several"
    )
    g = p.add_argument_group("preprocessing overrides (replace what the model file says or inferred)")
    g.add_argument("--color", choices=("RGB", "BGR"), default=d(None), help="channel order of the weights")
    g.add_argument("--mean", default=d(None), help="per-channel mean: 1 or 3 numbers, 0-1 or 0-255 scale")
    g.add_argument("--std", default=d(None), help="per-channel std: 1 or 3 numbers, 0-1 or 0-255 scale")
    g.add_argument(
        "--template",
        choices=("arcface", "dlib", "none"),
        default=d(None),
        help="alignment template (none: whole image)",
    )
    g.add_argument("--input-size", default=d(None), help="model input as N or HxW, e.g. 112 or 150")
    p.add_argument(
        "--run",
        default=d(None),
        metavar="DIR",
        help="a training run folder (runs/NAME or runs/NAME/TIMESTAMP): its newest checkpoints/best.ckpt, "
        "else last.ckpt, when --model is not given",
    )
    p.add_argument("--device", default=d("cpu"), help="torch device of the model (default cpu)")
    p.add_argument(
        "--out",
        default=d(None),
        help="report folder (default: the checkpoint's run directory, else ./eval_reports/<model name>)",
    )
    p.add_argument("--batch-size", type=int, default=d(256), help="images per forward pass (default 256)")
    p.add_argument(
        "--flip",
        choices=("none", "sum", "concat", "norm"),
        default=d("sum"),
        help="flip-test fusion of an image and its mirror (see docs/evaluation.md; default sum)",
    )
    p.add_argument("--no-flip", action="store_true", default=d(False), help="same as --flip none")
    p.add_argument(
        "--cache-dir",
        default=d(None),
        help="embedding cache (default: $FACEFORGE_HOME/cache/embeddings; detected crops go to "
        "$FACEFORGE_HOME/cache/crops, or CACHE_DIR/crops)",
    )
    p.add_argument(
        "--no-cache", action="store_true", default=d(False), help="do not read or write the caches"
    )
    p.add_argument(
        "--fresh", action="store_true", default=d(False), help="start a new report instead of adding rows"
    )


def _detector_options(p: argparse.ArgumentParser, sub: bool) -> None:
    d = (lambda v: argparse.SUPPRESS) if sub else (lambda v: v)
    p.add_argument(
        "--detector",
        default=d("auto"),
        help="how images become crops: auto (aligned crops as they are, else detect with yunet, then "
        "scrfd), none (pre-aligned sets: resize only), a detector name (faceforge.align.list_detectors) "
        "or a detector model file",
    )
    p.add_argument(
        "--detector-model",
        default=d(None),
        metavar="FILE",
        help="model file of --detector NAME (e.g. SCRFD det_10g.onnx with --detector scrfd)",
    )


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``eval`` command and its ``retrieval`` / ``classify`` / ``ijb`` sub-commands."""
    p = sub.add_parser(
        "eval",
        help="verification (any number of sets), retrieval, IJB-B/C, low-resolution; report with calibration",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _common(p, sub=False)
    _detector_options(p, sub=False)
    p.add_argument(
        "--sets",
        nargs="+",
        default=[],
        metavar="SPEC",
        help="verification sets: [NAME=]PATH.bin or [NAME=]PAIRS[:IMAGE_ROOT]",
    )
    p.add_argument("--bin", action="append", default=[], help="a .bin pair set (repeatable)")
    p.add_argument(
        "--pairs",
        action="append",
        default=[],
        help="pair list: LFW pairs.txt, 'label p1 p2', 'p1 p2 label' or CSV (repeatable)",
    )
    p.add_argument("--root", help="image folder of the --pairs lists (default: found next to the pair file)")
    p.add_argument(
        "--allow-outside-root",
        action="store_true",
        help="let image paths of pair lists resolve outside their root (refused by default)",
    )
    p.add_argument("--name", help="report name of the set when exactly one is given")
    p.add_argument("--mode", choices=("grid", "exact"), default="grid", help="10-fold threshold search")
    p.add_argument("--folds", type=int, default=10, help="folds of the accuracy protocol (default 10)")
    p.add_argument(
        "--far", type=float, default=1e-3, help="operating point of the calibration (default 1e-3)"
    )
    p.add_argument("--calibrate-on", help="set whose thresholds become the calibration (default: the first)")
    p.add_argument(
        "--write-calibration",
        action="store_true",
        help="store the calibration with the model so inference uses it: in a .ckpt (atomically), or "
        "for a pretrained name in $FACEFORGE_HOME/calibration/NAME.json",
    )
    p.add_argument("--lowres", help="also evaluate each set downscaled by these factors, e.g. 2,4,8")
    p.add_argument("--sr", help="super-resolution MODULE:CALLABLE applied to the low-resolution images")
    p.add_argument("--baseline", action="store_true", help="add the raw-pixel nearest-neighbour baseline row")
    p.set_defaults(func=run, eval_task=None)

    tasks = p.add_subparsers(dest="eval_task", metavar="TASK", required=False)
    r = tasks.add_parser("retrieval", help="Recall@K, precision@1, mAP@R of ImageFolder trees (Faiss)")
    _common(r, sub=True)
    _detector_options(r, sub=True)
    r.add_argument("--split", help="one ImageFolder: every image queries all others")
    r.add_argument("--query", help="query ImageFolder (with --gallery)")
    r.add_argument("--gallery", help="gallery ImageFolder (with --query)")
    r.add_argument("--ks", default="1,5,10", help="K values of Recall@K (default 1,5,10)")
    r.add_argument("--index", choices=("flat", "ivf"), default="flat", help="exact (flat) or IVF search")
    r.add_argument("--name", dest="retrieval_name", help="report row name (default: the folder name)")
    r.set_defaults(func=run_retrieval)

    c = tasks.add_parser(
        "classify",
        help="classification by retrieval: kNN vote over a labelled gallery (accuracy, Recall@K, mAP@R)",
        description="Embed a labelled gallery and query images, classify each query by its k nearest "
        "gallery images (majority, similarity-weighted and nearest-neighbour votes) and write "
        "classify.json / classify.md / confusion.png (see docs/evaluation.md).",
    )
    _common(c, sub=True)
    _detector_options(c, sub=True)
    c.add_argument(
        "--split", dest="classify_split", metavar="SPLIT.json", help="split file (faceforge data split)"
    )
    c.add_argument(
        "--gallery-split", default="train", help="part of --split used as the gallery (default train)"
    )
    c.add_argument(
        "--query-split", default="test", metavar="NAME", help="part of --split used as queries (default test)"
    )
    c.add_argument(
        "--gallery", dest="classify_gallery", metavar="DIR", help="gallery folder DIR/<class>/**/<image>"
    )
    c.add_argument(
        "--query", dest="classify_query", metavar="DIR", help="query folder DIR/<class>/**/<image>"
    )
    c.add_argument(
        "--k", type=int, default=20, help="neighbours of the vote (default 20; k=1 is reported too)"
    )
    c.add_argument(
        "--ks", dest="classify_ks", default="1,5", metavar="K,K", help="K values of Recall@K (default 1,5)"
    )
    c.add_argument(
        "--index", dest="classify_index", choices=("auto", "flat", "ivf"), default="auto",
        help="gallery search: exact (flat), IVF, or auto (flat below 50,000 gallery images)",
    )  # fmt: skip
    c.add_argument(
        "--top",
        type=int,
        default=5,
        metavar="N",
        help="neighbours listed per misclassified query (default 5)",
    )
    c.add_argument(
        "--name",
        dest="classify_name",
        metavar="NAME",
        help="report row name (default: from the split or folder)",
    )
    c.set_defaults(func=run_classify)

    j = tasks.add_parser("ijb", help="IJB-B/C 1:1 TAR@FAR (and 1:N when its meta files are present)")
    _common(j, sub=True)
    j.add_argument("--root", dest="ijb_root", required=True, help="IJB folder (holding IJBC/ or meta/)")
    j.add_argument("--target", default="IJBC", help="IJBB or IJBC (default IJBC)")
    j.add_argument("--no-faceness", action="store_true", help="do not weight images by their faceness score")
    j.set_defaults(func=run_ijb)


# --------------------------------------------------------------------------------------------------
# helpers


def default_report_dir(checkpoint: Path) -> Path:
    """``runs/<name>/<ts>`` for ``runs/<name>/<ts>/checkpoints/x.ckpt``, else the checkpoint's folder."""
    parent = checkpoint.resolve().parent
    return parent.parent if parent.name == "checkpoints" else parent


def _flip(args: argparse.Namespace) -> str:
    return "none" if args.no_flip else args.flip


def run_checkpoint(run: str | Path) -> Path:
    """The checkpoint of a training run folder: ``checkpoints/best.ckpt``, else ``last.ckpt``.

    ``run`` is one run (``runs/NAME/TIMESTAMP``) or a run name's folder (``runs/NAME``), whose newest
    timestamped run holding a checkpoint is taken (``train.run.make_run_dir`` names them
    ``YYYYmmdd-HHMMSS[-k]``, so they sort by name).
    """
    base = Path(run).expanduser()
    if not base.is_dir():
        raise FaceforgeError(f"--run {run}: not a folder (expected runs/NAME or runs/NAME/TIMESTAMP)")

    def pick(folder: Path) -> Path | None:
        for name in ("best.ckpt", "last.ckpt"):
            if (folder / "checkpoints" / name).is_file():
                return folder / "checkpoints" / name
        return None

    if (base / "checkpoints").is_dir():
        found = pick(base)
    else:

        def order(d: Path) -> tuple[str, int]:
            m = re.match(r"^(\d{8}-\d{6})(?:-(\d+))?$", d.name)
            return (m.group(1), int(m.group(2) or 0)) if m else (d.name, 0)

        runs = sorted((d for d in base.iterdir() if d.is_dir()), key=order, reverse=True)
        found = next((c for c in map(pick, runs) if c is not None), None)
    if found is None:
        raise FaceforgeError(
            f"--run {run}: no checkpoints/best.ckpt or last.ckpt in it or its run folders; "
            "pass --model FILE instead"
        )
    return found


def _load_model(args: argparse.Namespace) -> tuple[Any, Any]:
    """(EmbeddingModel, suite.ModelInfo) of ``--model`` (or ``--run``) with ``--arch`` and the overrides."""
    from faceforge.cli._common import model_overrides
    from faceforge.eval.suite import ModelInfo
    from faceforge.infer.loading import load_model

    run = getattr(args, "run", None)
    if run and getattr(args, "model", None):
        raise FaceforgeError(f"give --model {args.model} or --run {run}, not both")
    if run:
        args.model = str(run_checkpoint(run))
        print(f"model: {args.model} (newest checkpoint of --run {run})")
    if not getattr(args, "model", None):
        raise FaceforgeError(
            "faceforge eval: --model NAME|FILE is required (or --run DIR; --checkpoint is its old name)"
        )
    model = load_model(
        args.model, arch=getattr(args, "arch", None), overrides=model_overrides(args),
        device=getattr(args, "device", "cpu"),
    )  # fmt: skip
    print(model.describe())
    return model, ModelInfo.from_model(model)


def _cache(args: argparse.Namespace) -> Any:
    from faceforge.eval.cache import EmbeddingCache, default_cache_dir

    if args.no_cache:
        return EmbeddingCache(None)
    return EmbeddingCache(Path(args.cache_dir) if args.cache_dir else default_cache_dir())


def _crop_cache(args: argparse.Namespace) -> Any:
    from faceforge.eval.cache import CropCache, default_crop_cache_dir

    if args.no_cache:
        return None
    return CropCache(Path(args.cache_dir) / "crops" if args.cache_dir else default_crop_cache_dir())


def _safe_name(name: str) -> str:
    import re

    return re.sub(r"[^A-Za-z0-9_.+-]+", "_", name).strip("._") or "model"


def default_out(model: Any) -> Path:
    """The report folder of a model: a checkpoint's run directory, else ``./eval_reports/<name>``."""
    if model.kind == "checkpoint":
        return default_report_dir(Path(model.source))
    name = model.name if model.kind == "pretrained" else Path(model.source).stem
    return Path("eval_reports") / _safe_name(name)


def _out(args: argparse.Namespace, model: Any) -> Path:
    if args.out:
        return Path(args.out)
    out = default_out(model)
    where = "the checkpoint's run directory" if model.kind == "checkpoint" else "default for this model"
    print(f"report folder: {out} ({where}; --out DIR to change)")
    return out


def _print_paths(paths: dict[str, Path]) -> None:
    extra = ", ".join(p.name for k, p in paths.items() if k != "md")
    print(f"report: {paths['md']}  ({extra})")


# --------------------------------------------------------------------------------------------------
# verification


def _specs(args: argparse.Namespace) -> list[Any]:
    from faceforge.eval.suite import SetSpec, guess_set_name, parse_set_spec

    specs = [parse_set_spec(s) for s in args.sets]
    for b in args.bin:
        p = Path(b).expanduser()
        if not p.is_file():
            raise FaceforgeError(f"--bin {b}: .bin file does not exist")
        specs.append(SetSpec(guess_set_name(p), p, "bin"))
    for q in args.pairs:
        p = Path(q).expanduser()
        if not p.is_file():
            raise FaceforgeError(f"pair file {p} does not exist or is not a file")
        root = Path(args.root).expanduser() if args.root else None
        if root is not None and not root.is_dir():
            raise FaceforgeError(f"--root {root}: not a folder")
        # Named like --sets names the same file (.../lfw/pairs.txt -> lfw).
        specs.append(SetSpec(guess_set_name(p), p, "bin" if p.suffix.lower() == ".bin" else "pairs", root))
    if not specs:
        raise FaceforgeError("faceforge eval: give at least one set (--sets, --bin or --pairs), or a TASK")
    if args.name:
        if len(specs) != 1:
            raise FaceforgeError(f"--name applies to a single set, but {len(specs)} sets were given")
        specs[0] = SetSpec(args.name, specs[0].path, specs[0].kind, specs[0].root)
    return specs


def _factors(text: str | None) -> list[float]:
    if not text:
        return []
    try:
        vals = [float(v) for v in text.replace(" ", "").split(",") if v]
    except ValueError:
        raise FaceforgeError(
            f"--lowres {text!r}: expected comma-separated factors >= 1, e.g. 2,4,8"
        ) from None
    if not vals or any(not v >= 1 for v in vals):
        raise FaceforgeError(f"--lowres {text!r}: expected comma-separated factors >= 1, e.g. 2,4,8")
    return vals


def evaluate_checkpoint(
    checkpoint: str | Path,
    pairs_path: str | Path,
    root: str | Path | None = None,
    batch_size: int = 256,
    flip: bool | str = True,
    baseline: bool = False,
    name: str | None = None,
    detector: Any = "auto",
) -> dict[str, dict[str, Any]]:
    """Results keyed by row name: a model (any ``--model`` spec) on one pair list, no cache."""
    from faceforge.eval.suite import ModelInfo, SetSpec, evaluate_sets, guess_set_name
    from faceforge.infer.loading import load_model

    info = ModelInfo.from_model(load_model(checkpoint))
    p = Path(pairs_path)
    spec = SetSpec(
        name or guess_set_name(p), p, "bin" if p.suffix.lower() == ".bin" else "pairs",
        Path(root) if root else None,
    )  # fmt: skip
    return evaluate_sets([spec], info, flip, batch_size=batch_size, baseline=baseline, detector=detector)


def _print_faces(results: dict[str, Any]) -> None:
    """How each set's images became crops; no-face images with the rule that cropped them."""
    from faceforge.eval.crops import NO_FACE_RULE

    rule_shown = False
    for name, row in results.items():
        method = row.get("alignment")
        if method == "detected":
            n_nf = int(row.get("no_face_images") or 0)
            line = (
                f"faces: {name}: detected with {row.get('detector')} in {row.get('n_images', '?')} images, "
                f"no face in {n_nf}"
            )
            if n_nf:
                ex = ", ".join(Path(p).name for p in (row.get("no_face_examples") or [])[:3])
                line += f" (e.g. {ex})"
                if not rule_shown:
                    line += f"; {NO_FACE_RULE}"
                    rule_shown = True
            print(line)
        elif method == "resized":
            print(
                f"faces: {name}: {row.get('resized_without_alignment')} image(s) resized whole, without "
                "detection or alignment (--detector none)"
            )
        elif method == "realigned":
            print(f"faces: {name}: arcface crops re-aligned to the model's template ({row.get('set')})")


#: name of the row averaging the verification sets of one ``faceforge eval`` command
MEAN_ROW = "mean"
_MEAN_KEYS = ("accuracy", "auc", "eer")


def mean_row(rows: dict[str, dict[str, Any]]) -> dict[str, Any] | None:
    """The unweighted mean of accuracy, AUC, EER and TAR@FAR over two or more verification rows.

    Each set counts once whatever its number of pairs (how multi-benchmark face results are averaged,
    e.g. the LFW/CFP-FP/AgeDB-30 mean); a key missing from any row is left out. None for fewer rows.
    """
    if len(rows) < 2:
        return None
    out: dict[str, Any] = {"kind": "verification", "sets": list(rows), "n_sets": len(rows)}
    for key in _MEAN_KEYS:
        vals = [r.get(key) for r in rows.values()]
        if all(isinstance(v, (int, float)) for v in vals):
            out[key] = float(sum(vals)) / len(vals)  # type: ignore[arg-type]
    tars = [r.get("tar_at_far") or {} for r in rows.values()]
    common = set(tars[0]).intersection(*tars[1:])
    common = {f for f in common if all(isinstance(t[f], (int, float)) for t in tars)}
    if common:
        out["tar_at_far"] = {f: sum(float(t[f]) for t in tars) / len(tars) for f in sorted(common, key=float)}
    return out


def _check_write_calibration(args: argparse.Namespace, model: Any) -> None:
    if model.kind in ("checkpoint", "pretrained"):
        return
    raise FaceforgeError(
        f"--write-calibration: {model.source} is a {model.kind} file without a place for a calibration; "
        f"make a faceforge file of it first (faceforge models import {model.source} --out FILE), then "
        "evaluate that file with --write-calibration"
    )


def run(args: argparse.Namespace) -> int:
    """Evaluate every set, print the table, write the report (and the model's calibration)."""
    from faceforge.fileio import set_outside_root_allowed

    set_outside_root_allowed(getattr(args, "allow_outside_root", False))
    from faceforge.eval.calibration import calibration_from_result, pick_threshold
    from faceforge.eval.report import format_report
    from faceforge.eval.suite import evaluate_sets, load_sr_module, write_checkpoint_calibration

    specs = _specs(args)
    factors = _factors(args.lowres)
    if args.sr and not factors:
        raise FaceforgeError(
            "--sr needs --lowres FACTORS (the super-resolution input is the low-resolution image)"
        )
    if not 0.0 < args.far <= 1.0:
        raise FaceforgeError(f"--far {args.far}: expected a false accept rate in (0, 1], e.g. 1e-3")
    sr = load_sr_module(args.sr) if args.sr else None
    flip = _flip(args)
    if args.write_calibration and flip != "sum":
        raise FaceforgeError(
            f"--write-calibration with --flip {flip}: inference embeds with flip sum, so its threshold "
            "must come from --flip sum"
        )
    model, info = _load_model(args)
    if args.write_calibration:
        _check_write_calibration(args, model)
    out = _out(args, model)
    cache = _cache(args)
    crop_cache = _crop_cache(args)
    results = evaluate_sets(
        specs, info, flip, args.mode, args.folds, args.batch_size, cache, args.baseline, factors, sr,
        detector=args.detector, detector_model=args.detector_model, crop_cache=crop_cache,
        stored_threshold=pick_threshold(model.calibration),
    )  # fmt: skip
    names = [n for n, r in results.items() if "lowres_factor" not in r and not n.endswith("(raw pixels)")]
    target = args.calibrate_on or names[0]
    if target not in results:
        from faceforge.errors import did_you_mean

        raise FaceforgeError(
            f"--calibrate-on {target!r} is not an evaluated set{did_you_mean(target, names)}; sets: {names}"
        )
    r = results[target]
    source = f"{target} ({r['n_pairs']} pairs, flip {flip}, {args.mode} mode, model {model.name})"
    if r.get("alignment") == "detected":
        source += f", faces detected with {r.get('detector')}"
    cal = calibration_from_result(r, source, args.far)
    mean = mean_row({n: results[n] for n in names})
    if mean is not None:
        results[MEAN_ROW] = mean
    print(format_report(results))
    if cache.hits:
        print(f"embeddings: {cache.hits} set(s) from the cache ({cache.directory})")
    if crop_cache is not None and crop_cache.hits:
        print(f"crops: {crop_cache.hits} image(s) from the crop cache ({crop_cache.directory})")
    _print_faces(results)
    for name, row in results.items():
        if row.get("accuracy_at_stored_threshold") is not None:
            print(
                f"{name}: the model's stored threshold {row['stored_threshold']:.4f} decides "
                f"{100 * row['accuracy_at_stored_threshold']:.2f}% of the {row['n_pairs']} pairs right"
            )
        if row.get("undecodable_images"):
            print(
                f"warning: {name}: {row['undecodable_images']} image(s) could not be decoded "
                "and were scored as black images"
            )
    if cal["far_target"] is None:
        print(f"calibration: threshold {cal['threshold']:.4f} (cosine) on {target}: {cal['far_note']}")
    else:
        print(
            f"calibration: threshold {cal['threshold']:.4f} (cosine) at FAR={args.far:g} on {target} "
            f"({cal['far_note']})"
        )
    if flip != "sum":
        print(
            f"note: calibrated with --flip {flip}; FaceRecognizer fuses flips by sum, "
            "so use --flip sum for its threshold"
        )
    paths = write_report(results, out, cal, merge=not args.fresh)
    _print_paths(paths)
    if args.write_calibration:
        if model.kind == "checkpoint":
            write_checkpoint_calibration(model.source, cal)
            print(f"calibration written into {model.source}")
        else:
            from faceforge.models.pretrained import save_calibration

            p = save_calibration(model.name, cal)
            print(f"calibration of pretrained model {model.name!r} written to {p}")
    return 0


# --------------------------------------------------------------------------------------------------
# retrieval and IJB


def run_retrieval(args: argparse.Namespace) -> int:
    """Retrieval metrics of ImageFolder trees, added to the report."""
    from faceforge.eval.report import format_report
    from faceforge.eval.suite import evaluate_retrieval_folders

    try:
        ks = [int(k) for k in args.ks.split(",") if k.strip()]
    except ValueError:
        raise FaceforgeError(f"--ks {args.ks!r}: expected comma-separated integers, e.g. 1,5,10") from None
    if args.split and (args.query or args.gallery):
        raise FaceforgeError("retrieval: give --split DIR, or --query DIR and --gallery DIR, not both")
    if not args.split and not (args.query and args.gallery):
        raise FaceforgeError("retrieval: give --split DIR, or both --query DIR and --gallery DIR")
    model, info = _load_model(args)
    out = _out(args, model)
    cache = _cache(args)
    res = evaluate_retrieval_folders(
        info, args.split, args.query, args.gallery, _flip(args), ks, args.index, args.batch_size, cache,
        detector=args.detector, detector_model=args.detector_model, crop_cache=_crop_cache(args),
    )  # fmt: skip
    name = args.retrieval_name or f"{Path(args.split or args.query).name} (retrieval)"
    rows = {name: res}
    print(format_report(rows))
    paths = write_report(rows, out, merge=not args.fresh)
    _print_paths(paths)
    return 0


def _int_list(text: str, option: str) -> list[int]:
    try:
        vals = [int(k) for k in text.split(",") if k.strip()]
    except ValueError:
        vals = []
    if not vals or min(vals) < 1:
        raise FaceforgeError(f"{option} {text!r}: expected comma-separated positive integers, e.g. 1,5")
    return vals


def _classify_inputs(args: argparse.Namespace) -> tuple[Any, Any, list[str], str, bool]:
    """(gallery (paths, labels), queries (paths, labels), class names, default row name, same split)."""
    from faceforge.eval.classify import folder_samples

    split, gdir, qdir = args.classify_split, args.classify_gallery, args.classify_query
    if split and (gdir or qdir):
        raise FaceforgeError("classify: give --split FILE, or --gallery DIR and --query DIR, not both")
    if not split:
        if not (gdir and qdir):
            raise FaceforgeError("classify: give --split FILE, or both --gallery DIR and --query DIR")
        gp, gl, names = folder_samples(gdir)
        # Query folders may hold classes the gallery lacks: they are added after the gallery's.
        qroot = Path(qdir)
        subs = [d.name for d in qroot.iterdir() if d.is_dir()] if qroot.is_dir() else []
        extra = sorted(n for n in subs if n not in names and not n.startswith("."))
        qp, ql, names = folder_samples(qdir, names + extra)
        return (gp, gl), (qp, ql), names, f"{Path(qdir).name} (classify)", False
    from faceforge.data.splits import Split

    sp = Split.load(split)
    if sp.classes is None:
        raise FaceforgeError(
            f"--split {split}: layout {sp.layout!r} has no classes; eval classify needs a class-layout split "
            "(root/<class>/<ID>_<seq>.jpg, faceforge data split --layout class)"
        )
    gal = sp.samples(args.gallery_split, label="class")
    qry = sp.samples(args.query_split, label="class")
    if not gal or not qry:
        empty = args.gallery_split if not gal else args.query_split
        raise FaceforgeError(f"--split {split}: part {empty!r} holds no images")
    same = args.gallery_split == args.query_split
    name = f"{Path(split).stem} {args.query_split} (classify)"
    return (
        ([p for p, _ in gal], [c for _, c in gal]),
        ([p for p, _ in qry], [c for _, c in qry]),
        list(sp.classes),
        name,
        same,
    )


def run_classify(args: argparse.Namespace) -> int:
    """Classification by retrieval of a split or two class folders; classify.* and a report row."""
    from faceforge.eval.classify import evaluate_classification, format_classify, write_classify_report

    ks = _int_list(args.classify_ks, "--ks")
    if args.k < 1:
        raise FaceforgeError(f"--k {args.k}: expected a positive number of neighbours, e.g. 20")
    if args.top < 0:
        raise FaceforgeError(f"--top {args.top}: expected 0 or more neighbours to list")
    gallery, queries, names, default_name, same = _classify_inputs(args)
    n_search = len(gallery[0]) - same  # leave-one-out searches all but the query itself
    if max(ks) > n_search:
        raise FaceforgeError(
            f"--ks {args.classify_ks}: K={max(ks)} is larger than the gallery ({n_search} images per query)"
        )
    if args.k > n_search:
        note(
            args,
            f"note: --k {args.k} is more than the gallery's {n_search} images per query; voting with all",
        )
    model, info = _load_model(args)
    out = _out(args, model)
    res, facts = evaluate_classification(
        info, gallery, queries, names, k=args.k, ks=ks, index=args.classify_index, exclude_self=same,
        flip=_flip(args), batch_size=args.batch_size, cache=_cache(args), detector=args.detector,
        detector_model=args.detector_model, crop_cache=_crop_cache(args),
    )  # fmt: skip
    row_name = args.classify_name or default_name
    folder = out / f"classify-{_safe_name(row_name.replace(' (classify)', ''))}"
    extra = {"model": model.name, "source": str(model.source), "flip": _flip(args), "leave_one_out": same}
    extra.update({k: v for k, v in facts.items() if not k.endswith("_paths")})
    paths = write_classify_report(
        res, folder, query_paths=facts["query_paths"], gallery_paths=facts["gallery_paths"], title=row_name,
        top=args.top, extra=extra,
    )  # fmt: skip
    print(format_classify(res, title=row_name))
    if facts["undecodable"]:
        print(
            f"warning: {len(facts['undecodable'])} undecodable image(s) left out; "
            f"first: {facts['undecodable'][0]}",
            file=sys.stderr,
        )
    if facts["query_classes_not_in_gallery"]:
        miss = facts["query_classes_not_in_gallery"]
        note(args, f"note: {len(miss)} query class(es) have no gallery image and cannot be predicted: "
             + ", ".join(miss[:5]))  # fmt: skip
    d = res.to_dict()
    keys = ("kind", "accuracy", "accuracy_majority", "accuracy_top1", "recall_at_k", "map_at_r", "macro_f1",
            "k", "index", "n_queries", "n_gallery", "n_classes")  # fmt: skip
    row = {k: d[k] for k in keys}
    row.update(worst_confusions=d["worst_confusions"][:5], details=str(paths["json"]), flip=_flip(args))
    rep = write_report({row_name: row}, out, merge=not args.fresh)
    print(f"classify report: {paths['markdown']}  ({paths['json'].name}, {paths['confusion'].name})")
    _print_paths(rep)
    return 0


def run_ijb(args: argparse.Namespace) -> int:
    """IJB-B/C 1:1 (and 1:N) of a checkpoint, added to the report."""
    from faceforge.eval.ijb import embed_ijb, evaluate_ijb_features, read_ijb_meta
    from faceforge.eval.report import format_report

    meta = read_ijb_meta(args.ijb_root, args.target)
    model, info = _load_model(args)
    out = _out(args, model)
    flip = _flip(args)
    cache = _cache(args)
    size = info.hw
    parts = {"what": "ijb", "model": info.fingerprint, "meta": meta.fingerprint(), "flip": flip,
             "size": list(size), "color": info.color, "template": info.template}  # fmt: skip
    feats = cache.get(parts)
    if feats is None or len(feats) != len(meta.image_names):
        feats = embed_ijb(meta, info.embed, size, info.template, flip, args.batch_size)
        cache.put(parts, feats)
    else:
        print(f"embeddings: {len(feats)} IJB images from the cache ({cache.directory})")
    rows = evaluate_ijb_features(meta, feats, faceness=not args.no_faceness)
    for r in rows.values():
        r["flip"] = flip
    print(format_report(rows))
    paths = write_report(rows, out, merge=not args.fresh)
    _print_paths(paths)
    return 0
