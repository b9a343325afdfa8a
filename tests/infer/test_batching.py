"""MicroBatcher: concurrent callers' rows meet in one call, answers go back to the right caller."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
from concurrent_embed import embed_each_in_its_own_thread

from faceforge.errors import FaceforgeError
from faceforge.infer.batching import MicroBatcher


class Recorder:
    """``fn`` for the batcher: row-wise ``x * 2 + 1``; the first call blocks until ``release``."""

    def __init__(self) -> None:
        self.sizes: list[int] = []
        self.release = threading.Event()
        self.entered = threading.Event()

    def __call__(self, x: np.ndarray) -> np.ndarray:
        if not self.sizes:
            self.entered.set()
            assert self.release.wait(10)
        self.sizes.append(len(x))
        return x * 2 + 1


def _wait_queued(b: MicroBatcher, n: int) -> None:
    deadline = time.monotonic() + 10
    while b._queue.qsize() < n:
        assert time.monotonic() < deadline, "callers did not queue"
        time.sleep(0.005)


def _run_callers(
    b: MicroBatcher, inputs: list[np.ndarray], out: dict[int, np.ndarray]
) -> list[threading.Thread]:
    def call(i: int) -> None:
        out[i] = b.submit(inputs[i])

    threads = [threading.Thread(target=call, args=(i,)) for i in range(len(inputs))]
    for t in threads:
        t.start()
    return threads


def test_waiting_callers_share_one_call_and_get_their_own_rows() -> None:
    rec = Recorder()
    b = MicroBatcher(rec, max_batch=64)
    rng = np.random.default_rng(0)
    inputs = [rng.normal(size=(int(rng.integers(1, 4)), 5)) for _ in range(9)]
    out: dict[int, np.ndarray] = {}
    first = _run_callers(b, inputs[:1], out)
    assert rec.entered.wait(10)  # the first call holds the worker...
    rest = [threading.Thread(target=lambda i=i: out.__setitem__(i, b.submit(inputs[i]))) for i in range(1, 9)]
    for t in rest:
        t.start()
    _wait_queued(b, 8)  # ...while the eight others queue up
    rec.release.set()
    for t in first + rest:
        t.join(10)
    b.close()
    assert rec.sizes == [len(inputs[0]), sum(len(x) for x in inputs[1:])]  # one call for all eight
    for i, x in enumerate(inputs):
        np.testing.assert_array_equal(out[i], x * 2 + 1)
    assert b.batches == 2 and b.rows == sum(len(x) for x in inputs)


def test_batches_never_exceed_max_batch_and_keep_arrival_order() -> None:
    rec = Recorder()
    b = MicroBatcher(rec, max_batch=4)
    inputs = [np.full((3, 2), float(i)) for i in range(5)]  # 3 rows each: two never fit in one batch
    out: dict[int, np.ndarray] = {}
    first = _run_callers(b, inputs[:1], out)
    assert rec.entered.wait(10)
    rest = []
    for i in range(1, 5):  # queued one after another, in order
        t = threading.Thread(target=lambda i=i: out.__setitem__(i, b.submit(inputs[i])))
        t.start()
        _wait_queued(b, i)
        rest.append(t)
    rec.release.set()
    for t in first + rest:
        t.join(10)
    b.close()
    assert rec.sizes == [3, 3, 3, 3, 3]
    for i, x in enumerate(inputs):
        np.testing.assert_array_equal(out[i], x * 2 + 1)
    big = MicroBatcher(lambda x: x + 1, max_batch=2)
    np.testing.assert_array_equal(big.submit(np.zeros((5, 1))), np.ones((5, 1)))  # a big caller runs whole
    big.close()


def test_an_error_reaches_every_caller_of_its_batch_and_the_worker_survives() -> None:
    calls = []

    def fn(x: np.ndarray) -> np.ndarray:
        calls.append(len(x))
        if (x < 0).any():
            raise ValueError("negative input")
        return x

    b = MicroBatcher(fn, max_batch=8)
    with pytest.raises(ValueError, match="negative"):
        b.submit(-np.ones((2, 1)))
    np.testing.assert_array_equal(b.submit(np.ones((2, 1))), np.ones((2, 1)))
    b.close()
    with pytest.raises(FaceforgeError, match="closed"):
        b.submit(np.ones((1, 1)))
    bad = MicroBatcher(lambda x: x[:1], max_batch=8)  # a function that loses rows is an error, not a hang
    with pytest.raises(FaceforgeError, match="rows"):
        bad.submit(np.ones((3, 1)))
    bad.close()


@pytest.mark.parametrize("kw", [{"max_batch": 0}, {"max_batch": True}, {"max_wait_s": -1.0}])
def test_bad_settings_are_refused(kw: dict) -> None:
    with pytest.raises(FaceforgeError):
        MicroBatcher(lambda x: x, **kw)


def test_recognizer_with_batching_gives_the_same_embeddings() -> None:
    from faceforge.infer.loading import EmbeddingModel
    from faceforge.infer.recognizer import FaceRecognizer
    from faceforge.models.face_cfg import FaceConfig

    proj = np.random.default_rng(0).normal(size=(3 * 32 * 32, 16)).astype(np.float32)
    calls: list[int] = []

    def run(x: np.ndarray) -> np.ndarray:  # a fixed random projection stands in for a network
        calls.append(len(x))
        return x.reshape(len(x), -1) @ proj

    cfg = FaceConfig(input_size=(32, 32), template="none", embedding_size=16)
    rec = FaceRecognizer(EmbeddingModel(run, cfg, "proj", "test", "torch", "weights"), detector=None)
    crops = np.random.default_rng(1).integers(0, 256, size=(6, 32, 32, 3), dtype=np.uint8)
    direct = rec.embed_crops(crops)
    batcher = rec.enable_batching(max_batch=8)
    got = embed_each_in_its_own_thread(rec, crops, timeout=30)
    assert batcher.rows == 6 and 1 <= batcher.batches <= 6
    rec.disable_batching()
    np.testing.assert_allclose(got, direct, rtol=1e-5, atol=1e-6)
    assert rec.embed_crops(crops[:2]).shape == (2, 16)  # batching off again: runs in the caller


def test_the_service_batches_where_a_start_up_probe_finds_it_pays() -> None:
    pytest.importorskip("fastapi")
    import time

    from faceforge.infer.loading import EmbeddingModel
    from faceforge.infer.recognizer import FaceRecognizer
    from faceforge.models.face_cfg import FaceConfig
    from faceforge.serve.app import DEFAULT_MAX_BATCH, auto_max_batch, create_app, probe_batching

    cfg = FaceConfig(input_size=(32, 32), template="none", embedding_size=4)

    def model(per_call: float, per_crop: float) -> FaceRecognizer:
        def run(x):
            time.sleep(per_call + per_crop * len(x))
            return x[:, 0, 0, :4]

        return FaceRecognizer(EmbeddingModel(run, cfg, "m", "t", "torch", "weights"), detector=None)

    # A fixed cost per call (dispatch-bound, like the small quickstart model): 8 crops cost about one.
    fixed = model(0.004, 0.0)
    assert probe_batching(fixed) < 0.3
    assert auto_max_batch(fixed) == DEFAULT_MAX_BATCH
    # A cost per crop (compute-bound): a batch of 8 costs 8 single calls, so no batching.
    per_crop = model(0.0, 0.004)
    assert probe_batching(per_crop) > 0.8
    assert auto_max_batch(per_crop) == 1
    # A single call slower than the probe limit is not probed at all.
    slow = model(0.12, 0.0)
    assert probe_batching(slow) is None and auto_max_batch(slow) == 1
    # The answer is kept per recognizer: building the app again does not time the model again.
    calls = []
    per_crop.model.run, run = (lambda x: calls.append(len(x)) or run(x)), per_crop.model.run
    assert auto_max_batch(per_crop) == 1 and calls == []

    create_app(per_crop)
    assert per_crop._batcher is None
    create_app(fixed)
    assert fixed._batcher is not None and fixed._batcher.max_batch == DEFAULT_MAX_BATCH
    create_app(fixed, max_batch=8)
    assert fixed._batcher is not None and fixed._batcher.max_batch == 8
    create_app(fixed, max_batch=8, batch_workers=2)
    assert fixed._batcher is not None and fixed._batcher.workers == 2
    with pytest.raises(FaceforgeError, match="batch_workers must be an integer in"):
        create_app(fixed, max_batch=8, batch_workers=0)
    create_app(fixed, max_batch=1)  # serving again with other settings drops the old batcher
    assert fixed._batcher is None

    class Cuda:
        type = "cuda"

    class Runner:
        device = Cuda()

        def __call__(self, x):  # pragma: no cover - never run
            return x

    gpu = FaceRecognizer(EmbeddingModel(Runner(), cfg, "m", "t", "torch", "weights"), detector=None)
    assert auto_max_batch(gpu) == DEFAULT_MAX_BATCH


class Overlap:
    """``fn`` that counts the calls running at once; the first call waits (up to 3 s) for a second."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.running = 0
        self.most = 0
        self.calls = 0
        self.two = threading.Event()

    def __call__(self, x: np.ndarray) -> np.ndarray:
        with self.lock:
            self.running += 1
            self.calls += 1
            first = self.calls == 1
            self.most = max(self.most, self.running)
            if self.running >= 2:
                self.two.set()
        if first:
            self.two.wait(3.0)
        with self.lock:
            self.running -= 1
        return x * 2 + 1


@pytest.mark.parametrize("workers", [1, 2, 3])
def test_workers_bound_the_calls_running_at_once_and_rows_go_back_right(workers: int) -> None:
    fn = Overlap()
    b = MicroBatcher(fn, max_batch=2, workers=workers)
    inputs = [np.full((2, 3), float(i)) for i in range(8)]  # one batch per caller (max_batch 2)
    out: dict[int, np.ndarray] = {}
    for t in _run_callers(b, inputs, out):
        t.join(30)
    b.close()
    # Calls overlap only when a second worker exists, and never more of them than the workers.
    assert fn.most == 1 if workers == 1 else 2 <= fn.most <= workers
    for i, x in enumerate(inputs):
        np.testing.assert_array_equal(out[i], x * 2 + 1)
    assert b.batches == 8 and b.rows == 16
    assert not any(t.is_alive() for t in b._threads)
    with pytest.raises(FaceforgeError, match="closed"):
        b.submit(inputs[0])


def test_several_workers_answer_many_callers_exactly() -> None:
    b = MicroBatcher(lambda x: x * 2 + 1, max_batch=5, workers=3)
    rng = np.random.default_rng(1)
    inputs = [rng.normal(size=(int(rng.integers(1, 4)), 4)) for _ in range(60)]
    out: dict[int, np.ndarray] = {}
    for t in _run_callers(b, inputs, out):
        t.join(30)
    b.close()
    assert len(out) == 60
    for i, x in enumerate(inputs):
        np.testing.assert_array_equal(out[i], x * 2 + 1)
    assert b.rows == sum(len(x) for x in inputs) and b.batches <= 60


@pytest.mark.parametrize("bad", [0, 65, 1.5, True])
def test_workers_must_be_a_small_positive_integer(bad) -> None:
    with pytest.raises(FaceforgeError, match="workers must be an integer"):
        MicroBatcher(lambda x: x, workers=bad)
