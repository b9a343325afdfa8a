"""Device presets: choose precision, loader workers and gradient accumulation from the hardware.

Only the config values left at ``auto`` are chosen; every other value is kept as written.

* precision: ``bf16-mixed`` on GPUs of compute capability >= 8.0 (Ampere, Hopper, Blackwell: bf16
  has fp32's exponent range, so no loss scaling and no overflow NaNs), ``16-mixed`` on older GPUs
  (Volta/Turing have fp16 tensor cores but no bf16), ``32-true`` on CPU.
* workers: on GPU ``min(8, cpus // local devices)`` processes per device (JPEG decoding keeps a
  GPU step fed); on CPU ``0`` when images are cached in memory (the step is the bottleneck and a
  worker only competes for the cores), else ``min(4, cpus // 2)``.
* accumulation: ``global_batch_size / (batch_size · devices · nodes)``, which must be a whole number;
  without ``global_batch_size``, 1. Keeping the global batch fixed keeps the optimizer-step schedule
  (and a resumed run) the same whatever the number of GPUs.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from faceforge.errors import FaceforgeError

__all__ = ["DeviceInfo", "Preset", "apply_preset", "choose_preset", "detect_device"]


@dataclass(frozen=True)
class DeviceInfo:
    """What the preset looks at: the accelerator type and, for a GPU, its model and memory."""

    kind: str  # "cuda" or "cpu"
    name: str
    capability: tuple[int, int] = (0, 0)
    memory_gib: float = 0.0
    count: int = 0  # visible GPUs
    cpus: int = 1


@dataclass(frozen=True)
class Preset:
    """The chosen values and one line explaining them."""

    precision: str
    num_workers: int
    accumulate_grad_batches: int
    summary: str


def detect_device(accelerator: str = "auto") -> DeviceInfo:
    """Inspect ``torch.cuda`` (device 0) unless the accelerator is forced to CPU."""
    import torch

    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        return DeviceInfo(
            "cuda", p.name, (p.major, p.minor), p.total_memory / 2**30, torch.cuda.device_count(), cpus
        )
    return DeviceInfo("cpu", "CPU", cpus=cpus)


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


def choose_preset(cfg: dict[str, Any], info: DeviceInfo) -> Preset:
    """Resolve the ``auto`` values of ``cfg`` for the device ``info`` (pure: nothing is changed)."""
    t, d = cfg["trainer"], cfg["data"]
    local = _devices_per_node(t["devices"], info)
    world = local * int(t["num_nodes"])
    if t["precision"] != "auto":
        precision = t["precision"]
        why_p = "as configured"
    elif info.kind == "cuda":
        precision = "bf16-mixed" if info.capability >= (8, 0) else "16-mixed"
        why_p = f"compute capability {info.capability[0]}.{info.capability[1]}"
    else:
        precision, why_p = "32-true", "CPU"
    if d["num_workers"] != "auto":
        workers = int(d["num_workers"])
    elif info.kind == "cuda":
        workers = max(1, min(8, info.cpus // local))
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
        accum = 1
    else:
        if gb % per_step:
            raise FaceforgeError(
                f"data.global_batch_size={gb} is not a multiple of data.batch_size {d['batch_size']} x "
                f"{world} devices = {per_step}"
            )
        accum = gb // per_step
    if info.kind == "cuda":
        dev = (
            f"{info.name} (cc {info.capability[0]}.{info.capability[1]}, {info.memory_gib:.0f} GiB) x {world}"
        )
    else:
        dev = f"CPU ({info.cpus} cores) x {world}"
    summary = (
        f"preset: {dev} -> precision {precision} ({why_p}), num_workers {workers}, "
        f"accumulate_grad_batches {accum} "
        f"(global batch {per_step * accum} = {d['batch_size']} x {world} x {accum})"
    )
    return Preset(precision, workers, accum, summary)


def apply_preset(cfg: dict[str, Any], info: DeviceInfo | None = None) -> Preset:
    """Choose the preset for this machine and write its values into ``cfg`` in place."""
    if info is None:
        accel = cfg["trainer"]["accelerator"]
        info = detect_device(accel if isinstance(accel, str) else "auto")
    p = choose_preset(cfg, info)
    cfg["trainer"]["precision"] = p.precision
    cfg["data"]["num_workers"] = p.num_workers
    cfg["trainer"]["accumulate_grad_batches"] = p.accumulate_grad_batches
    return p
