"""Tests for faceforge.data.recordio (pure-Python insightface RecordIO)."""

from __future__ import annotations

import struct
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from faceforge.data.recordio import (
    MAGIC,
    FaceRecordDataset,
    IndexedRecordReader,
    IndexedRecordWriter,
    IRHeader,
    pack_record,
    read_property,
    unpack_record,
    write_face_rec,
)
from faceforge.errors import FaceforgeError


def _jpeg(seed: int, size: int = 16) -> bytes:
    rng = np.random.default_rng(seed)
    img = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
    return cv2.imencode(".jpg", img)[1].tobytes()


def _items(n_classes: int = 3, per: int = 4) -> list[tuple[int, bytes]]:
    return [(c, _jpeg(c * 100 + k)) for c in range(n_classes) for k in range(per)]


def test_framing_bytes_match_spec(tmp_path: Path) -> None:
    rec = tmp_path / "a.rec"
    with IndexedRecordWriter(rec) as w:
        w.write(0, b"abcde")  # 5 bytes -> 3 padding bytes
        w.write(7, b"wxyz")
    raw = rec.read_bytes()
    assert raw[:8] == struct.pack("<II", MAGIC, 5)
    assert raw[8:16] == b"abcde\0\0\0"
    assert raw[16:24] == struct.pack("<II", MAGIC, 4) and raw[24:28] == b"wxyz"
    assert (tmp_path / "a.idx").read_text() == "0\t0\n7\t16\n"
    r = IndexedRecordReader(rec)
    assert r.read(7) == b"wxyz" and r.read(0) == b"abcde"


def test_magic_inside_payload_is_split_and_rejoined(tmp_path: Path) -> None:
    m = struct.pack("<I", MAGIC)
    payload = b"abcd" + m + b"efgh" + m + b"x" + m  # aligned at 4 and 12; unaligned at 17
    rec = tmp_path / "m.rec"
    with IndexedRecordWriter(rec) as w:
        w.write(0, payload)
        w.write(1, b"after")
    raw = rec.read_bytes()
    _, l1 = struct.unpack_from("<II", raw, 0)
    assert l1 >> 29 == 1 and l1 & ((1 << 29) - 1) == 4  # first part "abcd"
    _, l2 = struct.unpack_from("<II", raw, 12)
    assert l2 >> 29 == 2 and l2 & ((1 << 29) - 1) == 4  # middle part "efgh"
    _, l3 = struct.unpack_from("<II", raw, 24)
    assert l3 >> 29 == 3  # last part
    r = IndexedRecordReader(rec)
    assert r.read(0) == payload and r.read(1) == b"after"
    assert IndexedRecordReader(rec, tmp_path / "none.idx").scan() == {0: 0, 1: r.offsets[1]}


def test_irheader_roundtrip() -> None:
    h, data = unpack_record(pack_record(IRHeader(0, 3.0, 5, 0), b"img"))
    assert (h.flag, h.label, h.id, data) == (0, 3.0, 5, b"img")
    h, data = unpack_record(pack_record(IRHeader(2, np.array([1.0, 9.0]), 0, 0), b"z"))
    assert h.flag == 2 and h.label.tolist() == [1.0, 9.0] and data == b"z"
    assert len(pack_record(IRHeader(0, 1.0))) == 24


@pytest.mark.parametrize("header", [True, False])
def test_face_rec_roundtrip(tmp_path: Path, header: bool) -> None:
    items = _items()
    info = write_face_rec(tmp_path / "train.rec", items, header=header)
    assert info["num_images"] == 12 and info["num_classes"] == 3
    assert read_property(tmp_path / "property") == (3, 16, 16)
    ds = FaceRecordDataset(tmp_path)
    assert len(ds) == 12 and ds.num_classes == 3
    assert ds.labels.tolist() == [lab for lab, _ in items]
    assert (ds.identity_ranges is not None) == header
    if header:
        assert ds.identity_ranges == [(1, 5), (5, 9), (9, 13)]
    for i, (lab, data) in enumerate(items):
        assert ds.read_raw(i) == (lab, data)
    img, lab = ds[5]
    ref = cv2.cvtColor(
        cv2.imdecode(np.frombuffer(items[5][1], np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB
    )
    assert lab == 1 and img.dtype == torch.uint8 and img.shape == (3, 16, 16)
    assert np.array_equal(img.permute(1, 2, 0).numpy(), ref)


def test_array_labels_in_image_records(tmp_path: Path) -> None:
    rec = tmp_path / "x.rec"
    with IndexedRecordWriter(rec) as w:
        for k in range(4):
            w.write(k, pack_record(IRHeader(2, np.array([k % 2, 7.0]), k, 0), _jpeg(k)))
    ds = FaceRecordDataset(rec)
    assert ds.labels.tolist() == [0, 1, 0, 1]
    assert ds[3][1] == 1


def test_dataloader_workers_and_float(tmp_path: Path) -> None:
    write_face_rec(tmp_path / "d", _items(2, 3))
    ds = FaceRecordDataset(tmp_path / "d", to_float=True)
    ds.reader.read(0)  # open a handle in the parent: workers must not share it
    dl = DataLoader(ds, batch_size=3, num_workers=2, shuffle=False)
    labels = []
    for x, y in dl:
        assert x.dtype == torch.float32 and float(x.max()) <= 1.0
        labels += y.tolist()
    assert labels == [0, 0, 0, 1, 1, 1]


def test_truncated_rec_and_corrupt_record_are_skipped(tmp_path: Path) -> None:
    items = _items(2, 4)
    items[2] = (0, b"")  # zero-byte JPEG
    info = write_face_rec(tmp_path / "t.rec", items, header=False)
    rec = info["rec"]
    size = rec.stat().st_size
    offsets = IndexedRecordReader(rec).offsets
    cut = offsets[6] + 20  # cut inside record 6: records 6 and 7 lost
    rec.write_bytes(rec.read_bytes()[:cut])
    assert cut < size
    ds = FaceRecordDataset(rec)
    assert ds.num_truncated == 2 and len(ds) == 6
    got = [ds[i][1] for i in range(len(ds))]
    assert ds.num_skipped == 1  # the zero-byte image, replaced by the next record
    assert got == [0, 0, 0, 0, 1, 1]


def test_errors_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(FaceforgeError, match=r"nope\.rec"):
        FaceRecordDataset(tmp_path / "nope.rec")
    (tmp_path / "property").write_text("10,112\n")
    with pytest.raises(FaceforgeError, match=r"property: expected 'num_classes,height,width'"):
        read_property(tmp_path / "property")
    with pytest.raises(FaceforgeError, match="grouped and ascending"):
        write_face_rec(tmp_path / "z.rec", [(1, b"a"), (0, b"b")])
    write_face_rec(tmp_path / "w.rec", [(0, _jpeg(1))])
    (tmp_path / "w.idx").write_text("0\tzero\n")
    with pytest.raises(FaceforgeError, match=r"w.idx:1: expected 'index<TAB>offset'"):
        IndexedRecordReader(tmp_path / "w.rec")
