"""Reports for evaluation results: text and Markdown tables (:func:`format_table`, :func:`to_markdown`,
:func:`format_report` with one table per row kind and the :func:`verification_notes` under it), JSON
files (:func:`write_json`, :func:`read_report`, :func:`write_report`), ROC and DET plots
(:func:`plot_roc`, :func:`plot_det`). ``results`` everywhere is ``{set name: evaluate_pairs() dict}``;
missing numbers are shown as ``-``. Details: docs/evaluation.md, "Reports" and "Report notes".
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from faceforge.errors import FaceforgeError
from faceforge.fileio import naming_errors, write_text

__all__ = [
    "RESERVED_KEYS",
    "calibration_text",
    "format_report",
    "format_table",
    "plot_det",
    "plot_roc",
    "plots_unavailable",
    "read_report",
    "split_rows",
    "to_markdown",
    "verification_notes",
    "write_json",
    "write_report",
]

#: top-level keys of report.json that are not result rows
RESERVED_KEYS = ("calibration",)

_MISSING = "-"
#: fewer false accepts than this behind a TAR@FAR are flagged as noisy (the calibration's rule)
NOISY_FALSE_ACCEPTS = 10


def _num(value: Any) -> float | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        v = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(v) else v


def _tar(result: Mapping[str, Any], far: float) -> float | None:
    table = result.get("tar_at_far") or {}
    # Keys are str(far) in memory, but compare as numbers so "1e-2" or 0.01 also match.
    for key, value in table.items():
        try:
            if math.isclose(float(key), far, rel_tol=1e-9):
                return _num(value)
        except (TypeError, ValueError):
            continue
    return None


def _pct(v: float | None) -> str:
    return _MISSING if v is None else f"{100.0 * v:.2f}"


def _acc(result: Mapping[str, Any]) -> str:
    acc, std = _num(result.get("accuracy")), _num(result.get("accuracy_std"))
    if acc is None:
        return _MISSING
    return f"{100.0 * acc:.2f}" if std is None else f"{100.0 * acc:.2f} ± {100.0 * std:.2f}"


def _fixed(key: str, digits: int) -> Callable[[Mapping[str, Any]], str]:
    def fmt(result: Mapping[str, Any]) -> str:
        v = _num(result.get(key))
        return _MISSING if v is None else f"{v:.{digits}f}"

    return fmt


# (header, formatter). Rates are shown in percent because that is how LFW-style results are quoted.
_COLUMNS: list[tuple[str, Callable[[Mapping[str, Any]], str]]] = [
    ("Accuracy (%)", _acc),
    ("Thr (cos)", _fixed("threshold_cos", 4)),
    ("AUC", _fixed("auc", 5)),
    ("EER (%)", lambda r: _pct(_num(r.get("eer")))),
    ("TAR@FAR=1e-2 (%)", lambda r: _pct(_tar(r, 1e-2))),
    ("TAR@FAR=1e-3 (%)", lambda r: _pct(_tar(r, 1e-3))),
]


def _rows(
    results: Mapping[str, Mapping[str, Any]],
    columns: list[tuple[str, Callable[[Mapping[str, Any]], str]]] | None = None,
) -> tuple[list[str], list[list[str]]]:
    columns = _COLUMNS if columns is None else columns
    if not isinstance(results, Mapping):
        raise FaceforgeError(
            f"results is a {type(results).__name__}; expected a dict of set name -> evaluate_pairs() result"
        )
    header = ["Set"] + [h for h, _ in columns]
    rows = []
    for name, result in results.items():
        if not isinstance(result, Mapping):
            raise FaceforgeError(
                f"results[{name!r}] is a {type(result).__name__}; expected a dict of metrics"
            )
        rows.append([str(name)] + [fmt(result) for _, fmt in columns])
    return header, rows


def format_table(
    results: Mapping[str, Mapping[str, Any]],
    columns: list[tuple[str, Callable[[Mapping[str, Any]], str]]] | None = None,
) -> str:
    """Fixed-width text table of LFW-protocol results: accuracy ± std, threshold, AUC, EER, TAR@FAR."""
    header, rows = _rows(results, columns)
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        # Name left-aligned, numbers right-aligned so decimal points line up.
        parts = [cells[0].ljust(widths[0])] + [c.rjust(w) for c, w in zip(cells[1:], widths[1:])]
        return "  ".join(parts)

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(header), rule, *(line(r) for r in rows)]) + "\n"


def to_markdown(
    results: Mapping[str, Mapping[str, Any]],
    columns: list[tuple[str, Callable[[Mapping[str, Any]], str]]] | None = None,
) -> str:
    """GitHub Markdown table with the same columns as :func:`format_table` (LFW-protocol results)."""
    header, rows = _rows(results, columns)

    def line(cells: list[str]) -> str:
        return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"

    align = "| :--- | " + " | ".join("---:" for _ in header[1:]) + " |"
    return "\n".join([line(header), align, *(line(r) for r in rows)]) + "\n"


def _sub(key: str, sub: str) -> Callable[[Mapping[str, Any]], str]:
    def fmt(result: Mapping[str, Any]) -> str:
        table = result.get(key) or {}
        for k, v in table.items():
            try:
                if math.isclose(float(k), float(sub), rel_tol=1e-9):
                    return _pct(_num(v))
            except (TypeError, ValueError):
                continue
        return _MISSING

    return fmt


def _count(key: str) -> Callable[[Mapping[str, Any]], str]:
    def fmt(result: Mapping[str, Any]) -> str:
        v = _num(result.get(key))
        return _MISSING if v is None else str(int(v))

    return fmt


RETRIEVAL_COLUMNS: list[tuple[str, Callable[[Mapping[str, Any]], str]]] = [
    ("Queries", _count("n_queries")),
    ("Gallery", _count("n_gallery")),
    ("R@1 (%)", _sub("recall_at_k", "1")),
    ("R@5 (%)", _sub("recall_at_k", "5")),
    ("R@10 (%)", _sub("recall_at_k", "10")),
    ("P@1 (%)", lambda r: _pct(_num(r.get("precision_at_1")))),
    ("mAP@R (%)", lambda r: _pct(_num(r.get("map_at_r")))),
]
IJB_COLUMNS: list[tuple[str, Callable[[Mapping[str, Any]], str]]] = [
    ("Pairs", _count("n_pairs")),
    *[(f"TAR@FAR={f} (%)", _sub("tar_at_far", f)) for f in ("1e-6", "1e-5", "1e-4", "1e-3", "1e-2", "1e-1")],
    ("AUC", _fixed("auc", 5)),
]
IJB_1N_COLUMNS: list[tuple[str, Callable[[Mapping[str, Any]], str]]] = [
    ("Probes", _count("n_probes")),
    ("Rank-1 (%)", _sub("rank", "1")),
    ("Rank-5 (%)", _sub("rank", "5")),
    ("TPIR@FPIR=1e-2 (%)", _sub("tpir_at_fpir", "1e-2")),
    ("TPIR@FPIR=1e-1 (%)", _sub("tpir_at_fpir", "1e-1")),
]
CLASSIFY_COLUMNS: list[tuple[str, Callable[[Mapping[str, Any]], str]]] = [
    ("Queries", _count("n_queries")),
    ("Gallery", _count("n_gallery")),
    ("Classes", _count("n_classes")),
    ("k", _count("k")),
    ("Acc weighted (%)", lambda r: _pct(_num(r.get("accuracy")))),
    ("Acc majority (%)", lambda r: _pct(_num(r.get("accuracy_majority")))),
    ("Acc top-1 (%)", lambda r: _pct(_num(r.get("accuracy_top1")))),
    ("R@5 (%)", _sub("recall_at_k", "5")),
    ("mAP@R (%)", lambda r: _pct(_num(r.get("map_at_r")))),
]
_KIND_TABLES = {
    "verification": ("Verification (10-fold)", None),
    "retrieval": ("Retrieval", RETRIEVAL_COLUMNS),
    "classify": ("Classification by retrieval (kNN vote)", CLASSIFY_COLUMNS),
    "ijb": ("IJB 1:1 verification", IJB_COLUMNS),
    "ijb_1n": ("IJB 1:N identification", IJB_1N_COLUMNS),
}


def split_rows(results: Mapping[str, Any]) -> dict[str, dict[str, Mapping[str, Any]]]:
    """Rows grouped by their ``"kind"`` (missing = ``"verification"``); non-dict entries are skipped."""
    out: dict[str, dict[str, Mapping[str, Any]]] = {}
    for name, r in results.items():
        if isinstance(r, Mapping):
            out.setdefault(str(r.get("kind", "verification")), {})[name] = r
    return out


def _support_text(result: Mapping[str, Any]) -> str | None:
    support = result.get("tar_at_far_support") or {}
    if not isinstance(support, Mapping) or not support:
        return None
    parts = []
    for key in sorted(support, key=lambda k: -float(k)):
        s = support[key]
        if not isinstance(s, Mapping):
            continue
        imp, fa = _num(s.get("impostors")), _num(s.get("false_accepts"))
        if imp is None:
            continue
        text = f"FAR={float(key):g} from {int(imp):,} impostor pairs"
        if fa is not None:
            text += f" ({int(fa)} false accept{'s' if int(fa) != 1 else ''}"
            text += ", noisy)" if fa < NOISY_FALSE_ACCEPTS else ")"
        parts.append(text)
    return "; ".join(parts) if parts else None


def _faces_text(result: Mapping[str, Any], with_rule: bool) -> str | None:
    method = result.get("alignment")
    if method == "detected":
        n_nf = int(_num(result.get("no_face_images")) or 0)
        n = _num(result.get("n_images"))
        of = f" of {int(n):,}" if n is not None else ""
        text = f"faces detected with {result.get('detector')}; no face in {n_nf}{of} images"
        if n_nf:
            ex = [Path(str(p)).name for p in (result.get("no_face_examples") or [])]
            if ex:
                text += f" (e.g. {', '.join(ex)})"
            if with_rule and result.get("no_face_rule"):
                text += f"; rule: {result['no_face_rule']}"
        return text
    if method == "resized":
        return f"{result.get('resized_without_alignment')} image(s) resized whole, without alignment"
    if method == "realigned":
        return "arcface crops re-aligned to the model's template"
    return None


def verification_notes(results: Mapping[str, Any]) -> list[str]:
    """One line per verification row with what stands behind it (docs/evaluation.md, "Report notes").

    ``"<set>: TAR@FAR=0.001 from 3,000 impostor pairs (3 false accepts, noisy); ..."`` and
    ``"<set>: faces detected with yunet; no face in 2 of 7,701 images (e.g. ...)"``; the no-face rule
    is spelled out once.
    """
    lines = []
    rule_shown = False
    for name, r in split_rows(results).get("verification", {}).items():
        sup = _support_text(r)
        if sup:
            lines.append(f"{name}: TAR@{sup}")
        faces = _faces_text(r, with_rule=not rule_shown)
        if faces:
            rule_shown = rule_shown or "rule:" in faces
            lines.append(f"{name}: {faces}")
        if r.get("undecodable_images"):
            n_bad = int(r["undecodable_images"])
            lines.append(f"{name}: {n_bad} undecodable image(s) scored as black images")
    return lines


def format_report(results: Mapping[str, Any], markdown: bool = False) -> str:
    """One table per kind of row (verification, retrieval, IJB 1:1, IJB 1:N), titled when several.

    The verification table is followed by :func:`verification_notes`.
    """
    groups = split_rows(results)
    parts = []
    for kind, rows in groups.items():
        title, cols = _KIND_TABLES.get(kind, (kind, None))
        table = to_markdown(rows, cols) if markdown else format_table(rows, cols)
        if len(groups) > 1 or kind != "verification":
            table = (f"### {title}\n\n" if markdown else f"{title}\n") + table
        if kind == "verification":
            notes = verification_notes(rows)
            if notes:
                table += (
                    ("\n" if markdown else "")
                    + "\n".join((f"- {n}" if markdown else f"  {n}") for n in notes)
                    + "\n"
                )
        parts.append(table)
    return "\n".join(parts)


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")


def _atomic_write(path: Path, write: Callable[[Any], None], binary: bool) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    # The temp file lives next to the target so os.replace is a same-filesystem rename: readers see
    # either the old file or the complete new one, never a partial write.
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with (
            naming_errors(path),
            os.fdopen(fd, "wb" if binary else "w", **({} if binary else {"encoding": "utf-8"})) as f,
        ):
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(results: Mapping[str, Any], path: str | os.PathLike[str]) -> Path:
    """Write results as strict JSON (no NaN/Inf), atomically: temp file in the same folder, ``os.replace``."""
    path = Path(path)
    if path.is_dir():
        raise FaceforgeError(
            f"write_json: {path} is a directory; expected a file path such as {path}/metrics.json"
        )
    try:
        text = json.dumps(results, indent=2, default=_json_default, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise FaceforgeError(
            f"write_json: results cannot be written as JSON ({exc}); expected finite numbers"
        ) from exc
    _atomic_write(path, lambda f: f.write(text + "\n"), binary=False)
    return path


def plots_unavailable() -> str | None:
    """Why PNG plots cannot be drawn here (matplotlib, of the ``train`` extra, missing), else ``None``.

    Reports then carry their tables and say in one line which plots were left out and how to get them.
    """
    import importlib.util

    if importlib.util.find_spec("matplotlib") is None:
        return 'matplotlib is not installed (pip install "faceforge[train]" or pip install matplotlib)'
    return None


def plot_roc(results: Mapping[str, Mapping[str, Any]], path: str | os.PathLike[str]) -> Path:
    """Plot each entry's ROC (TAR vs log-scale FAR, all pairs) to a PNG; entries without one are skipped."""
    # Figure + FigureCanvasAgg instead of pyplot: no global backend switch, safe in servers and threads.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    path = Path(path)
    if path.suffix.lower() != ".png":
        raise FaceforgeError(f"plot_roc: {path} does not end in .png; expected a PNG file path")
    fig = Figure(figsize=(6.4, 4.8), dpi=120)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    lowest = 1.0
    drawn = 0
    for name, result in results.items():
        fpr = np.asarray(result.get("roc_fpr") or [], dtype=np.float64)
        tpr = np.asarray(result.get("roc_tpr") or [], dtype=np.float64)
        if fpr.size == 0 or fpr.size != tpr.size:
            continue
        keep = fpr > 0  # FAR = 0 has no place on a log axis
        if not keep.any():
            continue
        auc = _num(result.get("auc"))
        label = str(name) if auc is None else f"{name} (AUC {auc:.4f})"
        ax.plot(fpr[keep], tpr[keep], label=label, linewidth=1.5)
        lowest = min(lowest, float(fpr[keep].min()))
        drawn += 1
    if drawn == 0:
        raise FaceforgeError(
            f"plot_roc: none of {list(results)} has 'roc_fpr'/'roc_tpr'; expected evaluate_pairs() results"
        )
    ax.set_xscale("log")
    ax.set_xlim(lowest, 1.0)
    ax.set_ylim(0.0, 1.01)
    ax.set_xlabel("False accept rate (FAR)")
    ax.set_ylabel("True accept rate (TAR)")
    ax.set_title("ROC (cosine similarity, all pairs)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="lower right", fontsize="small")
    fig.tight_layout()
    _atomic_write(path, lambda f: fig.savefig(f, format="png"), binary=True)
    return path


def plot_det(results: Mapping[str, Mapping[str, Any]], path: str | os.PathLike[str]) -> Path:
    """DET curves to a PNG: false non-match rate (1 − TAR) against false match rate (FAR), both log axes.

    The detection error trade-off plot of Martin et al., "The DET curve in assessment of detection task
    performance", Eurospeech 1997 (here on log-log axes, as ISO/IEC 19795-1 allows). Uses each entry's
    ``roc_fpr``/``roc_tpr``; points where either rate is 0 cannot be drawn on a log axis and are left out.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    path = Path(path)
    if path.suffix.lower() != ".png":
        raise FaceforgeError(f"plot_det: {path} does not end in .png; expected a PNG file path")
    fig = Figure(figsize=(6.4, 4.8), dpi=120)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    lo_x, lo_y, drawn = 1.0, 1.0, 0
    for name, result in results.items():
        fpr = np.asarray(result.get("roc_fpr") or [], dtype=np.float64)
        tpr = np.asarray(result.get("roc_tpr") or [], dtype=np.float64)
        if fpr.size == 0 or fpr.size != tpr.size:
            continue
        fnmr = 1.0 - tpr
        keep = (fpr > 0) & (fnmr > 0)
        if not keep.any():
            continue
        eer = _num(result.get("eer"))
        label = str(name) if eer is None else f"{name} (EER {100 * eer:.2f}%)"
        ax.plot(fpr[keep], fnmr[keep], label=label, linewidth=1.5)
        lo_x, lo_y = min(lo_x, float(fpr[keep].min())), min(lo_y, float(fnmr[keep].min()))
        drawn += 1
    if drawn == 0:
        raise FaceforgeError(f"plot_det: none of {list(results)} has a ROC with non-zero error rates to draw")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlim(lo_x, 1.0)
    ax.set_ylim(lo_y, 1.0)
    ax.set_xlabel("False match rate (FMR = FAR)")
    ax.set_ylabel("False non-match rate (FNMR = 1 − TAR)")
    ax.set_title("DET (cosine similarity, all pairs)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="upper right", fontsize="small")
    fig.tight_layout()
    _atomic_write(path, lambda f: fig.savefig(f, format="png"), binary=True)
    return path


# ---------------------------------------------------------------------------------------- run folders
# (eval, demo and train write the same report.json / report.md / roc.png into a run folder)


def read_report(path: Path) -> dict[str, Any]:
    """An existing ``report.json`` (``{}`` when absent); unreadable ones are an error, never overwritten."""
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text())
    except ValueError as e:
        raise FaceforgeError(f"{path} is not valid JSON ({e}); move it away or pass --fresh") from None
    if not isinstance(data, dict):
        raise FaceforgeError(
            f"{path}: expected an object of set name -> metrics; move it away or pass --fresh"
        )
    return data


def write_report(
    results: dict[str, Any],
    out: Path,
    calibration: dict[str, Any] | None = None,
    merge: bool = False,
) -> dict[str, Path]:
    """``report.json``, ``report.md``, ``roc.png`` and ``det.png`` in ``out``.

    ``report.json`` is ``{row name: metrics}`` plus, when given, the top-level ``"calibration"``
    block (:mod:`faceforge.eval.calibration`). With ``merge`` the rows (and calibration) of an
    existing report are kept unless replaced by a row of the same name.
    """
    out.mkdir(parents=True, exist_ok=True)
    data: dict[str, Any] = read_report(out / "report.json") if merge else {}
    data.update(results)
    if calibration is not None:
        data["calibration"] = calibration
    rows = {k: v for k, v in data.items() if k not in RESERVED_KEYS and isinstance(v, dict)}
    paths: dict[str, Path] = {"json": write_json(data, out / "report.json")}
    curves = {
        k: v for kind, g in split_rows(rows).items() if kind in ("verification", "ijb") for k, v in g.items()
    }
    curves = {k: v for k, v in curves.items() if v.get("roc_fpr")}
    md = ["# Evaluation report", "", format_report(rows, markdown=True)]
    cal = data.get("calibration")
    if isinstance(cal, dict):
        md += ["", "## Calibration", "", calibration_text(cal)]
    no_plots = plots_unavailable() if curves else None
    if no_plots:
        md += ["", f"ROC and DET plots omitted: {no_plots}"]
    elif curves:
        paths["png"] = plot_roc(curves, out / "roc.png")
        md += ["", "![ROC](roc.png)"]
        try:
            paths["det"] = plot_det(curves, out / "det.png")
            md += ["", "![DET](det.png)"]
        except FaceforgeError as e:
            # Every curve is error-free: a log-log DET has nothing to show, so say so in the report.
            md += ["", f"DET plot omitted: {e}"]
    write_text(out / "report.md", "\n".join(md) + "\n")
    paths["md"] = out / "report.md"
    return paths


def calibration_text(cal: dict[str, Any]) -> str:
    """The Markdown bullet list of a report's ``"calibration"`` block."""
    far = cal.get("far_target")
    at = f"FAR = {far:g}" if far is not None else "best 10-fold accuracy"
    lines = [
        f"- source: {cal.get('source')}",
        f"- default threshold (cosine, accept `>=`): {cal.get('threshold'):.4f} at {at}",
    ]
    if cal.get("far_note"):
        lines.append(f"- why: {cal['far_note']}")
    n_imp, n_gen = cal.get("n_impostor"), cal.get("n_genuine")
    if n_imp is not None:
        gen = f", {n_gen:,} genuine" if n_gen is not None else ""
        lines.append(f"- pairs behind it: {n_imp:,} impostor{gen}")
    lines.append(f"- best-accuracy threshold: {cal.get('threshold_cos_best_accuracy'):.4f}")
    for k, v in (cal.get("tar_at_far_threshold_cos") or {}).items():
        lines.append(f"- threshold at FAR = {float(k):g}: {v:.4f}")
    return "\n".join(lines)
