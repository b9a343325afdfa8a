"""``faceforge eval``: the verb, its shared options and the ``retrieval`` / ``classify`` / ``ijb`` tasks;
verification (the verb without a task, and its help text) is in ``eval_verify_cmd``, and the work of
both is in :mod:`faceforge.eval.run`. Details: docs/evaluation.md.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from faceforge.cli._common import load_eval_model, note
from faceforge.errors import FaceforgeError

__all__ = ["register"]


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
        help="how images become crops: auto (aligned crops as they are, else detect with scrfd, yunet or "
        "dlib, the first one installed), none (pre-aligned sets: resize only), a detector name "
        "(faceforge.align.list_detectors) or a detector model file",
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
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _common(p, sub=False)
    _detector_options(p, sub=False)

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


def run_retrieval(args: argparse.Namespace) -> int:
    """Retrieval metrics of ImageFolder trees, added to the report."""
    from faceforge.eval.report import format_report, write_report
    from faceforge.eval.run import check_retrieval, open_caches, paths_line
    from faceforge.eval.suite import evaluate_retrieval_folders

    ks = check_retrieval(args.ks, args.split, args.query, args.gallery)
    _, info, out = load_eval_model(args)
    cache, crop_cache = open_caches(args.cache_dir, args.no_cache)
    flip = "none" if args.no_flip else args.flip
    res = evaluate_retrieval_folders(
        info, args.split, args.query, args.gallery, flip, ks, args.index, args.batch_size, cache,
        detector=args.detector, detector_model=args.detector_model, crop_cache=crop_cache,
    )  # fmt: skip
    rows = {args.retrieval_name or f"{Path(args.split or args.query).name} (retrieval)": res}
    print(format_report(rows))
    print(paths_line(write_report(rows, out, merge=not args.fresh)))
    return 0


def run_classify(args: argparse.Namespace) -> int:
    """Classification by retrieval of a split or two class folders; classify.* and a report row."""
    from faceforge.eval import run as ev
    from faceforge.eval.classify import format_classify
    from faceforge.eval.report import write_report

    ks = ev.check_classify(args.classify_ks, args.k, args.top)
    inputs = ev.classify_inputs(
        args.classify_split, args.classify_gallery, args.classify_query, args.gallery_split, args.query_split
    )
    n_search = len(inputs[0][0]) - inputs[4]  # leave-one-out searches all but the query itself
    if max(ks) > n_search:
        raise FaceforgeError(
            f"--ks {args.classify_ks}: K={max(ks)} is larger than the gallery ({n_search} images per query)"
        )
    if args.k > n_search:
        note(args, f"note: --k {args.k} is more than the gallery's {n_search} images per query; "
             "voting with all")  # fmt: skip
    model, info, out = load_eval_model(args)
    cache, crop_cache = ev.open_caches(args.cache_dir, args.no_cache)
    row_name = args.classify_name or inputs[3]
    res, facts, paths, row = ev.classify(
        model, info, inputs, out, row_name, flip="none" if args.no_flip else args.flip, top=args.top,
        k=args.k, ks=ks, index=args.classify_index, batch_size=args.batch_size, cache=cache,
        detector=args.detector, detector_model=args.detector_model, crop_cache=crop_cache,
    )  # fmt: skip
    print(format_classify(res, title=row_name))
    if facts["undecodable"]:
        bad = facts["undecodable"]
        print(f"warning: {len(bad)} undecodable image(s) left out; first: {bad[0]}", file=sys.stderr)
    if facts["query_classes_not_in_gallery"]:
        miss = facts["query_classes_not_in_gallery"]
        note(args, f"note: {len(miss)} query class(es) have no gallery image and cannot be predicted: "
             + ", ".join(miss[:5]))  # fmt: skip
    rep = write_report({row_name: row}, out, merge=not args.fresh)
    print("classify " + ev.paths_line(paths))
    print(ev.paths_line(rep))
    return 0


def run_ijb(args: argparse.Namespace) -> int:
    """IJB-B/C 1:1 (and 1:N) of a checkpoint, added to the report."""
    from faceforge.eval.ijb import read_ijb_meta
    from faceforge.eval.report import format_report, write_report
    from faceforge.eval.run import ijb_rows, open_caches, paths_line

    meta = read_ijb_meta(args.ijb_root, args.target)
    _, info, out = load_eval_model(args)
    cache, _ = open_caches(args.cache_dir, args.no_cache)
    flip = "none" if args.no_flip else args.flip
    rows = ijb_rows(meta, info, flip, args.batch_size, cache, not args.no_faceness, print)
    print(format_report(rows))
    print(paths_line(write_report(rows, out, merge=not args.fresh)))
    return 0
