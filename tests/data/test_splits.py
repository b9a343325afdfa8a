"""Tests for faceforge.data.splits."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from faceforge.data.splits import make_split, parse_flat_name, scan_folder
from faceforge.errors import FaceforgeError


def _img(path: Path, size: int = 8) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.full((size, size, 3), 128, np.uint8))


def _flat(root: Path, counts: dict[str, int], size: int = 8) -> None:
    for ident, n in counts.items():
        for s in range(n):
            _img(root / f"{ident}_{s:04d}.jpg", size)


def test_parse_flat_name() -> None:
    assert parse_flat_name("Abel_Pacheco_0003.jpg") == ("Abel_Pacheco", 3)
    assert parse_flat_name("0042_7.png") == ("0042", 7)
    with pytest.raises(FaceforgeError, match=r"'nosequence.jpg' does not match '\{ID\}_\{seq\}.jpg'"):
        parse_flat_name("nosequence.jpg")


def test_scan_layouts(tmp_path: Path) -> None:
    _flat(tmp_path / "flat", {"a": 2, "b_c": 1})
    layout, groups = scan_folder(tmp_path / "flat")
    assert layout == "flat" and groups == {"a": ["a_0000.jpg", "a_0001.jpg"], "b_c": ["b_c_0000.jpg"]}
    _img(tmp_path / "tree" / "x" / "1.jpg")
    _img(tmp_path / "tree" / "y" / "2.png")
    (tmp_path / "tree" / "y" / "notes.txt").write_text("ignored")
    layout, groups = scan_folder(tmp_path / "tree")
    assert layout == "folder" and groups == {"x": ["x/1.jpg"], "y": ["y/2.png"]}
    _img(tmp_path / "tree" / "stray_1.jpg")
    with pytest.raises(FaceforgeError, match="holds both images"):
        scan_folder(tmp_path / "tree")
    with pytest.raises(FaceforgeError, match="does not exist"):
        scan_folder(tmp_path / "nothing")


def test_split_invariants(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    counts = {f"{i:03d}": int(rng.integers(1, 8)) for i in range(60)}
    _flat(tmp_path / "img", counts)
    s = make_split(tmp_path / "img", tmp_path / "split.json", seed=3)
    sets = [set(s.splits[n]) for n in ("train", "val", "test")]
    assert not (sets[0] & sets[1]) and not (sets[0] & sets[2]) and not (sets[1] & sets[2])
    assert set().union(*sets) == set(counts)
    total, biggest = sum(counts.values()), max(counts.values())
    for name, ratio in zip(("train", "val", "test"), (0.7, 0.15, 0.15)):
        assert abs(s.num_images(name) - ratio * total) <= biggest, name
    samples = s.samples("val")
    assert {lab for _, lab in samples} == set(range(len(s.ids("val"))))
    assert all(Path(p).is_file() for p, _ in samples)
    # a different seed gives a different split; the same seed the same one
    assert make_split(tmp_path / "img", seed=4).splits != s.splits
    assert make_split(tmp_path / "img", seed=3).splits == s.splits


def test_split_file_reused_and_guarded(tmp_path: Path) -> None:
    _flat(tmp_path / "img", {f"{i}": 3 for i in range(10)})
    out = tmp_path / "split.json"
    s1 = make_split(tmp_path / "img", out, seed=0)
    doc = json.loads(out.read_text())
    doc["splits"]["train"]["sentinel"] = ["kept.jpg"]  # proves the file is re-read, not recomputed
    out.write_text(json.dumps(doc))
    s2 = make_split(tmp_path / "img", out, seed=0)
    assert "sentinel" in s2.splits["train"] and s2.splits["val"] == s1.splits["val"]
    with pytest.raises(FaceforgeError, match=r"split.json was made with other settings \(seed\)"):
        make_split(tmp_path / "img", out, seed=1)
    s3 = make_split(tmp_path / "img", out, seed=1, overwrite=True)
    assert "sentinel" not in s3.splits["train"]


def test_min_image_size_drops_whole_group_and_counts_corrupt(tmp_path: Path) -> None:
    root = tmp_path / "tree"
    for ident in ("big", "mixed", "bad"):
        _img(root / ident / "0.jpg", 32)
    _img(root / "mixed" / "1.jpg", 10)
    (root / "bad" / "1.jpg").write_bytes(b"")  # zero-byte JPEG
    s = make_split(root, min_image_size=20, ratios=(1, 0, 0))
    assert set(s.splits["train"]) == {"big", "bad"}
    assert s.splits["train"]["bad"] == ["bad/0.jpg"]
    assert "mixed" in s.dropped and "10 px < 20" in s.dropped["mixed"]
    assert s.num_corrupt == 1


def test_class_names_validated(tmp_path: Path) -> None:
    _flat(tmp_path / "img", {"alice": 2, "bob": 2, "carol": 2})
    s = make_split(tmp_path / "img", class_names=["alice", "carol"], ratios=(0.5, 0.5, 0))
    assert set(s.splits["train"]) | set(s.splits["val"]) == {"alice", "carol"}
    with pytest.raises(FaceforgeError, match=r"class name 'alise' is not an ID .*did you mean 'alice'"):
        make_split(tmp_path / "img", class_names=["alise"])
    with pytest.raises(FaceforgeError, match="summing to 1"):
        make_split(tmp_path / "img", ratios=(0.5, 0.5, 0.5))
