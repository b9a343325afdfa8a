"""SynthFaces: determinism, landmark correctness, data set layout, hardness for raw pixels."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from faceforge.data.pairs import read_pairs
from faceforge.data.synth import ARCFACE_112, SynthFaces, write_dataset
from faceforge.data.synth.render import umeyama_similarity


def test_render_is_deterministic_per_seed() -> None:
    a = SynthFaces(seed=3).image(5, 7)
    b = SynthFaces(seed=3).image(5, 7)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    # Another image, identity or seed gives another picture.
    assert not np.array_equal(a[0], SynthFaces(seed=3).image(5, 8)[0])
    assert not np.array_equal(a[0], SynthFaces(seed=3).image(6, 7)[0])
    assert not np.array_equal(a[0], SynthFaces(seed=4).image(5, 7)[0])


def test_render_does_not_depend_on_call_order() -> None:
    s1, s2 = SynthFaces(seed=1), SynthFaces(seed=1)
    first = s1.image(2, 0)[0]
    for k in range(5):
        s2.image(k, 3)
    assert np.array_equal(first, s2.image(2, 0)[0])


@pytest.mark.parametrize("mode", ["aligned", "wild"])
def test_landmarks_hit_the_rendered_features(mode: str) -> None:
    """A dot drawn at each returned landmark lands within 1 px of the feature the renderer drew.

    The part map is drawn by the same projection and draw calls as the image, with each landmark
    feature (pupils, nose-tip highlight, mouth-corner dots) labelled; its centroid is the feature's
    rendered position.
    """
    synth = SynthFaces(seed=11, mode=mode)
    worst = 0.0
    for ident in range(12):
        for idx in range(3):
            parts, lms = synth.image(ident, idx, part_map=True)
            for k in range(5):
                ys, xs = np.nonzero(parts == k + 1)
                assert len(xs) > 0, f"feature {k} was not drawn"
                # The dot: a 1-px-radius disc at the landmark, drawn with sub-pixel precision.
                dot = np.zeros_like(parts)
                centre = (round(lms[k, 0] * 16), round(lms[k, 1] * 16))
                cv2.circle(dot, centre, 16, 1, -1, cv2.LINE_8, 4)
                dys, dxs = np.nonzero(dot)
                err = float(np.hypot(xs.mean() - dxs.mean(), ys.mean() - dys.mean()))
                worst = max(worst, err)
                assert err <= 1.0, f"{mode} id {ident} img {idx} landmark {k}: {err:.2f} px off"
    assert worst > 0.0  # the check measured something


def test_aligned_landmarks_sit_near_the_arcface_template() -> None:
    synth = SynthFaces(seed=0)
    errs = []
    for i in range(20):
        _, lms = synth.image(i, 0)
        errs.append(np.linalg.norm(lms - ARCFACE_112, axis=1).mean())
    # Alignment jitter and identity geometry move them a few pixels, never far.
    assert 0.5 < np.mean(errs) < 8.0


def test_umeyama_recovers_a_similarity() -> None:
    rng = np.random.default_rng(0)
    src = rng.uniform(0, 100, (5, 2))
    ang, s, t = 0.3, 1.7, np.array([4.0, -2.0])
    r = s * np.array([[np.cos(ang), -np.sin(ang)], [np.sin(ang), np.cos(ang)]])
    m = umeyama_similarity(src, src @ r.T + t)
    assert np.allclose(m[:, :2], r, atol=1e-9) and np.allclose(m[:, 2], t, atol=1e-9)


def test_difficulty_zero_is_a_clean_frontal_face() -> None:
    clean = SynthFaces(seed=0, difficulty=0.0)
    _, la = clean.image(1, 0)
    _, lb = clean.image(1, 1)
    # Without nuisances only the background changes: the landmarks are identical.
    assert np.allclose(la, lb)


def test_write_dataset_layout_and_reuse(tmp_path) -> None:
    out = tmp_path / "sf"
    s = write_dataset(
        out, identities=4, images_per_id=3, val_identities=0, test_identities=20, workers=1, progress=False
    )
    assert s["images"] == (4 + 20) * 3
    assert len(list((out / "train").iterdir())) == 4
    assert sorted(p.name for p in (out / "train" / "id00000").iterdir()) == [
        f"id00000_000{k}.jpg" for k in (1, 2, 3)
    ]
    rows = (out / "landmarks.csv").read_text().splitlines()
    assert rows[0].startswith("path,x1,y1") and len(rows) == 1 + s["images"]
    pairs = read_pairs(out / "test_pairs.txt")
    assert pairs.n_folds == 10 and pairs.issame.sum() == len(pairs) // 2
    # Folds are identity-disjoint, as in LFW.
    ids_per_fold = [
        {
            p.split("/")[-2]
            for f, a, b in zip(pairs.folds, pairs.paths_a, pairs.paths_b)
            if f == k
            for p in (a, b)
        }
        for k in range(10)
    ]
    for i in range(10):
        for j in range(i + 1, 10):
            assert not ids_per_fold[i] & ids_per_fold[j]
    # Re-running with the same parameters does not rewrite anything.
    mtime = (out / "synthfaces.json").stat().st_mtime_ns
    write_dataset(
        out, identities=4, images_per_id=3, val_identities=0, test_identities=20, workers=1, progress=False
    )
    assert (out / "synthfaces.json").stat().st_mtime_ns == mtime
    assert json.loads((out / "synthfaces.json").read_text())["params"]["identities"] == 4


def test_written_landmarks_match_the_renderer(tmp_path) -> None:
    out = tmp_path / "sf"
    write_dataset(
        out,
        identities=2,
        images_per_id=2,
        val_identities=0,
        test_identities=0,
        workers=1,
        progress=False,
        seed=5,
    )
    row = (out / "landmarks.csv").read_text().splitlines()[1].split(",")
    _, lms = SynthFaces(seed=5).image(0, 0)
    assert row[0] == "train/id00000/id00000_0001.jpg"
    assert np.allclose(np.array(row[1:], float).reshape(5, 2), lms, atol=1e-3)


def test_raw_pixels_cannot_tell_identities_apart() -> None:
    """Same-identity images are barely closer in pixel space than different identities."""
    synth = SynthFaces(seed=0)
    feats = {}
    for i in range(12):
        for k in range(4):
            x = synth.image(i, k)[0].astype(np.float32).ravel()
            x -= x.mean()
            feats[i, k] = x / np.linalg.norm(x)
    same = [feats[i, a] @ feats[i, b] for i in range(12) for a in range(4) for b in range(a + 1, 4)]
    diff = [feats[i, 0] @ feats[j, 1] for i in range(12) for j in range(12) if i != j]
    # The two distributions overlap heavily: the gap is a fraction of their spread.
    gap = np.mean(same) - np.mean(diff)
    assert gap < 0.5 * np.std(np.concatenate([same, diff]))


def test_closed_form_similarity_equals_svd_umeyama() -> None:
    """The closed form equals the general SVD solution of Umeyama's least squares."""
    rng = np.random.default_rng(1)
    for _ in range(20):
        src = rng.uniform(0, 250, (5, 2))
        dst = ARCFACE_112 + rng.normal(0, 3, (5, 2))
        ms, md = src.mean(0), dst.mean(0)
        cov = (dst - md).T @ (src - ms) / 5
        u, sig, vt = np.linalg.svd(cov)
        e = np.array([1.0, np.sign(np.linalg.det(u) * np.linalg.det(vt))])
        r = u @ np.diag(e) @ vt
        scale = (sig * e).sum() / (((src - ms) ** 2).sum() / 5)
        expected = np.concatenate([scale * r, (md - scale * r @ ms)[:, None]], 1)
        assert np.allclose(umeyama_similarity(src, dst), expected, atol=1e-9)
