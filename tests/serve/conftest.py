"""Fixtures of the service tests: the real FaceRecognizer of ``trained_checkpoint`` behind a real uvicorn.

Test images are SynthFaces (seed 0) identities >= 1000, which the fixture model never saw, rendered
as 112×112 ArcFace-aligned crops (the recognizer takes those as aligned, so no detector is needed)
and, where ../shared holds YuNet, as 250×250 "wild" scenes that go through detection.

``FACEFORGE_SERVE_CKPT=path/best.ckpt`` reuses an already trained checkpoint instead of training the
``trained_checkpoint`` fixture (a development shortcut; CI leaves it unset).
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
httpx = pytest.importorskip("httpx")

REPO = Path(__file__).resolve().parents[2]
SHARED = Path(os.environ.get("FACEFORGE_SHARED", REPO.parent / "shared"))
YUNET = SHARED / "models" / "detectors" / "yunet_s_640_640.onnx"

API_KEY = "test-key-3f9c"
#: the test server's limits (small, so the 413 tests send little)
MAX_BODY = 2 * 2**20
MAX_PIXELS = 4_000_000
#: unseen identities and the nuisance level of the test images
FIRST_ID = 1000
N_IDS = 12
DIFFICULTY = 0.5


def png_bytes(rgb: np.ndarray) -> bytes:
    """RGB uint8 → PNG file bytes."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture(scope="session")
def serve_recognizer(request: pytest.FixtureRequest) -> Any:
    """The real recognizer (PyTorch backend, one thread) of the trained SynthFaces checkpoint."""
    import torch

    from faceforge.infer import FaceRecognizer

    torch.set_num_threads(1)
    ckpt = os.environ.get("FACEFORGE_SERVE_CKPT") or request.getfixturevalue("trained_checkpoint")
    detector = str(YUNET) if YUNET.is_file() else "auto"
    return FaceRecognizer.from_checkpoint(ckpt, detector=detector)


@pytest.fixture(scope="session")
def has_detector() -> bool:
    """Whether the YuNet file of ../shared is there (tests of photos that need detection skip otherwise)."""
    return YUNET.is_file()


@pytest.fixture(scope="session")
def synth_png() -> dict[tuple[int, int], bytes]:
    """``{(identity, index): PNG bytes}`` of aligned 112×112 SynthFaces crops, indices 0..5."""
    from faceforge.data.synth import SynthFaces

    sf = SynthFaces(0, difficulty=DIFFICULTY)
    return {
        (i, j): png_bytes(sf.image(i, j)[0]) for i in range(FIRST_ID, FIRST_ID + N_IDS + 1) for j in range(6)
    }


@pytest.fixture(scope="session")
def serve_gallery(serve_recognizer: Any, synth_png: dict) -> Any:
    """A flat gallery of images 0..2 of the test identities, labelled ``id<identity>``."""
    from faceforge.infer import Gallery

    keys = [(i, j) for i in range(FIRST_ID, FIRST_ID + N_IDS) for j in range(3)]
    emb = serve_recognizer.embed([synth_png[k] for k in keys])
    return Gallery.build(
        emb, [f"id{i}" for i, _ in keys], [{"identity": i, "index": j} for i, j in keys], index="flat"
    )


@pytest.fixture(scope="session")
def live_server(serve_recognizer: Any, serve_gallery: Any) -> Iterator[Any]:
    """A real uvicorn on 127.0.0.1 (free port) serving the recognizer + gallery, API key required."""
    from faceforge.serve.app import create_app
    from faceforge.serve.server import BackgroundServer

    app = create_app(
        serve_recognizer,
        serve_gallery,
        api_key=API_KEY,
        max_body_bytes=MAX_BODY,
        max_pixels=MAX_PIXELS,
        max_batch=1,  # the same model calls on every machine (``auto`` probes; tested in test_batching)
    )
    with BackgroundServer(app) as srv:
        yield srv


@pytest.fixture
def client(live_server: Any) -> Iterator[Any]:
    """An httpx client of ``live_server`` that sends the API key."""
    with httpx.Client(base_url=live_server.url, headers={"X-API-Key": API_KEY}, timeout=60) as c:
        yield c


@pytest.fixture(scope="session")
def serve_cfg() -> Any:
    """The constants above, for the test modules (which cannot import a conftest)."""
    from types import SimpleNamespace

    return SimpleNamespace(
        api_key=API_KEY,
        max_body=MAX_BODY,
        max_pixels=MAX_PIXELS,
        first_id=FIRST_ID,
        n_ids=N_IDS,
        png=png_bytes,
    )
