"""Multi-set evaluation, flip fusion, the embedding cache, calibration into the checkpoint, the CLI."""

from __future__ import annotations

import json
import pickle
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from faceforge.cli.main import main
from faceforge.data.binset import pairs_to_bin, read_bin
from faceforge.data.pairs import read_pairs
from faceforge.errors import FaceforgeError
from faceforge.eval.cache import EmbeddingCache, model_fingerprint
from faceforge.eval.suite import (
    ModelInfo,
    SetSpec,
    evaluate_retrieval_folders,
    evaluate_sets,
    guess_set_name,
    parse_set_spec,
)
from faceforge.eval.verification import embed_images, fuse_flip
from faceforge.infer.loading import EmbeddingModel


@pytest.fixture(autouse=True)
def _home(tmp_path, monkeypatch):
    # The default embedding cache lives under $FACEFORGE_HOME: keep every test's cache private.
    monkeypatch.setenv("FACEFORGE_HOME", str(tmp_path / "home"))


def _color_embed(x: torch.Tensor) -> torch.Tensor:
    """A cheap deterministic 'model': per-channel means of a 4×4 grid (48-D)."""
    return torch.nn.functional.adaptive_avg_pool2d(x.float(), 4).flatten(1) - 128.0


# --------------------------------------------------------------------------------------------------
# set specs


@pytest.mark.parametrize(
    ("path", "name"),
    [
        ("data/faces_emore/lfw.bin", "lfw"),
        ("x/CFP-FP.bin", "cfp_fp"),
        ("x/agedb30.bin", "agedb_30"),
        ("x/cplfw_pairs.txt", "cplfw"),
        ("calfw/pairs.txt", "calfw"),
        ("x/vgg2_fp.bin", "vgg2_fp"),
        ("x/my_set.txt", "my_set"),
    ],
)
def test_guess_set_name(path, name) -> None:
    assert guess_set_name(path) == name


def test_parse_set_spec(synth_data, tmp_path) -> None:
    pairs = synth_data / "test_pairs.txt"
    s = parse_set_spec(f"mine={pairs}:{synth_data}")
    assert (s.name, s.path, s.kind, s.root) == ("mine", pairs, "pairs", synth_data)
    s = parse_set_spec(str(pairs))
    assert (s.name, s.kind, s.root) == ("test_pairs", "pairs", None)
    b = tmp_path / "agedb_30.bin"
    b.write_bytes(b"x")
    assert parse_set_spec(str(b)) == SetSpec("agedb_30", b, "bin")
    with pytest.raises(FaceforgeError, match=r"nope\.bin' is not an existing file"):
        parse_set_spec("lfw=nope.bin")
    with pytest.raises(FaceforgeError, match="not a folder"):
        parse_set_spec(f"{pairs}:{tmp_path / 'missing'}")


# --------------------------------------------------------------------------------------------------
# flip fusion


def test_flip_fusion_formulas() -> None:
    e = torch.tensor([[3.0, 4.0], [1.0, 0.0]])
    f = torch.tensor([[0.0, 1.0], [0.0, 2.0]])
    assert torch.equal(fuse_flip(e, f, "none"), e)
    assert torch.equal(fuse_flip(e, f, "sum"), e + f)
    assert torch.equal(fuse_flip(e, f, "concat"), torch.tensor([[3.0, 4.0, 0.0, 1.0], [1.0, 0.0, 0.0, 2.0]]))
    # (|e| e + |f| f) / (|e| + |f|): row 0 = (5·[3,4] + 1·[0,1]) / 6, row 1 = (1·[1,0] + 2·[0,2]) / 3
    want = torch.tensor([[15.0 / 6, 21.0 / 6], [1.0 / 3, 4.0 / 3]])
    assert torch.allclose(fuse_flip(e, f, "norm"), want)
    with pytest.raises(FaceforgeError, match="did you mean 'concat'"):
        embed_images(_color_embed, torch.zeros(1, 3, 8, 8, dtype=torch.uint8), flip="concatt")


def test_embed_images_flip_modes_use_the_mirror() -> None:
    x = torch.randint(0, 255, (5, 3, 8, 8), dtype=torch.uint8)
    e, f = _color_embed(x), _color_embed(x.flip(-1))
    assert np.allclose(embed_images(_color_embed, x, 2, "sum"), (e + f).numpy())
    assert embed_images(_color_embed, x, 2, "concat").shape == (5, 96)
    assert np.allclose(embed_images(_color_embed, x, 3, False), e.numpy())


# --------------------------------------------------------------------------------------------------
# cache


def _counting(fn):
    calls = []

    def embed(x):
        calls.append(len(x))
        return fn(x)

    return embed, calls


def test_cache_skips_the_model_the_second_time(synth_data, tmp_path) -> None:
    embed, calls = _counting(_color_embed)
    model = ModelInfo(embed, 32, "RGB", "fingerprint-a")
    spec = SetSpec("sf", synth_data / "test_pairs.txt", "pairs")
    cache = EmbeddingCache(tmp_path / "cache")
    first = evaluate_sets([spec], model, "sum", cache=cache)
    n_calls = len(calls)
    assert n_calls > 0 and cache.misses == 1
    second = evaluate_sets([spec], model, "sum", mode="exact", cache=cache)
    assert len(calls) == n_calls and cache.hits == 1  # the model was not called again
    assert second["sf"]["mode"] == "exact" and second["sf"]["auc"] == first["sf"]["auc"]
    # Another flip mode or another model fingerprint is another entry.
    evaluate_sets([spec], model, "none", cache=cache)
    assert len(calls) > n_calls
    n_calls = len(calls)
    evaluate_sets([spec], ModelInfo(embed, 32, "RGB", "fingerprint-b"), "sum", cache=cache)
    assert len(calls) > n_calls


def test_model_fingerprint_follows_the_weights() -> None:
    a, b = torch.nn.Linear(3, 2), torch.nn.Linear(3, 2)
    b.load_state_dict(a.state_dict())
    assert model_fingerprint(a, {"x": 1}) == model_fingerprint(b, {"x": 1})
    assert model_fingerprint(a, {"x": 1}) != model_fingerprint(a, {"x": 2})
    with torch.no_grad():
        b.bias[0] += 1e-6
    assert model_fingerprint(a, {"x": 1}) != model_fingerprint(b, {"x": 1})


def test_cli_cache_is_invalidated_by_a_changed_checkpoint(
    synth_data, tmp_path, monkeypatch, ckpt_factory
) -> None:
    calls = []
    original = EmbeddingModel.embed_uint8

    def counting(self, images):
        calls.append(len(images))
        return original(self, images)

    monkeypatch.setattr(EmbeddingModel, "embed_uint8", counting)
    ckpt = ckpt_factory(tmp_path / "run" / "checkpoints" / "best.ckpt", seed=0)
    args = ["eval", "--checkpoint", str(ckpt), "--pairs", str(synth_data / "test_pairs.txt")]
    assert main(args) == 0
    n = len(calls)
    assert n > 0
    # Same weights, other metric mode, calibration written into the checkpoint: no model call.
    assert main([*args, "--mode", "exact", "--write-calibration"]) == 0
    assert len(calls) == n
    assert main(args) == 0
    assert len(calls) == n
    ckpt_factory(ckpt, seed=1)  # new weights in the same file
    assert main(args) == 0
    assert len(calls) == 2 * n


# --------------------------------------------------------------------------------------------------
# the CLI: several sets, report, calibration


def test_cli_several_sets_report_and_calibration(synth_data, tmp_path, capsys, ckpt_factory) -> None:
    ckpt = ckpt_factory(tmp_path / "run" / "checkpoints" / "best.ckpt")
    pairs = synth_data / "test_pairs.txt"
    bin_path = pairs_to_bin(read_pairs(pairs), tmp_path / "lfw.bin")
    out = tmp_path / "report"
    code = main(
        ["eval", "--checkpoint", str(ckpt), "--sets", f"mine={pairs}:{synth_data / 'test'}", str(bin_path),
         "--calibrate-on", "lfw", "--far", "0.1", "--out", str(out), "--flip", "concat"]
    )  # fmt: skip
    assert code == 0
    text = capsys.readouterr().out
    assert "mine" in text and "lfw" in text
    rep = json.loads((out / "report.json").read_text())
    # Two sets: a "mean" row averages them (each set once).
    assert set(rep) == {"mine", "lfw", "mean", "calibration"}
    assert rep["mean"]["accuracy"] == pytest.approx((rep["mine"]["accuracy"] + rep["lfw"]["accuracy"]) / 2)
    assert rep["lfw"]["n_pairs"] == rep["mine"]["n_pairs"] == 120
    assert rep["lfw"]["embedding_size"] == 64  # concat doubles the 32-D embedding
    cal = rep["calibration"]
    # 60 impostor pairs cannot carry a threshold at FAR 0.1 (10/FAR = 100 needed): best accuracy, said why.
    assert cal["far_target"] is None and cal["threshold"] == rep["lfw"]["threshold_cos"]
    assert "needs >= 100 impostor pairs" in cal["far_note"] and cal["n_impostor"] == 60
    assert cal["source"].startswith("lfw (120 pairs, flip concat")
    for f in ("roc.png", "det.png"):
        assert (out / f).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    md = (out / "report.md").read_text()
    assert "| mine" in md and "## Calibration" in md and "det.png" in md
    assert "- why: FAR 0.1 needs >= 100 impostor pairs" in md and "60 impostor, 60 genuine" in md
    assert "lfw: TAR@FAR=0.1 from 60 impostor pairs" in md
    # A second command adds its rows to the same report and keeps the calibration.
    assert main(["eval", "retrieval", "--checkpoint", str(ckpt), "--split", str(synth_data / "test"),
                 "--out", str(out)]) == 0  # fmt: skip
    rep2 = json.loads((out / "report.json").read_text())
    assert set(rep2) == {"mine", "lfw", "mean", "calibration", "test (retrieval)"}
    assert rep2["test (retrieval)"]["n_queries"] == 120
    # compare shows the rows of both kinds and ignores the calibration block.
    assert main(["compare", str(out)]) == 0
    cmp_out = capsys.readouterr().out
    assert "report / lfw" in cmp_out and "report / test (retrieval)" in cmp_out
    assert "calibration" not in cmp_out


def test_write_calibration_is_used_by_inference(synth_data, tmp_path, ckpt_factory) -> None:
    from faceforge.infer.recognizer import FaceRecognizer

    ckpt = ckpt_factory(tmp_path / "run" / "checkpoints" / "best.ckpt")
    before = torch.load(ckpt, weights_only=True)
    assert main(["eval", "--checkpoint", str(ckpt), "--pairs", str(synth_data / "test_pairs.txt"),
                 "--far", "0.1", "--write-calibration"]) == 0  # fmt: skip
    after = torch.load(ckpt, weights_only=True)  # still loads without unpickling code
    assert set(after) == set(before) and after["epoch"] == 3
    for k, v in before["state_dict"].items():
        assert torch.equal(v, after["state_dict"][k])
    rep = json.loads((tmp_path / "run" / "report.json").read_text())
    assert after["calibration"] == rep["calibration"]
    # 60 impostors cannot calibrate FAR 0.1: the best-accuracy threshold is stored, and why.
    assert after["calibration"]["far_target"] is None and "impostor" in after["calibration"]["far_note"]
    rec = FaceRecognizer.from_checkpoint(ckpt, detector=None)
    assert rec.threshold == rep["calibration"]["threshold"]
    assert not list(ckpt.parent.glob(".*.tmp"))  # no temp file left behind


def test_write_calibration_refuses_other_flip_modes(synth_data, tmp_path, capsys, ckpt_factory) -> None:
    ckpt = ckpt_factory(tmp_path / "c.ckpt")
    code = main(["eval", "--checkpoint", str(ckpt), "--pairs", str(synth_data / "test_pairs.txt"),
                 "--flip", "norm", "--write-calibration"])  # fmt: skip
    assert code == 2 and "--flip sum" in capsys.readouterr().err
    assert torch.load(ckpt, weights_only=True)["calibration"] == {}


def test_lowres_and_super_resolution(synth_data, tmp_path, monkeypatch, ckpt_factory) -> None:
    # An "SR module" that is plain bilinear upsampling reproduces the degraded images exactly, so its
    # row must equal the x4 row: proof that the SR output (not the original) is what gets embedded.
    mod = tmp_path / "sr_mod"
    mod.mkdir()
    (mod / "my_sr.py").write_text(
        "import torch.nn.functional as F\n"
        "def up4(x):\n"
        "    return F.interpolate(x, scale_factor=4, mode='bilinear', align_corners=False)\n"
    )
    monkeypatch.syspath_prepend(str(mod))
    ckpt = ckpt_factory(tmp_path / "run" / "checkpoints" / "best.ckpt")
    out = tmp_path / "r"
    assert main(["eval", "--checkpoint", str(ckpt), "--pairs", str(synth_data / "test_pairs.txt"),
                 "--lowres", "1,4", "--sr", "my_sr:up4", "--out", str(out)]) == 0  # fmt: skip
    rep = json.loads((out / "report.json").read_text())
    assert {"test_pairs", "test_pairs x1", "test_pairs x4", "test_pairs x4+sr"} <= set(rep)
    assert rep["test_pairs x1"]["fold_accuracy"] == rep["test_pairs"]["fold_accuracy"]
    assert rep["test_pairs x4+sr"]["fold_accuracy"] == rep["test_pairs x4"]["fold_accuracy"]
    assert rep["test_pairs x4+sr"]["auc"] == rep["test_pairs x4"]["auc"]
    assert rep["test_pairs x4"]["auc"] != rep["test_pairs"]["auc"]
    sys.modules.pop("my_sr", None)


def test_retrieval_folders_match_brute_force(synth_data) -> None:
    model = ModelInfo(_color_embed, 32, "RGB", "")
    res = evaluate_retrieval_folders(model, split=synth_data / "test", flip="none", ks=(1, 5))
    from faceforge.data.folder import decode_image, image_folder_samples

    _, samples = image_folder_samples(synth_data / "test")
    x = torch.from_numpy(np.stack([decode_image(p, 32) for p, _ in samples])).permute(0, 3, 1, 2)
    e = _color_embed(x).numpy()
    e /= np.linalg.norm(e, axis=1, keepdims=True)
    lab = np.array([label for _, label in samples])
    sim = e @ e.T
    np.fill_diagonal(sim, -np.inf)
    top = np.argsort(-sim, axis=1, kind="stable")[:, :5]
    assert res["recall_at_k"]["1"] == pytest.approx(np.mean(lab[top[:, 0]] == lab))
    assert res["recall_at_k"]["5"] == pytest.approx(np.mean((lab[top] == lab[:, None]).any(1)))


# --------------------------------------------------------------------------------------------------
# errors with file and line


def test_odd_bin_is_an_error_naming_the_file(tmp_path, capsys, ckpt_factory) -> None:
    bad = tmp_path / "cfp_fp.bin"
    bad.write_bytes(pickle.dumps(([b"a", b"b", b"c"], [True]), protocol=4))
    with pytest.raises(FaceforgeError, match=rf"{bad}: holds an odd number of images \(3\)"):
        read_bin(bad)
    ckpt = ckpt_factory(tmp_path / "c.ckpt")
    assert main(["eval", "--checkpoint", str(ckpt), "--bin", str(bad)]) == 2
    assert "odd number of images" in capsys.readouterr().err


def test_pairs_naming_absent_images_name_file_and_line(synth_data, tmp_path, capsys, ckpt_factory) -> None:
    lines = (synth_data / "test_pairs.txt").read_text().splitlines()
    # Line 3 (the second pair) points at an image number that does not exist.
    name, i, _ = lines[2].split("\t")
    lines[2] = f"{name}\t{i}\t99"
    bad = tmp_path / "pairs.txt"
    bad.write_text("\n".join(lines) + "\n")
    ckpt = ckpt_factory(tmp_path / "c.ckpt")
    code = main(["eval", "--checkpoint", str(ckpt), "--sets", f"x={bad}:{synth_data / 'test'}"])
    err = capsys.readouterr().err
    assert code == 2 and f"{bad}: 1 image reference(s) do not exist" in err and "line 3:" in err
    assert f"{name}_0099.jpg" in err


def test_cli_argument_errors(synth_data, tmp_path, capsys, ckpt_factory) -> None:
    ckpt = ckpt_factory(tmp_path / "c.ckpt")
    pairs = str(synth_data / "test_pairs.txt")
    cases = [
        (["--sets", "lfw=missing.bin"], "'missing.bin' is not an existing file"),
        (["--pairs", pairs, "--calibrate-on", "lfww"], "--calibrate-on 'lfww' is not an evaluated set"),
        (["--pairs", pairs, "--lowres", "0.5"], "--lowres '0.5': expected comma-separated factors >= 1"),
        (["--pairs", pairs, "--sr", "m:f"], "--sr needs --lowres"),
        (["--pairs", pairs, "--lowres", "2", "--sr", "no_such_module_xyz:f"], "cannot import module"),
        ([], "give at least one set"),
    ]
    for extra, msg in cases:
        assert main(["eval", "--checkpoint", str(ckpt), *extra]) == 2, extra
        assert msg in capsys.readouterr().err, extra
    assert main(["eval", "retrieval", "--checkpoint", str(ckpt), "--query", str(synth_data)]) == 2
    assert "--query DIR and --gallery DIR" in capsys.readouterr().err


def test_merge_refuses_a_corrupt_report(synth_data, tmp_path, capsys, ckpt_factory) -> None:
    ckpt = ckpt_factory(tmp_path / "c.ckpt")
    out = tmp_path / "o"
    out.mkdir()
    (out / "report.json").write_text("{not json")
    args = [
        "eval",
        "--checkpoint",
        str(ckpt),
        "--pairs",
        str(synth_data / "test_pairs.txt"),
        "--out",
        str(out),
    ]
    assert main(args) == 2 and "--fresh" in capsys.readouterr().err
    assert main([*args, "--fresh"]) == 0
    assert set(json.loads((out / "report.json").read_text())) == {"test_pairs", "calibration"}


def test_default_paths_are_not_touched(tmp_path) -> None:
    # EmbeddingCache(None) never writes anywhere.
    c = EmbeddingCache(None)
    assert c.put({"a": 1}, np.zeros(3)) is None and c.get({"a": 1}) is None
    assert not Path(tmp_path / "home").exists()
