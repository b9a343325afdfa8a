"""A checkpoint that does not fit on its disk: refused before writing (or, when the disk fills up during
the write, reported as such) as one ENOSPC line naming the file, the size and the free space; the previous
checkpoint stays intact and no temporary file is left."""

from __future__ import annotations

import errno
import re
from pathlib import Path

import pytest
import torch

from faceforge.cli.main import EXIT_ERROR, main
from faceforge.train import _lightning
from faceforge.train._lightning import AtomicCheckpointIO

#: a small GhostFaceNet on 32x32 crops, no validation: seconds to train
TINY = ["--data.image_size", "32", "--data.batch_size", "8", "--model.backbone.width", "0.25",
        "--model.backbone.embedding_size", "32", "--trainer.num_threads", "1", "--data.val_pairs", "null",
        "--data.test_pairs", "null", "--trainer.enable_progress_bar", "false"]  # fmt: skip
CKPT = {"w": torch.zeros(1000, 250), "opt": {"m": torch.zeros(1000, 250)}}  # 2 x 1 MB of tensors


def _previous(tmp_path: Path) -> Path:
    path = tmp_path / "last.ckpt"
    AtomicCheckpointIO().save_checkpoint({"w": torch.ones(3)}, path)
    return path


def test_size_estimate_counts_every_storage_once() -> None:
    w = torch.zeros(1000, 250)
    assert _lightning._tensor_bytes(
        {"a": w, "b": [w, w[:10]], "c": (torch.zeros(10, dtype=torch.float64),)}
    ) == (1_000_000 + 80)


def test_refused_before_writing_when_the_disk_is_too_full(tmp_path, monkeypatch) -> None:
    path = _previous(tmp_path)
    monkeypatch.setattr(_lightning, "free_bytes", lambda folder: 1_500_000)  # less than 2 MB + overhead
    monkeypatch.setattr(_lightning.torch, "save", lambda *a, **k: pytest.fail("wrote despite the check"))
    with pytest.raises(OSError) as e:
        AtomicCheckpointIO().save_checkpoint(CKPT, path)
    assert e.value.errno == errno.ENOSPC and e.value.filename == str(path)
    assert "3.0 MB" in e.value.strerror and "1.5 MB free" in e.value.strerror  # 2 MB + 1 MiB overhead
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt"]
    assert torch.equal(torch.load(path, weights_only=True)["w"], torch.ones(3))  # previous one intact


def test_disk_filling_up_during_the_write_is_reported_as_no_space(tmp_path, monkeypatch) -> None:
    path = _previous(tmp_path)

    def fails_midway(obj, f) -> None:  # what torch does when a write to the zip archive comes up short
        f.write(b"x" * 1000)
        raise RuntimeError(
            "[enforce fail at inline_container.cc:672] . unexpected pos 433762240 vs 433762128"
        )

    monkeypatch.setattr(_lightning.torch, "save", fails_midway)
    with pytest.raises(OSError, match="no space left") as e:
        AtomicCheckpointIO().save_checkpoint(CKPT, path)
    assert e.value.errno == errno.ENOSPC and isinstance(e.value.__cause__, RuntimeError)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt"]  # the temporary is gone
    assert torch.equal(torch.load(path, weights_only=True)["w"], torch.ones(3))


def test_other_write_errors_pass_through_unchanged(tmp_path, monkeypatch) -> None:
    path = _previous(tmp_path)

    def broken(obj, f) -> None:
        raise RuntimeError("something else")

    monkeypatch.setattr(_lightning.torch, "save", broken)
    with pytest.raises(RuntimeError, match="something else"):
        AtomicCheckpointIO().save_checkpoint(CKPT, path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt"]


def test_train_on_a_full_disk_ends_with_one_line_not_an_internal_error(
    synth_8x6, tmp_path, monkeypatch, capsys
) -> None:
    monkeypatch.setattr(_lightning, "free_bytes", lambda folder: 1000)
    args = ["--data.root", str(synth_8x6), "--run_root", str(tmp_path), *TINY, "--trainer.max_epochs", "1"]
    code = main(["train", *args])
    captured = capsys.readouterr()
    err = captured.err.strip().splitlines()
    assert code == EXIT_ERROR, err
    # warned before the first step, with the size and how many files the run keeps at once
    warning = [ln for ln in captured.out.splitlines() if ln.startswith("warning: each checkpoint")]
    assert len(warning) == 1 and "up to 3 exist at once" in warning[0] and "0.0 MB free" in warning[0]
    assert err[-1].startswith("faceforge: error: ") and re.search(
        r"/checkpoints/\w+\.ckpt: no space left on the disk", err[-1]
    ), err[-1]
    assert "internal error" not in "\n".join(err) and "Traceback" not in "\n".join(err)


@pytest.mark.parametrize("optimizer", [["--optimizer.name", "sgd"], ["--optimizer.name", "adamw"],
                                       ["--optimizer.name", "sgd", "--optimizer.momentum", "0"]],
                         ids=["sgd-momentum", "adamw", "sgd-plain"])  # fmt: skip
def test_the_size_estimate_matches_the_checkpoint_written(synth_8x6, tmp_path, optimizer) -> None:
    from faceforge.train.config import load_config
    from faceforge.train.module import FaceRecognitionModule
    from faceforge.train.run import train

    args = ["--data.root", str(synth_8x6), "--run_root", str(tmp_path), *TINY, "--trainer.max_steps", "2",
            "--checkpoint.keep", "last", *optimizer]  # fmt: skip
    cfg = load_config(None, args)
    r = train(cfg, evaluate_test=False)
    written = _lightning._tensor_bytes(torch.load(r.last_checkpoint, weights_only=True))
    module = FaceRecognitionModule(cfg, num_classes=8)
    estimate = _lightning.checkpoint_bytes(module, cfg) - AtomicCheckpointIO.OVERHEAD
    assert abs(estimate - written) <= 0.02 * written, (estimate, written)
    assert (
        _lightning.checkpoint_files_at_peak("last", 9) == 2 and _lightning.checkpoint_files_at_peak(2, 9) == 5
    )


def test_head_lr_scale_sets_the_class_centres_own_learning_rate(synth_8x6, tmp_path) -> None:
    from faceforge.train.config import load_config
    from faceforge.train.run import train

    def states(scale: float, steps: int) -> dict[str, torch.Tensor]:
        args = ["--data.root", str(synth_8x6), "--run_root", str(tmp_path / f"{scale}_{steps}"), *TINY,
                "--trainer.max_steps", str(steps), "--checkpoint.keep", "last", "--optimizer.name", "adamw",
                "--optimizer.lr", "0.01", "--optimizer.head_lr_scale", str(scale),
                "--scheduler.warmup_epochs", "0"]  # fmt: skip
        r = train(load_config(None, args), evaluate_test=False)
        return torch.load(r.last_checkpoint, weights_only=True)["state_dict"]

    frozen_1, frozen_3, moving_3 = states(0.0, 1), states(0.0, 3), states(1.0, 3)
    head = [k for k in frozen_1 if k.startswith("head.")]
    body = [k for k in frozen_1 if k.startswith("backbone.") and frozen_1[k].is_floating_point()]
    assert head and body
    # scale 0: the centres keep their initial values while the backbone trains; scale 1 moves them
    assert all(torch.equal(frozen_1[k], frozen_3[k]) for k in head)
    assert any(not torch.equal(frozen_1[k], frozen_3[k]) for k in body)
    assert any(not torch.equal(frozen_1[k], moving_3[k]) for k in head)


def test_head_lr_scale_follows_the_schedule() -> None:
    from torch import nn

    from faceforge.train.optim import build_optimizer, param_groups

    groups = param_groups(nn.Linear(4, 4), nn.Linear(4, 2), 0.05, 0.05, head_lr=0.1 * 2e-3)
    opt = build_optimizer({"name": "adamw", "lr": 2e-3}, groups)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 0.5**step)
    for _ in range(3):
        lrs = {g["name"]: g["lr"] for g in opt.param_groups}
        assert (
            lrs["head"] == pytest.approx(0.1 * lrs["backbone"])
            and lrs["backbone"] == lrs["backbone_no_decay"]
        )
        opt.step()
        sched.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(2e-3 / 8)
