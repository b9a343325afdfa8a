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
    synth_8x6, tmp_path, monkeypatch, capsys, tiny_args
) -> None:
    monkeypatch.setattr(_lightning, "free_bytes", lambda folder: 1000)
    args = [
        "--data.root",
        str(synth_8x6),
        "--run_root",
        str(tmp_path),
        *tiny_args,
        "--trainer.max_epochs",
        "1",
    ]
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
def test_the_size_estimate_matches_the_checkpoint_written(synth_8x6, tmp_path, optimizer, tiny_args) -> None:
    from faceforge.train.config import load_config
    from faceforge.train.module import FaceRecognitionModule
    from faceforge.train.run import train

    args = ["--data.root", str(synth_8x6), "--run_root", str(tmp_path), *tiny_args,
            "--trainer.max_steps", "2", "--checkpoint.keep", "last", *optimizer]  # fmt: skip
    cfg = load_config(None, args)
    r = train(cfg, evaluate_test=False)
    written = _lightning._tensor_bytes(torch.load(r.last_checkpoint, weights_only=True))
    module = FaceRecognitionModule(cfg, num_classes=8)
    estimate = _lightning.checkpoint_bytes(module, cfg) - AtomicCheckpointIO.OVERHEAD
    assert abs(estimate - written) <= 0.02 * written, (estimate, written)
    assert (
        _lightning.checkpoint_files_at_peak("last", 9) == 2 and _lightning.checkpoint_files_at_peak(2, 9) == 5
    )
