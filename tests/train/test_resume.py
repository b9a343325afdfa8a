"""Exact resume: a CLI run killed with SIGKILL mid-epoch and resumed with ``--resume auto`` ends with the
weights of an uninterrupted run (deterministic CPU mode, one thread, tiny SynthFaces set)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from faceforge.errors import FaceforgeError
from faceforge.train.config import load_config
from faceforge.train.run import find_resume_checkpoint, train

# 48 images, batch 4: 12 steps per epoch, 24 in all; last.ckpt every 5 steps (5, 10, 12, 15, ...).
ARGS = [
    "--name", "r",
    "--data.image_size", "32",
    "--data.batch_size", "4",
    "--model.backbone.width", "0.25",
    "--model.backbone.stride", "2",
    "--model.backbone.embedding_size", "32",
    "--model.backbone.dropout", "0.2",  # draws from the global RNG in every step
    "--model.head.scale", "16",
    "--trainer.max_epochs", "2",
    "--trainer.deterministic", "true",
    "--trainer.num_threads", "1",
    "--trainer.checkpoint_every_n_steps", "5",
    "--trainer.enable_progress_bar", "false",
    "--data.val_pairs", "null",
    "--data.test_pairs", "null",
    "--data.augment", "[{name: low_resolution, factor: [2, 4], p: 0.5}]",
]  # fmt: skip
STEPS_PER_EPOCH = 12


@pytest.fixture
def data(synth_8x6: Path) -> Path:
    return synth_8x6


def _step(path: Path) -> int:
    return int(torch.load(path, map_location="cpu", weights_only=True)["global_step"])


@pytest.mark.slow
def test_sigkill_mid_epoch_then_resume_auto_equals_uninterrupted(data, tmp_path) -> None:
    # Uninterrupted reference (in this process: the same code path as the CLI).
    ref = train(load_config(None, [*ARGS, "--data.root", str(data), "--run_root", str(tmp_path / "a")]))

    runs = tmp_path / "b"
    cmd = [sys.executable, "-m", "faceforge.cli.main", "train", *ARGS, "--data.root", str(data),
           "--run_root", str(runs)]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    killed_at = None
    deadline = time.monotonic() + 240
    while proc.poll() is None and time.monotonic() < deadline:
        found = list((runs / "r").glob("*/checkpoints/last.ckpt"))
        if found and _step(found[0]) >= 5:
            os.kill(proc.pid, signal.SIGKILL)
            killed_at = found[0]
            break
        time.sleep(0.02)
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read().decode()[-2000:] if proc.stderr else ""
    assert killed_at is not None
    step = _step(killed_at)
    assert 0 < step < 2 * STEPS_PER_EPOCH and step % STEPS_PER_EPOCH != 0, step  # really mid-epoch

    r = subprocess.run([*cmd, "--resume", "auto"], capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert f"resume: {killed_at}" in r.stdout
    a = torch.load(ref.last_checkpoint, weights_only=True)
    b = torch.load(killed_at, weights_only=True)  # the resumed run continued in the same run directory
    assert a["global_step"] == b["global_step"] == 2 * STEPS_PER_EPOCH
    assert a["state_dict"].keys() == b["state_dict"].keys()
    diff = max(
        (a["state_dict"][k].double() - b["state_dict"][k].double()).abs().max().item()
        for k in a["state_dict"]
    )
    assert diff <= 1e-6, diff
    sa, sb = a["optimizer_states"][0]["state"], b["optimizer_states"][0]["state"]
    assert all(torch.allclose(sa[i]["momentum_buffer"], sb[i]["momentum_buffer"], atol=1e-6) for i in sa)
    # The epoch summary of the interrupted epoch covers its steps from before and after the kill.
    ha = json.loads((ref.run_dir / "metrics.json").read_text())["history"]
    hb = json.loads((killed_at.parent.parent / "metrics.json").read_text())["history"]
    assert [h["epoch"] for h in hb] == [0, 1]
    assert [h["loss"] for h in hb] == pytest.approx([h["loss"] for h in ha], abs=1e-6)


def test_resume_auto_without_a_previous_run_starts_afresh(tmp_path) -> None:
    cfg = load_config(None, ["--run_root", str(tmp_path), "--name", "none", "--resume", "auto"])
    assert find_resume_checkpoint(cfg) is None
    old = tmp_path / "none" / "20200101-000000" / "checkpoints"
    new = tmp_path / "none" / "20200102-000000" / "checkpoints"
    for d, t in ((old, 1_000_000), (new, 2_000_000)):
        d.mkdir(parents=True)
        (d / "last.ckpt").write_bytes(b"x")
        os.utime(d / "last.ckpt", (t, t))
    (tmp_path / "none" / "20200103-000000" / "checkpoints").mkdir(parents=True)  # no last.ckpt: ignored
    assert find_resume_checkpoint(cfg) == new / "last.ckpt"
    with pytest.raises(FaceforgeError, match=r"nope\.ckpt does not exist"):
        find_resume_checkpoint(load_config(None, ["--resume", str(tmp_path / "nope.ckpt")]))
