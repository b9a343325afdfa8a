"""Crop embedding (:func:`embed_aligned`: normalise, mirror, model, L2) and :class:`ModelProcesses`, which
runs it in child processes so that a service's model calls hold their own interpreter lock on their own
core while request threads parse HTTP, decode and align in the parent (the separate model workers of
TorchServe or Triton). Details and measurements: docs/serve.md, "Model processes".
"""

from __future__ import annotations

import contextlib
import os
import pickle
import queue
import select
import signal
import struct
import subprocess
import sys
import threading
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from faceforge.errors import FaceforgeError
from faceforge.models.face_cfg import FaceConfig, preprocess

__all__ = ["CHUNK", "ModelProcesses", "embed_aligned", "normalise_rows", "on_multicore_cpu"]

#: crops per model call inside :func:`embed_aligned` (bounds the activations of one call)
CHUNK = 64
#: how long a new child may take to import torch and unpickle the model before start-up fails
START_TIMEOUT_S = 180.0

_FRAME = struct.Struct("<Q")  # every message: its length, then its bytes
_CROPS = struct.Struct("<4I")  # parent -> child: N, H, W, C of the uint8 crops that follow
_REPLY = struct.Struct("<B2I")  # child -> parent: status (0 ok, 1 error), N, E; then float32 rows or text


def normalise_rows(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm (float32); non-finite values are an error (an unusable model)."""
    if not np.isfinite(x).all():
        raise FaceforgeError("the model produced NaN or infinite embeddings; the model file is unusable")
    n = np.linalg.norm(x, axis=1, keepdims=True)
    return (x / np.maximum(n, 1e-12)).astype(np.float32)


def on_multicore_cpu(run: Any, unknown_is_cpu: bool = True) -> bool:
    """Whether a model's ``run`` (a :class:`~faceforge.infer.loading.TorchRunner` has a ``device``)
    computes on a CPU of this machine with at least two cores, where a second model call can have a
    core of its own. ``unknown_is_cpu``: what a runner without a ``device`` counts as."""
    device = getattr(run, "device", None)
    cpu = unknown_is_cpu if device is None else getattr(device, "type", None) == "cpu"
    return bool(cpu) and (os.cpu_count() or 1) >= 2


def embed_aligned(
    run: Callable[[np.ndarray], np.ndarray], face_cfg: FaceConfig, flip: bool, crops: np.ndarray
) -> np.ndarray:
    """L2-normalised embeddings of aligned uint8 RGB crops ``[N, H, W, 3]``: ``face_cfg``'s
    normalisation, then ``run`` — on the crops and their mirrors in one call when ``flip`` (flip-test
    fusion: the two embeddings are summed, as insightface's evaluation does)."""
    out = []
    for s in range(0, len(crops), CHUNK):
        x = preprocess(crops[s : s + CHUNK], face_cfg)
        if flip:
            # the crops and their mirrors in one call of 2N rows, not two calls of N: a small
            # model's call costs mostly dispatch, so this nearly halves it (docs/performance.md)
            n = len(x)
            e = run(np.concatenate([x, x[..., ::-1]]))
            e = e[:n] + e[n:]
        else:
            e = run(x)
        out.append(e)
    return normalise_rows(np.concatenate(out))


def _read_frame(f: Any) -> bytes | None:
    """One length-prefixed frame from a binary stream; None at end of stream."""
    head = f.read(_FRAME.size)
    if len(head) < _FRAME.size:
        return None
    (n,) = _FRAME.unpack(head)
    data = f.read(n)
    return data if len(data) == n else None


def _write_frame(f: Any, *parts: bytes) -> None:
    f.write(_FRAME.pack(sum(len(p) for p in parts)))
    for p in parts:
        f.write(p)
    f.flush()


def child_main() -> None:
    """The model process (started by :class:`ModelProcesses`): read the pickled model from
    stdin (trusted: the parent's own object, never a user's file), answer ready, then embed every frame
    of crops until end of input. Frames go both ways over stdin/stdout; anything else the libraries
    print goes to stderr."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent ends the child when it stops
    inp = os.fdopen(os.dup(0), "rb")
    out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # a stray print must not corrupt the frames
    try:
        first = _read_frame(inp)
        if first is None:
            return
        import torch

        threads, payload = struct.unpack_from("<I", first)[0], first[4:]
        torch.set_num_threads(max(1, threads))
        run, face_cfg, flip = pickle.loads(payload)
    except Exception as e:  # the parent reports it and does not start
        _write_frame(out, _REPLY.pack(1, 0, 0), f"{type(e).__name__}: {e}".encode())
        return
    _write_frame(out, _REPLY.pack(0, 0, 0))
    while (msg := _read_frame(inp)) is not None and msg:  # an empty frame: close()
        try:
            n, h, w, c = _CROPS.unpack_from(msg)
            crops = np.frombuffer(msg, np.uint8, n * h * w * c, _CROPS.size).reshape(n, h, w, c)
            emb = np.ascontiguousarray(embed_aligned(run, face_cfg, flip, crops), np.float32)
            reply = [_REPLY.pack(0, *emb.shape), emb.tobytes()]
        except Exception as e:  # the error belongs to the callers of this batch
            reply = [_REPLY.pack(1, 0, 0), f"{type(e).__name__}: {e}".encode()]
        try:
            _write_frame(out, *reply)
        except OSError:
            return  # the parent is gone


class _Child:
    """One model process (a fresh interpreter: nothing of the parent's ``__main__`` is imported, so
    a script without a ``__main__`` guard cannot start itself again) and the pipes to it."""

    def __init__(self, payload: bytes, threads: int) -> None:
        import faceforge

        env = dict(os.environ)
        # The child imports faceforge from where the parent did, even if that is not installed.
        root = str(Path(faceforge.__file__).resolve().parents[1])
        env["PYTHONPATH"] = os.pathsep.join([root, *filter(None, [env.get("PYTHONPATH")])])
        self.proc = subprocess.Popen(
            # -c, not -m: run as __main__ the module would be imported a second time by its package
            [sys.executable, "-c", "from faceforge.infer.model_process import child_main; child_main()"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env,
            start_new_session=True,  # Ctrl-C in a terminal goes to the server, which ends the child
        )  # fmt: skip
        self.pid = self.proc.pid
        try:
            _write_frame(self.proc.stdin, struct.pack("<I", max(1, threads)), payload)
        except OSError:
            raise FaceforgeError(
                f"the model process exited while starting (exit code {self._exit_code()})"
            ) from None
        ready, _, _ = select.select([self.proc.stdout], [], [], START_TIMEOUT_S)
        if not ready:
            self.kill()
            raise FaceforgeError(f"the model process did not start within {START_TIMEOUT_S:.0f} s")
        head = _read_frame(self.proc.stdout)
        if head is None:
            raise FaceforgeError(f"the model process exited while starting (exit code {self._exit_code()})")
        if _REPLY.unpack_from(head)[0]:
            self.kill()
            why = head[_REPLY.size :].decode(errors="replace")
            raise FaceforgeError(f"the model process could not load the model: {why}")

    def _exit_code(self) -> int | None:
        try:
            return self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            return None

    def embed(self, crops: np.ndarray) -> np.ndarray:
        crops = np.ascontiguousarray(crops, np.uint8)
        try:
            _write_frame(self.proc.stdin, _CROPS.pack(*crops.shape), crops.tobytes())
            msg = _read_frame(self.proc.stdout)
        except OSError:
            msg = None
        if msg is None:
            raise _Died(self._exit_code())
        status, n, e = _REPLY.unpack_from(msg)
        if status:
            raise FaceforgeError(f"model process: {msg[_REPLY.size :].decode(errors='replace')}")
        return np.frombuffer(msg, np.float32, n * e, _REPLY.size).reshape(n, e).copy()

    def close(self, timeout: float = 10.0) -> None:
        with contextlib.suppress(OSError, ValueError):
            _write_frame(self.proc.stdin, b"")
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            pass
        self.kill()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=5)
        for f in (self.proc.stdin, self.proc.stdout):
            with contextlib.suppress(OSError, ValueError):
                f.close()


class _Died(Exception):
    def __init__(self, code: int | None) -> None:
        super().__init__(code)
        self.code = code


def _close_all(children: list[_Child]) -> None:
    for c in children:
        c.close(timeout=2.0)


class ModelProcesses:
    """``fn(crops) -> embeddings`` of :func:`embed_aligned` computed in ``n`` child processes.

    Each call takes an idle child, so up to ``n`` calls run at once (one per
    :class:`~faceforge.infer.batching.MicroBatcher` worker). The children are fresh interpreters
    (``python -c "...child_main()"``, not forks) with ``threads`` torch threads each and
    get a pickled copy of ``run`` (a PyTorch runner; an object that does not pickle, such as an ONNX
    Runtime session, raises :class:`FaceforgeError` — ONNX Runtime releases the interpreter lock by
    itself, so threads suffice there). Crops go over a pipe as raw bytes, embeddings come back the
    same way. A child that dies (killed, out of memory) fails the calls of its batch with a one-line
    error; its slot starts a new child on the next call. :meth:`close` ends them; they also end with
    the parent.
    """

    def __init__(
        self,
        run: Callable[[np.ndarray], np.ndarray],
        face_cfg: FaceConfig,
        flip: bool,
        n: int = 1,
        threads: int = 1,
    ) -> None:
        if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= 64:
            raise FaceforgeError(f"model processes must be an integer in [1, 64], got {n!r}")
        self._spec = (run, face_cfg, bool(flip))
        payload = self._pickle()
        self.threads = int(threads)
        self.n = n
        # Idle slots: a live child, or None for a slot whose child is started on its next use.
        self._idle: queue.Queue[_Child | None] = queue.Queue()
        self._children: list[_Child] = []
        self._lock = threading.Lock()
        self._closed = False
        self.restarts = 0
        self._finalizer = weakref.finalize(self, _close_all, self._children)
        try:
            for _ in range(n):
                self._idle.put(self._start(payload))
        except BaseException:
            self._finalizer()
            raise

    def _pickle(self) -> bytes:
        # Pickled when a child starts, not kept: a copy of a large model's weights would stay in memory.
        try:
            return pickle.dumps(self._spec, protocol=pickle.HIGHEST_PROTOCOL)
        except Exception as e:  # any pickling failure means the same thing here
            raise FaceforgeError(
                f"this model ({type(self._spec[0]).__name__}) cannot be moved to a model process ({e}); "
                "serve it in-process (batch_process off)"
            ) from None

    def _start(self, payload: bytes | None = None) -> _Child:
        child = _Child(payload if payload is not None else self._pickle(), self.threads)
        with self._lock:
            self._children.append(child)
        return child

    @property
    def pids(self) -> list[int]:
        """Process ids of the live children (for monitoring and tests)."""
        with self._lock:
            return [c.pid for c in self._children if c.proc.poll() is None]

    def __call__(self, crops: np.ndarray) -> np.ndarray:
        if self._closed:
            raise FaceforgeError("the model processes are closed")
        child = self._idle.get()
        try:
            if self._closed:
                raise FaceforgeError("the model processes are closed")
            if child is None:
                child = self._start()  # a slot emptied by a crash; raises (slot stays empty) on failure
            return child.embed(crops)
        except _Died as d:
            with self._lock:
                self._children.remove(child)
            child.kill()
            self.restarts += 1
            pid, child = child.pid, None
            raise FaceforgeError(
                f"the model process {pid} exited (exit code {d.code}) during a batch of {len(crops)} "
                "crops; a new one starts with the next batch"
            ) from None
        finally:
            self._idle.put(child)

    def close(self) -> None:
        """End the children (a running batch finishes first); later calls raise."""
        if self._closed:
            return
        self._closed = True
        for _ in range(self.n):  # take every slot back, waiting for running batches
            with contextlib.suppress(queue.Empty):
                self._idle.get(timeout=60)
        self._finalizer()
        for _ in range(self.n):
            self._idle.put(None)  # wake any caller still waiting; it sees _closed
