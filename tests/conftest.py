"""Shared fixtures: ``shared_dir`` points at ../shared and skips cleanly when it is absent."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("FACEFORGE_SHARED", REPO.parent / "shared"))


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """The ../shared folder (reference vectors, LFW, detector files); skip the test when absent."""
    if not (SHARED / "reference").is_dir():
        pytest.skip(f"../shared not found at {SHARED} (reference data for this test)")
    return SHARED
