"""The command line's contract, for every verb: help for every option, -v/--quiet/--debug everywhere,
broken arguments end in one line and exit 2 (never a traceback), unexpected errors in one line and
exit 3, a closed output pipe in one line and exit 2, ``--version``."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import pytest

from faceforge.cli import main as cli_main
from faceforge.cli.main import build_parser, main

#: options whose help text lives in a module this test's owner does not write (must shrink to empty)
KNOWN_HELP_GAPS: set[tuple[str, str]] = set()


def _verbs() -> dict[str, argparse.ArgumentParser]:
    """``{"data pack": parser, ...}`` for every sub-command parser (intermediate ones included)."""
    return {p.prog.removeprefix("faceforge "): p for p in cli_main._sub_parsers(build_parser())}


def _leaves() -> set[str]:
    """Verbs that do something (a parser without further sub-commands, or one with its own func)."""
    out = set()
    for name, p in _verbs().items():
        has_sub = any(isinstance(a, argparse._SubParsersAction) for a in p._actions)
        if not has_sub or name == "eval":
            out.add(name)
    return out


def test_version(capsys) -> None:
    assert main(["--version"]) == 0
    out = capsys.readouterr().out.strip()
    assert out.startswith("faceforge ") and out.split()[1][0].isdigit()


def test_every_option_has_help() -> None:
    missing = set()
    for p in [build_parser(), *_verbs().values()]:
        for a in p._actions:
            if isinstance(a, (argparse._HelpAction, argparse._SubParsersAction)):
                continue
            if not a.help or a.help == argparse.SUPPRESS:
                missing.add((p.prog, (a.option_strings or [a.dest])[-1]))
    assert missing == KNOWN_HELP_GAPS, missing


def test_every_verb_takes_verbose_quiet_debug() -> None:
    for name, p in _verbs().items():
        opts = set(p._option_string_actions)
        assert {"-v", "--verbose", "--quiet", "--debug"} <= opts, name


def test_threshold_options_only_where_they_decide() -> None:
    verbs = _verbs()
    for name in ("embed", "gallery build", "gallery add"):
        assert not {"--threshold", "--far"} & set(verbs[name]._option_string_actions), name
    for name in ("verify", "gallery search"):
        assert {"--threshold", "--far"} <= set(verbs[name]._option_string_actions), name


@pytest.fixture
def broken(tmp_path: Path, monkeypatch) -> dict[str, str]:
    """Paths of broken inputs: a text file, a text file named .jpg, a missing path, an empty folder."""
    monkeypatch.setenv("FACEFORGE_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("FACEFORGE_MODEL_DIRS", raising=False)
    (tmp_path / "notes.txt").write_text("hello, this is text\n")
    (tmp_path / "fake.jpg").write_text("this is not a JPEG\n")
    (tmp_path / "empty").mkdir()
    return {
        "txt": str(tmp_path / "notes.txt"),
        "jpg": str(tmp_path / "fake.jpg"),
        "missing": str(tmp_path / "missing"),
        "empty": str(tmp_path / "empty"),
        "out": str(tmp_path / "out"),
    }


def _cases(b: dict[str, str]) -> dict[str, tuple[list[str], str]]:
    """verb -> (argv, a word the error line must hold: the file, key or value at fault)."""
    return {
        "train": (["train", "--trainer.max_epochs", "three"], "trainer.max_epochs"),
        "eval": (["eval", "--model", b["txt"], "--pairs", b["txt"]], "notes.txt"),
        "eval retrieval": (["eval", "retrieval", "--model", b["txt"], "--split", b["empty"]], "notes.txt"),
        "eval ijb": (["eval", "ijb", "--model", b["txt"], "--root", b["missing"]], "missing"),
        "eval classify": (
            ["eval", "classify", "--model", b["txt"], "--gallery", b["missing"], "--query", b["out"]],
            "missing",
        ),
        "compare": (["compare", b["txt"]], "notes.txt"),
        "demo": (["demo", "--data", b["out"], "--trainer.max_epochs", "three"], "trainer.max_epochs"),
        "data pack": (["data", "pack", b["missing"], b["out"]], "missing"),
        "data unpack": (["data", "unpack", b["txt"], b["out"]], "notes"),
        "data inspect": (["data", "inspect", b["missing"]], "missing"),
        "data split": (["data", "split", b["missing"], "--out", b["out"]], "missing"),
        "data make-pairs": (["data", "make-pairs", b["missing"], "--out", b["out"]], "missing"),
        "data to-bin": (["data", "to-bin", b["txt"], b["out"]], "notes.txt"),
        "data from-bin": (["data", "from-bin", b["txt"], b["out"]], "notes.txt"),
        "data synth": (["data", "synth", "--out", b["out"], "--test-identities", "5"], "20"),
        "models list": (["models", "list", "--latency", "--bogus"], "--bogus"),
        "models info": (["models", "info", "nosuchnet"], "nosuchnet"),
        "models import": (["models", "import", b["txt"], "--out", b["out"] + ".ckpt"], "notes.txt"),
        "models fuse": (["models", "fuse", b["txt"], b["txt"], "--out", b["out"] + ".ckpt"], "notes.txt"),
        "models adapt": (["models", "adapt", b["txt"], b["empty"], "--out", b["out"] + ".ckpt"], "notes.txt"),
        "models fetch": (["models", "fetch", "nosuchfile"], "nosuchfile"),
        "models files": (["models", "files", "--bogus"], "--bogus"),
        "detect": (["detect", b["jpg"], "--detector", "nodet"], "nodet"),
        "align": (["align", b["missing"], b["out"]], "missing"),
        "verify": (["verify", b["jpg"], b["jpg"], "--model", b["txt"]], "notes.txt"),
        "embed": (["embed", b["empty"], "--model", b["txt"], "--out", b["out"]], "notes.txt"),
        "gallery build": (
            ["gallery", "build", b["empty"], "--model", b["txt"], "--out", b["out"]],
            "notes.txt",
        ),
        "gallery add": (["gallery", "add", b["jpg"], "--gallery", b["missing"]], "missing"),
        "gallery remove": (["gallery", "remove", "x", "--gallery", b["missing"]], "missing"),
        "gallery search": (["gallery", "search", b["jpg"], "--gallery", b["missing"]], "missing"),
        "gallery info": (["gallery", "info", b["missing"]], "missing"),
        "export": (["export", "--model", b["txt"]], "notes.txt"),
        "bench-align": (
            ["bench-align", "--pairs", b["txt"], "--detectors", "nodet"],
            "nodet",
        ),
        "serve": (["serve", "--model", b["txt"]], "notes.txt"),
    }


def test_broken_arguments_of_every_verb_end_in_one_line(broken, capsys) -> None:
    cases = _cases(broken)
    assert set(cases) == _leaves(), "a verb without a broken-argument case (or a case for no verb)"
    for verb, (argv, word) in cases.items():
        code = main(argv)
        err = capsys.readouterr().err
        lines = [ln for ln in err.splitlines() if ln.strip()]
        assert "Traceback" not in err, (verb, err)
        assert code == 2, (verb, code, err)
        assert len(lines) == 1, (verb, err)
        assert lines[0].startswith("faceforge") and ": error: " in lines[0], (verb, lines[0])
        assert word in lines[0], (verb, word, lines[0])


def test_argparse_errors_are_one_line(capsys) -> None:
    assert main(["detect"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        "faceforge detect: error: the following arguments are required: IMG (see faceforge detect --help)"
    ]
    assert main(["models"]) == 2  # an action is required
    assert "ACTION" in capsys.readouterr().err


def test_an_unexpected_error_is_one_line_with_exit_3(monkeypatch, capsys) -> None:
    import faceforge.cli.compare_cmd as compare_cmd

    def boom(args):
        raise KeyError(101)

    monkeypatch.setattr(compare_cmd, "run", boom)
    assert main(["compare", "x"]) == 3
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert err.startswith("faceforge: internal error: KeyError: 101") and "--debug" in err
    assert main(["compare", "x", "--debug"]) == 3
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err and "KeyError: 101" in err


def test_os_and_parse_errors_are_one_line(monkeypatch, capsys, tmp_path) -> None:
    import json

    import faceforge.cli.compare_cmd as compare_cmd

    def denied(args):
        raise PermissionError(13, "Permission denied", str(tmp_path / "locked"))

    monkeypatch.setattr(compare_cmd, "run", denied)
    assert main(["compare", "x"]) == 2
    assert capsys.readouterr().err == f"faceforge: error: {tmp_path / 'locked'}: Permission denied\n"

    def bad_json(args):
        return json.loads("{nope")

    monkeypatch.setattr(compare_cmd, "run", bad_json)
    assert main(["compare", "x"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("faceforge: error: JSONDecodeError: ") and len(err.splitlines()) == 1


def test_a_closed_output_pipe_is_one_line(tmp_path) -> None:
    """``faceforge ... | head``: the reader is gone before the output is written."""
    r, w = os.pipe()
    os.close(r)  # no reader: every write gets EPIPE
    env = {**os.environ, "FACEFORGE_HOME": str(tmp_path), "OMP_NUM_THREADS": "1"}
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "faceforge.cli.main", "models", "files"],
            stdout=w,
            stderr=subprocess.PIPE,
            env=env,
            timeout=120,
        )
    finally:
        os.close(w)
    err = proc.stderr.decode()
    assert proc.returncode == 2, err
    assert "Traceback" not in err and "Exception ignored" not in err, err
    assert err.strip().splitlines() == [
        "faceforge: error: the output pipe was closed before all output was written"
    ]


@pytest.mark.parametrize("installed", [True, False])
def test_a_missing_model_names_what_this_machine_has(installed, monkeypatch, capsys) -> None:
    """`faceforge verify a.jpg b.jpg` without --model: one line that names a pretrained model whose file
    is here (or says none is and where to look), never a download."""
    import faceforge.models.pretrained as pretrained

    rows = [{"name": "other", "available": False}, {"name": "dlib", "available": installed}]
    monkeypatch.setattr(pretrained, "status", lambda: rows)
    assert main(["verify", "a.jpg", "b.jpg"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "required: --model" in lines[0], lines
    assert ("--model dlib" in lines[0]) is installed and ("none is installed" in lines[0]) is not installed
