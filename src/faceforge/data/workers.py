"""Worker pools that fork safely after OpenCV has run threaded in the parent process.

OpenCV's worker threads do not survive ``fork``: a forked child that then calls ``cv2.setNumThreads``
waits forever on the condition variable the parent's threads left behind (seen: ``write_dataset``
with ``workers=2`` after an LFW evaluation in the same process hung with every process asleep).
:func:`fork_pool` keeps OpenCV on one thread while its workers are forked and alive, so there is no
thread pool to inherit, and gives the caller its setting back afterwards. Details: docs/data.md,
"Implementation notes".
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
