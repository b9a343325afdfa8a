"""Device presets: choose precision, loader workers and gradient accumulation from the hardware, for the
config values left at ``auto`` only. :func:`choose_preset` uses the GPU table :data:`GPU_PRESETS`, or on
CPU :func:`choose_cpu_precision` (bf16 only with native units, :func:`cpu_bf16_support`, and a measured
:func:`probe_train_step` speed-up); :func:`apply_preset` writes the choice into the config. Details:
docs/training.md, "Device presets" and "Presets".
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from faceforge.errors import FaceforgeError

__all__ = [
    "GPU_PRESETS",
    "MIN_BF16_SPEEDUP",
    "PROBE_SECONDS",
    "Bf16Probe",
    "CpuPrecision",
    "DeviceInfo",
    "GpuPreset",
    "Preset",
    "apply_preset",
    "choose_cpu_precision",
    "choose_preset",
    "cpu_bf16_support",
    "detect_device",
    "gpu_preset",
    "probe_train_step",
    "time_fp32_vs_bf16",
]

MIN_BF16_SPEEDUP = 1.3  # bf16 must be this much faster than fp32 to be chosen on CPU
PROBE_SECONDS = 5.0  # wall-clock budget of one probe


@dataclass(frozen=True)
class DeviceInfo:
    """What the preset looks at: the accelerator type and, for a GPU, its model and memory."""

    kind: str  # "cuda" or "cpu"
    name: str
    capability: tuple[int, int] = (0, 0)
    memory_gib: float = 0.0
    count: int = 0  # visible GPUs
    cpus: int = 1
    cpu_bf16: str | None = None  # the CPU's native bf16 units ("AMX-BF16, AVX512-BF16"), None: none


@dataclass(frozen=True)
class Preset:
    """The chosen values and one line explaining them."""

    precision: str
    num_workers: int
    accumulate_grad_batches: int
    summary: str
    tf32: bool = False
    cudnn_benchmark: bool = False


@dataclass(frozen=True)
class GpuPreset:
    """One row of the GPU table: what a GPU model trains with (``None``: the generic rule)."""

    name: str
    precision: str
    num_workers: int | None
    accumulate_grad_batches: int | None


#: rows tried in order by :func:`gpu_preset`
GPU_PRESETS: tuple[tuple[Callable[[DeviceInfo], bool], GpuPreset], ...] = (
    (lambda i: "A100" in i.name and i.memory_gib >= 60, GpuPreset("A100 80 GB", "bf16-mixed", 16, 1)),
    (lambda i: "A100" in i.name, GpuPreset("A100 40 GB", "bf16-mixed", 8, 2)),
    (lambda i: "3090" in i.name, GpuPreset("RTX 3090 24 GB", "16-mixed", 4, 4)),
    (lambda i: i.capability >= (8, 0), GpuPreset("Ampere or newer", "bf16-mixed", None, None)),
    (lambda i: True, GpuPreset("pre-Ampere", "16-mixed", 4, 4)),
)


def gpu_preset(info: DeviceInfo) -> GpuPreset:
    """The first row of :data:`GPU_PRESETS` that ``info`` matches."""
    return next(row for match, row in GPU_PRESETS if match(info))


@dataclass(frozen=True)
class Bf16Probe:
    """fp32 vs bf16-autocast throughput of the same steps (the fastest step of each is kept)."""

    what: str  # e.g. "iresnet50 fwd+bwd 112x112 batch 2"
    fp32_img_s: float
    bf16_img_s: float
    seconds: float  # wall time of the whole probe (model built, warm-up and timed steps)
    cosine: float | None = None  # smallest cosine of bf16 to fp32 embeddings (inference probe)

    @property
    def speedup(self) -> float:
        """bf16 img/s over fp32 img/s (> 1: bf16 is faster)."""
        return self.bf16_img_s / self.fp32_img_s

    def describe(self) -> str:
        """``"<what>: fp32 5.9 img/s, bf16 13.7 img/s = 2.33x (probe 4.1 s)"``."""
        return (
            f"{self.what}: fp32 {_ips(self.fp32_img_s)} img/s, bf16 {_ips(self.bf16_img_s)} img/s = "
            f"{self.speedup:.2f}x (probe {self.seconds:.1f} s)"
        )


def _ips(v: float) -> str:
    """Three significant digits without an exponent: 5.9, 95.5, 584, 1234."""
    return f"{v:.3g}" if v < 1000 else f"{v:.0f}"


@dataclass(frozen=True)
class CpuPrecision:
    """The CPU precision decision: bf16 autocast or not, and why (what was measured)."""

    bf16: bool
    reason: str
    probe: Bf16Probe | None = None


def _cpuinfo_flags(path: str = "/proc/cpuinfo") -> set[str] | None:
    """The ``flags`` of the first processor in ``/proc/cpuinfo`` (Linux), or None when unreadable."""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.partition(":")[2].split())
    except OSError:
        return None
    return None


def _torch_cpu_query(name: str) -> bool | None:
    """``torch.cpu.<name>()`` (private, cpuinfo-based queries of torch >= 2.3), None when absent."""
    import torch

    fn = getattr(torch.cpu, name, None)
    if fn is None:
        return None
    try:
        return bool(fn())
    except (RuntimeError, AttributeError):
        return None


def cpu_bf16_support() -> str | None:
    """The CPU's native bf16 units, e.g. ``"AMX-BF16, AVX512-BF16"``, or None when it has none.

    The one function that asks the hardware (tests replace it). Two sources are asked: the Linux
    ``/proc/cpuinfo`` flags ``amx_bf16`` / ``avx512_bf16`` (what the CPU, or the hypervisor, offers)
    and torch's own queries ``torch.cpu._is_amx_tile_supported`` / ``_is_avx512_bf16_supported``
    (what its kernels may use: AMX also needs the kernel's per-process permission, which torch
    requests). A unit counts when every source that answers says yes. Without these units the
    oneDNN bf16 kernels fall back to converting through fp32 (Intel, "oneDNN: Data types — bf16",
    https://oneapi-src.github.io/oneDNN/dev_guide_data_types.html).
    """
    flags = _cpuinfo_flags()
    units = []
    for unit, flag, query in (
        ("AMX-BF16", "amx_bf16", "_is_amx_tile_supported"),
        ("AVX512-BF16", "avx512_bf16", "_is_avx512_bf16_supported"),
    ):
        said = (None if flags is None else flag in flags, _torch_cpu_query(query))
        votes = [v for v in said if v is not None]
        if votes and all(votes):
            units.append(unit)
    return ", ".join(units) or None


def time_fp32_vs_bf16(
    make_step: Callable[[int], Callable[[bool], object]],
    max_batch: int,
    seconds: float = PROBE_SECONDS,
    max_pairs: int = 4,
    clock: Callable[[], float] = time.perf_counter,
) -> tuple[int, float, float]:
    """Time the same step in fp32 and in bf16 within ``seconds``; returns ``(batch, fp32 s, bf16 s)``.

    ``make_step(batch)`` builds a step on ``batch`` inputs; ``step(bf16)`` runs it once. One fp32
    step of 2 inputs (also the fp32 warm-up) sizes the batch so that about 6 steps fit the rest of
    the budget (at most ``max_batch``); after one warm-up step per precision at that batch, fp32 and
    bf16 steps alternate (so a busy machine slows both alike) while the next pair fits the budget,
    at least once and at most ``max_pairs`` times; the fastest step of each precision is returned.
    Raises RuntimeError when that first step leaves no room for a bf16 warm-up and one timed pair,
    or when the budget is spent before the first timed pair (the machine slowed down meanwhile): at
    most one pair runs past ``seconds``. ``clock`` is the time source (tests pass a fake one).
    """

    def timed(step: Callable[[bool], object], bf16: bool) -> float:
        t = clock()
        step(bf16)
        return clock() - t

    start = clock()
    small = max(1, min(2, max_batch))  # 2: BatchNorm1d over the embedding needs 2 samples in training
    step = make_step(small)
    t_small = timed(step, False)
    left = seconds - (clock() - start)
    if 3 * t_small > left:  # still to come: a bf16 warm-up and one timed pair
        raise RuntimeError(
            f"one fp32 step of {small} inputs took {t_small:.2f} s: no room for a fair comparison "
            f"within the {seconds:.1f} s probe"
        )
    batch = max(small, min(max_batch, int(left / (6 * t_small / small))))

    def in_time(what: str) -> None:
        if clock() - start >= seconds:  # the machine slowed down after the batch was sized
            raise RuntimeError(f"the {seconds:.1f} s probe ran out before {what} (busy machine?)")

    if batch != small:
        step = make_step(batch)
        timed(step, False)
        in_time("the bf16 warm-up")
    timed(step, True)  # bf16 warm-up (oneDNN creates its bf16 kernels on the first call)
    in_time("a timed pair")
    best32 = best16 = math.inf
    for _ in range(max_pairs):
        a, b = timed(step, False), timed(step, True)
        best32, best16 = min(best32, a), min(best16, b)
        if clock() - start + a + b > seconds:
            break
    return batch, best32, best16


def probe_train_step(cfg: dict[str, Any], seconds: float = PROBE_SECONDS) -> Bf16Probe:
    """fp32 vs bf16-autocast training steps (fwd + bwd) of ``cfg``'s backbone on this CPU.

    The backbone is built as training builds it (``model.backbone`` at ``data.image_size``, channels
    last when configured), on random inputs of its input size, at a batch of at most
    ``data.batch_size`` sized by :func:`time_fp32_vs_bf16`; the global RNG is left as it was. bf16
    runs under ``torch.autocast("cpu", dtype=torch.bfloat16)``, which is what Lightning's
    ``bf16-mixed`` does on CPU (https://pytorch.org/docs/stable/amp.html, "CPU Ops that can autocast
    to bfloat16"; Lightning ``MixedPrecision`` plugin).
    """
    import torch

    from faceforge.models.build import build_backbone

    start = time.perf_counter()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = build_backbone(cfg["model"]["backbone"], cfg["data"]["image_size"]).train()
    size = getattr(getattr(model, "face_cfg", None), "input_size", None)
    h, w = size or (int(cfg["data"]["image_size"]),) * 2
    channels_last = bool(cfg["trainer"].get("channels_last"))
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model.to(memory_format=fmt)
    gen = torch.Generator().manual_seed(0)

    def make_step(batch: int) -> Callable[[bool], object]:
        x = torch.randn(batch, 3, h, w, generator=gen).contiguous(memory_format=fmt)

        def step(bf16: bool) -> object:
            model.zero_grad(set_to_none=True)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                loss = model(x).float().square().mean()
            loss.backward()
            return loss

        return step

    budget = seconds - (time.perf_counter() - start)
    batch, t32, t16 = time_fp32_vs_bf16(make_step, min(int(cfg["data"]["batch_size"]), 32), budget)
    name = cfg["model"]["backbone"].get("name", "backbone")
    return Bf16Probe(
        f"{name} fwd+bwd {h}x{w} batch {batch}", batch / t32, batch / t16, time.perf_counter() - start
    )


def choose_cpu_precision(
    units: str | None,
    probe: Callable[[], Bf16Probe] | None,
    min_speedup: float = MIN_BF16_SPEEDUP,
) -> CpuPrecision:
    """bf16 on CPU only with native units (``units``, see :func:`cpu_bf16_support`) and a probe
    that measures bf16 at least ``min_speedup`` times faster; the probe runs only with such units.
    A probe that fails (RuntimeError/ValueError, e.g. an op without a bf16 CPU kernel) means fp32.
    """
    if not units:
        return CpuPrecision(False, "no native bf16 on this CPU")
    if probe is None:
        return CpuPrecision(False, f"{units}; not probed")
    try:
        r = probe()
    except (RuntimeError, ValueError) as e:
        return CpuPrecision(False, f"{units}; no bf16 probe result: {e}")
    if r.speedup >= min_speedup:
        return CpuPrecision(True, f"{units}; {r.describe()} >= {min_speedup:g}x", r)
    return CpuPrecision(False, f"{units}; {r.describe()} < {min_speedup:g}x", r)


def detect_device(accelerator: str = "auto") -> DeviceInfo:
    """Inspect ``torch.cuda`` (device 0) unless the accelerator is forced to CPU; on CPU, its bf16 units."""
    import torch

    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        return DeviceInfo(
            "cuda", p.name, (p.major, p.minor), p.total_memory / 2**30, torch.cuda.device_count(), cpus
        )
    return DeviceInfo("cpu", "CPU", cpus=cpus, cpu_bf16=cpu_bf16_support())


def _devices_per_node(devices: Any, info: DeviceInfo) -> int:
    if isinstance(devices, int) and not isinstance(devices, bool):
        return max(1, devices if devices > 0 else max(1, info.count))
    if isinstance(devices, (list, tuple)):
        return max(1, len(devices))
    if devices in ("auto", "-1", -1):
        return max(1, info.count) if info.kind == "cuda" else 1
    try:
        return max(1, int(devices))
    except (TypeError, ValueError):
        return 1


def choose_preset(
    cfg: dict[str, Any], info: DeviceInfo, probe: Callable[[], Bf16Probe] | None = None
) -> Preset:
    """Resolve the ``auto`` values of ``cfg`` for the device ``info`` (nothing in ``cfg`` is changed).

    ``probe`` measures fp32 vs bf16 on this CPU (:func:`probe_train_step` in :func:`apply_preset`); it
    is called only for ``precision: auto`` on a one-process CPU run whose CPU has native bf16 units.
    Without it such a CPU keeps ``32-true`` ("not probed"). With several processes no probe runs:
    they share the cores, and every rank must pick the same precision.
    """
    t, d = cfg["trainer"], cfg["data"]
    local = _devices_per_node(t["devices"], info)
    world = local * int(t["num_nodes"])
    row = gpu_preset(info) if info.kind == "cuda" else None
    if d["num_workers"] != "auto":
        workers = int(d["num_workers"])
    elif row is not None:
        # The row's count, but never more processes than this node's cores per GPU.
        workers = max(1, min(row.num_workers or 8, info.cpus // local))
    else:
        workers = 0 if d["cache"] else max(0, min(4, info.cpus // 2))
    per_step = int(d["batch_size"]) * world
    gb = d["global_batch_size"]
    if t["accumulate_grad_batches"] != "auto":
        accum = int(t["accumulate_grad_batches"])
        if gb is not None and per_step * accum != gb:
            raise FaceforgeError(
                f"data.global_batch_size={gb} != data.batch_size {d['batch_size']} x {world} devices x "
                f"trainer.accumulate_grad_batches {accum}; set one of them to auto/null"
            )
    elif gb is None:
        accum = (row.accumulate_grad_batches or 1) if row is not None else 1
    else:
        if gb % per_step:
            raise FaceforgeError(
                f"data.global_batch_size={gb} is not a multiple of data.batch_size {d['batch_size']} x "
                f"{world} devices = {per_step}"
            )
        accum = gb // per_step
    if t["precision"] != "auto":
        precision = t["precision"]
        why_p = "as configured"
    elif row is not None:
        precision = row.precision
        why_p = f"{row.name}, compute capability {info.capability[0]}.{info.capability[1]}"
    else:
        if info.cpu_bf16 and world > 1:
            cp = CpuPrecision(False, f"{info.cpu_bf16}; not probed with {world} processes sharing the CPU")
        else:
            cp = choose_cpu_precision(info.cpu_bf16, probe)
        precision, why_p = ("bf16-mixed" if cp.bf16 else "32-true"), cp.reason
    if info.kind == "cuda":
        dev = (
            f"{info.name} (cc {info.capability[0]}.{info.capability[1]}, {info.memory_gib:.0f} GiB) x {world}"
        )
    else:
        dev = f"CPU ({info.cpus} cores) x {world}"
    ampere = info.kind == "cuda" and info.capability >= (8, 0)
    tf32 = ampere if t.get("tf32", "auto") == "auto" else bool(t["tf32"])
    bench = t.get("cudnn_benchmark", "auto")
    # Deterministic runs need deterministic kernels: autotuning may pick different ones per run.
    benchmark = (ampere and not t.get("deterministic")) if bench == "auto" else bool(bench)
    summary = (
        f"preset: {dev} -> precision {precision} ({why_p}), num_workers {workers}, "
        f"accumulate_grad_batches {accum} "
        f"(global batch {per_step * accum} = {d['batch_size']} x {world} x {accum})"
    )
    if info.kind == "cuda":
        summary += f", tf32 {'on' if tf32 else 'off'}, cudnn.benchmark {'on' if benchmark else 'off'}"
    return Preset(precision, workers, accum, summary, tf32, benchmark)


def apply_preset(
    cfg: dict[str, Any], info: DeviceInfo | None = None, probe: Callable[[], Bf16Probe] | None = None
) -> Preset:
    """Choose the preset for this machine and write its values into ``cfg`` in place.

    On a CPU with native bf16 units and ``precision: auto`` the probe defaults to
    :func:`probe_train_step` of ``cfg`` (<= 5 s).
    """
    if info is None:
        accel = cfg["trainer"]["accelerator"]
        info = detect_device(accel if isinstance(accel, str) else "auto")
    if probe is None:

        def probe() -> Bf16Probe:
            return probe_train_step(cfg)

    p = choose_preset(cfg, info, probe)
    cfg["trainer"]["precision"] = p.precision
    cfg["data"]["num_workers"] = p.num_workers
    cfg["trainer"]["accumulate_grad_batches"] = p.accumulate_grad_batches
    cfg["trainer"]["tf32"] = p.tf32
    cfg["trainer"]["cudnn_benchmark"] = p.cudnn_benchmark
    return p
