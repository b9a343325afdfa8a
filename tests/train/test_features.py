"""Training options: schedules, backbone freeze, EMA, clipping, early stopping, presets, loggers, bf16."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import lightning as L
import pytest
import torch

from faceforge.errors import FaceforgeError
from faceforge.heads import list_heads
from faceforge.models.checkpoint import load_checkpoint
from faceforge.train.config import load_config, validate_components
from faceforge.train.module import FaceRecognitionModule
from faceforge.train.optim import lr_factor
from faceforge.train.presets import DeviceInfo, choose_preset
from faceforge.train.run import make_loggers, train

TINY = [
    "--name", "f",
    "--data.image_size", "32",
    "--data.batch_size", "16",
    "--model.backbone.width", "0.25",
    "--model.backbone.stride", "2",
    "--model.backbone.embedding_size", "32",
    "--model.head.scale", "16",
    "--trainer.max_epochs", "1",
    "--trainer.enable_progress_bar", "false",
    "--trainer.logger", "null",
    "--data.val_pairs", "null",
    "--data.test_pairs", "null",
]  # fmt: skip


@pytest.fixture
def data(synth_8x6: Path) -> Path:
    return synth_8x6


def _cfg(data: Path, runs: Path, *extra: str) -> dict:
    return load_config(None, [*TINY, "--data.root", str(data), "--run_root", str(runs), *extra])


# ---------------------------------------------------------------- schedules
def _sched(**kw) -> dict:
    base = load_config(None)["scheduler"]
    base.update(kw)
    return base


def test_lr_schedules_follow_their_formulas() -> None:
    spe, total = 10, 100  # steps per epoch, total steps
    # linear warm-up over 2 epochs, then cosine to a floor of 0.1
    s = _sched(name="cosine", warmup_epochs=2, min_lr_ratio=0.1)
    assert lr_factor(0, s, spe, total) == pytest.approx(1 / 20)
    assert lr_factor(19, s, spe, total) == pytest.approx(1.0)
    t = (60 - 20) / 80
    assert lr_factor(60, s, spe, total) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * t)))
    # arcface_torch: polynomial (power 2) without warm-up
    p = _sched(name="polynomial", warmup_epochs=0, power=2.0)
    assert lr_factor(25, p, spe, total) == pytest.approx((1 - 0.25) ** 2)
    assert lr_factor(100, p, spe, total) == pytest.approx(0.0)
    # AdaFace: x0.1 at epochs 12, 20, 24
    m = _sched(name="multistep", warmup_epochs=0, milestones=[12, 20, 24], gamma=0.1)
    assert [lr_factor(e * spe, m, spe, 260) for e in (11, 12, 19, 20, 24, 25)] == pytest.approx(
        [1, 0.1, 0.1, 0.01, 0.001, 0.001]
    )
    assert lr_factor(12 * spe - 1, m, spe, 260) == pytest.approx(1.0)
    # SGDR: cycles of 1, 2, 4 epochs; restart to the full rate at epochs 1 and 3
    r = _sched(name="cosine_restarts", warmup_epochs=0, restart_epochs=1, restart_mult=2)
    assert lr_factor(10, r, spe, total) == pytest.approx(1.0)
    assert lr_factor(30, r, spe, total) == pytest.approx(1.0)
    assert lr_factor(20, r, spe, total) == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.5)))
    assert lr_factor(5, r, spe, total) == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.5)))


@pytest.mark.parametrize(
    ("key", "value", "match"),
    [
        ("scheduler.name", "cosin", "scheduler.name.*did you mean 'cosine'"),
        ("optimizer.betas", "[0.9]", "optimizer.betas"),
        ("trainer.ema_decay", "1.5", "trainer.ema_decay"),
        ("trainer.early_stopping", "{patiense: 2}", "trainer.early_stopping.patiense.*patience"),
        ("trainer.precision", "bf16", "trainer.precision"),
        ("model.partial_fc", "{sample_rate: 0}", "model.partial_fc.sample_rate"),
        ("trainer.freeze_backbone_epochs", "-1", "trainer.freeze_backbone_epochs"),
        ("trainer.logger", "neptune", "trainer.logger"),
    ],
)
def test_bad_values_name_the_key(key: str, value: str, match: str) -> None:
    with pytest.raises(FaceforgeError, match=match):
        validate_components(load_config(None, [f"--{key}", value]))


# ---------------------------------------------------------------- module behaviour
def _module(data: Path, runs: Path, *extra: str) -> tuple[FaceRecognitionModule, dict]:
    cfg = _cfg(data, runs, *extra)
    L.seed_everything(0, verbose=False)
    return FaceRecognitionModule(cfg, 8), cfg


@pytest.mark.slow  # trains a model
def test_frozen_backbone_is_unchanged_and_head_learns(data, tmp_path) -> None:
    ref, cfg = _module(data, tmp_path, "--trainer.freeze_backbone_epochs", "1")
    r = train(cfg, evaluate_test=False)  # train() seeds the same way before building the module
    sd = torch.load(r.last_checkpoint, weights_only=True)["state_dict"]
    for k, v in ref.backbone.state_dict().items():
        assert torch.equal(sd["backbone." + k], v), k  # weights and BatchNorm statistics
    assert not torch.equal(sd["head.weight"], ref.head.weight)


def test_frozen_timm_trunk_trains_its_new_neck_with_the_head(data, tmp_path) -> None:
    """A timm backbone freezes its (pretrained) trunk only: the neck is new and learns with the head."""
    pytest.importorskip("timm")
    m, _ = _module(
        data, tmp_path, "--trainer.freeze_backbone_epochs", "1",
        "--model.backbone", "{name: timm/test_resnet, embedding_size: 32, template: none}",
    )  # fmt: skip
    trunk_state = {k: v.clone() for k, v in m.backbone.model.state_dict().items()}
    m.train()
    emb = m._embed_for_training(torch.randint(0, 255, (8, 3, 32, 32), dtype=torch.uint8))
    m.head(emb, torch.arange(8) % 4).sum().backward()
    assert all(p.grad is None for p in m.backbone.model.parameters())
    assert all(p.grad is not None for p in m.backbone.neck.parameters())
    assert not m.backbone.model.training and m.backbone.neck.training
    for k, v in m.backbone.model.state_dict().items():
        assert torch.equal(v, trunk_state[k]), k  # BatchNorm statistics of the trunk too


def test_training_accuracy_is_that_of_the_plain_cosine(data, tmp_path) -> None:
    """With a margin the target logit is lowered on purpose: accuracy counts the nearest centre."""
    m, _ = _module(data, tmp_path, "--model.head.margin", "0.5", "--model.head.scale", "64")
    labels = torch.arange(4)
    with torch.no_grad():  # every embedding lies nearest its own centre, though not by 0.5 rad
        m.head.weight.copy_(torch.eye(8, 32))
    emb = torch.eye(4, 32) + 0.8 * torch.eye(4, 32).roll(1, 0)
    logits, cos = m.head.logits_and_cosine(emb, labels)
    assert (logits.argmax(1) == labels).float().mean() == 0  # what the margin logits say
    assert (cos.argmax(1) == labels).all()  # ... and the nearest centres
    m.backbone.forward = lambda x: emb  # type: ignore[method-assign]
    m.flip = False
    m.training_step((torch.zeros(4, 3, 32, 32, dtype=torch.uint8), labels), 0)
    assert m.epoch_stats[1] == 1.0


@pytest.mark.slow  # trains a model
def test_ema_follows_its_formula_and_is_what_inference_loads(data, tmp_path) -> None:
    m, _ = _module(data, tmp_path, "--trainer.ema_decay", "0.9")
    assert m.ema_decay_now() == pytest.approx(0.1)  # warm-up: (1 + n) / (10 + n) at n = 0
    m.ema_updates = 10**6  # past the warm-up: the configured decay
    w0 = [p.detach().clone() for p in m.backbone.parameters()]
    b0 = [b.detach().clone() for b in m.backbone.buffers()]
    with torch.no_grad():
        for p in m.backbone.parameters():
            p.add_(torch.randn_like(p))
        for b in m.backbone.buffers():
            b.add_(torch.ones_like(b) if b.is_floating_point() else torch.full_like(b, 7))
    m.update_ema()
    for e, w, a in zip(m.ema_backbone.parameters(), m.backbone.parameters(), w0, strict=True):
        torch.testing.assert_close(e, 0.9 * a + 0.1 * w)
    for e, w, a in zip(m.ema_backbone.buffers(), m.backbone.buffers(), b0, strict=True):
        # BatchNorm statistics are averaged with the weights they describe; counters are copied
        torch.testing.assert_close(e, 0.9 * a + 0.1 * w if e.is_floating_point() else w)
    assert m.ema_updates == 10**6 + 1

    r = train(_cfg(data, tmp_path, "--trainer.ema_decay", "0.5"), evaluate_test=False)
    ck = torch.load(r.last_checkpoint, weights_only=True)
    sd = ck["state_dict"]
    raw = {k[len("raw_backbone.") :]: v for k, v in sd.items() if k.startswith("raw_backbone.")}
    ema = {k[len("backbone.") :]: v for k, v in sd.items() if k.startswith("backbone.")}
    assert raw.keys() == ema.keys() and any(not torch.equal(raw[k], ema[k]) for k in raw)
    assert ck["faceforge_ema_updates"] == ck["global_step"] > 0  # one update per optimizer step
    resumed, _ = _module(data, tmp_path / "resumed", "--trainer.ema_decay", "0.5")
    resumed.on_load_checkpoint(ck)  # a resumed run continues the warm-up where it stopped
    assert resumed.ema_updates == ck["global_step"]
    loaded = load_checkpoint(r.last_checkpoint).backbone.state_dict()
    assert all(torch.equal(loaded[k], ema[k]) for k in loaded)


def test_ema_of_a_batchnorm_network_tracks_it_from_the_first_steps(data, tmp_path) -> None:
    """A high decay over a few hundred steps must not leave the average made of the random init.

    Without the warm-up, 300 updates at d = 0.999 keep 0.999^300 = 74 % of the initial weights
    beside the trained network's BatchNorm statistics, and the average answers one vector for every
    input (what an 8-epoch SynthFaces run measured). The trained weights are stood in for by a second
    initialisation whose statistics match it (forward passes in train mode).
    """
    torch.manual_seed(0)
    m, cfg = _module(data, tmp_path, "--trainer.ema_decay", "0.999")
    L.seed_everything(1, verbose=False)
    other = FaceRecognitionModule(cfg, 8)
    m.backbone.load_state_dict(other.backbone.state_dict())
    with torch.no_grad():
        m.backbone.train()
        for _ in range(20):
            m.backbone(torch.randn(16, 3, 32, 32))
    for _ in range(300):
        m.update_ema()
    m.backbone.eval()
    m.ema_backbone.eval()
    x = torch.randn(32, 3, 32, 32)
    with torch.no_grad():
        live, avg = m.backbone(x), m.ema_backbone(x)
    # Untrained networks answer similar vectors for noise, so compare what varies between inputs:
    # each embedding's offset from the batch mean, which a collapsed average loses.
    live, avg = live - live.mean(0), avg - avg.mean(0)
    assert torch.nn.functional.cosine_similarity(live, avg, dim=1).min() > 0.95
    assert avg.norm(dim=1).mean() > 0.5 * live.norm(dim=1).mean()


def test_backbone_clipping_leaves_the_head_alone(data, tmp_path) -> None:
    m, _ = _module(data, tmp_path, "--optimizer.clip_grad_norm", "0.001")
    x = torch.randint(0, 255, (4, 3, 32, 32), dtype=torch.uint8)
    loss = m.head.loss(m(x), torch.tensor([0, 1, 2, 3]))
    loss.backward()
    head_grad = m.head.weight.grad.clone()
    assert torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in m.backbone.parameters()])) > 0.01
    m.configure_gradient_clipping(None, None, None)
    total = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in m.backbone.parameters()]))
    assert total == pytest.approx(0.001, rel=1e-3)
    assert torch.equal(m.head.weight.grad, head_grad)


@pytest.mark.slow  # trains a model
def test_early_stopping_stops(data, tmp_path) -> None:
    # The loss falls, so "max" never improves: patience 1 stops after the second epoch of five.
    r = train(
        _cfg(
            data,
            tmp_path,
            "--trainer.max_epochs",
            "5",
            "--trainer.early_stopping",
            "{monitor: train/loss_epoch, mode: max, patience: 1}",
        ),
        evaluate_test=False,
    )
    assert len(r.history) == 2


# ---------------------------------------------------------------- presets
@pytest.mark.parametrize(
    ("info", "precision", "workers"),
    [
        (DeviceInfo("cuda", "NVIDIA H100", (9, 0), 80, 8, 64), "bf16-mixed", 8),
        (DeviceInfo("cuda", "NVIDIA A100", (8, 0), 40, 1, 6), "bf16-mixed", 6),
        (DeviceInfo("cuda", "Tesla V100", (7, 0), 32, 2, 8), "16-mixed", 4),
        (DeviceInfo("cuda", "Tesla T4", (7, 5), 15, 1, 4), "16-mixed", 4),
        (DeviceInfo("cpu", "CPU", cpus=8), "32-true", 0),
    ],
)
def test_preset_decisions(info: DeviceInfo, precision: str, workers: int) -> None:
    devices = "2" if info.count == 2 else "1"
    cfg = load_config(
        None, ["--trainer.devices", devices, "--data.batch_size", "64", "--data.global_batch_size", "512"]
    )
    p = choose_preset(cfg, info)
    assert (p.precision, p.num_workers) == (precision, workers)
    assert p.accumulate_grad_batches == 512 // (64 * int(devices))
    assert precision in p.summary and info.name in p.summary


def test_preset_keeps_explicit_values_and_checks_the_global_batch() -> None:
    h100 = DeviceInfo("cuda", "NVIDIA H100", (9, 0), 80, 1, 16)
    cfg = load_config(None, ["--trainer.precision", "32-true", "--data.num_workers", "2"])
    p = choose_preset(cfg, h100)
    assert (p.precision, p.num_workers, p.accumulate_grad_batches) == ("32-true", 2, 1)
    cpu = DeviceInfo("cpu", "CPU", cpus=8)
    assert choose_preset(load_config(None, ["--data.cache", "false"]), cpu).num_workers == 4
    with pytest.raises(FaceforgeError, match=r"data\.global_batch_size=100"):
        choose_preset(load_config(None, ["--data.batch_size", "64", "--data.global_batch_size", "100"]), cpu)


# ---------------------------------------------------------------- loggers and precision
@pytest.mark.slow  # trains a model
def test_tensorboard_and_csv_loggers_write(data, tmp_path) -> None:
    r = train(
        _cfg(
            data,
            tmp_path,
            "--trainer.logger",
            "[tensorboard, csv]",
            "--trainer.log_every_n_steps",
            "1",
            "--trainer.channels_last",
            "true",
            "--scheduler.name",
            "plateau",
        ),
        evaluate_test=False,
    )
    assert any((r.run_dir / "tb").rglob("events.out.tfevents*"))
    rows = list(csv.DictReader((r.run_dir / "csv" / "metrics.csv").open()))
    losses = [float(x["train/loss_step"]) for x in rows if x.get("train/loss_step")]
    assert len(losses) == 3 and all(math.isfinite(v) for v in losses)


@pytest.mark.parametrize("name", ["wandb", "mlflow"])
def test_missing_optional_logger_names_the_package(name: str, tmp_path, monkeypatch) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: None if n == name else real(n, *a))
    with pytest.raises(FaceforgeError, match=rf"pip install {name}"):
        make_loggers(load_config(None, ["--trainer.logger", name]), tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("head", list_heads())
def test_bf16_mixed_full_epoch_every_head_is_finite(data, tmp_path, head: str) -> None:
    extra = ["--model.head", f"{{name: {head}}}", "--trainer.precision", "bf16-mixed"]
    r = train(_cfg(data, tmp_path, *extra), evaluate_test=False)
    assert r.history[-1]["step"] == 3  # every batch of the epoch ran
    sd = torch.load(r.last_checkpoint, weights_only=True)["state_dict"]
    assert math.isfinite(r.history[-1]["loss"])
    assert all(torch.isfinite(v).all() for v in sd.values() if v.is_floating_point())


def test_identity_mixup_trains_the_soft_label(data, tmp_path) -> None:
    """A mixed identity's loss is phi·L(a) + (1 − phi)·L(b) (SynFace); other rows keep their loss."""
    import torch.nn.functional as F

    from faceforge.data.mixup import MixupTable

    m, _ = _module(data, tmp_path)
    m.set_mixup(MixupTable(torch.tensor([1, 5]), torch.tensor([2, 0]), torch.tensor([0.7, 0.55])))
    emb = torch.randn(4, 32, generator=torch.Generator().manual_seed(0))
    m.backbone.forward = lambda x: emb  # type: ignore[method-assign]
    m.flip = False
    labels = torch.tensor([0, 8, 3, 9])  # 8, 9: mixed identities 0 and 1
    m.training_step((torch.zeros(4, 3, 32, 32, dtype=torch.uint8), labels), 0)

    def ce(y: list[int]) -> torch.Tensor:
        t = torch.tensor(y)
        return F.cross_entropy(m.head.logits_and_cosine(emb, t)[0], t, reduction="none")

    la, lb = ce([0, 1, 3, 5]), ce([0, 2, 3, 0])
    w = torch.tensor([1.0, 0.7, 1.0, 0.55])
    expected = (w * la + (1 - w) * lb).mean()
    assert m.epoch_stats[0] == pytest.approx(float(expected), rel=1e-5)
    assert abs(float(expected) - float(la.mean())) > 1e-3  # the soft label is not the hard one


def test_identity_mixup_is_refused_with_partial_fc(data, tmp_path) -> None:
    with pytest.raises(FaceforgeError, match=r"data\.mixup cannot be combined with model\.partial_fc"):
        _module(data, tmp_path, "--data.mixup", "train_mix.csv", "--model.partial_fc", "{sample_rate: 0.5}")


def test_identity_mixup_without_its_csv_names_the_file(data, tmp_path) -> None:
    from faceforge.train.datamodule import FaceDataModule

    cfg = _cfg(data, tmp_path, "--data.mixup", "train_mix.csv")
    with pytest.raises(FaceforgeError, match=r"data\.mixup: cannot read .*train_mix\.csv"):
        FaceDataModule(cfg["data"])
