"""The REST service over a real uvicorn on 127.0.0.1 with the real trained FaceRecognizer.

Every answer is checked against the in-process recognizer on the same bytes (same verdict, same
similarity), so the HTTP layer can neither invent nor mix up results.
"""

from __future__ import annotations

import base64
import io
import socket
import time
from typing import Any

import numpy as np
import pytest

httpx = pytest.importorskip("httpx")


def _files(**named: bytes) -> dict[str, tuple[str, bytes, str]]:
    return {k: (f"{k}.png", v, "image/png") for k, v in named.items()}


def _pairs(cfg: Any) -> list[tuple[tuple[int, int], tuple[int, int], bool]]:
    """(key a, key b, same identity?) for every test identity: one genuine and one impostor pair."""
    out = []
    for i in range(cfg.first_id, cfg.first_id + cfg.n_ids):
        out.append(((i, 0), (i, 1), True))
        out.append(((i, 0), (i + 1, 1), False))
    return out


def _png_size(b64: str) -> tuple[int, int]:
    from PIL import Image

    with Image.open(io.BytesIO(base64.b64decode(b64))) as im:
        assert im.format == "PNG"
        return im.size


# ------------------------------------------------------------------------------------------- open endpoints


def test_open_endpoints_and_api_key(live_server, client, serve_recognizer, serve_gallery, serve_cfg) -> None:
    h = httpx.get(live_server.url + "/healthz")
    assert h.status_code == 200
    health = h.json()
    assert {k: health[k] for k in ("status", "model", "gallery_size")} == {
        "status": "ok",
        "model": serve_recognizer.name,
        "gallery_size": len(serve_gallery),
    }
    # the input limits are listed (docs/security.md), and the decode budget's use
    assert health["limits"]["max_pixels"] == serve_cfg.max_pixels
    assert health["limits"]["max_body_bytes"] == serve_cfg.max_body
    assert set(health["decode"]) >= {"in_use_bytes", "peak_bytes", "refused_busy"}

    page = httpx.get(live_server.url + "/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert 'id="file-a"' in page.text and "v1/verify" in page.text
    assert "http://" not in page.text and "https://" not in page.text  # no CDN: works offline

    spec = httpx.get(live_server.url + "/openapi.json").json()
    assert {"/v1/verify", "/v1/embed", "/v1/search", "/v1/models", "/healthz"} <= set(spec["paths"])
    schemes = spec["components"]["securitySchemes"].values()
    assert any(s.get("type") == "apiKey" and s.get("name") == "X-API-Key" for s in schemes)

    for headers, word in (({}, "missing"), ({"X-API-Key": "nope"}, "wrong")):
        r = httpx.get(live_server.url + "/v1/models", headers=headers)
        assert r.status_code == 401
        assert r.json()["error"]["code"] == "unauthorized" and word in r.json()["error"]["message"]
    # refused before the (large) body is read: a wrong key never reaches the multipart parser
    r = httpx.post(
        live_server.url + "/v1/verify", headers={"X-API-Key": "nope"}, files=_files(a=b"x" * 500_000, b=b"y")
    )
    assert r.status_code == 401

    m = client.get("/v1/models")
    assert m.status_code == 200
    body = m.json()
    info = body["models"][0]
    assert info["embedding_size"] == serve_recognizer.face_cfg.embedding_size == 128
    assert info["threshold"] == pytest.approx(serve_recognizer.threshold)
    assert info["backend"] == "torch"
    assert body["gallery"] == {"size": len(serve_gallery), "dim": 128, "index": "flat"}


# ---------------------------------------------------------------------------------- verify / embed / search


def test_verify_same_and_different_identity(client, serve_recognizer, synth_png, serve_cfg) -> None:
    correct = 0
    genuine: list[float] = []
    impostor: list[float] = []
    pairs = _pairs(serve_cfg)
    h, w = serve_recognizer.face_cfg.input_size
    for ka, kb, same in pairs:
        r = client.post("/v1/verify", files=_files(a=synth_png[ka], b=synth_png[kb]))
        assert r.status_code == 200, r.text
        got = r.json()
        want = serve_recognizer.verify(synth_png[ka], synth_png[kb])
        assert got["verified"] is want["verified"]
        assert got["similarity"] == pytest.approx(want["similarity"], abs=1e-5)
        assert got["threshold"] == pytest.approx(serve_recognizer.threshold)
        assert got["verified"] == (got["similarity"] >= got["threshold"])
        for side in ("a", "b"):
            face = got["faces"][side]
            assert face["bbox"] is None  # a 112×112 aligned crop is not detected again
            assert _png_size(face["aligned_png"]) == (w, h)
        correct += got["verified"] == same
        (genuine if same else impostor).append(got["similarity"])
    # The fixture model scores ~0.89 on its validation pairs; an untrained one says "same" to all (0.5).
    # A count on 24 pairs at 0.75 sits ~2.5 sigma below that and flips with another machine's fixture
    # model; a low bar on the count plus a rank statistic hold for any model that learnt identity
    # (15/24 is ~4 sigma below 0.89) and fail for one that did not (AUC ~0.5).
    assert correct / len(pairs) >= 0.6, f"{correct}/{len(pairs)} verdicts right"
    auc = float((np.array(genuine)[:, None] > np.array(impostor)[None, :]).mean())
    assert auc >= 0.8, auc


def test_verify_threshold_override(client, synth_png, serve_cfg) -> None:
    files = _files(a=synth_png[(serve_cfg.first_id, 0)], b=synth_png[(serve_cfg.first_id + 1, 1)])
    low = client.post("/v1/verify", files=files, data={"threshold": "-1"}).json()
    assert low["verified"] is True and low["threshold"] == -1.0
    high = client.post("/v1/verify", files=files, data={"threshold": "0.9999"}).json()
    assert high["verified"] is False and high["similarity"] == pytest.approx(low["similarity"], abs=1e-6)
    for bad in ("2", "abc", "nan"):
        r = client.post("/v1/verify", files=files, data={"threshold": bad})
        assert r.status_code == 422, (bad, r.text)
        assert r.json()["error"]["code"] == "invalid_request" and "threshold" in r.json()["error"]["message"]


def test_embed_matches_recognizer(client, serve_recognizer, synth_png, serve_cfg) -> None:
    img = synth_png[(serve_cfg.first_id + 3, 4)]
    r = client.post("/v1/embed", files=_files(image=img))
    assert r.status_code == 200, r.text
    body = r.json()
    emb = np.asarray(body["embeddings"], dtype=np.float32)
    assert body["dim"] == 128 and emb.shape == (1, 128)
    assert np.linalg.norm(emb[0]) == pytest.approx(1.0, abs=1e-5)
    ref = serve_recognizer.embed(img)[0]
    assert float(emb[0] @ ref) > 0.99999
    assert body["faces"] == [{"bbox": None, "score": None, "landmarks": None, "aligned_png": None}]


def test_search_equals_brute_force(client, serve_recognizer, serve_gallery, synth_png, serve_cfg) -> None:
    ident = serve_cfg.first_id + 2
    img = synth_png[(ident, 5)]  # index 5 is not in the gallery (0..2 are)
    r = client.post("/v1/search", files=_files(image=img), data={"k": "5"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["k"] == 5 and body["gallery_size"] == len(serve_gallery) == 3 * serve_cfg.n_ids
    q = serve_recognizer.embed(img)[0]
    sims = serve_gallery.embeddings @ q
    order = np.argsort(-sims, kind="stable")[:5]
    assert [h["index"] for h in body["results"]] == order.tolist()
    assert [h["similarity"] for h in body["results"]] == pytest.approx(sims[order].tolist(), abs=1e-5)
    assert body["results"][0]["meta"]["identity"] == int(body["results"][0]["label"][2:])
    everything = client.post("/v1/search", files=_files(image=img), data={"k": "1000"}).json()
    assert len(everything["results"]) == len(serve_gallery)


def test_search_without_gallery_and_without_key(serve_recognizer, synth_png, serve_cfg) -> None:
    from faceforge.serve.app import create_app
    from faceforge.serve.server import BackgroundServer

    with BackgroundServer(create_app(serve_recognizer, max_batch=1)) as srv:
        assert httpx.get(srv.url + "/v1/models").status_code == 200  # no key configured: open
        r = httpx.post(srv.url + "/v1/search", files=_files(image=synth_png[(serve_cfg.first_id, 0)]))
        assert r.status_code == 409
        assert r.json()["error"]["code"] == "no_gallery" and "--gallery" in r.json()["error"]["message"]


# ------------------------------------------------------------------------------------- limits and bad input


def test_oversize_body_413(live_server, client, synth_png, serve_cfg) -> None:
    img = synth_png[(serve_cfg.first_id, 0)]
    big = b"\0" * (serve_cfg.max_body + 1)
    r = client.post("/v1/verify", files=_files(a=big, b=img))
    assert r.status_code == 413 and r.json()["error"]["code"] == "payload_too_large"

    # The declared length alone is enough: the answer comes before the body (1 KB of a declared 1 GB).
    with socket.create_connection((live_server.host, live_server.port), timeout=10) as s:
        t0 = time.perf_counter()
        s.sendall(
            b"POST /v1/verify HTTP/1.1\r\nHost: t\r\nX-API-Key: " + serve_cfg.api_key.encode() + b"\r\n"
            b"Content-Type: multipart/form-data; boundary=zz\r\nContent-Length: 1000000000\r\n\r\n"
            + b"x"
            * 1024
        )
        head = s.recv(4096)
        assert head.startswith(b"HTTP/1.1 413"), head[:200]
        assert time.perf_counter() - t0 < 5.0

    # Chunked upload with no Content-Length: refused while streaming.
    def chunks():
        yield b'--zz\r\nContent-Disposition: form-data; name="a"; filename="a.png"\r\n'
        yield b"Content-Type: image/png\r\n\r\n"
        for _ in range(serve_cfg.max_body // 65536 + 4):
            yield b"\0" * 65536
        yield b"\r\n--zz--\r\n"

    r = client.post(
        "/v1/verify", content=chunks(), headers={"Content-Type": "multipart/form-data; boundary=zz"}
    )
    assert r.request.headers.get("transfer-encoding") == "chunked"
    assert r.status_code == 413 and r.json()["error"]["code"] == "payload_too_large"

    # A small file that decodes to too many pixels (a "decompression bomb") is refused from its header.
    from PIL import Image

    buf = io.BytesIO()
    Image.new("L", (2100, 2000)).save(buf, format="PNG")
    assert len(buf.getvalue()) < serve_cfg.max_body
    r = client.post("/v1/verify", files=_files(a=buf.getvalue(), b=img))
    assert r.status_code == 413 and r.json()["error"]["code"] == "image_too_large"
    assert "2100x2000" in r.json()["error"]["message"]

    assert client.get("/v1/models").status_code == 200  # the server is fine afterwards


def test_bad_inputs_are_4xx_json(live_server, client, synth_png, serve_cfg) -> None:
    img = synth_png[(serve_cfg.first_id, 0)]
    cases = {
        "text": b"hello, I am not an image",
        "empty": b"",
        "truncated png": img[:100],
        "png magic + junk": b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4,
    }
    for name, data in cases.items():
        r = client.post("/v1/verify", files=_files(a=img, b=data))
        assert r.status_code == 400, (name, r.text)
        err = r.json()["error"]
        assert err["code"] == "not_an_image" and "'b'" in err["message"], (name, err)

    r = client.post("/v1/verify", json={"a": "x", "b": "y"})
    assert r.status_code == 415 and r.json()["error"]["code"] == "unsupported_media_type"
    r = client.post("/v1/embed", data={"image": "x"})  # urlencoded form: cannot carry a file
    assert r.status_code == 415
    r = client.post("/v1/search", content=b"raw")
    assert r.status_code == 415

    r = client.post("/v1/verify", files=_files(a=img))
    assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_request"
    assert "'b'" in r.json()["error"]["message"]

    r = client.get("/v1/verify")
    assert r.status_code == 405 and "POST" in r.headers["allow"]
    assert r.json()["error"]["code"] == "method_not_allowed"
    r = client.get("/v2/nothing")
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"


def test_photos_through_the_detector(client, serve_recognizer, has_detector, serve_cfg) -> None:
    """Raw 250×250 scenes are detected and aligned; a picture without a face is a 422."""
    if not has_detector:
        pytest.skip("YuNet not found in ../shared/models/detectors (needed to detect faces in photos)")
    from faceforge.data.synth import SynthFaces
    from faceforge.errors import NoFaceError

    gradient = np.tile(np.linspace(0, 255, 200, dtype=np.uint8)[None, :, None], (160, 1, 3))
    r = client.post("/v1/embed", files=_files(image=serve_cfg.png(gradient)))
    assert r.status_code == 422
    assert r.json()["error"]["code"] == "no_face" and "no face" in r.json()["error"]["message"]

    wild = SynthFaces(0, mode="wild")
    detected = 0
    for i in range(serve_cfg.first_id, serve_cfg.first_id + 6):
        a, b = serve_cfg.png(wild.image(i, 0)[0]), serve_cfg.png(wild.image(i, 1)[0])
        r = client.post("/v1/verify", files=_files(a=a, b=b))
        try:
            want = serve_recognizer.verify(a, b)
        except NoFaceError:
            assert r.status_code == 422 and r.json()["error"]["code"] == "no_face", r.text
            continue
        assert r.status_code == 200, r.text
        got = r.json()
        assert got["verified"] is want["verified"]
        assert got["similarity"] == pytest.approx(want["similarity"], abs=1e-5)
        bbox = got["faces"]["a"]["bbox"]
        assert bbox == pytest.approx(want["faces"]["a"]["bbox"]) and 0 <= bbox[0] < bbox[2] <= 250
        assert len(got["faces"]["b"]["landmarks"]) == 5
        detected += 1
    assert detected >= 3, f"faces found in only {detected} of 6 scene pairs"


# ----------------------------------------------------------------------------------------------------- load


def test_bounded_load(live_server, serve_recognizer, synth_png, serve_cfg, capsys) -> None:
    """200 verify requests, 8 in flight: zero failures, every answer equal to the in-process one."""
    from loadtest import LoadRequest, run_load

    reqs = []
    for ka, kb, _ in _pairs(serve_cfg):
        want = serve_recognizer.verify(synth_png[ka], synth_png[kb])["similarity"]
        # a result from another request (mixed-up buffers under concurrency) would fail this check
        reqs.append(
            LoadRequest(
                "/v1/verify",
                _files(a=synth_png[ka], b=synth_png[kb]),
                check=lambda body, want=want: abs(body["similarity"] - want) < 1e-5,
            )
        )
    res = run_load(live_server.url, reqs, n_requests=200, concurrency=8, api_key=serve_cfg.api_key)
    with capsys.disabled():
        print(f"\nserve load test (loaded shared CPU, 1 torch thread): {res.summary()}")
    assert res.failures == [], res.failures[:5]
    assert res.n == 200 and len(res.latencies) == 200
    assert res.percentile(50) <= res.percentile(95) < 30_000


# --------------------------------------------------------------------------------------------- schemathesis


def test_schemathesis_finds_no_server_errors(live_server, serve_cfg, tmp_path) -> None:
    """A bounded schemathesis v4 run over every operation of /openapi.json: no 5xx, responses conform."""
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    st = pytest.importorskip("schemathesis")
    if int(st.SCHEMATHESIS_VERSION.split(".")[0]) < 4:
        pytest.skip(f"schemathesis {st.SCHEMATHESIS_VERSION} installed; this test uses the v4 CLI")
    exe = Path(sys.executable).with_name("schemathesis")
    cli = str(exe) if exe.is_file() else shutil.which("schemathesis")
    if cli is None:
        pytest.skip("the schemathesis command is not installed next to this Python")
    cmd = [
        cli,
        "run",
        f"{live_server.url}/openapi.json",
        "-H",
        f"X-API-Key: {serve_cfg.api_key}",
        "--checks",
        "not_a_server_error,status_code_conformance,content_type_conformance,"
        "response_schema_conformance,ignored_auth",
        "--max-examples",
        "15",
        "--seed",
        "20240601",
        "--workers",
        "1",
        "--request-timeout",
        "60",
        "--no-color",
    ]
    proc = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=240)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-6000:]
    assert "Tested: 5" in out, out[-3000:]  # every operation was exercised
