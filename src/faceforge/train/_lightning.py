"""Everything faceforge knows about Lightning's internals, in one place (tested with Lightning 2.6): the
checkpoint ``"loops"`` state and batch counters (:func:`checkpoint_epochs`,
:func:`shift_batch_progress`), noisy warnings (:func:`quiet_lightning`), the atomic checkpoint writer
(:class:`AtomicCheckpointIO`) and the rank-0 hand-over (:class:`LaunchHandover`). Details:
docs/training.md, "Lightning internals".
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

from faceforge.fileio import free_bytes, fsync_dir

__all__ = [
    "AtomicCheckpointIO",
    "LaunchHandover",
    "batches_processed",
    "checkpoint_bytes",
    "checkpoint_epochs",
    "checkpoint_files_at_peak",
    "disk_warning",
    "is_last_batch",
    "quiet_lightning",
    "rank",
    "shift_batch_progress",
]


def quiet_lightning() -> None:
    """Silence Lightning's tips and the warnings that do not apply to how faceforge drives it."""
    # ("consider num_workers", "GPU available but not used") are noise for a CLI.
    for name in (
        "lightning.pytorch.utilities.rank_zero",
        "lightning.pytorch.accelerators.cuda",
        "lightning.fabric",
    ):
        logging.getLogger(name).setLevel(logging.WARNING)
    for text in (
        "does not have many workers",
        "LeafSpec",
        "isinstance.*treespec",
        # The data module restores the sampler position itself (Lightning cannot see that).
        "dataloader is not resumable",
        "sync_dist=True",
        "exists and is not empty",
        "all_gather is deprecated",
        "smaller than the logging interval",
    ):
        warnings.filterwarnings("ignore", message=f".*{text}.*")


def rank() -> int:
    """Global rank of this process from the launcher's environment (0 outside distributed launches)."""
    from lightning.pytorch.utilities import rank_zero_only

    return int(getattr(rank_zero_only, "rank", 0) or 0)


# ---------------------------------------------------------------------------- progress counters


def batches_processed(trainer: Any) -> int:
    """Batches of the current epoch the trainer has processed (what a mid-epoch resume skips)."""
    return int(trainer.fit_loop.epoch_loop.batch_progress.current.processed)


def is_last_batch(trainer: Any) -> bool:
    """Whether the batch being finished is the epoch's last."""
    return bool(trainer.fit_loop.epoch_loop.batch_progress.is_last_batch)


def _fit_loop(checkpoint: dict[str, Any]) -> dict[str, Any] | None:
    try:
        loop = checkpoint["loops"]["fit_loop"]
        return loop if isinstance(loop, dict) else None
    except (KeyError, TypeError):
        return None


def checkpoint_epochs(checkpoint: dict[str, Any]) -> tuple[int, bool]:
    """``(whole epochs completed, whether a further epoch was started)`` of a loaded checkpoint dict."""
    loop = _fit_loop(checkpoint)
    try:
        ep = loop["epoch_progress"]["current"]  # type: ignore[index]
        bp = loop["epoch_loop.batch_progress"]  # type: ignore[index]
        done, in_epoch = int(ep["completed"]), int(bp["current"]["completed"])
    except (KeyError, TypeError):
        return int(checkpoint.get("epoch", 0)), False
    if int(ep["processed"]) > done and bool(bp.get("is_last_batch")):
        # Saved in on_train_epoch_end: the epoch ran all its batches but is not counted yet.
        return int(ep["processed"]), False
    return done, in_epoch > 0


def shift_batch_progress(checkpoint: dict[str, Any], delta: int) -> bool:
    """Move the current epoch's batch counters of a checkpoint by ``delta`` (never below 0).

    Used when a run resumes with another global batch: the same images are another number of
    batches. Returns False when the checkpoint has no such counters.
    """
    loop = _fit_loop(checkpoint)
    bp = loop.get("epoch_loop.batch_progress") if loop else None
    if not isinstance(bp, dict):
        return False
    for part in ("total", "current"):
        for f in ("ready", "started", "processed", "completed"):
            bp[part][f] = max(0, int(bp[part][f]) + delta)
    return True


# ---------------------------------------------------------------------------- checkpoint files


def _tensor_bytes(obj: Any, seen: set[int] | None = None) -> int:
    """Bytes of the tensor storages ``torch.save`` will write for ``obj`` (shared storages once)."""
    seen = set() if seen is None else seen
    if isinstance(obj, torch.Tensor):
        storage = obj.untyped_storage()
        key = storage.data_ptr() or id(storage)
        if key in seen:
            return 0
        seen.add(key)
        return storage.nbytes()
    if isinstance(obj, dict):
        return sum(_tensor_bytes(v, seen) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(_tensor_bytes(v, seen) for v in obj)
    return 0


def _gb(n: float) -> str:
    return f"{n / 1e9:.2f} GB" if n >= 1e8 else f"{n / 1e6:.1f} MB"


def _no_space(path: Path, need: int, free: int) -> OSError:
    """The one-line error of a checkpoint that does not fit on its disk (errno ENOSPC)."""
    return OSError(
        errno.ENOSPC,
        f"no space left on the disk to write this checkpoint: it needs about {_gb(need)}, "
        f"{_gb(free)} free; an earlier checkpoint is kept (free space, or set run_root to another disk)",
        str(path),
    )


def checkpoint_bytes(module: torch.nn.Module, cfg: dict[str, Any]) -> int:
    """About the size of one checkpoint of ``module`` trained with ``cfg`` (a training config).

    Its state (weights, buffers, class centres) plus the optimizer's per-parameter buffers (SGD with
    momentum: one, AdamW: two moments) and, with ``trainer.ema_decay``, the backbone's moving average.
    """
    params = sum(p.numel() * p.element_size() for p in module.parameters())
    o = cfg["optimizer"]
    slots = 2 if o["name"] == "adamw" else int(float(o.get("momentum") or 0.0) > 0.0)
    ema = module.backbone if cfg["trainer"].get("ema_decay") and hasattr(module, "backbone") else None
    extra = _tensor_bytes(ema.state_dict()) if ema is not None else 0
    return _tensor_bytes(module.state_dict()) + slots * params + extra + AtomicCheckpointIO.OVERHEAD


def checkpoint_files_at_peak(keep: str | int, max_epochs: int) -> int:
    """How many checkpoint files a run with ``checkpoint.keep`` holds at once, counting the one being
    written beside the file it replaces (``last.ckpt``; ``best.ckpt``; the N best; one per epoch)."""
    if keep == "last":
        return 2
    if keep == "best":
        return 3
    if keep == "all":
        return max(1, int(max_epochs)) + 3
    return int(keep) + 3


def disk_warning(module: torch.nn.Module, cfg: dict[str, Any], ckpt_dir: Path) -> str | None:
    """A line to print before training when the checkpoints will not fit on ``ckpt_dir``'s disk
    (the save that does not fit stops the run, possibly hours in), else None."""
    size = checkpoint_bytes(module, cfg)
    files = checkpoint_files_at_peak(cfg["checkpoint"]["keep"], cfg["trainer"]["max_epochs"])
    free = free_bytes(ckpt_dir)
    if free >= size * files:
        return None
    return (
        f"warning: each checkpoint of this run is about {_gb(size)} and up to {files} exist at once "
        f"({_gb(size * files)}), but {ckpt_dir} has {_gb(free)} free: the first save that does not fit "
        "will stop the run (free space, set run_root to another disk, or checkpoint.keep: last)"
    )


class AtomicCheckpointIO(TorchCheckpointIO):
    """Write each checkpoint to a temporary file, fsync it, rename it into place, fsync the folder.

    A crash (or SIGKILL, or a power cut) during a save then leaves the previous checkpoint intact
    instead of a truncated file that the next ``--resume`` would choke on; a temporary file such a
    kill leaves behind is removed when the next run starts (``callbacks.clean_stale_temps``). A
    checkpoint larger than the disk's free space (weights plus optimizer state: 1.4 GB for an
    EfficientNetV2-L with AdamW) is refused before writing, and a disk that fills up during the write
    (torch reports it as ``unexpected pos``) is reported as such, both as one ``ENOSPC`` line.
    """

    #: bytes on top of the tensors: the pickled structure and the zip archive's records
    OVERHEAD = 1 << 20

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None
    ) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        need = _tensor_bytes(checkpoint) + self.OVERHEAD
        free = free_bytes(path.parent)
        if free < need:
            raise _no_space(path, need, free)
        tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
        try:
            with open(tmp, "wb") as f:
                torch.save(checkpoint, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except (OSError, RuntimeError) as e:
            full = getattr(e, "errno", None) == errno.ENOSPC or "unexpected pos" in str(e)
            if not full:
                raise
            tmp.unlink(missing_ok=True)  # what it held counts as free again
            raise _no_space(path, need, free_bytes(path.parent)) from e
        finally:
            if tmp.exists():
                tmp.unlink()
        fsync_dir(path.parent)


# ---------------------------------------------------------------------------- launched processes


class LaunchHandover:
    """What rank 0 decided (run directory, checkpoint to resume) for the processes Lightning starts.

    With ``strategy: ddp`` on one machine Lightning's subprocess launcher re-executes the same command
    line for ranks 1..N-1 and hands them nothing but its environment, so rank 0's decisions (a
    timestamped run folder, the newest loadable ``last.ckpt``) travel as one JSON value in
    :data:`VARIABLE`, set only for the duration of ``trainer.fit``. A process reads it with
    :meth:`inherited`; torchrun and SLURM launches do not use it (every rank derives the folder from
    the job id).
    """

    VARIABLE = "FACEFORGE_LAUNCH"

    @classmethod
    @contextlib.contextmanager
    def publish(cls, run_dir: Path, resume: Path | None) -> Iterator[None]:
        """Make the decision visible to processes started inside the ``with`` block."""
        saved = os.environ.get(cls.VARIABLE)
        os.environ[cls.VARIABLE] = json.dumps(
            {"run_dir": str(run_dir), "resume": None if resume is None else str(resume)}
        )
        try:
            yield
        finally:
            if saved is None:
                os.environ.pop(cls.VARIABLE, None)
            else:
                os.environ[cls.VARIABLE] = saved

    @classmethod
    def inherited(cls) -> tuple[Path, Path | None] | None:
        """``(run_dir, resume)`` published by the process that launched this one, else ``None``."""
        raw = os.environ.get(cls.VARIABLE)
        if not raw:
            return None
        try:
            d = json.loads(raw)
            run_dir, resume = Path(d["run_dir"]), d.get("resume")
        except (ValueError, KeyError, TypeError):
            return None  # not ours to trust: decide afresh
        return run_dir, None if resume is None else Path(resume)
