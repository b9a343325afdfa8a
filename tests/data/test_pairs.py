"""Tests for faceforge.data.pairs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from faceforge.data.pairs import Pairs, photos_outside_pairs, read_pairs, write_lfw_pairs, write_pairs_csv
from faceforge.errors import FaceforgeError


def _touch_lfw(root: Path, names: dict[str, int]) -> None:
    for name, n in names.items():
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(1, n + 1):
            (root / name / f"{name}_{i:04d}.jpg").write_bytes(b"x")


def _folds(n_folds: int, per: int) -> list:
    out = []
    for f in range(n_folds):
        gen = [(f"id{f}_{k}", 1, 2) for k in range(per)]
        imp = [(f"id{f}_{k}", 1, f"id{f}_{(k + 1) % per}", 2) for k in range(per)]
        out.append((gen, imp))
    return out


def test_write_then_read_view2(tmp_path: Path) -> None:
    folds = _folds(3, 4)
    _touch_lfw(tmp_path / "imgs", {f"id{f}_{k}": 2 for f in range(3) for k in range(4)})
    p = write_lfw_pairs(tmp_path / "pairs.txt", folds)
    assert p.read_text().splitlines()[0] == "3\t4"
    pairs = read_pairs(p)  # finds imgs/ as the root by itself
    assert len(pairs) == 24
    assert pairs.folds.tolist() == [f for f in range(3) for _ in range(8)]
    assert pairs.issame.tolist() == ([True] * 4 + [False] * 4) * 3
    assert pairs.paths_a[0] == str(tmp_path / "imgs" / "id0_0" / "id0_0_0001.jpg")
    assert pairs.paths_b[4] == str(tmp_path / "imgs" / "id0_1" / "id0_1_0002.jpg")
    assert pairs.n_folds == 3


def test_photos_outside_pairs_are_the_people_no_pair_uses(tmp_path: Path) -> None:
    folds = _folds(2, 3)
    root = tmp_path / "imgs"
    # a pair uses only images 1 and 2, but image 3 of the same person is still that person's
    _touch_lfw(root, {f"id{f}_{k}": 3 for f in range(2) for k in range(3)})
    _touch_lfw(root, {"Zed_Other": 2, "Amy_Else": 1})
    (root / ".hidden").mkdir()
    (root / ".hidden" / "x.jpg").write_bytes(b"x")
    (root / "Amy_Else" / "notes.txt").write_text("not an image")
    pairs = read_pairs(write_lfw_pairs(tmp_path / "pairs.txt", folds), root)
    got = photos_outside_pairs(pairs, root)
    assert got == [
        str((root / "Amy_Else" / "Amy_Else_0001.jpg").resolve()),
        str((root / "Zed_Other" / "Zed_Other_0001.jpg").resolve()),
        str((root / "Zed_Other" / "Zed_Other_0002.jpg").resolve()),
    ]


def test_write_lfw_pairs_rejects_unequal(tmp_path: Path) -> None:
    folds = _folds(2, 3)
    folds[1] = (folds[1][0], folds[1][1][:2])
    with pytest.raises(FaceforgeError, match="fold 1 has 3 genuine and 2 impostor"):
        write_lfw_pairs(tmp_path / "p.txt", folds)
    with pytest.raises(FaceforgeError, match="image number"):
        write_lfw_pairs(tmp_path / "p.txt", [([("a", 0, 1)], [("a", 1, "b", 1)])])


def test_view2_header_mismatch_and_order(tmp_path: Path) -> None:
    _touch_lfw(tmp_path, {"a": 2, "b": 2})
    p = tmp_path / "pairs.txt"
    p.write_text("1 2\na 1 2\nb 1 2\na 1 b 1\n")
    with pytest.raises(FaceforgeError, match="promises"):
        read_pairs(p)
    p.write_text("1 1\na 1 b 1\na 1 2\n")
    with pytest.raises(FaceforgeError, match=r"pairs.txt:2: View-2 layout expects a genuine"):
        read_pairs(p)


def test_view1_and_headerless(tmp_path: Path) -> None:
    _touch_lfw(tmp_path, {"a": 3, "b": 2})
    p = tmp_path / "dev.txt"
    p.write_text("2\na 1 2\na 2 3\na 1 b 1\nb 2 a 3\n")
    pairs = read_pairs(p)
    assert pairs.folds.tolist() == [0, 0, 0, 0]
    assert pairs.issame.tolist() == [True, True, False, False]
    p.write_text("a 1 2\na 1 b 1\n" * 5)
    pairs = read_pairs(p)
    assert len(pairs) == 10 and pairs.folds.tolist() == list(range(10))
    pairs = read_pairs(p, n_folds=2)
    assert pairs.folds.tolist() == [0] * 5 + [1] * 5


def test_missing_images_listed_with_lines(tmp_path: Path) -> None:
    _touch_lfw(tmp_path, {"a": 2})
    p = tmp_path / "pairs.txt"
    p.write_text("a 1 2\na 1 7\nzed 1 2\n")
    with pytest.raises(FaceforgeError) as ei:
        read_pairs(p)
    msg = str(ei.value)
    assert "3 image reference(s) do not exist" in msg
    assert "line 2:" in msg and "a_0007.jpg" in msg and "line 3:" in msg
    assert len(read_pairs(p, check_exists=False)) == 3


def test_ann_and_triplet_formats(tmp_path: Path) -> None:
    _touch_lfw(tmp_path, {"a": 2, "b": 1})
    ann = tmp_path / "ann.txt"
    ann.write_text("1 a/a_0001.jpg a/a_0002.jpg\n0 a/a_0001.jpg b/b_0001.jpg\n")
    pairs = read_pairs(ann)
    assert pairs.issame.tolist() == [True, False]
    assert pairs.paths_b[1] == str(tmp_path / "b" / "b_0001.jpg")
    tri = tmp_path / "tri.txt"
    tri.write_text("a/a_0001.jpg a/a_0002.jpg true\na/a_0001.jpg b/b_0001.jpg FALSE\n")
    assert read_pairs(tri).issame.tolist() == [True, False]
    tri.write_text("a/a_0001.jpg a/a_0002.jpg 1\na/a_0001.jpg b/b_0001.jpg maybe\n")
    with pytest.raises(FaceforgeError, match=r"tri.txt:2: label 'maybe' is not one of"):
        read_pairs(tri, fmt="triplet")


def test_csv_round_trip(tmp_path: Path) -> None:
    _touch_lfw(tmp_path / "r", {"a": 2, "b": 1})
    r = tmp_path / "r"
    pairs = Pairs(
        [str(r / "a/a_0001.jpg")] * 4,
        [str(r / "a/a_0002.jpg"), str(r / "b/b_0001.jpg")] * 2,
        np.array([1, 0, 1, 0], bool),
        np.array([0, 0, 1, 1]),
    )
    out = write_pairs_csv(tmp_path / "r" / "pairs.csv", pairs, relative_to=r)
    assert "a/a_0001.jpg" in out.read_text().splitlines()[1]
    back = read_pairs(out)
    assert back.paths_a == pairs.paths_a and back.paths_b == pairs.paths_b
    assert back.issame.tolist() == pairs.issame.tolist() and back.folds.tolist() == [0, 0, 1, 1]


def test_csv_bad_header_and_folds(tmp_path: Path) -> None:
    p = tmp_path / "x.csv"
    p.write_text("left,right,score\na,b,0.5\n")
    with pytest.raises(FaceforgeError, match="lacks a column for the label"):
        read_pairs(p)
    _touch_lfw(tmp_path, {"a": 2})
    p.write_text("img1,img2,issame,fold\na/a_0001.jpg,a/a_0002.jpg,1,1\n")
    with pytest.raises(FaceforgeError, match="contiguous"):
        read_pairs(p)


def test_unknown_format(tmp_path: Path) -> None:
    p = tmp_path / "x.txt"
    p.write_text("a b c d e\n")
    with pytest.raises(FaceforgeError, match=r"x.txt:1: cannot tell the pair format"):
        read_pairs(p)
    with pytest.raises(FaceforgeError, match="does not exist"):
        read_pairs(tmp_path / "nope.txt")


def test_real_lfw(shared_dir: Path) -> None:
    lfw = shared_dir / "data" / "lfw"
    if not (lfw / "pairs.txt").is_file():
        pytest.skip(f"LFW pairs.txt not found under {lfw}")
    pairs = read_pairs(lfw / "pairs.txt")  # also checks that all 12000 paths exist
    assert len(pairs) == 6000
    assert int(pairs.issame.sum()) == 3000
    assert pairs.folds.tolist() == [f for f in range(10) for _ in range(600)]
    assert all(pairs.issame[f * 600 : f * 600 + 300].all() for f in range(10))
    assert "lfw-deepfunneled" in pairs.paths_a[0]
    assert pairs.paths_a[0].endswith("Abel_Pacheco/Abel_Pacheco_0001.jpg")
    assert pairs.paths_b[0].endswith("Abel_Pacheco/Abel_Pacheco_0004.jpg")
