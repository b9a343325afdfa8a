"""Crash-safe checkpoints: fsync before the rename, stale temporary files removed at start, and
``--resume auto`` with a truncated (or refused) newest checkpoint resumes from the previous one, saying so."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import torch

from faceforge.train._lightning import AtomicCheckpointIO
from faceforge.train.callbacks import clean_stale_temps
from faceforge.train.run import check_resume_checkpoint, pick_resume_checkpoint

ARGS = [
    "--name", "r",
    "--data.image_size", "32",
    "--data.batch_size", "8",
    "--model.backbone.width", "0.25",
    "--model.backbone.stride", "2",
    "--model.backbone.embedding_size", "16",
    "--model.head.scale", "16",
    "--trainer.max_epochs", "1",
    "--trainer.num_threads", "1",
    "--trainer.enable_progress_bar", "false",
    "--trainer.logger", "null",
    "--data.val_pairs", "null",
    "--data.test_pairs", "null",
]  # fmt: skip


def test_checkpoint_io_fsyncs_before_the_rename(tmp_path, monkeypatch) -> None:
    calls: list[str] = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(os, "fsync", lambda fd: (calls.append("fsync"), real_fsync(fd))[1])
    monkeypatch.setattr(os, "replace", lambda a, b: (calls.append("replace"), real_replace(a, b))[1])
    AtomicCheckpointIO().save_checkpoint({"state_dict": {"w": torch.ones(2)}}, tmp_path / "c" / "last.ckpt")
    assert calls[:2] == ["fsync", "replace"] and calls.count("fsync") >= 2  # the file, then the folder
    assert [p.name for p in (tmp_path / "c").iterdir()] == ["last.ckpt"]


def test_stale_temporary_checkpoints_are_removed(tmp_path) -> None:
    d = tmp_path / "checkpoints"
    d.mkdir()
    for name in (".last.ckpt.tmp4242", ".best.ckpt.tmp7", "last.ckpt", "notes.tmp1"):
        (d / name).write_bytes(b"x")
    removed = clean_stale_temps(d)
    assert sorted(p.name for p in removed) == [".best.ckpt.tmp7", ".last.ckpt.tmp4242"]
    assert sorted(p.name for p in d.iterdir()) == ["last.ckpt", "notes.tmp1"]


def _ckpt(path: Path, step: int, backbone: dict | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    cfg = {
        "model": {"backbone": backbone or {"name": "ghostfacenetv1", "width": 0.25}},
        "data": {"image_size": 32},
    }
    torch.save({"state_dict": {}, "global_step": step, "hyper_parameters": {"config": cfg}}, path)
    return path


def test_resume_auto_skips_what_does_not_load(tmp_path) -> None:
    from faceforge.train.config import load_config

    cfg = load_config(None, ["--run_root", str(tmp_path), "--name", "n", "--resume", "auto"])
    a = _ckpt(tmp_path / "n/1/checkpoints/last.ckpt", 5)
    b = _ckpt(tmp_path / "n/2/checkpoints/last.ckpt", 9)
    c = _ckpt(
        tmp_path / "n/3/checkpoints/last.ckpt",
        12,
        {"name": "timm/resnet18", "pretrained_cfg_overlay": {"url": "http://x"}},
    )
    b.write_bytes(b.read_bytes()[: b.stat().st_size // 2])  # truncated
    for k, p in enumerate((a, b, c)):
        os.utime(p, (1_000_000 + k, 1_000_000 + k))
    got, skipped = pick_resume_checkpoint(cfg)
    assert got == a
    assert [p for p, _ in skipped] == [c, b]
    assert "refused" in skipped[0][1] and "pretrained_cfg_overlay" in skipped[0][1]
    assert "does not load" in skipped[1][1]
    assert check_resume_checkpoint(a) is None


def test_resume_auto_after_a_truncated_newest_checkpoint(tmp_path, capsys) -> None:
    from faceforge.data.synth.writer import write_dataset
    from faceforge.train.config import load_config
    from faceforge.train.run import train

    data = tmp_path / "data"
    write_dataset(
        data, identities=4, images_per_id=4, val_identities=0, test_identities=0, workers=1, progress=False
    )
    args = [*ARGS, "--data.root", str(data), "--run_root", str(tmp_path / "runs")]
    first = train(load_config(None, args))
    older = first.last_checkpoint
    assert older.is_file()
    # a later run of the same name whose last.ckpt was truncated (a disk that filled up, a bad copy)
    newer = tmp_path / "runs" / "r" / "29991231-000000" / "checkpoints"
    newer.mkdir(parents=True)
    (newer / "last.ckpt").write_bytes(older.read_bytes()[: older.stat().st_size // 3])
    (newer / ".last.ckpt.tmp31337").write_bytes(b"partial")
    now = time.time()
    for f in older.parent.iterdir():  # the first run's last.ckpt and best.ckpt are older
        os.utime(f, (now - 60, now - 60))
    capsys.readouterr()
    res = train(load_config(None, [*args, "--resume", "auto", "--trainer.max_epochs", "2"]))
    out = capsys.readouterr().out
    assert f"resume auto: skipped {newer / 'last.ckpt'}: it does not load" in out
    assert f"resume: {older}" in out
    assert res.run_dir == first.run_dir
    assert int(torch.load(res.last_checkpoint, weights_only=True)["global_step"]) > 0
    shutil.rmtree(tmp_path / "runs")
