"""``faceforge eval`` verification options (any number of sets, low resolution, reports) and the verb's
help text, :data:`DESCRIPTION` (examples, what ``--model`` takes, detection, caches, the report folder);
``register(sub)`` adds them to the parser made by ``eval_cmd``. Details: docs/evaluation.md.
"""

from __future__ import annotations

import argparse

from faceforge.cli._common import load_eval_model

__all__ = ["register"]

DESCRIPTION = """\
``faceforge eval``: verification on any number of sets, retrieval, IJB-B/C, low resolution, reports.

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
model's template like ``faceforge verify`` does (``--detector auto``: SCRFD, else YuNet; ``none`` for
pre-aligned sets; a detector name, with ``--detector-model FILE`` for its file). Images where no face
is found are cropped at the typical face position and counted in the report. Detected crops and
embeddings are cached under ``$FACEFORGE_HOME/cache`` (``--cache-dir``, ``--no-cache``).

Every command adds its rows to ``report.json`` / ``report.md`` (and ``roc.png`` / ``det.png``) in the
report folder (default: the checkpoint's run directory for a ``.ckpt``, else
``./eval_reports/<model name>``); rows of the same name are replaced.
"""


def register(sub: argparse._SubParsersAction) -> None:
    """Add the verification options of ``faceforge eval`` (the verb is made by ``eval_cmd``)."""
    p = sub.choices["eval"]
    p.description = DESCRIPTION
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


def run(args: argparse.Namespace) -> int:
    """Evaluate every set, print the table, write the report (and the model's calibration)."""
    from faceforge.errors import FaceforgeError
    from faceforge.eval import run as ev
    from faceforge.eval.report import format_report, write_report
    from faceforge.eval.suite import load_sr_module
    from faceforge.fileio import set_outside_root_allowed

    set_outside_root_allowed(getattr(args, "allow_outside_root", False))
    specs = ev.build_set_specs(args.sets, args.bin, args.pairs, args.root, args.name)
    factors = ev.parse_factors(args.lowres)
    if args.sr and not factors:
        raise FaceforgeError(
            "--sr needs --lowres FACTORS (the super-resolution input is the low-resolution image)"
        )
    if not 0.0 < args.far <= 1.0:
        raise FaceforgeError(f"--far {args.far}: expected a false accept rate in (0, 1], e.g. 1e-3")
    sr = load_sr_module(args.sr) if args.sr else None
    flip = "none" if args.no_flip else args.flip
    if args.write_calibration and flip != "sum":
        raise FaceforgeError(
            f"--write-calibration with --flip {flip}: inference embeds with flip sum, so its threshold "
            "must come from --flip sum"
        )
    model, info, out = load_eval_model(args, calibrating=args.write_calibration)
    cache, crop_cache = ev.open_caches(args.cache_dir, args.no_cache)
    results, cal, target = ev.verify_and_calibrate(
        specs, model, info, flip, args.far, args.calibrate_on, mode=args.mode, n_folds=args.folds,
        batch_size=args.batch_size, cache=cache, baseline=args.baseline, lowres_factors=factors, sr=sr,
        detector=args.detector, detector_model=args.detector_model, crop_cache=crop_cache,
    )  # fmt: skip
    print(format_report(results))
    for line in ev.verification_lines(results, cal, target, args.far, flip, cache, crop_cache):
        print(line)
    print(ev.paths_line(write_report(results, out, cal, merge=not args.fresh)))
    if args.write_calibration:
        print(ev.store_calibration(model, cal))
    return 0
