"""MicroBatcher: a caller that finds it idle runs its rows in its own thread (no hop to the worker);
with a wait for company (max_wait_s > 0) every call goes through the worker."""

from __future__ import annotations

import threading

import numpy as np

from faceforge.infer.batching import MicroBatcher


def test_an_idle_batcher_lets_the_caller_run_its_rows_itself() -> None:
    threads: list[threading.Thread] = []

    def fn(x: np.ndarray) -> np.ndarray:
        threads.append(threading.current_thread())
        return x + 1

    b = MicroBatcher(fn, max_batch=4)
    np.testing.assert_array_equal(b.submit(np.zeros((2, 1))), np.ones((2, 1)))
    np.testing.assert_array_equal(b.submit(np.zeros((6, 1))), np.ones((6, 1)))  # over max_batch: whole
    assert threads == [threading.current_thread()] * 2
    assert b.batches == 2 and b.rows == 8
    b.close()
    waiting = MicroBatcher(fn, max_batch=4, max_wait_s=0.001)
    np.testing.assert_array_equal(waiting.submit(np.zeros((1, 1))), np.ones((1, 1)))
    assert threads[-1] in waiting._threads
    waiting.close()
