"""Bad input gets one line naming the thing and what was expected; --debug shows the traceback."""

from __future__ import annotations

from faceforge.cli.main import main


def _err(capsys, argv: list[str]) -> str:
    code = main(argv)
    captured = capsys.readouterr()
    assert code == 2
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err  # one line, no traceback
    return lines[0]


def test_missing_data_directory(capsys, tmp_path) -> None:
    missing = tmp_path / "nope"
    line = _err(capsys, ["train", "--data.root", str(missing)])
    assert str(missing) in line and "does not exist" in line


def test_unknown_backbone_lists_known(capsys) -> None:
    line = _err(capsys, ["train", "--print_config", "--model.backbone.name", "ghostfacenet"])
    assert "unknown backbone 'ghostfacenet'" in line and "ghostfacenetv1" in line and "iresnet50" in line


def test_unknown_head_lists_known(capsys) -> None:
    line = _err(capsys, ["train", "--model.head.name", "arcfce"])
    assert "unknown head 'arcfce'" in line and "did you mean 'arcface'" in line and "cosface" in line


def test_unknown_backbone_option(capsys) -> None:
    line = _err(capsys, ["train", "--model.backbone.widht", "0.5"])
    assert "model.backbone.widht" in line and "did you mean 'width'" in line


def test_unknown_config_key_did_you_mean(capsys) -> None:
    line = _err(capsys, ["train", "--trainer.max_epoch", "3"])
    assert "trainer.max_epoch" in line and "did you mean 'trainer.max_epochs'" in line


def test_debug_shows_traceback(capsys) -> None:
    assert main(["--debug", "train", "--trainer.max_epoch", "3"]) == 2
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err and "FaceforgeError" in err
    assert err.strip().splitlines()[-1].startswith("faceforge: error: ")
