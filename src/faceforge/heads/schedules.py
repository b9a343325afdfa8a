"""Margin and scale schedules: a value as a function of training progress (epoch, step).
:func:`build_schedule` turns a YAML mapping with a ``type`` key (``constant``, ``warmup``, ``linear``,
``step``; positions in epochs, or in optimizer steps for keys ending in ``_steps`` / ``_step``) into a
:class:`Schedule`. Details: docs/heads.md, "Schedules".
"""

from __future__ import annotations

import bisect
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from faceforge.errors import FaceforgeError, did_you_mean

__all__ = ["Schedule", "build_schedule"]


@dataclass(frozen=True)
class Schedule:
    """A parsed schedule; call :meth:`value_at` to evaluate it."""

    kind: str
    unit: str = "epoch"  # "epoch" or "step"
    start: float | None = None
    end: float | None = None
    begin: float = 0.0
    finish: float = 0.0
    milestones: tuple[float, ...] = ()
    values: tuple[float, ...] = ()

    def value_at(self, base: float, epoch: float, step: int) -> float:
        """The scheduled value at ``epoch``/``step``; ``base`` is the head's configured value."""
        pos = float(step) if self.unit == "step" else float(epoch)
        if self.kind == "constant":
            return base
        if self.kind == "warmup":
            assert self.start is not None
            return self.start if pos < self.finish else base
        if self.kind == "linear":
            assert self.start is not None
            end = base if self.end is None else self.end
            if pos <= self.begin:
                return self.start
            if pos >= self.finish:
                return end
            frac = (pos - self.begin) / (self.finish - self.begin)
            return self.start + frac * (end - self.start)
        # step
        return self.values[bisect.bisect_right(self.milestones, pos)]


_KEYS = {
    "constant": {"type"},
    "warmup": {"type", "start", "warmup_epochs", "warmup_steps"},
    "linear": {"type", "start", "end", "from_epoch", "to_epoch", "from_step", "to_step"},
    "step": {"type", "milestones", "milestone_steps", "values"},
}


def _number(what: str, x: Any) -> float:
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        raise FaceforgeError(f"{what} must be a number, got {x!r}")
    return float(x)


def _one_of(spec: Mapping[str, Any], epoch_key: str, step_key: str, name: str) -> tuple[str, Any]:
    has_e, has_s = epoch_key in spec, step_key in spec
    if has_e == has_s:
        raise FaceforgeError(f"{name} needs exactly one of {epoch_key!r} or {step_key!r}, got {dict(spec)}")
    return ("epoch", spec[epoch_key]) if has_e else ("step", spec[step_key])


def build_schedule(spec: Schedule | Mapping[str, Any] | None, name: str = "schedule") -> Schedule | None:
    """Parse a schedule mapping (as read from YAML); ``None`` means no schedule.

    Raises :class:`FaceforgeError` naming the bad key or value.
    """
    if spec is None or isinstance(spec, Schedule):
        return spec
    if not isinstance(spec, Mapping):
        raise FaceforgeError(f"{name} must be a mapping with a 'type' key, got {spec!r}")
    kind = spec.get("type")
    if kind not in _KEYS:
        hint = did_you_mean(str(kind), _KEYS) if isinstance(kind, str) else ""
        raise FaceforgeError(f"{name}: unknown type {kind!r}{hint}; known: {', '.join(sorted(_KEYS))}")
    for key in spec:
        if key not in _KEYS[kind]:
            raise FaceforgeError(
                f"{name}: unknown key {key!r} for type {kind!r}{did_you_mean(str(key), _KEYS[kind])}; "
                f"known: {', '.join(sorted(_KEYS[kind]))}"
            )
    if kind == "constant":
        return Schedule("constant")
    if kind == "warmup":
        unit, length = _one_of(spec, "warmup_epochs", "warmup_steps", name)
        length = _number(f"{name}: warm-up length", length)
        if length < 0:
            raise FaceforgeError(f"{name}: warm-up length must be >= 0, got {length}")
        return Schedule(
            "warmup", unit, start=_number(f"{name}: start", spec.get("start", 0.0)), finish=length
        )
    if kind == "linear":
        unit, to = _one_of(spec, "to_epoch", "to_step", name)
        begin = spec.get("from_epoch" if unit == "epoch" else "from_step", 0.0)
        other = "from_step" if unit == "epoch" else "from_epoch"
        if other in spec:
            raise FaceforgeError(f"{name}: {other!r} mixes epochs and steps")
        begin, to = _number(f"{name}: from", begin), _number(f"{name}: to", to)
        if to <= begin:
            raise FaceforgeError(f"{name}: the ramp must end after it starts, got from={begin} to={to}")
        if "start" not in spec:
            raise FaceforgeError(f"{name}: a linear schedule needs 'start'")
        end = None if spec.get("end") is None else _number(f"{name}: end", spec["end"])
        return Schedule(
            "linear", unit, start=_number(f"{name}: start", spec["start"]), end=end, begin=begin, finish=to
        )
    unit, milestones = _one_of(spec, "milestones", "milestone_steps", name)
    values = spec.get("values")
    if not isinstance(milestones, (list, tuple)) or not isinstance(values, (list, tuple)):
        raise FaceforgeError(f"{name}: 'milestones' and 'values' must be lists, got {dict(spec)}")
    ms = tuple(_number(f"{name}: milestone", m) for m in milestones)
    vs = tuple(_number(f"{name}: value", v) for v in values)
    if list(ms) != sorted(ms):
        raise FaceforgeError(f"{name}: milestones must be increasing, got {list(ms)}")
    if len(vs) != len(ms) + 1:
        raise FaceforgeError(
            f"{name}: needs len(values) == len(milestones) + 1, got {len(vs)} values for {len(ms)} milestones"
        )
    return Schedule("step", unit, milestones=ms, values=vs)
