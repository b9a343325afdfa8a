"""Progress bars for long loops: one tqdm bar on stderr, shown only on a terminal unless asked.
A bar written into a pipe or a CI log is thousands of carriage-return lines, so ``enabled=None`` means
"stderr is a TTY"; the command line's ``--progress``/``--no-progress`` pass True/False. Every loop of
the package that shows progress (alignment, packing, SynthFaces, embedding, IJB, downloads) uses
:func:`progress_bar` or :func:`track`.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator
from typing import Any, TypeVar

__all__ = ["NoBar", "progress_bar", "progress_enabled", "track"]

T = TypeVar("T")


class NoBar:
    """The bar's interface when no bar is shown (``update``/``close``/``total``/``n``)."""

    def __init__(self, total: int | None = None) -> None:
        self.total, self.n = total, 0

    def update(self, n: int = 1) -> None:
        """Count ``n`` more items (nothing is drawn)."""
        self.n += n

    def refresh(self) -> None:
        """Nothing to redraw."""

    def close(self) -> None:
        """Nothing to close."""


def progress_enabled(enabled: bool | None) -> bool:
    """``enabled``, or when ``None`` whether stderr is an interactive terminal."""
    if enabled is not None:
        return bool(enabled)
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):  # replaced or closed stderr
        return False


def progress_bar(
    total: int | None, desc: str, *, unit: str = "img", enabled: bool | None = None, **kwargs: Any
) -> Any:
    """A tqdm bar on stderr (``update(n)``, ``close()``), or a :class:`NoBar` when not enabled."""
    if not progress_enabled(enabled):
        return NoBar(total)
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit=unit, file=sys.stderr, dynamic_ncols=True, **kwargs)


def track(
    it: Iterable[T], total: int | None, desc: str, *, unit: str = "img", enabled: bool | None = None
) -> Iterator[T]:
    """Yield from ``it``, advancing a :func:`progress_bar` per item; the bar closes when the loop ends."""
    bar = progress_bar(total, desc, unit=unit, enabled=enabled)
    try:
        for x in it:
            yield x
            bar.update(1)
    finally:
        bar.close()
