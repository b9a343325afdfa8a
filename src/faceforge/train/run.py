"""Run a training job from a resolved config: run directory, callbacks, fit, final test report.

Run directory::

    runs/<name>/<timestamp>/
      config.yaml            the resolved config (``faceforge train --config`` reproduces the run)
      checkpoints/best.ckpt  best validation accuracy (last.ckpt when there are no val pairs)
      checkpoints/last.ckpt
      tb/                    TensorBoard logs
      metrics.json           epoch history, best validation, test results
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from faceforge.errors import FaceforgeError
from faceforge.train.config import dump_config, validate_components


@dataclass
class RunResult:
    """What a finished training run produced."""

    run_dir: Path
    best_checkpoint: Path
    last_checkpoint: Path
    history: list[dict[str, Any]] = field(default_factory=list)
    val: dict[str, Any] = field(default_factory=dict)
    test: dict[str, Any] = field(default_factory=dict)


def make_run_dir(cfg: dict[str, Any]) -> Path:
    """A fresh ``run_root/name/YYYYmmdd-HHMMSS[-k]`` folder."""
    base = Path(cfg["run_root"]) / str(cfg["name"])
    stamp = time.strftime("%Y%m%d-%H%M%S")
    run = base / stamp
    k = 1
    while run.exists():
        run = base / f"{stamp}-{k}"
        k += 1
    run.mkdir(parents=True)
    return run


def _quiet_lightning() -> None:
    # Lightning's tips ("consider num_workers", "GPU available but not used") are noise for a CLI.
    for name in (
        "lightning.pytorch.utilities.rank_zero",
        "lightning.pytorch.accelerators.cuda",
        "lightning.fabric",
    ):
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=".*LeafSpec.*")
    warnings.filterwarnings("ignore", message=".*isinstance.*treespec.*")


def train(cfg: dict[str, Any], evaluate_test: bool = True) -> RunResult:
    """Train the model described by ``cfg``; evaluate the best checkpoint on the test pairs."""
    import lightning as L
    from lightning.pytorch.callbacks import ModelCheckpoint
    from lightning.pytorch.loggers import TensorBoardLogger

    from faceforge.train.callbacks import AtomicCheckpointIO, EpochSummary, VerificationCallback
    from faceforge.train.datamodule import FaceDataModule
    from faceforge.train.module import FaceRecognitionModule

    _quiet_lightning()
    validate_components(cfg)
    tcfg = cfg["trainer"]
    if int(tcfg.get("num_threads") or 0) > 0:
        torch.set_num_threads(int(tcfg["num_threads"]))
    L.seed_everything(int(cfg["seed"]), workers=True, verbose=False)
    dm = FaceDataModule(cfg["data"], seed=int(cfg["seed"]))
    module = FaceRecognitionModule(cfg, dm.num_classes)
    if module.face_cfg.color != "RGB":
        dm = FaceDataModule(cfg["data"], color=module.face_cfg.color, seed=int(cfg["seed"]))
    val = dm.pair_images("val")
    run_dir = make_run_dir(cfg)
    (run_dir / "config.yaml").write_text(dump_config(cfg))
    ckpt_dir = run_dir / "checkpoints"

    callbacks: list[Any] = []
    verification = None
    if val is not None:
        vcfg = cfg["verification"]
        verification = VerificationCallback(
            val, int(vcfg["every_n_steps"]), bool(vcfg["flip"]), int(vcfg["batch_size"])
        )
        callbacks.append(verification)
    summary = EpochSummary(dm.load_time_skipped, verification, dm.runtime_skipped)
    callbacks.append(summary)
    ckpt_cb = ModelCheckpoint(
        dirpath=ckpt_dir,
        filename="best",
        monitor="val/acc" if val is not None else None,
        mode="max",
        save_last=True,
        save_top_k=1,
        auto_insert_metric_name=False,
        enable_version_counter=False,
        every_n_train_steps=int(cfg["verification"]["every_n_steps"]) or None if val is not None else None,
    )
    callbacks.append(ckpt_cb)
    trainer = L.Trainer(
        default_root_dir=run_dir,
        max_epochs=int(tcfg["max_epochs"]),
        max_steps=int(tcfg["max_steps"]),
        precision=tcfg["precision"],
        accelerator=tcfg["accelerator"],
        devices=tcfg["devices"],
        log_every_n_steps=int(tcfg["log_every_n_steps"]),
        gradient_clip_val=tcfg["gradient_clip_val"],
        deterministic=bool(tcfg["deterministic"]),
        # A progress bar in a log file is thousands of carriage-return lines: only on a terminal.
        enable_progress_bar=bool(tcfg["enable_progress_bar"]) and sys.stderr.isatty(),
        enable_model_summary=False,
        logger=TensorBoardLogger(save_dir=str(run_dir), name="tb", version=""),
        callbacks=callbacks,
        plugins=[AtomicCheckpointIO()],
        num_sanity_val_steps=0,
    )
    trainer.fit(module, datamodule=dm)

    last = ckpt_dir / "last.ckpt"
    best = ckpt_dir / "best.ckpt"
    if not best.exists():
        best = last
    result = RunResult(run_dir, best, last, summary.history)
    if verification is not None:
        result.val = {"best_accuracy": verification.best}
    if evaluate_test:
        test = dm.pair_images("test")
        if test is not None:
            from faceforge.eval.verification import evaluate_model, pixel_baseline
            from faceforge.models.checkpoint import load_checkpoint

            model = load_checkpoint(best)
            vcfg = cfg["verification"]
            result.test = {
                "model": evaluate_model(model.embed, test, int(vcfg["batch_size"]), bool(vcfg["flip"])),
                "raw_pixels": pixel_baseline(test),
            }
    write_metrics(result)
    return result


def write_metrics(result: RunResult) -> Path:
    """Write ``metrics.json`` atomically into the run directory."""
    path = result.run_dir / "metrics.json"
    data = {
        "history": result.history,
        "val": result.val,
        "test": result.test,
        "best_checkpoint": str(result.best_checkpoint),
    }
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2, default=_plain))
    os.replace(tmp, path)
    return path


def _plain(o: Any) -> Any:
    if hasattr(o, "tolist"):
        return o.tolist()
    raise FaceforgeError(f"metrics.json: cannot serialise {type(o).__name__}")
