"""The orchestration of ``faceforge eval``: run folders, set specs, caches, calibration and report text,
everything a verb does between parsing its arguments and printing, under public names such as
:func:`run_checkpoint`, :func:`build_set_specs`, :func:`open_caches`, :func:`verify_and_calibrate`,
:func:`store_calibration`, :func:`classify_row` and :func:`ijb_rows`. Details: docs/evaluation.md,
"Orchestration of faceforge eval".
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from faceforge.errors import FaceforgeError

__all__ = [
    "MEAN_ROW",
    "build_set_specs",
    "check_calibration_target",
    "check_classify",
    "check_retrieval",
    "classify",
    "classify_inputs",
    "classify_row",
    "default_out",
    "default_report_dir",
    "faces_lines",
    "ijb_rows",
    "mean_row",
    "open_caches",
    "parse_factors",
    "parse_int_list",
    "paths_line",
    "report_dir",
    "resolve_model_spec",
    "run_checkpoint",
    "safe_name",
    "store_calibration",
    "verification_lines",
    "verify_and_calibrate",
]

#: name of the row averaging the verification sets of one ``faceforge eval`` command
MEAN_ROW = "mean"
_MEAN_KEYS = ("accuracy", "auc", "eer")


def default_report_dir(checkpoint: Path) -> Path:
    """``runs/<name>/<ts>`` for ``runs/<name>/<ts>/checkpoints/x.ckpt``, else the checkpoint's folder."""
    parent = checkpoint.resolve().parent
    return parent.parent if parent.name == "checkpoints" else parent


def run_checkpoint(run: str | Path) -> Path:
    """The checkpoint of a training run folder: ``checkpoints/best.ckpt``, else ``last.ckpt``.

    ``run`` is one run (``runs/NAME/TIMESTAMP``) or a run name's folder (``runs/NAME``), whose newest
    timestamped run holding a checkpoint is taken (``train.run.make_run_dir`` names them
    ``YYYYmmdd-HHMMSS[-k]``, so they sort by name).
    """
    base = Path(run).expanduser()
    if not base.is_dir():
        raise FaceforgeError(f"--run {run}: not a folder (expected runs/NAME or runs/NAME/TIMESTAMP)")

    def pick(folder: Path) -> Path | None:
        for name in ("best.ckpt", "last.ckpt"):
            if (folder / "checkpoints" / name).is_file():
                return folder / "checkpoints" / name
        return None

    if (base / "checkpoints").is_dir():
        found = pick(base)
    else:

        def order(d: Path) -> tuple[str, int]:
            m = re.match(r"^(\d{8}-\d{6})(?:-(\d+))?$", d.name)
            return (m.group(1), int(m.group(2) or 0)) if m else (d.name, 0)

        runs = sorted((d for d in base.iterdir() if d.is_dir()), key=order, reverse=True)
        found = next((c for c in map(pick, runs) if c is not None), None)
    if found is None:
        raise FaceforgeError(
            f"--run {run}: no checkpoints/best.ckpt or last.ckpt in it or its run folders; "
            "pass --model FILE instead"
        )
    return found


def safe_name(name: str) -> str:
    """``name`` with every run of characters unsafe in a file name replaced by ``_``."""
    return re.sub(r"[^A-Za-z0-9_.+-]+", "_", name).strip("._") or "model"


def default_out(model: Any) -> Path:
    """The report folder of a model: a checkpoint's run directory, else ``./eval_reports/<name>``."""
    if model.kind == "checkpoint":
        return default_report_dir(Path(model.source))
    name = model.name if model.kind == "pretrained" else Path(model.source).stem
    return Path("eval_reports") / safe_name(name)


def open_caches(cache_dir: str | None, no_cache: bool) -> tuple[Any, Any]:
    """(embedding cache, crop cache or None): under ``cache_dir`` (its ``crops/``), else the defaults."""
    from faceforge.eval.cache import CropCache, EmbeddingCache, default_cache_dir, default_crop_cache_dir

    if no_cache:
        return EmbeddingCache(None), None
    emb = EmbeddingCache(Path(cache_dir) if cache_dir else default_cache_dir())
    crops = CropCache(Path(cache_dir) / "crops" if cache_dir else default_crop_cache_dir())
    return emb, crops


def build_set_specs(
    sets: Sequence[str], bins: Sequence[str], pairs: Sequence[str], root: str | None, name: str | None
) -> list[Any]:
    """The :class:`~faceforge.eval.suite.SetSpec` of every ``--sets`` spec, ``--bin`` and ``--pairs`` file."""
    from faceforge.eval.suite import SetSpec, guess_set_name, parse_set_spec

    specs = [parse_set_spec(s) for s in sets]
    for b in bins:
        p = Path(b).expanduser()
        if not p.is_file():
            raise FaceforgeError(f"--bin {b}: .bin file does not exist")
        specs.append(SetSpec(guess_set_name(p), p, "bin"))
    for q in pairs:
        p = Path(q).expanduser()
        if not p.is_file():
            raise FaceforgeError(f"pair file {p} does not exist or is not a file")
        r = Path(root).expanduser() if root else None
        if r is not None and not r.is_dir():
            raise FaceforgeError(f"--root {r}: not a folder")
        # Named like --sets names the same file (.../lfw/pairs.txt -> lfw).
        specs.append(SetSpec(guess_set_name(p), p, "bin" if p.suffix.lower() == ".bin" else "pairs", r))
    if not specs:
        raise FaceforgeError("faceforge eval: give at least one set (--sets, --bin or --pairs), or a TASK")
    if name:
        if len(specs) != 1:
            raise FaceforgeError(f"--name applies to a single set, but {len(specs)} sets were given")
        specs[0] = SetSpec(name, specs[0].path, specs[0].kind, specs[0].root)
    return specs


def parse_factors(text: str | None) -> list[float]:
    """``--lowres 2,4,8``: downscale factors, each >= 1 (``[]`` when not given)."""
    if not text:
        return []
    try:
        vals = [float(v) for v in text.replace(" ", "").split(",") if v]
    except ValueError:
        raise FaceforgeError(
            f"--lowres {text!r}: expected comma-separated factors >= 1, e.g. 2,4,8"
        ) from None
    if not vals or any(not v >= 1 for v in vals):
        raise FaceforgeError(f"--lowres {text!r}: expected comma-separated factors >= 1, e.g. 2,4,8")
    return vals


def parse_int_list(text: str, option: str) -> list[int]:
    """Comma-separated positive integers of ``option`` (e.g. ``--ks 1,5``)."""
    try:
        vals = [int(k) for k in text.split(",") if k.strip()]
    except ValueError:
        vals = []
    if not vals or min(vals) < 1:
        raise FaceforgeError(f"{option} {text!r}: expected comma-separated positive integers, e.g. 1,5")
    return vals


def faces_lines(results: dict[str, Any]) -> list[str]:
    """How each set's images became crops; no-face images with the rule that cropped them."""
    from faceforge.eval.crops import NO_FACE_RULE

    lines: list[str] = []
    rule_shown = False
    for name, row in results.items():
        method = row.get("alignment")
        if method == "detected":
            n_nf = int(row.get("no_face_images") or 0)
            line = (
                f"faces: {name}: detected with {row.get('detector')} in {row.get('n_images', '?')} images, "
                f"no face in {n_nf}"
            )
            if n_nf:
                ex = ", ".join(Path(p).name for p in (row.get("no_face_examples") or [])[:3])
                line += f" (e.g. {ex})"
                if not rule_shown:
                    line += f"; {NO_FACE_RULE}"
                    rule_shown = True
            lines.append(line)
        elif method == "resized":
            lines.append(
                f"faces: {name}: {row.get('resized_without_alignment')} image(s) resized whole, without "
                "detection or alignment (--detector none)"
            )
        elif method == "realigned":
            lines.append(
                f"faces: {name}: arcface crops re-aligned to the model's template ({row.get('set')})"
            )
    return lines


def mean_row(rows: dict[str, dict[str, Any]]) -> dict[str, Any] | None:
    """The unweighted mean of accuracy, AUC, EER and TAR@FAR over two or more verification rows.

    Each set counts once whatever its number of pairs (how multi-benchmark face results are averaged,
    e.g. the LFW/CFP-FP/AgeDB-30 mean); a key missing from any row is left out. None for fewer rows.
    """
    if len(rows) < 2:
        return None
    out: dict[str, Any] = {"kind": "verification", "sets": list(rows), "n_sets": len(rows)}
    for key in _MEAN_KEYS:
        vals = [r.get(key) for r in rows.values()]
        if all(isinstance(v, (int, float)) for v in vals):
            out[key] = float(sum(vals)) / len(vals)  # type: ignore[arg-type]
    tars = [r.get("tar_at_far") or {} for r in rows.values()]
    common = set(tars[0]).intersection(*tars[1:])
    common = {f for f in common if all(isinstance(t[f], (int, float)) for t in tars)}
    if common:
        out["tar_at_far"] = {f: sum(float(t[f]) for t in tars) / len(tars) for f in sorted(common, key=float)}
    return out


def check_calibration_target(model: Any) -> None:
    """Raise unless ``model`` has a place to store a calibration (a checkpoint or a pretrained name)."""
    if model.kind in ("checkpoint", "pretrained"):
        return
    raise FaceforgeError(
        f"--write-calibration: {model.source} is a {model.kind} file without a place for a calibration; "
        f"make a faceforge file of it first (faceforge models import {model.source} --out FILE), then "
        "evaluate that file with --write-calibration"
    )


def verify_and_calibrate(
    specs: Sequence[Any],
    model: Any,
    info: Any,
    flip: str,
    far: float,
    calibrate_on: str | None = None,
    **kw: Any,
) -> tuple[dict[str, dict[str, Any]], dict[str, Any], str]:
    """(rows, calibration, calibration set) of every set (:func:`~faceforge.eval.suite.evaluate_sets`).

    ``kw`` goes to ``evaluate_sets`` (mode, n_folds, cache, ...); the calibration comes from
    ``calibrate_on`` (default: the first set) at ``far``; two or more sets add :data:`MEAN_ROW`.
    """
    from faceforge.eval.calibration import calibration_from_result, pick_threshold
    from faceforge.eval.suite import evaluate_sets

    results = evaluate_sets(specs, info, flip, stored_threshold=pick_threshold(model.calibration), **kw)
    names = [n for n, r in results.items() if "lowres_factor" not in r and not n.endswith("(raw pixels)")]
    target = calibrate_on or names[0]
    if target not in results:
        from faceforge.errors import did_you_mean

        raise FaceforgeError(
            f"--calibrate-on {target!r} is not an evaluated set{did_you_mean(target, names)}; sets: {names}"
        )
    r = results[target]
    source = (
        f"{target} ({r['n_pairs']} pairs, flip {flip}, {kw.get('mode', 'grid')} mode, model {model.name})"
    )
    if r.get("alignment") == "detected":
        source += f", faces detected with {r.get('detector')}"
    cal = calibration_from_result(r, source, far)
    mean = mean_row({n: results[n] for n in names})
    if mean is not None:
        results[MEAN_ROW] = mean
    return results, cal, target


def verification_lines(
    results: dict[str, Any],
    cal: dict[str, Any],
    target: str,
    far: float,
    flip: str,
    cache: Any,
    crop_cache: Any,
) -> list[str]:
    """The lines printed under the verification table: caches, crops, stored threshold, calibration."""
    lines = []
    if cache.hits:
        lines.append(f"embeddings: {cache.hits} set(s) from the cache ({cache.directory})")
    if crop_cache is not None and crop_cache.hits:
        lines.append(f"crops: {crop_cache.hits} image(s) from the crop cache ({crop_cache.directory})")
    lines += faces_lines(results)
    for name, row in results.items():
        if row.get("accuracy_at_stored_threshold") is not None:
            lines.append(
                f"{name}: the model's stored threshold {row['stored_threshold']:.4f} decides "
                f"{100 * row['accuracy_at_stored_threshold']:.2f}% of the {row['n_pairs']} pairs right"
            )
        if row.get("undecodable_images"):
            lines.append(
                f"warning: {name}: {row['undecodable_images']} image(s) could not be decoded "
                "and were scored as black images"
            )
    if cal["far_target"] is None:
        lines.append(f"calibration: threshold {cal['threshold']:.4f} (cosine) on {target}: {cal['far_note']}")
    else:
        lines.append(
            f"calibration: threshold {cal['threshold']:.4f} (cosine) at FAR={far:g} on {target} "
            f"({cal['far_note']})"
        )
    if flip != "sum":
        lines.append(
            f"note: calibrated with --flip {flip}; FaceRecognizer fuses flips by sum, "
            "so use --flip sum for its threshold"
        )
    return lines


def store_calibration(model: Any, cal: dict[str, Any]) -> str:
    """Write ``cal`` into a checkpoint (atomically) or a pretrained model's calibration file; says where."""
    if model.kind == "checkpoint":
        from faceforge.eval.suite import write_checkpoint_calibration

        write_checkpoint_calibration(model.source, cal)
        return f"calibration written into {model.source}"
    from faceforge.models.pretrained import save_calibration

    p = save_calibration(model.name, cal)
    return f"calibration of pretrained model {model.name!r} written to {p}"


def classify_inputs(
    split: str | None,
    gallery_dir: str | None,
    query_dir: str | None,
    gallery_split: str = "train",
    query_split: str = "test",
) -> tuple[Any, Any, list[str], str, bool]:
    """(gallery (paths, labels), queries (paths, labels), class names, default row name, same split)."""
    from faceforge.eval.classify import folder_samples

    if split and (gallery_dir or query_dir):
        raise FaceforgeError("classify: give --split FILE, or --gallery DIR and --query DIR, not both")
    if not split:
        if not (gallery_dir and query_dir):
            raise FaceforgeError("classify: give --split FILE, or both --gallery DIR and --query DIR")
        gp, gl, names = folder_samples(gallery_dir)
        # Query folders may hold classes the gallery lacks: they are added after the gallery's.
        qroot = Path(query_dir)
        subs = [d.name for d in qroot.iterdir() if d.is_dir()] if qroot.is_dir() else []
        extra = sorted(n for n in subs if n not in names and not n.startswith("."))
        qp, ql, names = folder_samples(query_dir, names + extra)
        return (gp, gl), (qp, ql), names, f"{Path(query_dir).name} (classify)", False
    from faceforge.data.splits import Split

    sp = Split.load(split)
    if sp.classes is None:
        raise FaceforgeError(
            f"--split {split}: layout {sp.layout!r} has no classes; eval classify needs a class-layout split "
            "(root/<class>/<ID>_<seq>.jpg, faceforge data split --layout class)"
        )
    gal = sp.samples(gallery_split, label="class")
    qry = sp.samples(query_split, label="class")
    if not gal or not qry:
        empty = gallery_split if not gal else query_split
        raise FaceforgeError(f"--split {split}: part {empty!r} holds no images")
    same = gallery_split == query_split
    name = f"{Path(split).stem} {query_split} (classify)"
    return (
        ([p for p, _ in gal], [c for _, c in gal]),
        ([p for p, _ in qry], [c for _, c in qry]),
        list(sp.classes),
        name,
        same,
    )


def classify_row(res: Any, details: Path, flip: str) -> dict[str, Any]:
    """The report.json row of a classification result (its details file named, top confusions)."""
    d = res.to_dict()
    keys = ("kind", "accuracy", "accuracy_majority", "accuracy_top1", "recall_at_k", "map_at_r", "macro_f1",
            "k", "index", "n_queries", "n_gallery", "n_classes")  # fmt: skip
    row = {k: d[k] for k in keys}
    row.update(worst_confusions=d["worst_confusions"][:5], details=str(details), flip=flip)
    return row


def ijb_rows(
    meta: Any,
    info: Any,
    flip: str,
    batch_size: int,
    cache: Any,
    faceness: bool = True,
    say: Callable[[str], None] | None = None,
) -> dict[str, dict[str, Any]]:
    """IJB-B/C 1:1 (and 1:N) rows of a model on ``meta`` (:func:`~faceforge.eval.ijb.read_ijb_meta`).

    Its embeddings come from ``cache`` when they fit; ``say`` is told so.
    """
    from faceforge.eval.ijb import embed_ijb, evaluate_ijb_features

    size = info.hw
    parts = {"what": "ijb", "model": info.fingerprint, "meta": meta.fingerprint(), "flip": flip,
             "size": list(size), "color": info.color, "template": info.template}  # fmt: skip
    feats = cache.get(parts)
    if feats is None or len(feats) != len(meta.image_names):
        feats = embed_ijb(meta, info.embed, size, info.template, flip, batch_size)
        cache.put(parts, feats)
    elif say is not None:
        say(f"embeddings: {len(feats)} IJB images from the cache ({cache.directory})")
    rows = evaluate_ijb_features(meta, feats, faceness=faceness)
    for r in rows.values():
        r["flip"] = flip
    return rows


def resolve_model_spec(model: str | None, run: str | None) -> tuple[str, str | None]:
    """(``--model`` spec, a line to print or None): ``model``, or the newest checkpoint of ``run``."""
    if run and model:
        raise FaceforgeError(f"give --model {model} or --run {run}, not both")
    if run:
        spec = str(run_checkpoint(run))
        return spec, f"model: {spec} (newest checkpoint of --run {run})"
    if not model:
        raise FaceforgeError(
            "faceforge eval: --model NAME|FILE is required (or --run DIR; --checkpoint is its old name)"
        )
    return model, None


def report_dir(out: str | None, model: Any) -> tuple[Path, str | None]:
    """(report folder, a line saying where it is when it was not given): ``out``, else :func:`default_out`."""
    if out:
        return Path(out), None
    folder = default_out(model)
    where = "the checkpoint's run directory" if model.kind == "checkpoint" else "default for this model"
    return folder, f"report folder: {folder} ({where}; --out DIR to change)"


def paths_line(paths: dict[str, Path]) -> str:
    """``report: report.md  (report.json, roc.png, ...)`` of :func:`~faceforge.eval.report.write_report`."""
    extra = ", ".join(p.name for k, p in paths.items() if k != "md")
    return f"report: {paths['md']}  ({extra})"


def check_retrieval(ks: str, split: str | None, query: str | None, gallery: str | None) -> list[int]:
    """The K values of ``--ks``, once ``--split`` or ``--query`` with ``--gallery`` is given (not both)."""
    try:
        vals = [int(k) for k in ks.split(",") if k.strip()]
    except ValueError:
        raise FaceforgeError(f"--ks {ks!r}: expected comma-separated integers, e.g. 1,5,10") from None
    if split and (query or gallery):
        raise FaceforgeError("retrieval: give --split DIR, or --query DIR and --gallery DIR, not both")
    if not split and not (query and gallery):
        raise FaceforgeError("retrieval: give --split DIR, or both --query DIR and --gallery DIR")
    return vals


def check_classify(ks_text: str, k: int, top: int) -> list[int]:
    """The K values of ``--ks`` once ``--k`` (>= 1) and ``--top`` (>= 0) are checked."""
    ks = parse_int_list(ks_text, "--ks")
    if k < 1:
        raise FaceforgeError(f"--k {k}: expected a positive number of neighbours, e.g. 20")
    if top < 0:
        raise FaceforgeError(f"--top {top}: expected 0 or more neighbours to list")
    return ks


def classify(
    model: Any,
    info: Any,
    inputs: tuple[Any, Any, list[str], str, bool],
    out: Path,
    row_name: str,
    *,
    flip: str,
    top: int,
    **kw: Any,
) -> tuple[Any, dict[str, Any], dict[str, Path], dict[str, Any]]:
    """(result, facts, classify.* paths, report row) of classification by retrieval.

    ``inputs`` is :func:`classify_inputs`; ``kw`` goes to
    :func:`~faceforge.eval.classify.evaluate_classification`; the details go to
    ``out/classify-<row name>/`` (:func:`~faceforge.eval.classify.write_classify_report`).
    """
    from faceforge.eval.classify import evaluate_classification, write_classify_report

    gallery, queries, names, _, same = inputs
    res, facts = evaluate_classification(info, gallery, queries, names, exclude_self=same, flip=flip, **kw)
    folder = out / f"classify-{safe_name(row_name.replace(' (classify)', ''))}"
    extra = {"model": model.name, "source": str(model.source), "flip": flip, "leave_one_out": same}
    extra.update({k: v for k, v in facts.items() if not k.endswith("_paths")})
    paths = write_classify_report(
        res, folder, query_paths=facts["query_paths"], gallery_paths=facts["gallery_paths"], title=row_name,
        top=top, extra=extra,
    )  # fmt: skip
    return res, facts, paths, classify_row(res, paths["json"], flip)
