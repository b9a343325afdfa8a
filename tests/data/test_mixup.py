"""Identity mixup (SynFace): mixed v2 identities interpolate their parents, the writer records their
soft labels, and the mixup CSV reader refuses what it cannot trust with one line naming the problem."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from faceforge.data import mixup
from faceforge.data.mixup import MixupFolderDataset, read_mixup_csv
from faceforge.data.synth import write_dataset
from faceforge.data.synth.head3d import mix_identities, sample_identity2
from faceforge.data.synth.render_v2 import SynthFacesV2
from faceforge.errors import FaceforgeError

A = sample_identity2(np.random.default_rng(1))
B = sample_identity2(np.random.default_rng(2))


def _same(x: object, y: object) -> bool:
    return bool(np.array_equal(x, y)) if isinstance(x, np.ndarray) else x == y


def test_mixing_interpolates_amounts_and_keeps_the_dominant_choices() -> None:
    m = mix_identities(A, B, 0.7)
    assert m.jaw_w == pytest.approx(0.7 * A.jaw_w + 0.3 * B.jaw_w)
    assert m.melanin == pytest.approx(0.7 * A.melanin + 0.3 * B.melanin)
    np.testing.assert_allclose(m.hair_colour, 0.7 * A.hair_colour + 0.3 * B.hair_colour)
    for name in ("hair_style", "beard", "glasses_style", "freckles", "tex_seed"):
        assert getattr(m, name) == getattr(A, name)
    assert mix_identities(A, B, 0.3).hair_style == B.hair_style  # b dominates below 0.5
    for f in dataclasses.fields(A):  # the end points are the parents themselves
        assert _same(getattr(mix_identities(A, B, 1.0), f.name), getattr(A, f.name)), f.name
        assert _same(getattr(mix_identities(A, B, 0.0), f.name), getattr(B, f.name)), f.name
    with pytest.raises(ValueError, match="in \\[0, 1\\]"):
        mix_identities(A, B, 1.2)


def test_mixed_images_are_deterministic_and_neither_parent() -> None:
    s = SynthFacesV2(seed=3)
    a, b, phi = s.mixup(5, 40)
    assert a != b and 0 <= a < 40 and 0 <= b < 40 and 0.5 <= phi < 1.0
    assert (a, b, phi) == SynthFacesV2(seed=3).mixup(5, 40)
    img, lms = s.mixed_image(5, 0, 40)
    img2, lms2 = SynthFacesV2(seed=3).mixed_image(5, 0, 40)
    assert np.array_equal(img, img2) and np.array_equal(lms, lms2)
    assert img.shape == (112, 112, 3) and lms.shape == (5, 2)
    head = s.head(-1 - 5).ident
    assert head.jaw_w == pytest.approx(phi * s.identity(a).jaw_w + (1 - phi) * s.identity(b).jaw_w)


def test_writer_records_mixed_identities_and_their_soft_labels(tmp_path: Path) -> None:
    out = tmp_path / "s"
    summary = write_dataset(out, identities=5, images_per_id=2, val_identities=0, test_identities=0,
                            version=2, mixup_identities=3, workers=1, progress=False)  # fmt: skip
    assert summary["params"]["mixup_identities"] == 3 and summary["images"] == 5 * 2 + 3 * 2
    rows = (out / "train_mix.csv").read_text().splitlines()
    assert rows[0] == "name,a,b,phi" and len(rows) == 4
    s = SynthFacesV2(seed=0)
    for m, row in enumerate(rows[1:]):
        name, ca, cb, phi = row.split(",")
        a, b, w = s.mixup(m, 5)
        assert (name, ca, cb) == (f"mix{m:05d}", f"id{a:05d}", f"id{b:05d}") and float(phi) == w
        assert sorted(p.name for p in (out / "train_mix").glob(f"{name}_*")) == [
            f"{name}_0001.jpg",
            f"{name}_0002.jpg",
        ]
    assert sum(1 for r in (out / "landmarks.csv").read_text().splitlines() if r.startswith("train_mix/")) == 6
    # the same folder asked for without mixup names the parameter that differs
    with pytest.raises(FaceforgeError, match="mixup_identities 3 -> 0"):
        write_dataset(out, identities=5, images_per_id=2, val_identities=0, test_identities=0, version=2,
                      workers=1, progress=False)  # fmt: skip
    ds = MixupFolderDataset(out / "train", out / "train_mix.csv", size=32, cache=True)
    assert ds.num_classes == 5 and len(ds) == 16
    assert sorted(set(ds.labels.tolist())) == [0, 1, 2, 3, 4, 5, 6, 7]
    assert ds.mixup.a.tolist() == [s.mixup(m, 5)[0] for m in range(3)]


def test_mixup_needs_v2_and_two_identities(tmp_path: Path) -> None:
    with pytest.raises(FaceforgeError, match="only with version 2"):
        write_dataset(tmp_path / "a", identities=5, images_per_id=2, val_identities=0, test_identities=0,
                      mixup_identities=2, workers=1)  # fmt: skip
    with pytest.raises(FaceforgeError, match="at least 2"):
        write_dataset(tmp_path / "b", identities=1, images_per_id=2, val_identities=0, test_identities=0,
                      version=2, mixup_identities=2, workers=1)  # fmt: skip


CLASSES = ["id00000", "id00001", "id00002"]


@pytest.mark.parametrize(
    "text, match",
    [
        ("name,a,b\n", "line 1 must be the header"),
        ("name,a,b,phi\nm1,id00000,id00009,0.7\n", "line 2: class 'id00009' is not a training identity"),
        ("name,a,b,phi\nm1,id00000,id00001,1.5\n", "line 2: phi '1.5' must be a number in \\[0, 1\\]"),
        ("name,a,b,phi\nm1,id00000,id00001,nan\n", "phi 'nan'"),
        ("name,a,b,phi\nm1,id00000,id00001,0.6\nm1,id00001,id00002,0.6\n", "line 3: name 'm1' repeats"),
        ("name,a,b,phi\n../x,id00000,id00001,0.6\n", "name '../x' is not a plain file-name stem"),
        ("name,a,b,phi\nm1,id00000,0.6\n", "line 2: expected 4 fields"),
        ("name,a,b,phi\n", "lists no mixed identity"),
    ],
)
def test_bad_mixup_csv_is_named(tmp_path: Path, text: str, match: str) -> None:
    p = tmp_path / "train_mix.csv"
    p.write_text(text)
    with pytest.raises(FaceforgeError, match=match) as e:
        read_mixup_csv(p, CLASSES)
    assert str(p) in str(e.value) and "\n" not in str(e.value)


def test_mixup_csv_size_is_bounded_before_reading(tmp_path: Path, monkeypatch) -> None:
    p = tmp_path / "train_mix.csv"
    p.write_text("name,a,b,phi\n" + "m1,id00000,id00001,0.6\n" * 10)
    monkeypatch.setattr(mixup, "MAX_CSV_BYTES", 100)
    with pytest.raises(FaceforgeError, match="expected at most 100"):
        read_mixup_csv(p, CLASSES)


def test_mixed_identity_without_images_is_an_error(tmp_path: Path) -> None:
    out = tmp_path / "s"
    write_dataset(out, identities=3, images_per_id=2, val_identities=0, test_identities=0, version=2,
                  mixup_identities=2, workers=1, progress=False)  # fmt: skip
    for f in (out / "train_mix").glob("mix00001_*"):
        f.unlink()
    with pytest.raises(FaceforgeError, match=r"1 mixed identities .* have no image .*'mix00001'"):
        MixupFolderDataset(out / "train", out / "train_mix.csv", size=32)
    json.loads((out / "synthfaces.json").read_text())  # the set itself is intact
