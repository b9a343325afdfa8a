"""The fused row of benchmarks/synth_to_real.py: the models' unit embeddings joined score the mean cosine."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]


def roc_auc(score: np.ndarray, same: np.ndarray) -> float:
    """Mann-Whitney AUC: the chance that a genuine pair outscores an impostor pair (ties count half)."""
    g, i = score[same][:, None], score[~same][None, :]
    return float(np.mean((g > i) + 0.5 * (g == i)))


def _bench():
    spec = importlib.util.spec_from_file_location("synth_to_real", ROOT / "benchmarks" / "synth_to_real.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _fake_lfw(root: Path, folds: int = 10, per: int = 3) -> Path:
    """An LFW-layout folder (empty image files: the fused row never decodes them) and its pairs.txt."""
    lines = [f"{folds} {per}"]
    k = 0
    for _ in range(folds):
        for _ in range(per):
            lines.append(f"P{k} 1 2")
            k += 1
        for _ in range(per):
            lines.append(f"P{k} 1 P{k + 1} 1")
            k += 2
    for line in lines[1:]:
        parts = line.split()
        files = (
            [(parts[0], parts[1]), (parts[0], parts[2])]
            if len(parts) == 3
            else [(parts[0], parts[1]), (parts[2], parts[3])]
        )
        for name, i in files:
            d = root / "lfw-deepfunneled" / name
            d.mkdir(parents=True, exist_ok=True)
            (d / f"{name}_{int(i):04d}.jpg").write_bytes(b"")
    (root / "pairs.txt").write_text("\n".join(lines) + "\n")
    return root


def test_fused_row_scores_the_mean_cosine(tmp_path: Path) -> None:
    bench = _bench()
    from faceforge.eval.suite import SetSpec, open_set

    lfw = _fake_lfw(tmp_path)
    opened = open_set(SetSpec("lfw", lfw / "pairs.txt", "pairs", lfw / "lfw-deepfunneled"))
    rng = np.random.default_rng(0)
    n = opened.n_images
    # Two "models" whose embeddings have very different norms: joining them without normalising
    # each one first would let the larger one decide alone.
    a = rng.normal(size=(n, 8)) * 50.0
    b = rng.normal(size=(n, 16)) * 0.01
    fused = bench.fused_row([{"embeddings": a}, {"embeddings": b}], lfw)

    def cos(e: np.ndarray) -> np.ndarray:
        u = e / np.linalg.norm(e, axis=1, keepdims=True)
        return (u[opened.index_a] * u[opened.index_b]).sum(1)

    same = np.asarray(opened.issame, bool)
    want = roc_auc(0.5 * (cos(a) + cos(b)), same)
    assert fused["auc"] == pytest.approx(want, abs=1e-9)
    assert abs(fused["auc"] - roc_auc(cos(a), same)) > 1e-3
    assert abs(fused["auc"] - roc_auc(cos(b), same)) > 1e-3
    # One model joined with itself is that model.
    alone = bench.fused_row([{"embeddings": a}, {"embeddings": a}], lfw)
    assert alone["auc"] == pytest.approx(roc_auc(cos(a), same), abs=1e-9)


def test_fused_row_needs_every_models_embeddings(tmp_path: Path) -> None:
    bench = _bench()
    lfw = _fake_lfw(tmp_path)
    e = np.ones((4, 3))
    assert bench.fused_row([{"embeddings": e}], lfw) is None
    assert bench.fused_row([{"embeddings": e}, {"embeddings": None}], lfw) is None


def test_plan_trains_every_version_seed_and_recipe() -> None:
    bench = _bench()
    got = bench.plan("1,2", [0, 3], "quickstart,edgeface_xs")
    assert got == [(v, s, r) for v in (1, 2) for s in (0, 3) for r in ("quickstart", "edgeface_xs")]
    # the recipe is a real config: its overrides load and name a registered backbone
    from faceforge.models.backbones import list_models
    from faceforge.train.config import load_config

    cfg = load_config(str(ROOT / "configs" / "quickstart.yaml"), bench.RECIPES["edgeface_xs"])
    assert cfg["model"]["backbone"]["name"] in list_models() and cfg["optimizer"]["name"] == "adamw"
    assert (
        bench.label(2, 3, "edgeface_xs", True) == "v2 edgeface_xs s3"
        and bench.label(1, 0, "quickstart", False) == "v1"
    )
    assert bench.fused_name(["v1", "v2"]) == "fused_v1_v2.ckpt"
    many = [bench.label(2, s, r, True) for s in range(12) for r in ("quickstart", "edgeface_xs")]
    assert len(bench.fused_name(many)) < 60 and bench.fused_name(many) != bench.fused_name(many[:-1])
    with pytest.raises(SystemExit, match="edgefase"):
        bench.plan("2", [0], "quickstart,edgefase")


def test_the_hour_preset_is_three_ghostfacenets_and_two_edgefaces_at_twelve_epochs() -> None:
    from faceforge.models.backbones import list_models
    from faceforge.train.config import load_config

    bench = _bench()
    got = bench.preset_plan("hour", "2")
    assert got == [(2, 0, "quickstart"), (2, 0, "edgeface_xs_12ep"), (2, 1, "quickstart"),
                   (2, 1, "edgeface_xs_12ep"), (2, 2, "quickstart")]  # fmt: skip
    assert [m for m in bench.preset_plan("hour", "1,2") if m[0] == 1] == [(1, *m[1:]) for m in got]
    # the 12-epoch recipe overrides --epochs (its overrides come after the benchmark's own)
    base = ["--trainer.max_epochs", "8"]
    cfg = load_config(str(ROOT / "configs" / "quickstart.yaml"), base + bench.RECIPES["edgeface_xs_12ep"])
    assert cfg["trainer"]["max_epochs"] == 12 and cfg["model"]["backbone"]["name"] in list_models()
    assert cfg["optimizer"]["lr"] == 0.001
    # the preset's values are defaults: an option given still wins; it names its own models
    args = bench.parse_args(["--preset", "hour"])
    assert (args.versions, args.epochs, args.threads, args.checkpoint) == ("1,2", 8, 2, "best")
    assert bench.parse_args(["--preset", "hour", "--epochs", "3", "--optimizer.lr", "0.2"]).epochs == 3
    assert bench.parse_args(["--preset", "hour", "--optimizer.lr", "0.2"]).overrides == [
        "--optimizer.lr",
        "0.2",
    ]
    assert bench.parse_args([]).epochs == 2  # no preset: the script's own defaults
    for extra in (["--seeds", "0,1"], ["--recipes", "edgeface_xs"]):
        with pytest.raises(SystemExit, match="--preset hour names its models"):
            bench.parse_args(["--preset", "hour", *extra])
