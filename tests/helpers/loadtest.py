"""A bounded load generator for the service: N requests, C in flight, latency percentiles; and the
decompression-bomb attack of ``docs/security.md`` against a service in another process.

Not part of the package (a test and benchmark tool): used by ``tests/serve`` (the acceptance load test),
``tests/security`` and ``benchmarks/serve_load.py``, imported as ``loadtest`` (``tests/helpers`` is on
pytest's ``pythonpath``; the benchmark puts it on ``sys.path`` itself).

Closed-loop: C worker threads each send their next request as soon as the previous one answered, so the
offered load adapts to the server (no coordinated-omission correction is needed or claimed: this measures
service time under C concurrent clients, not latency at a fixed arrival rate). Each distinct request's
multipart body is encoded once and re-sent as bytes, so the client's own work per request stays small.

:class:`LoadProcess` runs :func:`run_load` in a separate (spawned) Python process, as a real client
would be: a load generator in the server's process competes with it for the GIL and skews the figures.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = [
    "AttackResult",
    "LoadProcess",
    "LoadRequest",
    "LoadResult",
    "flat_jpeg",
    "header_only_jpeg",
    "process_rss",
    "run_attack",
    "run_load",
]


@dataclass
class LoadRequest:
    """One multipart POST: ``files`` as ``{field: (filename, bytes, content type)}``, form ``data``."""

    path: str
    files: dict[str, tuple[str, bytes, str]]
    data: dict[str, str] = field(default_factory=dict)
    #: optional check of the decoded JSON body; False counts the request as failed
    check: Callable[[dict[str, Any]], bool] | None = None


@dataclass
class LoadResult:
    """Latencies (seconds) of the successful requests, failures as ``"path: reason"``, wall time."""

    latencies: list[float]
    failures: list[str]
    wall_s: float
    concurrency: int

    @property
    def n(self) -> int:
        """Requests sent."""
        return len(self.latencies) + len(self.failures)

    def percentile(self, q: float) -> float:
        """Latency percentile ``q`` (0–100) in milliseconds (linear interpolation, numpy's default)."""
        if not self.latencies:
            return float("nan")
        return float(np.percentile(np.asarray(self.latencies) * 1e3, q))

    @property
    def rps(self) -> float:
        """Completed requests per second of wall time."""
        return self.n / self.wall_s if self.wall_s > 0 else float("nan")

    def summary(self) -> str:
        """One line: counts, req/s and p50/p95/p99/max latency."""
        mx = max(self.latencies) * 1e3 if self.latencies else float("nan")
        return (
            f"{self.n} requests, {self.concurrency} concurrent, {len(self.failures)} failed | "
            f"{self.rps:.1f} req/s | latency ms p50 {self.percentile(50):.1f}  "
            f"p95 {self.percentile(95):.1f}  p99 {self.percentile(99):.1f}  max {mx:.1f}"
        )


def run_load(
    base_url: str,
    requests: Sequence[LoadRequest],
    *,
    n_requests: int = 200,
    concurrency: int = 8,
    api_key: str | None = None,
    timeout_s: float = 60.0,
) -> LoadResult:
    """Send ``n_requests`` (cycling through ``requests``) with ``concurrency`` in flight; never raises
    for a failed request (it is recorded), so a caller can assert "zero failures" and print why."""
    import httpx

    if not requests:
        raise ValueError("run_load needs at least one LoadRequest")
    if n_requests < 1 or concurrency < 1:
        raise ValueError(f"n_requests and concurrency must be >= 1, got {n_requests}, {concurrency}")
    headers = {"X-API-Key": api_key} if api_key else {}
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    latencies: list[float] = []
    failures: list[str] = []

    with httpx.Client(base_url=base_url, headers=headers, timeout=timeout_s, limits=limits) as client:
        # The multipart body of each distinct request, encoded once: (content type, bytes).
        bodies = []
        for req in requests:
            built = client.build_request("POST", req.path, files=req.files, data=req.data)
            bodies.append(({"content-type": built.headers["content-type"]}, built.read()))

        def one(i: int) -> tuple[float | None, str | None]:
            req = requests[i % len(requests)]
            ctype, body = bodies[i % len(requests)]
            t0 = time.perf_counter()
            try:
                resp = client.post(req.path, content=body, headers=ctype)
                dt = time.perf_counter() - t0
                if resp.status_code != 200:
                    return None, f"{req.path}: HTTP {resp.status_code} {resp.text[:200]}"
                if req.check is not None and not req.check(resp.json()):
                    return None, f"{req.path}: response failed its check: {resp.text[:200]}"
                return dt, None
            except Exception as e:  # a load test records every kind of failure instead of stopping
                return None, f"{req.path}: {type(e).__name__}: {e}"

        t_start = time.perf_counter()
        with ThreadPoolExecutor(max_workers=concurrency) as pool:
            for dt, err in pool.map(one, range(n_requests)):
                if err is None:
                    latencies.append(dt)
                else:
                    failures.append(err)
        wall = time.perf_counter() - t_start
    return LoadResult(latencies, failures, wall, concurrency)


class LoadProcess:
    """``with LoadProcess() as lp: lp.run_load(url, requests, ...)``: :func:`run_load` in one child
    process (``python loadtest.py --client``), kept for every call (its start-up is paid once), so the
    client threads do not share the server's GIL. Arguments and results travel by pickle over its
    stdin/stdout (a ``check`` must be a module-level function)."""

    def __init__(self) -> None:
        import os
        import subprocess
        import sys

        self._proc = subprocess.Popen(
            [sys.executable, __file__, "--client"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env={**os.environ, "OMP_NUM_THREADS": "1"},
        )

    def run_load(self, base_url: str, requests: Sequence[LoadRequest], **kw: Any) -> LoadResult:
        """:func:`run_load` with these arguments, in the child process."""
        import pickle

        if self._proc.stdin is None or self._proc.stdout is None:
            raise RuntimeError("the load process is closed")
        pickle.dump((base_url, list(requests), kw), self._proc.stdin)
        self._proc.stdin.flush()
        try:
            out = pickle.load(self._proc.stdout)
        except EOFError:
            raise RuntimeError(f"the load process exited (status {self._proc.wait()})") from None
        if isinstance(out, BaseException):
            raise out
        return out

    def close(self) -> None:
        """Stop the child process (it exits when its stdin closes)."""
        if self._proc.stdin is not None:
            self._proc.stdin.close()
        self._proc.wait(30)

    def __enter__(self) -> LoadProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _client_child() -> None:
    """``python loadtest.py --client``: answer each pickled ``(url, requests, kwargs)`` on stdin with the
    pickled :class:`LoadResult` (or the exception) on stdout, until stdin closes."""
    import pickle
    import sys

    while True:
        try:
            base_url, requests, kw = pickle.load(sys.stdin.buffer)
        except EOFError:
            return
        try:
            out: Any = run_load(base_url, requests, **kw)
        except Exception as e:  # the parent re-raises it
            out = e
        pickle.dump(out, sys.stdout.buffer)
        sys.stdout.buffer.flush()


# --------------------------------------------------------------------------------------------------
# attack: decompression bombs against a service in another process (tests/security, benchmarks)


def flat_jpeg(width: int, height: int, quality: int = 5) -> bytes:
    """A valid baseline JPEG of one flat grey: small on the wire (~40 KB per 10 MP), ``width × height``
    when decoded."""
    import io

    from PIL import Image

    im = Image.new("L", (width, height), 128)
    buf = io.BytesIO()
    im.save(buf, format="JPEG", quality=quality, optimize=True)
    del im
    return buf.getvalue()


def header_only_jpeg(width: int, height: int) -> bytes:
    """A JPEG whose header declares ``width × height`` but whose data ends after a few bytes."""
    import io
    import struct

    from PIL import Image

    buf = io.BytesIO()
    Image.new("L", (16, 16), 128).save(buf, format="JPEG", quality=50)
    data = bytearray(buf.getvalue())
    sof = data.find(b"\xff\xc0")
    struct.pack_into(">HH", data, sof + 5, height, width)
    sos = data.find(b"\xff\xda")
    return bytes(data[: sos + 20])


def process_rss(pid: int) -> int:
    """Resident set size of process ``pid`` in bytes (Linux ``/proc``; 0 elsewhere)."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


@dataclass
class AttackResult:
    """What :func:`run_attack` measured: status codes and seconds of every attack and normal request,
    the server's RSS before, at its peak during, and after the attack (bytes)."""

    attack: list[tuple[int, float]]
    normal: list[tuple[int, float]]
    rss_start: int
    rss_peak: int
    rss_after: int
    wall_s: float
    health: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> str:
        """One paragraph of the figures."""
        from collections import Counter

        codes = Counter(c for c, _ in self.attack)
        worst = max((t for _, t in self.attack), default=float("nan"))
        ok = sum(1 for c, _ in self.normal if c == 200)
        return (
            f"attack: {len(self.attack)} requests, status {dict(sorted(codes.items()))}, slowest answer "
            f"{worst:.2f} s | normal requests interleaved: {ok}/{len(self.normal)} answered 200 | server RSS "
            f"{self.rss_start / 2**20:.0f} MiB before, peak {self.rss_peak / 2**20:.0f} MiB, "
            f"{self.rss_after / 2**20:.0f} MiB after | {self.wall_s:.1f} s"
        )


def run_attack(
    base_url: str,
    server_pid: int,
    attack: Sequence[LoadRequest],
    normal: Sequence[LoadRequest],
    *,
    concurrency: int = 16,
    normal_every_s: float = 0.25,
    settle_s: float = 3.0,
    api_key: str | None = None,
    timeout_s: float = 60.0,
) -> AttackResult:
    """Send every ``attack`` request at once (``concurrency`` in flight) while ``normal`` requests go
    one at a time beside them; sample the server's RSS throughout and ``settle_s`` after."""
    import threading

    import httpx

    headers = {"X-API-Key": api_key} if api_key else {}
    rss_start = process_rss(server_pid)
    peak = [rss_start]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], process_rss(server_pid))
            time.sleep(0.01)

    def post(client: Any, req: LoadRequest) -> tuple[int, float]:
        t0 = time.perf_counter()
        try:
            r = client.post(req.path, files=req.files, data=req.data)
            return r.status_code, time.perf_counter() - t0
        except Exception:  # a dropped connection counts as a failure (status 0)
            return 0, time.perf_counter() - t0

    normal_out: list[tuple[int, float]] = []

    def normals(client: Any) -> None:
        i = 0
        while not done.is_set() and normal:
            normal_out.append(post(client, normal[i % len(normal)]))
            i += 1
            time.sleep(normal_every_s)

    limits = httpx.Limits(max_connections=concurrency + 2, max_keepalive_connections=concurrency + 2)
    t_start = time.perf_counter()
    with httpx.Client(base_url=base_url, headers=headers, timeout=timeout_s, limits=limits) as client:
        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        side = threading.Thread(target=normals, args=(client,), daemon=True)
        side.start()
        with ThreadPoolExecutor(max_workers=concurrency) as pool:
            attack_out = list(pool.map(lambda r: post(client, r), attack))
        done.set()
        side.join(timeout_s)
        sampler.join(5)
        if normal:  # one more after the attack: the service is still fine
            normal_out.append(post(client, normal[0]))
        wall = time.perf_counter() - t_start
        time.sleep(settle_s)
        health = client.get("/healthz").json()
    return AttackResult(attack_out, normal_out, rss_start, peak[0], process_rss(server_pid), wall, health)


def _serve_child(argv: Sequence[str] | None = None) -> None:
    """``python tests/helpers/loadtest.py``: serve a randomly initialised model on 127.0.0.1 (port 0),
    print ``PORT <n>`` and serve until stdin closes. The process the attack tests and benchmark watch."""
    import argparse
    import sys

    ap = argparse.ArgumentParser(description=_serve_child.__doc__)
    ap.add_argument("--max-decode-mb", type=float, default=512.0)
    ap.add_argument("--max-pixels", type=int, default=40_000_000)
    ap.add_argument("--decode-max-side", type=int, default=2048)
    ap.add_argument("--decode-wait-s", type=float, default=5.0)
    ap.add_argument("--detector", default="none", help="a detector model file, or none (finds no face)")
    args = ap.parse_args(argv)

    import torch

    from faceforge.align.detectors.base import Detector
    from faceforge.infer import FaceRecognizer
    from faceforge.serve.app import create_app, describe_limits
    from faceforge.serve.server import BackgroundServer

    torch.set_num_threads(1)

    class NoFaces(Detector):
        name = "none-found"

        def _detect(self, rgb: np.ndarray) -> list[Any]:
            return []

    detector: Any = NoFaces() if args.detector == "none" else args.detector
    import logging

    logging.getLogger("faceforge.infer.recognizer").setLevel(logging.ERROR)
    rec = FaceRecognizer.from_name("ghostfacenetv1", detector=detector, threshold=0.3)
    app = create_app(
        rec,
        max_pixels=args.max_pixels,
        max_decode_bytes=int(args.max_decode_mb * 2**20),
        decode_max_side=args.decode_max_side or None,
        decode_wait_s=args.decode_wait_s,
    )
    with BackgroundServer(app) as srv:
        print(f"faceforge: {describe_limits(app.state.limits)}", file=sys.stderr, flush=True)
        print(f"PORT {srv.port}", flush=True)
        sys.stdin.read()  # until the parent closes the pipe


if __name__ == "__main__":
    import sys as _sys

    if _sys.argv[1:] == ["--client"]:
        # imported as ``loadtest`` (this directory is sys.path[0]): pickled classes match the parent's
        from loadtest import _client_child as _client

        _client()
    else:
        _serve_child()
