"""Lightning's internals are read in one module, ``faceforge.train._lightning`` (issue #17): a Lightning
upgrade that moves a counter or renames a warning is fixed there and nowhere else."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

pytest.importorskip("lightning")

from faceforge.train import _lightning

SRC = Path(_lightning.__file__).resolve().parents[1]
#: what only _lightning.py may touch: loop internals, the checkpoint's "loops" state, warning filters,
#: Lightning's private modules, the process hand-over variables
INTERNALS = re.compile(
    r"fit_loop|epoch_loop|\[\"loops\"\]|warnings\.filterwarnings|lightning[.\w]*\._|"
    r"plugins\.io|FACEFORGE_(RUN_DIR|RESUME|LAUNCH)"
)


def test_internals_are_read_only_in_the_lightning_module() -> None:
    offenders = []
    for path in SRC.rglob("*.py"):
        if path.name == "_lightning.py":
            continue
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if INTERNALS.search(line.split("#")[0]):
                offenders.append(f"{path.relative_to(SRC)}:{n}: {line.strip()}")
    assert not offenders, "\n".join(offenders)


def test_the_pattern_catches_an_internal_access() -> None:
    assert INTERNALS.search("done = trainer.fit_loop.epoch_loop.batch_progress.current.processed")
    assert INTERNALS.search('bp = ckpt["loops"]["fit_loop"]')
    assert not INTERNALS.search("trainer.fit(module, datamodule=dm)")


def _ckpt(completed: int, processed: int, in_epoch: int, last: bool) -> dict:
    counters = {"ready": in_epoch, "started": in_epoch, "processed": in_epoch, "completed": in_epoch}
    return {
        "epoch": 99,
        "loops": {
            "fit_loop": {
                "epoch_progress": {"current": {"completed": completed, "processed": processed}},
                "epoch_loop.batch_progress": {
                    "total": dict(counters),
                    "current": dict(counters),
                    "is_last_batch": last,
                },
            }
        },
    }


def test_checkpoint_epochs_and_shift() -> None:
    assert _lightning.checkpoint_epochs(_ckpt(2, 2, 0, False)) == (2, False)
    assert _lightning.checkpoint_epochs(_ckpt(2, 2, 5, False)) == (2, True)  # mid-epoch 3
    assert _lightning.checkpoint_epochs(_ckpt(2, 3, 7, True)) == (3, False)  # saved at epoch end
    assert _lightning.checkpoint_epochs({"epoch": 4}) == (4, False)  # no loop state: the plain field
    c = _ckpt(1, 1, 10, False)
    assert _lightning.shift_batch_progress(c, -4)
    bp = c["loops"]["fit_loop"]["epoch_loop.batch_progress"]
    assert bp["current"]["processed"] == 6 and bp["total"]["completed"] == 6
    assert _lightning.shift_batch_progress(c, -100) and bp["current"]["ready"] == 0
    assert not _lightning.shift_batch_progress({"state_dict": {}}, 3)


def test_handover_is_scoped_to_the_block(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(_lightning.LaunchHandover.VARIABLE, raising=False)
    assert _lightning.LaunchHandover.inherited() is None
    ck = tmp_path / "last.ckpt"
    with _lightning.LaunchHandover.publish(tmp_path, ck):
        assert _lightning.LaunchHandover.inherited() == (tmp_path, ck)
        with _lightning.LaunchHandover.publish(tmp_path / "b", None):
            assert _lightning.LaunchHandover.inherited() == (tmp_path / "b", None)
        assert _lightning.LaunchHandover.inherited() == (tmp_path, ck)
    assert _lightning.LaunchHandover.inherited() is None
    monkeypatch.setenv(_lightning.LaunchHandover.VARIABLE, "{not json")
    assert _lightning.LaunchHandover.inherited() is None  # garbage is ignored, not trusted


def test_atomic_checkpoint_io_roundtrip(tmp_path: Path) -> None:
    path = tmp_path / "c" / "last.ckpt"
    _lightning.AtomicCheckpointIO().save_checkpoint({"w": torch.ones(2)}, path)
    assert torch.equal(torch.load(path, weights_only=True)["w"], torch.ones(2))
    assert [p.name for p in path.parent.iterdir()] == ["last.ckpt"]  # no temporary left
