"""Training with several validation sets, retrieval validation on a split, P×K batches, the
checkpoint monitor and exact P×K resume (tiny SynthFaces runs, CPU)."""

from __future__ import annotations

import csv
import shutil
from collections import Counter
from pathlib import Path

import pytest
import torch

from faceforge.cli.main import main
from faceforge.data.binset import pairs_to_bin
from faceforge.data.pairs import read_pairs
from faceforge.data.splits import make_split
from faceforge.errors import FaceforgeError
from faceforge.models.checkpoint import read_checkpoint
from faceforge.train.config import load_config
from faceforge.train.datamodule import FaceDataModule
from faceforge.train.module import FaceRecognitionModule
from faceforge.train.run import train

TINY = [
    "--data.image_size", "32",
    "--model.backbone.width", "0.25",
    "--model.backbone.stride", "2",
    "--model.backbone.embedding_size", "32",
    "--model.head.scale", "16",
    "--trainer.precision", "32-true",
    "--trainer.num_threads", "1",
    "--trainer.enable_progress_bar", "false",
    "--verification.batch_size", "64",
    "--data.test_pairs", "null",
]  # fmt: skip


def _cfg(data: Path, runs: Path, *extra: str) -> dict:
    return load_config(
        None, [*TINY, "--data.root", str(data), "--run_root", str(runs), "--name", "v", *extra]
    )


@pytest.fixture(scope="module")
def class_layout(synth_8x6: Path, tmp_path_factory) -> Path:
    """4 classes of 7 objects x 4 images (``root/class<c>/obj<NN>_<seq>.jpg``) and its split file."""
    root = tmp_path_factory.mktemp("classes")
    ids = sorted((synth_8x6 / "train").iterdir()) + sorted((synth_8x6 / "val").iterdir())
    for n, d in enumerate(ids[:28]):
        c = root / "images" / f"class{n % 4}"
        c.mkdir(parents=True, exist_ok=True)
        for j, f in enumerate(sorted(d.iterdir())[:4]):
            shutil.copy(f, c / f"obj{n:02d}_{j}.jpg")
    split = make_split(root / "images", root / "split.json", ratios=(0.6, 0.4, 0.0))
    assert split.classes == ["class0", "class1", "class2", "class3"]
    return root


def test_split_training_reads_the_train_part_in_place(synth_8x6: Path, tmp_path: Path) -> None:
    split = make_split(synth_8x6 / "train", tmp_path / "split.json", ratios=(0.75, 0.25, 0.0))
    cfg = _cfg(synth_8x6, tmp_path, "--data.split", str(tmp_path / "split.json"), "--data.batch_size", "8")
    dm = FaceDataModule(cfg["data"])
    assert len(dm.train_set) == split.num_images("train") < 48
    assert dm.num_classes == len(split.ids("train"))
    # No copies: the samples are the data set's own files.
    assert all(Path(p).parent.parent == synth_8x6 / "train" for p, _ in dm.train_set.samples)
    with pytest.raises(FaceforgeError, match=r"data.split: split file .*nope.json does not exist"):
        FaceDataModule(_cfg(synth_8x6, tmp_path, "--data.split", "nope.json")["data"])


@pytest.mark.slow  # trains a model (3 epochs)
def test_two_validation_sets_log_each_and_the_mean_and_best_ckpt_follows_the_monitor(
    synth_8x6: Path, tmp_path: Path
) -> None:
    binset = pairs_to_bin(read_pairs(synth_8x6 / "val_pairs.txt"), tmp_path / "val.bin")
    sets = f"{{a: {binset}, b: {synth_8x6 / 'test_pairs.txt'}}}"
    cfg = _cfg(
        synth_8x6, tmp_path, "--data.val_sets", sets, "--data.batch_size", "16", "--trainer.max_epochs", "3",
        "--trainer.logger", "csv", "--checkpoint.monitor", "val/b_acc", "--checkpoint.mode", "min",
        "--checkpoint.keep", "2",
    )  # fmt: skip
    r = train(cfg, evaluate_test=False)
    rows = [x for x in csv.DictReader((r.run_dir / "csv" / "metrics.csv").open()) if x.get("val/mean_acc")]
    assert len(rows) == 3
    for row, h in zip(rows, r.history):
        a, b, mean = (float(row[k]) for k in ("val/a_acc", "val/b_acc", "val/mean_acc"))
        assert mean == pytest.approx((a + b) / 2, abs=1e-6)
        assert float(row["val/acc"]) == pytest.approx(mean, abs=1e-6)  # val/acc is the mean with val_sets
        assert -1 <= float(row["val/a_threshold"]) <= 1 and float(row["val/b_best"]) >= b - 1e-6
        assert h["val_sets"]["a"] == pytest.approx(a, abs=1e-6) and h["val_sets"]["b"] == pytest.approx(
            b, abs=1e-6
        )
    # best.ckpt holds the epoch with the lowest val/b_acc (mode min), the first one on a tie.
    b_accs = [h["val_sets"]["b"] for h in r.history]
    want = b_accs.index(min(b_accs))
    means = [h["val_acc"] for h in r.history]
    # The check can fail whatever the training draws: mode max on the same metric, or the default
    # monitor (val/mean_acc, max), picks another epoch unless all three epochs tie on both.
    assert want != b_accs.index(max(b_accs)) or want != means.index(max(means))
    assert read_checkpoint(r.best_checkpoint)["epoch"] == want
    assert r.val["monitor"] == "val/b_acc" and r.val["best_score"] == pytest.approx(min(b_accs), abs=1e-6)
    kept = sorted(p.name for p in (r.run_dir / "checkpoints").glob("best-e*.ckpt"))
    assert len(kept) == 2, kept


@pytest.mark.slow  # trains a model (2 epochs)
def test_retrieval_validation_on_a_split_with_pk_batches(
    class_layout: Path, tmp_path: Path, monkeypatch
) -> None:
    seen: list[Counter] = []
    original = FaceRecognitionModule.training_step

    def spy(self, batch, batch_idx):
        seen.append(Counter(batch[1].tolist()))
        return original(self, batch, batch_idx)

    monkeypatch.setattr(FaceRecognitionModule, "training_step", spy)
    cfg = _cfg(
        class_layout, tmp_path, "--data.split", "split.json", "--data.val_pairs", "null",
        "--validation.retrieval", "{k: 5, ks: [1, 3]}", "--data.batch_size", "8",
        "--data.sampler", "{samples_per_class: 4}", "--trainer.max_epochs", "2", "--trainer.logger", "null",
    )  # fmt: skip
    r = train(cfg, evaluate_test=False)
    assert seen and all(sorted(c.values()) == [4, 4] for c in seen), seen  # P=2 classes x K=4 each
    for h in r.history:
        m = h["retrieval"]
        assert set(m) == {"val/knn_acc", "val/recall@1", "val/recall@3", "val/map_at_r"}
        assert all(0 <= v <= 1 for v in m.values()) and m["val/recall@1"] <= m["val/recall@3"]
    knn = [h["retrieval"]["val/knn_acc"] for h in r.history]
    assert r.val["monitor"] == "val/knn_acc"
    assert read_checkpoint(r.best_checkpoint)["epoch"] == knn.index(max(knn))


class _Crash(RuntimeError):
    pass


@pytest.mark.slow  # trains a model three times
def test_pk_run_resumed_mid_epoch_equals_an_uninterrupted_one(
    synth_8x6: Path, tmp_path: Path, capsys, monkeypatch
) -> None:
    # 48 images, P=4 x K=3: 4 steps per epoch; the interrupted run dies after step 6 (in epoch 1),
    # right after last.ckpt was written (every 2 steps).
    args = [
        "--data.batch_size", "12", "--data.sampler.samples_per_class", "3", "--trainer.max_epochs", "2",
        "--trainer.deterministic", "true", "--scheduler.name", "constant", "--scheduler.warmup_epochs", "0",
        "--model.backbone.dropout", "0.2", "--data.val_pairs", "null", "--trainer.logger", "null",
        "--data.augment", "[{name: low_resolution, factor: [2, 4], p: 0.5}]",
        "--trainer.checkpoint_every_n_steps", "2",
    ]  # fmt: skip
    ref = train(_cfg(synth_8x6, tmp_path / "a", *args), evaluate_test=False)

    original = FaceRecognitionModule.on_train_batch_start

    def crash_after_step_6(self, batch, batch_idx):
        if self.global_step == 6:
            raise _Crash("killed")
        return original(self, batch, batch_idx)

    monkeypatch.setattr(FaceRecognitionModule, "on_train_batch_start", crash_after_step_6)
    with pytest.raises(_Crash):
        train(_cfg(synth_8x6, tmp_path / "b", *args), evaluate_test=False)
    monkeypatch.setattr(FaceRecognitionModule, "on_train_batch_start", original)
    (cut,) = (tmp_path / "b").glob("v/*/checkpoints/last.ckpt")
    assert torch.load(cut, weights_only=True)["global_step"] == 6
    partial = shutil.copy(cut, tmp_path / "mid-epoch.ckpt")
    done = train(_cfg(synth_8x6, tmp_path / "b", *args, "--resume", str(cut)), evaluate_test=False)
    a = torch.load(ref.last_checkpoint, weights_only=True)
    b = torch.load(done.last_checkpoint, weights_only=True)
    assert a["global_step"] == b["global_step"] == 8
    diff = max(
        (a["state_dict"][k].double() - b["state_dict"][k].double()).abs().max().item()
        for k in a["state_dict"]
    )
    assert diff <= 1e-6, diff

    # Asking a resume for fewer epochs than were trained is one line, exit 2, before any training.
    argv = ["train", *TINY, *args, "--data.root", str(synth_8x6), "--run_root", str(tmp_path / "c"),
            "--resume", str(ref.last_checkpoint), "--trainer.max_epochs", "1"]  # fmt: skip
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "has trained 2 epochs, more than trainer.max_epochs 1" in err[0], err
    with pytest.raises(FaceforgeError, match=r"part of epoch 2, more than trainer.max_epochs 1"):
        train(_cfg(synth_8x6, tmp_path / "d", *args, "--resume", str(partial), "--trainer.max_epochs", "1"))
