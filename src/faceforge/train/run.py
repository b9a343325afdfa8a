"""Run a training job from a resolved config: run directory ``runs/<name>/<timestamp>/`` (``config.yaml``,
``checkpoints/``, ``tb/``, ``metrics.json``), callbacks, fit, final test report. Entry point:
:func:`train`. Details: docs/training.md, "Run directory".
"""

from __future__ import annotations

import copy
import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from faceforge.errors import FaceforgeError
from faceforge.fileio import atomic_write_bytes
from faceforge.train.config import dump_config, resolve_monitor, validate_components


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


def env_rank() -> int:
    """Global rank of this process from the launcher's environment (0 outside distributed launches)."""
    from faceforge.train._lightning import rank

    return rank()


def find_resume_checkpoint(cfg: dict[str, Any]) -> Path | None:
    """The checkpoint that ``cfg["resume"]`` names: ``auto`` → newest ``last.ckpt`` of a run of this name.

    ``auto`` with no previous run returns ``None`` (start afresh: a re-queued job's first attempt).
    """
    r = cfg.get("resume")
    if r is None:
        return None
    if r == "auto":
        base = Path(cfg["run_root"]) / str(cfg["name"])
        found = sorted(base.glob("*/checkpoints/last.ckpt"), key=lambda p: p.stat().st_mtime)
        return found[-1] if found else None
    p = Path(r)
    if not p.is_file():
        raise FaceforgeError(f"resume: checkpoint {p} does not exist (use --resume auto or a .ckpt path)")
    return p


def check_resume_checkpoint(path: Path) -> str | None:
    """None when ``path`` loads as a faceforge training checkpoint that can resume, else why not.

    The file is read with ``weights_only`` (memory-mapped, so the check costs little) and its stored
    config must pass the checkpoint allowlist (:func:`faceforge.models.checkpoint.checkpoint_model_config`).
    """
    from faceforge.models.checkpoint import checkpoint_model_config

    try:
        try:
            ckpt = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as e:
            if "mmap" not in str(e):
                raise
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated zip, refused pickle, I/O error: all mean "cannot resume from it"
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:160]
        return f"does not load: {type(e).__name__}: {first}"
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt or "global_step" not in ckpt:
        return "is not a training checkpoint (no state_dict / global_step)"
    try:
        checkpoint_model_config(ckpt, str(path))
    except FaceforgeError as e:
        return f"is refused: {e}"
    return None


def pick_resume_checkpoint(cfg: dict[str, Any]) -> tuple[Path | None, list[tuple[Path, str]]]:
    """The checkpoint ``cfg["resume"]`` resumes from, and the newer ones skipped with the reason.

    ``auto``: the newest checkpoint (``last.ckpt``/``best.ckpt`` of the runs of this name, newest
    file first) that loads (:func:`check_resume_checkpoint`); None when there is none. A path: that
    file, which must load (a one-line error otherwise).
    """
    r = cfg.get("resume")
    if r is None:
        return None, []
    if r != "auto":
        p = find_resume_checkpoint(cfg)
        assert p is not None
        why = check_resume_checkpoint(p)
        if why is not None:
            raise FaceforgeError(f"resume: checkpoint {p} {why}")
        return p, []
    base = Path(cfg["run_root"]) / str(cfg["name"])
    found = [q for q in base.glob("*/checkpoints/*.ckpt") if q.name in ("last.ckpt", "best.ckpt")]
    found.sort(key=lambda q: (q.stat().st_mtime, q.name == "last.ckpt"), reverse=True)
    skipped: list[tuple[Path, str]] = []
    for q in found:
        why = check_resume_checkpoint(q)
        if why is None:
            return q, skipped
        skipped.append((q, why))
    return None, skipped


def resolve_run_dir(cfg: dict[str, Any], resume: Path | None) -> Path:
    """Where this run writes: explicit ``run_dir``, the launcher's shared choice, the resumed run, or new.

    Every process of a distributed job must agree: processes started by Lightning receive rank 0's
    folder (:class:`~faceforge.train._lightning.LaunchHandover`); torchrun/SLURM jobs derive it
    from the job id.
    """
    from faceforge.train._lightning import LaunchHandover

    handed = LaunchHandover.inherited()
    if cfg.get("run_dir"):
        run = Path(cfg["run_dir"])
    elif handed is not None:
        run = handed[0]
    elif resume is not None and resume.parent.name == "checkpoints":
        run = resume.parent.parent
    elif os.environ.get("SLURM_JOB_ID") and int(os.environ.get("SLURM_NTASKS", "1")) > 1:
        run = Path(cfg["run_root"]) / str(cfg["name"]) / f"slurm-{os.environ['SLURM_JOB_ID']}"
    elif os.environ.get("TORCHELASTIC_RUN_ID", "none") not in ("", "none"):
        run = Path(cfg["run_root"]) / str(cfg["name"]) / f"torchrun-{os.environ['TORCHELASTIC_RUN_ID']}"
    elif env_rank() != 0:
        raise FaceforgeError(
            "a distributed launch needs a shared run directory: pass --run_dir (or torchrun --rdzv-id)"
        )
    else:
        return make_run_dir(cfg)
    run.mkdir(parents=True, exist_ok=True)
    return run


def make_loggers(cfg: dict[str, Any], run_dir: Path) -> list[Any]:
    """The loggers of ``trainer.logger``; wandb and mlflow are optional packages."""
    import importlib.util

    from lightning.pytorch import loggers as pl_loggers

    names = cfg["trainer"]["logger"]
    names = [] if names is None else names if isinstance(names, list) else [names]
    out: list[Any] = []
    for name in names:
        if name in ("wandb", "mlflow") and importlib.util.find_spec(name) is None:
            raise FaceforgeError(
                f"trainer.logger {name!r} needs the {name} package, which is not installed: "
                f"pip install {name}"
            )
        if name == "tensorboard":
            out.append(pl_loggers.TensorBoardLogger(save_dir=str(run_dir), name="tb", version=""))
        elif name == "csv":
            out.append(pl_loggers.CSVLogger(save_dir=str(run_dir), name="csv", version=""))
        elif name == "wandb":
            # WANDB_MODE=offline writes under the run directory and never opens a connection.
            out.append(
                pl_loggers.WandbLogger(
                    name=run_dir.name,
                    project=str(cfg["name"]),
                    save_dir=str(run_dir),
                    offline=os.environ.get("WANDB_MODE", "") in ("offline", "disabled"),
                )
            )
        elif name == "mlflow":
            uri = os.environ.get("MLFLOW_TRACKING_URI") or (run_dir / "mlruns").resolve().as_uri()
            out.append(
                pl_loggers.MLFlowLogger(
                    experiment_name=str(cfg["name"]), run_name=run_dir.name, tracking_uri=uri
                )
            )
        else:
            raise FaceforgeError(f"config key 'trainer.logger' has an unknown value {name!r}")
    return out


def _early_stopping(cfg: dict[str, Any]) -> Any:
    from lightning.pytorch.callbacks import EarlyStopping

    es = cfg["trainer"]["early_stopping"]
    # auto: the checkpoint's monitor, so the run stops on the metric that picks its best model.
    want = es.get("monitor")
    if want in (None, "auto"):
        want = cfg["checkpoint"]["monitor"]
    monitor, mode = resolve_monitor(cfg, want, es.get("mode"))
    return EarlyStopping(
        monitor=monitor,
        patience=int(es.get("patience", 3)),
        mode=mode,
        min_delta=float(es.get("min_delta", 0.0)),
        check_on_train_epoch_end=True,
        strict=True,
    )


def checkpoint_callbacks(cfg: dict[str, Any], ckpt_dir: Path) -> tuple[list[Any], str, str]:
    """The ``ModelCheckpoint`` callbacks of ``checkpoint.keep``, and the resolved ``(monitor, mode)``.

    ``best`` (default): ``best.ckpt`` by the monitor; ``N``: also the N best as
    ``best-eEEE-sSSSSSS.ckpt``; ``all``: also ``epochEEE.ckpt`` after every epoch; ``last``: none
    (``last.ckpt``, written by :class:`~faceforge.train.callbacks.ResumeCheckpoint`, is the result).
    """
    from lightning.pytorch.callbacks import ModelCheckpoint

    from faceforge.train.callbacks import KeptCheckpoints

    ck = cfg["checkpoint"]
    monitor, mode = resolve_monitor(cfg, ck["monitor"], ck["mode"])
    keep = ck["keep"]
    if keep == "last":
        return [], monitor, mode
    every = int(cfg["verification"]["every_n_steps"])
    by_step = every > 0 and monitor.startswith("val/") and not _is_retrieval_metric(monitor)
    common = {
        "dirpath": ckpt_dir,
        "save_last": False,
        "auto_insert_metric_name": False,
        "enable_version_counter": False,
    }
    step_kw = {"every_n_train_steps": every} if by_step else {}
    out = [ModelCheckpoint(filename="best", monitor=monitor, mode=mode, save_top_k=1, **common, **step_kw)]
    if isinstance(keep, int) and keep > 1:
        top = "best-e{epoch:03d}-s{step:06d}"
        out.append(
            KeptCheckpoints(filename=top, monitor=monitor, mode=mode, save_top_k=keep, **common, **step_kw)
        )
    elif keep == "all":
        out.append(KeptCheckpoints(filename="epoch{epoch:03d}", monitor=None, save_top_k=-1, **common))
    return out, monitor, mode


def _is_retrieval_metric(name: str) -> bool:
    return name in ("val/knn_acc", "val/map_at_r") or name.startswith("val/recall@")


def trained_epochs(path: Path) -> tuple[int, bool]:
    """``(whole epochs completed, whether a further epoch was started)`` of a training checkpoint."""
    from faceforge.train._lightning import checkpoint_epochs

    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except RuntimeError:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    return checkpoint_epochs(ckpt)


def train(cfg: dict[str, Any], evaluate_test: bool = True) -> RunResult:
    """Train the model described by ``cfg``; evaluate the best checkpoint on the test pairs.

    ``cfg["resume"]`` (``auto`` or a path) continues a run from its ``last.ckpt``: weights, head
    shards, optimizer, scheduler, sampler position, RNG states, epoch and step. ``auto`` skips
    checkpoints that do not load (truncated, refused), saying which (:func:`pick_resume_checkpoint`).
    """
    import lightning as L

    from faceforge.train._lightning import AtomicCheckpointIO, LaunchHandover, disk_warning, quiet_lightning
    from faceforge.train.callbacks import (
        EpochSummary,
        ResumeCheckpoint,
        RetrievalCallback,
        VerificationCallback,
        clean_stale_temps,
    )
    from faceforge.train.datamodule import FaceDataModule
    from faceforge.train.module import FaceRecognitionModule
    from faceforge.train.presets import apply_preset

    quiet_lightning()
    validate_components(cfg)
    cfg = copy.deepcopy(cfg)
    tcfg = cfg["trainer"]
    if int(tcfg.get("num_threads") or 0) > 0:
        torch.set_num_threads(int(tcfg["num_threads"]))
    rank0 = env_rank() == 0
    preset = apply_preset(cfg)
    if rank0:
        print(preset.summary, flush=True)
    handed = LaunchHandover.inherited()
    if handed is not None:  # chosen by rank 0 for the processes it launched
        resume, skipped = handed[1], []
    else:
        resume, skipped = pick_resume_checkpoint(cfg)
    if rank0 and cfg.get("resume") is not None:
        for q, why in skipped:
            print(f"resume auto: skipped {q}: it {why}", flush=True)
        if resume:
            print(f"resume: {resume}")
        elif skipped:
            print(f"resume auto: no checkpoint of {cfg['name']!r} loads; starting afresh")
        else:
            print(f"resume auto: no earlier run of {cfg['name']!r}; starting afresh")
    if resume is not None and int(tcfg["max_epochs"]) >= 0:
        done, partial = trained_epochs(resume)
        if done + partial > int(tcfg["max_epochs"]):
            what = f"{done} epochs" + (f" and part of epoch {done + 1}" if partial else "")
            raise FaceforgeError(
                f"resume: {resume} has trained {what}, more than trainer.max_epochs {tcfg['max_epochs']}; "
                f"pass --trainer.max_epochs {done + partial} or more to continue it"
            )
    if preset.tf32:
        # TF32 tensor-core matmuls and convolutions (Ampere+): fp32 range, 10-bit mantissa.
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    L.seed_everything(int(cfg["seed"]), workers=True, verbose=False)
    dm = FaceDataModule(cfg["data"], seed=int(cfg["seed"]))
    if rank0 and dm.pk is not None:
        p, k = dm.pk
        print(f"sampler: {p} classes x {k} images = {p * k} per batch and device", flush=True)
    module = FaceRecognitionModule(cfg, dm.num_classes)
    if dm.mixup is not None:
        module.set_mixup(dm.mixup)
        if rank0:
            print(f"identity mixup: {len(dm.mixup)} mixed identities from {cfg['data']['mixup']}", flush=True)
    if rank0 and module.freeze_epochs > 0:
        what = "backbone"
        if hasattr(module.backbone, "trunk") and hasattr(module.backbone, "neck"):
            what = "backbone trunk (its embedding neck trains with the head)"
        print(f"warm-up: {what} frozen for the first {module.freeze_epochs} epoch(s)", flush=True)
    val = dm.val_sets()
    rcfg = cfg["validation"]["retrieval"]
    retrieval_data = dm.retrieval_data(rcfg["split"]) if rcfg is not None else None
    run_dir = resolve_run_dir(cfg, resume)
    if rank0:
        atomic_write_bytes(run_dir / "config.yaml", dump_config({**cfg, "resume": None}).encode("utf-8"))
    ckpt_dir = run_dir / "checkpoints"
    if rank0:
        for stale in clean_stale_temps(ckpt_dir):
            print(f"removed {stale}: a temporary checkpoint left by an interrupted save", flush=True)

    callbacks: list[Any] = []
    vcfg = cfg["verification"]
    verification = None
    if val:
        verification = VerificationCallback(
            val, int(vcfg["every_n_steps"]), bool(vcfg["flip"]), int(vcfg["batch_size"])
        )
        callbacks.append(verification)
    retrieval = None
    if retrieval_data is not None:
        retrieval = RetrievalCallback(
            *retrieval_data, rcfg["k"], rcfg["ks"], bool(vcfg["flip"]), int(vcfg["batch_size"])
        )
        callbacks.append(retrieval)
    if tcfg["early_stopping"] is not None:
        callbacks.append(_early_stopping(cfg))
    summary = EpochSummary(dm.load_time_skipped, verification, dm.runtime_skipped, retrieval)
    summary.verbose = rank0
    callbacks.append(summary)
    ckpt_cbs, monitor, mode = checkpoint_callbacks(cfg, ckpt_dir)
    if rank0:
        keep = cfg["checkpoint"]["keep"]
        what = "last.ckpt only" if keep == "last" else f"best.ckpt follows {monitor} ({mode})"
        print(f"checkpoint: {what}, keep {keep}", flush=True)
        if (warning := disk_warning(module, cfg, ckpt_dir)) is not None:
            print(warning, flush=True)
    callbacks += ckpt_cbs
    callbacks.append(ResumeCheckpoint(ckpt_dir / "last.ckpt", int(tcfg["checkpoint_every_n_steps"])))
    strategy = tcfg["strategy"]
    if strategy == "ddp" and int(tcfg["freeze_backbone_epochs"]) > 0:
        # The frozen backbone gets no gradients: DDP must not wait for them.
        strategy = "ddp_find_unused_parameters_true"
    trainer = L.Trainer(
        default_root_dir=run_dir,
        max_epochs=int(tcfg["max_epochs"]),
        max_steps=int(tcfg["max_steps"]),
        precision=tcfg["precision"],
        accelerator=tcfg["accelerator"],
        devices=tcfg["devices"],
        num_nodes=int(tcfg["num_nodes"]),
        strategy=strategy,
        accumulate_grad_batches=int(tcfg["accumulate_grad_batches"]),
        benchmark=bool(preset.cudnn_benchmark),
        log_every_n_steps=int(tcfg["log_every_n_steps"]),
        gradient_clip_val=tcfg["gradient_clip_val"],
        deterministic=bool(tcfg["deterministic"]),
        # A progress bar in a log file is thousands of carriage-return lines: only on a terminal.
        enable_progress_bar=bool(tcfg["enable_progress_bar"]) and sys.stderr.isatty(),
        enable_model_summary=False,
        logger=make_loggers(cfg, run_dir) or False,
        callbacks=callbacks,
        plugins=[AtomicCheckpointIO()],
        num_sanity_val_steps=0,
        # The data module's sampler shards by rank itself (and can resume mid-epoch).
        use_distributed_sampler=False,
    )
    with LaunchHandover.publish(run_dir, resume):
        trainer.fit(module, datamodule=dm, ckpt_path=resume, weights_only=True)

    last = ckpt_dir / "last.ckpt"
    best = ckpt_dir / "best.ckpt"
    if not best.exists():
        best = last
    result = RunResult(run_dir, best, last, summary.history)
    if not trainer.is_global_zero:
        return result
    if verification is not None:
        result.val = {"best_accuracy": verification.best}
        if verification.named:
            result.val["best_per_set"] = dict(verification.best_per_set)
    result.val.update({"monitor": monitor, "mode": mode})
    for cb in ckpt_cbs:
        if cb.monitor is not None and cb.best_model_score is not None:
            result.val["best_score"] = float(cb.best_model_score)
            break
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
    atomic_write_bytes(path, json.dumps(data, indent=2, default=_plain).encode())
    return path


def _plain(o: Any) -> Any:
    if hasattr(o, "tolist"):
        return o.tolist()
    raise FaceforgeError(f"metrics.json: cannot serialise {type(o).__name__}")
