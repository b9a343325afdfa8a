"""The work behind ``faceforge verify`` / ``embed`` / ``gallery``: texts, files and checks, no argparse —
:func:`verify_report`, :func:`embed_inputs`, :func:`save_embeddings_npz`, :func:`build_gallery`,
:func:`gallery_model` (never follows a gallery's manifest to a model file the user did not name),
:func:`search_queries` and :func:`nothing_embedded`. Details: docs/inference.md, "Command line".
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, Any

import numpy as np

from faceforge.errors import FaceforgeError

__all__ = [
    "build_gallery",
    "embed_inputs",
    "gallery_model",
    "gallery_text",
    "mark_matches",
    "nothing_embedded",
    "save_embeddings_npz",
    "search_queries",
    "verify_report",
]

Labelled = list[tuple[Path, str]]


def embed_inputs(
    rec: Any, inputs: Sequence[str], workers: int = 2, quiet: bool = False
) -> tuple[np.ndarray, Labelled, list[dict]]:
    """Embed every image under ``inputs`` (decode/detect/align in threads, batched model).

    Returns (embeddings, kept ``(path, label)``, skipped ``{"file", "reason", "status"}``).
    """
    from faceforge.infer.pipeline import collect_images, embed_labelled

    files = collect_images(inputs)
    return embed_labelled(rec, files, workers=workers, progress=False if quiet else None)


def nothing_embedded(inputs: Sequence[str], skipped: list[dict], outcome: str) -> FaceforgeError:
    """The one-line error of a verb that found no face at all in its inputs."""
    first = f" (e.g. {skipped[0]['file']}: {skipped[0]['reason']})" if skipped else ""
    return FaceforgeError(
        f"no face could be embedded from {', '.join(inputs)}: all {len(skipped)} image(s) skipped"
        f"{first}; {outcome}"
    )


def verify_report(rec: Any, res: dict[str, Any]) -> tuple[dict[str, Any], str]:
    """The JSON payload and the text of one :meth:`FaceRecognizer.verify` result."""
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
    return payload, text


def save_embeddings_npz(out: str | os.PathLike[str], emb: np.ndarray, kept: Labelled) -> Path:
    """``embeddings``, ``paths`` and ``labels`` into ``out`` (``.npz`` appended when missing)."""
    path = Path(out)
    if path.suffix != ".npz":
        path = path.with_name(path.name + ".npz")
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(
        path,
        embeddings=emb.astype(np.float32),
        paths=np.array([str(p) for p, _ in kept], dtype=str),
        labels=np.array([lab for _, lab in kept], dtype=str),
    )
    return path


def build_gallery(rec: Any, model: str, emb: np.ndarray, kept: Labelled, index: str = "auto") -> Any:
    """A gallery of ``kept`` that records its model (a pretrained name, else the file's absolute path)."""
    from faceforge.infer.gallery import Gallery
    from faceforge.models.pretrained import list_pretrained

    spec = model if model in list_pretrained() else str(Path(model).resolve())
    info = {**rec.info(), "source": rec.source, "model": spec}
    return Gallery.build(
        emb, [lab for _, lab in kept], [{"path": str(p)} for p, _ in kept], index=index, model_info=info
    )


def gallery_model(gallery: Any, where: str, model: str | None, load: Callable[[str], Any]) -> Any:
    """The recognizer for ``gallery`` (at ``where``): ``model`` if given, else the one it was built with.

    A model file recorded in the manifest is never loaded unless the user names it; ``load`` builds
    the recognizer from the chosen spec, whose embedding size must match the gallery's.
    """
    from faceforge.models.pretrained import list_pretrained

    spec = model or gallery.model_info.get("model") or gallery.model_info.get("source")
    if not spec:
        raise FaceforgeError(f"gallery {where} does not record its model; pass --model")
    if not model and spec not in list_pretrained():
        # A gallery folder is data: the file path in its manifest is never opened without the user
        # naming it (a tampered manifest must not make this command load an arbitrary file).
        raise FaceforgeError(
            f"gallery {where} was built with the model file {spec}; pass --model {spec} to use it "
            "(a gallery's manifest is never followed to a file)"
        )
    if spec not in list_pretrained() and not Path(spec).is_file():
        raise FaceforgeError(f"the gallery's model {spec} does not exist any more; pass --model")
    rec = load(spec)
    if int(rec.face_cfg.embedding_size) != gallery.dim:
        raise FaceforgeError(
            f"model {spec} gives {rec.face_cfg.embedding_size}-d embeddings but gallery {where} "
            f"holds {gallery.dim}-d ones; use the model that built the gallery"
        )
    return rec


def mark_matches(hits: list[dict[str, Any]], threshold: float | None) -> list[dict[str, Any]]:
    """Set each hit's ``"match"``: similarity ``>= threshold``, or None without a threshold."""
    for h in hits:
        h["match"] = None if threshold is None else bool(h["similarity"] >= threshold)
    return hits


def search_queries(
    gallery: Any,
    query: Path,
    k: int,
    recognizer: Callable[[], Any],
    threshold: float | None = None,
    workers: int = 2,
    quiet: bool = False,
    out: IO[str] | None = None,
) -> tuple[int, list[dict]]:
    """Search every query of a folder of images or an ``.npz``; one JSON line each on ``out``.

    Lines come in input order (results, or why a query has none). ``recognizer()`` gives the model
    (for an ``.npz`` only its calibrated threshold is used, when ``threshold`` is None, and a failure
    to get it leaves similarities only). Returns (queries searched, skipped queries); none searched
    means not one query could be embedded.
    """
    import sys

    from faceforge.infer.pipeline import load_embeddings_npz

    if query.suffix.lower() == ".npz":
        emb, names = load_embeddings_npz(query, gallery.dim)
        skipped: list[dict] = []
        thr = threshold
        if thr is None:
            try:  # the model only gives the calibrated threshold here; its file is opened when named
                thr = recognizer().threshold
            except FaceforgeError:
                thr = None  # similarities only ("match": null)
    else:
        rec = recognizer()
        thr = rec.threshold
        emb, kept, skipped = embed_inputs(rec, [str(query)], workers, quiet)
        names = [str(p) for p, _ in kept]
    results = gallery.search(emb, k) if len(emb) else []
    out = out or sys.stdout
    for name, hits in zip(names, results):
        out.write(json.dumps({"query": name, "threshold": thr, "results": mark_matches(hits, thr)}) + "\n")
    for s in skipped:
        out.write(json.dumps({"query": s["file"], "error": s["reason"], "status": s["status"]}) + "\n")
    out.flush()
    return len(names), skipped


def gallery_text(gallery: Any, where: str) -> tuple[dict[str, Any], str]:
    """A gallery's manifest (plus its label count) and its one-line description."""
    man = gallery.manifest()
    man["labels"] = len(set(gallery.labels))
    params = ", ".join(f"{k} {v}" for k, v in gallery.params.items() if k != "kind")
    text = (
        f"{where}: {len(gallery)} entries, {man['labels']} labels, dim {gallery.dim}, index {gallery.kind}"
        f"{f' ({params})' if params else ''}, model {gallery.model_info.get('name', '?')} "
        f"({gallery.model_info.get('source', '?')})"
    )
    return man, text
