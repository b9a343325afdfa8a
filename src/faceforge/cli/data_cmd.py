"""``faceforge data synth``: render the SynthFaces data set (or, ``--kind objects``, SynthObjects);
``register(subparsers)`` adds ``synth`` to the ``data`` command made by ``data_io_cmd``. Details:
docs/synthfaces.md, docs/data.md, "Command line", and docs/architecture.md, "CLI conventions".
"""

from __future__ import annotations

import argparse
import json

from faceforge.cli._common import action_group, add_progress_option, show_progress
from faceforge.cli._common import non_negative_count as _non_negative
from faceforge.cli._common import positive_count as _positive
from faceforge.errors import FaceforgeError

__all__ = ["cmd_synth", "register"]


# --------------------------------------------------------------------------------------------- synth


_OBJECT_OPTIONS = (("classes", 8), ("ids_per_class", 24), ("views", 5), ("size", 96))


def _faces_version(args: argparse.Namespace) -> dict[str, int]:
    """``--version`` of SynthFaces: default 2 (3-D heads; they transfer better to real faces, see
    docs/synthfaces.md) for aligned crops, 1 for ``--mode wild`` (v2 renders aligned crops only).
    Version 1 is not passed on, so ``write_dataset`` is called exactly as before v2 existed."""
    version = getattr(args, "version", None)
    if version is None:
        version = 2 if args.mode == "aligned" else 1
    share = getattr(args, "appearance_share", None)
    if share not in (None, 1) and version != 2:
        raise FaceforgeError(
            f"synth: --appearance-share applies to --version 2 only (this run is v{version})"
        )
    mix = getattr(args, "mixup_identities", None)
    if mix not in (None, 0) and version != 2:
        raise FaceforgeError(
            f"synth: --mixup-identities applies to --version 2 only (this run is v{version})"
        )
    jitter = getattr(args, "landmark_jitter", None)
    if jitter is not None and version != 2:
        raise FaceforgeError(f"synth: --landmark-jitter applies to --version 2 only (this run is v{version})")
    opts = {} if version == 1 else {"version": version}
    if jitter is not None:
        opts["landmark_jitter"] = jitter
    if share not in (None, 1):
        opts["appearance_share"] = share
    if mix not in (None, 0):
        opts["mixup_identities"] = mix
    tail = getattr(args, "tail_identities", None)
    if tail not in (None, 0):
        opts["tail_identities"] = tail
        opts["tail_images_per_id"] = getattr(args, "tail_images_per_id", None) or 5
    elif getattr(args, "tail_images_per_id", None) is not None:
        raise FaceforgeError("synth: --tail-images-per-id needs --tail-identities N (N > 0)")
    return opts


def cmd_synth(args: argparse.Namespace) -> int:
    """Render SynthFaces (``write_dataset``) or, with ``--kind objects``, SynthObjects (``write_objects``)."""
    if args.kind == "objects":
        from faceforge.data.synth import write_objects

        if (
            getattr(args, "version", None) not in (None, 1)
            or getattr(args, "appearance_share", None) is not None
            or getattr(args, "mixup_identities", None) is not None
            or getattr(args, "tail_identities", None) is not None
            or getattr(args, "tail_images_per_id", None) is not None
            or getattr(args, "landmark_jitter", None) is not None
        ):
            raise FaceforgeError(
                "synth: --version, --appearance-share, --mixup-identities, --tail-identities and "
                "--landmark-jitter choose how SynthFaces are drawn; they do not apply to --kind objects"
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
        **_faces_version(args),
    )
    print(f"SynthFaces written to {args.out}")
    if isinstance(summary, dict):
        print(json.dumps(summary, indent=1, default=str))
    return 0


# ------------------------------------------------------------------------------------------ register


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``data synth`` to ``subparsers`` (the ``data`` command is made on first use)."""
    sub = action_group(
        subparsers, "data", "data sets: pack, unpack, inspect, split, pairs, .bin, synth", "data_action"
    )

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
        default=None,
        help="2: 3-D heads with texture, lighting and perspective (default for aligned crops; they "
        "transfer better to real faces, see docs/synthfaces.md); 1: the original 2-D cartoon faces "
        "(reproduces sets written before v2; the default and only choice for --mode wild)",
    )
    p.add_argument(
        "--appearance-share",
        type=int,
        default=None,
        metavar="K",
        help="v2: groups of K consecutive identities share skin, hair, eyes, beard and accessories and "
        "differ only in head geometry (default 1: every identity its own)",
    )
    p.add_argument(
        "--mixup-identities",
        type=_non_negative,
        default=None,
        metavar="N",
        help="v2: also render N mixed identities (two training identities interpolated, SynFace's "
        "identity mixup) into train_mix/ with soft labels in train_mix.csv; train with "
        "--data.mixup train_mix.csv (default 0)",
    )
    p.add_argument(
        "--tail-identities",
        type=_non_negative,
        default=None,
        metavar="N",
        help="also render N training identities with few images each (--tail-images-per-id): "
        "DigiFace-1M's long tail beside the head of --identities x --images-per-id (default 0)",
    )
    p.add_argument(
        "--tail-images-per-id",
        type=_positive,
        default=None,
        metavar="K",
        help="images of each tail identity, at least 2 (default 5)",
    )
    p.add_argument(
        "--landmark-jitter",
        type=float,
        default=None,
        metavar="S",
        help="v2: σ of the noise on the five points each crop is aligned by, in inter-ocular distances, "
        "0 to 0.5 (default 0: exact points; 0.025 before renderer revision 7)",
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
