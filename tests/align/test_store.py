"""Model file store: lookup by name + SHA-256 and fetch from a local HTTP server."""

from __future__ import annotations

import hashlib
import http.server
import threading
from pathlib import Path

import pytest

from faceforge import hub as store
from faceforge.errors import FaceforgeError

PAYLOAD = b"not really an onnx file, but bytes with a known hash " * 500


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path == "/good.bin":
            self.send_response(200)
            self.send_header("Content-Length", str(len(PAYLOAD)))
            self.end_headers()
            self.wfile.write(PAYLOAD)
        elif self.path == "/truncated.bin":
            # Promise the whole file, send half, close: a cut-off download.
            self.send_response(200)
            self.send_header("Content-Length", str(len(PAYLOAD)))
            self.end_headers()
            self.wfile.write(PAYLOAD[: len(PAYLOAD) // 2])
            self.wfile.flush()
            self.close_connection = True
        else:
            self.send_error(404)

    def log_message(self, *args):  # keep pytest output clean
        pass


@pytest.fixture(scope="module")
def server():
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    t = threading.Thread(target=httpd.serve_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("FACEFORGE_HOME", str(tmp_path / "ffhome"))
    monkeypatch.delenv("FACEFORGE_MODEL_DIRS", raising=False)
    return tmp_path / "ffhome"


def _spec(url: str, sha: str | None = None) -> store.ModelFile:
    return store.ModelFile("test", "test.bin", sha or hashlib.sha256(PAYLOAD).hexdigest(), url, "MIT")


def _leftovers(home: Path) -> list[str]:
    d = home / "models"
    return sorted(p.name for p in d.iterdir()) if d.is_dir() else []


def test_fetch_good(server, home):
    spec = _spec(server + "/good.bin")
    seen = []
    p = store.fetch(spec, progress=lambda done, total: seen.append((done, total)))
    assert p == home / "models" / "test.bin" and p.read_bytes() == PAYLOAD
    assert seen[-1] == (len(PAYLOAD), len(PAYLOAD))
    assert store.find(spec) == p
    assert _leftovers(home) == ["test.bin"]
    # Second call: already there and verified, no download (a dead URL proves it).
    assert store.fetch(store.ModelFile("test", "test.bin", spec.sha256, server + "/missing", "MIT")) == p


def test_fetch_wrong_checksum_not_kept(server, home):
    with pytest.raises(FaceforgeError, match="sha256"):
        store.fetch(_spec(server + "/good.bin", sha="0" * 64))
    assert _leftovers(home) == []


def test_fetch_truncated(server, home):
    with pytest.raises(FaceforgeError, match="cut off"):
        store.fetch(_spec(server + "/truncated.bin"))
    assert _leftovers(home) == []


def test_fetch_http_error(server, home):
    with pytest.raises(FaceforgeError, match="404"):
        store.fetch(_spec(server + "/nope.bin"))
    assert _leftovers(home) == []


def test_fetch_onto_a_full_disk_blames_the_disk_not_the_network(server, home, file_size_limit):
    file_size_limit(4096)  # a write past it fails as a full disk does: no file name, not a network error
    with pytest.raises(FaceforgeError) as e:
        store.fetch(_spec(server + "/good.bin"))
    assert str(e.value).startswith(f"{home / 'models' / 'test.bin'}: cannot write the download: "), e.value
    assert "network" not in str(e.value)
    assert _leftovers(home) == []


def test_resolve_missing_says_how_to_fetch(home):
    with pytest.raises(FaceforgeError, match="faceforge models fetch scrfd"):
        store.resolve("scrfd")
    with pytest.raises(FaceforgeError, match="did you mean 'scrfd'"):
        store.resolve("scrdf")


def test_wrong_hash_file_is_not_found(home):
    (home / "models").mkdir(parents=True)
    (home / "models" / "scrfd_500m_bnkps.onnx").write_bytes(b"garbage")
    assert store.find("scrfd") is None
    with pytest.raises(FaceforgeError, match="does not match"):
        store.resolve("scrfd")


def test_extra_model_dirs(shared_dir, home, monkeypatch):
    monkeypatch.setenv("FACEFORGE_MODEL_DIRS", str(shared_dir / "models/detectors"))
    assert store.find("scrfd") == shared_dir / "models/detectors/scrfd_500m_bnkps.onnx"
    rows = {r["name"]: r for r in store.files_status()}
    assert rows["retinaface"]["path"] and rows["yunet_s_640_640"]["path"]
    # The Zoo's YuNet file is the same bytes as yunet_s_640_640.onnx: accepted under that name.
    assert rows["yunet"]["path"] == str(shared_dir / "models/detectors/yunet_s_640_640.onnx")


def test_known_hashes_match_shared_files(shared_dir):
    for spec in store.KNOWN_FILES.values():
        for sub in ("detectors", "mtcnn"):
            p = shared_dir / "models" / sub / spec.filename
            if p.is_file():
                assert store.sha256_file(p) == spec.sha256, spec.name
