"""Tests for faceforge.cli.data_cmd (the ``faceforge data`` actions)."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

import faceforge.data.synth as synth
from faceforge.cli.main import build_parser
from faceforge.data.binset import read_bin
from faceforge.data.pairs import read_pairs
from faceforge.data.recordio import FaceRecordDataset, read_property
from faceforge.errors import FaceforgeError


def _run(argv: list[str]) -> int:
    """The action's own function (errors raise) behind the real parser (with the options main adds)."""
    args = build_parser().parse_args(argv)
    return args.func(args)


def _folder(root: Path, n_ids: int = 4, per: int = 3, size: int = 20) -> dict[str, bytes]:
    files = {}
    for i in range(n_ids):
        name = f"person{i}"
        (root / name).mkdir(parents=True, exist_ok=True)
        for j in range(1, per + 1):
            img = np.random.default_rng(i * 10 + j).integers(0, 256, (size, size, 3), dtype=np.uint8)
            data = cv2.imencode(".jpg", img)[1].tobytes()
            rel = f"{name}/{name}_{j:04d}.jpg"
            (root / rel).write_bytes(data)
            files[rel] = data
    return files


@pytest.mark.parametrize("workers", ["1", "2"])
def test_pack_unpack_roundtrip(tmp_path: Path, workers: str, capsys: pytest.CaptureFixture[str]) -> None:
    files = _folder(tmp_path / "src")
    (tmp_path / "src" / "person1" / "person1_0009.jpg").write_bytes(b"")  # zero-byte JPEG
    assert (
        _run(["data", "pack", str(tmp_path / "src"), str(tmp_path / "rec"), "--workers", workers, "--quiet"])
        == 0
    )
    assert "skipped 1 unreadable" in capsys.readouterr().out
    ds = FaceRecordDataset(tmp_path / "rec")
    assert len(ds) == 12 and ds.labels.tolist() == [i for i in range(4) for _ in range(3)]
    assert read_property(tmp_path / "rec" / "property") == (4, 20, 20)
    _run(["data", "unpack", str(tmp_path / "rec"), str(tmp_path / "back"), "--quiet"])
    back = {str(p.relative_to(tmp_path / "back")): p.read_bytes() for p in (tmp_path / "back").rglob("*.jpg")}
    assert back == files  # identical bytes under identical names (so identical labels too)


def test_unpack_without_lst_uses_class_folders(tmp_path: Path) -> None:
    files = _folder(tmp_path / "src", 2, 2)
    _run(["data", "pack", str(tmp_path / "src"), str(tmp_path / "x.rec"), "--workers", "1", "--quiet"])
    (tmp_path / "x.lst").unlink()
    _run(["data", "unpack", str(tmp_path / "x.rec"), str(tmp_path / "out"), "--quiet"])
    got = sorted(str(p.relative_to(tmp_path / "out").parent) for p in (tmp_path / "out").rglob("*.jpg"))
    assert got == ["person0", "person0", "person1", "person1"]
    assert sorted(p.read_bytes() for p in (tmp_path / "out").rglob("*.jpg")) == sorted(files.values())


def test_inspect_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _folder(tmp_path / "src", 3, 2)
    (tmp_path / "src" / "person2" / "person2_0003.jpg").write_bytes(b"junk")
    _run(["data", "inspect", str(tmp_path / "src"), "--json"])
    info = json.loads(capsys.readouterr().out)
    assert info["images"] == 7 and info["classes"] == 3 and info["corrupt_in_sample"] == 1
    assert info["images_per_class"]["max"] == 3 and ["20x20", 6] in info["sizes"]
    _run(["data", "pack", str(tmp_path / "src"), str(tmp_path / "r.rec"), "--workers", "1", "--quiet"])
    capsys.readouterr()
    _run(["data", "inspect", str(tmp_path / "r.rec")])
    text = capsys.readouterr().out
    assert "recordio" in text and "images: 6" in text and "images per class: min 2" in text


def test_split_and_make_pairs(tmp_path: Path) -> None:
    _folder(tmp_path / "src", 8, 4, size=8)
    _run(["data", "split", str(tmp_path / "src"), "--out", str(tmp_path / "s.json"), "--seed", "1"])
    doc = json.loads((tmp_path / "s.json").read_text())
    assert sum(len(v) for v in doc["splits"].values()) == 8
    out = tmp_path / "src" / "pairs.txt"
    _run(
        [
            "data",
            "make-pairs",
            str(tmp_path / "src"),
            "--out",
            str(out),
            "--folds",
            "2",
            "--pairs-per-fold",
            "5",
        ]
    )
    pairs = read_pairs(out)  # checks every image exists
    assert len(pairs) == 20 and int(pairs.issame.sum()) == 10 and pairs.folds.tolist() == [0] * 10 + [1] * 10
    ids = [
        {Path(p).parent.name for p, f in zip(pairs.paths_a + pairs.paths_b, list(pairs.folds) * 2) if f == k}
        for k in (0, 1)
    ]
    assert not (ids[0] & ids[1])  # identity-disjoint folds
    keys = {(a, b) for a, b in zip(pairs.paths_a, pairs.paths_b)}
    assert len(keys) == 20  # no duplicate pairs
    for a, b, s in zip(pairs.paths_a, pairs.paths_b, pairs.issame):
        assert (Path(a).parent == Path(b).parent) == s
    with pytest.raises(FaceforgeError, match="can make only"):
        _run(
            [
                "data",
                "make-pairs",
                str(tmp_path / "src"),
                "--out",
                str(out),
                "--folds",
                "2",
                "--pairs-per-fold",
                "50",
            ]
        )


def test_to_bin_from_bin(tmp_path: Path) -> None:
    files = _folder(tmp_path / "src", 4, 3)
    pairs_txt = tmp_path / "src" / "pairs.txt"
    _run(
        [
            "data",
            "make-pairs",
            str(tmp_path / "src"),
            "--out",
            str(pairs_txt),
            "--folds",
            "2",
            "--pairs-per-fold",
            "2",
        ]
    )
    _run(["data", "to-bin", str(pairs_txt), str(tmp_path / "p.bin")])
    bs = read_bin(tmp_path / "p.bin")
    assert len(bs) == 8 and set(bs.images) <= set(files.values())
    _run(["data", "from-bin", str(tmp_path / "p.bin"), str(tmp_path / "fb"), "--folds", "2"])
    back = read_pairs(tmp_path / "fb" / "pairs.csv")
    orig = read_pairs(pairs_txt)
    assert back.issame.tolist() == orig.issame.tolist() and back.folds.tolist() == orig.folds.tolist()
    assert [Path(p).read_bytes() for p in back.paths_a] == [Path(p).read_bytes() for p in orig.paths_a]


def test_synth_passes_arguments(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen = {}

    def fake(**kw: object) -> dict:
        seen.update(kw)
        return {"ok": True}

    monkeypatch.setattr(synth, "write_dataset", fake)
    _run(["data", "synth", "--out", str(tmp_path), "--identities", "7", "--mode", "wild", "--workers", "2"])
    assert seen == {
        "out": str(tmp_path),
        "identities": 7,
        "images_per_id": 40,
        "val_identities": 50,
        "test_identities": 100,
        "mode": "wild",
        "seed": 0,
        "workers": 2,
        "progress": False,  # stderr is not a terminal under pytest, and no --progress
        "overwrite": False,
    }


def test_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(SystemExit):
        _run(["data"])
    with pytest.raises(SystemExit):
        _run(["data", "synth", "--out", str(tmp_path), "--mode", "cartoon"])
    with pytest.raises(FaceforgeError, match="does not exist"):
        _run(["data", "pack", str(tmp_path / "missing"), str(tmp_path / "o.rec"), "--quiet"])


def test_split_class_layout_from_synth_objects(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "objects"
    _run(["data", "synth", "--kind", "objects", "--out", str(out), "--classes", "3", "--ids-per-class", "4",
          "--views", "2", "--size", "40", "--quiet"])  # fmt: skip
    assert "SynthObjects written" in capsys.readouterr().out
    assert sorted(p.name for p in out.iterdir()) == ["objects.json", "ring", "star", "stripes"]
    split = tmp_path / "splits" / "split.json"
    argv = ["data", "split", str(out), "--out", str(split), "--class-names", "star,stripes", "--seed", "3"]
    _run(argv)
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith(f"wrote split {split}: layout class, 2 classes")
    rows = {ln.split()[0]: [int(v) for v in ln.split()[1:]] for ln in lines[2:5]}
    assert sum(r[0] for r in rows.values()) == 16 and sum(r[1] for r in rows.values()) == 8
    assert all(r[2] == 2 for r in rows.values())  # both classes in train, val and test
    assert "dropped 0 groups" in lines[5] and "skipped 0 unreadable" in lines[5]
    doc = json.loads(split.read_text())
    assert doc["layout"] == "class" and doc["classes"] == ["star", "stripes"] and doc["params"]["seed"] == 3
    names = tmp_path / "names.txt"
    names.write_text("star\nstripes\n")
    _run(["data", "split", str(out), "--out", str(split), "--class-names", str(names), "--seed", "3"])
    assert capsys.readouterr().out.startswith("re-used split")  # the same settings, from a file
    with pytest.raises(FaceforgeError, match="no such file"):
        _run(["data", "split", str(out), "--out", str(tmp_path / "x.json"), "--class-names", "nofile.txt"])
    with pytest.raises(FaceforgeError, match="did you mean 'stripes'"):
        _run(["data", "split", str(out), "--out", str(tmp_path / "x.json"), "--class-names", "stripe,star"])
    with pytest.raises(FaceforgeError, match="does not fit layout 'class'"):
        (out / "star" / "photo.jpg").write_bytes((out / "star" / "star000_1.jpg").read_bytes())
        _run(["data", "split", str(out), "--out", str(tmp_path / "y.json"), "--layout", "class"])


def test_synth_objects_passes_arguments(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen = {}

    def fake(**kw: object) -> dict:
        seen.update(kw)
        return {"ok": True}

    monkeypatch.setattr(synth, "write_objects", fake)
    _run(["data", "synth", "--kind", "objects", "--out", str(tmp_path), "--views", "3", "--seed", "2"])
    assert seen == {
        "out": str(tmp_path),
        "classes": 8,
        "ids_per_class": 24,
        "views": 3,
        "size": 96,
        "seed": 2,
        "progress": False,
        "overwrite": False,
    }
    with pytest.raises(FaceforgeError, match="--ids-per-class applies to --kind objects only"):
        _run(["data", "synth", "--out", str(tmp_path), "--ids-per-class", "3"])
    with pytest.raises(SystemExit):
        _run(["data", "synth", "--kind", "things", "--out", str(tmp_path)])
