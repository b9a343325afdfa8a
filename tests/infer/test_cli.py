"""``faceforge verify`` / ``embed`` / ``gallery build|add|remove|search|info`` end to end."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from faceforge import FaceRecognizer, SynthFaces
from faceforge.cli.main import main
from faceforge.infer import Gallery

FIRST = 7000  # unseen identities of SynthFaces(seed=0)


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def people(tmp_path_factory) -> Path:
    """people/<idNNNN>/<k>.png: 5 identities × 3 aligned SynthFaces images, plus one broken file."""
    root = tmp_path_factory.mktemp("people")
    sf = SynthFaces(0)
    for i in range(5):
        d = root / f"id{FIRST + i}"
        d.mkdir()
        for k in range(3):
            Image.fromarray(sf.image(FIRST + i, k)[0]).save(d / f"{k}.png")
    (root / f"id{FIRST}" / "broken.jpg").write_bytes(b"not an image")
    return root


def _json(capsys) -> dict:
    return json.loads(capsys.readouterr().out)


def test_verify_cli_matches_the_api(trained_checkpoint, people, capsys) -> None:
    a, b = people / f"id{FIRST}" / "0.png", people / f"id{FIRST}" / "1.png"
    c = people / f"id{FIRST + 1}" / "0.png"
    rec = FaceRecognizer.from_checkpoint(trained_checkpoint, detector=None)
    for x, y in ((a, b), (a, c)):
        code = main(["verify", str(x), str(y), "--model", str(trained_checkpoint), "--json"])
        out = _json(capsys)
        api = rec.verify(x, y)
        assert code == (0 if api["verified"] else 1)  # exit 1: "different people"
        assert out["verified"] == api["verified"]
        assert out["similarity"] == pytest.approx(api["similarity"], abs=1e-6)
        assert out["threshold"] == pytest.approx(rec.threshold)
        assert out["model"]["backend"] == "torch" and "aligned" not in out["faces"]["a"]
    assert main(["verify", str(a), str(b), "--model", str(trained_checkpoint), "--threshold", "1.0"]) == 1
    text = capsys.readouterr().out
    assert text.startswith("DIFFERENT people") and "threshold 1.0000 (argument)" in text


def test_embed_cli_writes_npz(trained_checkpoint, people, tmp_path, capsys) -> None:
    out = tmp_path / "emb.npz"
    assert main(["embed", str(people), "--model", str(trained_checkpoint), "--out", str(out), "--json"]) == 0
    rep = _json(capsys)
    assert rep["count"] == 15 and rep["dim"] == 128
    assert len(rep["skipped"]) == 1 and rep["skipped"][0]["file"].endswith("broken.jpg")
    with np.load(out, allow_pickle=False) as z:
        emb, labels, paths = z["embeddings"], z["labels"], z["paths"]
    assert emb.shape == (15, 128) and np.allclose(np.linalg.norm(emb, axis=1), 1, atol=1e-5)
    assert sorted(set(labels)) == [f"id{FIRST + i}" for i in range(5)]
    rec = FaceRecognizer.from_checkpoint(trained_checkpoint, detector=None)
    i = list(paths).index(str(people / f"id{FIRST + 2}" / "1.png"))
    assert np.abs(emb[i] - rec.embed(paths[i])[0]).max() < 1e-6


def test_gallery_cli_build_search_add_remove(trained_checkpoint, people, tmp_path, capsys) -> None:
    g = tmp_path / "G"
    assert (
        main(["gallery", "build", str(people), "--model", str(trained_checkpoint), "--out", str(g), "--json"])
        == 0
    )
    rep = _json(capsys)
    assert rep["count"] == 15 and rep["index"]["kind"] == "flat"
    # A gallery's manifest never opens a model file by itself (a manifest is data): --model is needed.
    q = tmp_path / "q.png"
    Image.fromarray(SynthFaces(0).image(FIRST + 3, 9)[0]).save(q)
    assert main(["gallery", "search", str(q), "--gallery", str(g), "-k", "4"]) == 2
    assert "--model" in capsys.readouterr().err
    # Search from the CLI ranks like the API.
    m = ["--model", str(trained_checkpoint)]
    assert main(["gallery", "search", str(q), "--gallery", str(g), "-k", "4", "--json", *m]) == 0
    res = _json(capsys)["results"]
    rec = FaceRecognizer.from_checkpoint(trained_checkpoint, detector=None)
    api = rec.find(q, Gallery.load(g), k=4)
    assert [h["label"] for h in res] == [h["label"] for h in api]
    assert [h["similarity"] for h in res] == pytest.approx([h["similarity"] for h in api], abs=1e-6)
    assert res[0]["meta"]["path"].startswith(str(people))
    assert res[0]["match"] == (res[0]["similarity"] >= rec.threshold)
    # A gallery image finds itself first.
    own = people / f"id{FIRST + 3}" / "2.png"
    assert main(["gallery", "search", str(own), "--gallery", str(g), "-k", "1", "--json", *m]) == 0
    top = _json(capsys)["results"][0]
    assert top["meta"]["path"] == str(own) and top["similarity"] == pytest.approx(1.0, abs=1e-5)

    new = tmp_path / "new"
    new.mkdir()
    Image.fromarray(SynthFaces(0).image(FIRST + 50, 0)[0]).save(new / "a.png")
    assert main(["gallery", "add", str(new), "--gallery", str(g), "--label", "newcomer", "--json", *m]) == 0
    assert _json(capsys)["count"] == 16
    assert main(["gallery", "search", str(new / "a.png"), "--gallery", str(g), "-k", "1", "--json", *m]) == 0
    assert _json(capsys)["results"][0]["label"] == "newcomer"

    assert main(["gallery", "remove", "newcomer", f"id{FIRST}", "--gallery", str(g), "--json"]) == 0
    assert _json(capsys) == {"gallery": str(g), "removed": 4, "count": 12}
    assert main(["gallery", "info", str(g), "--json"]) == 0
    info = _json(capsys)
    assert info["count"] == 12 and info["labels"] == 4 and info["model"]["embedding_size"] == 128
    assert main(["gallery", "search", str(q), "--gallery", str(g), "-k", "0"]) == 2
    assert "-k must be >= 1" in capsys.readouterr().err


def test_cli_user_errors_are_one_line(trained_checkpoint, people, tmp_path, capsys) -> None:
    a = str(people / f"id{FIRST}" / "0.png")
    assert main(["verify", a, a, "--model", str(tmp_path / "nope.ckpt")]) == 2
    assert "nope.ckpt does not exist" in capsys.readouterr().err
    bad = str(people / f"id{FIRST}" / "broken.jpg")
    assert main(["verify", a, bad, "--model", str(trained_checkpoint)]) == 2
    err = capsys.readouterr().err
    assert "broken.jpg" in err and len(err.strip().splitlines()) == 1
    assert main(["gallery", "search", a, "--gallery", str(tmp_path / "nog")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["embed", str(tmp_path / "empty"), "--model", str(trained_checkpoint), "--out", "x.npz"]) == 2


def test_gallery_search_many_queries_in_one_call(trained_checkpoint, people, tmp_path, capsys) -> None:
    g, m = tmp_path / "G", ["--model", str(trained_checkpoint)]
    assert main(["gallery", "build", str(people), "--out", str(g), "--quiet", *m]) == 0
    queries = tmp_path / "queries"
    queries.mkdir()
    sf = SynthFaces(0)
    for i in range(3):
        Image.fromarray(sf.image(FIRST + i, 7)[0]).save(queries / f"q{i}.png")
    (queries / "bad.jpg").write_bytes(b"not an image")
    capsys.readouterr()
    # A folder: one JSON line per query (the skipped one says why), ranked as one-image searches.
    assert main(["gallery", "search", str(queries), "--gallery", str(g), "-k", "3", "--quiet", *m]) == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert [x["query"].rsplit("/", 1)[-1] for x in lines] == ["q0.png", "q1.png", "q2.png", "bad.jpg"]
    assert "error" in lines[3] and lines[3]["status"] == "undecodable"
    for line in lines[:3]:
        assert main(["gallery", "search", line["query"], "--gallery", str(g), "-k", "3", "--json", *m]) == 0
        one = _json(capsys)["results"]
        assert [h["label"] for h in line["results"]] == [h["label"] for h in one]
        assert [h["similarity"] for h in line["results"]] == pytest.approx(
            [h["similarity"] for h in one], abs=1e-5
        )
    # An .npz from `faceforge embed`: the same answers without decoding anything again.
    emb = tmp_path / "q.npz"
    assert main(["embed", str(queries), "--out", str(emb), "--quiet", *m]) == 0
    capsys.readouterr()
    assert main(["gallery", "search", str(emb), "--gallery", str(g), "-k", "3", "--quiet", *m]) == 0
    again = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert [x["query"] for x in again] == [x["query"] for x in lines[:3]]
    for a, b in zip(again, lines):
        assert [h["label"] for h in a["results"]] == [h["label"] for h in b["results"]]
        assert a["threshold"] == pytest.approx(b["threshold"])
    # A hostile .npz: wrong width, or not an npz at all, is one line, nothing loaded.
    np.savez(tmp_path / "wide.npz", embeddings=np.zeros((2, 7), np.float32))
    assert main(["gallery", "search", str(tmp_path / "wide.npz"), "--gallery", str(g), *m]) == 2
    assert "expected float [N, 128]" in capsys.readouterr().err
    (tmp_path / "junk.npz").write_bytes(b"PK\x03\x04 junk")
    assert main(["gallery", "search", str(tmp_path / "junk.npz"), "--gallery", str(g), *m]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1
