"""``faceforge eval`` on raw photos: detection + alignment, no-face rule, crop cache, unwritable caches.

The photos are SynthFaces "wild" scenes (250×250, the face anywhere at any size). The detector is an
oracle that knows each scene's true landmarks by the hash of its pixels and also reports a decoy face
in a corner with a higher score, so only the "nearest the centre" rule keeps the right face. A few
scenes are unknown to it: those are the images without a face.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from faceforge.align import crop_face
from faceforge.align.detectors.base import DETECTORS, Detector, Face
from faceforge.align.io import read_image
from faceforge.cli.main import main
from faceforge.data.pairs import read_pairs
from faceforge.errors import FaceforgeError
from faceforge.eval.cache import CropCache, EmbeddingCache
from faceforge.eval.crops import NO_FACE_RULE, FaceCropper, plan_alignment
from faceforge.eval.suite import ModelInfo, SetSpec, evaluate_sets
from faceforge.models.face_cfg import FaceConfig

pytestmark = pytest.mark.usefixtures("one_thread")

N_UNKNOWN = 3  # scenes the oracle finds no face in


@pytest.fixture(autouse=True)
def _home(tmp_path, monkeypatch):
    monkeypatch.setenv("FACEFORGE_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("FACEFORGE_MODEL_DIRS", raising=False)


def _digest(rgb: np.ndarray) -> str:
    return hashlib.sha1(np.ascontiguousarray(rgb).tobytes()).hexdigest()


class OracleDetector(Detector):
    """The scene's true landmarks (looked up by pixel hash) plus a higher-scoring decoy in a corner."""

    name = "oracle"

    def __init__(self, table: dict[str, np.ndarray], model_path=None, **kw) -> None:
        super().__init__()
        self._table = table
        self._calls = 0

    def _detect(self, rgb: np.ndarray) -> list[Face]:
        self._calls += 1
        lm = self._table.get(_digest(rgb))
        if lm is None:
            return []
        lo, hi = lm.min(0) - 15, lm.max(0) + 15
        decoy = np.array([[6, 8], [20, 8], [13, 14], [8, 20], [18, 20]], np.float32)
        return [
            Face(bbox=np.array([2, 2, 24, 24], np.float32), score=0.99, landmarks=decoy),
            Face(bbox=np.r_[lo, hi].astype(np.float32), score=0.8, landmarks=lm.astype(np.float32)),
        ]


@pytest.fixture(scope="module")
def wild(tmp_path_factory, synth_wild) -> dict:
    """Pair paths, the true landmarks by path, the oracle's table and the images it does not know."""
    pairs = synth_wild / "test_pairs.txt"
    paths = read_pairs(pairs).unique_paths()
    truth = {}
    for line in (synth_wild / "landmarks.csv").read_text().splitlines()[1:]:
        rel, *vals = line.split(",")
        truth[str(synth_wild / rel)] = np.array(vals, np.float64).reshape(5, 2)
    unknown = sorted(paths)[:N_UNKNOWN]
    table = {_digest(read_image(p)): truth[p] for p in paths if p not in unknown}
    return {"pairs": pairs, "paths": paths, "truth": truth, "table": table, "unknown": unknown}


def _color_embed(x: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.adaptive_avg_pool2d(x.float(), 4).flatten(1) - 128.0


def _model(size=(64, 64), template="arcface") -> ModelInfo:
    return ModelInfo(_color_embed, size, "RGB", "color-embed", template)


# --------------------------------------------------------------------------------------------------
# the library


def test_raw_photos_are_detected_and_aligned_to_the_model_template(wild, tmp_path) -> None:
    det = OracleDetector(wild["table"])
    cfg = FaceConfig(input_size=(112, 96), template="arcface")  # non-square on purpose
    cropper = FaceCropper(cfg, det, warn=pytest.fail)
    paths = wild["paths"]
    crops = cropper.crops(paths, name="wild")
    assert crops.images.shape == (len(paths), 3, 112, 96)
    assert crops.plan.method == "detected" and crops.plan.detector == "oracle"
    assert sorted(crops.no_face_paths) == wild["unknown"] and crops.bad_paths == []
    # A found face is the true one (not the higher-scoring decoy in the corner), warped by crop_face.
    p = next(q for q in paths if q not in wild["unknown"])
    want = crop_face(read_image(p), wild["truth"][p].astype(np.float32), cfg)  # detectors give float32
    got = crops.images[paths.index(p)].permute(1, 2, 0).numpy()
    assert np.array_equal(got, want)
    # Resizing the whole scene instead gives another picture entirely.
    whole = crop_face(read_image(p), None, cfg)
    assert np.abs(whole.astype(int) - want.astype(int)).mean() > 5 * max(1.0, np.abs(got - want).mean())


def test_no_face_images_follow_the_documented_rule_and_are_counted(wild) -> None:
    from faceforge.align.templates import get_template
    from faceforge.eval.align_bench import fallback_landmarks

    det = OracleDetector(wild["table"])
    res = evaluate_sets([SetSpec("wild", wild["pairs"], "pairs")], _model(), "none", detector=det)
    row = res["wild"]
    assert row["alignment"] == "detected" and row["detector"] == "oracle"
    assert row["no_face_images"] == N_UNKNOWN and row["no_face_rule"] == NO_FACE_RULE
    assert sorted(row["no_face_examples"]) == wild["unknown"]
    assert row["undecodable_images"] == 0 and row["n_images"] == len(wild["paths"])
    # The fallback crop: the mean relative landmarks of the detected faces, scaled to the image.
    cfg = FaceConfig(input_size=(64, 64), template="arcface")
    crops = FaceCropper(cfg, OracleDetector(wild["table"])).crops(wild["paths"])
    found = [p for p in wild["paths"] if p not in wild["unknown"]]
    lms = np.stack([wild["truth"][p] for p in found]).astype(np.float32)
    sizes = np.array([[250.0, 250.0]] * len(found))
    p = wild["unknown"][0]
    lm = fallback_landmarks(lms, sizes, 250, 250, get_template("arcface", (64, 64)))
    want = crop_face(read_image(p), lm, cfg)
    got = crops.images[wild["paths"].index(p)].permute(1, 2, 0).numpy()
    assert np.array_equal(got, want)


def test_crop_cache_skips_decoding_and_detection_on_the_second_run(wild, tmp_path, monkeypatch) -> None:
    import faceforge.align.io as aio

    decoded = []
    real_read = aio.read_image
    monkeypatch.setattr(aio, "read_image", lambda p: decoded.append(p) or real_read(p))
    spec = SetSpec("wild", wild["pairs"], "pairs")
    crop_dir = tmp_path / "crops"
    det1 = OracleDetector(wild["table"])
    first = evaluate_sets([spec], _model(), "none", detector=det1, crop_cache=CropCache(crop_dir))
    n = len(wild["paths"])
    assert det1._calls == n and len(decoded) == n + N_UNKNOWN  # no-face images: decoded again
    decoded.clear()
    det2 = OracleDetector(wild["table"])
    cache2 = CropCache(crop_dir)
    second = evaluate_sets([spec], _model(), "none", detector=det2, crop_cache=cache2)
    assert det2._calls == 0 and cache2.hits == n  # detection did not run again
    assert sorted(decoded) == wild["unknown"]  # only the fallback crops are cut again
    assert second["wild"]["auc"] == first["wild"]["auc"]
    assert second["wild"]["no_face_images"] == N_UNKNOWN
    # Another template or size is another entry; a changed file is too.
    det3 = OracleDetector(wild["table"])
    evaluate_sets([spec], _model((56, 56)), "none", detector=det3, crop_cache=CropCache(crop_dir))
    assert det3._calls == n
    p = wild["paths"][-1]
    os.utime(p, ns=(os.stat(p).st_atime_ns, os.stat(p).st_mtime_ns + 10**9))
    det4 = OracleDetector(wild["table"])
    evaluate_sets([spec], _model(), "none", detector=det4, crop_cache=CropCache(crop_dir))
    assert det4._calls == 1


def test_auto_takes_aligned_sets_as_they_are_and_detects_photos(synth_data, wild, monkeypatch) -> None:
    import faceforge.align.choose as choose

    aligned = read_pairs(synth_data / "test_pairs.txt").unique_paths()  # 112×112 arcface crops
    for cfg in (FaceConfig(input_size=(64, 64)), FaceConfig(input_size=(112, 112))):
        assert plan_alignment(aligned, cfg).method == "aligned"
    # dlib's template is not what a 112×112 arcface crop holds: detect.
    monkeypatch.setattr(choose, "AUTO_ORDER", ())
    with pytest.raises(FaceforgeError, match="no face detector model found"):
        plan_alignment(aligned, FaceConfig(input_size=(150, 150), template="dlib"))
    with pytest.raises(FaceforgeError, match=r"no face detector model found.*faceforge models fetch yunet"):
        plan_alignment(wild["paths"], FaceConfig(input_size=(64, 64)))
    # A whole-image model is never detected; --detector none on crops of the right size says nothing.
    assert plan_alignment(wild["paths"], FaceConfig(input_size=(64, 64), template="none")).method == (
        "whole-image"
    )
    assert plan_alignment(aligned, FaceConfig(input_size=(64, 64)), "none").method == "aligned"


def test_auto_uses_the_stores_detector_scrfd_first(wild, monkeypatch) -> None:
    import importlib.util

    from faceforge import hub as store

    shared = Path(__file__).resolve().parents[2].parent / "shared" / "models" / "detectors"
    if not (shared / "yunet_s_640_640.onnx").is_file():
        pytest.skip(f"YuNet not found in {shared}")
    monkeypatch.setenv("FACEFORGE_MODEL_DIRS", str(shared))
    assert store.find("yunet") is not None and store.find("scrfd") is not None
    plan = plan_alignment(wild["paths"], FaceConfig(input_size=(64, 64)))
    want = "scrfd" if importlib.util.find_spec("onnxruntime") else "yunet"
    assert plan.method == "detected" and plan.detector == want
    assert len(plan.identity["files"]["model_path"]) == 64  # the file's SHA-256 keys the crop cache


def test_resolve_detector_errors() -> None:
    from faceforge.align.choose import resolve_detector

    with pytest.raises(FaceforgeError, match="needs a detector name"):
        resolve_detector("auto", "det_10g.onnx")
    with pytest.raises(FaceforgeError, match="did you mean 'yunet'"):
        resolve_detector("yunett")
    with pytest.raises(FaceforgeError, match="cannot tell which detector"):
        resolve_detector("some_file.onnx")
    det = OracleDetector({})
    assert resolve_detector(det) == (det, "oracle")
    # A size the template has no definition for fails before any image is read, saying so.
    with pytest.raises(FaceforgeError, match="model input 72x64 with template 'arcface' cannot be cropped"):
        FaceCropper(FaceConfig(input_size=(72, 64)), det)
    with pytest.raises(FaceforgeError, match="needs a detector, not --detector none"):
        FaceCropper(FaceConfig(), "none", "x.onnx")


class TwinOracle(OracleDetector):
    """An oracle whose instances may run side by side; each one's first call waits for the other's."""

    parallel_instances = True

    def __init__(self, table, barrier, **kw) -> None:
        super().__init__(table)
        self._barrier = barrier

    def _detect(self, rgb: np.ndarray) -> list[Face]:
        if self._calls == 0:
            self._barrier.wait(timeout=20)  # raises unless a second instance runs meanwhile
        return super()._detect(rgb)


def test_detectors_that_run_side_by_side_detect_in_threads_with_the_same_crops(
    wild, tmp_path, monkeypatch
) -> None:
    import threading

    paths = [*wild["paths"], str(tmp_path / "missing.jpg")]  # an unreadable file too
    cfg = FaceConfig(input_size=(64, 64))
    one = FaceCropper(cfg, OracleDetector(wild["table"])).crops(paths)
    made: list[TwinOracle] = []
    barrier = threading.Barrier(2)
    monkeypatch.setitem(
        DETECTORS._factories,
        "twin_test",
        lambda model_path=None, **kw: made.append(TwinOracle(wild["table"], barrier)) or made[-1],
    )
    cropper = FaceCropper(cfg, "twin_test", threads=2)
    two = cropper.crops(paths)
    assert len(made) == 2 and min(d._calls for d in made) >= 1  # both instances detected (the barrier)
    assert sum(d._calls for d in made) == len(wild["paths"]) == cropper.detect_calls
    assert torch.equal(one.images, two.images)  # in the same order, whichever thread cut them
    assert two.no_face_paths == one.no_face_paths and sorted(two.no_face_paths) == wild["unknown"]
    assert two.bad_paths == one.bad_paths == [paths[-1]]
    # The next set reuses the two instances; a detector given as an instance is never shared.
    cropper.crops(paths[:3])
    assert len(made) == 2
    inst = TwinOracle(wild["table"], threading.Barrier(1))
    solo = FaceCropper(cfg, inst, threads=2)
    assert solo._thread_count(100) == 1 and torch.equal(solo.crops(paths).images, one.images)
    assert FaceCropper(cfg, OracleDetector(wild["table"]))._thread_count(100) == 1  # not parallel: one
    for bad in (0, -1, 1.5):
        with pytest.raises(FaceforgeError, match="threads"):
            FaceCropper(cfg, "twin_test", threads=bad)


def test_bin_crops_are_realigned_for_another_template(synth_data, tmp_path) -> None:
    from faceforge.data.binset import pairs_to_bin

    b = pairs_to_bin(read_pairs(synth_data / "test_pairs.txt"), tmp_path / "lfw.bin")
    spec = SetSpec("lfw", b, "bin")
    row = evaluate_sets([spec], _model((150, 150), "dlib"), "none")["lfw"]
    assert row["alignment"] == "realigned" and row["n_pairs"] == 120
    assert evaluate_sets([spec], _model((64, 64)), "none")["lfw"]["alignment"] == "aligned"


# --------------------------------------------------------------------------------------------------
# the CLI


@pytest.fixture
def oracle_name(wild, monkeypatch) -> tuple[str, list]:
    """Register the oracle as a detector name for ``--detector``; the list collects its instances."""
    made: list[OracleDetector] = []

    def factory(model_path=None, **kw):
        made.append(OracleDetector(wild["table"]))
        return made[-1]

    monkeypatch.setitem(DETECTORS._factories, "oracle_test", factory)
    return "oracle_test", made


def test_cli_detects_reports_no_faces_and_reuses_crops(
    wild, tmp_path, capsys, ckpt_factory, oracle_name
) -> None:
    name, made = oracle_name
    ckpt = ckpt_factory(tmp_path / "run" / "checkpoints" / "best.ckpt")
    out = tmp_path / "rep"
    pairs = str(wild["pairs"])
    args = ["eval", "--model", str(ckpt), "--pairs", pairs, "--detector", name, "--out", str(out)]
    assert main(args) == 0
    text = capsys.readouterr().out
    n = len(wild["paths"])
    assert made[-1]._calls == n
    assert f"faces: test_pairs: detected with {name} in {n} images, no face in {N_UNKNOWN}" in text
    assert NO_FACE_RULE in text
    row = json.loads((out / "report.json").read_text())["test_pairs"]
    assert row["no_face_images"] == N_UNKNOWN and row["no_face_rule"] == NO_FACE_RULE
    assert row["detector"] == name and sorted(row["no_face_examples"]) == wild["unknown"]
    md = (out / "report.md").read_text()
    assert f"faces detected with {name}; no face in {N_UNKNOWN} of {n} images" in md
    # Same model, other flip mode: new embeddings, but the crops come from the crop cache.
    assert main([*args, "--flip", "none"]) == 0
    text = capsys.readouterr().out
    assert made[-1]._calls == 0 and f"crops: {n} image(s) from the crop cache" in text
    # Same everything: the embedding cache answers; the no-face facts survive it.
    assert main(args) == 0
    text = capsys.readouterr().out
    assert made[-1]._calls == 0 and "embeddings: 1 set(s) from the cache" in text
    assert f"no face in {N_UNKNOWN}" in text


def test_cli_detector_none_warns_once_per_set(wild, tmp_path, capsys, ckpt_factory) -> None:
    ckpt = ckpt_factory(tmp_path / "c.ckpt")
    code = main(["eval", "--model", str(ckpt), "--pairs", str(wild["pairs"]), "--detector", "none",
                 "--out", str(tmp_path / "o"), "--lowres", "2"])  # fmt: skip
    assert code == 0
    err = capsys.readouterr().err
    n = len(wild["paths"])
    lines = [ln for ln in err.splitlines() if "without detection or alignment" in ln]
    assert lines == [f"warning: test_pairs: {n} of {n} images are not 64x64 crops; --detector none "
                     "resizes them whole, without detection or alignment (expect poor accuracy; use "
                     "--detector auto for raw photos)"]  # fmt: skip
    row = json.loads((tmp_path / "o" / "report.json").read_text())["test_pairs"]
    assert row["alignment"] == "resized" and row["resized_without_alignment"] == n


def test_cli_aligned_set_needs_no_detector(synth_data, tmp_path, capsys, ckpt_factory) -> None:
    ckpt = ckpt_factory(tmp_path / "c.ckpt")
    assert main(["eval", "--model", str(ckpt), "--pairs", str(synth_data / "test_pairs.txt")]) == 0
    captured = capsys.readouterr()
    assert "faces:" not in captured.out and "warning" not in captured.err
    rep = json.loads((tmp_path / "report.json").read_text())
    assert rep["test_pairs"]["alignment"] == "aligned" and rep["test_pairs"]["detector"] is None


@pytest.mark.parametrize("how", ["file-in-the-way", "read-only"])
def test_unwritable_cache_dir_warns_once_and_works(
    how, wild, tmp_path, capsys, ckpt_factory, oracle_name
) -> None:
    name, _ = oracle_name
    if how == "file-in-the-way":
        blocker = tmp_path / "blocker"
        blocker.write_text("not a folder")
        cache_dir = blocker / "cache"
    else:
        if os.geteuid() == 0:
            pytest.skip("root writes into read-only folders")
        cache_dir = tmp_path / "ro"
        cache_dir.mkdir()
        cache_dir.chmod(0o555)
    ckpt = ckpt_factory(tmp_path / "c.ckpt")
    out = tmp_path / "o"
    try:
        code = main(["eval", "--model", str(ckpt), "--pairs", str(wild["pairs"]), "--detector", name,
                     "--cache-dir", str(cache_dir), "--out", str(out)])  # fmt: skip
    finally:
        if how == "read-only":
            cache_dir.chmod(0o755)
    assert code == 0
    err = capsys.readouterr().err
    warnings = [ln for ln in err.splitlines() if ln.startswith("warning:")]
    assert len(warnings) == 2, err  # one line per cache, not one per image
    assert warnings[0].startswith("warning: crop cache ") and "disabled for this run" in warnings[0]
    assert warnings[1].startswith("warning: embedding cache ") and "not writable" in warnings[1]
    assert (out / "report.json").is_file()


def test_embedding_cache_disables_itself_on_write_errors(tmp_path) -> None:
    warned = []
    blocker = tmp_path / "f"
    blocker.write_text("x")
    c = EmbeddingCache(blocker / "sub", warn=warned.append)
    assert c.put({"a": 1}, np.zeros(3)) is None and c.directory is None
    assert c.put({"a": 2}, np.zeros(3)) is None
    assert len(warned) == 1 and "not writable" in warned[0]


def test_embedding_cache_on_a_full_disk_says_so_and_leaves_no_temporary(tmp_path, monkeypatch) -> None:
    import faceforge.eval.cache as cache_mod

    def short_write(fh, arr, **kw) -> None:  # numpy's error when the disk fills mid-array: no errno
        raise OSError("1021440 requested and 4064 written")

    warned: list[str] = []
    c = EmbeddingCache(tmp_path / "emb", warn=warned.append)
    monkeypatch.setattr(cache_mod.np, "save", short_write)
    monkeypatch.setattr("faceforge.fileio.free_bytes", lambda folder: 0)
    assert c.put({"a": 1}, np.zeros(3)) is None and c.directory is None
    assert len(warned) == 1 and "not writable (No space left on device (1021440 requested" in warned[0], (
        warned
    )
    assert not [p for p in (tmp_path / "emb").rglob("*") if p.name.endswith(".tmp")]
