"""Crafted RecordIO headers and indexes, .bin pickles (memo amplification, code), traversal pair lists:
a clear one-line error or a bounded result, peak memory bounded, no file outside the root read, no code
run."""

from __future__ import annotations

import io
import os
import pickle
import struct
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from faceforge.data.recordio import (
    MAGIC,
    FaceRecordDataset,
    IndexedRecordReader,
    IndexedRecordWriter,
    IRHeader,
    pack_record,
    write_face_rec,
)
from faceforge.errors import FaceforgeError


def _jpeg(seed: int = 0, size: int = 16) -> bytes:
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(buf, format="JPEG")
    return buf.getvalue()


def _within(seconds: float, fn):
    """Run ``fn`` in a thread; fail the test (instead of hanging) when it does not return in time."""
    out: list = []

    def run() -> None:
        try:
            out.append(fn())
        except Exception as e:
            out.append(e)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(seconds)
    assert out, f"still running after {seconds} s (an unbounded loop)"
    return out[0]


# ------------------------------------------------------------------------------------------- RecordIO


def test_identity_range_to_3e38_is_refused_naming_the_record(tmp_path, h) -> None:
    rec = tmp_path / "train.rec"
    with IndexedRecordWriter(rec) as w:
        w.write(0, pack_record(IRHeader(2, np.array([3, 4], np.float32))))
        w.write(1, pack_record(IRHeader(0, 0.0), _jpeg(1)))
        w.write(2, pack_record(IRHeader(0, 0.0), _jpeg(2)))
        w.write(3, pack_record(IRHeader(2, np.array([1, 3e38], np.float32))))  # identity record 3
    err = _within(10, lambda: FaceRecordDataset(rec))
    assert isinstance(err, FaceforgeError), err
    msg = h.one_line(err)
    assert "identity record 3" in msg and "3e+38" in msg


def test_header_record_with_absurd_end_is_refused(tmp_path, h) -> None:
    rec = tmp_path / "train.rec"
    with IndexedRecordWriter(rec) as w:
        w.write(0, pack_record(IRHeader(2, np.array([2, 3e38], np.float32))))
        w.write(1, pack_record(IRHeader(0, 0.0), _jpeg(1)))
    err = _within(10, lambda: FaceRecordDataset(rec))
    assert isinstance(err, FaceforgeError) and "record 0" in h.one_line(err)


def test_label_3e9_sizes_nothing(tmp_path, h) -> None:
    from faceforge.data.inspect import inspect_path

    items = [(0, _jpeg(1)), (1, _jpeg(2))]
    write_face_rec(tmp_path / "train.rec", items, header=False, num_classes=2)
    with IndexedRecordWriter(tmp_path / "evil.rec") as w:
        w.write(0, pack_record(IRHeader(0, 0.0), _jpeg(1)))
        w.write(1, pack_record(IRHeader(0, 3e9), _jpeg(2)))  # np.bincount would want 24 GB
        w.write(2, pack_record(IRHeader(1, np.array([float("inf")], np.float32)), _jpeg(3)))
    ds = FaceRecordDataset(tmp_path / "evil.rec")
    labels, rise = h.peak_rss_mib(lambda: ds.labels)
    assert labels.tolist() == [0, -1, -1] and rise < 50
    with pytest.raises(ValueError, match=r"record 1: label 3e\+09 is not a class index"):
        ds.read_raw(1)
    _, y = ds[1]  # the bad record is skipped (the next readable one comes instead) and counted
    assert ds.num_skipped >= 1 and y in (0,)
    info, rise = h.peak_rss_mib(lambda: inspect_path(tmp_path / "evil.rec"))
    assert not isinstance(info, Exception), info
    assert info["images_per_class"]["max"] == 1 and rise < 100


def test_sparse_6gib_rec_with_one_key_is_not_read_whole(tmp_path, h) -> None:
    rec = tmp_path / "sparse.rec"
    with open(rec, "wb") as fh:
        fh.write(struct.pack("<II", MAGIC, (1 << 29) - 1))  # a 512 MiB record...
        fh.truncate(6 << 30)  # ...in a 6 GiB file that is almost all holes
    (tmp_path / "sparse.idx").write_text("0\t0\n")
    if os.stat(rec).st_blocks * 512 > 1 << 20:
        pytest.skip("this file system does not keep sparse files")
    reader = IndexedRecordReader(rec)
    err, rise = h.peak_rss_mib(lambda: reader.read(0))
    assert isinstance(err, ValueError) and "exceed the record limit" in str(err), err
    assert rise < 80, f"{rise:.0f} MiB read"
    ds, rise = h.peak_rss_mib(lambda: FaceRecordDataset(rec))
    assert len(ds) == 1 and rise < 80
    with pytest.raises(FaceforgeError, match="unreadable"):
        ds[0]


def test_negative_or_impossible_idx_offsets(tmp_path, h) -> None:
    write_face_rec(tmp_path / "train.rec", [(0, _jpeg(1))], header=False)
    idx = tmp_path / "train.idx"
    idx.write_text("0\t0\n1\t-8\n")
    with pytest.raises(FaceforgeError) as ei:
        FaceRecordDataset(tmp_path / "train.rec")
    assert "train.idx:2" in h.one_line(ei.value) and "negative" in str(ei.value)
    idx.write_text("".join(f"{k}\t{k}\n" for k in range(10_000)))  # more entries than the file can hold
    with pytest.raises(FaceforgeError, match="more index entries than"):
        IndexedRecordReader(tmp_path / "train.rec")
    idx.write_text("0\t0\n1\t999999999\n")  # beyond the end: a truncated file, skipped and counted
    ds = FaceRecordDataset(tmp_path / "train.rec")
    assert len(ds) == 1 and ds.num_truncated == 1


def test_label_float_count_in_a_header_is_capped(tmp_path) -> None:
    rec = tmp_path / "f.rec"
    with IndexedRecordWriter(rec) as w:
        w.write(0, struct.pack("<IfQQ", 2**31, 0.0, 0, 0) + b"\0" * 8)  # claims 2^31 label floats
    r = IndexedRecordReader(rec)
    with pytest.raises(ValueError, match="label floats"):
        r.read_header(0)


# ------------------------------------------------------------------------------------------- .bin


def test_memo_amplification_is_refused(tmp_path, h) -> None:
    from faceforge.data.binset import read_bin

    jpeg = _jpeg(0, 112)
    images = [jpeg] * 40_000  # one object: pickle stores it once and 39,999 memo references
    data = pickle.dumps((images, [True] * 20_000), protocol=4)
    assert len(data) < 250_000
    p = tmp_path / "amp.bin"
    p.write_bytes(data)
    err, rise = h.peak_rss_mib(lambda: read_bin(p))
    assert isinstance(err, FaceforgeError), err
    msg = h.one_line(err)
    assert "referenced 39999 times (limit 64)" in msg and "FACEFORGE_BIN_MAX_FANOUT" in msg
    assert rise < 60


def test_bin_caps_count_and_decoded_bytes(tmp_path, h, monkeypatch) -> None:
    from faceforge.data import binset

    imgs = [_jpeg(i, 32) for i in range(8)]
    p = binset.write_bin(tmp_path / "s.bin", imgs, [True, False, True, False])
    bs = binset.read_bin(p)
    with pytest.raises(FaceforgeError, match=r"needs 0 MiB, over the limit|over the limit") as ei:
        bs.decode_all(max_bytes=1000)
    h.one_line(ei.value)
    monkeypatch.setattr(binset, "MAX_IMAGES", 6)
    with pytest.raises(FaceforgeError, match="holds 8 images, over the limit of 6"):
        binset.read_bin(p)
    # our own writer never needs the memo: an image shared by pairs is stored once per use
    shared = binset.write_bin(tmp_path / "shared.bin", [imgs[0]] * 200, [True] * 100)
    monkeypatch.setattr(binset, "MAX_IMAGES", 200_000)
    assert len(binset.read_bin(shared).images) == 200


def test_bin_pickle_code_never_runs(tmp_path, h) -> None:
    from faceforge.data.binset import read_bin

    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    p = tmp_path / "evil.bin"
    p.write_bytes(pickle.dumps(([Evil(), b"x"], [True])))
    with pytest.raises(FaceforgeError, match="refused to load") as ei:
        read_bin(p)
    h.one_line(ei.value)
    assert not marker.exists()
    p.write_bytes(pickle.dumps(([b"a", b"b"], [True]), protocol=4)[:-30])  # truncated opcodes
    with pytest.raises(FaceforgeError, match="not a readable pickle"):
        read_bin(p)


# ------------------------------------------------------------------------------------------- pairs


def test_traversal_pair_lists_are_refused_with_the_line(tmp_path, h, monkeypatch) -> None:
    from faceforge.data.pairs import read_pairs
    from faceforge.fileio import OutsideRootError, allow_outside_root

    root = tmp_path / "root"
    (root / "a").mkdir(parents=True)
    for n in ("1.jpg", "2.jpg"):
        (root / "a" / n).write_bytes(_jpeg())
    outside = tmp_path / "secret.jpg"
    outside.write_bytes(_jpeg(5))
    (root / "a" / "link.jpg").symlink_to(outside)
    cases = {
        "/etc/passwd": "/etc/passwd",
        "../secret.jpg": str(outside),
        "~/.bashrc": str(Path.home() / ".bashrc"),
        "/proc/self/environ": "/proc/self/environ",
        "a/link.jpg": str(outside),  # a symlink inside the root that leads out
        "a/../../secret.jpg": str(outside),
    }
    for bad, target in cases.items():
        f = root / "pairs.txt"
        f.write_text(f"1 a/1.jpg a/2.jpg\n0 a/1.jpg {bad}\n")
        with pytest.raises(OutsideRootError) as ei:
            read_pairs(f)
        msg = h.one_line(ei.value)
        assert f"{f}:2:" in msg and "--allow-outside-root" in msg and os.path.realpath(target) in msg, msg
        with allow_outside_root():
            assert len(read_pairs(f, check_exists=False)) == 2


def test_to_bin_never_copies_a_file_outside_the_root(tmp_path, h, monkeypatch, capsys) -> None:
    from faceforge.cli.main import main

    root = tmp_path / "imgs"
    root.mkdir()
    (root / "x.jpg").write_bytes(_jpeg())
    pairs = tmp_path / "pairs.csv"
    pairs.write_text("path_a,path_b,label\nx.jpg,/etc/passwd,0\nx.jpg,/proc/self/environ,1\n")
    read: list[str] = []
    real = Path.read_bytes

    def spy(self: Path) -> bytes:
        read.append(str(self))
        return real(self)

    monkeypatch.setattr(Path, "read_bytes", spy)
    out = tmp_path / "p.bin"
    assert main(["data", "to-bin", str(pairs), str(out), "--root", str(root)]) != 0
    err = capsys.readouterr().err
    assert "pairs.csv:2" in err and "outside the root" in err
    assert not out.exists() and not any(r in ("/etc/passwd", "/proc/self/environ") for r in read)
