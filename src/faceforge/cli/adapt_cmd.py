"""``faceforge models adapt CKPT PHOTOS... --out OUT``: a copy of a checkpoint whose BatchNorm statistics
come from the user's unlabeled face photos (AdaBN); the work is in :mod:`faceforge.infer.adapt`. Details:
docs/inference.md, "Adapting a model to your photos".
"""

from __future__ import annotations

import argparse

from faceforge.cli._common import action_group, add_progress_option, positive_count, show_progress


def cmd_adapt(args: argparse.Namespace) -> int:
    """Write a copy of a checkpoint with BatchNorm statistics of the user's unlabeled photos (AdaBN)."""
    from faceforge.infer.adapt import adapt_checkpoint

    r = adapt_checkpoint(
        args.checkpoint,
        args.images,
        args.out,
        detector=args.detector,
        detector_model=args.detector_model,
        strength=args.strength,
        max_images=args.max_images,
        seed=args.seed,
        progress=show_progress(args),
    )
    left = []
    if r.no_face:
        left.append(f"{r.no_face} without a face")
    if r.unreadable:
        left.append(f"{len(r.unreadable)} unreadable (e.g. {r.unreadable[0]})")
    sampled = f" (an even sample of {r.sampled_from})" if r.sampled_from > r.images else ""
    print(
        f"wrote {r.path}: {r.layers} BatchNorm layers re-estimated on {r.faces} faces from {r.images} photos"
        f"{sampled}"
        + (f"; left out: {', '.join(left)}" if left else "")
        + f"; detector {r.detector or 'none'}"
        f"\n  weights unchanged; no verification threshold yet: `faceforge eval --model {r.path} "
        "--pairs PAIRS --root DIR --write-calibration` stores one (people of the evaluation must not be "
        "among the photos adapted to)"
    )
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``adapt`` to the ``models`` command."""
    from faceforge.infer.adapt import DEFAULT_MAX_IMAGES, MAX_IMAGES

    actions = action_group(
        sub, "models", "recognition backbones, pretrained models and detector model files", "models_command"
    )
    q = actions.add_parser(
        "adapt",
        help="a copy of a checkpoint with BatchNorm statistics from your unlabeled face photos (AdaBN)",
    )
    q.add_argument("checkpoint", help="faceforge checkpoint (trained, fused or `models import`ed)")
    q.add_argument("images", nargs="+", help="unlabeled photos of the target domain: image files or folders")
    q.add_argument("--out", required=True, help="checkpoint to write (.ckpt)")
    q.add_argument(
        "--detector",
        default="auto",
        help="how photos become crops, as in `faceforge eval`: auto, none (aligned crops), a name or a file",
    )
    q.add_argument("--detector-model", default=None, metavar="FILE", help="model file of --detector NAME")
    q.add_argument(
        "--strength",
        type=float,
        default=1.0,
        help="1 (default): the photos' statistics alone; 0..1 blends them with the trained ones",
    )
    q.add_argument(
        "--max-images",
        type=positive_count,
        default=DEFAULT_MAX_IMAGES,
        help=f"photos used at most, an even seeded sample of more (default {DEFAULT_MAX_IMAGES}; "
        f"at most {MAX_IMAGES})",
    )
    q.add_argument("--seed", type=int, default=0, help="seed of the sample and of the batch order")
    add_progress_option(q)
    q.set_defaults(func=cmd_adapt)
