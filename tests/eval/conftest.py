"""Fixtures for the evaluation-suite tests: a tiny untrained checkpoint and a small SynthFaces set."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from faceforge.data.synth import write_dataset


def make_checkpoint(path: Path, seed: int = 0, embedding_size: int = 32) -> Path:
    """A faceforge-format checkpoint of a small GhostFaceNetV1 (64×64) with random weights."""
    from faceforge.models.build import build_backbone

    torch.manual_seed(seed)
    cfg = {"name": "ghostfacenetv1", "width": 0.5, "stride": 2, "embedding_size": embedding_size}
    net = build_backbone(dict(cfg), 64)
    ckpt = {
        "state_dict": {f"backbone.{k}": v for k, v in net.state_dict().items()},
        "hyper_parameters": {"config": {"model": {"backbone": cfg}, "data": {"image_size": 64}}},
        "face_cfg": net.face_cfg.to_dict(),
        "calibration": {},
        "epoch": 3,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(ckpt, path)
    return path


@pytest.fixture
def ckpt_factory():
    """``make_checkpoint`` as a fixture (test modules cannot import conftest under importlib mode)."""
    return make_checkpoint


@pytest.fixture(autouse=True)
def _one_thread():
    # PyTorch collapses when its threads compete with other processes on a small shared machine.
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="session")
def synth_data(tmp_path_factory) -> Path:
    """SynthFaces with 20 held-out identities × 6 images and a 10-fold test_pairs.txt (120 pairs)."""
    out = tmp_path_factory.mktemp("synth_eval")
    write_dataset(
        out,
        identities=2,
        images_per_id=6,
        val_identities=0,
        test_identities=20,
        workers=1,
        progress=False,
        test_pairs_per_fold=6,
    )
    return out


@pytest.fixture(scope="session")
def synth_wild(tmp_path_factory) -> Path:
    """SynthFaces "wild": 250×250 scenes, the face at a random place and size; landmarks.csv holds the
    true 5 points; test_pairs.txt has 120 pairs over the 20 test identities."""
    out = tmp_path_factory.mktemp("synth_wild")
    write_dataset(
        out,
        identities=2,
        images_per_id=6,
        val_identities=0,
        test_identities=20,
        mode="wild",
        workers=1,
        progress=False,
        test_pairs_per_fold=6,
    )
    return out
