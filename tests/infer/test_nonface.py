"""Whole-image models (``template: none``, e.g. a timm network trained on products): ``verify``, ``embed``,
``gallery build/search``, ``FaceRecognizer`` and ``eval classify`` never build or run a face detector, and
they crop images the way training decodes them (shorter side resized, centre cut out)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from faceforge.cli.main import main
from faceforge.errors import FaceforgeError

pytest.importorskip("timm")
pytestmark = pytest.mark.usefixtures("one_thread")

SIZE = 32
COLOURS = {"red": (220, 40, 30), "green": (40, 200, 60), "blue": (30, 60, 220)}


@pytest.fixture(autouse=True)
def no_detector(monkeypatch, tmp_path):
    """Any construction or lookup of a face detector fails the test."""
    from faceforge.align import choose
    from faceforge.align.detectors import base

    def boom(*a, **k):
        raise AssertionError("a face detector was built for a whole-image model")

    monkeypatch.setattr(base.DETECTORS, "create", boom)
    monkeypatch.setattr(base, "create_detector", boom)
    monkeypatch.setattr(choose, "resolve_detector", boom)
    monkeypatch.setenv("FACEFORGE_HOME", str(tmp_path / "home"))


@pytest.fixture(scope="module")
def objects(tmp_path_factory) -> Path:
    """objects/<colour>/<k>.png: non-square photos of a coloured square on noise, 4 per class."""
    root = tmp_path_factory.mktemp("objects")
    rng = np.random.default_rng(0)
    for c, rgb in COLOURS.items():
        (root / c).mkdir()
        for k in range(4):
            h, w = (48, 80) if k % 2 else (90, 60)
            img = rng.integers(0, 60, (h, w, 3), dtype=np.uint8)
            y, x = h // 4 + k, w // 4 - k
            img[y : y + h // 2, x : x + w // 2] = rgb
            Image.fromarray(img).save(root / c / f"item{k}_{k}.png")
    return root


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    """A faceforge checkpoint of an untrained ``timm/test_resnet`` with ``template: none``."""
    from faceforge.models.build import build_backbone

    torch.manual_seed(0)
    cfg = {"name": "timm/test_resnet", "embedding_size": 16, "template": "none"}
    net = build_backbone(dict(cfg), SIZE).eval()
    path = tmp_path_factory.mktemp("ckpt") / "objects.ckpt"
    torch.save(
        {
            "state_dict": {f"backbone.{k}": v for k, v in net.state_dict().items()},
            "hyper_parameters": {"config": {"model": {"backbone": cfg}, "data": {"image_size": SIZE}}},
            "face_cfg": net.face_cfg.to_dict(),
        },
        path,
    )
    return path


def _reference_embedding(ckpt: Path, path: Path) -> np.ndarray:
    """Crop as training does (data.folder.decode_image, crop=True), then backbone + flip sum, normalised."""
    from faceforge.data.folder import decode_image
    from faceforge.models.checkpoint import load_checkpoint

    m = load_checkpoint(ckpt)
    x = torch.from_numpy(decode_image(path, SIZE, crop=True)).permute(2, 0, 1)[None]
    with torch.no_grad():
        e = (m.embed(x) + m.embed(x.flip(-1)))[0].numpy()
    return e / np.linalg.norm(e)


def test_recognizer_never_detects_and_centre_crops(ckpt, objects) -> None:
    from faceforge.infer import FaceRecognizer
    from faceforge.infer.pipeline import embed_folder

    rec = FaceRecognizer.from_model(ckpt, detector="yunet", threshold=0.5)
    assert rec.face_cfg.template == "none" and rec.info()["detector"] is None
    files = sorted(objects.rglob("*.png"))
    for aligned in (None, False):
        emb = rec.embed(files[:3], aligned=aligned)
        for f, e in zip(files[:3], emb):
            np.testing.assert_allclose(e, _reference_embedding(ckpt, f), atol=1e-5)
    res = rec.verify(files[0], files[1])
    assert res["faces"]["a"]["bbox"] is None and res["faces"]["a"]["aligned"].shape == (SIZE, SIZE, 3)
    out = embed_folder(rec, objects, workers=1, aligned=False, progress=False)
    assert out.counts["ok"] == len(files)
    np.testing.assert_allclose(out.embeddings, rec.embed(files), atol=1e-5)


def test_cli_verify_embed_gallery_without_a_detector(ckpt, objects, tmp_path, capsys) -> None:
    a, b = objects / "red" / "item0_0.png", objects / "red" / "item1_1.png"
    det_file = tmp_path / "det.onnx"
    det_file.write_bytes(b"never read")
    for extra in ([], ["--detector", "yunet", "--detector-model", str(det_file)]):
        code = main(["verify", str(a), str(b), "--model", str(ckpt), "--threshold", "0.5", "--json", *extra])
        assert code in (0, 1)
        out = json.loads(capsys.readouterr().out)
        want = float(_reference_embedding(ckpt, a) @ _reference_embedding(ckpt, b))
        assert out["similarity"] == pytest.approx(want, abs=1e-5)
        assert out["model"]["detector"] is None
    npz = tmp_path / "e.npz"
    assert main(["embed", str(objects), "--model", str(ckpt), "--out", str(npz)]) == 0
    data = np.load(npz)
    assert data["embeddings"].shape == (12, 16) and sorted(set(data["labels"])) == sorted(COLOURS)
    gal = tmp_path / "gallery"
    assert main(["gallery", "build", str(objects), "--model", str(ckpt), "--out", str(gal)]) == 0
    capsys.readouterr()
    q = objects / "blue" / "item2_2.png"
    code = main(
        ["gallery", "search", str(q), "--gallery", str(gal), "--model", str(ckpt), "-k", "1", "--json"]
    )
    assert code == 0
    hit = json.loads(capsys.readouterr().out)["results"][0]
    assert hit["label"] == "blue" and hit["similarity"] == pytest.approx(1.0, abs=1e-5)


@pytest.mark.slow  # ONNX export + checker: ~4 s on an idle 2-core machine
def test_onnx_export_keeps_the_whole_image_contract(ckpt, objects, tmp_path) -> None:
    pytest.importorskip("onnxruntime")
    from faceforge.export.onnx import export_onnx
    from faceforge.infer import FaceRecognizer
    from faceforge.models.checkpoint import load_checkpoint

    path = export_onnx(load_checkpoint(ckpt), tmp_path / "objects.onnx")
    rec = FaceRecognizer.from_model(path, threshold=0.5)
    assert rec.backend == "onnx" and rec.face_cfg.template == "none"
    f = objects / "green" / "item3_3.png"
    np.testing.assert_allclose(rec.embed(f)[0], _reference_embedding(ckpt, f), atol=1e-4)


def test_eval_classify_on_class_folders(ckpt, objects, tmp_path, capsys) -> None:
    from faceforge.eval.classify import classify_by_retrieval
    from faceforge.infer import FaceRecognizer

    gallery, query = tmp_path / "gallery", tmp_path / "query"
    for c in COLOURS:
        for k, f in enumerate(sorted((objects / c).glob("*.png"))):
            dst = (gallery if k < 3 else query) / c / ("sub" if k == 1 else "") / f.name
            dst.parent.mkdir(parents=True, exist_ok=True)
            dst.write_bytes(f.read_bytes())
    out = tmp_path / "rep"
    code = main(["eval", "classify", "--model", str(ckpt), "--gallery", str(gallery), "--query", str(query),
                 "--k", "3", "--out", str(out), "--no-cache"])  # fmt: skip
    assert code == 0
    text = capsys.readouterr().out
    assert "Acc@3 weighted (%)" in text and "classify report:" in text
    folder = out / "classify-query"
    d = json.loads((folder / "classify.json").read_text())
    assert d["n_gallery"] == 9 and d["n_queries"] == 3 and d["k"] == 3  # sub-folders found recursively
    assert (folder / "confusion.png").is_file() and (folder / "classify.md").is_file()
    assert "query (classify)" in json.loads((out / "report.json").read_text())
    # The same numbers from the inference path's embeddings (same crops, same flip fusion).
    rec = FaceRecognizer.from_model(ckpt, threshold=0.5)
    names = sorted(COLOURS)
    gp = sorted(gallery.rglob("*.png"), key=lambda p: (p.relative_to(gallery).parts[0], str(p)))
    qp = sorted(query.rglob("*.png"))
    res = classify_by_retrieval(
        rec.embed(gp), [names.index(p.relative_to(gallery).parts[0]) for p in gp],
        rec.embed(qp), [names.index(p.parent.name) for p in qp], k=3, class_names=names,
    )  # fmt: skip
    assert d["accuracy"] == pytest.approx(res.accuracy) and d["recall_at_k"]["1"] == pytest.approx(
        res.recall_at[1]
    )
    assert d["confusion"] == res.confusion.tolist()


def test_eval_run_folder_picks_the_newest_checkpoint(ckpt, objects, tmp_path, capsys) -> None:
    from faceforge.eval.run import run_checkpoint

    runs = tmp_path / "runs" / "objects"
    old = runs / "20250101-120000" / "checkpoints"
    new = runs / "20250101-120000-2" / "checkpoints"
    for d in (old, new, runs / "20250301-000000"):  # the newest run has no checkpoint yet
        d.mkdir(parents=True, exist_ok=True)
    (old / "best.ckpt").write_bytes(ckpt.read_bytes())
    (new / "last.ckpt").write_bytes(ckpt.read_bytes())
    assert run_checkpoint(runs) == new / "last.ckpt"
    (new / "best.ckpt").write_bytes(ckpt.read_bytes())
    assert run_checkpoint(runs) == new / "best.ckpt"
    assert run_checkpoint(runs / "20250101-120000") == old / "best.ckpt"
    with pytest.raises(FaceforgeError, match=r"no checkpoints/best\.ckpt or last\.ckpt"):
        run_checkpoint(runs / "20250301-000000")
    code = main(["eval", "classify", "--run", str(runs), "--gallery", str(objects), "--query", str(objects),
                 "--k", "2", "--no-cache"])  # fmt: skip
    assert code == 0
    text = capsys.readouterr().out
    assert f"model: {new / 'best.ckpt'}" in text
    # The report lands in the run folder of that checkpoint, as for --model RUN/checkpoints/best.ckpt.
    assert (new.parent / f"classify-{objects.name}" / "classify.json").is_file()
    assert (
        main(["eval", "classify", "--run", str(runs), "--model", str(ckpt), "--gallery", "x", "--query", "y"])
        == 2
    )


def test_eval_classify_on_a_class_split(ckpt, objects, tmp_path, capsys) -> None:
    from faceforge.data.splits import make_split

    split = tmp_path / "split.json"
    make_split(objects, split, layout="class", ratios=(0.5, 0.25, 0.25))
    out = tmp_path / "rep"
    base = ["eval", "classify", "--model", str(ckpt), "--split", str(split), "--no-cache", "--out", str(out)]
    assert main([*base, "--k", "2"]) == 0
    d = json.loads((out / "classify-split_test" / "classify.json").read_text())
    assert (d["n_gallery"], d["n_queries"], d["class_names"]) == (6, 3, sorted(COLOURS))
    # Gallery part = query part: leave-one-out (no query finds itself).
    assert main([*base, "--query-split", "train", "--k", "1"]) == 0
    d = json.loads((out / "classify-split_train" / "classify.json").read_text())
    assert d["leave_one_out"] and d["n_gallery"] == d["n_queries"] == 6
    assert all(m["neighbours"][0]["index"] != m["index"] for m in d["misclassified"])
    capsys.readouterr()
    # A Recall@K deeper than the gallery, and a part the split does not have: one line each.
    assert main([*base, "--ks", "1,50"]) == 2
    assert "K=50 is larger than the gallery" in capsys.readouterr().err
    assert main([*base, "--query-split", "tset"]) == 2
    assert "did you mean 'test'" in capsys.readouterr().err
