"""Worker pools that fork safely after OpenCV ran threaded in the parent: a forked child calling
``cv2.setNumThreads`` waited forever on a condition variable the parent's threads left behind, so
:func:`fork_pool` keeps OpenCV single-threaded while its workers live and then restores the caller's
setting. Details: docs/data.md, "Implementation notes" ("Worker pools").
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import sys
from collections.abc import Callable, Iterator
from typing import Any

__all__ = ["fork_pool", "opencv_single_threaded"]


@contextlib.contextmanager
def opencv_single_threaded() -> Iterator[None]:
    """OpenCV on one thread inside the block (``cv2.setNumThreads(1)``), the caller's setting after."""
    import cv2

    before = cv2.getNumThreads()
    cv2.setNumThreads(1)
    try:
        yield
    finally:
        cv2.setNumThreads(before)


@contextlib.contextmanager
def fork_pool(
    workers: int, initializer: Callable[..., Any] | None = None, initargs: tuple[Any, ...] = ()
) -> Iterator[Any]:
    """A ``multiprocessing`` pool of ``workers`` processes: forked on Linux (cheap, nothing re-imported),
    spawned elsewhere (fork is unsafe on macOS); OpenCV stays single-threaded in this process while the
    pool lives (workers that die are forked again), see the module docstring.
    """
    ctx = mp.get_context("fork" if sys.platform == "linux" else "spawn")
    with opencv_single_threaded(), ctx.Pool(workers, initializer=initializer, initargs=initargs) as pool:
        yield pool
