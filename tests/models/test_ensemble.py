"""Ensembles (``models fuse``): the joined embedding scores a pair by the mean of the members' cosines,
each member normalised first; fused files load through every loader and refuse members that read a
different crop; an ensemble fused again contributes its members."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from faceforge.errors import FaceforgeError
from faceforge.models.build import build_backbone
from faceforge.models.checkpoint import fuse_checkpoints, load_checkpoint


def _write(
    path: Path,
    seed: int,
    size: int = 32,
    emb: int = 16,
    template: str = "arcface",
    scale: float = 1.0,
    section: dict | None = None,
) -> Path:
    """A faceforge checkpoint of a tiny GhostFaceNet with weights from ``seed`` (last layer ×``scale``);
    ``template``: the stored preprocessing's; ``section``: extra backbone-section options."""
    cfg = {"name": "ghostfacenetv1", "width": 0.25, "stride": 2, "embedding_size": emb, **(section or {})}
    torch.manual_seed(seed)
    net = build_backbone(cfg, size)
    with torch.no_grad():  # random BatchNorm statistics, so members differ in eval mode too
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d | torch.nn.BatchNorm1d):
                m.running_mean.normal_(0, 0.1)
                m.running_var.uniform_(0.5, 2.0)
        sd = net.state_dict()
        last = [k for k in sd if k.endswith("weight")][-1]
        sd[last].mul_(scale)
    face_cfg = {**net.face_cfg.to_dict(), "template": template}
    torch.save(
        {
            "state_dict": {f"backbone.{k}": v for k, v in sd.items()},
            "hyper_parameters": {"config": {"model": {"backbone": cfg}, "data": {"image_size": size}}},
            "face_cfg": face_cfg,
        },
        path,
    )
    return path


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.fixture
def crops() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (6, 32, 32, 3), dtype=np.uint8)


def test_fused_cosine_is_the_mean_of_the_members_cosines(tmp_path, crops) -> None:
    from faceforge.infer.loading import load_model

    # member 1's raw embeddings are 50x larger: without normalising each member it would decide alone
    paths = [_write(tmp_path / "a.ckpt", 1), _write(tmp_path / "b.ckpt", 2, scale=50.0)]
    out, cfg = fuse_checkpoints(paths, tmp_path / "fused.ckpt")
    assert cfg.embedding_size == 32 and cfg.input_size == (32, 32)
    fused = load_model(out)
    assert fused.face_cfg.embedding_size == 32
    e = fused.embed_uint8(crops)
    assert e.shape == (6, 32)
    np.testing.assert_allclose(np.linalg.norm(e, axis=1), 1.0, atol=1e-5)
    members = [_unit(load_model(p).embed_uint8(crops)) for p in paths]
    want = np.mean([m @ m.T for m in members], axis=0)
    np.testing.assert_allclose(e @ e.T, want, atol=1e-4)
    # the members disagree, so the mean is not either member's score
    assert np.abs(members[0] @ members[0].T - members[1] @ members[1].T).max() > 0.05


def test_fusing_an_ensemble_again_adds_its_members(tmp_path, crops) -> None:
    from faceforge.infer.loading import load_model

    a, b, c = (_write(tmp_path / f"{n}.ckpt", s) for n, s in (("a", 1), ("b", 2), ("c", 3)))
    ab, _ = fuse_checkpoints([a, b], tmp_path / "ab.ckpt")
    abc, cfg = fuse_checkpoints([ab, c], tmp_path / "abc.ckpt")
    loaded = load_checkpoint(abc)
    assert len(loaded.backbone.members) == 3 and cfg.embedding_size == 48
    e = load_model(abc).embed_uint8(crops)
    members = [_unit(load_model(p).embed_uint8(crops)) for p in (a, b, c)]
    np.testing.assert_allclose(e @ e.T, np.mean([m @ m.T for m in members], axis=0), atol=1e-4)


def test_members_that_read_another_crop_are_refused(tmp_path) -> None:
    a = _write(tmp_path / "a.ckpt", 1)
    for name, other in (
        ("size", _write(tmp_path / "big.ckpt", 2, size=64)),
        ("template", _write(tmp_path / "dlib.ckpt", 2, template="dlib")),
    ):
        with pytest.raises(FaceforgeError) as ei:
            fuse_checkpoints([a, other], tmp_path / f"x_{name}.ckpt")
        msg = str(ei.value)
        assert "\n" not in msg and ("image_size" in msg or "template" in msg), msg
        assert not (tmp_path / f"x_{name}.ckpt").exists()


def test_stored_preprocessing_decides_not_the_architectures_defaults(tmp_path, crops) -> None:
    from faceforge.infer.loading import load_model

    # Both files stored the dlib template; b's section also sets it, a's architecture default is
    # ArcFace's. They read the same crop, so they fuse, and the fused file must load as it was fused.
    a = _write(tmp_path / "a.ckpt", 1, template="dlib")
    b = _write(tmp_path / "b.ckpt", 2, template="dlib", section={"template": "dlib"})
    out, cfg = fuse_checkpoints([a, b], tmp_path / "fused.ckpt")
    assert cfg.template == "dlib"
    fused = load_model(out)
    assert fused.face_cfg.template == "dlib" and fused.face_cfg.embedding_size == 32
    e = fused.embed_uint8(crops)
    members = [_unit(load_model(p).embed_uint8(crops)) for p in (a, b)]
    np.testing.assert_allclose(e @ e.T, np.mean([m @ m.T for m in members], axis=0), atol=1e-4)
    # a config (no stored preprocessing) still has only the defaults to go by, and they disagree
    sections = [
        {"name": "ghostfacenetv1", "width": 0.25},
        {"name": "ghostfacenetv1", "width": 0.25, "template": "dlib"},
    ]
    with pytest.raises(FaceforgeError, match="template"):
        build_backbone({"name": "ensemble", "members": sections}, 32)


def test_models_fuse_command(tmp_path, capsys) -> None:
    from faceforge.cli.main import main

    a, b = _write(tmp_path / "a.ckpt", 1), _write(tmp_path / "b.ckpt", 2)
    assert main(["models", "fuse", str(a), str(b), "--out", str(tmp_path / "f.ckpt")]) == 0
    said = capsys.readouterr().out
    assert "2 members" in said and "embedding 32" in said
    assert load_checkpoint(tmp_path / "f.ckpt").face_cfg.embedding_size == 32
    rc = main(["models", "fuse", str(a), str(tmp_path / "missing.ckpt"), "--out", str(tmp_path / "g.ckpt")])
    err = capsys.readouterr().err
    assert rc != 0 and "missing.ckpt" in err and "Traceback" not in err
