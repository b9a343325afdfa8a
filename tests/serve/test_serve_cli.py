"""``faceforge serve``: argument errors are one-line exit-2 errors; the real command serves a checkpoint."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

httpx = pytest.importorskip("httpx")


def test_serve_errors_are_one_line(tmp_path, capsys, monkeypatch) -> None:
    from faceforge.cli.main import main

    monkeypatch.delenv("FF_TEST_UNSET_KEY", raising=False)
    missing = tmp_path / "nope.ckpt"
    assert main(["serve", "--model", str(missing)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and str(missing) in err and "does not exist" in err

    (tmp_path / "m.ckpt").write_bytes(b"not a checkpoint")
    assert main(["serve", "--model", str(tmp_path / "m.ckpt"), "--api-key-env", "FF_TEST_UNSET_KEY"]) == 2
    err = capsys.readouterr().err
    assert "FF_TEST_UNSET_KEY" in err and "not set" in err

    assert main(["serve", "--model", str(tmp_path / "m.ckpt"), "--max-body-mb", "0"]) == 2
    assert "--max-body-mb" in capsys.readouterr().err


def test_build_app_checks_the_gallery_dimension(serve_recognizer, tmp_path) -> None:
    import numpy as np

    from faceforge.errors import FaceforgeError
    from faceforge.infer import Gallery
    from faceforge.serve.app import create_app

    g = Gallery.build(np.eye(4, 64, dtype=np.float32), ["a", "b", "c", "d"])
    with pytest.raises(FaceforgeError, match=r"64-d embeddings .* 128-d"):
        create_app(serve_recognizer, g)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.slow
def test_serve_command_serves_a_checkpoint(
    serve_recognizer, serve_gallery, synth_png, serve_cfg, tmp_path
) -> None:
    """The real console command in a subprocess: gallery, API key from the environment, verify with the
    model in a model process (spawned from the console command's own process), shut down by Ctrl-C."""
    gallery_dir = serve_gallery.save(tmp_path / "gallery")
    port = _free_port()
    env = {**os.environ, "FF_SERVE_TEST_KEY": "cli-key", "OMP_NUM_THREADS": "1"}
    cmd = [
        sys.executable, "-m", "faceforge.cli.main", "serve",
        "--model", serve_recognizer.source, "--gallery", str(gallery_dir),
        "--port", str(port), "--api-key-env", "FF_SERVE_TEST_KEY", "--threads", "1",
        "--log-level", "warning", "--max-batch", "8", "--batch-process", "on",
    ]  # fmt: skip
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            if proc.poll() is not None:
                pytest.fail(f"faceforge serve exited with {proc.returncode}: {proc.stdout.read()}")
            try:
                if httpx.get(url + "/healthz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "faceforge serve did not answer /healthz within 120 s"
            time.sleep(0.3)
        health = httpx.get(url + "/healthz").json()
        assert health["gallery_size"] == len(serve_gallery)
        assert health["batching"]["max_batch"] == 8 and health["batching"]["model_processes"] is True
        assert httpx.get(url + "/v1/models").status_code == 401
        ka, kb = (serve_cfg.first_id, 0), (serve_cfg.first_id, 1)
        r = httpx.post(
            url + "/v1/verify",
            headers={"X-API-Key": "cli-key"},
            files={"a": ("a.png", synth_png[ka], "image/png"), "b": ("b.png", synth_png[kb], "image/png")},
            timeout=60,
        )
        assert r.status_code == 200, r.text
        want = serve_recognizer.verify(synth_png[ka], synth_png[kb])
        assert r.json()["similarity"] == pytest.approx(want["similarity"], abs=1e-5)
    finally:
        proc.send_signal(signal.SIGINT)  # uvicorn's graceful shutdown
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    assert proc.returncode is not None
    out = proc.stdout.read()
    assert "Traceback" not in out, out  # neither the server nor its model process complains on Ctrl-C
    assert Path(gallery_dir, "manifest.json").is_file()
