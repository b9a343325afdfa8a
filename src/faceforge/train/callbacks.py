"""Training callbacks: verification during training, the epoch summary, checkpoints for resuming."""

from __future__ import annotations

import contextlib
import os
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Checkpoint
from lightning.pytorch.plugins.io import TorchCheckpointIO

from faceforge.eval.calibration import calibration_from_result
from faceforge.eval.verification import PairImages, evaluate_model
from faceforge.fileio import fsync_dir

#: the temporary name of a checkpoint being written (``.last.ckpt.tmp<pid>``); see clean_stale_temps
TMP_PATTERN = re.compile(r"^\..+\.tmp\d+$")


class AtomicCheckpointIO(TorchCheckpointIO):
    """Write each checkpoint to a temporary file, fsync it, rename it into place, fsync the folder.

    A crash (or SIGKILL, or a power cut) during a save then leaves the previous checkpoint intact
    instead of a truncated file that the next ``--resume`` would choke on; a temporary file such a
    kill leaves behind is removed when the next run starts (:func:`clean_stale_temps`).
    """

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None
    ) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
        try:
            with open(tmp, "wb") as f:
                torch.save(checkpoint, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        finally:
            if tmp.exists():
                tmp.unlink()
        fsync_dir(path.parent)


def clean_stale_temps(folder: str | os.PathLike[str]) -> list[Path]:
    """Remove the temporary checkpoint files a killed run left in ``folder``; returns them.

    Call it before training starts (no save of this run is in flight then).
    """
    removed = []
    d = Path(folder)
    if d.is_dir():
        for f in d.iterdir():
            if TMP_PATTERN.match(f.name) and f.is_file():
                with contextlib.suppress(OSError):
                    f.unlink()
                    removed.append(f)
    return removed


class VerificationCallback(L.Callback):
    """10-fold verification on held-out pairs every ``every_n_steps`` steps (0: every epoch end).

    Logs ``val/acc``, ``val/threshold`` (cosine), ``val/auc`` and ``val/best_acc``; the checkpoint
    callback monitors ``val/acc`` to keep the best model. The thresholds of the latest evaluation
    are stored on the module as its calibration (saved in checkpoints).
    """

    def __init__(
        self, data: PairImages, every_n_steps: int = 0, flip: bool = True, batch_size: int = 256
    ) -> None:
        self.data, self.every_n_steps, self.flip, self.batch_size = data, every_n_steps, flip, batch_size
        self.best = float("-inf")
        self.last: dict[str, Any] = {}

    def _run(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        # Rank 0 evaluates while the other ranks wait in the broadcast: the embedding pass uses the
        # bare module (no DDP wrapper, so no collectives that could deadlock), and every rank then
        # logs the same numbers, which keeps checkpoint and early-stopping decisions identical.
        res: dict[str, Any] | None = None
        if trainer.is_global_zero:
            was_training = module.training
            module.eval()
            try:
                res = evaluate_model(module, self.data, self.batch_size, self.flip)
            finally:
                module.train(was_training)
        if trainer.world_size > 1:
            res = trainer.strategy.broadcast(res, src=0)
        assert res is not None
        self.best = max(self.best, res["accuracy"])
        self.last = res
        module.log("val/acc", res["accuracy"], prog_bar=True)
        module.log("val/threshold", res["threshold_cos"])
        module.log("val/auc", res["auc"])
        module.log("val/best_acc", self.best)
        module.calibration = calibration_from_result(
            res, f"validation pairs during training ({res['n_pairs']} pairs)"
        )

    def on_train_batch_end(self, trainer: L.Trainer, module: L.LightningModule, *args: Any) -> None:
        if self.every_n_steps > 0 and trainer.global_step % self.every_n_steps == 0:
            self._run(trainer, module)

    def on_train_epoch_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        if self.every_n_steps <= 0:
            self._run(trainer, module)

    def state_dict(self) -> dict[str, Any]:
        return {"best": float(self.best)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.best = float(state_dict.get("best", float("-inf")))


class EpochSummary(L.Callback):
    """One line per epoch: loss, accuracy, validation accuracy, skipped images and time."""

    def __init__(
        self,
        load_time_skipped: int = 0,
        verification: VerificationCallback | None = None,
        runtime_skipped: Callable[[], int] | None = None,
    ) -> None:
        self.load_time_skipped = load_time_skipped
        self.verification = verification
        self.runtime_skipped = runtime_skipped or (lambda: 0)
        self.verbose = True
        self._skip0 = 0
        self.t0 = time.perf_counter()
        self.history: list[dict[str, Any]] = []

    def on_train_epoch_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        self.t0 = time.perf_counter()
        self._skip0 = self.runtime_skipped()
        module.skipped_in_epoch = 0
        module.epoch_stats = [0.0, 0.0, 0]

    def on_train_epoch_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        loss_sum, acc_sum, n = module.epoch_stats
        row: dict[str, Any] = {
            "epoch": trainer.current_epoch,
            "step": trainer.global_step,
            "loss": loss_sum / n if n else None,
            "train_acc": acc_sum / n if n and getattr(module, "pfc", None) is None else None,
            "skipped_images": self.load_time_skipped
            + (self.runtime_skipped() - self._skip0)
            + int(getattr(module, "skipped_in_epoch", 0)),
            "seconds": round(time.perf_counter() - self.t0, 2),
        }
        if self.verification is not None and self.verification.last:
            row["val_acc"] = self.verification.last["accuracy"]
            row["val_best_acc"] = self.verification.best
        self.history.append(row)
        if trainer.is_global_zero and self.verbose:
            parts = [f"epoch {row['epoch']}"]
            if row["loss"] is not None:
                acc = "" if row["train_acc"] is None else f"  train acc {row['train_acc']:.3f}"
                parts.append(f"loss {row['loss']:.3f}{acc}")
            if "val_acc" in row:
                parts.append(f"val acc {row['val_acc']:.4f} (best {row['val_best_acc']:.4f})")
            parts.append(f"skipped images {row['skipped_images']}")
            parts.append(f"{row['seconds']:.1f} s")
            print(" | ".join(parts), flush=True)

    def state_dict(self) -> dict[str, Any]:
        return {"history": [dict(r) for r in self.history]}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.history = [dict(r) for r in state_dict.get("history", [])]


class ResumeCheckpoint(Checkpoint):
    """Write ``last.ckpt`` (atomically, see :class:`AtomicCheckpointIO`) for ``--resume``.

    Saved every ``every_n_steps`` optimizer steps (0: never mid-epoch), at the end of every epoch and
    when ``max_steps`` ends training. A subclass of Lightning's ``Checkpoint``, so it runs after the
    other callbacks of the same hook (the best-model checkpoint has already seen the new score).
    """

    def __init__(self, path: str | os.PathLike[str], every_n_steps: int = 0) -> None:
        self.path = Path(path)
        self.every_n_steps = int(every_n_steps)
        self._saved_step = -1

    def _save(self, trainer: L.Trainer) -> None:
        trainer.save_checkpoint(self.path, weights_only=False)
        self._saved_step = trainer.global_step

    def on_train_batch_end(
        self, trainer: L.Trainer, module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        # Only right after an optimizer step: a checkpoint between accumulated micro-batches would
        # lose the gradients summed so far.
        if (batch_idx + 1) % max(
            1, trainer.accumulate_grad_batches
        ) and not trainer.fit_loop.epoch_loop.batch_progress.is_last_batch:
            return
        step = trainer.global_step
        due = self.every_n_steps > 0 and step % self.every_n_steps == 0
        end = 0 < trainer.max_steps <= step
        if (due or end) and step != self._saved_step:
            self._save(trainer)

    def on_train_epoch_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        self._save(trainer)

    def state_dict(self) -> dict[str, Any]:
        return {"path": str(self.path)}
