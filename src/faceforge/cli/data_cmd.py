"""``faceforge data ...``: pack/unpack RecordIO, inspect, split, make pairs, .bin conversion, SynthFaces.

``register(subparsers)`` adds the ``data`` command; every action parser sets ``func`` to a function
that takes the parsed ``argparse.Namespace`` and returns an exit code. Bad input raises
:class:`~faceforge.errors.FaceforgeError` (the main entry point prints it).

Actions::

    faceforge data pack SRC OUT            image folder -> OUT.rec/.idx/.lst + property (multi-process)
    faceforge data unpack REC OUT          .rec -> image folder (names from the .lst when present)
    faceforge data inspect PATH            counts, images-per-class histogram, image sizes
    faceforge data split ROOT --out F      identity-disjoint train/val/test split file (JSON)
    faceforge data make-pairs ROOT --out F balanced genuine/impostor pairs in folds (LFW pairs.txt)
    faceforge data to-bin PAIRS OUT.bin    pair list -> insightface .bin
    faceforge data from-bin BIN OUTDIR     .bin -> images + pairs.csv
    faceforge data synth --out DIR         render the SynthFaces data set
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import re
import statistics
import sys
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from faceforge.cli._common import add_progress_option, show_progress
from faceforge.errors import FaceforgeError

__all__ = [
    "cmd_from_bin",
    "cmd_inspect",
    "cmd_make_pairs",
    "cmd_pack",
    "cmd_split",
    "cmd_synth",
    "cmd_to_bin",
    "cmd_unpack",
    "register",
]

_HIST_BINS = ((1, 1), (2, 2), (3, 5), (6, 10), (11, 20), (21, 50), (51, 100), (101, 10**12))


def _workers(n: int) -> int:
    return max(1, os.cpu_count() or 1) if n <= 0 else n


def _progress(it: Any, total: int, desc: str, enabled: bool) -> Any:
    if not enabled:
        return it
    from tqdm import tqdm

    return tqdm(it, total=total, desc=desc, unit="img", file=sys.stderr, dynamic_ncols=True)


# ---------------------------------------------------------------------------------------------- pack


def _pack_load(job: tuple[int, str, bool, int, int]) -> tuple[int, bytes | None, tuple[int, int]]:
    """Worker: read (and verify / resize) one image; ``None`` bytes when unreadable."""
    import cv2

    label, path, verify, resize, quality = job
    try:
        data = Path(path).read_bytes()
    except OSError:
        return label, None, (0, 0)
    if not data:
        return label, None, (0, 0)
    if not verify and not resize:
        return label, data, (0, 0)
    im = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if im is None:
        return label, None, (0, 0)
    if resize:
        im = cv2.resize(im, (resize, resize), interpolation=cv2.INTER_AREA)
        data = cv2.imencode(".jpg", im, [cv2.IMWRITE_JPEG_QUALITY, quality])[1].tobytes()
    return label, data, (int(im.shape[0]), int(im.shape[1]))


def _pool_init() -> None:
    import cv2

    cv2.setNumThreads(1)


def cmd_pack(args: argparse.Namespace) -> int:
    """Pack an image folder (``root/ID/*.jpg`` or flat ``ID_seq.jpg``) into insightface RecordIO."""
    from faceforge.data.recordio import rec_paths, write_face_rec
    from faceforge.data.splits import scan_folder

    src = Path(args.src).expanduser()
    layout, groups = scan_folder(src, args.layout)
    classes = list(groups)
    jobs = [
        (label, str(src / rel), not args.no_verify, args.resize or 0, args.quality)
        for label, ident in enumerate(classes)
        for rel in groups[ident]
    ]
    rels = [rel for ident in classes for rel in groups[ident]]
    rec, _, _ = rec_paths(args.out)
    if (
        Path(args.out).suffix not in (".rec", ".idx")
        and not Path(args.out).is_dir()
        and Path(args.out).exists()
    ):
        raise FaceforgeError(f"pack: output {args.out} exists and is not a folder or .rec path")
    rec.parent.mkdir(parents=True, exist_ok=True)
    n_workers = _workers(args.workers)
    stats = {"skipped": 0, "sizes": Counter()}
    lst: list[tuple[int, int, str]] = []
    base = 0 if args.no_header else 1

    def items(results: Any) -> Any:
        for (label, data, size), rel in zip(results, rels):
            if data is None:
                stats["skipped"] += 1
                print(f"warning: skipped unreadable image {src / rel}", file=sys.stderr)
                continue
            stats["sizes"][size] += 1
            lst.append((base + len(lst), label, rel))
            yield label, data

    progress = show_progress(args)
    if n_workers == 1:
        _pool_init()
        results = _progress(map(_pack_load, jobs), len(jobs), "pack", progress)
        info = write_face_rec(rec, items(results), header=not args.no_header, num_classes=len(classes))
    else:
        with mp.get_context("fork" if sys.platform == "linux" else "spawn").Pool(
            n_workers, _pool_init
        ) as pool:
            results = _progress(pool.imap(_pack_load, jobs, chunksize=16), len(jobs), "pack", progress)
            info = write_face_rec(rec, items(results), header=not args.no_header, num_classes=len(classes))
    sizes = stats["sizes"]
    if sizes and (0, 0) not in sizes:
        (h, w), _ = sizes.most_common(1)[0]
        info["property"].write_text(f"{len(classes)},{h},{w}\n", encoding="utf-8")
    with open(rec.with_suffix(".lst"), "w", encoding="utf-8") as fh:
        for key, label, rel in lst:
            fh.write(f"{key}\t{label}\t{rel}\n")
    with open(rec.with_suffix(".classes"), "w", encoding="utf-8") as fh:
        fh.write("\n".join(classes) + "\n")
    print(
        f"packed {info['num_images']} images of {len(classes)} classes ({layout} layout) into {rec}; "
        f"skipped {stats['skipped']} unreadable"
    )
    return 0


# -------------------------------------------------------------------------------------------- unpack


def _read_lst(path: Path) -> dict[int, str]:
    out: dict[int, str] = {}
    if not path.is_file():
        return out
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split("\t")
        if len(parts) < 3 or not parts[0].strip().isdigit():
            raise FaceforgeError(f"{path}:{lineno}: expected 'index<TAB>label<TAB>path', got {line!r}")
        out[int(parts[0])] = parts[-1]
    return out


def _ext_for(data: bytes) -> str:
    if data[:3] == b"\xff\xd8\xff":
        return ".jpg"
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return ".png"
    return ".img"


def cmd_unpack(args: argparse.Namespace) -> int:
    """Unpack a ``.rec`` into a folder; unreadable records are skipped and counted."""
    from faceforge.data.recordio import FaceRecordDataset, rec_paths
    from faceforge.fileio import check_inside

    ds = FaceRecordDataset(args.rec)
    rec, _, _ = rec_paths(args.rec)
    names = _read_lst(rec.with_suffix(".lst"))
    classes_file = rec.with_suffix(".classes")
    classes = classes_file.read_text(encoding="utf-8").split() if classes_file.is_file() else []
    out = Path(args.out).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    written = skipped = 0
    for i in _progress(range(len(ds)), len(ds), "unpack", show_progress(args)):
        key = int(ds.keys[i])
        try:
            label, data = ds.read_raw(i)
        except (ValueError, KeyError, OSError):
            skipped += 1
            continue
        rel = names.get(key)
        if rel is None or os.path.isabs(rel) or ".." in Path(rel).parts:
            cname = classes[label] if 0 <= label < len(classes) else str(label)
            rel = f"{cname}/{key:08d}{_ext_for(data)}"
        dest = out / rel
        # symlinks already in OUT must not lead a name of the .lst outside it
        check_inside(dest, out, f"{rec.with_suffix('.lst')} (record {key})", args.allow_outside_root)
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(data)
        written += 1
    skipped += ds.num_truncated
    print(f"unpacked {written} images into {out}; skipped {skipped} unreadable record(s)")
    return 0


# ------------------------------------------------------------------------------------------- inspect


def _histogram(counts: Sequence[int]) -> list[tuple[str, int]]:
    rows = []
    for lo, hi in _HIST_BINS:
        n = sum(1 for c in counts if lo <= c <= hi)
        label = str(lo) if lo == hi else (f">{lo - 1}" if hi >= 10**12 else f"{lo}-{hi}")
        rows.append((label, n))
    return rows


def inspect_path(path: str | os.PathLike[str], sample: int = 200, seed: int = 0) -> dict[str, Any]:
    """Summary dict of an image folder, a RecordIO set or a ``.bin`` file."""
    import cv2

    from faceforge.data.recordio import FaceRecordDataset, rec_paths

    p = Path(path).expanduser()
    rng = np.random.default_rng(seed)
    sizes: Counter[tuple[int, int]] = Counter()
    corrupt = 0

    def _size(data: bytes | None) -> None:
        nonlocal corrupt
        im = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR) if data else None
        if im is None:
            corrupt += 1
        else:
            sizes[(int(im.shape[0]), int(im.shape[1]))] += 1

    if p.suffix == ".bin":
        from faceforge.data.binset import read_bin

        bs = read_bin(p)
        for i in rng.permutation(len(bs.images))[:sample]:
            _size(bs.images[int(i)])
        info: dict[str, Any] = {
            "kind": "bin",
            "pairs": len(bs),
            "genuine": int(bs.issame.sum()),
            "images": len(bs.images),
        }
        per_class: list[int] = []
    elif p.suffix in (".rec", ".idx") or rec_paths(p)[0].is_file():
        ds = FaceRecordDataset(p)
        per_class = np.bincount(ds.labels[ds.labels >= 0]).tolist() if len(ds) else []
        for i in rng.permutation(len(ds))[:sample]:
            try:
                _size(ds.read_raw(int(i))[1])
            except (ValueError, KeyError, OSError):
                corrupt += 1
        info = {
            "kind": "recordio",
            "images": len(ds),
            "classes": ds.num_classes,
            "property": list(ds.property) if ds.property else None,
            "truncated_records": ds.num_truncated,
        }
    else:
        from faceforge.data.splits import scan_folder

        layout, groups = scan_folder(p)
        per_class = [len(v) for v in groups.values()]
        files = [p / rel for v in groups.values() for rel in v]
        for i in rng.permutation(len(files))[:sample]:
            try:
                _size(files[int(i)].read_bytes())
            except OSError:
                corrupt += 1
        info = {"kind": f"folder ({layout})", "images": len(files), "classes": len(groups)}
    if per_class:
        info["images_per_class"] = {
            "min": min(per_class),
            "median": float(statistics.median(per_class)),
            "mean": round(float(np.mean(per_class)), 2),
            "max": max(per_class),
            "histogram": _histogram(per_class),
        }
    info["sampled"] = int(sum(sizes.values()) + corrupt)
    info["sizes"] = [[f"{h}x{w}", n] for (h, w), n in sizes.most_common(5)]
    info["corrupt_in_sample"] = corrupt
    return info


def cmd_inspect(args: argparse.Namespace) -> int:
    """Print counts, the images-per-class histogram and the image sizes of a data set."""
    info = inspect_path(args.path, sample=args.sample)
    if args.json:
        print(json.dumps(info, indent=1))
        return 0
    print(f"{args.path}: {info['kind']}")
    for key in ("images", "classes", "pairs", "genuine", "truncated_records"):
        if key in info:
            print(f"  {key}: {info[key]}")
    ipc = info.get("images_per_class")
    if ipc:
        print(
            f"  images per class: min {ipc['min']}, median {ipc['median']}, "
            f"mean {ipc['mean']}, max {ipc['max']}"
        )
        top = max(n for _, n in ipc["histogram"]) or 1
        for label, n in ipc["histogram"]:
            print(f"    {label:>7} {n:8d} {'#' * round(40 * n / top)}")
    sizes = ", ".join(f"{s} ({n})" for s, n in info["sizes"]) or "-"
    print(f"  sizes in a sample of {info['sampled']}: {sizes}; corrupt: {info['corrupt_in_sample']}")
    return 0


# --------------------------------------------------------------------------------------------- split


def _class_names_arg(value: str | None) -> list[str] | str | None:
    """``--class-names``: an existing file (one name per line) or a comma-separated list."""
    if value is None or os.path.isfile(value):
        return value
    names = [n.strip() for n in value.split(",") if n.strip()]
    looks_like_file = os.sep in value or Path(value).suffix.lower() in (".txt", ".lst", ".csv")
    if not names or ("," not in value and looks_like_file):
        raise FaceforgeError(
            f"--class-names {value!r}: no such file; expected a file with one name per line or a "
            "comma-separated list (e.g. monstera,ficus)"
        )
    return names


def cmd_split(args: argparse.Namespace) -> int:
    """Write (or re-use) a group-disjoint train/val/test split file and print its counts."""
    from faceforge.data.splits import make_split

    reused = Path(args.out).exists() and not args.overwrite
    s = make_split(
        args.root,
        args.out,
        ratios=args.ratios,
        seed=args.seed,
        min_image_size=args.min_image_size,
        class_names=_class_names_arg(args.class_names),
        layout=args.layout,
        overwrite=args.overwrite,
    )
    counts = s.counts()["splits"]
    what = f"{len(s.classes)} classes" if s.classes is not None else "one class per ID"
    print(f"{'re-used' if reused else 'wrote'} split {args.out}: layout {s.layout}, {what} ({s.root})")
    print(f"{'split':<6} {'images':>8} {'groups':>8} {'classes':>8}")
    for name, c in counts.items():
        print(f"{name:<6} {c['images']:>8} {c['groups']:>8} {c['classes']:>8}")
    print(
        f"dropped {len(s.dropped)} groups (--min-image-size {s.params.get('min_image_size', 0)}); "
        f"skipped {s.num_corrupt} unreadable images"
    )
    if s.small_classes:
        few = "; ".join(f"{c} -> {', '.join(v)}" for c, v in s.small_classes.items())
        print(f"classes with too few groups for every split: {few}")
    return 0


# ---------------------------------------------------------------------------------------- make-pairs

_LFW_FILE = re.compile(r"^(?P<name>.+)_(?P<num>\d+)\.jpg$")


def cmd_make_pairs(args: argparse.Namespace) -> int:
    """Draw balanced genuine/impostor pairs in identity-disjoint folds from a folder."""
    from faceforge.data.pairs import Pairs, make_pairs, write_lfw_pairs, write_pairs_csv
    from faceforge.data.splits import scan_folder

    root = Path(args.root).expanduser()
    _, groups = scan_folder(root, "folder")
    folds = make_pairs(groups, n_folds=args.folds, per_fold=args.pairs_per_fold, seed=args.seed)
    out = Path(args.out)
    if args.format == "lfw":

        def num(ident: str, rel: str) -> int:
            m = _LFW_FILE.match(Path(rel).name)
            if not m or m["name"] != ident or Path(rel).parent.name != ident:
                raise FaceforgeError(
                    f"make-pairs: {root / rel} is not named '{ident}/{ident}_NNNN.jpg' as the LFW format "
                    "needs; use --format csv"
                )
            return int(m["num"])

        lfw = [
            (
                [(i, num(i, a), num(i, b)) for i, a, b in gen],
                [(i1, num(i1, a), i2, num(i2, b)) for i1, a, i2, b in imp],
            )
            for gen, imp in folds
        ]
        write_lfw_pairs(out, lfw)
    else:
        pa, pb, same, fl = [], [], [], []
        for f, (gen, imp) in enumerate(folds):
            for _i, a, b in gen:
                pa.append(str(root / a))
                pb.append(str(root / b))
                same.append(True)
                fl.append(f)
            for _i1, a, _i2, b in imp:
                pa.append(str(root / a))
                pb.append(str(root / b))
                same.append(False)
                fl.append(f)
        write_pairs_csv(out, Pairs(pa, pb, np.array(same), np.array(fl)), relative_to=out.parent.resolve())
    n = args.folds * args.pairs_per_fold
    print(f"wrote {2 * n} pairs ({n} genuine, {n} impostor) in {args.folds} folds to {out}")
    return 0


# ------------------------------------------------------------------------------------ to-bin/from-bin


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


# --------------------------------------------------------------------------------------------- synth


_OBJECT_OPTIONS = (("classes", 8), ("ids_per_class", 24), ("views", 5), ("size", 96))


def cmd_synth(args: argparse.Namespace) -> int:
    """Render SynthFaces (``write_dataset``) or, with ``--kind objects``, SynthObjects (``write_objects``)."""
    if args.kind == "objects":
        from faceforge.data.synth import write_objects

        if getattr(args, "version", 1) != 1:
            raise FaceforgeError(
                "synth: --version chooses the SynthFaces generator; it does not apply to --kind objects"
            )
        opts = {k: d if getattr(args, k) is None else getattr(args, k) for k, d in _OBJECT_OPTIONS}
        summary = write_objects(
            out=args.out, seed=args.seed, progress=show_progress(args), overwrite=args.overwrite, **opts
        )
        print(f"SynthObjects written to {args.out} (layout <class>/<ID>_<view>.jpg)")
        print(json.dumps(summary, indent=1, default=str))
        return 0
    given = [k for k, _ in _OBJECT_OPTIONS if getattr(args, k) is not None]
    if given:
        flag = "--" + given[0].replace("_", "-")
        raise FaceforgeError(f"synth: {flag} applies to --kind objects only (this run is --kind faces)")
    from faceforge.data.synth import write_dataset

    summary = write_dataset(
        out=args.out,
        identities=args.identities,
        images_per_id=args.images_per_id,
        val_identities=args.val_identities,
        test_identities=args.test_identities,
        mode=args.mode,
        seed=args.seed,
        workers=args.workers,
        progress=show_progress(args),
        overwrite=args.overwrite,
        version=getattr(args, "version", 1),
    )
    print(f"SynthFaces written to {args.out}")
    if isinstance(summary, dict):
        print(json.dumps(summary, indent=1, default=str))
    return 0


# ------------------------------------------------------------------------------------------ register


def _positive(v: str) -> int:
    try:
        n = int(v)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{v!r} is not an integer") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"{n} must be >= 1")
    return n


def _non_negative(v: str) -> int:
    try:
        n = int(v)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{v!r} is not an integer") from None
    if n < 0:
        raise argparse.ArgumentTypeError(f"{n} must be >= 0")
    return n


_LAYOUT_HELP = "auto (default): recognised; folder: ROOT/ID/*.jpg; flat: ROOT/ID_seq.jpg"


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``data`` command and its actions to ``subparsers``; each action sets ``func``."""
    data = subparsers.add_parser("data", help="data sets: pack, unpack, inspect, split, pairs, .bin, synth")
    sub = data.add_subparsers(dest="data_action", metavar="ACTION")
    sub.required = True

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

    p = sub.add_parser(
        "synth",
        help="render the SynthFaces data set (or, --kind objects, the SynthObjects collection)",
        description="Render SynthFaces into --out: train/ val/ test/ ImageFolders, landmarks.csv, "
        "val_pairs.txt / test_pairs.txt (10 identity-disjoint folds) and synthfaces.json. A non-empty "
        "--out written with other parameters is refused (--overwrite replaces it whole). --kind objects "
        "renders SynthObjects instead: OUT/<class>/<ID>_<view>.jpg and objects.json.",
    )
    p.add_argument("--identities", type=_positive, default=300, help="training identities (default 300)")
    p.add_argument(
        "--images-per-id", type=_positive, default=40, help="images per identity, at least 2 (default 40)"
    )
    p.add_argument(
        "--val-identities",
        type=_non_negative,
        default=50,
        help="validation identities for val_pairs.txt: 0 (none) or at least 20 (default 50)",
    )
    p.add_argument(
        "--test-identities",
        type=_non_negative,
        default=100,
        help="held-out identities for test_pairs.txt: 0 (none) or at least 20 (default 100)",
    )
    p.add_argument(
        "--mode",
        choices=["aligned", "wild"],
        default="aligned",
        help="aligned: 112x112 ArcFace crops (default); wild: 250x250 scenes for detection",
    )
    p.add_argument("--seed", type=int, default=0, help="data-set seed: same seed, same images (default 0)")
    p.add_argument(
        "--version",
        type=int,
        choices=[1, 2],
        default=1,
        help="1: the original 2-D cartoon faces (default; reproduces earlier sets); 2: 3-D heads with "
        "texture, lighting and perspective (aligned mode only; see docs/synthfaces.md)",
    )
    p.add_argument("--workers", type=_non_negative, default=0, help="processes (0 = all cores)")
    p.add_argument("--out", required=True, help="output folder (new, empty, or an earlier identical run)")
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace a SynthFaces folder written with other parameters (removes what it wrote there)",
    )
    p.add_argument(
        "--kind",
        choices=["faces", "objects"],
        default="faces",
        help="faces: SynthFaces (default); objects: SynthObjects, non-face shapes in "
        "OUT/<class>/<ID>_<view>.jpg for classification by retrieval",
    )
    p.add_argument("--classes", type=_positive, default=None, help="objects: classes, at most 10 (default 8)")
    p.add_argument(
        "--ids-per-class", type=_positive, default=None, help="objects: objects per class (default 24)"
    )
    p.add_argument("--views", type=_positive, default=None, help="objects: images per object (default 5)")
    p.add_argument("--size", type=_positive, default=None, help="objects: image side in pixels (default 96)")
    add_progress_option(p)
    p.set_defaults(func=cmd_synth)
