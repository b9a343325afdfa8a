"""Shared fixtures: ``shared_dir`` points at ../shared and skips cleanly when it is absent."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("FACEFORGE_SHARED", REPO.parent / "shared"))


#: fixtures that train a model (directly or through ``trained_checkpoint``): their tests are ``slow``
TRAINING_FIXTURES = ("trained_checkpoint", "serve_recognizer", "serve_gallery", "live_server", "client")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark every test that needs a trained model ``slow`` (``make test-fast`` leaves them out).

    Tests that call ``train()`` themselves carry the mark in their own file; this catches the ones
    that only ask for a training fixture, including through another fixture (``fixturenames`` is the
    closure) or, for the service tests, ``request.getfixturevalue`` inside ``serve_recognizer``.
    """
    for item in items:
        if any(name in TRAINING_FIXTURES for name in getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(autouse=True)
def _no_cpu_bf16_probe(request, monkeypatch):
    """Tests train with precision ``auto``; on a CPU with bf16 units that runs a timing probe whose
    pick could depend on the machine's load. Outside the tests of the rule itself, report no bf16
    units so every run picks fp32, the same on every machine."""
    if request.module.__name__.endswith("test_cpu_precision"):
        yield
        return
    from faceforge.train import presets

    monkeypatch.setattr(presets, "cpu_bf16_support", lambda: None)
    yield


@pytest.fixture
def one_thread():
    """One torch intra-op thread for the test: two collapse when another process competes for CI's 2 cores."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """The ../shared folder (reference vectors, LFW, detector files); skip the test when absent."""
    if not (SHARED / "reference").is_dir():
        pytest.skip(f"../shared not found at {SHARED} (reference data for this test)")
    return SHARED


# A small GhostFaceNetV1 + ArcFace trained on SynthFaces (64×64 input, 128-d, 8 epochs), ~80 s at
# one thread on an idle 2-core machine (2.5 min when it is shared); its checkpoint carries the
# calibration of its 400 validation pairs (~88% accurate). Used by the inference,
# export and service tests. Identities >= 1000 of SynthFaces(seed=0) were never seen in training.
TRAINED_SYNTH_IDENTITIES = 150


@pytest.fixture(scope="session")
def trained_checkpoint(tmp_path_factory) -> Path:
    """Path of a faceforge checkpoint trained on SynthFaces (seed 0) with its calibration filled."""
    import torch

    from faceforge.data.synth import write_dataset
    from faceforge.train.config import load_config
    from faceforge.train.run import train

    root = tmp_path_factory.mktemp("trained_checkpoint")
    write_dataset(
        root / "data",
        identities=TRAINED_SYNTH_IDENTITIES,
        images_per_id=16,
        val_identities=30,
        test_identities=0,
        workers=1,
        progress=False,
        val_pairs_per_fold=20,
    )
    overrides = {
        "data.root": root / "data",
        "data.test_pairs": "null",
        "run_root": root / "runs",
        "name": "fixture",
        "data.image_size": 64,
        "data.batch_size": 64,
        "model.backbone.name": "ghostfacenetv1",
        "model.backbone.width": 0.25,
        "model.backbone.stride": 2,
        "model.backbone.embedding_size": 128,
        "model.head.scale": 32,
        "model.head.margin": 0.3,
        "scheduler.warmup_epochs": 0.5,
        "trainer.max_epochs": 8,
        "trainer.precision": "32-true",
        "trainer.accelerator": "cpu",
        "trainer.enable_progress_bar": "false",
        "verification.batch_size": 128,
    }
    argv = [a for k, v in overrides.items() for a in (f"--{k}", str(v))]
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        result = train(load_config(None, argv), evaluate_test=False)
    finally:
        torch.set_num_threads(n)
    return result.best_checkpoint
