"""P×K sampling (batches, ranks, exact mid-epoch resume), the step schedule, the GPU preset table and
fp32 checkpoints; no training."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from faceforge.train.config import load_config
from faceforge.train.datamodule import FaceDataModule, ResumablePKSampler
from faceforge.train.optim import lr_factor
from faceforge.train.presets import DeviceInfo, apply_preset, choose_preset

LABELS = np.repeat(np.arange(10), [3, 5, 6, 6, 7, 8, 4, 5, 9, 2])  # uneven classes, one smaller than K


def _epoch(s: ResumablePKSampler, epoch: int) -> list[list[int]]:
    s.set_epoch(epoch)
    return [list(b) for b in s]


def test_pk_batches_hold_p_classes_of_k_samples() -> None:
    s = ResumablePKSampler(LABELS, 4, 3, seed=7)
    batches = _epoch(s, 0)
    assert len(batches) == len(s) == -(-len(LABELS) // 12)
    for b in batches:
        counts = Counter(int(LABELS[i]) for i in b)
        assert len(b) == 12 and len(counts) == 4 and set(counts.values()) == {3}, counts
    assert _epoch(s, 0) == batches and _epoch(s, 1) != batches  # a function of (seed, epoch)


def test_pk_ranks_split_the_epoch_without_overlap() -> None:
    one = _epoch(ResumablePKSampler(LABELS, 2, 2, world_size=1, seed=3), 0)
    r0 = _epoch(ResumablePKSampler(LABELS, 2, 2, world_size=2, rank=0, seed=3), 0)
    r1 = _epoch(ResumablePKSampler(LABELS, 2, 2, world_size=2, rank=1, seed=3), 0)
    assert len(r0) == len(r1)
    # step s of rank r is global batch s * 2 + r: together the ranks train the one-process order
    interleaved = [b for pair in zip(r0, r1) for b in pair]
    assert interleaved == one[: len(interleaved)]


@pytest.mark.parametrize("with_seed", [False, True])
def test_pk_resume_mid_epoch_continues_with_the_next_batch(with_seed: bool) -> None:
    full = ResumablePKSampler(LABELS, 3, 2, seed=1, with_seed=with_seed)
    ref = _epoch(full, 2)
    resumed = ResumablePKSampler(LABELS, 3, 2, seed=1, with_seed=with_seed)
    resumed.resume(2, consumed_samples=4 * full.global_batch)  # 4 steps of epoch 2 were trained
    assert [list(b) for b in resumed] == ref[4:]
    assert len(resumed) == len(ref)  # Lightning counts the batches already done itself
    # Saved at the end of the epoch: the next epoch starts from its first batch.
    end = ResumablePKSampler(LABELS, 3, 2, seed=1, with_seed=with_seed)
    end.resume(2, consumed_samples=len(ref) * full.global_batch)
    assert [list(b) for b in end] == _epoch(ResumablePKSampler(LABELS, 3, 2, seed=1, with_seed=with_seed), 3)


def test_pk_data_module_picks_p_from_the_batch_size(synth_8x6: Path) -> None:
    base = ["--data.root", str(synth_8x6), "--data.image_size", "32", "--data.batch_size", "12"]
    dm = FaceDataModule(load_config(None, [*base, "--data.sampler.samples_per_class", "3"])["data"])
    assert dm.pk == (4, 3) and dm.batch_size == 12 and dm.global_micro_batch(2) == 24
    loader = dm.train_dataloader()
    images, labels = next(iter(loader))
    assert images.shape == (12, 3, 32, 32)
    assert sorted(Counter(labels.tolist()).values()) == [3, 3, 3, 3]
    # Lightning's per-epoch call reaches the P x K sampler (it calls loader.batch_sampler.sampler).
    from lightning.fabric.utilities.data import _set_sampler_epoch

    _set_sampler_epoch(loader, 3)
    assert dm.sampler.epoch == 3
    # More classes asked for than exist: all of them.
    dm = FaceDataModule(
        load_config(None, [*base, "--data.batch_size", "40", "--data.sampler.samples_per_class", "2"])["data"]
    )
    assert dm.pk == (8, 2)


def test_step_schedule_multiplies_by_gamma_at_each_decay_step() -> None:
    s = load_config(
        None,
        ["--scheduler.name", "step", "--scheduler.decay_steps", "[3, 5]", "--scheduler.gamma", "0.5",
         "--scheduler.warmup_epochs", "0"],
    )["scheduler"]  # fmt: skip
    assert [lr_factor(i, s, 10, 100) for i in range(7)] == pytest.approx([1, 1, 1, 0.5, 0.5, 0.25, 0.25])
    # with warm-up (2 epochs of 2 steps) the decay still counts optimizer steps from the first
    w = {**s, "warmup_epochs": 2.0, "decay_steps": [6]}
    assert [lr_factor(i, w, 2, 100) for i in range(8)] == pytest.approx([0.25, 0.5, 0.75, 1, 1, 1, 0.5, 0.5])


# ---------------------------------------------------------------- GPU preset table
A100_80 = DeviceInfo("cuda", "NVIDIA A100-SXM4-80GB", (8, 0), 79.2, 1, 32)
A100_40 = DeviceInfo("cuda", "NVIDIA A100-SXM4-40GB", (8, 0), 39.4, 1, 32)
RTX3090 = DeviceInfo("cuda", "NVIDIA GeForce RTX 3090", (8, 6), 23.7, 1, 32)
L40S = DeviceInfo("cuda", "NVIDIA L40S", (8, 9), 44.5, 1, 32)
H100 = DeviceInfo("cuda", "NVIDIA H100 80GB HBM3", (9, 0), 79.1, 1, 32)
T4 = DeviceInfo("cuda", "Tesla T4", (7, 5), 14.6, 1, 32)
V100 = DeviceInfo("cuda", "Tesla V100-SXM2-32GB", (7, 0), 31.7, 1, 32)


@pytest.mark.parametrize(
    ("info", "precision", "workers", "accum", "fast_kernels"),
    [
        (A100_80, "bf16-mixed", 16, 1, True),
        (A100_40, "bf16-mixed", 8, 2, True),
        (RTX3090, "16-mixed", 4, 4, True),
        (L40S, "bf16-mixed", 8, 1, True),  # other Ampere and newer: the generic rule
        (H100, "bf16-mixed", 8, 1, True),
        (T4, "16-mixed", 4, 4, False),  # pre-Ampere
        (V100, "16-mixed", 4, 4, False),
    ],
)
def test_gpu_preset_table(
    info: DeviceInfo, precision: str, workers: int, accum: int, fast_kernels: bool
) -> None:
    cfg = load_config(None)
    p = apply_preset(cfg, info)
    assert (p.precision, p.num_workers, p.accumulate_grad_batches) == (precision, workers, accum)
    assert (p.tf32, p.cudnn_benchmark) == (fast_kernels, fast_kernels)
    t = cfg["trainer"]
    assert (t["precision"], cfg["data"]["num_workers"], t["accumulate_grad_batches"]) == (
        precision,
        workers,
        accum,
    )
    assert (t["tf32"], t["cudnn_benchmark"]) == (fast_kernels, fast_kernels)
    assert f"tf32 {'on' if fast_kernels else 'off'}" in p.summary


def test_gpu_preset_values_are_overridable_and_bounded() -> None:
    cfg = load_config(
        None,
        ["--trainer.precision", "32-true", "--data.num_workers", "2",
         "--trainer.accumulate_grad_batches", "3", "--trainer.tf32", "false",
         "--trainer.cudnn_benchmark", "false"],
    )  # fmt: skip
    p = choose_preset(cfg, A100_40)
    assert (p.precision, p.num_workers, p.accumulate_grad_batches, p.tf32, p.cudnn_benchmark) == (
        "32-true", 2, 3, False, False,
    )  # fmt: skip
    # A fixed global batch decides accumulation; the row's count does not apply then.
    gb = load_config(None, ["--data.batch_size", "64", "--data.global_batch_size", "512"])
    assert choose_preset(gb, A100_40).accumulate_grad_batches == 8
    # Never more workers than cores per GPU; deterministic runs keep cudnn.benchmark off.
    small = DeviceInfo("cuda", "NVIDIA A100-SXM4-80GB", (8, 0), 79.2, 4, 12)
    assert choose_preset(load_config(None, ["--trainer.devices", "4"]), small).num_workers == 3
    assert not choose_preset(load_config(None, ["--trainer.deterministic", "true"]), A100_80).cudnn_benchmark


def test_checkpoint_weights_are_fp32_whatever_the_precision(synth_8x6: Path) -> None:
    from faceforge.train.module import FaceRecognitionModule

    cfg = load_config(
        None,
        ["--data.root", str(synth_8x6), "--data.image_size", "32", "--model.backbone.width", "0.25",
         "--model.backbone.embedding_size", "16"],
    )  # fmt: skip
    m = FaceRecognitionModule(cfg, 8).to(torch.bfloat16)
    ckpt = {"state_dict": m.state_dict()}
    assert any(v.dtype == torch.bfloat16 for v in ckpt["state_dict"].values())
    m.on_save_checkpoint(ckpt)
    floats = [v for v in ckpt["state_dict"].values() if v.is_floating_point()]
    assert floats and all(v.dtype == torch.float32 for v in floats)
