"""Galleries: SIGKILL or an exception at every step of a save leaves the old or the new version (never
none, never a mix); tampered files give one-line errors, not 500s, empty results or huge allocations;
new files follow the umask; a manifest's model file is never opened without --model."""

from __future__ import annotations

import json
import os
import signal
import struct
import sys

import numpy as np
import pytest

from faceforge.errors import FaceforgeError
from faceforge.infer import Gallery, gallery

pytest.importorskip("faiss")


def _data(n: int, dim: int = 16, seed: int = 0) -> tuple[np.ndarray, list[str]]:
    x = np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)
    return x, [f"p{i % 7}" for i in range(n)]


def _versions() -> tuple[Gallery, Gallery]:
    x, labels = _data(60)
    old = Gallery.build(x[:40], labels[:40], [{"i": i} for i in range(40)], index="flat")
    new = Gallery.build(x[:40], labels[:40], [{"i": i} for i in range(40)], index="flat")
    new.add(x[40:], labels[40:], [{"i": i} for i in range(40, 60)])
    new.remove(["p3"])
    return old, new


def _same(a: Gallery, b: Gallery) -> bool:
    return (
        len(a) == len(b)
        and a.entries == b.entries
        and np.array_equal(a.ids, b.ids)
        and np.allclose(a.embeddings, b.embeddings)
    )


def _record_steps(g: Gallery, path) -> list[str]:
    steps: list[str] = []
    gallery.FAULT_HOOK = steps.append
    try:
        g.save(path)
    finally:
        gallery.FAULT_HOOK = None
    return steps


def _leftovers(path) -> list[str]:
    return sorted(p.name for p in path.parent.iterdir() if p.name.startswith(f".{path.name}."))


@pytest.mark.skipif(not hasattr(os, "fork") or sys.platform != "linux", reason="fork + SIGKILL: Linux")
@pytest.mark.parametrize("exchange", [True, False], ids=["atomic-swap", "two-renames"])
def test_sigkill_at_every_save_step(tmp_path, exchange, monkeypatch) -> None:
    monkeypatch.setattr(gallery, "USE_EXCHANGE", exchange)
    old, new = _versions()
    probe = tmp_path / "probe"
    old.save(probe)
    steps = _record_steps(new, probe)
    assert "switch" in steps or "switch in" in steps, steps
    assert steps[0].startswith("write ") and steps[-1] == "remove old"
    seen = set()
    for k, step in enumerate(steps):
        g_dir = tmp_path / f"G{k}"
        old.save(g_dir)
        pid = os.fork()
        if pid == 0:  # the child saves the new version and dies at `step`
            try:
                gallery.FAULT_HOOK = lambda s, step=step: (
                    os.kill(os.getpid(), signal.SIGKILL) if s == step else None
                )
                new.save(g_dir)
            finally:
                os._exit(3)
        _, status = os.waitpid(pid, 0)
        assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL, (step, status)
        loaded = Gallery.load(g_dir)  # recovers a gap between two renames, removes leftovers
        is_old, is_new = _same(loaded, old), _same(loaded, new)
        assert is_old or is_new, f"killed at {step!r}: neither the old nor the new gallery"
        seen.add("old" if is_old else "new")
        assert _leftovers(g_dir) == [], (step, _leftovers(g_dir))
        assert sorted(p.name for p in g_dir.iterdir()) == sorted(gallery._FILES)
    assert seen == {"old", "new"}  # the loop crossed the switch


def test_exception_at_every_save_step(tmp_path) -> None:
    old, new = _versions()
    steps = _record_steps(new, tmp_path / "probe")
    for k, step in enumerate(steps):
        g_dir = tmp_path / f"G{k}"
        old.save(g_dir)

        def boom(s: str, step: str = step) -> None:
            if s == step:
                raise RuntimeError(f"injected at {s}")

        gallery.FAULT_HOOK = boom
        try:
            with pytest.raises(RuntimeError, match="injected"):
                new.save(g_dir)
        finally:
            gallery.FAULT_HOOK = None
        loaded = Gallery.load(g_dir)
        assert _same(loaded, old) or _same(loaded, new), step
        assert _leftovers(g_dir) == []


def test_new_files_follow_the_umask(tmp_path) -> None:
    old, _ = _versions()
    for mask, dmode, fmode in ((0o022, 0o755, 0o644), (0o077, 0o700, 0o600)):
        prev = os.umask(mask)
        try:
            p = old.save(tmp_path / f"G{mask:o}")
        finally:
            os.umask(prev)
        assert p.stat().st_mode & 0o777 == dmode
        assert {f.stat().st_mode & 0o777 for f in p.iterdir()} == {fmode}


@pytest.fixture
def saved(tmp_path):
    old, _ = _versions()
    return old.save(tmp_path / "G")


def _npy_with_shape(path, dtype: str, shape: tuple) -> None:
    header = {"descr": dtype, "fortran_order": False, "shape": shape}
    text = repr(header).encode("latin1")
    text += b" " * ((64 - (10 + len(text) + 1) % 64) % 64) + b"\n"
    path.write_bytes(b"\x93NUMPY\x01\x00" + struct.pack("<H", len(text)) + text + b"\0" * 64)


def test_tampered_files_are_one_line_errors(saved, h) -> None:
    man = json.loads((saved / "manifest.json").read_text())
    entries = (saved / "entries.json").read_text()
    ids = (saved / "ids.npy").read_bytes()
    emb = (saved / "embeddings.npy").read_bytes()
    cases = {
        "entries not a list": ("entries.json", json.dumps({"a": 1}), "inconsistent"),
        "label not a string": ("entries.json", json.dumps([{"label": 1, "meta": {}}] * 40), "entry 0"),
        "count mismatch": ("manifest.json", json.dumps({**man, "count": 41}), "inconsistent"),
        "dim as string": ("manifest.json", json.dumps({**man, "dim": "16"}), "'dim'"),
        "unknown index": ("manifest.json", json.dumps({**man, "index": {"kind": "hnsw"}}), "'index'"),
        "bad json": ("manifest.json", "{", "not valid JSON"),
        "next id too small": ("manifest.json", json.dumps({**man, "next_id": 3}), "next_id"),
    }
    for name, text, match in cases.values():
        (saved / name).write_text(text)
        with pytest.raises(FaceforgeError, match=match) as ei:
            Gallery.load(saved)
        h.one_line(ei.value)
        (saved / "manifest.json").write_text(json.dumps(man))
        (saved / "entries.json").write_text(entries)
    # ids.npy declaring 2^31 entries: refused from its header, nothing allocated
    _npy_with_shape(saved / "ids.npy", "<i8", (2**31,))
    err, rise = h.peak_rss_mib(lambda: Gallery.load(saved))
    assert isinstance(err, FaceforgeError) and "ids.npy holds" in h.one_line(err) and rise < 50, (err, rise)
    # unsorted ids would make searches answer with the wrong rows
    (saved / "ids.npy").write_bytes(ids)
    a = np.load(saved / "ids.npy")
    np.save(saved / "ids.npy", a[::-1].copy())
    with pytest.raises(FaceforgeError, match="strictly increasing"):
        Gallery.load(saved)
    (saved / "ids.npy").write_bytes(ids)
    e = np.load(saved / "embeddings.npy")
    e[3, 2] = np.nan
    np.save(saved / "embeddings.npy", e)
    with pytest.raises(FaceforgeError, match="NaN"):
        Gallery.load(saved)
    (saved / "embeddings.npy").write_bytes(emb[:-8])  # truncated
    with pytest.raises(FaceforgeError, match="header promises"):
        Gallery.load(saved)
    (saved / "embeddings.npy").write_bytes(emb)
    (saved / "index.faiss").write_bytes(b"IxM2" + b"\xff" * 64)  # a flat index is rebuilt, never read
    g = Gallery.load(saved)
    assert len(g.search(e[:1] * 0 + 1, k=3)[0]) == 3


def test_tampered_ivf_index_is_refused_before_faiss_reads_it(tmp_path, h) -> None:
    x, labels = _data(1200)
    g = Gallery.build(x, labels, index="ivf")
    assert g.kind == "ivf"
    p = g.save(tmp_path / "IVF")
    assert len(Gallery.load(p).search(x[:2], k=2)[0]) == 2
    data = bytearray((p / "index.faiss").read_bytes())
    at = data.find(b"full") if data.find(b"full") >= 0 else data.find(b"sprs")
    struct.pack_into("<Q", data, at + 12, 2**40)  # the first list claims 2^40 entries
    (p / "index.faiss").write_bytes(bytes(data))
    err, rise = h.peak_rss_mib(lambda: Gallery.load(p))
    assert isinstance(err, FaceforgeError) and "index.faiss" in h.one_line(err), err
    assert rise < 50
    (p / "index.faiss").write_bytes(bytes(data[:100]))
    with pytest.raises(FaceforgeError, match=r"runs past the end|index of"):
        Gallery.load(p)


def test_manifest_model_file_is_never_followed(tmp_path, capsys) -> None:
    from faceforge.cli.main import main

    marker = tmp_path / "pwned"
    evil = tmp_path / "model.ckpt"
    evil.write_bytes(b"\x80\x04" + f"cos\nsystem\n(Vtouch {marker}\ntR.".encode())  # pickled os.system
    x, labels = _data(5)
    g = Gallery.build(x, labels, model_info={"model": str(evil), "source": str(evil)})
    gdir = g.save(tmp_path / "G")
    img = tmp_path / "q.png"
    from PIL import Image

    Image.new("RGB", (112, 112)).save(img)
    assert main(["gallery", "search", str(img), "--gallery", str(gdir)]) == 2
    err = capsys.readouterr().err
    assert "pass --model" in err and "never followed" in err and len(err.strip().splitlines()) == 1
    assert not marker.exists()


def test_a_full_disk_while_saving_names_the_file_and_keeps_the_old_version(tmp_path, monkeypatch) -> None:
    old, new = _versions()
    g_dir = tmp_path / "G"
    old.save(g_dir)
    real_save = np.save

    def short_write(f, arr, **kw) -> None:  # what numpy raises when the disk fills mid-array
        if str(f).endswith("ids.npy"):
            raise OSError("539648 requested and 20448 written")
        real_save(f, arr, **kw)

    monkeypatch.setattr(gallery.np, "save", short_write)
    monkeypatch.setattr("faceforge.fileio.free_bytes", lambda folder: 0)
    with pytest.raises(OSError) as e:
        new.save(g_dir)
    assert e.value.filename == str(g_dir / "ids.npy")
    assert e.value.strerror == "No space left on device (539648 requested and 20448 written)"
    assert _same(Gallery.load(g_dir), old) and _leftovers(g_dir) == []
