"""Tests for faceforge.data.binset (.bin pair sets and the restricted unpickler)."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import cv2
import numpy as np
import pytest

from faceforge.data.binset import bin_to_pairs, pairs_to_bin, read_bin, safe_loads, write_bin
from faceforge.data.pairs import read_pairs, write_lfw_pairs
from faceforge.errors import FaceforgeError


def _jpeg(seed: int) -> bytes:
    img = np.random.default_rng(seed).integers(0, 256, (12, 10, 3), dtype=np.uint8)
    return cv2.imencode(".jpg", img)[1].tobytes()


class _Evil:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class _EvilOpen:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_write_read_roundtrip(tmp_path: Path) -> None:
    imgs = [_jpeg(i) for i in range(6)]
    write_bin(tmp_path / "a.bin", imgs, [True, False, True])
    bs = read_bin(tmp_path / "a.bin")
    assert bs.images == imgs and bs.issame.tolist() == [True, False, True]
    arr, ok = bs.decode_all()
    assert arr.shape == (6, 12, 10, 3) and ok.all()


@pytest.mark.parametrize("protocol", [2, 4])
def test_numpy_bool_and_bytearray_accepted(tmp_path: Path, protocol: int) -> None:
    imgs = [bytearray(_jpeg(0)), _jpeg(1)]
    for issame in (np.array([True]), [np.bool_(False)]):
        p = tmp_path / "n.bin"
        p.write_bytes(pickle.dumps((imgs, issame), protocol=protocol))
        bs = read_bin(p)
        assert bs.images == [bytes(b) for b in imgs]
        assert bs.issame.tolist() == [bool(np.asarray(issame)[0])]


@pytest.mark.parametrize("evil", [_Evil, _EvilOpen])
def test_crafted_payload_does_not_execute(tmp_path: Path, evil: type) -> None:
    marker = tmp_path / "pwned"
    p = tmp_path / "evil.bin"
    p.write_bytes(pickle.dumps(([evil(marker), b"x"], [True]), protocol=2))
    with pytest.raises(FaceforgeError, match=r"evil.bin: refused to load: global '(posix|builtins|io)\."):
        read_bin(p)
    assert not marker.exists()
    # control: plain pickle would have run it, so the payload is real
    pickle.loads(p.read_bytes())
    assert marker.exists()


def test_other_numpy_dtypes_and_objects_refused(tmp_path: Path) -> None:
    with pytest.raises(FaceforgeError, match="dtype 'f8' is not allowed"):
        safe_loads(pickle.dumps(np.zeros(3)), "x.bin")
    with pytest.raises(FaceforgeError, match="not allowed"):
        safe_loads(pickle.dumps(np.array([1, None], dtype=object)), "x.bin")
    with pytest.raises(FaceforgeError, match="value of type dict"):
        safe_loads(pickle.dumps({"a": 1}), "x.bin")
    with pytest.raises(FaceforgeError, match="not a readable pickle"):
        safe_loads(b"\x80\x04garbage", "x.bin")
    # numpy.ndarray may only be _reconstruct's subtype, never called (a huge allocation otherwise)
    with pytest.raises(FaceforgeError, match="not a readable pickle"):
        safe_loads(b"\x80\x02cnumpy\nndarray\nJ\x00\x00\x00\x7f\x85R.", "x.bin")


def test_odd_and_mismatched_counts(tmp_path: Path) -> None:
    p = tmp_path / "odd.bin"
    p.write_bytes(pickle.dumps(([b"a", b"b", b"c"], [True])))
    with pytest.raises(FaceforgeError, match=r"odd.bin: holds an odd number of images \(3\)"):
        read_bin(p)
    p.write_bytes(pickle.dumps(([b"a", b"b", b"c", b"d"], [True])))
    with pytest.raises(FaceforgeError, match="4 images but 1 labels"):
        read_bin(p)
    p.write_bytes(pickle.dumps(([b"a", b"b"], [2])))
    with pytest.raises(FaceforgeError, match="list of bools"):
        read_bin(p)


def test_corrupt_image_counted(tmp_path: Path) -> None:
    write_bin(tmp_path / "c.bin", [_jpeg(0), b"", _jpeg(1), b"notajpeg"], [True, False])
    bs = read_bin(tmp_path / "c.bin")
    arr, ok = bs.decode_all()
    assert ok.tolist() == [True, False, True, False] and bs.num_corrupt == 2
    assert arr[1].sum() == 0


def test_pairs_to_bin_to_pairs(tmp_path: Path) -> None:
    root = tmp_path / "lfw"
    names = ["ann", "bob", "cid"]
    data = {}
    for n, name in enumerate(names):
        (root / name).mkdir(parents=True)
        for i in (1, 2):
            data[(name, i)] = _jpeg(10 * n + i)
            (root / name / f"{name}_{i:04d}.jpg").write_bytes(data[(name, i)])
    folds = [([("ann", 1, 2)], [("ann", 1, "bob", 2)]), ([("cid", 2, 1)], [("bob", 1, "cid", 1)])]
    pairs = read_pairs(write_lfw_pairs(root / "pairs.txt", folds))
    pairs_to_bin(pairs, tmp_path / "p.bin")
    back = bin_to_pairs(tmp_path / "p.bin", tmp_path / "out", n_folds=2)
    assert back.issame.tolist() == pairs.issame.tolist() == [True, False, True, False]
    for x, y in zip(pairs.paths_a + pairs.paths_b, back.paths_a + back.paths_b):
        assert Path(x).read_bytes() == Path(y).read_bytes()
    again = read_pairs(tmp_path / "out" / "pairs.csv")
    assert again.paths_a == back.paths_a and again.folds.tolist() == [0, 0, 1, 1]
    pairs_to_bin(pairs, tmp_path / "r.bin", image_size=(8, 8))
    arr, ok = read_bin(tmp_path / "r.bin").decode_all()
    assert arr.shape == (8, 8, 8, 3) and ok.all()
