"""Model processes (faceforge.infer.model_process): the micro-batcher's model calls run in spawned
children with a pickled copy of the model. They must give the embeddings of the in-process path, survive
a child's death with a one-line error, refuse models that cannot move, and end when closed."""

from __future__ import annotations

import os
import threading
import time

import numpy as np
import pytest
from concurrent_embed import embed_each_in_its_own_thread

from faceforge.errors import FaceforgeError


def _net():
    import torch
    from torch import nn

    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.PReLU(8), nn.Conv2d(8, 8, 3, stride=2),
        nn.BatchNorm2d(8), nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(32, 16),
    )  # fmt: skip
    with torch.no_grad():  # BatchNorm statistics that are not the identity, so folding them matters
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
    return net.eval()


@pytest.fixture(scope="module")
def rec():
    """A recognizer of a small conv net through the real TorchRunner (BatchNorm-folding rewrite on)."""
    from faceforge.infer.loading import EmbeddingModel, torch_runner
    from faceforge.infer.recognizer import FaceRecognizer
    from faceforge.models.face_cfg import FaceConfig

    cfg = FaceConfig(input_size=(32, 32), template="none", embedding_size=16)
    run = torch_runner(_net(), "cpu", input_size=(32, 32))
    r = FaceRecognizer(EmbeddingModel(run, cfg, "small", "test", "torch", "weights"), detector=None)
    yield r
    r.disable_batching()


def _crops(n: int, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)


def test_model_process_gives_the_in_process_embeddings_under_concurrent_callers(rec) -> None:
    crops = _crops(8)
    direct = rec.embed_crops(crops)
    batcher = rec.enable_batching(max_batch=8, process=True)
    try:
        procs = rec.batch_process
        assert procs is not None and len(procs.pids) == 1 and procs.pids[0] != os.getpid()
        got = embed_each_in_its_own_thread(rec, crops)
        assert batcher.rows == 8
        # the same float32 arithmetic in another process: equal up to the order of BLAS sums
        np.testing.assert_allclose(got, direct, rtol=1e-5, atol=1e-6)
        assert np.allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    finally:
        rec.disable_batching()
    assert rec.batch_process is None
    assert not any(_alive(p) for p in procs.pids)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    return True


def test_a_killed_model_process_fails_its_batch_in_one_line_and_the_next_batch_works(rec) -> None:
    crops = _crops(3, seed=2)
    direct = rec.embed_crops(crops)
    rec.enable_batching(max_batch=8, process=True)
    try:
        procs = rec.batch_process
        (pid,) = procs.pids
        os.kill(pid, 9)  # dead before the batch is sent or while it is computed: the same error
        with pytest.raises(FaceforgeError, match=rf"model process {pid} exited \(exit code -9\)") as e:
            rec.embed_crops(crops)
        assert "\n" not in str(e.value)
        np.testing.assert_allclose(rec.embed_crops(crops), direct, rtol=1e-5, atol=1e-6)
        assert procs.restarts == 1 and len(procs.pids) == 1 and procs.pids[0] != pid
    finally:
        rec.disable_batching()


def test_an_error_inside_the_model_process_reaches_the_caller_and_the_process_lives_on(rec) -> None:
    from faceforge.infer.model_process import ModelProcesses

    procs = ModelProcesses(rec.model.run, rec.face_cfg, True)
    try:
        (pid,) = procs.pids
        with pytest.raises(FaceforgeError, match="model process: FaceforgeError: crops must have 3 colour"):
            procs(np.zeros((2, 32, 32, 4), np.uint8))  # raised by the preprocessing in the child
        assert procs.pids == [pid]
        assert procs(_crops(2)).shape == (2, 16)
    finally:
        procs.close()
    with pytest.raises(FaceforgeError, match="closed"):
        procs(_crops(1))


def test_a_model_that_cannot_move_to_a_process_is_refused_with_the_reason() -> None:
    from faceforge.infer.model_process import ModelProcesses
    from faceforge.models.face_cfg import FaceConfig

    cfg = FaceConfig(input_size=(32, 32), template="none", embedding_size=4)
    lock = threading.Lock()  # like an ONNX Runtime session: state that does not pickle

    def run(x: np.ndarray) -> np.ndarray:
        with lock:
            return x[:, 0, 0, :4]

    with pytest.raises(FaceforgeError, match=r"cannot be moved to a model process .*batch_process off"):
        ModelProcesses(run, cfg, False)


def test_the_service_runs_torch_models_in_a_model_process_by_default_on_a_multicore_cpu(rec) -> None:
    pytest.importorskip("fastapi")
    from faceforge.serve.app import auto_batch_process, create_app

    assert auto_batch_process(rec) == ((os.cpu_count() or 1) >= 2)
    try:
        app = create_app(rec, max_batch=8, batch_process=True)
        assert rec.batch_process is not None and len(rec.batch_process.pids) == 1
        (pid,) = rec.batch_process.pids
        app2 = create_app(rec, max_batch=8, batch_process=False)  # a new app ends the old one's process
        assert rec.batch_process is None and rec._batcher is not None
        deadline = time.monotonic() + 10
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not _alive(pid)
        assert app.state.max_batch == app2.state.max_batch == 8
    finally:
        rec.disable_batching()


class _Unmovable:
    """A CPU runner that pickles in the parent but cannot be rebuilt in the child (as a network whose
    class lives in a script's ``__main__``): unpickling calls ``int("...")``, which raises."""

    def __init__(self) -> None:
        import torch

        self.device = torch.device("cpu")

    def __reduce__(self):
        return (int, ("defined in __main__",))

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return x.reshape(len(x), -1)[:, :4] + 1.0


def test_auto_falls_back_to_in_process_with_a_warning_but_on_fails(caplog) -> None:
    pytest.importorskip("fastapi")
    import logging

    from faceforge.infer.loading import EmbeddingModel
    from faceforge.infer.recognizer import FaceRecognizer
    from faceforge.models.face_cfg import FaceConfig
    from faceforge.serve.app import auto_batch_process, create_app

    cfg = FaceConfig(input_size=(32, 32), template="none", embedding_size=4)
    rec = FaceRecognizer(EmbeddingModel(_Unmovable(), cfg, "u", "t", "torch", "weights"), detector=None)
    try:
        with pytest.raises(FaceforgeError, match=r"could not load the model: ValueError: invalid literal"):
            create_app(rec, max_batch=8, batch_process=True)
        assert rec.batch_process is None and rec._batcher is None
        if not auto_batch_process(rec):
            pytest.skip("one CPU core: auto keeps every model in-process")
        with caplog.at_level(logging.WARNING, logger="faceforge.serve.app"):
            create_app(rec, max_batch=8)
        assert any("model process not used" in r.getMessage() for r in caplog.records)
        assert rec.batch_process is None and rec._batcher is not None
        assert rec.embed_crops(_crops(2)).shape == (2, 4)
    finally:
        rec.disable_batching()
