"""Classification by retrieval: label a query image with the classes of its nearest training images
(cosine kNN over L2-normalised embeddings, searched with :mod:`faceforge.eval.retrieval`), by majority
vote, similarity-weighted vote (the "weighted kNN" of Wu et al., "Unsupervised Feature Learning via
Non-Parametric Instance Discrimination", CVPR 2018, without their temperature) and nearest neighbour,
with Recall@K and mAP@R (Musgrave et al., "A Metric Learning Reality Check", ECCV 2020), per-class
scores and a confusion matrix. Entry points: :func:`classify_by_retrieval`,
:func:`evaluate_classification`, :func:`write_classify_report`. Details: docs/evaluation.md,
"faceforge eval classify".
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from faceforge.errors import FaceforgeError, did_you_mean
from faceforge.eval.report import plots_unavailable
from faceforge.eval.retrieval import _to_numpy, knn_search, resolve_index, retrieval_with_neighbours
from faceforge.fileio import atomic_write_bytes

__all__ = [
    "ClassifyResult",
    "classify_by_retrieval",
    "embed_files",
    "evaluate_classification",
    "folder_samples",
    "format_classify",
    "plot_confusion",
    "vote",
    "worst_confusions",
    "write_classify_report",
]

# Confusion-matrix plots label each class only up to this many classes (beyond, labels overlap).
_PLOT_LABELS_MAX = 40
# Counts are written into the cells up to this many classes.
_PLOT_COUNTS_MAX = 20
# Queries voted at once (the vote holds [rows, k, k] temporaries).
_VOTE_ROWS = 8192
# Files decoded and embedded at once: bounds the crop memory of a large gallery (4096 × 224² × 3 = 600 MB).
_EMBED_CHUNK = 4096


@dataclass
class ClassifyResult:
    """Outcome of :func:`classify_by_retrieval`; metric fields are NaN / empty without query labels.

    ``accuracy`` is the similarity-weighted vote at ``k``; ``recall_at`` maps K to Recall@K; ``confusion``
    is ``[C, C]`` counts with rows = true class, columns = weighted prediction, in ``class_names`` order;
    ``per_class[name]`` holds ``precision``, ``recall``, ``f1``, ``support``. ``predictions*`` are in the
    label space of the inputs (``prediction_codes``: indices into ``class_names``, -1 without any
    neighbour); ``neighbour_indices`` / ``neighbour_scores`` are the ``[Q, k]`` gallery rows and cosines.
    """

    accuracy: float
    accuracy_majority: float
    accuracy_top1: float
    recall_at: dict[int, float]
    map_at_r: float
    per_class: dict[str, dict[str, float]]
    confusion: np.ndarray
    predictions: np.ndarray
    neighbour_indices: np.ndarray
    neighbour_scores: np.ndarray
    predictions_majority: np.ndarray
    predictions_top1: np.ndarray
    class_names: list[str]
    classes: np.ndarray
    prediction_codes: np.ndarray
    query_labels: np.ndarray | None
    gallery_labels: np.ndarray
    k: int
    index: str
    macro_f1: float = float("nan")
    n_skipped_queries: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def n_queries(self) -> int:
        """Number of queries classified."""
        return len(self.predictions)

    @property
    def n_gallery(self) -> int:
        """Number of labelled gallery items searched."""
        return len(self.gallery_labels)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary (NaN → ``None``; per-query arrays are left out, see the report writer)."""
        return _finite(
            {
                "kind": "classify",
                "accuracy": self.accuracy,
                "accuracy_majority": self.accuracy_majority,
                "accuracy_top1": self.accuracy_top1,
                "recall_at_k": {str(k): v for k, v in self.recall_at.items()},
                "map_at_r": self.map_at_r,
                "macro_f1": self.macro_f1,
                "k": self.k,
                "index": self.index,
                "n_queries": self.n_queries,
                "n_gallery": self.n_gallery,
                "n_classes": len(self.class_names),
                "n_skipped_queries": self.n_skipped_queries,
                "class_names": list(self.class_names),
                "per_class": self.per_class,
                "confusion": self.confusion.tolist(),
                "worst_confusions": [
                    {"true": t, "predicted": p, "count": c} for t, p, c in worst_confusions(self, n=10)
                ],
                **self.extra,
            }
        )


def _finite(obj: Any) -> Any:
    """Recursively replace NaN/inf floats by None and numpy scalars by Python ones (strict JSON)."""
    if isinstance(obj, dict):
        return {str(k): _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


# --------------------------------------------------------------------------------------------------
# voting


def vote(neighbour_codes: np.ndarray, neighbour_scores: np.ndarray, weighted: bool) -> np.ndarray:
    """Class code per row from its neighbours' class codes ``[Q, k]`` (``-1`` = no neighbour), best first.

    Majority (``weighted=False``): most neighbours, ties broken by the summed similarity, then by the
    class holding the nearest neighbour. Weighted: largest summed similarity, ties broken by the nearest
    neighbour. Rows without any neighbour get ``-1``.
    """
    codes = np.asarray(neighbour_codes)
    scores = np.asarray(neighbour_scores, dtype=np.float64)
    if codes.ndim != 2 or codes.shape != scores.shape:
        raise FaceforgeError(f"vote: codes {codes.shape} and scores {scores.shape} must both be [Q, k]")
    if len(codes) > _VOTE_ROWS:  # bounded Q·k² temporaries
        return np.concatenate(
            [
                vote(codes[s : s + _VOTE_ROWS], scores[s : s + _VOTE_ROWS], weighted)
                for s in range(0, len(codes), _VOTE_ROWS)
            ]
        )
    valid = codes >= 0
    # same[q, i, j]: neighbours i and j of query q are of one class. k is small (tens), so Q·k² is cheap and
    # keeps the vote independent of the number of classes.
    same = (codes[:, :, None] == codes[:, None, :]) & valid[:, None, :]
    sums = (same * np.where(valid, scores, 0.0)[:, None, :]).sum(-1)
    keys = [sums] if weighted else [same.sum(-1).astype(np.float64), sums]
    cand = valid.copy()
    for key in keys:
        masked = np.where(cand, key, -np.inf)
        cand &= masked == masked.max(1, keepdims=True)
    # Candidates are ranked best first, so the first remaining one belongs to the class of the nearest
    # neighbour among the tied classes.
    first = cand.argmax(1)
    out = codes[np.arange(len(codes)), first]
    return np.where(valid.any(1), out, -1)


# --------------------------------------------------------------------------------------------------
# the runner


def _class_space(
    gallery_labels: np.ndarray, query_labels: np.ndarray | None, class_names: Sequence[str] | None
) -> tuple[np.ndarray, list[str]]:
    """Sorted label values and their display names."""
    if class_names is not None:
        names = [str(c) for c in class_names]
        if not names:
            raise FaceforgeError("class_names is empty; expected one name per class index")
        if len(set(names)) != len(names):
            dup = next(n for n in names if names.count(n) > 1)
            raise FaceforgeError(f"class_names has {dup!r} twice; expected unique names")
        for what, lab in (("gallery_labels", gallery_labels), ("query_labels", query_labels)):
            if lab is None or lab.size == 0:
                continue
            if not np.issubdtype(lab.dtype, np.integer):
                raise FaceforgeError(
                    f"{what} are {lab.dtype} but class_names is given; "
                    f"expected class indices 0..{len(names) - 1}"
                )
            lo, hi = int(lab.min()), int(lab.max())
            if lo < 0 or hi >= len(names):
                bad = lo if lo < 0 else hi
                raise FaceforgeError(
                    f"{what} has class index {bad}; expected 0..{len(names) - 1} ({len(names)} class_names)"
                )
        return np.arange(len(names)), names
    both = gallery_labels if query_labels is None else np.concatenate([gallery_labels, query_labels])
    try:
        classes = np.unique(both)
    except TypeError as e:
        raise FaceforgeError(f"gallery_labels and query_labels must be comparable: {e}") from None
    return classes, [str(c) for c in classes.tolist()]


def _decode(classes: np.ndarray, codes: np.ndarray) -> np.ndarray:
    """Label values for class codes; a row without neighbours (code -1) becomes -1 / None."""
    if (codes >= 0).all():
        return classes[codes]
    if np.issubdtype(classes.dtype, np.integer):
        return np.where(codes >= 0, classes[np.maximum(codes, 0)], -1)
    out = np.empty(len(codes), dtype=object)
    out[:] = [classes[c] if c >= 0 else None for c in codes.tolist()]
    return out


def _per_class(confusion: np.ndarray, names: Sequence[str]) -> tuple[dict[str, dict[str, float]], float]:
    """Precision, recall, F1 and support per class (0 where undefined, as sklearn's ``zero_division=0``)."""
    tp = np.diag(confusion).astype(np.float64)
    support = confusion.sum(1)
    predicted = confusion.sum(0)
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(predicted > 0, tp / predicted, 0.0)
        recall = np.where(support > 0, tp / support, 0.0)
        f1 = np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0.0)
    per = {
        n: {"precision": float(p), "recall": float(r), "f1": float(f), "support": int(s)}
        for n, p, r, f, s in zip(names, precision, recall, f1, support)
    }
    # Macro F1 over the classes that have queries (classes only in the gallery would add zeros).
    present = support > 0
    macro = float(f1[present].mean()) if present.any() else float("nan")
    return per, macro


def classify_by_retrieval(
    gallery: np.ndarray,
    gallery_labels: np.ndarray,
    queries: np.ndarray,
    query_labels: np.ndarray | None = None,
    *,
    k: int = 20,
    ks: Sequence[int] = (1, 5),
    class_names: Sequence[str] | None = None,
    index: str = "auto",
    exclude_self: bool = False,
) -> ClassifyResult:
    """kNN classification of ``queries`` by the labelled ``gallery`` (cosine similarity, top ``k``).

    ``k`` is clamped to the gallery size (``result.k`` is the one used); each K of ``ks`` must fit.

    ``accuracy`` is the similarity-weighted vote at ``k``; ``accuracy_majority`` the majority vote and
    ``accuracy_top1`` the nearest neighbour. ``recall_at[K]`` is Recall@K (a neighbour of the query's
    class among the top K) and ``map_at_r`` mAP@R (Musgrave et al., ECCV 2020), both over all ``ks``.
    Labels are any comparable values, or class indices into ``class_names``. ``exclude_self=True``: the
    queries are the gallery (row ``i`` is gallery row ``i``), each query's own row is left out, and
    ``query_labels`` defaults to ``gallery_labels``. Without query labels only predictions and neighbours
    are filled in. ``index``: ``"auto"`` (exact below 50k gallery items, IVF above), ``"flat"``, ``"ivf"``.
    """
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise FaceforgeError(f"k must be a positive integer, got {k!r}")
    k = int(k)
    asked = (int(ks),) if isinstance(ks, (int, np.integer)) else tuple(int(x) for x in ks)
    if not asked or min(asked) < 1:
        raise FaceforgeError(f"ks must be positive integers, got {ks!r}")
    gl = _to_numpy(gallery_labels)
    if gl.ndim != 1:
        raise FaceforgeError(f"gallery_labels must be 1-D, got shape {gl.shape}")
    # A gallery smaller than k votes with all it has (a tiny validation run must not stop training).
    k = max(1, min(k, len(gl) - bool(exclude_self)))
    if exclude_self and query_labels is None:
        query_labels = gl
    ql = None if query_labels is None else _to_numpy(query_labels)
    if ql is not None and ql.ndim != 1:
        raise FaceforgeError(f"query_labels must be 1-D, got shape {ql.shape}")
    classes, names = _class_space(gl, ql, class_names)
    gcode = np.searchsorted(classes, gl)

    if ql is None:  # (exclude_self always has labels: they default to the gallery's)
        n_gal = np.shape(gallery)[0] if np.ndim(gallery) else 0
        if len(gl) != n_gal:
            raise FaceforgeError(f"gallery_labels has {len(gl)} labels but the gallery has {n_gal} rows")
        scores, ids = knn_search(queries, gallery, k=k, index=index)
        metrics: dict[str, Any] = {"recall_at_k": {}, "map_at_r": float("nan"), "n_skipped_queries": 0}
        metrics["index"] = resolve_index(index, n_gal)
    else:
        metrics, scores, ids = retrieval_with_neighbours(
            queries, ql, gallery, gl, ks=(1, *asked), keep=k, index=index, exclude_self=exclude_self
        )
    # IVF marks missing neighbours with id -1; they take no part in any vote.
    ncode = np.where(ids >= 0, gcode[np.maximum(ids, 0)], -1)
    weighted = vote(ncode, scores, weighted=True)
    majority = vote(ncode, scores, weighted=False)
    top1 = ncode[:, 0]

    n_cls = len(classes)
    if ql is None:
        acc = acc_maj = acc_top1 = macro = float("nan")
        confusion = np.zeros((n_cls, n_cls), np.int64)
        per: dict[str, dict[str, float]] = {}
        recall_at: dict[int, float] = {}
    else:
        qcode = np.searchsorted(classes, ql)
        acc = float((weighted == qcode).mean())
        acc_maj = float((majority == qcode).mean())
        acc_top1 = float((top1 == qcode).mean())
        # A query without any neighbour (possible only with IVF) is a miss but has no column to sit in.
        ok = weighted >= 0
        confusion = np.zeros((n_cls, n_cls), np.int64)
        np.add.at(confusion, (qcode[ok], weighted[ok]), 1)
        per, macro = _per_class(confusion, names)
        # Recall@K from the same search; the caller asked for ``ks`` (K=1 is computed either way).
        recall_at = {int(kk): float(v) for kk, v in metrics["recall_at_k"].items() if kk in asked}
    return ClassifyResult(
        accuracy=acc,
        accuracy_majority=acc_maj,
        accuracy_top1=acc_top1,
        recall_at=recall_at,
        map_at_r=float(metrics["map_at_r"]),
        per_class=per,
        confusion=confusion,
        predictions=_decode(classes, weighted),
        neighbour_indices=ids,
        neighbour_scores=scores,
        predictions_majority=_decode(classes, majority),
        predictions_top1=_decode(classes, top1),
        class_names=names,
        classes=classes,
        prediction_codes=weighted,
        query_labels=ql,
        gallery_labels=gl,
        k=k,
        index=str(metrics["index"]),
        macro_f1=macro,
        n_skipped_queries=int(metrics["n_skipped_queries"]),
    )


def worst_confusions(result: ClassifyResult, n: int = 10) -> list[tuple[str, str, int]]:
    """The ``n`` (true class, predicted class, count) pairs with the most mistakes, most first."""
    c = np.asarray(result.confusion).copy()
    if c.size == 0:
        return []
    np.fill_diagonal(c, 0)
    flat = np.flatnonzero(c)
    # Most mistakes first, then by (true, predicted) index so the order is reproducible.
    order = flat[np.lexsort((flat, -c.flat[flat]))][: max(0, int(n))]
    names = result.class_names
    return [(names[i // c.shape[1]], names[i % c.shape[1]], int(c.flat[i])) for i in order]


# --------------------------------------------------------------------------------------------------
# reports


def _pct(v: float | None) -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{100 * v:.2f}"


def format_classify(result: ClassifyResult, title: str = "", markdown: bool = False) -> str:
    """Short summary table: accuracy (weighted / majority / top-1), Recall@K, mAP@R, worst confusions."""
    head = ["Queries", "Gallery", "Classes", f"Acc@{result.k} weighted (%)", f"Acc@{result.k} majority (%)"]
    head += ["Acc top-1 (%)"] + [f"R@{k} (%)" for k in sorted(result.recall_at)] + ["mAP@R (%)"]
    row = [str(result.n_queries), str(result.n_gallery), str(len(result.class_names))]
    row += [_pct(result.accuracy), _pct(result.accuracy_majority), _pct(result.accuracy_top1)]
    row += [_pct(result.recall_at[k]) for k in sorted(result.recall_at)] + [_pct(result.map_at_r)]
    if markdown:
        lines = ["| " + " | ".join(head) + " |", "|" + "---:|" * len(head), "| " + " | ".join(row) + " |"]
    else:
        widths = [max(len(h), len(r)) for h, r in zip(head, row)]
        lines = [
            "  ".join(h.rjust(w) for h, w in zip(head, widths)),
            "  ".join("-" * w for w in widths),
            "  ".join(r.rjust(w) for r, w in zip(row, widths)),
        ]
    out = ([f"### {title}", ""] if markdown and title else [title] if title else []) + lines
    worst = worst_confusions(result, n=5)
    if worst:
        out.append("")
        out.append("Most confused (true → predicted: queries):" if not markdown else "Most confused pairs:")
        prefix = "- " if markdown else "  "
        out += [f"{prefix}{t} → {p}: {c}" for t, p, c in worst]
    return "\n".join(out) + "\n"


def _misclassified(
    result: ClassifyResult,
    query_paths: Sequence[str | os.PathLike[str]] | None,
    gallery_paths: Sequence[str | os.PathLike[str]] | None,
    top: int,
    limit: int,
) -> tuple[list[dict[str, Any]], int]:
    """The most confident mistakes (by first neighbour's similarity) and the number of mistakes."""
    if result.query_labels is None:
        return [], 0
    qcode = np.searchsorted(result.classes, result.query_labels)
    wrong = np.flatnonzero(result.prediction_codes != qcode)
    # Most confident mistakes first: they are the likeliest label errors or look-alike classes.
    order = wrong[np.argsort(-result.neighbour_scores[wrong, 0], kind="stable")][:limit]
    gcode = np.searchsorted(result.classes, result.gallery_labels)
    names = result.class_names
    rows = []
    for i in order.tolist():
        nb = []
        for j, s in zip(
            result.neighbour_indices[i, :top].tolist(), result.neighbour_scores[i, :top].tolist()
        ):
            if j < 0:
                continue
            e: dict[str, Any] = {"index": j, "class": names[gcode[j]], "score": round(float(s), 6)}
            if gallery_paths is not None:
                e["file"] = os.fspath(gallery_paths[j])
            nb.append(e)
        pc = int(result.prediction_codes[i])
        row: dict[str, Any] = {
            "index": i,
            "true": names[qcode[i]],
            "predicted": names[pc] if pc >= 0 else None,
        }
        if query_paths is not None:
            row["file"] = os.fspath(query_paths[i])
        row["neighbours"] = nb
        rows.append(row)
    return rows, len(wrong)


def plot_confusion(result: ClassifyResult, path: str | os.PathLike[str]) -> Path:
    """Row-normalised confusion matrix (rows = true class) as a PNG; counts drawn in when few classes."""
    import io

    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    c = np.asarray(result.confusion, dtype=np.float64)
    n = len(c)
    with np.errstate(divide="ignore", invalid="ignore"):
        norm = np.where(c.sum(1, keepdims=True) > 0, c / c.sum(1, keepdims=True), 0.0)
    side = min(4.0 + 0.3 * min(n, _PLOT_LABELS_MAX), 16.0)
    fig = Figure(figsize=(side + 1.5, side), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    im = ax.imshow(norm, cmap="Blues", vmin=0.0, vmax=1.0, interpolation="nearest")
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="fraction of the true class")
    if n <= _PLOT_LABELS_MAX:
        ax.set_xticks(range(n), [s[:20] for s in result.class_names], rotation=90, fontsize="small")
        ax.set_yticks(range(n), [s[:20] for s in result.class_names], fontsize="small")
    if n <= _PLOT_COUNTS_MAX:
        for i in range(n):
            for j in range(n):
                if c[i, j]:
                    ax.text(j, i, str(int(c[i, j])), ha="center", va="center", fontsize="x-small",
                            color="white" if norm[i, j] > 0.5 else "black")  # fmt: skip
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title(f"Confusion (weighted {result.k}-NN vote, accuracy {_pct(result.accuracy)} %)")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return atomic_write_bytes(path, buf.getvalue())


def write_classify_report(
    result: ClassifyResult,
    out_dir: str | os.PathLike[str],
    *,
    query_paths: Sequence[str | os.PathLike[str]] | None = None,
    gallery_paths: Sequence[str | os.PathLike[str]] | None = None,
    title: str = "Classification by retrieval",
    top: int = 5,
    max_misclassified: int = 500,
    extra: dict[str, Any] | None = None,
) -> dict[str, Path]:
    """Write ``classify.json``, ``classify.md`` and ``confusion.png`` into ``out_dir``; returns their paths.

    With ``query_paths`` / ``gallery_paths`` (one per query / gallery row) the misclassified queries are
    listed with their ``top`` nearest gallery files and similarities (most confident mistakes first, at
    most ``max_misclassified`` in the JSON and 50 in the Markdown). ``extra`` is merged into the JSON.
    """
    if result.query_labels is None:
        raise FaceforgeError("write_classify_report needs a result computed with query_labels")
    for what, paths, n in (
        ("query_paths", query_paths, result.n_queries),
        ("gallery_paths", gallery_paths, result.n_gallery),
    ):
        if paths is not None and len(paths) != n:
            raise FaceforgeError(f"{what} has {len(paths)} entries; expected {n} (one per row)")
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise FaceforgeError(f"report folder {out} is a file; expected a folder")
    out.mkdir(parents=True, exist_ok=True)
    mis, n_wrong = _misclassified(result, query_paths, gallery_paths, top, max_misclassified)
    data = result.to_dict()
    data["title"] = title
    data["n_misclassified"] = n_wrong
    data["misclassified"] = _finite(mis)
    if extra:
        data.update(_finite(extra))
    paths = {
        "json": out / "classify.json",
        "md": out / "classify.md",
        "confusion": out / "confusion.png",
    }
    atomic_write_bytes(paths["json"], (json.dumps(data, indent=2, allow_nan=False) + "\n").encode())

    md = [f"# {title}", "", format_classify(result, markdown=True)]
    md += [
        "## Per class",
        "",
        "| Class | Precision (%) | Recall (%) | F1 (%) | Queries |",
        "| :--- |---:|---:|---:|---:|",
    ]
    for name, m in sorted(result.per_class.items(), key=lambda kv: (kv[1]["f1"], kv[0])):
        if m["support"] or m["precision"]:
            cells = [name.replace("|", "\\|"), _pct(m["precision"]), _pct(m["recall"]), _pct(m["f1"])]
            md.append("| " + " | ".join(cells) + f" | {m['support']} |")
    no_plots = plots_unavailable()
    if no_plots:
        del paths["confusion"]
        md += ["", f"Confusion-matrix plot omitted: {no_plots}", ""]
    else:
        md += ["", "![confusion matrix](confusion.png)", ""]
    if mis:
        md += [f"## Misclassified queries ({min(len(mis), 50)} most confident of {n_wrong})", ""]
        md += [
            "| Query | True | Predicted | Nearest neighbours (class, cosine) |",
            "| :--- | :--- | :--- | :--- |",
        ]
        for r in mis[:50]:
            nb = "; ".join(f"{Path(e['file']).name if 'file' in e else '#' + str(e['index'])} "
                           f"({e['class']}, {e['score']:.3f})" for e in r["neighbours"])  # fmt: skip
            q = r.get("file", f"#{r['index']}")
            md.append(f"| {q} | {r['true']} | {r['predicted']} | {nb} |".replace("\n", " "))
        md.append("")
    atomic_write_bytes(paths["md"], "\n".join(md).encode())
    if "confusion" in paths:
        plot_confusion(result, paths["confusion"])
    return paths


# --------------------------------------------------------------------------------------------------
# image files → embeddings → result (the runner behind ``faceforge eval classify``)


def folder_samples(
    root: str | os.PathLike[str], class_names: Sequence[str] | None = None
) -> tuple[list[str], list[int], list[str]]:
    """``(paths, class indices, class names)`` of an ImageFolder tree: ``root/<class>/**/<image>``.

    Images are found recursively below each class folder, sorted. ``class_names`` fixes the class list
    (a query folder labelled like its gallery); a class folder not in it is an error.
    """
    from faceforge.imageio import IMAGE_EXTENSIONS, list_images

    base = Path(root)
    if not base.is_dir():
        raise FaceforgeError(f"image folder {base} does not exist (expected ROOT/<class>/<image>)")
    found = sorted(d.name for d in os.scandir(base) if d.is_dir() and not d.name.startswith("."))
    if not found:
        raise FaceforgeError(f"image folder {base} has no class sub-folders (expected ROOT/<class>/<image>)")
    names = list(found) if class_names is None else [str(c) for c in class_names]
    index = {c: i for i, c in enumerate(names)}
    paths: list[str] = []
    labels: list[int] = []
    for c in found:
        if c not in index:
            raise FaceforgeError(
                f"class folder {base / c} is not a class of the gallery{did_you_mean(c, names)}"
            )
        files = [str(p) for p in list_images(base / c)]
        paths += files
        labels += [index[c]] * len(files)
    if not paths:
        raise FaceforgeError(
            f"image folder {base} has class folders but no images ({', '.join(IMAGE_EXTENSIONS)})"
        )
    return paths, labels, names


def _listing(paths: Sequence[str]) -> str:
    """Hash of the file list with sizes and modification times (the embedding cache's key)."""
    import hashlib

    h = hashlib.sha256()
    for p in paths:
        try:
            st = os.stat(p)
            h.update(f"{os.path.abspath(p)}|{st.st_size}|{st.st_mtime_ns}\n".encode())
        except OSError:
            h.update(f"{os.path.abspath(p)}|missing\n".encode())
    return h.hexdigest()


def embed_files(
    model: Any,
    paths: Sequence[str],
    *,
    flip: bool | str = "sum",
    batch_size: int = 256,
    cache: Any = None,
    detector: Any = "auto",
    detector_model: str | os.PathLike[str] | None = None,
    crop_cache: Any = None,
    warn: Any = None,
    name: str = "images",
) -> tuple[np.ndarray, list[str], dict[str, Any]]:
    """Embeddings ``[N, E]`` of image files, the undecodable ones, and how the crops were made.

    ``model`` is a :class:`faceforge.eval.suite.ModelInfo`. Crops come from
    :class:`faceforge.eval.crops.FaceCropper`: a whole-image model (``template="none"``) has every image
    resized and centre-cropped, never a face detector; a face model gets the eval suite's detection
    rules (``detector``). Undecodable files get a zero row (drop them by the returned list). Cached in
    ``cache`` (:class:`~faceforge.eval.cache.EmbeddingCache`) by model, file listing, flip and crop plan.
    """
    from faceforge.eval.cache import EmbeddingCache
    from faceforge.eval.crops import FaceCropper
    from faceforge.eval.verification import embed_images, flip_mode

    fm = flip_mode(flip)
    cache = cache or EmbeddingCache(None)
    paths = [os.fspath(p) for p in paths]
    if not paths:
        raise FaceforgeError(f"{name}: no image files to embed")
    cropper = FaceCropper(model.face_cfg, detector, detector_model, crop_cache, warn)
    plan = cropper.plan(paths, name)
    parts = {
        "what": "files", "model": model.fingerprint, "images": _listing(paths), "flip": fm,
        "size": list(model.hw), "color": model.color, "template": model.template, "align": plan.key(),
    }  # fmt: skip
    emb = cache.get(parts) if model.fingerprint else None
    if emb is not None and len(emb) == len(paths):
        extra = cache.info(parts).get("extra", {})
        if "bad_paths" in extra:
            return emb, list(extra["bad_paths"]), dict(extra.get("facts", {}))
    chunks, bad, facts = [], [], {}
    for s in range(0, len(paths), _EMBED_CHUNK):
        crops = cropper.crops(paths[s : s + _EMBED_CHUNK], plan, name)
        bad += crops.bad_paths
        facts = crops.facts()
        chunks.append(embed_images(model.embed, crops.images, batch_size, fm, desc=name))
    emb = np.concatenate(chunks)
    if model.fingerprint:
        cache.put(parts, emb, {"bad_paths": bad, "facts": facts})
    return emb, bad, facts


def evaluate_classification(
    model: Any,
    gallery: tuple[Sequence[str], Sequence[int]],
    queries: tuple[Sequence[str], Sequence[int]],
    class_names: Sequence[str],
    *,
    k: int = 20,
    ks: Sequence[int] = (1, 5),
    index: str = "auto",
    exclude_self: bool = False,
    **embed_options: Any,
) -> tuple[ClassifyResult, dict[str, Any]]:
    """Embed labelled gallery and query files with ``model`` and classify the queries by retrieval.

    ``gallery`` / ``queries`` are ``(paths, class indices into class_names)``; ``embed_options`` go to
    :func:`embed_files`. Undecodable files are left out of both sides (listed in the returned facts:
    ``gallery_paths`` / ``query_paths`` of the rows kept, ``undecodable``, ``images``).
    """
    g_paths, g_lab = list(gallery[0]), np.asarray(gallery[1], dtype=np.int64)
    q_paths, q_lab = list(queries[0]), np.asarray(queries[1], dtype=np.int64)
    g_emb, g_bad, g_facts = embed_files(model, g_paths, name="gallery", **embed_options)
    if exclude_self:
        q_emb, q_bad, q_facts = g_emb, g_bad, g_facts
    else:
        q_emb, q_bad, q_facts = embed_files(model, q_paths, name="queries", **embed_options)
    g_bad_set, q_bad_set = set(g_bad), set(q_bad)
    g_keep = np.array([p not in g_bad_set for p in g_paths], dtype=bool)
    q_keep = np.array([p not in q_bad_set for p in q_paths], dtype=bool)
    if not g_keep.any() or not q_keep.any():
        raise FaceforgeError(
            f"no decodable image among the {'gallery' if not g_keep.any() else 'query'} files"
        )
    res = classify_by_retrieval(
        g_emb[g_keep], g_lab[g_keep], q_emb[q_keep], q_lab[q_keep], k=k, ks=ks, class_names=class_names,
        index=index, exclude_self=exclude_self,
    )  # fmt: skip
    missing = sorted({class_names[c] for c in q_lab[q_keep]} - {class_names[c] for c in g_lab[g_keep]})
    facts = {
        "gallery_paths": [p for p, ok in zip(g_paths, g_keep) if ok],
        "query_paths": [p for p, ok in zip(q_paths, q_keep) if ok],
        "undecodable": sorted(set(g_bad) | set(q_bad)),
        "images": {"gallery": g_facts, "queries": q_facts},
        "query_classes_not_in_gallery": missing,
    }
    return res, facts
