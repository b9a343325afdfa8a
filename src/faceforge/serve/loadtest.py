"""A bounded load generator for the service: N requests, C in flight, latency percentiles.

Used by ``tests/serve`` (the acceptance load test) and ``benchmarks/serve_load.py``. Closed-loop: C
worker threads each send their next request as soon as the previous one answered, so the offered
load adapts to the server (no coordinated-omission correction is needed or claimed: this measures
service time under C concurrent clients, not latency at a fixed arrival rate).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["LoadRequest", "LoadResult", "run_load"]


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

        def one(i: int) -> tuple[float | None, str | None]:
            req = requests[i % len(requests)]
            t0 = time.perf_counter()
            try:
                resp = client.post(req.path, files=req.files, data=req.data)
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
