"""Micro-batching: concurrent callers' small arrays run through one function as one batch
(:class:`MicroBatcher`: worker threads form the batches, at most ``workers`` calls at once; the dynamic
batching and instance count of inference servers such as Triton and TorchServe). Details:
docs/inference.md, "Micro-batching".
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

import numpy as np

from faceforge.errors import FaceforgeError

__all__ = ["MicroBatcher"]


class MicroBatcher:
    """Run ``fn(rows) -> rows`` on the rows many threads :meth:`submit`, batched, in ``workers`` threads.

    ``fn`` maps an array ``[N, ...]`` to an array ``[N, ...]`` (row ``i`` of the answer belongs to row
    ``i`` of the input). ``max_batch`` bounds the rows per call (a caller with more rows than that is
    run alone, whole); ``max_wait_s`` is how long the worker waits for company after the first
    arrival. An exception raised by ``fn`` is re-raised in every caller of that batch.

    With ``workers == 1`` (the default) ``fn`` never runs twice at once. With ``workers == N``, up to
    N batches run at the same time, each in its own thread: on a CPU with N cores and one intra-op
    thread per call, the cores then work on different batches (Triton's instance count); ``fn`` must
    be safe to call from several threads (an eval-mode PyTorch module under ``inference_mode`` and an
    ONNX Runtime session are). With ``max_wait_s == 0``, a caller that finds a free worker and nothing
    queued runs its rows itself, in its own thread: a lone request pays no thread hop; callers that
    arrive meanwhile queue and go together in the next batch.
    """

    def __init__(
        self,
        fn: Callable[[np.ndarray], np.ndarray],
        max_batch: int = 32,
        max_wait_s: float = 0.0,
        workers: int = 1,
    ) -> None:
        if isinstance(max_batch, bool) or not isinstance(max_batch, int) or max_batch < 1:
            raise FaceforgeError(f"max_batch must be a positive integer, got {max_batch!r}")
        if not max_wait_s >= 0:
            raise FaceforgeError(f"max_wait_s must be >= 0 seconds, got {max_wait_s!r}")
        if isinstance(workers, bool) or not isinstance(workers, int) or not 1 <= workers <= 64:
            raise FaceforgeError(f"workers must be an integer in [1, 64], got {workers!r}")
        self.fn = fn
        self.max_batch = int(max_batch)
        self.max_wait_s = float(max_wait_s)
        self.workers = int(workers)
        self._queue: queue.Queue[tuple[np.ndarray, Future] | None] = queue.Queue()
        self._closed = False
        self._held: tuple[np.ndarray, Future] | None = None  # the request that did not fit the last batch
        # One slot per call of fn that may run; a batch is taken while holding a slot and the take lock.
        self._slots = threading.BoundedSemaphore(self.workers)
        self._take_lock = threading.Lock()
        self._stats_lock = threading.Lock()
        self.batches = 0  # calls of fn so far (statistics; read by benchmarks and tests)
        self.rows = 0
        self._threads = [
            threading.Thread(target=self._loop, name=f"faceforge-microbatch-{i}", daemon=True)
            for i in range(self.workers)
        ]
        for t in self._threads:
            t.start()

    def submit(self, rows: np.ndarray) -> np.ndarray:
        """``fn(rows)``, computed in a batch with other callers' rows; blocks until it is done."""
        if threading.current_thread() in self._threads:
            return self.fn(rows)  # a re-entrant call from fn itself must not wait for its own batch
        if self._closed:
            raise FaceforgeError("the micro-batcher is closed")
        rows = np.asarray(rows)
        if self.max_wait_s == 0 and self._slots.acquire(blocking=False):
            try:
                with self._take_lock:  # idle: no one to wait for or to pass
                    idle = self._held is None and self._queue.empty()
                if idle:
                    return self._call([rows])
            finally:
                self._slots.release()
        fut: Future = Future()
        self._queue.put((rows, fut))
        return fut.result()

    def close(self) -> None:
        """Stop the workers after the queued work; later :meth:`submit` calls raise."""
        if not self._closed:
            self._closed = True
            self._queue.put(None)
            for t in self._threads:
                t.join(timeout=30)

    def _take(self) -> tuple[list[tuple[np.ndarray, Future]], bool]:
        """The next batch of requests and whether the batcher was closed; ``[]`` when another worker
        took the work first (never blocks for a first request: the caller holds the take lock)."""
        if self._held is not None:
            first, self._held = self._held, None
        else:
            try:
                first = self._queue.get_nowait()
            except queue.Empty:
                return [], False
        if first is None:
            self._queue.put(None)  # every worker sees the end
            return [], True
        batch, n = [first], len(first[0])
        deadline = time.monotonic() + self.max_wait_s
        while n < self.max_batch:
            timeout = deadline - time.monotonic()
            try:
                item = self._queue.get_nowait() if timeout <= 0 else self._queue.get(timeout=timeout)
            except queue.Empty:
                break
            if item is None:
                self._queue.put(None)  # stop after this batch (and tell the other workers)
                break
            if n + len(item[0]) > self.max_batch:
                self._held = item  # first in the next batch, so no request waits behind later ones
                break
            batch.append(item)
            n += len(item[0])
        return batch, False

    def _wait_for_work(self) -> None:
        """Block until a request is queued (or held), without taking it: it stays countable in the
        queue, and is taken only under the run lock (after a caller's own call, if one is running)."""
        if self._held is not None:
            return
        q = self._queue
        with q.not_empty:  # queue.Queue's condition on its mutex, notified on every put
            while not q.queue:  # (qsize() would take the mutex again)
                q.not_empty.wait()

    def _loop(self) -> None:
        while True:
            self._wait_for_work()
            with self._slots:
                with self._take_lock:
                    batch, closed = self._take()
                    if not closed and (self._held is not None or not self._queue.empty()):
                        with self._queue.not_empty:  # work left over: wake a waiting worker for it
                            self._queue.not_empty.notify()
                if closed:
                    return
                if batch:
                    self._run(batch)

    def _call(self, parts: list[np.ndarray]) -> Any:
        """``fn`` on the rows of ``parts`` together (the caller holds a slot); checks and counts."""
        n = sum(len(r) for r in parts)
        out: Any = self.fn(np.concatenate(parts) if len(parts) > 1 else parts[0])
        if len(out) != n:
            raise FaceforgeError(f"batched function returned {len(out)} rows for {n} inputs")
        with self._stats_lock:
            self.batches += 1
            self.rows += n
        return out

    def _run(self, batch: list[tuple[np.ndarray, Future]]) -> None:
        sizes = [len(r) for r, _ in batch]
        try:
            out = self._call([r for r, _ in batch])
        except BaseException as e:  # every waiter gets the error, the worker lives on
            for _, fut in batch:
                fut.set_exception(e)
            return
        start = 0
        for (_, fut), n in zip(batch, sizes):
            fut.set_result(out[start : start + n])
            start += n
