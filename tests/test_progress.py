"""One progress helper (:mod:`faceforge.progress`): a bar only on a terminal or when asked, and no other
module of the package draws one itself (issue #17)."""

from __future__ import annotations

import io
import re
from pathlib import Path

import faceforge
from faceforge.progress import NoBar, progress_bar, progress_enabled, track

SRC = Path(faceforge.__file__).resolve().parent


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_no_bar_off_a_terminal(monkeypatch) -> None:
    err = io.StringIO()
    monkeypatch.setattr("sys.stderr", err)
    assert not progress_enabled(None)
    bar = progress_bar(5, "x")
    assert isinstance(bar, NoBar)
    assert list(track(range(4), 4, "x")) == [0, 1, 2, 3]
    assert err.getvalue() == ""


def test_bar_on_a_terminal_or_when_asked(monkeypatch) -> None:
    err = _Tty()
    monkeypatch.setattr("sys.stderr", err)
    assert progress_enabled(None) and not progress_enabled(False)
    assert list(track(range(3), 3, "walk", unit="id")) == [0, 1, 2]
    assert "walk" in err.getvalue() and "3/3" in err.getvalue()
    assert isinstance(progress_bar(3, "x", enabled=False), NoBar)


def test_track_closes_the_bar_when_the_loop_stops_early(monkeypatch) -> None:
    closed = []

    class Bar(NoBar):
        def close(self) -> None:
            closed.append(self.n)

    monkeypatch.setattr("faceforge.progress.progress_bar", lambda *a, **k: Bar())
    for i in track(range(10), 10, "x", enabled=True):
        if i == 2:
            break
    assert closed == [2]


def test_no_module_draws_its_own_bar() -> None:
    pattern = re.compile(r"^\s*(from tqdm|import tqdm)", re.M)
    own = [p.relative_to(SRC) for p in SRC.rglob("*.py") if p.name != "progress.py"
           and pattern.search(p.read_text(encoding="utf-8"))]  # fmt: skip
    assert own == [], own
