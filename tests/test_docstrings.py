"""Module docstrings are one paragraph (what, the paper or format, the entry points); depth lives in docs/.

Long module docstrings written as specifications drift from the code (issue #17); this keeps every
module of the package to one short paragraph and checks that the docs pointers they end with exist.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import faceforge

SRC = Path(faceforge.__file__).resolve().parent
DOCS = SRC.parents[1] / "docs"
MAX_LINES = 10


def _docstrings() -> dict[str, str | None]:
    return {
        str(p.relative_to(SRC)): ast.get_docstring(ast.parse(p.read_text(encoding="utf-8")))
        for p in sorted(SRC.rglob("*.py"))
    }


def test_every_module_docstring_is_one_short_paragraph() -> None:
    bad = []
    for rel, doc in _docstrings().items():
        if doc is None:
            continue  # an empty __init__.py
        lines = doc.strip().splitlines()
        if any(not line.strip() for line in lines) or len(lines) > MAX_LINES:
            bad.append(f"{rel}: {len(lines)} lines, {doc.count(chr(10) + chr(10)) + 1} paragraphs")
    assert not bad, "\n".join(bad)


def test_docs_pointers_name_existing_files() -> None:
    missing = []
    for rel, doc in _docstrings().items():
        for name in re.findall(r"docs/([\w.-]+\.md)", doc or ""):
            if not (DOCS / name).is_file():
                missing.append(f"{rel}: docs/{name}")
    assert not missing, missing
