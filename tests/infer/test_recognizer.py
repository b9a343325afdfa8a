"""FaceRecognizer: input types, verify on SynthFaces with a trained model, thresholds, errors, real photo."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
import torch
from PIL import Image

from faceforge import FaceRecognizer, SynthFaces
from faceforge.errors import FaceforgeError, ImageDecodeError, NoFaceError
from faceforge.infer import Gallery

# SynthFaces(seed=0) identities from here on were never in the fixture's training or validation set.
UNSEEN = 5000


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def rec(trained_checkpoint) -> FaceRecognizer:
    return FaceRecognizer.from_checkpoint(trained_checkpoint, detector=None)


@pytest.fixture
def detectors(shared_dir, monkeypatch):
    monkeypatch.setenv("FACEFORGE_MODEL_DIRS", str(shared_dir / "models" / "detectors"))
    return shared_dir


def _png(rgb: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG")
    return buf.getvalue()


def test_every_input_type_gives_the_same_embedding(rec, tmp_path) -> None:
    rgb, _ = SynthFaces(0).image(UNSEEN, 0)
    path = tmp_path / "face.png"
    path.write_bytes(_png(rgb))
    ref = rec.embed(rgb)
    assert ref.shape == (1, 128) and ref.dtype == np.float32
    assert np.linalg.norm(ref, axis=1) == pytest.approx(1.0, abs=1e-6)
    variants = {
        "path": rec.embed(str(path)),
        "pathlike": rec.embed(path),
        "bytes": rec.embed(path.read_bytes()),
        "pil": rec.embed(Image.fromarray(rgb)),
        "pil rgba": rec.embed(Image.fromarray(rgb).convert("RGBA")),
        "bgr array": rec.embed(np.ascontiguousarray(rgb[:, :, ::-1]), color="BGR"),
    }
    for what, e in variants.items():
        assert np.abs(e - ref).max() < 1e-6, what
    # A BGR array read as RGB is a different picture: the colour order really is honoured.
    swapped = rec.embed(np.ascontiguousarray(rgb[:, :, ::-1]))
    assert float(swapped[0] @ ref[0]) < 0.999
    batch = rec.embed([rgb, path, path.read_bytes()])
    assert batch.shape == (3, 128) and np.abs(batch - ref).max() < 1e-6


def test_verify_same_and_different_identities(rec) -> None:
    sf = SynthFaces(0)
    same, diff = [], []
    for i in range(24):
        a, b = sf.image(UNSEEN + i, 0)[0], sf.image(UNSEEN + i, 1)[0]
        c = sf.image(UNSEEN + 100 + i, 0)[0]
        same.append(rec.verify(a, b))
        diff.append(rec.verify(a, c))
    # The fixture model is ~88 % accurate on validation pairs. A count on 8 pairs per side flipped on
    # another machine's fixture model; 48 decisions at >= 70 % (binomial: ~4 sigma below 88 %) and a
    # rank statistic hold for any fixture model that learnt identity, and fail for one that did not
    # (a random model scores ~50 % and an AUC of ~0.5).
    correct = sum(r["verified"] for r in same) + sum(not r["verified"] for r in diff)
    assert correct / 48 >= 0.70
    gs = np.array([r["similarity"] for r in same])
    im = np.array([r["similarity"] for r in diff])
    auc = float((gs[:, None] > im[None, :]).mean())
    assert auc >= 0.85
    r = same[0]
    assert set(r) - {"false_match_rate"} == {"verified", "similarity", "threshold", "faces"}
    assert r["threshold"] == pytest.approx(rec.threshold)
    assert r["verified"] == (r["similarity"] >= r["threshold"])
    face = r["faces"]["a"]
    assert face["aligned"].shape == (64, 64, 3) and face["aligned"].dtype == np.uint8
    assert face["bbox"] is None and face["landmarks"] is None  # 112×112 input: taken as aligned
    json.dumps({k: v for k, v in r.items() if k != "faces"})
    json.dumps({k: {kk: vv for kk, vv in f.items() if kk != "aligned"} for k, f in r["faces"].items()})
    # verify's similarity is the cosine of embed()'s vectors.
    a, b = sf.image(UNSEEN, 0)[0], sf.image(UNSEEN, 1)[0]
    e = rec.embed([a, b])
    assert r["similarity"] == pytest.approx(float(e[0] @ e[1]), abs=1e-6)


def test_threshold_override_far_and_missing_calibration(trained_checkpoint, rec, tmp_path) -> None:
    from faceforge.models.checkpoint import read_checkpoint

    sf = SynthFaces(0)
    a, b = sf.image(UNSEEN + 1, 0)[0], sf.image(UNSEEN + 1, 1)[0]
    sim = rec.verify(a, b)["similarity"]
    assert rec.verify(a, b, threshold=min(sim + 0.01, 1.0))["verified"] is False
    assert rec.verify(a, b, threshold=sim - 0.01)["verified"] is True
    strict = FaceRecognizer.from_checkpoint(trained_checkpoint, detector=None, threshold=0.999)
    assert strict.threshold == 0.999 and strict.info()["threshold_source"] == "argument"
    cal = read_checkpoint(trained_checkpoint)["calibration"]
    far, thr = next(iter(cal["tar_at_far_threshold_cos"].items()))
    assert FaceRecognizer.from_checkpoint(trained_checkpoint, far=float(far)).threshold == pytest.approx(thr)
    with pytest.raises(FaceforgeError, match="no threshold at FAR=1e-09"):
        FaceRecognizer.from_checkpoint(trained_checkpoint, far=1e-9)
    with pytest.raises(FaceforgeError, match=r"threshold must be a cosine similarity in \[-1, 1\]"):
        rec.verify(a, b, threshold=2.0)

    # No calibration in the checkpoint: verify asks for a threshold, unless a report.json has one.
    ckpt = read_checkpoint(trained_checkpoint)
    del ckpt["calibration"]
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    bare = run / "checkpoints" / "bare.ckpt"
    torch.save(ckpt, bare)
    r0 = FaceRecognizer.from_checkpoint(bare, detector=None)
    assert r0.threshold is None
    with pytest.raises(FaceforgeError, match=r"no calibration.*pass one"):
        r0.verify(a, b)
    assert r0.verify(a, b, threshold=0.5)["threshold"] == 0.5
    report = {
        "lfw": {"threshold_cos": 0.4321, "accuracy": 0.9, "n_pairs": 600, "tar_at_far_threshold_cos": {}}
    }
    (run / "report.json").write_text(json.dumps(report))
    r1 = FaceRecognizer.from_checkpoint(bare, detector=None)
    assert r1.threshold == pytest.approx(0.4321)
    assert "report.json lfw" in r1.info()["calibration_source"]


def test_info_is_json(rec) -> None:
    info = json.loads(json.dumps(rec.info()))
    assert info["backend"] == "torch" and info["embedding_size"] == 128
    assert info["input_size"] == [64, 64] and info["color"] == "RGB" and info["template"] == "arcface"
    assert info["threshold"] == pytest.approx(rec.threshold) and info["detector"] is None
    assert "validation pairs" in info["calibration_source"]


def test_bad_inputs_raise_faceforge_errors(rec, tmp_path, monkeypatch) -> None:
    with pytest.raises(ImageDecodeError, match="<21 bytes> is not an image"):
        rec.embed(b"definitely not a jpeg")
    with pytest.raises(ImageDecodeError, match="empty"):
        rec.embed(b"")
    txt = tmp_path / "notes.jpg"
    txt.write_text("hello")
    with pytest.raises(ImageDecodeError, match=r"notes\.jpg"):
        rec.verify(txt, txt)
    with pytest.raises(FaceforgeError, match="does not exist"):
        rec.embed(tmp_path / "missing.png")
    with pytest.raises(ImageDecodeError, match="unsupported image input"):
        rec.embed(42)  # type: ignore[arg-type]
    with pytest.raises(ImageDecodeError, match="shape"):
        rec.embed(np.zeros((4, 4, 7), np.uint8))
    with pytest.raises(FaceforgeError, match="color must be 'RGB' or 'BGR'"):
        rec.embed(np.zeros((64, 64, 3), np.uint8), color="HSV")
    ok = SynthFaces(0).image(UNSEEN, 0)[0]
    with pytest.raises(ImageDecodeError, match="image #1"):
        rec.embed([ok, b"xx"])
    # A photo that is not an aligned crop needs a detector; none configured → a clear error.
    with pytest.raises(FaceforgeError, match="no face detector"):
        rec.embed(np.zeros((200, 300, 3), np.uint8))
    monkeypatch.setenv("FACEFORGE_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("FACEFORGE_MODEL_DIRS", raising=False)
    import faceforge.align.choose as choose

    # Without YuNet/SCRFD files, auto falls back to dlib's HOG detector when dlib is installed...
    if choose._available("dlib"):
        assert FaceRecognizer.from_checkpoint(rec.source).info()["detector"] == "dlib"
    # ...and with nothing that can run, the error says how to get a detector.
    monkeypatch.setattr(choose, "AUTO_ORDER", ("yunet", "scrfd"))
    auto = FaceRecognizer.from_checkpoint(rec.source)
    with pytest.raises(FaceforgeError, match="faceforge models fetch yunet"):
        auto.embed(np.zeros((200, 300, 3), np.uint8))
    with pytest.raises(FaceforgeError, match="did you mean 'yunet'"):
        FaceRecognizer.from_checkpoint(rec.source, detector="yunett").embed(np.zeros((200, 300, 3), np.uint8))


def test_find_in_a_gallery(rec) -> None:
    sf = SynthFaces(0)
    ids = [UNSEEN + 200 + i for i in range(10)]
    emb = rec.embed([sf.image(i, k)[0] for i in ids for k in range(2)])
    labels = [f"id{i}" for i in ids for _ in range(2)]
    g = Gallery.build(emb, labels, [{"k": k} for _ in ids for k in range(2)], model_info=rec.info())
    hits = rec.find(sf.image(ids[3], 5)[0], g, k=3)
    assert len(hits) == 3 and hits[0]["label"] == f"id{ids[3]}"
    assert hits[0]["similarity"] >= hits[1]["similarity"] >= hits[2]["similarity"]
    assert set(hits[0]) == {"label", "similarity", "index", "meta"}
    other = Gallery.build(np.eye(4, 16, dtype=np.float32), list("abcd"))
    with pytest.raises(FaceforgeError, match="16 dimensions but model"):
        rec.find(sf.image(ids[0], 0)[0], other)


def test_raw_photo_astronaut_vs_flipped_crop(trained_checkpoint, detectors) -> None:
    import importlib.util

    from skimage import data

    rec = FaceRecognizer.from_checkpoint(trained_checkpoint)  # detector="auto": SCRFD, else YuNet
    photo = data.astronaut()
    crop = np.ascontiguousarray(photo[0:300, 100:350][:, ::-1])
    r = rec.verify(photo, crop)
    assert rec.info()["detector"] == ("scrfd" if importlib.util.find_spec("onnxruntime") else "yunet")
    assert r["verified"] is True and r["similarity"] >= 0.9
    # The detected faces are where the geometry says: the crop's box is the photo's box mirrored.
    x1, y1, x2, y2 = r["faces"]["a"]["bbox"]
    bx1, by1, bx2, by2 = r["faces"]["b"]["bbox"]
    assert bx1 == pytest.approx(250 - (x2 - 100), abs=8) and bx2 == pytest.approx(250 - (x1 - 100), abs=8)
    assert by1 == pytest.approx(y1, abs=8) and by2 == pytest.approx(y2, abs=8)
    assert r["faces"]["a"]["aligned"].shape == (64, 64, 3)
    assert len(r["faces"]["a"]["landmarks"]) == 5 and 0 < r["faces"]["a"]["score"] <= 1
    faces = rec.embed_faces(photo)
    assert len(faces) == 1 and faces[0].embedding.shape == (128,)
    with pytest.raises(NoFaceError, match="no face found"):
        rec.embed(np.full((240, 320, 3), 127, np.uint8))


def test_wild_scenes_go_through_detection_and_alignment(trained_checkpoint, detectors) -> None:
    # YuNet, named: it finds about 2 in 3 of these flat cartoon faces, SCRFD (auto's first) few of them
    rec = FaceRecognizer.from_checkpoint(trained_checkpoint, detector="yunet")
    sw = SynthFaces(0, mode="wild")
    same, diff = [], []
    for i in range(30):
        try:
            a, b = sw.image(UNSEEN + i, 0)[0], sw.image(UNSEEN + i, 1)[0]
            c = sw.image(UNSEEN + 300 + i, 0)[0]
            s, d = rec.verify(a, b), rec.verify(a, c)
        except NoFaceError:
            continue  # YuNet misses ~1 in 3 cartoon faces; the others are what this test is about
        assert s["faces"]["a"]["bbox"] is not None  # 250×250: detected, not taken as aligned
        same.append(s["similarity"])
        diff.append(d["similarity"])
    assert len(same) >= 6
    assert np.mean(same) > np.mean(diff) + 0.2
