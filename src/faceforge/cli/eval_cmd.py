"""``faceforge eval``: verification on any number of sets, retrieval, IJB-B/C, low resolution, reports.

::

    faceforge eval --model M --pairs lfw/pairs.txt --root lfw/lfw-deepfunneled   (raw photos: detected)
    faceforge eval --model M --sets lfw=lfw.bin data/cfp_fp.bin mine=pairs.txt:images/
    faceforge eval --model M --bin lfw.bin --bin agedb_30.bin --lowres 2,4,8 [--sr mod:fn]
    faceforge eval retrieval --model M --split DIR | --query DIR --gallery DIR
    faceforge eval ijb --model M --root IJB_ROOT --target IJBC

``M`` (``--model``, or its old name ``--checkpoint``) is a pretrained name (``dlib``), a faceforge
``.ckpt`` or ``.onnx``, an insightface ONNX, dlib's ``.dat`` or a foreign state dict (``--arch``);
``--color --mean --std --template --input-size`` replace its preprocessing facts.

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
from pathlib import Path
from typing import Any

from faceforge.cli._common import RESERVED_KEYS, read_report, write_report
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
    """Add the ``eval`` command and its ``retrieval`` / ``ijb`` sub-commands."""
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


def _load_model(args: argparse.Namespace) -> tuple[Any, Any]:
    """(EmbeddingModel, suite.ModelInfo) of ``--model`` with ``--arch`` and the overrides."""
    from faceforge.cli._common import model_overrides
    from faceforge.eval.suite import ModelInfo
    from faceforge.infer.loading import load_model

    if not getattr(args, "model", None):
        raise FaceforgeError("faceforge eval: --model NAME|FILE is required (--checkpoint is its old name)")
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
