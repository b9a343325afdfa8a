"""``faceforge data pack|unpack|inspect|split|make-pairs|to-bin|from-bin``: data-set files (RecordIO,
insightface ``.bin``, split files, pair lists); each action calls one library function and prints
(``data synth`` is in ``data_cmd``). Details: docs/data.md, "Command line", and docs/architecture.md,
"cli/data_io_cmd.py".
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from faceforge.cli._common import action_group, add_progress_option, show_progress
from faceforge.cli._common import non_negative_count as _non_negative
from faceforge.cli._common import positive_count as _positive

__all__ = ["register"]

_LAYOUT_HELP = "auto (default): recognised; folder: ROOT/ID/*.jpg; flat: ROOT/ID_seq.jpg"
DATA_HELP = "data sets: pack, unpack, inspect, split, pairs, .bin, synth"


def cmd_pack(args: argparse.Namespace) -> int:
    """Pack an image folder (``root/ID/*.jpg`` or flat ``ID_seq.jpg``) into insightface RecordIO."""
    from faceforge.data.pack import pack_folder

    r = pack_folder(
        args.src,
        args.out,
        layout=args.layout,
        workers=args.workers,
        verify=not args.no_verify,
        resize=args.resize or 0,
        quality=args.quality,
        header=not args.no_header,
        progress=show_progress(args),
        on_skip=lambda p: print(f"warning: skipped unreadable image {p}", file=sys.stderr),
    )
    print(
        f"packed {r.num_images} images of {r.num_classes} classes ({r.layout} layout) into {r.rec}; "
        f"skipped {r.skipped} unreadable"
    )
    return 0


def cmd_unpack(args: argparse.Namespace) -> int:
    """Unpack a ``.rec`` into a folder; unreadable records are skipped and counted."""
    from faceforge.data.pack import unpack_rec

    out, written, skipped = unpack_rec(
        args.rec, args.out, allow_outside_root=args.allow_outside_root, progress=show_progress(args)
    )
    print(f"unpacked {written} images into {out}; skipped {skipped} unreadable record(s)")
    return 0


def cmd_inspect(args: argparse.Namespace) -> int:
    """Print counts, the images-per-class histogram and the image sizes of a data set."""
    from faceforge.data.inspect import format_inspect, inspect_path

    info = inspect_path(args.path, sample=args.sample)
    print(json.dumps(info, indent=1) if args.json else format_inspect(info, args.path))
    return 0


def cmd_split(args: argparse.Namespace) -> int:
    """Write (or re-use) a group-disjoint train/val/test split file and print its counts."""
    from faceforge.data.splits import format_split, make_split, parse_class_names

    reused = Path(args.out).exists() and not args.overwrite
    s = make_split(
        args.root,
        args.out,
        ratios=args.ratios,
        seed=args.seed,
        min_image_size=args.min_image_size,
        class_names=parse_class_names(args.class_names),
        layout=args.layout,
        overwrite=args.overwrite,
    )
    print(format_split(s, args.out, reused))
    return 0


def cmd_make_pairs(args: argparse.Namespace) -> int:
    """Draw balanced genuine/impostor pairs in identity-disjoint folds from a folder."""
    from faceforge.data.pairs import write_folder_pairs

    out = write_folder_pairs(args.root, args.out, args.format, args.folds, args.pairs_per_fold, args.seed)
    n = args.folds * args.pairs_per_fold
    print(f"wrote {2 * n} pairs ({n} genuine, {n} impostor) in {args.folds} folds to {out}")
    return 0


def cmd_to_bin(args: argparse.Namespace) -> int:
    """Pack a pair list into an insightface ``.bin``."""
    from faceforge.data.binset import pairs_to_bin
    from faceforge.data.pairs import read_pairs

    pairs = read_pairs(
        args.pairs, root=args.root, fmt=args.format, allow_outside_root=args.allow_outside_root
    )
    size = tuple(args.image_size) if args.image_size else None
    out = pairs_to_bin(pairs, args.out, image_size=size)  # type: ignore[arg-type]
    print(f"wrote {len(pairs)} pairs ({int(pairs.issame.sum())} genuine) to {out}")
    return 0


def cmd_from_bin(args: argparse.Namespace) -> int:
    """Unpack an insightface ``.bin`` into images and ``pairs.csv``."""
    from faceforge.data.binset import bin_to_pairs

    pairs = bin_to_pairs(args.bin, args.out, n_folds=args.folds)
    print(f"wrote {2 * len(pairs)} images and {Path(args.out) / 'pairs.csv'} ({len(pairs)} pairs)")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``data`` command (made here; ``data_cmd`` adds ``synth``) and its file actions."""
    sub = action_group(subparsers, "data", DATA_HELP, "data_action")

    p = sub.add_parser("pack", help="image folder -> insightface RecordIO (.rec/.idx/property)")
    p.add_argument("src", help="image folder: SRC/ID/*.jpg or flat SRC/ID_seq.jpg")
    p.add_argument("out", help="output .rec path, prefix, or folder (-> OUT/train.rec)")
    p.add_argument("--layout", choices=["auto", "flat", "folder"], default="auto", help=_LAYOUT_HELP)
    p.add_argument("--workers", type=_non_negative, default=0, help="processes (0 = all cores)")
    p.add_argument("--no-header", action="store_true", help="no insightface record 0 / identity records")
    p.add_argument("--no-verify", action="store_true", help="do not decode images (only drop empty files)")
    p.add_argument("--resize", type=_positive, default=None, help="resize to NxN and re-encode as JPEG")
    p.add_argument("--quality", type=_positive, default=95, help="JPEG quality with --resize (default 95)")
    add_progress_option(p)
    p.set_defaults(func=cmd_pack)

    p = sub.add_parser("unpack", help=".rec -> image folder")
    p.add_argument("rec", help=".rec path, prefix, or folder holding train.rec")
    p.add_argument("out", help="output folder")
    add_progress_option(p)
    p.add_argument(
        "--allow-outside-root", action="store_true", help="let .lst names lead outside OUT (symlinks)"
    )
    p.set_defaults(func=cmd_unpack)

    p = sub.add_parser("inspect", help="counts, images-per-class histogram, sizes")
    p.add_argument("path", help="image folder, .rec (or folder with train.rec) or .bin")
    p.add_argument("--sample", type=_non_negative, default=200, help="images decoded to measure sizes")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_inspect)

    p = sub.add_parser(
        "split",
        help="group-disjoint train/val/test split file (face IDs, or objects within classes)",
        description="Split ROOT so no group (an ID, or a (class, ID) pair) is in two splits; the class "
        "layout is split per class so every class with enough groups is in every split. Prints the "
        "layout used and the counts per split; an existing --out with the same settings is re-used.",
    )
    p.add_argument("root", help="image folder: ROOT/ID_seq.jpg, ROOT/ID/*.jpg or ROOT/<class>/<ID>_<seq>.jpg")
    p.add_argument("--out", required=True, help="split JSON file (re-used when it exists)")
    p.add_argument(
        "--ratios",
        type=float,
        nargs=3,
        default=[0.70, 0.15, 0.15],
        metavar=("TRAIN", "VAL", "TEST"),
        help="image shares of train, val, test (default 0.70 0.15 0.15)",
    )
    p.add_argument(
        "--seed", type=_non_negative, default=0, help="random seed of the group shuffle (default 0)"
    )
    p.add_argument(
        "--min-image-size",
        type=_non_negative,
        default=0,
        help="drop a group holding an image with a shorter side below N px (header only; default 0: off)",
    )
    p.add_argument(
        "--class-names",
        default=None,
        metavar="FILE_OR_LIST",
        help="classes to keep (class layout; IDs otherwise): a file, one per line, or a comma list",
    )
    p.add_argument(
        "--layout",
        choices=["auto", "flat", "folder", "class"],
        default="auto",
        help=_LAYOUT_HELP + "; class: ROOT/<class>/<ID>_<seq>.jpg",
    )
    p.add_argument("--overwrite", action="store_true", help="re-split even if --out exists")
    p.set_defaults(func=cmd_split)

    p = sub.add_parser("make-pairs", help="balanced pairs in identity-disjoint folds (LFW pairs.txt)")
    p.add_argument("root", help="ROOT/ID/ID_NNNN.jpg folder")
    p.add_argument("--out", required=True, help="pairs file to write")
    p.add_argument("--folds", type=_positive, default=10, help="identity-disjoint folds (default 10)")
    p.add_argument(
        "--pairs-per-fold", type=_positive, default=300, help="genuine (= impostor) pairs per fold"
    )
    p.add_argument("--seed", type=int, default=0, help="random seed of the pair draw (default 0)")
    p.add_argument(
        "--format",
        choices=["lfw", "csv"],
        default="lfw",
        help="lfw: LFW View-2 pairs.txt (ID/ID_NNNN.jpg names); csv: path_a,path_b,issame,fold",
    )
    p.set_defaults(func=cmd_make_pairs)

    p = sub.add_parser("to-bin", help="pair list -> insightface .bin")
    p.add_argument("pairs", help="pairs.txt / lfw_ann.txt / CSV")
    p.add_argument("out", help="output .bin")
    p.add_argument("--root", default=None, help="image root (default: the pair file's folder)")
    p.add_argument(
        "--format",
        choices=["auto", "lfw", "ann", "triplet", "csv"],
        default="auto",
        help="pair-list format (default: recognised from the file)",
    )
    p.add_argument(
        "--image-size",
        type=_positive,
        nargs=2,
        default=None,
        metavar=("H", "W"),
        help="resize every image to H W before packing (default: as they are)",
    )
    p.add_argument(
        "--allow-outside-root",
        action="store_true",
        help="let image paths of the pair list resolve outside --root (refused by default)",
    )
    p.set_defaults(func=cmd_to_bin)

    p = sub.add_parser("from-bin", help="insightface .bin -> images + pairs.csv")
    p.add_argument("bin", help=".bin file")
    p.add_argument("out", help="output folder")
    p.add_argument("--folds", type=_positive, default=10, help="folds written to pairs.csv (default 10)")
    p.set_defaults(func=cmd_from_bin)
