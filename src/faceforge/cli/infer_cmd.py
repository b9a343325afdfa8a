"""``faceforge verify`` / ``embed`` (and, in ``gallery_cmd``, ``gallery ...``): use a trained model to
tell whether two photos show the same person or to write embeddings to an ``.npz``; the work is in
:mod:`faceforge.infer.tasks`. Details: docs/inference.md, "Command line".
"""

from __future__ import annotations

import argparse
from typing import Any

from faceforge.cli._common import (
    add_recognizer_options,
    add_workers_option,
    is_quiet,
    load_recognizer,
    note_skipped,
    print_result,
)

__all__ = ["register"]


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``verify`` and ``embed``."""
    p = sub.add_parser(
        "verify",
        help="are two photos the same person? (similarity vs calibrated threshold)",
        description="Are two photos the same person? Exit code 0: same person; 1: different people; "
        "2: an error (a file that is not an image, no face, a bad model).",
    )
    p.add_argument("a", help="first image")
    p.add_argument("b", help="second image")
    add_recognizer_options(p)
    p.set_defaults(func=cmd_verify)

    p = sub.add_parser("embed", help="embeddings of a folder of images into an .npz")
    p.add_argument("inputs", nargs="+", help="image files or folders (searched recursively)")
    p.add_argument("--out", required=True, help="output .npz (embeddings, paths, labels)")
    add_recognizer_options(p, threshold=False)
    add_workers_option(p)
    p.set_defaults(func=cmd_embed)


def cmd_verify(args: argparse.Namespace) -> int:
    """Print whether A and B show the same person."""
    from faceforge.infer.tasks import verify_report

    rec = load_recognizer(args)
    res = rec.verify(args.a, args.b)
    print_result(args, *verify_report(rec, res))
    return 0 if res["verified"] else 1


def cmd_embed(args: argparse.Namespace) -> int:
    """Write ``embeddings``, ``paths`` and ``labels`` of the images into an .npz."""
    from faceforge.infer.tasks import embed_inputs, nothing_embedded, save_embeddings_npz

    rec: Any = load_recognizer(args)
    emb, kept, skipped = embed_inputs(rec, args.inputs, workers=args.workers, quiet=is_quiet(args))
    if not kept:
        raise nothing_embedded(args.inputs, skipped, "nothing written")
    out = save_embeddings_npz(args.out, emb, kept)
    note_skipped(args, skipped)
    print_result(
        args,
        {"out": str(out), "count": len(kept), "dim": int(emb.shape[1]), "skipped": skipped},
        f"wrote {len(kept)} embeddings ({emb.shape[1]}-d) to {out}",
    )
    return 0
