"""The service under attack (a real uvicorn in another process): 16 concurrent small JPEGs that declare
~40 megapixels keep its RSS under 1.5 GB, every answer is 413/422/503 within 10 s, normal requests beside
them succeed and RSS comes back; a full decode budget answers 503 with Retry-After; answers never carry
server paths unless --expose-paths."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

httpx = pytest.importorskip("httpx")
pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

REPO = Path(__file__).resolve().parents[2]
YUNET = (
    Path(os.environ.get("FACEFORGE_SHARED", REPO.parent / "shared")) / "models/detectors/yunet_s_640_640.onnx"
)
GIB = 2**30


def _png(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, format="PNG")
    return buf.getvalue()


def _crops(n: int) -> list[bytes]:
    rng = np.random.default_rng(0)
    return [_png(rng.integers(0, 255, (112, 112, 3), dtype=np.uint8)) for _ in range(n)]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="RSS is read from /proc")
@pytest.mark.slow  # several seconds: runs in make test, not make test-fast
def test_forty_megapixel_jpegs_keep_the_server_bounded(tmp_path) -> None:
    from loadtest import LoadRequest, flat_jpeg, header_only_jpeg, run_attack

    detector = str(YUNET) if YUNET.is_file() else "none"
    proc = subprocess.Popen(
        [sys.executable, str(REPO / "tests" / "helpers" / "loadtest.py"), "--detector", detector],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    try:
        line = proc.stdout.readline()
        assert line.startswith("PORT "), line
        url = f"http://127.0.0.1:{int(line.split()[1])}"
        valid = flat_jpeg(6000, 6650)  # 39.9 MP: allowed, decoded at reduced scale
        declared = header_only_jpeg(6000, 6700)  # 40.2 MP: refused from its header
        assert len(valid) < 400_000 and len(declared) < 1000
        attack = [
            LoadRequest("/v1/embed", {"image": ("x.jpg", declared if i % 4 == 0 else valid, "image/jpeg")})
            for i in range(16)
        ]
        c = _crops(4)
        normal = [
            LoadRequest(
                "/v1/verify", {"a": ("a.png", c[i], "image/png"), "b": ("b.png", c[i + 1], "image/png")}
            )
            for i in range(3)
        ]
        with httpx.Client(base_url=url, timeout=30) as client:  # warm-up: the first request loads lazily
            assert client.post("/v1/verify", files=normal[0].files).status_code == 200
        res = run_attack(url, proc.pid, attack, normal, concurrency=16, settle_s=3.0)
    finally:
        proc.stdin.close()
        proc.wait(30)
    print(res.summary())
    codes = [c for c, _ in res.attack]
    assert set(codes) <= {413, 422, 503} and codes.count(413) == 4, codes
    assert max(t for _, t in res.attack) < 10.0
    assert res.normal and all(c == 200 for c, _ in res.normal), res.normal
    assert res.rss_peak < 1.5 * GIB, res.summary()
    assert res.rss_after - res.rss_start < 300 * 2**20, res.summary()
    limits = res.health["limits"]
    assert limits["max_pixels"] == 40_000_000 and limits["decode_max_side"] == 2048
    assert res.health["decode"]["peak_bytes"] <= limits["max_decode_bytes"]


@pytest.fixture(scope="module")
def recognizer():
    from faceforge.align.detectors.base import Detector
    from faceforge.infer import FaceRecognizer

    class Slow(Detector):
        name = "slow"

        def _detect(self, rgb):
            time.sleep(1.0)
            return []

    rec = FaceRecognizer.from_name("mobilefacenet", detector=Slow(), threshold=0.3)
    rec.source = "/srv/faceforge/secret-models/model.ckpt"
    return rec


def _gallery(rec):
    from faceforge.infer import Gallery

    emb = rec.embed(_crops(3))
    meta = [
        {"path": f"/srv/photos/alice/{i}.jpg", "identity": i, "note": f"from /srv/photos/x{i}.jpg"}
        for i in range(3)
    ]
    return Gallery.build(emb, ["alice", "bob", "carol"], meta, index="flat")


@pytest.mark.parametrize("expose", [False, True])
def test_answers_never_carry_server_paths(recognizer, expose) -> None:
    from faceforge.serve.app import create_app
    from faceforge.serve.server import BackgroundServer

    app = create_app(recognizer, _gallery(recognizer), expose_paths=expose)
    with BackgroundServer(app) as srv, httpx.Client(base_url=srv.url, timeout=30) as client:
        r = client.post("/v1/search", files={"image": ("q.png", _crops(1)[0], "image/png")}, data={"k": "3"})
        assert r.status_code == 200, r.text
        models = client.get("/v1/models")
        health = client.get("/healthz").json()
    text = r.text + models.text
    if expose:
        assert "/srv/photos/alice/0.jpg" in text and "/srv/faceforge/secret-models/model.ckpt" in text
    else:
        assert "/srv" not in text, text[:500]
        hit = next(h for h in r.json()["results"] if h["label"] == "alice")
        assert hit["meta"] == {"path": "0.jpg", "identity": 0, "note": "from x0.jpg"}
        assert models.json()["models"][0]["source"] == "model.ckpt"
    assert health["limits"]["max_pixels"] == 40_000_000 and "decode" in health


def test_full_decode_budget_answers_503_with_retry_after(recognizer) -> None:
    from faceforge.serve.app import create_app
    from faceforge.serve.server import BackgroundServer

    photo = _png(np.full((200, 300, 3), 90, np.uint8))  # not a crop: goes through the (slow) detector
    app = create_app(recognizer, max_decode_bytes=1024, decode_wait_s=0.3)
    with BackgroundServer(app) as srv, httpx.Client(base_url=srv.url, timeout=30) as client:

        def one(_: int) -> httpx.Response:
            return client.post("/v1/embed", files={"image": ("p.png", photo, "image/png")})

        with ThreadPoolExecutor(4) as pool:
            answers = list(pool.map(one, range(4)))
        health = client.get("/healthz").json()
    codes = sorted(a.status_code for a in answers)
    assert codes[0] == 422 and codes.count(503) >= 2, codes
    busy = next(a for a in answers if a.status_code == 503)
    assert busy.headers["retry-after"] == "1" and busy.json()["error"]["code"] == "busy"
    assert health["decode"]["refused_busy"] >= 2


def test_limits_line(recognizer) -> None:
    from faceforge.serve.app import create_app, describe_limits

    line = describe_limits(create_app(recognizer).state.limits)
    assert "image 40,000,000 pixels" in line and "decode budget 512 MiB" in line and "503 after 5 s" in line
