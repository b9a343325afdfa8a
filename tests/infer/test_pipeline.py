"""embed_folder / iter_embed_folder: same embeddings as FaceRecognizer.embed, input order, per-file
outcomes, bounded in-flight files, one detector per worker, clean shutdown. No model or detector files:
a fixed linear "model" and a stub detector on SynthFaces crops pasted into larger canvases."""

from __future__ import annotations

import io
import threading
import time

import numpy as np
import pytest
from PIL import Image

from faceforge import FaceRecognizer, SynthFaces
from faceforge.align.detectors.base import Detector, Face
from faceforge.align.templates import ARCFACE_112
from faceforge.errors import FaceforgeError
from faceforge.infer.loading import EmbeddingModel
from faceforge.infer.pipeline import embed_folder, iter_embed_folder, list_images
from faceforge.models.face_cfg import FaceConfig

CANVAS = 160
OFFSET = 24  # where the 112×112 SynthFaces crop sits in its canvas


class StubDetector(Detector):
    """Finds the pasted crop (template landmarks + offset); nothing in a flat image. Counts its calls
    and fails if two threads are inside ``detect`` at once (as OpenCV's YuNet must not be used)."""

    name = "stub"
    calls = 0
    calls_lock = threading.Lock()

    def __init__(self, delay: float = 0.0) -> None:
        super().__init__()
        self.delay = delay
        self.threads: set[int] = set()
        self._inside = threading.Lock()

    def _detect(self, rgb: np.ndarray) -> list[Face]:
        if not self._inside.acquire(blocking=False):
            raise AssertionError("two threads called the same detector instance at once")
        try:
            with StubDetector.calls_lock:
                StubDetector.calls += 1
            self.threads.add(threading.get_ident())
            if self.delay:
                # Uneven per-image work, so that workers finish out of order.
                time.sleep(self.delay * (int(rgb[OFFSET + 40, OFFSET + 56].sum()) % 5))
            if float(rgb.std()) < 1.0:
                return []
            box = np.array([OFFSET, OFFSET, OFFSET + 112, OFFSET + 112], np.float32)
            return [Face(bbox=box, score=0.9, landmarks=ARCFACE_112 + OFFSET)]
        finally:
            self._inside.release()


def _model() -> EmbeddingModel:
    """A fixed random linear map of the 64×64 input to 16 numbers (deterministic, no files)."""
    w = np.random.default_rng(0).standard_normal((3 * 64 * 64, 16))

    def run(x: np.ndarray) -> np.ndarray:
        # einsum, not BLAS: one thread, and a row's result does not depend on the batch it came in
        return np.einsum("bk,kn->bn", x.reshape(len(x), -1).astype(np.float64), w).astype(np.float32)

    cfg = FaceConfig(input_size=(64, 64), embedding_size=16)
    return EmbeddingModel(run, cfg, "linear", "", "onnx", "weights")


def _recognizer(detector=None) -> FaceRecognizer:
    return FaceRecognizer(_model(), detector=StubDetector() if detector is None else detector, threshold=0.3)


def _canvas(ident: int, k: int = 0) -> np.ndarray:
    crop, _ = SynthFaces(0).image(ident, k)
    img = np.full((CANVAS, CANVAS, 3), 90, np.uint8)
    img[OFFSET : OFFSET + 112, OFFSET : OFFSET + 112] = crop
    return img


def _png(rgb: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG")
    return buf.getvalue()


def _embed_threads() -> list[threading.Thread]:
    """The pipeline's worker threads and its recognition threads, while any are alive."""
    prefixes = ("faceforge-embed-", "faceforge-recognise")
    return [t for t in threading.enumerate() if t.name.startswith(prefixes)]


@pytest.fixture
def files(tmp_path):
    """12 photos (canvas), a flat picture (no face), a text file named .jpg, an aligned 64×64 crop."""
    paths = []
    for i in range(12):
        p = tmp_path / f"p{i:02d}.png"
        p.write_bytes(_png(_canvas(100 + i, i % 3)))
        paths.append(p)
    flat = tmp_path / "flat.png"
    flat.write_bytes(_png(np.full((CANVAS, CANVAS, 3), 128, np.uint8)))
    bad = tmp_path / "notes.jpg"
    bad.write_text("not a picture")
    crop = tmp_path / "crop.png"
    crop.write_bytes(_png(np.asarray(Image.fromarray(SynthFaces(0).image(7, 0)[0]).resize((64, 64)))))
    # failures in the middle, so that order and batching around them are exercised
    return [*paths[:5], flat, *paths[5:9], bad, crop, *paths[9:]]


def test_same_embeddings_as_embed_one_by_one_in_input_order(files) -> None:
    rec = _recognizer()
    res = embed_folder(rec, files, workers=3, batch_size=4, detector_factory=StubDetector)
    assert [o.index for o in res.outcomes] == list(range(len(files)))
    assert [o.path for o in res.outcomes] == [str(p) for p in files]
    status = {o.path: o.status for o in res.outcomes}
    assert status[str(files[5])] == "no_face" and status[str(files[10])] == "undecodable"
    assert sum(s == "ok" for s in status.values()) == 13 and res.counts == {
        "ok": 13, "no_face": 1, "undecodable": 1, "failed": 0,
    }  # fmt: skip
    assert "no face found" in res.outcomes[5].reason and "flat.png" in res.outcomes[5].reason
    assert "notes.jpg" in res.outcomes[10].reason
    assert res.embeddings.shape == (13, 16) and res.embeddings.dtype == np.float32
    assert res.paths == [str(p) for p in files if p.name not in ("flat.png", "notes.jpg")]
    for row, path in zip(res.embeddings, res.paths):
        ref = rec.embed(path)[0]
        assert np.abs(row - ref).max() <= 1e-6, path
    crop = next(o for o in res.outcomes if o.path.endswith("crop.png"))
    assert crop.bbox is None  # 64×64 = the model's input size: taken as aligned, not detected
    assert res.outcomes[0].bbox == [OFFSET, OFFSET, OFFSET + 112, OFFSET + 112]


def test_order_kept_when_workers_finish_out_of_order() -> None:
    rec = _recognizer()
    images = [_canvas(300 + i) for i in range(24)]
    ref = np.concatenate([rec.embed(im) for im in images])
    outs = list(
        iter_embed_folder(rec, images, workers=4, batch_size=5, detector_factory=lambda: StubDetector(0.002))
    )
    assert [o.index for o in outs] == list(range(24))
    assert np.abs(np.stack([o.embedding for o in outs]) - ref).max() <= 1e-6


def test_slow_consumer_never_has_more_than_queue_size_in_flight() -> None:
    rec = _recognizer()
    images = [_canvas(400 + i % 4) for i in range(40)]
    StubDetector.calls = 0
    consumed, most = 0, 0
    for o in iter_embed_folder(
        rec, images, workers=3, batch_size=4, queue_size=6, detector_factory=StubDetector
    ):
        in_flight = StubDetector.calls - consumed  # files started (detected) and not yet finished here
        most = max(most, in_flight)
        assert in_flight <= 6, f"{in_flight} files in flight with queue_size=6"
        assert o.ok
        time.sleep(0.003)  # a slow consumer: the workers could run far ahead if nothing held them
        consumed += 1
    assert consumed == 40 and StubDetector.calls == 40
    assert most >= 4  # the workers did work ahead of the consumer (a batch needs 4)


def test_each_worker_builds_its_own_detector_from_the_spec(files, monkeypatch) -> None:
    import faceforge.align.choose as choose

    built: list[StubDetector] = []
    builders: list[int] = []  # the thread that built each detector

    def fake_resolve(spec, model_path=None):
        assert spec == "yunet"
        det = StubDetector(0.001)
        built.append(det)
        builders.append(threading.get_ident())
        return det, "stub"

    monkeypatch.setattr(choose, "resolve_detector", fake_resolve)
    rec = FaceRecognizer(_model(), detector="yunet", threshold=0.3)
    calls_before = StubDetector.calls
    res = embed_folder(rec, files, workers=3, batch_size=4)
    assert res.counts["ok"] == 13
    # Built lazily, once per worker thread that met an image: never per image, never twice in a thread.
    assert len(builders) == len(set(builders)) and len(built) <= 3
    assert threading.get_ident() not in builders  # built in the workers, not by the caller
    # Each detector was used by exactly the thread that built it, and they detected every image.
    assert [d.threads for d in built] == [{t} for t in builders]
    assert StubDetector.calls - calls_before == 13


def test_a_detector_instance_is_shared_one_call_at_a_time(files) -> None:
    det = StubDetector(0.001)  # raises if two threads enter it at once
    rec = _recognizer(det)
    res = embed_folder(rec, files, workers=4, batch_size=3)
    assert res.counts == {"ok": 13, "no_face": 1, "undecodable": 1, "failed": 0}
    assert len(det.threads) >= 1


def test_errors_that_are_not_about_one_file_stop_the_run() -> None:
    rec = FaceRecognizer(_model(), detector=None, threshold=0.3)
    with pytest.raises(FaceforgeError, match="no face detector"):
        embed_folder(rec, [_canvas(1), _canvas(2)], workers=2)
    assert not _embed_threads()

    def broken() -> Detector:
        raise RuntimeError("detector exploded")

    with pytest.raises(RuntimeError, match="exploded"):
        embed_folder(_recognizer(), [_canvas(1)] * 5, workers=2, detector_factory=broken)
    assert not _embed_threads()
    # Without a detector, inputs that are already aligned crops still work.
    crops = [np.asarray(Image.fromarray(SynthFaces(0).image(i, 0)[0]).resize((64, 64))) for i in range(3)]
    assert embed_folder(rec, crops).counts["ok"] == 3


def test_stopping_early_stops_the_workers() -> None:
    it = iter_embed_folder(_recognizer(), [_canvas(i % 3) for i in range(50)], batch_size=2, queue_size=4)
    assert not _embed_threads()  # nothing starts before the first next()
    first = [next(it) for _ in range(3)]
    assert [o.index for o in first] == [0, 1, 2]
    it.close()
    assert not _embed_threads()


def test_progress_only_on_request(files, capsys) -> None:
    rec = _recognizer()
    embed_folder(rec, files[:3], detector_factory=StubDetector)  # stderr is not a terminal under pytest
    assert capsys.readouterr().err == ""
    embed_folder(rec, files[:3], detector_factory=StubDetector, progress=True)
    assert "embedded 3/3 (ok 3)" in capsys.readouterr().err


def test_folder_input_is_listed_recursively_and_sorted(tmp_path) -> None:
    (tmp_path / "b").mkdir()
    (tmp_path / "a").mkdir()
    for name in ("b/2.png", "a/1.png", "a/0.jpg"):
        (tmp_path / name).write_bytes(_png(_canvas(5)))
    (tmp_path / "a" / "readme.txt").write_text("not listed")
    assert [p.relative_to(tmp_path).as_posix() for p in list_images(tmp_path)] == [
        "a/0.jpg",
        "a/1.png",
        "b/2.png",
    ]
    res = embed_folder(_recognizer(), tmp_path, detector_factory=StubDetector)
    assert [o.path for o in res.outcomes] == [str(p) for p in list_images(tmp_path)]
    (tmp_path / "empty").mkdir()
    with pytest.raises(FaceforgeError, match="holds no image"):
        embed_folder(_recognizer(), tmp_path / "empty")


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"workers": 0}, "workers=0"), ({"batch_size": 0}, "batch_size=0"), ({"queue_size": 0}, "queue_size=0"),
     ({"color": "HSV"}, "color"), ({"model_workers": 0}, "model_workers=0"),
     ({"model_workers": True}, "model_workers=True")],
)  # fmt: skip
def test_bad_arguments(kwargs, match) -> None:
    with pytest.raises(FaceforgeError, match=match):
        iter_embed_folder(_recognizer(), [_canvas(1)], **kwargs)
    assert not _embed_threads()


class _Overlap:
    """A model ``run`` that takes 20 ms per call and records the most calls inside it at once."""

    def __init__(self, run) -> None:
        self.run, self.inside, self.most, self.lock = run, 0, 0, threading.Lock()

    def __call__(self, x: np.ndarray) -> np.ndarray:
        with self.lock:
            self.inside += 1
            self.most = max(self.most, self.inside)
        try:
            time.sleep(0.02)
            return self.run(x)
        finally:
            with self.lock:
                self.inside -= 1


@pytest.mark.parametrize("model_workers", [1, 2, 3])
def test_recognition_batches_in_flight_keep_outcomes_order_and_embeddings(files, model_workers) -> None:
    model = _model()
    overlap = _Overlap(model.run)
    model.run = overlap
    rec = FaceRecognizer(model, detector=StubDetector(), threshold=0.3)
    res = embed_folder(
        rec, files * 3, workers=2, batch_size=2, detector_factory=StubDetector, model_workers=model_workers
    )
    assert [o.index for o in res.outcomes] == list(range(3 * len(files)))
    assert [o.path for o in res.outcomes] == [str(p) for p in files * 3]
    assert res.counts == {"ok": 39, "no_face": 3, "undecodable": 3, "failed": 0}
    ref = np.concatenate([rec.embed(p) for p in res.paths[: len(res.paths) // 3]])
    assert np.abs(res.embeddings - np.concatenate([ref] * 3)).max() <= 1e-6
    # batches really ran side by side (and never more than asked)
    assert overlap.most == model_workers
    assert not _embed_threads()


def test_no_stall_when_one_batch_holds_every_file_in_flight() -> None:
    """Mostly faceless inputs: a batch closes only when every token is held, so it holds them all;
    with two batches allowed in flight it must still be handed out, not waited beside."""
    rec = _recognizer()
    flat = [np.full((CANVAS, CANVAS, 3), 100 + i, np.uint8) for i in range(40)]
    images = [_canvas(9), *flat, _canvas(10)]  # a face first: its batch waits for 8 crops

    def run() -> None:
        kw = {"workers": 2, "batch_size": 8, "queue_size": 5, "model_workers": 2}
        done.append(embed_folder(rec, images, detector_factory=StubDetector, **kw))

    done: list = []
    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(60)
    assert done, "embed_folder stalled"
    assert done[0].counts == {"ok": 2, "no_face": 40, "undecodable": 0, "failed": 0}
