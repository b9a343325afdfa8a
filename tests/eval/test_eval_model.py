"""``faceforge eval --model NAME|FILE``: the ``--checkpoint`` alias, overrides, report folder, calibration."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from faceforge.cli.main import main
from faceforge.eval.suite import guess_set_name

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(autouse=True)
def _home(tmp_path, monkeypatch):
    monkeypatch.setenv("FACEFORGE_HOME", str(tmp_path / "home"))


def _rows(path: Path) -> dict:
    rep = json.loads(path.read_text())
    return {k: v for k, v in rep.items() if k != "calibration"}


def test_checkpoint_is_an_alias_of_model(synth_data, tmp_path, capsys, ckpt_factory) -> None:
    ckpt = ckpt_factory(tmp_path / "run" / "checkpoints" / "best.ckpt")
    pairs = str(synth_data / "test_pairs.txt")
    assert main(["eval", "--checkpoint", str(ckpt), "--pairs", pairs, "--out", str(tmp_path / "a")]) == 0
    a = capsys.readouterr().out
    args_b = ["eval", "--model", str(ckpt), "--pairs", pairs, "--out", str(tmp_path / "b"), "--no-cache"]
    assert main(args_b) == 0
    b = capsys.readouterr().out
    ra, rb = _rows(tmp_path / "a" / "report.json"), _rows(tmp_path / "b" / "report.json")
    assert ra["test_pairs"]["fold_accuracy"] == rb["test_pairs"]["fold_accuracy"]
    assert ra["test_pairs"]["auc"] == rb["test_pairs"]["auc"]
    # The model's describe() line opens the output.
    for text in (a, b):
        first = text.splitlines()[0]
        assert first.startswith("model ghostfacenetv1 (checkpoint, torch), input 64x64 RGB")
    # Before or after the sub-command name, either spelling.
    split = str(synth_data / "test")
    out = str(tmp_path / "r")
    assert main(["eval", "--model", str(ckpt), "retrieval", "--split", split, "--out", out]) == 0
    assert main(["eval", "retrieval", "--checkpoint", str(ckpt), "--split", split, "--out", out]) == 0
    assert "test (retrieval)" in _rows(tmp_path / "r" / "report.json")
    # Without any model the error names the flag.
    assert main(["eval", "--pairs", pairs]) == 2
    assert "--model NAME|FILE is required" in capsys.readouterr().err


def test_overrides_reach_the_model_and_the_crops(synth_data, tmp_path, capsys, ckpt_factory) -> None:
    ckpt = ckpt_factory(tmp_path / "c.ckpt")
    out = tmp_path / "o"
    pairs = str(synth_data / "test_pairs.txt")
    code = main(["eval", "--model", str(ckpt), "--pairs", pairs, "--out", str(out),
                 "--color", "BGR", "--mean", "127.5", "--std", "128"])  # fmt: skip
    assert code == 0
    text = capsys.readouterr().out
    assert "input 64x64 BGR" in text and "color: given (BGR)" in text
    base = tmp_path / "b"
    assert main(["eval", "--model", str(ckpt), "--pairs", pairs, "--out", str(base)]) == 0
    # Another colour order is another model input: other scores, not a cache hit.
    assert _rows(out / "report.json")["test_pairs"]["auc"] != _rows(base / "report.json")["test_pairs"]["auc"]


def test_default_report_folders(synth_data, tmp_path, capsys, ckpt_factory, monkeypatch) -> None:
    ckpt = ckpt_factory(tmp_path / "runs" / "x" / "ts" / "checkpoints" / "best.ckpt")
    pairs = str(synth_data / "test_pairs.txt")
    assert main(["eval", "--model", str(ckpt), "--pairs", pairs]) == 0
    run_dir = tmp_path / "runs" / "x" / "ts"
    assert f"report folder: {run_dir} (the checkpoint's run directory" in capsys.readouterr().out
    assert (run_dir / "report.json").is_file()


def _as_pretrained(monkeypatch, ckpt: Path, name: str = "tiny", kind: str = "pretrained") -> None:
    """Make ``--model NAME`` load the checkpoint's network as a registered pretrained model."""
    import faceforge.infer.loading as loading
    from faceforge.models import pretrained
    from faceforge.models.face_cfg import FaceConfig

    real = loading.load_model

    def fake(spec, **kw):
        m = real(ckpt, **kw)
        source = name if kind == "pretrained" else str(ckpt)
        return dataclasses.replace(m, name=name, kind=kind, source=source)

    monkeypatch.setattr(loading, "load_model", fake)
    entry = pretrained.PretrainedModel(name, "ghostfacenetv1", "dlib_resnet", "-", "-", FaceConfig(), Path)
    monkeypatch.setitem(pretrained._REGISTRY, name, entry)


def test_pretrained_name_writes_its_calibration_file(
    synth_data, tmp_path, capsys, ckpt_factory, monkeypatch
) -> None:
    from faceforge.models.pretrained import calibration_path

    ckpt = ckpt_factory(tmp_path / "c.ckpt")
    _as_pretrained(monkeypatch, ckpt)
    monkeypatch.chdir(tmp_path)
    pairs = str(synth_data / "test_pairs.txt")
    assert main(["eval", "--model", "tiny", "--pairs", pairs, "--write-calibration"]) == 0
    text = capsys.readouterr().out
    assert "report folder: eval_reports/tiny (default for this model" in text
    rep = json.loads((tmp_path / "eval_reports" / "tiny" / "report.json").read_text())
    p = calibration_path("tiny")
    assert f"calibration of pretrained model 'tiny' written to {p}" in text
    assert json.loads(p.read_text())["threshold"] == rep["calibration"]["threshold"]
    assert rep["calibration"]["source"].startswith("test_pairs (120 pairs, flip sum, grid mode, model tiny")


def test_write_calibration_of_a_foreign_file_says_import_first(
    synth_data, tmp_path, capsys, ckpt_factory, monkeypatch
) -> None:
    ckpt = ckpt_factory(tmp_path / "c.ckpt")
    _as_pretrained(monkeypatch, ckpt, name="r50", kind="weights")
    pairs = str(synth_data / "test_pairs.txt")
    code = main(["eval", "--model", "w.pth", "--pairs", pairs, "--write-calibration",
                 "--out", str(tmp_path / "o")])  # fmt: skip
    assert code == 2
    assert "faceforge models import" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()  # refused before any work


@pytest.mark.parametrize(
    ("path", "name"),
    [("/data/lfw/pairs.txt", "lfw"), ("data/mine/pairs.txt", "mine"), ("x/test_pairs.txt", "test_pairs")],
)
def test_pairs_and_sets_name_the_set_alike(path, name) -> None:
    assert guess_set_name(path) == name


def test_pairs_flag_uses_the_folder_name(synth_data, tmp_path, capsys, ckpt_factory) -> None:
    folder = tmp_path / "lfw"
    folder.mkdir()
    (folder / "pairs.txt").write_text((synth_data / "test_pairs.txt").read_text())
    ckpt = ckpt_factory(tmp_path / "c.ckpt")
    for flag in (["--pairs", str(folder / "pairs.txt"), "--root", str(synth_data / "test")],
                 ["--sets", f"{folder / 'pairs.txt'}:{synth_data / 'test'}"]):  # fmt: skip
        out = tmp_path / flag[0].strip("-")
        assert main(["eval", "--model", str(ckpt), *flag, "--out", str(out)]) == 0
        assert set(_rows(out / "report.json")) == {"lfw"}
