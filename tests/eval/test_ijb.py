"""IJB-B/C: meta parsing with file:line errors, pooling, 1:1 TAR@FAR, 1:N, the synthetic fixture, the CLI."""

from __future__ import annotations

import hashlib
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from ijb_synth import write_synthetic_ijb

from faceforge.cli.main import main
from faceforge.errors import FaceforgeError
from faceforge.eval import ijb
from faceforge.eval.ijb import (
    _aligned_batch,
    evaluate_ijb,
    evaluate_ijb_features,
    pool_templates,
    read_ijb_meta,
)

N_IDS, T_PER_ID, I_PER_T = 20, 3, 2


@pytest.fixture(scope="module")
def ijb_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("ijb")
    write_synthetic_ijb(root, n_ids=N_IDS, templates_per_id=T_PER_ID, images_per_template=I_PER_T, seed=3)
    return root


@pytest.fixture(scope="module")
def meta(ijb_root):
    return read_ijb_meta(ijb_root, "IJBC")


@pytest.fixture
def broken(ijb_root, tmp_path) -> Path:
    """A private copy of the fixture to damage."""
    dst = tmp_path / "ijb"
    shutil.copytree(ijb_root, dst)
    return dst / "IJBC" / "meta"


def _subject_of_images(meta) -> np.ndarray:
    # The fixture numbers templates ident * T_PER_ID + t + 1.
    return (meta.templates - 1) // T_PER_ID


def _crop_lookup(meta, table: np.ndarray, size: int = 112) -> dict[bytes, np.ndarray]:
    """sha1(aligned crop) -> row of ``table`` for every image and its mirror."""
    crops = _aligned_batch(meta, range(len(meta.image_names)), (size, size), "arcface")
    out = {}
    for i, c in enumerate(crops):
        out[hashlib.sha1(c.numpy().tobytes()).digest()] = table[i]
        out[hashlib.sha1(c.flip(-1).contiguous().numpy().tobytes()).digest()] = table[i]
    return out


def _lookup_embed(lookup):
    def embed(x: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(
            np.stack([lookup[hashlib.sha1(c.contiguous().numpy().tobytes()).digest()] for c in x])
        ).float()

    return embed


# --------------------------------------------------------------------------------------------------
# fixture layout and meta parsing


def test_fixture_layout(ijb_root, meta) -> None:
    d = ijb_root / "IJBC"
    names = {p.name for p in (d / "meta").iterdir()}
    assert names == {
        "ijbc_face_tid_mid.txt", "ijbc_template_pair_label.txt", "ijbc_name_5pts_score.txt",
        "ijbc_1N_gallery_G1.csv", "ijbc_1N_gallery_G2.csv", "ijbc_1N_probe_mixed.csv",
    }  # fmt: skip
    n_t = N_IDS * T_PER_ID
    assert len(meta.image_names) == n_t * I_PER_T == len(list((d / "loose_crop").iterdir()))
    assert len(meta.pair_label) == n_t * (n_t - 1) // 2
    assert int(meta.pair_label.sum()) == N_IDS * T_PER_ID * (T_PER_ID - 1) // 2
    assert meta.landmarks.shape == (len(meta.image_names), 5, 2)
    assert ((meta.faceness >= 0.5) & (meta.faceness <= 1.0)).all()
    first = (d / "meta" / "ijbc_face_tid_mid.txt").read_text().splitlines()[0].split()
    assert first == ["1.jpg", "1", "1"]
    assert (d / "meta" / "ijbc_1N_probe_mixed.csv").read_text().startswith("TEMPLATE_ID,SUBJECT_ID,FILENAME")
    assert set(meta.galleries) == {"G1", "G2"} and len(np.unique(meta.probes[0])) == N_IDS * (T_PER_ID - 1)


def test_alignment_uses_each_images_landmarks(meta) -> None:
    from faceforge.align import align_face
    from faceforge.align.io import read_image

    crops = _aligned_batch(meta, [0, 1], (112, 112), "arcface")  # always RGB (preprocess orders colours)
    assert crops.shape == (2, 3, 112, 112) and crops.dtype == torch.uint8
    img = read_image(meta.image_dir / meta.image_names[0])
    want = align_face(img, meta.landmarks[0], "arcface", 112)
    assert torch.equal(crops[0], torch.from_numpy(want).permute(2, 0, 1))
    other = align_face(img, meta.landmarks[1], "arcface", 112)
    assert not np.array_equal(want, other)


_TID, _PAIRS, _PTS = "ijbc_face_tid_mid.txt", "ijbc_template_pair_label.txt", "ijbc_name_5pts_score.txt"


@pytest.mark.parametrize(
    ("file", "line", "mutate", "message"),
    [
        (_TID, 2, lambda t: t + " extra", r"ijbc_face_tid_mid.txt:2: expected 3 fields"),
        (_TID, 3, lambda t: t.split()[0] + " x7 1", r"ijbc_face_tid_mid.txt:3: template id 'x7'"),
        (_PAIRS, 4, lambda t: t.rsplit(" ", 1)[0] + " 2", r"pair_label.txt:4: label '2'"),
        (_PAIRS, 5, lambda t: "1 9999 0", r"pair_label.txt:5: template 9999 has no image"),
        (_PAIRS, 1, lambda t: "1 2", r"pair_label.txt:1: expected 3 fields"),
        (_PTS, 6, lambda t: t.replace(" ", " nan_", 1), r"5pts_score.txt:6: landmark coordinate"),
        (_PTS, 7, lambda t: "", r"no landmarks for image '7.jpg' \(listed in ijbc_face_tid_mid.txt:7\)"),
        ("ijbc_1N_probe_mixed.csv", 3, lambda t: "1,abc,x", r"probe_mixed.csv:3: SUBJECT_ID 'abc'"),
        ("ijbc_1N_gallery_G1.csv", 1, lambda t: "TID,SID,FILENAME", r"gallery_G1.csv:1: header"),
    ],
)
def test_malformed_meta_names_file_and_line(broken, file, line, mutate, message) -> None:
    f = broken / file
    lines = f.read_text().splitlines()
    lines[line - 1] = mutate(lines[line - 1])
    f.write_text("\n".join(lines) + "\n")
    with pytest.raises(FaceforgeError, match=message):
        read_ijb_meta(broken.parent.parent, "IJBC")


def test_missing_files_are_named(broken) -> None:
    root = broken.parent.parent
    (broken.parent / "loose_crop" / "5.jpg").unlink()
    with pytest.raises(FaceforgeError, match=r"ijbc_face_tid_mid.txt:5: image '5.jpg' does not exist"):
        read_ijb_meta(root, "IJBC")
    read_ijb_meta(root, "IJBC", check_images=False)
    (broken / "ijbc_1N_probe_mixed.csv").unlink()
    with pytest.raises(FaceforgeError, match=r"ijbc_1N_probe_mixed.csv does not exist"):
        read_ijb_meta(root, "IJBC", check_images=False)
    (broken / "ijbc_template_pair_label.txt").unlink()
    with pytest.raises(FaceforgeError, match=r"ijbc_template_pair_label.txt does not exist"):
        read_ijb_meta(root, "IJBC", check_images=False)
    with pytest.raises(FaceforgeError, match=r"did you mean 'IJBC'"):
        read_ijb_meta(root, "IJBX")
    with pytest.raises(FaceforgeError, match=r"IJBB/meta nor"):
        read_ijb_meta(root, "IJBB")


# --------------------------------------------------------------------------------------------------
# pooling and scores


def test_pool_templates_matches_a_plain_loop() -> None:
    rng = np.random.default_rng(1)
    n = 200
    feats = rng.normal(size=(n, 8))
    templates = rng.integers(1, 15, n)
    medias = rng.integers(1, 6, n)
    w = rng.uniform(0.5, 1, n)
    ids, pooled = pool_templates(feats, templates, medias, w)
    assert list(ids) == sorted(set(templates.tolist()))
    for k, t in enumerate(ids):
        sel = templates == t
        total = np.zeros(8)
        for m in np.unique(medias[sel]):
            s2 = sel & (medias == m)
            total += (feats[s2] * w[s2, None]).mean(0)
        assert np.allclose(pooled[k], total / np.linalg.norm(total))


def test_perfect_embedding_scores_one_everywhere(meta) -> None:
    onehot = np.eye(N_IDS, dtype=np.float32)[_subject_of_images(meta)]
    embed = _lookup_embed(_crop_lookup(meta, onehot))
    rows = evaluate_ijb(meta, embed, flip="sum", batch_size=32)
    r11 = rows["IJBC 1:1"]
    n_imp = r11["n_impostor"]
    assert set(r11["tar_at_far"]) == {str(f) for f in ijb.IJB_FARS if f * n_imp >= 1}
    assert len(r11["tar_at_far"]) == 3  # 1710 impostor pairs: 1e-1, 1e-2, 1e-3
    assert all(v == 1.0 for v in r11["tar_at_far"].values()) and r11["auc"] == 1.0
    r1n = rows["IJBC 1:N"]
    assert r1n["rank"]["1"] == 1.0 and r1n["tpir_at_fpir"] == {"0.1": 1.0}
    assert r1n["n_probes"] == N_IDS * (T_PER_ID - 1)


def test_random_embedding_gives_tar_close_to_far(meta) -> None:
    """With random features genuine and impostor scores share one distribution: E[TAR] = k/(n_imp+1)
    where k = floor(FAR·n_imp) impostors are accepted (the threshold is the k-th highest impostor)."""
    rng = np.random.default_rng(0)
    table = rng.normal(size=(len(meta.image_names), 64)).astype(np.float32)
    rows = evaluate_ijb(meta, _lookup_embed(_crop_lookup(meta, table)), flip="none", batch_size=64)
    r = rows["IJBC 1:1"]
    n_gen, n_imp = r["n_genuine"], r["n_impostor"]

    def sigma(m: float, draws: int) -> float:
        # binomial spread of the genuine count plus the spread of the threshold's quantile (Beta)
        return math.sqrt((m * (1 - m) / n_gen + m * (1 - m) / (n_imp + 2)) / draws)

    for f in (0.1, 0.01):
        m = math.floor(f * n_imp) / (n_imp + 1)
        assert abs(r["tar_at_far"][str(f)] - m) <= 4 * sigma(m, 1)
    # Averaged over many random draws the agreement is much tighter.
    draws = 100
    tars = {0.1: [], 0.01: []}
    for _ in range(draws):
        feats = rng.normal(size=(len(meta.image_names), 64))
        res = evaluate_ijb_features(meta, feats, faceness=True)["IJBC 1:1"]
        for f in tars:
            tars[f].append(res["tar_at_far"][str(f)])
    for f, vals in tars.items():
        m = math.floor(f * n_imp) / (n_imp + 1)
        assert abs(np.mean(vals) - m) <= 4 * sigma(m, draws), (f, np.mean(vals), m)


def test_identification_ranks_by_hand() -> None:
    from faceforge.eval.ijb import _identification

    gal = np.eye(3)  # subjects 10, 20, 30
    probes = np.array(
        [
            [0.9, 0.1, 0.0],  # mated 10, rank 1
            [0.6, 0.8, 0.0],  # mated 10, but 20 scores higher: rank 2
            [0.0, 0.0, 1.0],  # mated 30, rank 1
            [0.5, 0.0, 0.0],  # subject 40 is not in the gallery: non-mated, top score 0.5
        ]
    )
    res = _identification(probes, np.array([10, 10, 30, 40]), gal, np.array([10, 20, 30]), (1.0,), (1, 2))
    assert res["n_mated"] == 3 and res["n_non_mated"] == 1
    assert res["rank"]["1"] == pytest.approx(2 / 3) and res["rank"]["2"] == 1.0
    # FPIR 1 -> threshold 0.5 (the single non-mated top score): probes 0 and 2 are rank-1 above it.
    assert res["tpir_threshold_cos"]["1.0"] == 0.5
    assert res["tpir_at_fpir"]["1.0"] == pytest.approx(2 / 3)


# --------------------------------------------------------------------------------------------------
# CLI


def test_cli_ijb_writes_the_report(ijb_root, meta, tmp_path, capsys, monkeypatch, ckpt_factory) -> None:
    monkeypatch.setenv("FACEFORGE_HOME", str(tmp_path / "home"))
    ckpt = ckpt_factory(tmp_path / "run" / "checkpoints" / "last.ckpt")
    args = ["eval", "ijb", "--root", str(ijb_root), "--target", "IJBC", "--checkpoint", str(ckpt)]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "IJBC 1:1" in out and "IJBC 1:N" in out
    run = tmp_path / "run"
    rep = json.loads((run / "report.json").read_text())
    r11 = rep["IJBC 1:1"]
    assert r11["n_pairs"] == len(meta.pair_label) and r11["n_genuine"] == int(meta.pair_label.sum())
    assert r11["n_templates"] == N_IDS * T_PER_ID and r11["faceness"] is True and r11["flip"] == "sum"
    assert set(r11["tar_at_far"]) == {"0.001", "0.01", "0.1"}
    assert all(0.0 <= v <= 1.0 for v in r11["tar_at_far"].values())
    assert set(rep["IJBC 1:N"]["galleries"]) == {"G1", "G2"}
    assert "IJBC 1:1" in (run / "report.md").read_text() and (run / "det.png").is_file()
    # Second run without faceness weighting: embeddings come from the cache.
    assert main([*args, "--no-faceness"]) == 0
    assert "from the cache" in capsys.readouterr().out
    assert json.loads((run / "report.json").read_text())["IJBC 1:1"]["faceness"] is False


def test_cli_ijb_bad_root(tmp_path, capsys, ckpt_factory) -> None:
    ckpt = ckpt_factory(tmp_path / "c.ckpt")
    assert main(["eval", "ijb", "--root", str(tmp_path), "--checkpoint", str(ckpt)]) == 2
    assert "expected the insightface IJB layout" in capsys.readouterr().err
