"""Fixtures shared by the training tests: one torch thread, and one tiny SynthFaces set."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from faceforge.data.synth.writer import write_dataset


@pytest.fixture(autouse=True)
def _one_thread():
    # Two intra-op threads collapse when another process competes for the 2 cores of CI.
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="session")
def synth_8x6(tmp_path_factory) -> Path:
    """8 training identities x 6 images, 20 + 20 held-out identities with 6 pairs per fold (read-only)."""
    out = tmp_path_factory.mktemp("synth_8x6")
    write_dataset(out, identities=8, images_per_id=6, val_identities=20, test_identities=20, workers=1,
                  progress=False, val_pairs_per_fold=6, test_pairs_per_fold=6)  # fmt: skip
    return out


@pytest.fixture
def tiny_args() -> list[str]:
    """Training overrides for a small GhostFaceNet on 32x32 crops without validation: seconds to train."""
    return ["--data.image_size", "32", "--data.batch_size", "8", "--model.backbone.width", "0.25",
            "--model.backbone.embedding_size", "32", "--trainer.num_threads", "1", "--data.val_pairs", "null",
            "--data.test_pairs", "null", "--trainer.enable_progress_bar", "false"]  # fmt: skip
