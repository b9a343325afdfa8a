"""Tests for faceforge.data.splits."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from faceforge.data.folder import FileListDataset, ImageFolderDataset
from faceforge.data.splits import Split, make_split, parse_flat_name, scan_folder
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


# ------------------------------------------------------------------------------ class layout


def _class_tree(root: Path, sizes: dict[str, list[int]], size: int = 8) -> None:
    """``root/<class>/<class>NNN_<k>.png``: ``sizes[class][i]`` images of object ``i``."""
    for cls, per in sizes.items():
        for i, n in enumerate(per):
            for k in range(n):
                _img(root / cls / f"{cls}{i:03d}_{k + 1}.png", size)


def _random_sizes(seed: int) -> dict[str, list[int]]:
    rng = np.random.default_rng(seed)
    sizes = {f"c{c}": [int(v) for v in rng.integers(1, 6, int(rng.integers(6, 15)))] for c in range(4)}
    sizes["trio"] = [3, 3, 3]  # the cut by image share alone leaves test empty
    sizes["pair"] = [2, 3]  # fewer groups than splits: train, then val
    sizes["single"] = [4]
    return sizes


def test_layout_detection(tmp_path: Path) -> None:
    _class_tree(tmp_path / "cls", {"monstera": [2, 2], "ficus": [1, 3]})
    layout, groups = scan_folder(tmp_path / "cls")
    assert layout == "class"
    assert groups["monstera/monstera000"] == ["monstera/monstera000_1.png", "monstera/monstera000_2.png"]
    assert sorted(groups) == [
        "ficus/ficus000",
        "ficus/ficus001",
        "monstera/monstera000",
        "monstera/monstera001",
    ]
    for name in ("Aaron_Eckhart", "Abel_Pacheco"):  # LFW: the prefix is the folder's name
        for k in (1, 2):
            _img(tmp_path / "lfw" / name / f"{name}_{k:04d}.jpg")
    assert scan_folder(tmp_path / "lfw") == (
        "folder",
        {n: [f"{n}/{n}_0001.jpg", f"{n}/{n}_0002.jpg"] for n in ("Aaron_Eckhart", "Abel_Pacheco")},
    )
    for k in range(4):  # VGGFace2: a prefix per photo, so prefixes group nothing
        _img(tmp_path / "vgg" / "n000002" / f"{k:04d}_01.jpg")
    assert scan_folder(tmp_path / "vgg")[0] == "folder"
    _img(tmp_path / "plain" / "x" / "a.jpg")  # not ID_seq
    _img(tmp_path / "plain" / "x" / "b_1.jpg")
    _img(tmp_path / "plain" / "x" / "c_1.jpg")
    assert scan_folder(tmp_path / "plain")[0] == "folder"
    # forced: every file must fit, and the error names the first one that does not
    assert scan_folder(tmp_path / "lfw", "class")[1]["Abel_Pacheco/Abel_Pacheco"][0].endswith("_0001.jpg")
    with pytest.raises(FaceforgeError, match=r"plain/x/a\.jpg does not fit layout 'class'"):
        scan_folder(tmp_path / "plain", "class")
    _img(tmp_path / "cls" / "ficus" / "deeper" / "ficus009_1.png")
    assert scan_folder(tmp_path / "cls")[0] == "folder"  # nested images: not the class layout
    with pytest.raises(FaceforgeError, match=r"deeper/ficus009_1\.png does not fit layout 'class'"):
        scan_folder(tmp_path / "cls", "class")
    with pytest.raises(FaceforgeError, match="did you mean 'class'"):
        scan_folder(tmp_path / "cls", "clas")


def test_class_split_is_stratified_and_group_disjoint(tmp_path: Path) -> None:
    sizes = _random_sizes(5)
    _class_tree(tmp_path / "img", sizes)
    s = make_split(tmp_path / "img", tmp_path / "s.json", seed=2)
    assert s.layout == "class" and s.classes == sorted(sizes)
    keys = [set(s.splits[n]) for n in ("train", "val", "test")]
    assert not (keys[0] & keys[1]) and not (keys[0] & keys[2]) and not (keys[1] & keys[2])
    assert set().union(*keys) == {f"{c}/{c}{i:03d}" for c, per in sizes.items() for i in range(len(per))}
    for cls, per in sizes.items():
        got = {n: [k for k in s.splits[n] if k.startswith(cls + "/")] for n in ("train", "val", "test")}
        if len(per) >= 3:
            assert all(got.values()), (cls, got)  # every class with >= 3 groups is in every split
        if len(per) >= 5:  # with 3 or 4 groups covering every split can cost more than one group
            total = sum(per)
            for name, ratio in zip(("train", "val", "test"), (0.7, 0.15, 0.15)):
                n_img = sum(len(s.splits[name][k]) for k in got[name])
                assert abs(n_img - ratio * total) <= max(per), (cls, name, n_img, total)
    assert s.small_classes == {"pair": ["train", "val"], "single": ["train"]}
    assert {k for k in s.splits["val"] if k.startswith("pair/")} and not s.splits["test"].keys() & {
        "pair/pair000"
    }
    doc = json.loads((tmp_path / "s.json").read_text())
    assert doc["version"] == 2 and doc["layout"] == "class" and doc["classes"] == s.classes
    assert doc["seed"] == 2 and doc["ratios"] == [0.7, 0.15, 0.15]
    c0 = doc["counts"]["per_class"]["c0"]
    assert sum(c0[n]["groups"] for n in c0) == len(sizes["c0"]) and sum(c0[n]["images"] for n in c0) == sum(
        sizes["c0"]
    )
    assert doc["counts"]["splits"]["test"]["classes"] == 5  # c0..c3, trio; pair and single have none


def test_class_split_seed_per_class(tmp_path: Path) -> None:
    """A class's split depends on the seed and its own groups only (adding a class changes nothing)."""
    sizes = _random_sizes(6)
    _class_tree(tmp_path / "img", sizes)
    a = make_split(tmp_path / "img", seed=1)
    assert make_split(tmp_path / "img", seed=1).splits == a.splits
    assert make_split(tmp_path / "img", seed=9).splits != a.splits
    _class_tree(tmp_path / "img", {"extra": [2, 2, 2, 2]})
    b = make_split(tmp_path / "img", seed=1)
    for n in ("train", "val", "test"):
        assert {k: v for k, v in b.splits[n].items() if not k.startswith("extra/")} == a.splits[n]


def test_samples_labels_and_groups(tmp_path: Path) -> None:
    _class_tree(tmp_path / "img", _random_sizes(7))
    s = make_split(tmp_path / "img", seed=0)
    assert s.classes is not None
    for name in ("train", "val", "test"):
        samples, groups = s.samples(name, label="class"), s.groups(name)
        assert samples == s.samples(name)  # auto = class for the class layout
        assert len(groups) == len(samples) and len(set(groups)) == len(s.splits[name])
        for (path, lab), key in zip(samples, groups):
            cls = Path(path).parent.name
            assert (
                s.classes[lab] == cls
                and key.startswith(cls + "/")
                and Path(path).name.startswith(key.split("/")[1])
            )
        by_group = s.samples(name, label="group")
        assert [p for p, _ in by_group] == [p for p, _ in samples]
        assert [lab for _, lab in by_group] == [s.ids(name).index(g) for g in groups]
    with pytest.raises(FaceforgeError, match="did you mean 'class'"):
        s.samples("train", label="klass")
    _flat(tmp_path / "faces", {"a": 2, "b": 2, "c": 2})
    f = make_split(tmp_path / "faces", ratios=(1, 0, 0))
    assert f.classes is None and f.samples("train") == f.samples("train", label="group")
    assert f.groups("train") == ["a", "a", "b", "b", "c", "c"]
    with pytest.raises(FaceforgeError, match="label='class' needs a class-layout split"):
        f.samples("train", label="class")


def test_min_image_size_drops_only_offending_groups(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "img"
    _class_tree(root, {"oak": [2, 2, 2], "elm": [2, 2, 2]}, size=32)
    _img(root / "oak" / "oak001_3.png", 10)  # one small photo of oak001
    (root / "elm" / "elm002_3.png").write_bytes(b"\x89PNG not really")  # unreadable: skipped, counted
    # header only: decoding pixels during the split would be an error here
    from PIL import ImageFile

    def no_decode(*a: object, **k: object) -> None:
        raise AssertionError("make_split decoded pixels")

    monkeypatch.setattr(ImageFile.ImageFile, "load", no_decode)
    monkeypatch.setattr(cv2, "imdecode", no_decode)
    s = make_split(root, min_image_size=20, ratios=(1, 0, 0))
    assert (
        set(s.dropped) == {"oak/oak001"}
        and "oak/oak001_3.png has a shorter side of 10 px < 20" in s.dropped["oak/oak001"]
    )
    assert set(s.splits["train"]) == {"oak/oak000", "oak/oak002", "elm/elm000", "elm/elm001", "elm/elm002"}
    assert s.splits["train"]["elm/elm002"] == ["elm/elm002_1.png", "elm/elm002_2.png"]
    assert s.num_corrupt == 1


def test_class_names_pick_classes(tmp_path: Path) -> None:
    _class_tree(tmp_path / "img", {"monstera": [2, 2, 2], "ficus": [2, 2, 2], "cactus": [2, 2, 2]})
    names = tmp_path / "names.txt"
    names.write_text("monstera\n\ncactus\n")
    s = make_split(tmp_path / "img", tmp_path / "s.json", class_names=names)
    assert s.classes == ["cactus", "monstera"]
    assert {k.split("/")[0] for n in s.splits for k in s.splits[n]} == {"cactus", "monstera"}
    assert json.loads((tmp_path / "s.json").read_text())["classes"] == ["cactus", "monstera"]
    with pytest.raises(
        FaceforgeError, match=r"class name 'monstra' is not a class folder .*did you mean 'monstera'"
    ):
        make_split(tmp_path / "img", class_names=["ficus", "monstra"])


def test_class_split_file_reused_and_v1_files_read(tmp_path: Path) -> None:
    _class_tree(tmp_path / "img", _random_sizes(8))
    out = tmp_path / "s.json"
    make_split(tmp_path / "img", out, seed=0, layout="class")
    doc = json.loads(out.read_text())
    doc["splits"]["train"]["c0/sentinel"] = ["c0/kept.png"]  # proves the file is re-read, not recomputed
    out.write_text(json.dumps(doc))
    again = make_split(tmp_path / "img", out, seed=0, layout="class")
    assert "c0/sentinel" in again.splits["train"] and again.classes == doc["classes"]
    with pytest.raises(FaceforgeError, match=r"other settings \(layout\)"):
        make_split(tmp_path / "img", out, seed=0)  # auto is another setting, even if it finds 'class'
    # a version-1 file of an earlier faceforge (no classes, counts) still loads and labels by ID
    v1 = {
        "version": 1,
        "root": str(tmp_path),
        "layout": "folder",
        "params": {},
        "splits": {"train": {"b": ["b/1.jpg"], "a": ["a/1.jpg"]}, "val": {}, "test": {}},
    }
    (tmp_path / "v1.json").write_text(json.dumps(v1))
    old = Split.load(tmp_path / "v1.json")
    assert old.classes is None and old.samples("train") == [
        (str(tmp_path / "a/1.jpg"), 0),
        (str(tmp_path / "b/1.jpg"), 1),
    ]
    v1["version"] = 3
    (tmp_path / "v3.json").write_text(json.dumps(v1))
    with pytest.raises(FaceforgeError, match="version 3 is not supported"):
        Split.load(tmp_path / "v3.json")


# ----------------------------------------------------------------------------- FileListDataset


def test_file_list_dataset_crops_non_square(tmp_path: Path) -> None:
    wide = np.zeros((40, 80, 3), np.uint8)  # BGR: blue | green | red columns
    wide[:, :20] = (255, 0, 0)
    wide[:, 20:60] = (0, 255, 0)
    wide[:, 60:] = (0, 0, 255)
    cv2.imwrite(str(tmp_path / "wide.png"), wide)
    square = np.random.default_rng(0).integers(0, 256, (48, 48, 3), dtype=np.uint8)
    cv2.imwrite(str(tmp_path / "square.png"), square)
    (tmp_path / "bad.jpg").write_bytes(b"junk")
    samples = [(str(tmp_path / "wide.png"), 0), (tmp_path / "square.png", 2), (str(tmp_path / "bad.jpg"), 1)]
    ds = FileListDataset(samples, 16, class_names=["x", "y", "z", "w"])
    assert ds.num_classes == 4 and ds.labels.tolist() == [0, 2, 1] and len(ds) == 3
    x, lab = ds[0]
    assert x.shape == (3, 16, 16) and x.dtype == torch.uint8 and lab == 0
    # the centre 40x40 of the wide image is all green: a crop, not a squeeze of blue and red into it
    assert int(x[1].min()) >= 250 and int(x[0].max()) <= 5 and int(x[2].max()) <= 5
    want = cv2.cvtColor(cv2.resize(square, (16, 16), interpolation=cv2.INTER_AREA), cv2.COLOR_BGR2RGB)
    assert np.array_equal(ds[1][0].permute(1, 2, 0).numpy(), want)  # square images: as before
    bad, bad_label = ds[2]
    assert bad_label == -1 and int(bad.abs().sum()) == 0
    cached = FileListDataset(samples, 16, cache=True)
    assert cached.bad_paths == [str(tmp_path / "bad.jpg")] and len(cached) == 2 and cached.num_classes == 3
    assert torch.equal(cached[0][0], x)
    with pytest.raises(FaceforgeError, match=r"label 2 of .*square.png has no class name"):
        FileListDataset(samples, 16, class_names=["x", "y"])
    # ImageFolderDataset is the same dataset over a tree
    _class_tree(tmp_path / "tree", {"a": [1], "b": [2]}, size=20)
    tree = ImageFolderDataset(tmp_path / "tree", 16)
    assert (
        isinstance(tree, FileListDataset) and tree.classes == ["a", "b"] and tree.labels.tolist() == [0, 1, 1]
    )
