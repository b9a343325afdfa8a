"""``models adapt`` (AdaBN): BatchNorm statistics are re-estimated on the given photos and nothing else
changes; dropout stays off; strength blends; unreadable photos are left out and counted; too few faces,
a model without BatchNorm and bad options are one-line errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from faceforge.errors import FaceforgeError
from faceforge.infer.adapt import adapt_batchnorm, adapt_checkpoint, batchnorm_layers, crop_batches
from faceforge.models.build import build_backbone
from faceforge.models.checkpoint import load_checkpoint, read_checkpoint


def _net() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3),
        torch.nn.BatchNorm2d(4),
        torch.nn.ReLU(),
        torch.nn.Dropout(0.9),
        torch.nn.Conv2d(4, 5, 3),
        torch.nn.BatchNorm2d(5),
    )


def _batches(x: torch.Tensor, bs: int):
    return lambda: (x[i : i + bs] for i in range(0, len(x), bs))


def _stats(module: torch.nn.Module) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [(m.running_mean.clone(), m.running_var.clone()) for m in batchnorm_layers(module)]


def test_statistics_are_the_average_over_batches_and_weights_stay() -> None:
    net = _net()
    x = torch.randn(64, 3, 12, 12) * 3 + 2  # far from the initial statistics (0, 1)
    weights = {k: v.clone() for k, v in net.state_dict().items() if "running" not in k and "batches" not in k}
    assert adapt_batchnorm(net, _batches(x, 16)) == 2
    conv0, bn0, conv1, bn1 = net[0], net[1], net[4], net[5]
    with torch.no_grad():
        y0 = conv0(x)
        want_mean = torch.stack([y0[i : i + 16].mean((0, 2, 3)) for i in range(0, 64, 16)]).mean(0)
        want_var = torch.stack([y0[i : i + 16].var((0, 2, 3)) for i in range(0, 64, 16)]).mean(0)
        # the second layer sees the first normalised by each batch's own statistics, with dropout off
        y1 = []
        for i in range(0, 64, 16):
            t = y0[i : i + 16]
            m, v = t.mean((0, 2, 3), keepdim=True), t.var((0, 2, 3), unbiased=False, keepdim=True)
            t = (t - m) / torch.sqrt(v + bn0.eps) * bn0.weight.view(1, -1, 1, 1) + bn0.bias.view(1, -1, 1, 1)
            y1.append(conv1(torch.relu(t)))
        want_mean1 = torch.stack([t.mean((0, 2, 3)) for t in y1]).mean(0)
    torch.testing.assert_close(bn0.running_mean, want_mean, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(bn0.running_var, want_var, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(bn1.running_mean, want_mean1, rtol=1e-4, atol=1e-5)
    assert not any(m.training for m in net.modules())
    assert bn0.momentum == 0.1  # restored
    for k, v in net.state_dict().items():
        if k in weights:
            assert torch.equal(v, weights[k]), k


def test_strength_blends_old_and_new_statistics() -> None:
    x = torch.randn(32, 3, 12, 12) * 2 - 1
    old = _stats(_net())
    full = _net()
    adapt_batchnorm(full, _batches(x, 16), strength=1.0)
    half = _net()
    adapt_batchnorm(half, _batches(x, 16), strength=0.5)
    none = _net()
    adapt_batchnorm(none, _batches(x, 16), strength=0.0)
    for (om, ov), (fm, fv), (hm, hv), (nm, nv) in zip(old, _stats(full), _stats(half), _stats(none)):
        assert not torch.allclose(fm, om)
        torch.testing.assert_close(hm, (om + fm) / 2)
        torch.testing.assert_close(hv, (ov + fv) / 2)
        torch.testing.assert_close(nm, om)
        torch.testing.assert_close(nv, ov)


def test_bad_inputs_are_one_line_errors() -> None:
    with pytest.raises(FaceforgeError, match="no BatchNorm"):
        adapt_batchnorm(torch.nn.Sequential(torch.nn.Conv2d(3, 3, 1)), _batches(torch.zeros(4, 3, 4, 4), 2))
    with pytest.raises(FaceforgeError, match=r"outside 0\.\.1"):
        adapt_batchnorm(_net(), _batches(torch.zeros(4, 3, 8, 8), 2), strength=1.5)
    net = _net()
    before = _stats(net)
    with pytest.raises(FaceforgeError, match="at least 2"):
        adapt_batchnorm(net, _batches(torch.zeros(3, 3, 8, 8), 1))
    for (a, b), (c, d) in zip(before, _stats(net)):  # a failed adaptation leaves the statistics as they were
        assert torch.equal(a, c) and torch.equal(b, d)


def test_crop_batches_are_even_flipped_and_seeded() -> None:
    from faceforge.models.face_cfg import FaceConfig, preprocess

    cfg = FaceConfig(input_size=(8, 8))
    crops = torch.randint(0, 256, (300, 3, 8, 8), dtype=torch.uint8)
    got = list(crop_batches(crops, cfg, batch_size=128, seed=3)())
    assert [len(b) for b in got] == [256, 256]  # the short last batch (44) is dropped
    torch.testing.assert_close(got[0][128:], got[0][:128].flip(-1))
    again = list(crop_batches(crops, cfg, batch_size=128, seed=3)())
    assert all(torch.equal(a, b) for a, b in zip(got, again))
    whole = preprocess(crops, cfg)
    first = got[0][:128]
    assert all(any(torch.equal(r, w) for w in whole) for r in first[:5])
    assert [len(b) for b in crop_batches(crops[:40], cfg, batch_size=128)()] == [80]


def _checkpoint(path: Path, size: int = 32) -> Path:
    cfg = {"name": "ghostfacenetv1", "width": 0.25, "stride": 2, "embedding_size": 16}
    torch.manual_seed(0)
    net = build_backbone(cfg, size)
    torch.save(
        {
            "state_dict": {f"backbone.{k}": v for k, v in net.state_dict().items()},
            "hyper_parameters": {"config": {"model": {"backbone": cfg}, "data": {"image_size": size}}},
            "face_cfg": net.face_cfg.to_dict(),
            "calibration": {"threshold": 0.3},
        },
        path,
    )
    return path


def _photos(folder: Path, n: int, size: int = 32) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        sub = folder / f"p{i % 3}"
        sub.mkdir(exist_ok=True)
        img = np.clip(rng.normal(200, 30, (size, size, 3)), 0, 255).astype(np.uint8)  # bright photos
        Image.fromarray(img).save(sub / f"{i:03d}.png")
    return folder


def test_adapt_checkpoint_writes_the_photos_statistics_and_keeps_the_rest(tmp_path) -> None:
    src = _checkpoint(tmp_path / "m.ckpt")
    photos = _photos(tmp_path / "photos", 40)
    (photos / "p0" / "broken.jpg").write_bytes(b"not a jpeg")
    original = src.read_bytes()
    r = adapt_checkpoint(src, [str(photos)], tmp_path / "a.ckpt", detector="none")
    assert (r.faces, r.images, r.no_face, len(r.unreadable)) == (40, 41, 0, 1)
    assert r.unreadable[0].endswith("broken.jpg") and r.layers > 10
    assert src.read_bytes() == original
    a, m = read_checkpoint(r.path), read_checkpoint(src)
    assert a["calibration"] == {} and a["adaptation"]["faces"] == 40 and a["adaptation"]["unreadable"] == 1
    assert a["face_cfg"] == m["face_cfg"] and a["hyper_parameters"] == m["hyper_parameters"]
    changed = [k for k in m["state_dict"] if not torch.equal(a["state_dict"][k], m["state_dict"][k])]
    assert changed and all(("running_" in k or "num_batches" in k) for k in changed)
    # the first BatchNorm layer holds the mean of its input over the 40 photos and their mirror images
    loaded = load_checkpoint(src)
    bn = batchnorm_layers(loaded.backbone)[0]
    seen = []
    hook = bn.register_forward_hook(lambda _m, inp, _o: seen.append(inp[0]))
    from faceforge.models.face_cfg import preprocess

    imgs = torch.from_numpy(
        np.stack([np.asarray(Image.open(p)) for p in sorted(photos.rglob("*.png"))])
    ).permute(0, 3, 1, 2)
    x = preprocess(imgs, loaded.face_cfg)
    with torch.no_grad():
        loaded.backbone(torch.cat([x, x.flip(-1)]))
    hook.remove()
    key = next(n for n, mod in loaded.backbone.named_modules() if mod is bn) + ".running_mean"
    torch.testing.assert_close(
        a["state_dict"][f"backbone.{key}"], seen[0].mean((0, 2, 3)), rtol=1e-4, atol=1e-5
    )
    emb_a = load_checkpoint(r.path).embed(imgs[:4])
    emb_m = loaded.embed(imgs[:4])
    assert not torch.allclose(emb_a, emb_m)


def test_sampling_and_too_few_faces(tmp_path) -> None:
    src = _checkpoint(tmp_path / "m.ckpt")
    photos = _photos(tmp_path / "photos", 40)
    r = adapt_checkpoint(src, [str(photos)], tmp_path / "a.ckpt", detector="none", max_images=35)
    assert (r.images, r.sampled_from, r.faces) == (35, 40, 35)
    with pytest.raises(FaceforgeError, match=r"only 20 of 20 photos gave a face.*at least 32"):
        adapt_checkpoint(src, [str(photos)], tmp_path / "b.ckpt", detector="none", max_images=20)
    assert not (tmp_path / "b.ckpt").exists()
    with pytest.raises(FaceforgeError, match="max_images"):
        adapt_checkpoint(src, [str(photos)], tmp_path / "b.ckpt", detector="none", max_images=0)
    with pytest.raises(FaceforgeError, match="strength"):
        adapt_checkpoint(src, [str(photos)], tmp_path / "b.ckpt", detector="none", strength=float("nan"))
    before = src.read_bytes()
    with pytest.raises(FaceforgeError, match="the checkpoint itself"):
        adapt_checkpoint(src, [str(photos)], src, detector="none")
    assert src.read_bytes() == before


def test_models_adapt_command(tmp_path, capsys) -> None:
    from faceforge.cli.main import main

    src = _checkpoint(tmp_path / "m.ckpt")
    photos = _photos(tmp_path / "photos", 40)
    out = tmp_path / "a.ckpt"
    assert main(["models", "adapt", str(src), str(photos), "--out", str(out), "--detector", "none"]) == 0
    said = capsys.readouterr().out
    assert "re-estimated on 40 faces from 40 photos" in said and "--write-calibration" in said
    assert read_checkpoint(out)["adaptation"]["method"] == "adabn"
    empty = tmp_path / "empty"
    empty.mkdir()
    rc = main(["models", "adapt", str(src), str(empty), "--out", str(tmp_path / "b.ckpt")])
    err = capsys.readouterr().err
    assert rc != 0 and "holds no image" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


def test_an_adapted_copy_says_so_and_ignores_the_report_beside_it(tmp_path) -> None:
    import json

    from faceforge.infer.loading import load_model

    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    src = _checkpoint(run / "checkpoints" / "best.ckpt")
    m = read_checkpoint(src)
    m["calibration"] = {}
    torch.save(m, src)
    # the report of the original model (what `faceforge eval` writes in the run directory)
    (run / "report.json").write_text(json.dumps({"calibration": {"threshold": 0.42, "far": {}}}))
    assert load_model(str(src)).calibration["threshold"] == 0.42
    photos = _photos(tmp_path / "photos", 40)
    r = adapt_checkpoint(src, [str(photos)], run / "checkpoints" / "adapted.ckpt", detector="none")
    loaded = load_model(str(r.path))
    assert loaded.calibration == {}
    assert "40 unlabeled photos" in loaded.facts["adapted"]
