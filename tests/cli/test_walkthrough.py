"""A newcomer's first hour, scripted: the README's quickstart commands in order on tiny data, then every
broken input of issue 16, each through the real entry point.

Asserted on every command: no traceback on stderr, the documented exit code (0 done, 1 "no" from
``verify`` / ``detect``, 2 an error), errors in one line naming the file / key / value, and no
``[ WARN`` / ``INFO:`` line from OpenCV or TensorFlow Lite and no progress bar in the output (stderr
is not a terminal here). ``capfd`` captures the file descriptors, so native libraries' lines count.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from faceforge.cli.main import main
from faceforge.data.synth import SynthFaces

REPO = Path(__file__).resolve().parents[2]
QUICKSTART = REPO / "configs" / "quickstart.yaml"
NOISE = re.compile(r"\[ ?WARN|^INFO:|^WARNING: All log messages|XNNPACK", re.MULTILINE)


@pytest.fixture(autouse=True)
def _env(tmp_path, monkeypatch):
    """A fresh model store; ../shared's detector files when present; one torch thread."""
    monkeypatch.setenv("FACEFORGE_HOME", str(tmp_path / "home"))
    shared = REPO.parent / "shared" / "models"
    dirs = [shared / d for d in ("detectors", "mediapipe") if (shared / d).is_dir()]
    if dirs:
        monkeypatch.setenv("FACEFORGE_MODEL_DIRS", os.pathsep.join(map(str, dirs)))
    else:
        monkeypatch.delenv("FACEFORGE_MODEL_DIRS", raising=False)
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def run(capfd, argv: list[str], code: int, per_file: bool = False) -> tuple[str, str]:
    """``faceforge ARGV`` in this process: the exit code must be ``code``; returns (stdout, stderr).

    Exit 2 means one error line on stderr, except for ``per_file`` verbs (``detect``), which report
    each file's error on its own stdout line.
    """
    got = main([str(a) for a in argv])
    out, err = capfd.readouterr()
    assert "Traceback" not in err, (argv, err)
    assert not NOISE.search(out + err), (argv, out, err)
    assert "\r" not in err and "it/s]" not in err, (argv, "a progress bar in a pipe", err)
    assert got == code, (argv, got, out, err)
    if code == 2 and not per_file:
        lines = [ln for ln in err.splitlines() if ln.strip()]
        assert len(lines) == 1 and "error: " in lines[0], (argv, err)
    return out, err


def has_yunet() -> bool:
    from faceforge import hub as store

    return store.find("yunet") is not None


def tiny_checkpoint(path: Path) -> Path:
    """A faceforge checkpoint of a small untrained GhostFaceNetV1 (64x64): enough to run every verb."""
    from faceforge.models.build import build_backbone

    torch.manual_seed(0)
    cfg = {"name": "ghostfacenetv1", "width": 0.25, "stride": 2, "embedding_size": 32}
    net = build_backbone(dict(cfg), 64)
    ckpt = {
        "state_dict": {f"backbone.{k}": v for k, v in net.state_dict().items()},
        "hyper_parameters": {"config": {"model": {"backbone": cfg}, "data": {"image_size": 64}}},
        "face_cfg": net.face_cfg.to_dict(),
        "calibration": {},
        "epoch": 0,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(ckpt, path)
    return path


def synth(capfd, out: Path, *extra: str, code: int = 0) -> tuple[str, str]:
    base = ["data", "synth", "--out", out, "--workers", "1", "--images-per-id", "4"]
    return run(capfd, [*base, *extra], code)


# ------------------------------------------------------------------------------------- the README's path


@pytest.mark.slow  # trains a model (one epoch on 32 images)
def test_readme_quickstart_in_order(tmp_path, capfd) -> None:
    data, runs = tmp_path / "data" / "synthfaces", tmp_path / "runs"
    out, _ = synth(capfd, data, "--identities", "8", "--val-identities", "20", "--test-identities", "20")
    assert "SynthFaces written to" in out
    for rel in (
        "train",
        "val",
        "test",
        "landmarks.csv",
        "val_pairs.txt",
        "test_pairs.txt",
        "synthfaces.json",
    ):
        assert (data / rel).exists(), rel

    # Train (README: faceforge train --config configs/quickstart.yaml --trainer.max_epochs 3 ...).
    small = ["--trainer.max_epochs", "1", "--model.backbone.width", "0.25", "--data.batch_size", "16"]
    out, _ = run(capfd, ["train", "--config", QUICKSTART, "--data.root", data, "--run_root", runs, *small], 0)
    run_dir = Path(re.search(r"run directory: (\S+)", out).group(1))
    best = Path(re.search(r"best checkpoint: (\S+)", out).group(1))
    # The run folder holds what the README says it holds.
    for rel in ("config.yaml", "checkpoints/best.ckpt", "checkpoints/last.ckpt", "metrics.json", "tb"):
        assert (run_dir / rel).exists(), rel
    for rel in ("report.json", "report.md", "roc.png"):
        assert (run_dir / rel).is_file(), rel
    assert set(json.loads((run_dir / "report.json").read_text())) >= {"test (model)", "test (raw pixels)"}

    # --print_config reproduces itself.
    out, _ = run(capfd, ["train", "--config", QUICKSTART, "--print_config"], 0)
    (tmp_path / "x.yaml").write_text(out)
    again, _ = run(capfd, ["train", "--config", tmp_path / "x.yaml", "--print_config"], 0)
    assert again == out

    # Evaluate (README: faceforge eval --checkpoint .../best.ckpt --pairs .../test_pairs.txt --baseline).
    out, _ = run(capfd, ["eval", "--checkpoint", best, "--pairs", data / "test_pairs.txt", "--baseline"], 0)
    rows = json.loads((run_dir / "report.json").read_text())
    assert "test_pairs" in rows and "test_pairs (raw pixels)" in rows, list(rows)
    run(capfd, ["compare", run_dir, run_dir], 0)
    out, _ = run(capfd, ["models", "info", "iresnet50"], 0)
    assert json.loads(out)["embedding_size"] == 512

    # Use the model: verify, embed, gallery, export.
    sf = SynthFaces(0)
    people = tmp_path / "people"
    for i in range(3):
        (people / f"id{5000 + i}").mkdir(parents=True)
        for k in range(2):
            Image.fromarray(sf.image(5000 + i, k)[0]).save(people / f"id{5000 + i}" / f"{k}.png")
    a, b = people / "id5000" / "0.png", people / "id5000" / "1.png"
    got = main(["verify", str(a), str(b), "--model", str(best), "--json"])
    out, err = capfd.readouterr()
    assert "Traceback" not in err and got == (0 if json.loads(out)["verified"] else 1)
    out, _ = run(capfd, ["embed", people, "--model", best, "--out", tmp_path / "emb.npz"], 0)
    assert "wrote 6 embeddings" in out
    run(capfd, ["gallery", "build", people, "--model", best, "--out", tmp_path / "G"], 0)
    # (a gallery built from a model file needs --model again: its manifest is never followed to a file)
    out, _ = run(capfd, ["gallery", "search", a, "--gallery", tmp_path / "G", "-k", "5", "--model", best], 0)
    assert out.startswith("1. id5000")
    out, _ = run(
        capfd,
        [
            "export",
            best,
            "--format",
            "onnx",
            "--out",
            tmp_path / "m.onnx",
            "--parity-images",
            "4",
            "--pairs",
            "0",
        ],
        0,
    )
    assert (tmp_path / "m.onnx").is_file()

    # `verify ... --json | head`: the reader has gone; one line, exit 2, no BrokenPipeError traceback.
    r, w = os.pipe()
    os.close(r)
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "faceforge.cli.main", "verify", a, b, "--model", best, "--json"],
            stdout=w,
            stderr=subprocess.PIPE,
            timeout=300,
        )
    finally:
        os.close(w)
    assert proc.returncode == 2 and b"Traceback" not in proc.stderr, proc.stderr
    assert proc.stderr.decode().strip().splitlines() == [
        "faceforge: error: the output pipe was closed before all output was written"
    ]


# -------------------------------------------------------------------------------- the broken inputs


def test_synth_refuses_a_folder_written_with_other_parameters(tmp_path, capfd) -> None:
    out = tmp_path / "sf"
    synth(capfd, out, "--identities", "3", "--val-identities", "0", "--test-identities", "20")
    before = json.loads((out / "synthfaces.json").read_text())
    # Same parameters: nothing to do. Other parameters: refused, the folder untouched.
    synth(capfd, out, "--identities", "3", "--val-identities", "0", "--test-identities", "20")
    _, err = synth(
        capfd, out, "--identities", "5", "--val-identities", "20", "--test-identities", "0", code=2
    )
    assert str(out) in err and "--overwrite" in err and "identities 3 -> 5" in err
    assert json.loads((out / "synthfaces.json").read_text()) == before
    # --overwrite replaces it whole: no old identity, no stale pair list.
    synth(capfd, out, "--identities", "5", "--val-identities", "20", "--test-identities", "0", "--overwrite")
    assert sorted(p.name for p in (out / "train").iterdir()) == [f"id{i:05d}" for i in range(5)]
    assert not (out / "test").exists() and not (out / "test_pairs.txt").exists()
    assert (out / "val_pairs.txt").is_file() and len(list((out / "val").iterdir())) == 20
    # A folder that is not SynthFaces is never replaced, even with --overwrite.
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "thesis.tex").write_text("precious")
    _, err = synth(
        capfd, mine, "--identities", "2", "--test-identities", "0", "--val-identities", "0", code=2
    )
    assert "was not written by `faceforge data synth`" in err
    _, err = synth(
        capfd,
        mine,
        "--identities",
        "2",
        "--test-identities",
        "0",
        "--val-identities",
        "0",
        "--overwrite",
        code=2,
    )
    assert "thesis.tex" in err and (mine / "thesis.tex").read_text() == "precious"


def test_synth_too_few_identities_for_pairs_names_the_minimum(tmp_path, capfd) -> None:
    _, err = synth(capfd, tmp_path / "a", "--identities", "3", "--test-identities", "5", code=2)
    assert "test_identities=5" in err and "--test-identities" in err and "at least 20" in err
    _, err = synth(capfd, tmp_path / "b", "--identities", "3", "--val-identities", "19", code=2)
    assert "val_identities=19" in err and "at least 20" in err
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_a_bad_config_value_names_the_key_and_leaves_no_run_folder(tmp_path, capfd) -> None:
    runs = tmp_path / "runs"
    _, err = run(capfd, ["train", "--trainer.max_epochs", "three", "--run_root", runs], 2)
    assert "'trainer.max_epochs'" in err and "'three'" in err and "integer" in err
    _, err = run(capfd, ["train", "--data.flip", "maybe", "--run_root", runs], 2)
    assert "'data.flip'" in err and "true or false" in err
    assert not runs.exists()


def test_a_text_file_as_the_model_is_one_line(tmp_path, capfd) -> None:
    txt = tmp_path / "notes.txt"
    txt.write_text("hello\n")
    img = tmp_path / "a.png"
    Image.fromarray(SynthFaces(0).image(1, 0)[0]).save(img)
    for argv in (
        ["eval", "--checkpoint", txt, "--pairs", txt],
        ["eval", "--model", txt, "--pairs", txt],
        ["verify", img, img, "--model", txt],
        ["export", "--model", txt],
        ["export", txt],
    ):
        _, err = run(capfd, argv, 2)
        assert "notes.txt" in err, argv


def test_detect_folders_exit_codes_and_missing_model(tmp_path, capfd, monkeypatch) -> None:
    face, noface, bad = tmp_path / "in" / "face.png", tmp_path / "in" / "noface.png", tmp_path / "bad.jpg"
    face.parent.mkdir()
    Image.fromarray(SynthFaces(0, mode="wild", difficulty=0.5).image(1000, 0)[0]).save(face)
    Image.fromarray(np.full((200, 200, 3), 90, np.uint8)).save(noface)
    bad.write_text("not a JPEG")
    empty = tmp_path / "empty"
    empty.mkdir()
    detector = "yunet" if has_yunet() else "dlib"
    if detector == "dlib":
        pytest.importorskip("dlib")
    # A folder means the images in it (it used to say "image in does not exist").
    out, _ = run(capfd, ["detect", face.parent, "--detector", detector, "--json"], 1)  # 1: one has no face
    recs = [json.loads(x) for x in out.splitlines()]
    assert [Path(r["file"]).name for r in recs] == ["face.png", "noface.png"]
    assert len(recs[0]["faces"]) == 1 and recs[1]["faces"] == []
    run(capfd, ["detect", face, "--detector", detector], 0)
    out, _ = run(capfd, ["detect", face, bad, "--detector", detector], 2, per_file=True)  # 2: unreadable
    assert "bad.jpg: error:" in out
    _, err = run(capfd, ["detect", empty], 2)
    assert "empty holds no image" in err
    # A missing detector model names the model and how to get it, not an image.
    monkeypatch.delenv("FACEFORGE_MODEL_DIRS", raising=False)
    _, err = run(capfd, ["detect", face, "--detector", "scrfd"], 2)
    assert "scrfd" in err and "faceforge models fetch scrfd" in err and "face.png" not in err


@pytest.mark.slow  # several seconds: runs in make test, not make test-fast
def test_nothing_to_embed_or_align_is_an_error(tmp_path, capfd, monkeypatch) -> None:
    monkeypatch.delenv("FACEFORGE_MODEL_DIRS", raising=False)
    pytest.importorskip("dlib")  # the auto detector without model files
    ckpt = tiny_checkpoint(tmp_path / "m.ckpt")
    blank = tmp_path / "blank"
    blank.mkdir()
    for i in range(2):
        Image.fromarray(np.full((120, 120, 3), 60 + 40 * i, np.uint8)).save(blank / f"{i}.png")
    npz = tmp_path / "e.npz"
    _, err = run(capfd, ["embed", blank, "--model", ckpt, "--out", npz], 2)
    assert "no face could be embedded" in err and "nothing written" in err and not npz.exists()
    _, err = run(capfd, ["gallery", "build", blank, "--model", ckpt, "--out", tmp_path / "G"], 2)
    assert "no face could be embedded" in err
    out, err = run(capfd, ["align", blank, tmp_path / "crops", "--detector", "dlib"], 2)
    assert "failed=2" in out and "not one face aligned" in err and "failures.jsonl" in err


def test_eval_names_a_pair_file_the_same_way_with_pairs_and_sets(tmp_path, capfd) -> None:
    data = tmp_path / "lfw"
    synth(capfd, data, "--identities", "1", "--val-identities", "0", "--test-identities", "20")
    pairs = data / "test_pairs.txt"
    ckpt = tiny_checkpoint(tmp_path / "m.ckpt")
    common = ["--model", ckpt, "--detector", "none", "--no-cache"]
    run(capfd, ["eval", *common, "--pairs", pairs, "--out", tmp_path / "a"], 0)
    run(capfd, ["eval", *common, "--sets", pairs, "--out", tmp_path / "b"], 0)
    a = set(json.loads((tmp_path / "a" / "report.json").read_text())) - {"calibration"}
    b = set(json.loads((tmp_path / "b" / "report.json").read_text())) - {"calibration"}
    assert a == b == {"lfw"}


def test_a_pairs_header_promising_more_pairs_is_an_error_everywhere(tmp_path, capfd) -> None:
    data = tmp_path / "sf"
    synth(capfd, data, "--identities", "1", "--val-identities", "0", "--test-identities", "20")
    short = tmp_path / "short.txt"
    short.write_text("1\t10\n" + "".join(f"id{i:05d}\t1\t2\n" for i in range(1, 4)))
    root = data / "test"
    ckpt = tiny_checkpoint(tmp_path / "m.ckpt")
    for argv in (
        ["eval", "--model", ckpt, "--pairs", short, "--root", root, "--detector", "none"],
        ["data", "to-bin", short, tmp_path / "o.bin", "--root", root],
        [
            "bench-align",
            "--pairs",
            short,
            "--root",
            root,
            "--model",
            ckpt,
            "--no-native",
            "--out",
            tmp_path / "b",
        ],
    ):
        _, err = run(capfd, argv, 2)
        assert "short.txt:1" in err and "promises" in err, argv


def test_bench_align_warns_about_a_small_sorted_pair_list(tmp_path, capfd) -> None:
    """100 pairs, genuine first: single-class folds and too few pairs for AUC / EER are said."""
    if not has_yunet():
        pytest.skip("YuNet model file not found (../shared/models/detectors)")
    data = tmp_path / "wild"
    synth(
        capfd, data, "--identities", "1", "--val-identities", "0", "--test-identities", "20", "--mode", "wild"
    )
    lines = (data / "test_pairs.txt").read_text().splitlines()[1:]
    gen = [ln for ln in lines if len(ln.split("\t")) == 3][:50]
    imp = [ln for ln in lines if len(ln.split("\t")) == 4][:50]
    sorted_list = tmp_path / "sorted.txt"
    sorted_list.write_text("".join(f"{ln}\n" for ln in gen + imp))  # headerless: one block, sorted by label
    ckpt = tiny_checkpoint(tmp_path / "m.ckpt")
    argv = ["bench-align", "--pairs", sorted_list, "--root", data / "test", "--detectors", "yunet"]
    _, err = run(capfd, [*argv, "--model", ckpt, "--no-native", "--out", tmp_path / "b", "--no-cache"], 0)
    warnings = [ln for ln in err.splitlines() if ln.startswith("warning: ")]
    assert len(warnings) == 2, err
    assert "10 of the 10 accuracy folds hold only genuine or only impostor pairs" in warnings[0]
    assert "only 50 genuine and 50 impostor pairs" in warnings[1]
    # Progress: a line when each stage starts and ends, with counts and seconds.
    assert re.search(r"yunet: detecting faces in \d+ images", err)
    assert re.search(r"yunet: detected \d+/\d+ in \d+ s", err)
    assert re.search(r"yunet: embedded \d+ crops in \d+ s", err)
    assert "**Warning:**" in (tmp_path / "b" / "results.md").read_text()
    assert len(json.loads((tmp_path / "b" / "results.json").read_text())["meta"]["warnings"]) == 2


def test_models_files_uses_the_detectors_lookup_in_aligned_columns(capfd) -> None:
    import importlib.util

    if importlib.util.find_spec("face_recognition_models") is None:  # (its __init__ needs pkg_resources)
        pytest.skip("face-recognition-models is not installed")
    out, _ = run(capfd, ["models", "files"], 0)
    rows = out.splitlines()[1:]
    head = rows[0]
    assert head.split() == ["name", "file", "where", "license"]
    col = head.index("where")
    for r in rows[1:]:
        assert r[col - 2 : col] == "  " and r[col] != " ", r  # every "where" starts in the same column
    dlib = {r.split()[0]: r for r in rows if r.startswith("dlib_")}
    assert set(dlib) == {"dlib_shape68", "dlib_shape5", "dlib_mmod", "dlib_resnet"}
    for name, r in dlib.items():
        assert "face_recognition_models" in r and "missing" not in r, name  # --detector dlib works


def test_no_native_log_lines_in_a_fresh_process(tmp_path) -> None:
    """OpenCV's DNN warning and TFLite's XNNPACK line are silenced before first use (a fresh process)."""
    img = tmp_path / "face.png"
    Image.fromarray(SynthFaces(0, mode="wild", difficulty=0.5).image(1000, 0)[0]).save(img)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("OPENCV_LOG_LEVEL", None)
    detectors = [d for d, ok in (("yunet", has_yunet()), ("mediapipe", _has_mediapipe())) if ok]
    if not detectors:
        pytest.skip("no YuNet / MediaPipe model files (../shared/models)")
    for det in detectors:
        proc = subprocess.run(
            [sys.executable, "-m", "faceforge.cli.main", "detect", str(img), "--detector", det],
            capture_output=True,
            env=env,
            timeout=300,
        )
        err = proc.stderr.decode()
        assert proc.returncode == 0 and err == "", (det, err)
        assert not NOISE.search(proc.stdout.decode()), det


def _has_mediapipe() -> bool:
    import importlib.util

    from faceforge import hub as store

    return (
        importlib.util.find_spec("ai_edge_litert") is not None and store.find("mediapipe_short") is not None
    )
