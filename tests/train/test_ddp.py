"""DDP on CPU (gloo, 2 processes) with Partial FC:
train, verify on rank 0, checkpoint, resume as 1 process.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from faceforge.train.config import load_config
from faceforge.train.run import train

TINY = [
    "--name", "d",
    "--data.image_size", "32",
    "--data.batch_size", "8",
    "--model.backbone.width", "0.25",
    "--model.backbone.stride", "2",
    "--model.backbone.embedding_size", "32",
    "--model.head.scale", "16",
    "--model.partial_fc", "{sample_rate: 0.5}",
    "--verification.batch_size", "64",
    "--data.test_pairs", "null",
    "--trainer.num_threads", "1",
    "--trainer.enable_progress_bar", "false",
    "--trainer.accelerator", "cpu",
]  # fmt: skip


@pytest.fixture
def data(synth_8x6: Path) -> Path:
    return synth_8x6


@pytest.mark.slow
def test_two_process_ddp_partial_fc_then_resume_as_one_process(data, tmp_path) -> None:
    runs = tmp_path / "runs"
    cmd = [sys.executable, "-m", "faceforge.cli.main", "train", *TINY, "--data.root", str(data),
           "--run_root", str(runs), "--trainer.devices", "2", "--trainer.strategy", "ddp",
           "--trainer.max_epochs", "1", "--trainer.checkpoint_every_n_steps", "1"]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    # Verification ran on rank 0 only and printed once; both ranks used one run directory.
    assert r.stdout.count("val acc") == 1 and r.stdout.count("run directory:") == 1, r.stdout
    (run_dir,) = list((runs / "d").iterdir())
    ckpt = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["faceforge_world_size"] == 2 and len(ckpt["faceforge_rng"]["torch"]) == 2
    assert ckpt["global_step"] == 3  # 48 images / (8 per rank x 2 ranks)
    # The sharded class centres and their momentum were gathered to the full 8 x 32 matrix.
    assert ckpt["state_dict"]["head.weight"].shape == (8, 32)
    mom = ckpt["optimizer_states"][0]["state"][ckpt["faceforge_pfc_opt_index"]]["momentum_buffer"]
    assert mom.shape == (8, 32) and mom.abs().sum(1).gt(0).sum() >= 4  # rows of both shards moved
    assert json.loads((run_dir / "metrics.json").read_text())["val"]["best_accuracy"] > 0

    # Resume as one process; the same global batch of 16 takes 2 accumulated batches of 8.
    more = ["--trainer.max_epochs", "2", "--data.global_batch_size", "16", "--resume", "auto"]
    cfg = load_config(None, [*TINY, "--data.root", str(data), "--run_root", str(runs), *more])
    res = train(cfg, evaluate_test=False)
    assert res.run_dir == run_dir
    after = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert after["global_step"] == 6 and after["faceforge_world_size"] == 1
    assert [h["epoch"] for h in res.history] == [0, 1]
    assert torch.isfinite(after["state_dict"]["head.weight"]).all()
    assert not torch.equal(after["state_dict"]["head.weight"], ckpt["state_dict"]["head.weight"])


@pytest.mark.slow  # trains a model
def test_mid_epoch_resume_with_another_global_micro_batch_keeps_the_image_position(
    data, tmp_path, monkeypatch
) -> None:
    """Batch 16, crashed after 1 of 3 steps; resumed with batch 8 x accumulation 2: 2 steps remain.

    (Lightning alone would count 1 of 6 micro-batches done and step after a single micro-batch.)"""
    from faceforge.train.module import FaceRecognitionModule

    base = [*TINY, "--data.root", str(data), "--run_root", str(tmp_path), "--data.val_pairs", "null",
            "--model.partial_fc", "null", "--trainer.checkpoint_every_n_steps", "1"]  # fmt: skip
    step = FaceRecognitionModule.training_step

    def crash_at_step_2(self, batch, batch_idx):
        if self.global_step == 1:
            raise RuntimeError("simulated crash")
        return step(self, batch, batch_idx)

    monkeypatch.setattr(FaceRecognitionModule, "training_step", crash_at_step_2)
    with pytest.raises(RuntimeError, match="simulated crash"):
        train(load_config(None, [*base, "--data.batch_size", "16", "--trainer.max_epochs", "2"]))
    monkeypatch.setattr(FaceRecognitionModule, "training_step", step)
    (last,) = list(tmp_path.glob("d/*/checkpoints/last.ckpt"))
    ck = torch.load(last, weights_only=True)
    assert ck["global_step"] == 1 and ck["FaceDataModule"]["consumed_samples"] == 16
    res = train(load_config(None, [*base, "--data.global_batch_size", "16", "--trainer.max_epochs", "2",
                                   "--resume", "auto"]))  # fmt: skip
    # Epoch 0 ends after the 32 images it had left in 2 steps; epoch 1 has 3 steps.
    assert [(h["epoch"], h["step"]) for h in res.history] == [(0, 3), (1, 6)]
