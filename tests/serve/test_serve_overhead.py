"""What the service costs per request outside the model: no Nagle stall on kept-alive connections, an
upload spooled to disk still checked before decoding, and the load generator in its own process."""

from __future__ import annotations

import socket
import statistics
import time

import numpy as np


def _files(**kw: bytes) -> dict:
    return {k: (f"{k}.png", v, "image/png") for k, v in kw.items()}


def test_kept_alive_answers_are_not_held_back_by_nagle(live_server) -> None:
    """uvicorn writes a response's headers and body apart; without TCP_NODELAY on the accepted socket
    the body waits for the client's delayed ACK (>= 40 ms on Linux) on every kept-alive request."""
    assert live_server.sock.proto == socket.IPPROTO_TCP
    assert live_server.sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
    times = []
    with socket.create_connection((live_server.host, live_server.port), timeout=10) as s:
        for _ in range(7):
            t0 = time.perf_counter()
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: test\r\n\r\n")
            data = b""
            while b"\r\n\r\n" not in data:
                data += s.recv(65536)
            head, body = data.split(b"\r\n\r\n", 1)
            length = next(
                int(line.split(b":")[1])
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"content-length")
            )
            while len(body) < length:
                body += s.recv(65536)
            times.append(time.perf_counter() - t0)
    assert statistics.median(times[1:]) < 0.03, [round(t * 1e3, 1) for t in times]


def test_an_upload_spooled_to_disk_is_answered_like_one_in_memory(client, synth_png, serve_cfg) -> None:
    """Above 1 MiB the multipart parser spools an upload to disk; its header is then probed in a worker
    thread (in memory: on the event loop). Same image, same answer."""
    img = synth_png[(serve_cfg.first_id + 2, 1)]
    padded = img + b"\0" * (1_200_000)  # bytes after IEND: the same picture, a body over 1 MiB
    small = client.post("/v1/embed", files=_files(image=img))
    big = client.post("/v1/embed", files=_files(image=padded))
    assert small.status_code == 200, small.text
    assert big.status_code == small.status_code, big.text
    a, b = (np.asarray(r.json()["embeddings"], np.float32) for r in (small, big))
    np.testing.assert_allclose(a, b, atol=1e-6)
    bad = client.post("/v1/embed", files=_files(image=b"not an image" + b"\0" * 1_200_000))
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "not_an_image"


def test_the_load_generator_runs_in_its_own_process(live_server, synth_png, serve_cfg) -> None:
    from loadtest import LoadProcess, LoadRequest

    first = serve_cfg.first_id
    reqs = [
        LoadRequest("/v1/verify", _files(a=synth_png[(first, 0)], b=synth_png[(first + k, 1)]))
        for k in (0, 1)
    ]
    with LoadProcess() as lp:
        res = lp.run_load(live_server.url, reqs, n_requests=6, concurrency=2, api_key=serve_cfg.api_key)
        assert res.failures == [] and res.n == 6
        res = lp.run_load(live_server.url, reqs, n_requests=2, concurrency=1)  # no key: recorded, not raised
        assert len(res.failures) == 2 and "401" in res.failures[0]


def test_png_crops_decode_to_the_same_pixels_in_rgb_order() -> None:
    """The answer's ``aligned_png`` is lossless and keeps RGB order (OpenCV writes BGR)."""
    import base64
    import io

    import numpy as np
    from PIL import Image

    from faceforge.serve.app import png_base64

    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (37, 29, 3), dtype=np.uint8)
    rgb[..., 0] = 255  # a red-dominant crop: swapped channels would show at once
    back = np.array(Image.open(io.BytesIO(base64.b64decode(png_base64(rgb)))).convert("RGB"))
    assert np.array_equal(back, rgb)
    grey = rng.integers(0, 256, (16, 16), dtype=np.uint8)
    assert np.array_equal(np.array(Image.open(io.BytesIO(base64.b64decode(png_base64(grey))))), grey)
