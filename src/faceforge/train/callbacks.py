"""Training callbacks: verification and retrieval validation, the epoch summary, checkpoints for resuming."""

from __future__ import annotations

import contextlib
import os
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import Checkpoint, ModelCheckpoint

from faceforge.errors import FaceforgeError
from faceforge.eval.calibration import calibration_from_result
from faceforge.eval.verification import PairImages, embed_images, evaluate_model
from faceforge.train._lightning import is_last_batch

#: the temporary name of a checkpoint being written (``.last.ckpt.tmp<pid>``); see clean_stale_temps
TMP_PATTERN = re.compile(r"^\..+\.tmp\d+$")


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
    """10-fold verification on held-out pair sets every ``every_n_steps`` steps (0: every epoch end).

    ``sets`` maps a set name to its pairs. The single set of ``data.val_pairs`` has the name ``None``
    and logs ``val/acc``, ``val/threshold`` (cosine), ``val/auc`` and ``val/best_acc``. Named sets
    (``data.val_sets``) log ``val/{set}_acc``, ``val/{set}_threshold`` and ``val/{set}_best`` each,
    ``val/mean_acc`` (their mean), and ``val/acc`` = ``val/mean_acc`` and ``val/best_acc`` (best mean)
    so that monitors written for one set keep working. The thresholds of the latest evaluation of
    the first set are stored on the module as its calibration (saved in checkpoints).
    """

    def __init__(
        self,
        sets: dict[str | None, PairImages] | PairImages,
        every_n_steps: int = 0,
        flip: bool = True,
        batch_size: int = 256,
    ) -> None:
        self.sets = sets if isinstance(sets, dict) else {None: sets}
        self.every_n_steps, self.flip, self.batch_size = every_n_steps, flip, batch_size
        self.best = float("-inf")
        self.best_per_set: dict[str, float] = {}
        self.last: dict[str, Any] = {}
        self.last_per_set: dict[str, dict[str, Any]] = {}

    @property
    def named(self) -> bool:
        """Whether the sets are named (``data.val_sets``) rather than the single ``data.val_pairs``."""
        return None not in self.sets

    def _evaluate(self, module: L.LightningModule) -> dict[str | None, dict[str, Any]]:
        was_training = module.training
        module.eval()
        try:
            embed = _on_device(module)
            return {n: evaluate_model(embed, d, self.batch_size, self.flip) for n, d in self.sets.items()}
        finally:
            module.train(was_training)

    def _run(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        # Rank 0 evaluates while the other ranks wait in the broadcast: the embedding pass uses the
        # bare module (no DDP wrapper, so no collectives that could deadlock), and every rank then
        # logs the same numbers, which keeps checkpoint and early-stopping decisions identical.
        res: dict[str | None, dict[str, Any]] | None = None
        if trainer.is_global_zero:
            res = self._evaluate(module)
        if trainer.world_size > 1:
            res = trainer.strategy.broadcast(res, src=0)
        assert res is not None
        if not self.named:
            r = res[None]
            self.best = max(self.best, r["accuracy"])
            self.last = r
            module.log("val/acc", r["accuracy"], prog_bar=True)
            module.log("val/threshold", r["threshold_cos"])
            module.log("val/auc", r["auc"])
            module.log("val/best_acc", self.best)
            first = r
        else:
            for name, r in res.items():
                assert name is not None
                self.best_per_set[name] = max(self.best_per_set.get(name, float("-inf")), r["accuracy"])
                module.log(f"val/{name}_acc", r["accuracy"])
                module.log(f"val/{name}_threshold", r["threshold_cos"])
                module.log(f"val/{name}_best", self.best_per_set[name])
            mean = float(sum(r["accuracy"] for r in res.values()) / len(res))
            self.best = max(self.best, mean)
            self.last = {"accuracy": mean}
            self.last_per_set = {str(k): v for k, v in res.items()}
            module.log("val/mean_acc", mean, prog_bar=True)
            module.log("val/acc", mean)
            module.log("val/best_acc", self.best)
            first = next(iter(res.values()))
        what = "validation pairs" if not self.named else f"validation set {next(iter(res))!s}"
        module.calibration = calibration_from_result(
            first, f"{what} during training ({first['n_pairs']} pairs)"
        )

    def on_train_batch_end(self, trainer: L.Trainer, module: L.LightningModule, *args: Any) -> None:
        if self.every_n_steps > 0 and trainer.global_step % self.every_n_steps == 0:
            self._run(trainer, module)

    def on_train_epoch_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        if self.every_n_steps <= 0:
            self._run(trainer, module)

    def state_dict(self) -> dict[str, Any]:
        return {"best": float(self.best), "best_per_set": dict(self.best_per_set)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.best = float(state_dict.get("best", float("-inf")))
        self.best_per_set = {str(k): float(v) for k, v in state_dict.get("best_per_set", {}).items()}


def _on_device(module: L.LightningModule) -> Callable[[torch.Tensor], torch.Tensor]:
    """The module as an embedding function that moves each batch to the module's device."""

    def embed(x: torch.Tensor) -> torch.Tensor:
        return module(x.to(module.device))

    return embed


def embed_dataset(
    module: L.LightningModule, dataset: Any, batch_size: int = 256, flip: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """Embeddings and labels of every decodable sample of ``dataset`` (``(uint8 image, label)`` items)."""
    from torch.utils.data import DataLoader

    embed = _on_device(module)
    embs, labels = [], []
    for x, y in DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=0):
        good = y >= 0  # undecodable images come as label -1
        if not bool(good.any()):
            continue
        embs.append(embed_images(embed, x[good], batch_size, flip))
        labels.append(y[good].numpy())
    if not embs:
        raise FaceforgeError("retrieval validation: no image of the set decodes")
    return np.concatenate(embs), np.concatenate(labels)


class RetrievalCallback(L.Callback):
    """kNN classification and retrieval of the split's val part against its train part, each epoch.

    Logs ``val/knn_acc`` (similarity-weighted vote of the ``k`` nearest training images),
    ``val/recall@K`` for each ``K`` of ``ks`` and ``val/map_at_r``
    (:func:`faceforge.eval.classify.classify_by_retrieval`). Rank 0 computes, the others receive the
    numbers, as in :class:`VerificationCallback`.
    """

    def __init__(
        self,
        gallery: Any,
        queries: Any,
        k: int = 20,
        ks: Any = (1, 5),
        flip: bool = True,
        batch_size: int = 256,
    ) -> None:
        self.gallery, self.queries = gallery, queries
        self.k, self.ks, self.flip, self.batch_size = int(k), tuple(int(x) for x in ks), flip, batch_size
        self.last: dict[str, float] = {}

    def _evaluate(self, module: L.LightningModule) -> dict[str, float]:
        from faceforge.eval.classify import classify_by_retrieval

        was_training = module.training
        module.eval()
        try:
            with torch.no_grad():
                g_emb, g_lab = embed_dataset(module, self.gallery, self.batch_size, self.flip)
                q_emb, q_lab = embed_dataset(module, self.queries, self.batch_size, self.flip)
        finally:
            module.train(was_training)
        r = classify_by_retrieval(g_emb, g_lab, q_emb, q_lab, k=self.k, ks=self.ks)
        out = {"val/knn_acc": float(r.accuracy)}
        out.update({f"val/recall@{k}": float(r.recall_at[k]) for k in self.ks})
        out["val/map_at_r"] = float(r.map_at_r)
        return out

    def on_train_epoch_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        res = self._evaluate(module) if trainer.is_global_zero else None
        if trainer.world_size > 1:
            res = trainer.strategy.broadcast(res, src=0)
        assert res is not None
        self.last = res
        for name, value in res.items():
            module.log(name, value, prog_bar=name == "val/knn_acc")


class EpochSummary(L.Callback):
    """One line per epoch: loss, accuracy, validation accuracy, skipped images and time.

    Each row of :attr:`history` (``metrics.json``) also says whether the backbone was frozen
    (``frozen``, with ``trainer.freeze_backbone_epochs``) and the margin at the epoch's last step
    (``margin``, with a ``margin_schedule``).
    """

    def __init__(
        self,
        load_time_skipped: int = 0,
        verification: VerificationCallback | None = None,
        runtime_skipped: Callable[[], int] | None = None,
        retrieval: RetrievalCallback | None = None,
    ) -> None:
        self.load_time_skipped = load_time_skipped
        self.verification = verification
        self.retrieval = retrieval
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
        v = self.verification
        if v is not None and v.last:
            row["val_acc"] = v.last["accuracy"]
            row["val_best_acc"] = v.best
            if v.named:
                row["val_sets"] = {n: r["accuracy"] for n, r in v.last_per_set.items()}
        if self.retrieval is not None and self.retrieval.last:
            row["retrieval"] = dict(self.retrieval.last)
        # The warm-ups as they ran: whether the backbone was frozen, and the margin of the last step
        # (a scheduled margin changes within the epoch).
        freeze = int(getattr(module, "freeze_epochs", 0) or 0)
        if freeze:
            row["frozen"] = trainer.current_epoch < freeze
        head = getattr(module, "head", None)
        margin_head = getattr(head, "margin_head", head)
        scheduled = getattr(margin_head, "margin_schedule", None) is not None
        if scheduled:
            row["margin"] = float(margin_head.margin)
        self.history.append(row)
        if trainer.is_global_zero and self.verbose:
            parts = [f"epoch {row['epoch']}" + (" (backbone frozen)" if row.get("frozen") else "")]
            if row["loss"] is not None:
                acc = "" if row["train_acc"] is None else f"  train acc {row['train_acc']:.3f}"
                margin = f"  margin {row['margin']:.3f}" if scheduled else ""
                parts.append(f"loss {row['loss']:.3f}{acc}{margin}")
            if "val_sets" in row:
                each = "  ".join(f"{n} {a:.4f}" for n, a in row["val_sets"].items())
                parts.append(f"val {each}  mean {row['val_acc']:.4f} (best {row['val_best_acc']:.4f})")
            elif "val_acc" in row:
                parts.append(f"val acc {row['val_acc']:.4f} (best {row['val_best_acc']:.4f})")
            if "retrieval" in row:
                parts.append("  ".join(f"{k[4:]} {x:.4f}" for k, x in row["retrieval"].items()))
            parts.append(f"skipped images {row['skipped_images']}")
            parts.append(f"{row['seconds']:.1f} s")
            print(" | ".join(parts), flush=True)

    def state_dict(self) -> dict[str, Any]:
        return {"history": [dict(r) for r in self.history]}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.history = [dict(r) for r in state_dict.get("history", [])]


class KeptCheckpoints(ModelCheckpoint):
    """A ``ModelCheckpoint`` for the extra files of ``checkpoint.keep`` (the N best, or every epoch).

    Its saved state is keyed by its file-name pattern as well, so it can share the monitor of the
    ``best.ckpt`` callback (Lightning refuses two callbacks with the same state key).
    """

    @property
    def state_key(self) -> str:
        return self._generate_state_key(
            monitor=self.monitor, mode=self.mode, filename=self.filename, top_k=self.save_top_k
        )


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
        if (batch_idx + 1) % max(1, trainer.accumulate_grad_batches) and not is_last_batch(trainer):
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
