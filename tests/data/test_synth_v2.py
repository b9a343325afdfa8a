"""SynthFaces v2 (3-D heads): landmarks on the rendered features, determinism, single-attribute
overrides, the DigiFace-style augmentations, v1 unchanged, and no shipped image or model data."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from faceforge.align.transform import estimate_similarity
from faceforge.data.synth import ARCFACE_112, SynthFaces, write_dataset
from faceforge.data.synth.head3d import EXPRESSIONS2, Head, sample_identity2
from faceforge.data.synth.render_v2 import SynthFacesV2, render2, sample_variation2
from faceforge.data.transforms import build_transforms


@pytest.fixture(scope="module")
def synth() -> SynthFacesV2:
    return SynthFacesV2(seed=11)


def test_v2_is_deterministic_per_seed() -> None:
    a = SynthFaces(seed=3, version=2).image(5, 7)
    b = SynthFaces(seed=3, version=2).image(5, 7)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    assert a[0].shape == (112, 112, 3) and a[0].dtype == np.uint8 and a[1].shape == (5, 2)
    assert not np.array_equal(a[0], SynthFaces(seed=3, version=2).image(5, 8)[0])
    assert not np.array_equal(a[0], SynthFaces(seed=3, version=2).image(6, 7)[0])
    assert not np.array_equal(a[0], SynthFaces(seed=4, version=2).image(5, 7)[0])


def test_v2_does_not_depend_on_call_order_or_cache() -> None:
    s1, s2 = SynthFacesV2(seed=1), SynthFacesV2(seed=1)
    first = s1.image(2, 0)[0]
    for k in range(4):
        s2.image(k, 3)
    assert np.array_equal(first, s2.image(2, 0)[0])
    # A head rebuilt from its identity renders the same image.
    var = s1.variation(2, 0)
    again = render2(Head(s1.identity(2)), var)[0]
    assert np.array_equal(first, again)


def test_v2_landmarks_hit_the_rendered_features() -> None:
    """The centroid of each rendered landmark feature lies within 1 px (of a 112 crop) of the landmark.

    ``part_map`` renders, through the same projection and visibility buffer as the image, the
    surface whose texture point lies within a small disc round each landmark's texture point (the
    pupil centre, nose tip, mouth corners); the disc's centroid on screen is where the renderer drew
    the feature. Rendered at 448 px (the template scales with the size) so each feature covers
    enough pixels to locate; errors are reported in 112-px units. The mouth is held open so the
    corners' band between the lips is visible. A feature drawn with fewer than 10 pixels (a full disc
    covers 50-70 here) is mostly hidden behind the lips or the nose: the centroid of its visible
    sliver is not its centre, so it is not counted (9 of 148). Worst case measured: 0.85 px.
    """
    synth = SynthFacesV2(seed=11, size=448)
    worst, checked = 0.0, 0
    for ident in range(10):
        for idx in range(3):
            parts, lms, info = synth.image_info(ident, idx, part_map=True, mouth_open=0.8)
            for k in range(5):
                if not info["visible"][k]:
                    continue
                ys, xs = np.nonzero(parts == k + 1)
                assert len(xs) > 0, f"id {ident} img {idx}: visible landmark {k} was not drawn"
                if len(xs) < 10:
                    continue
                err = float(np.hypot(xs.mean() - lms[k, 0], ys.mean() - lms[k, 1])) * 112 / 448
                worst = max(worst, err)
                checked += 1
                assert err <= 1.0, f"id {ident} img {idx} landmark {k}: {err:.2f} px off"
    assert checked >= 130 and worst > 0.0


def test_v2_aligned_landmarks_sit_near_the_arcface_template(synth: SynthFacesV2) -> None:
    errs = [np.linalg.norm(synth.image(i, 0)[1] - ARCFACE_112, axis=1).mean() for i in range(12)]
    # Detector noise, pose and identity move them a few pixels, never far.
    assert 0.3 < np.mean(errs) < 8.0


def test_v2_alignment_is_the_one_real_photos_get(synth: SynthFacesV2) -> None:
    """The renderer's similarity is faceforge.align's Umeyama estimate of the same 5 points, to ArcFace's
    template shifted by a detector's mean offset (the framing a detected photo gets)."""
    from faceforge.data.synth.render_v2 import ALIGN_TEMPLATE_112, SCRFD_OFFSET_64

    _, lms, info = synth.image_info(3, 1, lm_jitter=np.zeros((5, 2)))
    lm_cam = (lms - info["matrix"][:, 2]) @ np.linalg.inv(info["matrix"][:, :2]).T  # camera plane
    m = estimate_similarity(lm_cam, ALIGN_TEMPLATE_112)
    assert np.allclose(m, info["matrix"], atol=1e-6)
    assert np.allclose(lms, ARCFACE_112, atol=8)
    # the nose target sits lower, as the detector's nose point sits higher on the face
    shift = ALIGN_TEMPLATE_112 - ARCFACE_112
    assert np.allclose(shift, -SCRFD_OFFSET_64 * 112 / 64, atol=1e-4) and shift[2, 1] > 3.0


def _fields_equal(a: object, b: object, skip: set[str]) -> list[str]:
    changed = []
    for f in dataclasses.fields(a):  # type: ignore[arg-type]
        if f.name in skip:
            continue
        va, vb = getattr(a, f.name), getattr(b, f.name)
        if not np.array_equal(np.asarray(va), np.asarray(vb)):
            changed.append(f.name)
    return changed


@pytest.mark.parametrize(
    ("overrides", "id_fields", "var_fields"),
    [
        ({"skin": 2.0}, {"melanin", "lip_colour"}, set()),
        ({"glasses": True, "sunglasses": False}, set(), {"glasses", "sunglasses"}),
        ({"pose": (30.0, -10.0)}, set(), {"yaw", "pitch"}),
        ({"lighting": 5}, set(), {"lights", "ambient", "spec_gain"}),
        ({"smile": 1.0, "mouth_open": 0.5}, set(), {"expr"}),
        ({"hat": True}, set(), {"hat"}),
    ],
)
def test_v2_overrides_change_only_the_requested_attribute(
    synth: SynthFacesV2, overrides: dict, id_fields: set[str], var_fields: set[str]
) -> None:
    base_img, base_lms, base = synth.image_info(4, 2)
    img, lms, info = synth.image_info(4, 2, **overrides)
    assert _fields_equal(base["identity"], info["identity"], id_fields) == []
    assert _fields_equal(base["variation"], info["variation"], var_fields) == []
    assert not np.array_equal(img, base_img)
    if "pose" not in overrides and "smile" not in overrides and "hat" not in overrides:
        # Geometry unchanged: the same landmarks, the same background round the head.
        assert np.allclose(lms, base_lms)
        corner = (slice(0, 6), slice(0, 6))
        assert np.abs(img[corner].astype(int) - base_img[corner].astype(int)).max() <= 1


def test_v2_expression_moves_the_mouth_more_than_the_eyes(synth: SynthFacesV2) -> None:
    neutral = {name: 0.0 for name in EXPRESSIONS2}
    *_, ia = synth.image_info(6, 0, **neutral, lm_jitter=np.zeros((5, 2)))
    *_, ib = synth.image_info(6, 0, **{**neutral, "smile": 1.0}, lm_jitter=np.zeros((5, 2)))
    d3 = np.linalg.norm(ib["landmarks3d"] - ia["landmarks3d"], axis=1)
    assert d3[3:].min() > 0.02 and d3[:3].max() < 0.005


def test_v2_unknown_override_is_an_error(synth: SynthFacesV2) -> None:
    with pytest.raises(ValueError, match="override"):
        synth.image(0, 0, wings=True)


def test_v2_pose_and_accessory_statistics() -> None:
    """Yaw σ 24° clipped to ±60°, pitch σ 9°; glasses on some identities, hats on a few images."""
    rng = np.random.default_rng(0)
    yaws, pitches, glasses, hats = [], [], [], []
    for _ in range(1500):
        ident = sample_identity2(rng)
        v = sample_variation2(rng, ident)
        yaws.append(np.degrees(v.yaw))
        pitches.append(np.degrees(v.pitch))
        glasses.append(v.glasses)
        hats.append(v.hat)
    assert 20 < np.std(yaws) < 26 and np.abs(yaws).max() <= 60.0
    assert 7.5 < np.std(pitches) < 10.5
    assert 0.08 < np.mean(glasses) < 0.25 and 0.02 < np.mean(hats) < 0.12


def test_written_v2_set_and_cli_flag(tmp_path) -> None:
    from faceforge.cli.main import main

    out = tmp_path / "sf2"
    args = ["data", "synth", "--version", "2", "--identities", "2", "--images-per-id", "2"]
    args += ["--val-identities", "0", "--test-identities", "0", "--workers", "1", "--out", str(out)]
    rc = main(args)
    assert rc == 0
    meta = json.loads((out / "synthfaces.json").read_text())
    assert meta["params"]["version"] == 2 and meta["images"] == 4
    row = (out / "landmarks.csv").read_text().splitlines()[1].split(",")
    _, lms = SynthFaces(seed=0, version=2).image(0, 0)
    assert np.allclose(np.array(row[1:], float).reshape(5, 2), lms, atol=1e-3)


def test_cli_default_is_v2_for_aligned_and_v1_for_wild(tmp_path, monkeypatch) -> None:
    import faceforge.data.synth as synth_pkg
    from faceforge.cli.main import main

    seen: list[dict] = []
    monkeypatch.setattr(synth_pkg, "write_dataset", lambda **kw: seen.append(kw) or {})
    base = ["data", "synth", "--out", str(tmp_path / "x"), "--workers", "1"]
    for extra in ([], ["--version", "1"], ["--mode", "wild"], ["--version", "2"]):
        assert main(base + extra) == 0
    assert [kw.get("version", 1) for kw in seen] == [2, 1, 1, 2]
    assert "version" not in seen[1] and "version" not in seen[2]  # v1 calls exactly as before v2


def test_v1_sets_keep_their_summary(tmp_path) -> None:
    """A v1 set's parameters carry no version key, so folders written before v2 are still reused."""
    s = write_dataset(tmp_path / "v1", identities=2, images_per_id=2, val_identities=0, test_identities=0,
                      workers=1, progress=False)  # fmt: skip
    assert "version" not in s["params"]
    with pytest.raises(Exception, match="aligned"):
        write_dataset(tmp_path / "w", identities=2, images_per_id=2, val_identities=0, test_identities=0,
                      workers=1, mode="wild", version=2)  # fmt: skip


# sha256 prefixes of v1 images (pixels + landmarks rounded to 1e-3), recorded from the v1 renderer
# before v2 existed: v1 output must never change, so earlier results reproduce.
_V1_GOLDEN = {
    ("aligned", 0, 0, 0): "e55d8d9f34c337ca",
    ("aligned", 3, 5, 7): "0ff73aeca0dec370",
    ("aligned", 11, 42, 3): "113cc49b9dddb8c2",
    ("wild", 0, 0, 0): "8993eb576f880eda",
    ("wild", 3, 5, 7): "9ee181d8d34096fc",
    ("wild", 11, 42, 3): "9676f3945d3eab19",
}


@pytest.mark.parametrize("key", sorted(_V1_GOLDEN))
def test_v1_images_are_bit_identical(key: tuple[str, int, int, int]) -> None:
    mode, seed, ident, idx = key
    img, lms = SynthFaces(seed, mode=mode).image(ident, idx)
    h = hashlib.sha256(img.tobytes() + np.round(lms, 3).astype(np.float32).tobytes()).hexdigest()
    assert h[:16] == _V1_GOLDEN[key]
    assert np.array_equal(img, SynthFaces(seed, mode=mode, version=1).image(ident, idx)[0])


def test_v1_overrides_keep_everything_else() -> None:
    s = SynthFaces(seed=2)
    img, lms = s.image(1, 1)
    img2, lms2 = s.image(1, 1, glasses=2)
    assert np.allclose(lms, lms2) and not np.array_equal(img, img2)
    assert np.array_equal(s.image(1, 1)[0], img)  # the cache was not touched
    assert not np.allclose(s.image(1, 1, yaw=20)[1], lms)


def test_digiface_augmentations_keep_type_and_change_pixels() -> None:
    torch.manual_seed(0)
    ops = build_transforms(
        [
            {"name": "gaussian_blur", "sigma": [0.5, 1.5], "p": 1.0},
            {"name": "gaussian_noise", "std": [3, 6], "p": 1.0},
            {"name": "jpeg", "quality": [20, 40], "p": 1.0},
            {"name": "corner_warp", "degrees": 8, "corner": 0.05, "p": 1.0},
        ]
    )
    x = torch.from_numpy(SynthFaces(seed=0, version=2).image(0, 0)[0]).permute(2, 0, 1).contiguous()
    y = ops(x)
    assert y.dtype == torch.uint8 and y.shape == x.shape
    assert (y.float() - x.float()).abs().mean() > 2
    f = ops(x.permute(1, 2, 0).numpy().astype(np.float32) / 255)
    assert f.dtype == np.float32 and 0 <= f.min() and f.max() <= 1
    torch.manual_seed(1)
    a = ops(x)
    torch.manual_seed(1)
    assert torch.equal(a, ops(x))  # seeded like every other transform


#: what the package may ship besides code: the dlib calibration and the verify page
_ALLOWED = {"models/calibrations/dlib.json", "serve/static/index.html", "py.typed"}
_DATA_SUFFIXES = {
    ".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm", ".npy", ".npz",
    ".pt", ".pth", ".ckpt", ".onnx", ".bin", ".dat", ".tflite", ".pb", ".h5", ".safetensors", ".pkl",
    ".pickle", ".rec", ".idx", ".mat", ".params", ".caffemodel", ".obj", ".ply", ".exr", ".hdr",
}  # fmt: skip
_MAGIC = (b"\x89PNG", b"\xff\xd8\xff", b"\x93NUMPY", b"PK\x03\x04", b"GIF8", b"BM")


def test_package_ships_no_images_models_or_face_data() -> None:
    """Faces are made by code alone: the package holds no image, array, model or mesh file, and no
    code file hides one (long base64 or numeric blobs)."""
    root = Path(__file__).resolve().parents[2] / "src" / "faceforge"
    assert root.is_dir()
    blob = re.compile(rb"[A-Za-z0-9+/=]{400,}|(?:-?\d+(?:\.\d+)?, ?){400,}")
    for p in root.rglob("*"):
        if not p.is_file() or "__pycache__" in p.parts:
            continue
        rel = p.relative_to(root).as_posix()
        assert p.suffix.lower() not in _DATA_SUFFIXES, f"{rel}: data or model file inside the package"
        if p.suffix not in (".py",):
            assert rel in _ALLOWED, f"{rel}: unexpected non-code file inside the package"
        head = p.read_bytes()
        assert not any(head.startswith(m) for m in _MAGIC), f"{rel}: binary image/array/archive content"
        assert blob.search(head) is None, f"{rel}: a long embedded data blob"


_SHAPE = ("width", "jaw_w", "eye_dx", "nose_w", "mouth_hw", "brow_dy", "chin_y")
_LOOKS = ("melanin", "hair_style", "hair_colour", "iris", "beard", "tex_seed", "clothes", "age", "masc")


def test_appearance_share_groups_share_looks_not_shape() -> None:
    """With ``appearance_share`` k, identities k*g ... k*g+k-1 share every appearance field and differ
    in head geometry; the next group looks different; k = 1 is the single-stream identity."""
    sf = SynthFacesV2(seed=5, appearance_share=4)
    group = [sf.identity(i) for i in range(8, 12)]
    other = sf.identity(12)
    for f in _LOOKS:
        for g in group[1:]:
            assert np.array_equal(np.asarray(getattr(g, f)), np.asarray(getattr(group[0], f))), f
    assert (
        sum(
            not np.array_equal(np.asarray(getattr(other, f)), np.asarray(getattr(group[0], f)))
            for f in _LOOKS
        )
        >= 5
    )
    for f in _SHAPE:
        assert len({round(float(getattr(g, f)), 9) for g in group}) == 4, f
    alone = SynthFacesV2(seed=5).identity(9)
    direct = sample_identity2(np.random.default_rng([5, 9, 7919, 2]))
    assert all(np.array_equal(np.asarray(getattr(alone, f.name)), np.asarray(getattr(direct, f.name)))
               for f in dataclasses.fields(alone))  # fmt: skip
    with pytest.raises(ValueError, match="appearance_share"):
        SynthFacesV2(appearance_share=0)
    with pytest.raises(ValueError, match="version 2"):
        SynthFaces(appearance_share=2)


def test_written_set_records_appearance_share(tmp_path) -> None:
    from faceforge.errors import FaceforgeError

    meta = write_dataset(tmp_path / "s", identities=4, images_per_id=2, val_identities=0, test_identities=0,
                         workers=1, version=2, appearance_share=2)  # fmt: skip
    assert meta["params"]["appearance_share"] == 2
    with pytest.raises(FaceforgeError, match="appearance_share"):
        write_dataset(tmp_path / "t", identities=4, images_per_id=2, val_identities=0, test_identities=0,
                      workers=1, version=1, appearance_share=2)  # fmt: skip


def test_cli_appearance_share_flag(tmp_path, monkeypatch, capsys) -> None:
    import faceforge.data.synth as synth_pkg
    from faceforge.cli.main import main

    seen: list[dict] = []
    monkeypatch.setattr(synth_pkg, "write_dataset", lambda **kw: seen.append(kw) or {})
    base = ["data", "synth", "--out", str(tmp_path / "x"), "--workers", "1"]
    assert main([*base, "--appearance-share", "4"]) == 0
    assert main(base) == 0
    assert seen[0]["appearance_share"] == 4 and "appearance_share" not in seen[1]
    for extra in (["--version", "1"], ["--mode", "wild"], ["--kind", "objects"]):
        assert main(base + extra + ["--appearance-share", "4"]) != 0
        err = capsys.readouterr().err
        assert "--appearance-share" in err and "Traceback" not in err
    assert len(seen) == 2


def test_a_set_of_the_other_version_is_named_in_the_error(tmp_path) -> None:
    from faceforge.errors import FaceforgeError

    small = {"identities": 2, "images_per_id": 2, "val_identities": 0, "test_identities": 0, "workers": 1}
    write_dataset(tmp_path / "s", version=2, **small)
    with pytest.raises(FaceforgeError, match=r"other parameters \(version 2 -> 1\); pass --overwrite"):
        write_dataset(tmp_path / "s", **small)
    with pytest.raises(FaceforgeError, match=r"\(appearance_share 1 -> 2\)"):
        write_dataset(tmp_path / "s", version=2, appearance_share=2, **small)


def test_quickstart_config_trains_with_the_digiface_recipe() -> None:
    """configs/quickstart.yaml (what the demo trains) carries DIGIFACE_AUGMENT verbatim."""
    from faceforge.data.transforms import DIGIFACE_AUGMENT
    from faceforge.train.config import load_config

    cfg = load_config(str(Path(__file__).resolve().parents[2] / "configs" / "quickstart.yaml"), [])
    assert [dict(a) for a in cfg["data"]["augment"]] == [dict(a) for a in DIGIFACE_AUGMENT]
    assert len(build_transforms(list(DIGIFACE_AUGMENT)).ops) == len(DIGIFACE_AUGMENT)


def test_a_set_from_an_earlier_v2_renderer_is_not_taken_for_this_one(tmp_path) -> None:
    """A v2 folder records the renderer's revision: one written before (no ``renderer`` in its summary,
    or another number) is refused with the revision named, never silently reused."""
    import json

    from faceforge.data.synth.render_v2 import REVISION
    from faceforge.errors import FaceforgeError

    small = {"identities": 2, "images_per_id": 2, "val_identities": 0, "test_identities": 0, "workers": 1}
    out = tmp_path / "s"
    summary = write_dataset(out, version=2, **small)
    assert summary["params"]["renderer"] == REVISION
    assert write_dataset(out, version=2, **small) == summary  # the same renderer: reused as it is
    meta = out / "synthfaces.json"
    old = json.loads(meta.read_text())
    del old["params"]["renderer"]  # as written before the revision was recorded
    meta.write_text(json.dumps(old))
    expected = rf"other parameters \(renderer 1 -> {REVISION}\); pass --overwrite"
    with pytest.raises(FaceforgeError, match=expected):
        write_dataset(out, version=2, **small)
    again = write_dataset(out, version=2, overwrite=True, **small)
    assert again["params"]["renderer"] == REVISION


def test_a_long_tail_adds_few_image_identities_and_keeps_the_head(tmp_path) -> None:
    """``tail_identities`` adds training identities with ``tail_images_per_id`` images, numbered after
    the held-out ones: the head, val and test identities and their images are those of the same call
    without a tail, and the summary and the training folder count both."""
    from faceforge.errors import FaceforgeError

    small = {"identities": 3, "images_per_id": 3, "val_identities": 0, "test_identities": 20, "workers": 1,
             "version": 2, "test_pairs_per_fold": 5}  # fmt: skip
    plain = write_dataset(tmp_path / "plain", **small)
    tailed = write_dataset(tmp_path / "tail", tail_identities=4, tail_images_per_id=2, **small)
    train = tmp_path / "tail" / "train"
    counts = {d.name: len(list(d.glob("*.jpg"))) for d in train.iterdir()}
    assert counts == {**{f"id{i:05d}": 3 for i in range(3)}, **{f"id{i:05d}": 2 for i in range(23, 27)}}
    assert tailed["splits"] == {"train": 7, "val": 0, "test": 20} and plain["splits"]["train"] == 3
    assert tailed["images"] == plain["images"] + 8 and tailed["params"]["tail_identities"] == 4
    assert "tail_identities" not in plain["params"]
    for rel in ("train/id00002/id00002_0003.jpg", "test/id00022/id00022_0001.jpg", "test_pairs.txt"):
        assert (tmp_path / "tail" / rel).read_bytes() == (tmp_path / "plain" / rel).read_bytes(), rel
    lm = (tmp_path / "tail" / "landmarks.csv").read_text()
    assert "train/id00026/id00026_0002.jpg," in lm and "id00026_0003" not in lm
    with pytest.raises(FaceforgeError, match=r"\(tail_identities 0 -> 4"):
        write_dataset(tmp_path / "plain", tail_identities=4, tail_images_per_id=2, **small)
    with pytest.raises(FaceforgeError, match="tail_images_per_id >= 2"):
        write_dataset(tmp_path / "bad", tail_identities=2, tail_images_per_id=1, **small)


def test_cli_tail_flags(tmp_path, monkeypatch, capsys) -> None:
    import faceforge.data.synth as synth_pkg
    from faceforge.cli.main import main

    seen: list[dict] = []
    monkeypatch.setattr(synth_pkg, "write_dataset", lambda **kw: seen.append(kw) or {})
    base = ["data", "synth", "--out", str(tmp_path / "x"), "--workers", "1"]
    assert main([*base, "--tail-identities", "300"]) == 0
    assert main([*base, "--tail-identities", "30", "--tail-images-per-id", "4"]) == 0
    assert main(base) == 0
    assert (seen[0]["tail_identities"], seen[0]["tail_images_per_id"]) == (300, 5)
    assert (seen[1]["tail_identities"], seen[1]["tail_images_per_id"]) == (30, 4)
    assert "tail_identities" not in seen[2]
    for extra in (["--tail-images-per-id", "4"], ["--kind", "objects", "--tail-identities", "3"]):
        assert main(base + extra) != 0
        err = capsys.readouterr().err
        assert "--tail-" in err and "Traceback" not in err
    assert len(seen) == 3


def test_shading_occludes_the_lights_in_the_hollows_only(synth: SynthFacesV2) -> None:
    """``shading={"ao_direct": 1}`` darkens the lights where the relief is hollow (beside the nose at
    the inner eye corners) far more than on the open cheek, never brightens, and at 0 leaves the image
    as it was; for every one of 8 identities, frontal, under one light from above."""
    for i in range(8):
        ident = synth.identity(i)
        var = dataclasses.replace(
            synth.variation(i, 0), yaw=0.0, pitch=0.0, roll=0.0, glasses=False, hat=False, blur=0.0,
            noise=0.0, expr=np.zeros(len(EXPRESSIONS2)), lights=np.array([[0.0, -0.5, 0.866, 0.8, 0.8, 0.8]]),
            ambient=np.full(3, 0.2),
        )  # fmt: skip
        base, lms, _ = render2(ident, var)
        shades = {}
        for share in (0.0, 1.0):
            shades[share] = render2(Head(ident, shading={"ao_direct": share}), var)[0].astype(float)
        assert np.array_equal(shades[0.0], base)
        drop = (shades[0.0] - shades[1.0]).mean(2) / np.maximum(shades[0.0].mean(2), 1.0)
        assert drop.min() >= 0.0  # occluding light never adds any
        iod = float(lms[1, 0] - lms[0, 0])

        def mean_drop(x: float, y: float, d: np.ndarray = drop, r: int = max(1, round(0.08 * iod))) -> float:
            return float(d[round(y) - r : round(y) + r + 1, round(x) - r : round(x) + r + 1].mean())

        inner = np.mean([mean_drop(lms[k, 0] + s * 0.3 * iod, lms[k, 1]) for k, s in ((0, 1), (1, -1))])
        cheek = np.mean(
            [mean_drop(lms[k, 0] - s * 0.15 * iod, lms[k, 1] + 0.5 * iod) for k, s in ((0, 1), (1, -1))]
        )
        assert inner > 0.03 and inner > 2 * cheek, (i, inner, cheek)


def test_renderer_tables_are_arguments_of_the_head_and_the_set() -> None:
    """``SynthFacesV2(look=..., shading=...)`` renders a variant without touching the module: the
    committed tables given explicitly draw the same pixels as none, a changed ``look`` entry changes
    the painted face (darker brows darken the brow band more than the mouth) and leaves the landmarks,
    and an unknown entry or a negative value is refused by name before anything is rendered."""
    from faceforge.data.synth.head3d import FEATURE_LOOK, SHADING

    plain = SynthFacesV2(seed=5, size=64)
    same = SynthFacesV2(seed=5, size=64, look=dict(FEATURE_LOOK), shading=dict(SHADING))
    dark = SynthFacesV2(seed=5, size=64, look={"brow_dark": 0.95, "brow_solid": 1.0})
    assert plain.build(plain.identity(0)).look == dict(FEATURE_LOOK)
    for ident in range(3):
        a, la = plain.image(ident, 0, pose=(0, 0), glasses=False, hat=False)
        b, lb = same.image(ident, 0, pose=(0, 0), glasses=False, hat=False)
        c, lc = dark.image(ident, 0, pose=(0, 0), glasses=False, hat=False)
        assert np.array_equal(a, b) and np.array_equal(la, lb) and np.array_equal(la, lc)
        diff = a.astype(float).mean(2) - c.astype(float).mean(2)  # > 0 where the variant is darker
        iod = float(la[1, 0] - la[0, 0])
        top = int(la[0, 1] - 0.75 * iod)
        brow_band = diff[max(top, 0) : int(la[0, 1] - 0.15 * iod), int(la[0, 0]) - 3 : int(la[1, 0]) + 4]
        mouth = diff[int(la[3, 1]) - 2 : int(la[3, 1]) + 3, int(la[3, 0]) : int(la[4, 0]) + 1]
        assert brow_band.max() > 20 and brow_band.mean() > 3 * max(abs(mouth.mean()), 0.5), ident
    for kw, name in (
        ({"look": {"brow_colour": 1.0}}, "brow_colour"),
        ({"shading": {"ao_max": -1}}, "ao_max"),
    ):
        with pytest.raises(ValueError, match=name):
            SynthFacesV2(seed=5, **kw)


def test_landmark_jitter_moves_the_framing_only() -> None:
    """Since ``REVISION`` 7 crops are aligned by the exact points (``LANDMARK_JITTER`` 0); a set with
    ``landmark_jitter`` draws the same pose, light and background (the same random numbers) and only
    frames the face differently, by about the σ asked for; out-of-range values are refused."""
    from faceforge.data.synth.render_v2 import LANDMARK_JITTER, REVISION

    assert LANDMARK_JITTER == 0.0 and REVISION >= 7
    exact, noisy = SynthFacesV2(seed=3, size=112), SynthFacesV2(seed=3, size=112, landmark_jitter=0.05)
    moved = []
    for ident, index in ((0, 0), (1, 3), (2, 5), (4, 1)):
        a, b = exact.variation(ident, index), noisy.variation(ident, index)
        assert not a.lm_jitter.any() and b.lm_jitter.any()
        assert (a.yaw, a.pitch, a.bg_seed, a.glasses) == (b.yaw, b.pitch, b.bg_seed, b.glasses)
        la, lb = exact.image(ident, index)[1], noisy.image(ident, index)[1]
        iod = float(np.linalg.norm(la[1] - la[0]))
        moved.append(float(np.abs(la - lb).mean()) / iod)
    assert 0.005 < float(np.mean(moved)) < 0.1, moved
    for bad in (-0.01, 0.6, float("nan")):
        with pytest.raises(ValueError, match="landmark_jitter"):
            SynthFacesV2(landmark_jitter=bad)


def test_landmark_jitter_is_recorded_and_checked_by_the_writer_and_the_cli(
    tmp_path, monkeypatch, capsys
) -> None:
    import faceforge.data.synth as synth_pkg
    from faceforge.cli.main import main
    from faceforge.errors import FaceforgeError

    small = {"identities": 2, "images_per_id": 2, "val_identities": 0, "test_identities": 0, "workers": 1}
    assert "landmark_jitter" not in write_dataset(tmp_path / "a", version=2, **small)["params"]
    assert (
        write_dataset(tmp_path / "b", version=2, landmark_jitter=0.025, **small)["params"]["landmark_jitter"]
        == 0.025
    )
    with pytest.raises(FaceforgeError, match=r"\(landmark_jitter None -> 0.025\)"):
        write_dataset(tmp_path / "a", version=2, landmark_jitter=0.025, **small)
    for kw in ({"version": 1, "landmark_jitter": 0.0}, {"version": 2, "landmark_jitter": 0.7}):
        with pytest.raises(FaceforgeError, match="landmark_jitter"):
            write_dataset(tmp_path / "c", **{**small, **kw})
    seen: list[dict] = []
    monkeypatch.setattr(synth_pkg, "write_dataset", lambda **kw: seen.append(kw) or {})
    base = ["data", "synth", "--out", str(tmp_path / "x"), "--workers", "1"]
    assert main([*base, "--landmark-jitter", "0.025"]) == 0 and main(base) == 0
    assert seen[0]["landmark_jitter"] == 0.025 and "landmark_jitter" not in seen[1]
    for extra in (["--version", "1"], ["--kind", "objects"]):
        assert main(base + extra + ["--landmark-jitter", "0.025"]) != 0
        err = capsys.readouterr().err
        assert "--landmark-jitter" in err and "Traceback" not in err
    assert len(seen) == 2
