"""``FaceRecognizer``: verify two photos, embed faces, search a gallery — PyTorch or ONNX backend. A photo
is detected, aligned to the model's template (least-squares similarity of Umeyama, TPAMI 1991), normalised
and embedded with flip-test fusion, as in training; two faces match when their cosine is ``>= threshold``
(from the model's calibration unless given). Details: docs/inference.md, "What happens to an image" and
"The threshold".
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Union

import numpy as np

from faceforge.align.choose import AUTO_ORDER
from faceforge.align.transform import crop_face
from faceforge.errors import FaceforgeError, ImageDecodeError, NoFaceError
from faceforge.eval.calibration import calibration_from_result, estimate_fmr, pick_threshold
from faceforge.infer.batching import MicroBatcher
from faceforge.infer.model_process import ModelProcesses, embed_aligned
from faceforge.models.face_cfg import FaceConfig

if TYPE_CHECKING:
    import PIL.Image

    from faceforge.align.detectors.base import Detector
    from faceforge.infer.gallery import Gallery
    from faceforge.infer.loading import EmbeddingModel

__all__ = ["DETECTOR_ORDER", "FaceRecognizer", "FaceResult", "ImageInput", "build_recognizer", "load_image"]

log = logging.getLogger(__name__)

ImageInput = Union[str, os.PathLike, bytes, "PIL.Image.Image", np.ndarray]

#: ``detector="auto"`` takes the first of these that can run here (see faceforge.align.choose).
DETECTOR_ORDER = AUTO_ORDER
# ArcFace-template crops are defined at 112×112 (Deng et al., CVPR 2019); such an image is taken as
# already aligned even for a model with a smaller input, and resized as training resized it.
_CANONICAL_ALIGNED = (112, 112)


@dataclass
class FaceResult:
    """One face of an image: where it was found, its aligned crop and its embedding."""

    bbox: list[float] | None  # x1, y1, x2, y2 in image pixels (None: the input was already aligned)
    score: float | None
    landmarks: list[list[float]] | None  # [5][2]
    aligned: np.ndarray  # H×W×3 uint8 RGB crop at the model's input size
    embedding: np.ndarray  # [E] float32, L2-normalised

    def to_dict(self) -> dict[str, Any]:
        """The ``face_dict`` of :meth:`FaceRecognizer.verify` (``aligned`` stays an array)."""
        return {"bbox": self.bbox, "score": self.score, "landmarks": self.landmarks, "aligned": self.aligned}


# --------------------------------------------------------------------------------------------------
# image input


def _describe(image: Any) -> str:
    if isinstance(image, (str, os.PathLike)):
        return str(image)
    if isinstance(image, (bytes, bytearray, memoryview)):
        return f"<{len(image)} bytes>"
    if isinstance(image, np.ndarray):
        return f"<array {'x'.join(map(str, image.shape))} {image.dtype}>"
    return f"<{type(image).__name__}>"


def _from_pil(im: Any, source: str) -> np.ndarray:
    """An in-memory PIL image → upright RGB uint8 under the decoder's pixel limit (EXIF, modes)."""
    from PIL import ImageOps

    from faceforge.align.detectors.base import to_rgb_uint8
    from faceforge.imageio import ImageTooLargeError, default_max_pixels

    w, h = (int(v) for v in im.size)
    limit = default_max_pixels()
    if w * h > limit:
        raise ImageTooLargeError(f"image {source} is {w}x{h} = {w * h:,} pixels; the limit is {limit:,}")

    try:
        im = ImageOps.exif_transpose(im)
        if im.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N"):
            arr = np.clip(np.asarray(im, dtype=np.int64), 0, 65535).astype(np.uint16)
        elif im.mode == "F":
            arr = np.asarray(im, dtype=np.float32)
        elif im.mode in ("L", "RGB"):
            arr = np.asarray(im)
        else:
            arr = np.asarray(im.convert("RGBA" if "A" in im.mode or im.mode == "P" else "RGB"))
    except (OSError, ValueError, SyntaxError) as e:
        raise ImageDecodeError(f"cannot decode image {source}: {e}") from None
    if arr.ndim < 2 or arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ImageDecodeError(f"image {source} is empty (shape {arr.shape})")
    try:
        return to_rgb_uint8(arr)
    except FaceforgeError as e:
        raise ImageDecodeError(f"image {source}: {e}") from None


def load_image(image: ImageInput, color: str = "RGB") -> np.ndarray:
    """Any :data:`ImageInput` → upright RGB uint8 ``[H, W, 3]``.

    Paths and bytes go through the guarded decoder (:func:`faceforge.imageio.decode_image`: the declared
    size is checked against the pixel limit before decoding, EXIF orientation applied, every failure a
    one-line :class:`ImageDecodeError`); a PIL image is converted; an ndarray is H×W, H×W×3 or H×W×4 in
    ``color`` order ("RGB" or "BGR", e.g. what ``cv2.imread`` returns).
    """
    from PIL import Image

    from faceforge.align.detectors.base import to_rgb_uint8
    from faceforge.imageio import decode_image

    color = _check_color(color)
    source = _describe(image)
    if isinstance(image, (str, os.PathLike)):
        p = Path(image)
        if not p.is_file():
            raise FaceforgeError(f"image {p} does not exist")
        return decode_image(p)
    if isinstance(image, (bytes, bytearray, memoryview)):
        if not len(image):
            raise ImageDecodeError("image bytes are empty (0 bytes); expected JPEG/PNG/... file content")
        return decode_image(bytes(image), source=source)
    if isinstance(image, Image.Image):
        return _from_pil(image, source)
    if isinstance(image, np.ndarray):
        try:
            rgb = to_rgb_uint8(image)
        except FaceforgeError as e:
            raise ImageDecodeError(f"image {source}: {e}") from None
        if color == "BGR":
            rgb = np.ascontiguousarray(rgb[:, :, ::-1])
        return rgb
    raise ImageDecodeError(
        f"unsupported image input {source}; expected a path, bytes, a PIL image or an H×W×3 uint8 array"
    )


def _check_color(color: str) -> str:
    c = str(color).upper()
    if c not in ("RGB", "BGR"):
        raise FaceforgeError(f"color must be 'RGB' or 'BGR', got {color!r}")
    return c


def _is_batch(images: Any) -> bool:
    return isinstance(images, (list, tuple))


# --------------------------------------------------------------------------------------------------
# calibration sources


def _calibration_from_report(path: Path) -> dict[str, Any]:
    """Calibration of a ``report.json``: its ``"calibration"``, else from the first model row."""
    try:
        rep = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise FaceforgeError(f"calibration report {path} cannot be read as JSON: {e}") from None
    if not isinstance(rep, dict):
        return {}
    if isinstance(rep.get("calibration"), dict):
        return dict(rep["calibration"])
    for name, res in rep.items():
        if not isinstance(res, dict) or name.endswith("(raw pixels)"):
            continue
        if isinstance(res.get("calibration"), dict):
            return dict(res["calibration"])
        if "threshold_cos" in res:
            n = res.get("n_pairs")
            return calibration_from_result(res, f"{path} {name}" + (f" ({n} pairs)" if n else ""))
    return {}


# --------------------------------------------------------------------------------------------------


class FaceRecognizer:
    """Face verification / embedding / search with a trained model (docs/inference.md).

    Build one with :meth:`from_checkpoint`, :meth:`from_onnx` or :meth:`from_name`.
    """

    #: sum the embeddings of a crop and its mirror (insightface flip test; the calibration used it)
    flip: bool = True

    def __init__(
        self,
        model: EmbeddingModel,
        *,
        calibration: dict[str, Any] | None = None,
        detector: str | os.PathLike | Detector | None = "auto",
        threshold: float | None = None,
        far: float | None = None,
    ) -> None:
        self.model = model
        self.face_cfg = model.face_cfg
        self.name = model.name
        self.source = model.source
        self.calibration = dict(model.calibration if calibration is None else calibration)
        self._detector_spec = detector
        self._detector: Detector | None = None
        self._detector_name: str | None = None
        # OpenCV's DNN nets (YuNet) are not safe to call from several threads at once; a service
        # shares one recognizer between request threads, so detection is serialised.
        self._detect_lock = threading.Lock()
        self._batcher: MicroBatcher | None = None
        self._procs: ModelProcesses | None = None
        if threshold is not None:
            self.threshold: float | None = float(threshold)
            self._threshold_from = "argument"
        else:
            self.threshold = pick_threshold(self.calibration, far)
            self._threshold_from = "calibration" if self.threshold is not None else None
        self.far_target = far if far is not None else self.calibration.get("far_target")
        h, w = (int(v) for v in self.face_cfg.input_size)
        self._size = (h, w)
        if self.face_cfg.template == "none":
            # A whole-image model (objects, products) never looks for faces, whatever detector was asked.
            self._detector_spec = None

    # ---------------------------------------------------------------------------------- building
    @classmethod
    def from_model(
        cls,
        spec: str | os.PathLike,
        *,
        arch: str | None = None,
        overrides: dict[str, Any] | None = None,
        detector: str | os.PathLike | Detector | None = "auto",
        threshold: float | None = None,
        far: float | None = None,
        device: str = "cpu",
        precision: str = "fp32",
    ) -> FaceRecognizer:
        """A recognizer for whatever ``--model`` accepts (:func:`faceforge.infer.loading.load_model`):
        a pretrained name (``"dlib"``), a faceforge ``.ckpt`` or ONNX file, an insightface model-zoo
        ONNX, dlib's ``.dat``, or an arcface_torch / AdaFace / EdgeFace / face.evoLVe state dict
        (``arch`` names its backbone when the keys leave a choice; ``overrides`` replace inferred
        preprocessing facts: ``color``, ``mean``, ``std``, ``template``, ``input_size``;
        ``precision`` ``fp32``/``bf16``/``auto`` for PyTorch models, see :func:`load_model`).
        """
        from faceforge.infer.loading import load_model

        model = load_model(spec, arch=arch, overrides=overrides, device=device, precision=precision)
        return cls(model, detector=detector, threshold=threshold, far=far)

    @classmethod
    def from_pretrained(
        cls,
        name: str = "dlib",
        *,
        detector: str | os.PathLike | Detector | None = "auto",
        threshold: float | None = None,
        far: float | None = None,
        device: str = "cpu",
    ) -> FaceRecognizer:
        """A registered pretrained model (``faceforge models list``), from its verified local file."""
        from faceforge.models.pretrained import get_pretrained

        get_pretrained(name)  # unknown names list the known ones
        return cls.from_model(name, detector=detector, threshold=threshold, far=far, device=device)

    @classmethod
    def from_checkpoint(
        cls,
        path: str | os.PathLike,
        *,
        detector: str | os.PathLike | Detector | None = "auto",
        threshold: float | None = None,
        far: float | None = None,
        device: str = "cpu",
    ) -> FaceRecognizer:
        """A recognizer for a faceforge training checkpoint or any weights file ``from_model`` reads.

        The calibration is the checkpoint's; when it has none, a ``report.json`` of the run
        directory (``faceforge eval``) is used.
        """
        return cls.from_model(path, detector=detector, threshold=threshold, far=far, device=device)

    @classmethod
    def from_onnx(
        cls,
        path: str | os.PathLike,
        *,
        detector: str | os.PathLike | Detector | None = "auto",
        threshold: float | None = None,
        far: float | None = None,
        overrides: dict[str, Any] | None = None,
    ) -> FaceRecognizer:
        """A recognizer for an ONNX file: faceforge's (metadata) or an insightface model-zoo one.

        Preprocessing facts and the calibration are read from faceforge's ``metadata_props``; a file
        without them gets insightface's conventions (see :mod:`faceforge.export.foreign_onnx`).
        """
        if Path(path).suffix.lower() != ".onnx":
            raise FaceforgeError(
                f"{path} is not an .onnx file; use FaceRecognizer.from_model for other files"
            )
        return cls.from_model(path, overrides=overrides, detector=detector, threshold=threshold, far=far)

    @classmethod
    def from_name(
        cls,
        name: str,
        *,
        weights: str | os.PathLike | None = None,
        detector: str | os.PathLike | Detector | None = "auto",
        threshold: float | None = None,
    ) -> FaceRecognizer:
        """A registered backbone (``faceforge.list_models()``, ``timm/<name>``) with a weights file.

        Nothing is downloaded. Without ``weights`` the model is randomly initialised (useful for
        tests only, and a warning is logged); such a model has no calibration, so pass ``threshold``.
        """
        from faceforge.infer.loading import EmbeddingModel, torch_runner
        from faceforge.models.backbones import create_model, load_backbone_weights

        module = create_model(name)
        if weights is not None:
            load_backbone_weights(module, weights)
        else:
            log.warning(
                "FaceRecognizer.from_name(%r) without weights: the model is randomly initialised", name
            )
        cfg = getattr(module, "face_cfg", FaceConfig())
        model = EmbeddingModel(
            torch_runner(module, "cpu"), cfg, name, str(weights) if weights else "", "torch", "weights",
            {}, module, {"weights": str(weights) if weights else "random initialisation"}, name,
        )  # fmt: skip
        return cls(model, detector=detector, threshold=threshold)

    # ---------------------------------------------------------------------------------- facts
    @property
    def backend(self) -> str:
        """``"torch"`` or ``"onnx"``."""
        return self.model.backend

    def info(self) -> dict[str, Any]:
        """JSON-able facts: model, backend, preprocessing, threshold and where it came from, detector."""
        cfg = self.face_cfg
        return {
            "name": self.name,
            "backend": self.backend,
            "source": self.source,
            "embedding_size": int(cfg.embedding_size),
            "input_size": [int(v) for v in cfg.input_size],
            "color": cfg.color,
            "mean": [float(v) for v in cfg.mean],
            "std": [float(v) for v in cfg.std],
            "template": cfg.template,
            "flip_test": bool(self.flip),
            "threshold": self.threshold,
            "threshold_source": self._threshold_from,
            "far_target": self.far_target,
            "calibration_source": self.calibration.get("source"),
            "detector": self._detector_label(),
            "facts": dict(self.model.facts),
        }

    @property
    def detector_missing(self) -> bool:
        """Whether ``detector="auto"`` was asked and no detector can run here (photos then fail)."""
        if self._detector_name is not None or self._detector_spec != "auto":
            return False
        from faceforge.align.choose import auto_detector_name

        return auto_detector_name() is None

    def _detector_label(self) -> str | None:
        if self._detector_name is not None:
            return self._detector_name
        spec = self._detector_spec
        if spec is None:
            return None
        if spec == "auto":
            from faceforge.align.choose import auto_detector_name

            return auto_detector_name() or "auto (none available)"
        if isinstance(spec, (str, os.PathLike)):
            return str(spec)
        return getattr(spec, "name", type(spec).__name__)

    # ---------------------------------------------------------------------------------- detection
    @property
    def detector(self) -> Detector:
        """The face detector, built on first use (``detector="auto"``: SCRFD, else YuNet, else dlib)."""
        from faceforge.align.choose import resolve_detector

        with self._detect_lock:
            if self._detector is None:
                if self._detector_spec is None:
                    raise FaceforgeError(
                        "this recognizer has no face detector (detector=None); pass aligned crops at the "
                        "model's input size, or build it with detector='auto' / 'yunet' / 'scrfd'"
                    )
                self._detector, self._detector_name = resolve_detector(self._detector_spec)
        return self._detector

    def _is_aligned(self, rgb: np.ndarray, aligned: bool | None) -> bool:
        if self.face_cfg.template == "none":
            return True  # whole-image model: every image is its own crop (aligned=False cannot detect)
        if aligned is not None:
            return bool(aligned)
        hw = tuple(rgb.shape[:2])
        return hw == self._size or (self.face_cfg.template == "arcface" and hw == _CANONICAL_ALIGNED)

    def _faces(
        self, image: ImageInput, color: str, aligned: bool | None, largest_only: bool
    ) -> list[tuple[np.ndarray, dict[str, Any]]]:
        """``(aligned RGB crop, face facts)`` for each face (or the largest) of ``image``."""
        rgb = load_image(image, color)
        if self._is_aligned(rgb, aligned):
            return [(crop_face(rgb, None, self.face_cfg), {"bbox": None, "score": None, "landmarks": None})]
        detector = self.detector
        with self._detect_lock:
            faces = detector.detect(rgb)
        if not faces:
            raise NoFaceError(
                f"no face found in {_describe(image)} ({rgb.shape[1]}x{rgb.shape[0]} px) by the "
                f"{self._detector_name} detector"
            )
        if largest_only:
            faces = [max(faces, key=lambda f: f.area)]
        out = []
        for f in faces:
            facts = {
                "bbox": [round(float(v), 2) for v in f.bbox],
                "score": round(float(f.score), 4),
                "landmarks": [[round(float(x), 2), round(float(y), 2)] for x, y in f.landmarks],
            }
            out.append((crop_face(rgb, f.landmarks, self.face_cfg), facts))
        return out

    # ---------------------------------------------------------------------------------- embedding
    def embed_crops(self, crops: np.ndarray) -> np.ndarray:
        """L2-normalised embeddings ``[N, E]`` of aligned RGB uint8 crops ``[N, H, W, 3]``."""
        crops = np.asarray(crops)
        if crops.ndim != 4 or crops.shape[1:3] != self._size or crops.shape[3] != 3:
            raise FaceforgeError(
                f"aligned crops must be [N, {self._size[0]}, {self._size[1]}, 3] uint8 RGB, got {crops.shape}"
            )
        if len(crops) == 0:
            return np.zeros((0, int(self.face_cfg.embedding_size)), np.float32)
        if self._batcher is not None:
            return self._batcher.submit(crops)
        return self._embed_crops_now(crops)

    def _embed_crops_now(self, crops: np.ndarray) -> np.ndarray:
        return embed_aligned(self.model.run, self.face_cfg, bool(self.flip), crops)

    def embed(
        self, images: ImageInput | Sequence[ImageInput], *, color: str = "RGB", aligned: bool | None = None
    ) -> np.ndarray:
        """float32 ``[N, E]`` L2-normalised embeddings, one per image (its largest face).

        A single image gives ``[1, E]``. ``aligned=None`` detects unless the image already has the
        model's input size (or is a 112×112 ArcFace crop); True/False force either way.
        """
        batch = list(images) if _is_batch(images) else [images]
        crops = []
        for i, img in enumerate(batch):
            try:
                crops.append(self._faces(img, color, aligned, largest_only=True)[0][0])
            except FaceforgeError as e:
                if len(batch) > 1:
                    raise type(e)(f"image #{i}: {e}") from None
                raise
        return self.embed_crops(np.stack(crops)) if crops else self.embed_crops(np.zeros((0, *self._size, 3)))

    def embed_faces(
        self, image: ImageInput, *, color: str = "RGB", aligned: bool | None = None
    ) -> list[FaceResult]:
        """Every face of ``image`` (best detector score first), each with its crop and embedding."""
        faces = self._faces(image, color, aligned, largest_only=False)
        emb = self.embed_crops(np.stack([c for c, _ in faces]))
        return [FaceResult(f["bbox"], f["score"], f["landmarks"], c, e) for (c, f), e in zip(faces, emb)]

    def enable_batching(
        self, max_batch: int = 32, max_wait_s: float = 0.0, workers: int = 1, process: bool = False
    ) -> MicroBatcher:
        """Route every crop embedding through one :class:`~faceforge.infer.batching.MicroBatcher`.

        For a service: concurrent ``verify``/``embed``/``find`` calls from request threads then share
        model batches (detection stays per request, serialised per detector), so the model is called
        from ``workers`` threads only (one by default). With ``process=True`` each worker hands its
        batches to a model process of its own (:class:`~faceforge.infer.model_process.ModelProcesses`,
        PyTorch models only): the model then runs beside the request threads instead of taking turns
        with them for the interpreter lock. Returns the batcher (its ``batches``/``rows`` counters show
        the batching). The model, flip and preprocessing are those of the moment this is called.
        """
        if self._batcher is None:
            fn: Any = self._embed_crops_now
            if process:
                import torch

                self._procs = ModelProcesses(
                    self.model.run, self.face_cfg, bool(self.flip), workers, torch.get_num_threads()
                )
                fn = self._procs
            self._batcher = MicroBatcher(fn, max_batch, max_wait_s, workers)
        return self._batcher

    @property
    def batch_process(self) -> ModelProcesses | None:
        """The model processes of the batcher, when :meth:`enable_batching` started them."""
        return self._procs

    def disable_batching(self) -> None:
        """Stop the micro-batcher (and its model processes, if any); embeddings run in the caller's
        thread again."""
        if self._batcher is not None:
            self._batcher.close()
            self._batcher = None
        if self._procs is not None:
            self._procs.close()
            self._procs = None

    # ---------------------------------------------------------------------------------- use
    def _resolve_threshold(self, threshold: float | None) -> float:
        if threshold is not None:
            t = float(threshold)
        elif self.threshold is not None:
            t = self.threshold
        else:
            raise FaceforgeError(
                f"model {self.source or self.name!r} has no calibration, so there is no verification "
                "threshold; pass one (threshold=0.3, or --threshold on the command line)"
            )
        if not -1.0 <= t <= 1.0 or t != t:
            raise FaceforgeError(f"threshold must be a cosine similarity in [-1, 1], got {threshold}")
        return t

    def verify(
        self, a: ImageInput, b: ImageInput, *, threshold: float | None = None, color: str = "RGB"
    ) -> dict[str, Any]:
        """Are ``a`` and ``b`` the same person? Cosine similarity of their largest faces vs the threshold.

        Returns ``{"verified", "similarity", "threshold", "faces": {"a": face, "b": face}}`` where a face
        is ``{"bbox", "score", "landmarks", "aligned"}`` (``aligned``: the RGB crop the model saw), and
        ``false_match_rate`` (:func:`~faceforge.eval.calibration.estimate_fmr`: the share of the
        calibration's impostor pairs scoring at least this similarity) when the calibration has one.
        """
        t = self._resolve_threshold(threshold)
        faces = {}
        for key, img in (("a", a), ("b", b)):
            try:
                crop, facts = self._faces(img, color, None, largest_only=True)[0]
            except FaceforgeError as e:
                raise type(e)(f"image {key}: {e}") from None
            faces[key] = {**facts, "aligned": crop}
        emb = self.embed_crops(np.stack([faces["a"]["aligned"], faces["b"]["aligned"]]))
        sim = float(np.clip(emb[0] @ emb[1], -1.0, 1.0))
        out = {"verified": bool(sim >= t), "similarity": sim, "threshold": t, "faces": faces}
        # How often two different people score this high, from the calibration's impostor pairs.
        est = estimate_fmr(self.calibration, sim)
        if est is not None:
            out["false_match_rate"] = est
        return out

    def find(self, image: ImageInput, gallery: Gallery, k: int = 5) -> list[dict[str, Any]]:
        """The ``k`` gallery entries most similar to the largest face of ``image``, best first."""
        emb = self.embed(image)
        if gallery.dim != emb.shape[1]:
            raise FaceforgeError(
                f"gallery embeddings have {gallery.dim} dimensions but model {self.name!r} gives "
                f"{emb.shape[1]}; build the gallery with this model"
            )
        return gallery.search(emb, k)[0]

    def __repr__(self) -> str:
        return (
            f"FaceRecognizer(name={self.name!r}, backend={self.backend!r}, "
            f"input_size={tuple(self.face_cfg.input_size)}, threshold={self.threshold})"
        )


def build_recognizer(
    model: str | os.PathLike,
    *,
    arch: str | None = None,
    overrides: dict[str, Any] | None = None,
    precision: str = "fp32",
    detector: str | None = "auto",
    detector_model: str | None = None,
    threshold: float | None = None,
    far: float | None = None,
) -> FaceRecognizer:
    """A recognizer for ``--model`` and the options every verb shares.

    ``detector_model`` is the weights file of the backend named by ``detector`` (``--detector-model``
    needs ``--detector NAME``); a whole-image model (template ``none``) never builds a detector.
    """
    from faceforge.infer.loading import load_model

    det: Any = detector
    if detector_model:
        from faceforge.align.detectors.base import list_detectors

        if detector in ("auto", None) or detector not in list_detectors():
            names = ", ".join(list_detectors())
            raise FaceforgeError(f"--detector-model {detector_model} needs --detector NAME (one of {names})")
        if not Path(detector_model).is_file():
            raise FaceforgeError(f"--detector-model {detector_model} does not exist")
    loaded = load_model(model, arch=arch, overrides=overrides, precision=precision)
    if detector_model and loaded.face_cfg.template != "none":
        from faceforge.align.detectors.base import create_detector

        det = create_detector(detector, model_path=detector_model)
    return FaceRecognizer(loaded, detector=det, threshold=threshold, far=far)
