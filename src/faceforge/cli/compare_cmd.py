"""``faceforge compare RUN_A RUN_B ...``: the reports of several runs side by side (verification,
retrieval and IJB rows each in their own table)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from faceforge.errors import FaceforgeError


def load_report(path: str | Path) -> dict[str, dict[str, Any]]:
    """The ``report.json`` of a run directory (or the file itself), as ``{set name: metrics}``."""
    p = Path(path)
    f = p / "report.json" if p.is_dir() else p
    if not f.is_file():
        raise FaceforgeError(f"{p}: no report.json (run `faceforge eval` or `faceforge demo` first)")
    try:
        data = json.loads(f.read_text())
    except ValueError as e:
        raise FaceforgeError(f"{f} is not valid JSON: {e}") from None
    if not isinstance(data, dict):
        raise FaceforgeError(f"{f}: expected an object of set name -> metrics")
    # "calibration" is the report's calibration block, not a result row.
    rows = {k: v for k, v in data.items() if k != "calibration"}
    if not all(isinstance(v, dict) for v in rows.values()):
        raise FaceforgeError(f"{f}: expected an object of set name -> metrics")
    return rows


def compare(runs: list[str | Path]) -> dict[str, dict[str, Any]]:
    """Rows ``"<run> / <set>"`` for every set of every run, in the order given."""
    rows: dict[str, dict[str, Any]] = {}
    for run in runs:
        label = Path(run).name if Path(run).is_dir() else Path(run).parent.name
        for name, metrics in load_report(run).items():
            rows[f"{label} / {name}"] = metrics
    return rows


def run(args: argparse.Namespace) -> int:
    """Print the side-by-side tables, one per kind of row (Markdown with --markdown)."""
    from faceforge.eval.report import format_report

    rows = compare(args.runs)
    print(format_report(rows, markdown=args.markdown))
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``compare`` command."""
    p = sub.add_parser("compare", help="side-by-side table of the reports of several runs")
    p.add_argument("runs", nargs="+", help="run directories (or report.json files)")
    p.add_argument("--markdown", action="store_true", help="print a Markdown table")
    p.set_defaults(func=run)
