"""Templates, Umeyama similarity and warp: reference vectors, template rules, pixel convention."""

from __future__ import annotations

import json
import math

import cv2
import numpy as np
import pytest

from faceforge.align import align_face, get_template, similarity_matrix, transform_points, warp
from faceforge.align.transform import estimate_similarity
from faceforge.errors import FaceforgeError

SIZES = {"112": 112, "128": 128, "96x112": (96, 112), "224": 224}


def test_reference_vectors(shared_dir):
    ref = json.loads((shared_dir / "reference/vectors/alignment.json").read_text())
    np.testing.assert_array_equal(
        get_template("arcface", 112), np.array(ref["arcface_template_112_float32_exact"])
    )
    n = 0
    for case in ref["cases"]:
        src = np.array(case["src_landmarks"])
        for key, t in case["transforms"].items():
            size = SIZES[key]
            assert tuple(t["output_size_wh"]) == parse_wh(size)
            np.testing.assert_allclose(get_template("arcface", size), t["dst_template"], atol=1e-6, rtol=0)
            m = similarity_matrix(src, "arcface", size)
            np.testing.assert_allclose(m, t["M"], atol=1e-6, rtol=0)
            mapped = transform_points(src, m)
            np.testing.assert_allclose(mapped, t["mapped_src"], atol=1e-6, rtol=0)
            rms = math.sqrt(((mapped - np.array(t["dst_template"])) ** 2).sum(1).mean())
            assert rms == pytest.approx(t["rms_residual_px"], abs=1e-6)
            assert math.hypot(m[0, 0], m[1, 0]) == pytest.approx(t["scale"], abs=1e-9)
            assert math.atan2(m[1, 0], m[0, 0]) == pytest.approx(t["rotation_rad"], abs=1e-9)
            n += 1
    assert n == 20


def parse_wh(size):
    return (size, size) if isinstance(size, int) else size


def test_template_rules():
    t112 = get_template("arcface", 112).astype(np.float64)
    np.testing.assert_allclose(get_template("arcface", 224), t112 * 2)
    t256 = get_template("arcface", 256)
    np.testing.assert_allclose(t256[:, 1], t112[:, 1] * 2, atol=1e-4)
    np.testing.assert_allclose(t256[:, 0], t112[:, 0] * 2 + 16, atol=1e-4)
    # Divisible by both 112 and 128: insightface's 112 rule wins (no offset).
    np.testing.assert_allclose(get_template("arcface", 896), t112 * 8, atol=1e-4)
    np.testing.assert_allclose(get_template("arcface", (96, 112)), t112 - [8, 0], atol=1e-5)
    np.testing.assert_allclose(get_template("arcface", "96x112"), t112 - [8, 0], atol=1e-5)
    d = get_template("dlib", 150)
    assert d.shape == (5, 2) and d[0, 0] < d[1, 0] and d[0, 1] < d[2, 1] < d[3, 1]
    assert abs(d[:, 0].mean() - 75) < 3  # roughly centred in the 150 px chip
    custom = np.arange(10.0).reshape(5, 2)
    np.testing.assert_array_equal(get_template(custom), custom)


@pytest.mark.parametrize(
    "bad",
    [
        lambda: get_template("arcfce"),
        lambda: get_template("arcface", (100, 80)),
        lambda: get_template(np.ones(3)),
    ],
)
def test_template_errors(bad):
    with pytest.raises(FaceforgeError):
        bad()


def test_did_you_mean():
    with pytest.raises(FaceforgeError, match="did you mean 'arcface'"):
        get_template("arcfase")


def test_exact_similarity_is_recovered():
    rng = np.random.default_rng(0)
    dst = get_template("arcface", 112).astype(np.float64)
    for _ in range(10):
        s, a = rng.uniform(0.3, 3), rng.uniform(-math.pi, math.pi)
        r = s * np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
        t = rng.uniform(-100, 100, 2)
        src = (dst - t) @ np.linalg.inv(r).T  # so that r @ src + t == dst
        m = similarity_matrix(src)
        np.testing.assert_allclose(m[:, :2], r, atol=1e-9)
        np.testing.assert_allclose(transform_points(src, m), dst, atol=1e-9)


def test_no_reflection():
    dst = get_template("arcface", 112).astype(np.float64)
    mirrored = dst * [-1, 1]
    m = estimate_similarity(mirrored, dst)
    assert np.linalg.det(m[:, :2]) > 0


def test_degenerate_landmarks():
    with pytest.raises(FaceforgeError, match="one point"):
        similarity_matrix(np.ones((5, 2)))
    with pytest.raises(FaceforgeError, match=r"\[5, 2\]"):
        similarity_matrix(np.ones((4, 2)))
    with pytest.raises(FaceforgeError, match="NaN"):
        similarity_matrix(np.full((5, 2), np.nan))


def test_warp_pixel_convention():
    # A single bright pixel at (x=40, y=30) must land at M·(40, 30) in the crop.
    img = np.zeros((100, 120), np.uint8)
    img[30, 40] = 255
    m = np.array([[1.0, 0, 5], [0, 1.0, -3]])
    out = warp(img, m, (64, 48))
    assert out.shape == (48, 64)
    ys, xs = np.nonzero(out == 255)
    assert (xs[0], ys[0]) == (45, 27)
    # Outside the source is black (constant 0 border).
    out = warp(np.full((10, 10, 3), 200, np.uint8), np.eye(2, 3), 20)
    assert out[15, 15].tolist() == [0, 0, 0] and out[5, 5].tolist() == [200, 200, 200]


def test_warp_errors():
    with pytest.raises(FaceforgeError):
        warp(np.zeros((10, 10)), np.eye(3), 112)


def test_synthfaces_landmarks_land_on_crop():
    """Ground-truth landmarks of wild scenes: the warped landmark features sit where M puts them.

    The renderer draws pupils, nose tip and mouth corners as labelled parts; after warping the part
    map with M, each part's centroid must be within 0.5 px rms of M·landmark (same pixel
    convention), and M·landmarks close to the ArcFace template (pose and face shape make the
    residual a few pixels; a swapped point order gives > 15 px).
    """
    from faceforge.data.synth.render import SynthFaces

    sf = SynthFaces(seed=11, mode="wild", difficulty=0.5)
    tmpl = get_template("arcface", 112)
    errs, resid = [], []
    for ident in range(12):
        parts, lms = sf.image(ident, 0, part_map=True)
        m = similarity_matrix(lms, "arcface", 112)
        crop = cv2.warpAffine(parts, m, (112, 112), flags=cv2.INTER_NEAREST)
        mapped = transform_points(lms, m)
        for p in range(5):
            ys, xs = np.nonzero(crop == p + 1)
            if len(xs) >= 3:
                errs.append((xs.mean() - mapped[p, 0]) ** 2 + (ys.mean() - mapped[p, 1]) ** 2)
        resid.append(math.sqrt(((mapped - tmpl) ** 2).sum(1).mean()))
        rgb, _ = sf.image(ident, 0)
        assert align_face(rgb, lms).shape == (112, 112, 3)
    assert len(errs) >= 30
    assert math.sqrt(np.mean(errs)) < 0.5
    assert np.median(resid) < 8.0
    swapped = similarity_matrix(lms[[1, 0, 2, 4, 3]])
    assert math.sqrt(((transform_points(lms[[1, 0, 2, 4, 3]], swapped) - tmpl) ** 2).sum(1).mean()) > 15
