"""Issue #14's acceptance: classification by retrieval on a generated ``class/ID_seq`` collection.

The README's four commands, run in this process through the CLI entry point: SynthObjects → split →
train ``configs/retrieval_classification_cpu.yaml`` (a small timm network, P×K batches, a margin
warm-up, a frozen warm-up epoch, retrieval validation as the monitor, early stopping) → ``eval
classify`` on the test part. The model's kNN accuracy must beat a raw-pixel kNN on the same split
(same gallery, same k and vote) by 20 points, and no face detector may be built along the way.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from faceforge.cli.main import main

pytest.importorskip("timm")

REPO = Path(__file__).resolve().parents[2]
CONFIG = REPO / "configs" / "retrieval_classification_cpu.yaml"
SPLIT = "data/objects/split.json"


@pytest.fixture
def no_detector(monkeypatch: pytest.MonkeyPatch) -> None:
    """Building or looking up a face detector in any way fails the test."""
    from faceforge.align import choose
    from faceforge.align.detectors import base

    def boom(*a: object, **k: object) -> None:
        raise AssertionError("a face detector was built for a whole-image model")

    monkeypatch.setattr(base.DETECTORS, "create", boom)
    monkeypatch.setattr(base, "create_detector", boom)
    monkeypatch.setattr(base.Detector, "__init__", boom)
    monkeypatch.setattr(choose, "resolve_detector", boom)


def raw_pixel_accuracy(split_file: Path, k: int) -> float:
    """Weighted k-NN accuracy of the test part on cosine over 32×32 pixels, gallery = train part.

    The better of RGB and grey pixels, so the model is held against the stronger baseline.
    """
    from faceforge.data.folder import FileListDataset
    from faceforge.data.splits import Split
    from faceforge.eval.classify import classify_by_retrieval

    split = Split.load(split_file)

    def pixels(part: str) -> tuple[torch.Tensor, np.ndarray]:
        # Decoded as training and `eval classify` decode them (shorter side resized, centre cut).
        ds = FileListDataset(split.samples(part, label="class"), 32, class_names=split.classes)
        xs, ys = zip(*(ds[i] for i in range(len(ds))), strict=True)
        return torch.stack(xs).float(), np.asarray(ys)

    (g, gl), (q, ql) = pixels("train"), pixels("test")
    accs = []
    for grey in (False, True):
        gv, qv = (g.mean(1), q.mean(1)) if grey else (g, q)
        res = classify_by_retrieval(gv.flatten(1).numpy(), gl, qv.flatten(1).numpy(), ql, k=k)
        accs.append(float(res.accuracy))
    return max(accs)


@pytest.mark.slow  # trains a model (about a minute on 2 cores)
@pytest.mark.usefixtures("no_detector")
def test_readme_retrieval_flow_beats_raw_pixels(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("FACEFORGE_HOME", str(tmp_path / "home"))
    cfg = yaml.safe_load(CONFIG.read_text())
    commands = [
        ["data", "synth", "--kind", "objects", "--out", "data/objects"],
        ["data", "split", "data/objects", "--out", SPLIT],
        ["train", "--config", str(CONFIG)],
        ["eval", "classify", "--run", f"runs/{cfg['name']}", "--split", SPLIT],
    ]
    out = ""
    for argv in commands:
        assert main(argv) == 0, argv
        out += capsys.readouterr().out
    (run,) = (tmp_path / "runs" / cfg["name"]).iterdir()

    # The run trained as the acceptance names it: P×K batches, a frozen warm-up epoch, a margin
    # ramped up from 0, retrieval validation monitored by best.ckpt and early stopping.
    used = yaml.safe_load((run / "config.yaml").read_text())
    assert used["data"]["sampler"]["name"] == "pk" and "sampler: 8 classes x 4 images = 32" in out
    assert used["model"]["backbone"]["name"].startswith("timm/")
    assert used["trainer"]["early_stopping"]["monitor"] == "val/knn_acc"
    history = json.loads((run / "metrics.json").read_text())["history"]
    frozen = int(used["trainer"]["freeze_backbone_epochs"])
    assert frozen >= 1 and "warm-up: backbone trunk" in out
    assert [h["frozen"] for h in history] == [h["epoch"] < frozen for h in history]
    margins = [h["margin"] for h in history]
    final = float(used["model"]["head"]["margin"])
    assert margins[0] == 0.0 and margins[-1] == pytest.approx(final) and final > 0
    assert all(a <= b for a, b in itertools.pairwise(margins))  # a ramp, never down
    assert any(0 < m < final for m in margins)  # ... with steps between 0 and the final margin
    assert len(history) <= int(used["trainer"]["max_epochs"])
    knn = [h["retrieval"]["val/knn_acc"] for h in history]
    best = torch.load(run / "checkpoints" / "best.ckpt", map_location="cpu", weights_only=True)
    assert best["epoch"] == int(np.argmax(knn)), (best["epoch"], knn)

    report = json.loads(next(run.glob("classify-*/classify.json")).read_text())
    assert report["n_queries"] > 0 and report["n_gallery"] > report["n_queries"]
    model_acc = float(report["accuracy"])
    baseline = raw_pixel_accuracy(tmp_path / SPLIT, int(report["k"]))
    print(f"kNN accuracy on test: model {model_acc:.4f}, raw pixels {baseline:.4f}")
    assert model_acc >= baseline + 0.20, (model_acc, baseline)
