"""``faceforge demo --lfw``: the real-photo row beside the held-out SynthFaces rows."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from faceforge.cli.main import build_parser
from faceforge.errors import FaceforgeError

pytestmark = pytest.mark.slow  # trains a (tiny) model


def _run(argv: list[str], overrides: list[str] = ()) -> int:
    """The action's own function (errors raise) with training-config overrides, as main passes them."""
    args = build_parser().parse_args(argv)
    args.overrides = list(overrides)
    return args.func(args)


def _tiny(tmp_path: Path) -> list[str]:
    return [
        "demo", "--data", str(tmp_path / "synth"), "--identities", "20", "--images-per-id", "4",
        "--val-identities", "20", "--test-identities", "20", "--quiet",
    ]  # fmt: skip


def test_a_wrong_lfw_path_fails_before_anything_is_rendered(tmp_path, monkeypatch):
    monkeypatch.setenv("FACEFORGE_HOME", str(tmp_path / "home"))
    with pytest.raises(FaceforgeError, match=r"--lfw .*nowhere: no pairs.txt there"):
        _run([*_tiny(tmp_path), "--lfw", str(tmp_path / "nowhere")])
    assert not (tmp_path / "synth").exists()


def test_lfw_adds_a_real_photo_row(tmp_path, monkeypatch, capsys, one_thread):
    # A second SynthFaces set stands in for LFW: its held-out folder uses LFW's names and pair layout.
    from faceforge.data.synth import write_dataset

    monkeypatch.setenv("FACEFORGE_HOME", str(tmp_path / "home"))
    lfw = tmp_path / "lfw_like"
    write_dataset(lfw, identities=20, images_per_id=3, val_identities=20, test_identities=20, seed=5)
    pairs = lfw / "test_pairs.txt"
    n_pairs = sum(1 for line in pairs.read_text().splitlines()[1:] if line.strip())
    argv = [*_tiny(tmp_path), "--lfw", str(pairs), "--detector", "none"]
    assert (
        _run(
            argv,
            ["--trainer.max_epochs", "1", "--data.batch_size", "32", "--run_root", str(tmp_path / "runs")],
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "real photos (LFW, never trained on): 10-fold accuracy" in out
    report = json.loads(next((tmp_path / "runs").rglob("report.json")).read_text())
    row = report["LFW (real photos)"]
    assert row["n_pairs"] == n_pairs
    assert 0.0 <= row["accuracy"] <= 1.0
