"""``faceforge gallery build|add|remove|search|info``: build, edit and search a Faiss face gallery; labels
and models as in ``faceforge verify``/``embed`` (``infer_cmd``), the work in :mod:`faceforge.infer.tasks`.
Details: docs/inference.md, "Command line".
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from faceforge.cli._common import (
    add_recognizer_options,
    add_workers_option,
    is_quiet,
    load_recognizer,
    note_skipped,
    print_result,
)
from faceforge.errors import FaceforgeError

__all__ = ["register"]


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``gallery`` and its actions."""
    g = sub.add_parser("gallery", help="build, edit and search a Faiss face gallery")
    gs = g.add_subparsers(dest="gallery_command", metavar="ACTION")
    p = gs.add_parser("build", help="a gallery from DIR/<label>/*.jpg")
    p.add_argument("inputs", nargs="+", help="image files or folders")
    p.add_argument("--out", required=True, help="gallery directory to write")
    p.add_argument("--index", default="auto", help="auto (by size), flat, ivf or ivfpq")
    add_workers_option(p)
    add_recognizer_options(p, threshold=False)
    p.set_defaults(func=cmd_gallery_build)

    p = gs.add_parser("add", help="add images to a gallery")
    p.add_argument("inputs", nargs="+", help="image files or folders")
    p.add_argument("--gallery", required=True, help="gallery directory")
    p.add_argument("--label", help="label for every added image (default: from the folder layout)")
    add_workers_option(p)
    add_recognizer_options(p, required=False, threshold=False)
    p.set_defaults(func=cmd_gallery_add)

    p = gs.add_parser("remove", help="remove every entry with the given labels")
    p.add_argument("labels", nargs="+", help="labels to remove")
    p.add_argument("--gallery", required=True, help="gallery directory")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    p.set_defaults(func=cmd_gallery_remove)

    p = gs.add_parser(
        "search",
        help="the k most similar gallery entries to the face in IMG (or to each query of a folder / .npz)",
        description="One image: its top k. A folder of images (one model load, pipelined, one batched "
        "search) or an .npz from `faceforge embed`: one JSON line per query on stdout.",
    )
    p.add_argument("image", help="query image, folder of query images, or .npz of query embeddings")
    p.add_argument("--gallery", required=True, help="gallery directory")
    p.add_argument("-k", type=int, default=5, help="number of results (default 5)")
    add_recognizer_options(p, required=False)
    add_workers_option(p)
    p.set_defaults(func=cmd_gallery_search)

    p = gs.add_parser("info", help="what a gallery holds")
    p.add_argument("gallery", help="gallery directory")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    p.set_defaults(func=cmd_gallery_info)

    g.set_defaults(func=lambda args: _gallery_help(g))


def _gallery_help(parser: argparse.ArgumentParser) -> int:
    parser.print_help(sys.stderr)  # no action given: nothing was done, an error
    return 2


def _gallery_model(args: argparse.Namespace, gallery: Any) -> Any:
    from faceforge.infer.tasks import gallery_model

    return gallery_model(gallery, args.gallery, args.model, lambda spec: load_recognizer(args, spec))


def cmd_gallery_build(args: argparse.Namespace) -> int:
    """Embed a folder and save it as a gallery."""
    from faceforge.infer.tasks import build_gallery, embed_inputs, nothing_embedded

    rec = load_recognizer(args)
    emb, kept, skipped = embed_inputs(rec, args.inputs, workers=args.workers, quiet=is_quiet(args))
    if not kept:
        raise nothing_embedded(args.inputs, skipped, "nothing to build")
    g = build_gallery(rec, args.model, emb, kept, index=args.index)
    path = g.save(args.out)
    note_skipped(args, skipped)
    print_result(
        args,
        {"gallery": str(path), "count": len(g), "index": g.params, "skipped": skipped},
        f"gallery {path}: {len(g)} entries, {len(set(g.labels))} labels, index {g.kind}",
    )
    return 0


def cmd_gallery_add(args: argparse.Namespace) -> int:
    """Embed images and append them to a gallery."""
    from faceforge.infer import Gallery
    from faceforge.infer.tasks import embed_inputs, nothing_embedded

    g = Gallery.load(args.gallery)
    rec = _gallery_model(args, g)
    emb, kept, skipped = embed_inputs(rec, args.inputs, workers=args.workers, quiet=is_quiet(args))
    if not kept:
        raise nothing_embedded(args.inputs, skipped, f"gallery {args.gallery} left as it was")
    labels = [args.label or lab for _, lab in kept]
    g.add(emb, labels, [{"path": str(p)} for p, _ in kept])
    g.save(args.gallery)
    note_skipped(args, skipped)
    print_result(
        args,
        {"gallery": args.gallery, "added": len(kept), "count": len(g), "skipped": skipped},
        f"added {len(kept)} entries; gallery {args.gallery} now holds {len(g)}",
    )
    return 0


def cmd_gallery_remove(args: argparse.Namespace) -> int:
    """Remove entries by label."""
    from faceforge.infer import Gallery

    g = Gallery.load(args.gallery)
    n = g.remove(args.labels)
    if n:
        g.save(args.gallery)
    print_result(
        args,
        {"gallery": args.gallery, "removed": n, "count": len(g)},
        f"removed {n} entries; gallery {args.gallery} now holds {len(g)}",
    )
    return 0


def cmd_gallery_search(args: argparse.Namespace) -> int:
    """The k nearest gallery entries to the largest face of IMG, or to every query of a folder/.npz."""
    from faceforge.infer import Gallery
    from faceforge.infer.tasks import mark_matches, nothing_embedded, search_queries

    if args.k < 1:
        raise FaceforgeError(f"-k must be >= 1, got {args.k}")
    g = Gallery.load(args.gallery)
    query = Path(args.image)
    if query.is_dir() or query.suffix.lower() == ".npz":
        n, skipped = search_queries(
            g, query, args.k, lambda: _gallery_model(args, g), args.threshold, args.workers, is_quiet(args)
        )
        if not is_quiet(args):
            print(f"searched {n} queries ({len(skipped)} skipped) in {args.gallery}", file=sys.stderr)
        if not n:
            raise nothing_embedded([str(query)], skipped, "no search run")
        return 0
    rec = _gallery_model(args, g)
    thr = rec.threshold
    hits = mark_matches(rec.find(args.image, g, args.k), thr)
    lines = [f"{i + 1}. {h['label']}  similarity {h['similarity']:.4f}" for i, h in enumerate(hits)]
    if thr is not None:
        lines.append(f"(threshold {thr:.4f}: {sum(bool(h['match']) for h in hits)} match)")
    print_result(
        args, {"query": args.image, "threshold": thr, "results": hits}, "\n".join(lines) or "(empty gallery)"
    )
    return 0


def cmd_gallery_info(args: argparse.Namespace) -> int:
    """Print a gallery's manifest."""
    from faceforge.infer import Gallery
    from faceforge.infer.tasks import gallery_text

    print_result(args, *gallery_text(Gallery.load(args.gallery), args.gallery))
    return 0
