"""Tests for faceforge.data.synth.objects (SynthObjects, the procedural non-face collection)."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from faceforge.data.splits import make_split, scan_folder
from faceforge.data.synth.objects import (
    OBJECT_CLASSES,
    SynthObjects,
    _instance,
    _layers,
    _View,
    write_objects,
)
from faceforge.errors import FaceforgeError


def test_views_are_deterministic_and_vary() -> None:
    a, b = SynthObjects(3, 64), SynthObjects(3, 64)
    img = a.image("star", 2, 1)
    assert img.shape == (64, 64, 3) and img.dtype == np.uint8
    assert np.array_equal(img, b.image("star", 2, 1))
    assert not np.array_equal(img, a.image("star", 2, 0))  # another view of the same object
    assert not np.array_equal(img, SynthObjects(4, 64).image("star", 2, 1))  # another seed
    with pytest.raises(FaceforgeError, match="unknown object class 'stars'"):
        a.image("stars", 0, 0)
    with pytest.raises(FaceforgeError, match="size 16 is too small"):
        SynthObjects(0, 16)


def test_objects_have_their_own_palette_and_proportions() -> None:
    s = SynthObjects(0, 64)
    inst = [s.instance("star", i) for i in range(6)]
    assert len({p["k"] for p, _, _ in inst}) > 1  # star points differ between objects
    colours = np.array([c1 for _, c1, _ in inst])
    assert np.ptp(colours, axis=0).max() > 80  # and so do their colours
    assert all(np.linalg.norm(c1 - c2) >= 60 for _, c1, c2 in inst)  # two-tone parts stay visible


def test_classes_have_distinct_shapes() -> None:
    """In one fixed pose the silhouettes of the classes differ, and each is a sizeable object."""
    size = 64
    masks = {}
    for ci, cls in enumerate(OBJECT_CLASSES):
        rng = np.random.default_rng(ci)
        p = _instance(cls, rng)
        pose = _View(size, np.random.default_rng(0), p["extent"])
        white = np.full(3, 255.0, np.float32)
        m = np.zeros((size, size), np.float32)
        for mask, _ in _layers(cls, p, pose, white, white):
            m = np.maximum(m, mask)
        masks[cls] = m > 0.5
        assert 0.03 < masks[cls].mean() < 0.6, cls
    for a, b in itertools.combinations(OBJECT_CLASSES, 2):
        inter = np.logical_and(masks[a], masks[b]).sum()
        union = np.logical_or(masks[a], masks[b]).sum()
        if {a, b} == {"stripes", "checker"}:
            continue  # the same badge outlines: these two differ by their pattern, checked below
        assert inter / union < 0.8, (a, b)
    # stripes vary along one axis only; a checker board along both
    s = SynthObjects(0, 96)
    p = dict(s.instance("stripes", 0)[0], outline=0, angle=0.0)
    q = dict(s.instance("checker", 0)[0], outline=0, angle=0.0)
    pose = _View(96, np.random.default_rng(1), 1.0)
    pose.theta, pose.mirror = 0.0, 1.0
    one, zero = np.full(3, 255.0, np.float32), np.zeros(3, np.float32)
    for cls, params in (("stripes", p), ("checker", q)):
        (mask, fill), *_ = _layers(cls, params, pose, one, zero)
        patch = fill[..., 0][int(pose.cy) - 12 : int(pose.cy) + 12, int(pose.cx) - 12 : int(pose.cx) + 12]
        along_rows = np.abs(np.diff(patch, axis=0)).mean()  # pattern angle 0: stripes change along x
        assert (along_rows < 1.0) == (cls == "stripes"), (cls, along_rows)


def test_objects_fill_most_of_the_image_and_stay_inside_it() -> None:
    """Large enough for a small network at 48 px to see the details; never cut by the border."""
    size = 96
    for i in range(300):
        v = _View(size, np.random.default_rng(i), 1.0)
        assert 0.30 <= v.radius / size <= 0.42
        assert v.radius <= min(v.cx, v.cy) and max(v.cx, v.cy) + v.radius <= size


def test_raw_pixels_are_a_poor_cue(tmp_path: Path) -> None:
    """A raw-pixel 1-NN classifier over held-out objects stays far from perfect (chance is 1/8)."""
    s = SynthObjects(0, 48)
    classes = OBJECT_CLASSES[:8]
    feats, labels, objs = [], [], []
    for ci, cls in enumerate(classes):
        for obj in range(6):
            for view in range(2):
                x = cv2.resize(s.image(cls, obj, view), (24, 24), interpolation=cv2.INTER_AREA)
                feats.append(x.astype(np.float32).ravel())
                labels.append(ci)
                objs.append(obj)
    x = np.array(feats)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    y, o = np.array(labels), np.array(objs)
    test = o >= 4  # objects 4 and 5 of every class are held out
    nearest = np.argmax(x[test] @ x[~test].T, axis=1)
    acc = float((y[~test][nearest] == y[test]).mean())
    assert acc < 0.5, acc


def test_write_objects_layout_manifest_and_guard(tmp_path: Path) -> None:
    out = tmp_path / "objects"
    summary = write_objects(out, classes=3, ids_per_class=3, views=2, size=40, seed=1)
    names = list(OBJECT_CLASSES[:3])
    assert summary["images"] == 18 and summary["classes"] == names
    assert sorted(p.name for p in out.iterdir()) == sorted([*names, "objects.json"])
    assert sorted(p.name for p in (out / "star").iterdir()) == [
        f"star{i:03d}_{v}.jpg" for i in range(3) for v in (1, 2)
    ]
    assert json.loads((out / "objects.json").read_text())["params"]["seed"] == 1
    img = cv2.imread(str(out / "ring" / "ring002_2.jpg"))
    assert img.shape == (40, 40, 3)
    layout, groups = scan_folder(out)
    assert (
        layout == "class"
        and len(groups) == 9
        and groups["ring/ring002"] == ["ring/ring002_1.jpg", "ring/ring002_2.jpg"]
    )
    split = make_split(out, ratios=(0.34, 0.33, 0.33))
    assert split.classes == sorted(names) and all(
        split.counts()["splits"][n]["classes"] == 3 for n in split.splits
    )
    # the same parameters: nothing rewritten; others: refused; --overwrite: replaced
    stamp = (out / "star" / "star000_1.jpg").stat().st_mtime_ns
    assert write_objects(out, classes=3, ids_per_class=3, views=2, size=40, seed=1) == summary
    assert (out / "star" / "star000_1.jpg").stat().st_mtime_ns == stamp
    with pytest.raises(
        FaceforgeError, match=r"holds a SynthObjects set made with other parameters \(views 2 -> 1\)"
    ):
        write_objects(out, classes=3, ids_per_class=3, views=1, size=40, seed=1)
    write_objects(out, classes=2, ids_per_class=2, views=1, size=40, seed=1, overwrite=True)
    assert sorted(p.name for p in out.iterdir()) == ["objects.json", "ring", "star"]
    assert len(list(out.rglob("*.jpg"))) == 4
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(FaceforgeError, match="is not empty and was not written by `faceforge data synth`"):
        write_objects(tmp_path / "mine", classes=1, ids_per_class=1, views=1, size=40)
    with pytest.raises(FaceforgeError, match="SynthObjects did not write"):
        write_objects(tmp_path / "mine", classes=1, ids_per_class=1, views=1, size=40, overwrite=True)
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"
    with pytest.raises(FaceforgeError, match=r"classes=11 \(--classes\) must be between 1 and 10"):
        write_objects(tmp_path / "new", classes=11)
