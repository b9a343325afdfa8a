"""Model file store (the hub): known model files by name + SHA-256, looked up locally, fetched on request.
Detectors, pretrained recognisers and caches find their files here (:func:`find`, :func:`resolve`);
:func:`fetch` downloads one, verified, and only when asked. It sits below every package (it imports
only :mod:`faceforge.errors`). Details: docs/align.md, "Model files (`faceforge.hub`)".
"""

from __future__ import annotations

import hashlib
import http.client
import os
import tempfile
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from faceforge.errors import FaceforgeError, did_you_mean
from faceforge.fileio import naming_errors

__all__ = [
    "KNOWN_FILES",
    "ModelFile",
    "fetch",
    "files_status",
    "find",
    "home",
    "matches",
    "models_dir",
    "resolve",
    "search_dirs",
    "sha256_file",
]


@dataclass(frozen=True)
class ModelFile:
    """One known model file: name, file name, SHA-256 (``""``: none published), official URL, license."""

    name: str
    filename: str
    sha256: str
    url: str
    license: str
    description: str = ""
    #: other names under which the same bytes are distributed (accepted when the hash matches).
    alt_filenames: tuple[str, ...] = ()
    #: how to turn what the URL serves into the file (e.g. unzip, export), for files faceforge cannot fetch
    how: str = ""

    @property
    def verified(self) -> bool:
        """Whether a SHA-256 is known, i.e. copies are checked and ``faceforge models fetch`` works."""
        return bool(self.sha256)


_LFD = "https://raw.githubusercontent.com/ShiqiYu/libfacedetection.train/master/onnx/"
_LFD_LICENSE = "Apache-2.0 (libfacedetection.train)"
_MTCNN = "https://raw.githubusercontent.com/timesler/facenet-pytorch/master/data/"

_FILES = [
    ModelFile(
        "yunet",
        "face_detection_yunet_2023mar.onnx",
        "8f2383e4dd3cfbb4553ea8718107fc0423210dc964f9f4280604804ed2552fa4",
        "https://github.com/opencv/opencv_zoo/raw/main/models/face_detection_yunet/"
        "face_detection_yunet_2023mar.onnx",
        "MIT (OpenCV Zoo); same bytes as libfacedetection.train yunet_s_640_640.onnx",
        "YuNet-s 640x640 (OpenCV Zoo 2023mar)",
        ("yunet_s_640_640.onnx",),
    ),
    ModelFile(
        "yunet_s_640_640",
        "yunet_s_640_640.onnx",
        "8f2383e4dd3cfbb4553ea8718107fc0423210dc964f9f4280604804ed2552fa4",
        _LFD + "yunet_s_640_640.onnx",
        _LFD_LICENSE,
        "YuNet-s 640x640",
    ),
    ModelFile(
        "yunet_s_320_320",
        "yunet_s_320_320.onnx",
        "beb05bf2378aee45cd7c41056da07265b7bb91041ed1b06f923819a9c744ec36",
        _LFD + "yunet_s_320_320.onnx",
        _LFD_LICENSE,
        "YuNet-s 320x320",
    ),
    ModelFile(
        "yunet_n_640_640",
        "yunet_n_640_640.onnx",
        "25a606a145a5b6d7271ae138fbd00eba91dad8b83222ae3f2c7ecd0f4a7b0e31",
        _LFD + "yunet_n_640_640.onnx",
        _LFD_LICENSE,
        "YuNet-n 640x640",
    ),
    ModelFile(
        "yunet_n_320_320",
        "yunet_n_320_320.onnx",
        "81dbde155e982455488235acb8ec2dec5d647edf7cf7080d33e4abb69b93a0d2",
        _LFD + "yunet_n_320_320.onnx",
        _LFD_LICENSE,
        "YuNet-n 320x320",
    ),
    ModelFile(
        "scrfd",
        "scrfd_500m_bnkps.onnx",
        "6c6ba7956684796d7d582bfa1ab95dfe01dd280159f6bff1e23c1bc32bcc8431",
        _LFD + "scrfd_500m_bnkps.onnx",
        _LFD_LICENSE,
        "SCRFD-0.5GF with 5 keypoints, dynamic input",
    ),
    ModelFile(
        "retinaface",
        "retinaface_mbnet0.25.onnx",
        "13a69f2cb3012162ccce8466b1cd9e445ae1337ae641f31c90419e6179f13650",
        _LFD + "retinaface_mbnet0.25.onnx",
        _LFD_LICENSE,
        "RetinaFace MobileNet-0.25, dynamic input",
    ),
    ModelFile(
        "yolo5face",
        "yolo5face_500m_320x320.onnx",
        "846d579eee380280daeed62170ce918fd0fcee0eb0778b4bee61d8a9b5f57698",
        _LFD + "yolo5face_500m_320x320.onnx",
        _LFD_LICENSE,
        "YOLOv5-Face 0.5 GFLOPs, 320x320",
    ),
    ModelFile(
        "mtcnn_pnet",
        "pnet.pt",
        "a2a71925e0b9996a42f63e47efc1ca19043e69558b5c523b978d611dfae49c8f",
        _MTCNN + "pnet.pt",
        "MIT (facenet-pytorch)",
        "MTCNN P-Net state dict",
    ),
    ModelFile(
        "mtcnn_rnet",
        "rnet.pt",
        "bbb937de72efc9ef83b186c49f5f558467a1d7e3453a8ece0d71a886633f6a86",
        _MTCNN + "rnet.pt",
        "MIT (facenet-pytorch)",
        "MTCNN R-Net state dict",
    ),
    ModelFile(
        "mtcnn_onet",
        "onet.pt",
        "165bfbe42940416ccfb977545cf0e976d5bf321f67083ae2aaaa5c764280118d",
        _MTCNN + "onet.pt",
        "MIT (facenet-pytorch)",
        "MTCNN O-Net state dict",
    ),
]
# MediaPipe models: the bytes shipped in the mediapipe 0.10.21 wheel; the URLs are mediapipe's asset
# bucket, which the wheel's build downloads them from.
_MP = "https://storage.googleapis.com/mediapipe-assets/"
_MP_LICENSE = "Apache-2.0 (mediapipe)"
# dlib models: the uncompressed copies distributed in the face_recognition_models package (dlib.net
# serves .bz2 archives, whose checksum differs).
_DLIB = "https://github.com/ageitgey/face_recognition_models/raw/master/face_recognition_models/models/"
_FILES += [
    ModelFile(
        "mediapipe_short",
        "face_detection_short_range.tflite",
        "bbff11cebd1eb27a1e004cae0b0e63ec8c551cbf34a4451148b4908b8db3eca8",
        _MP + "face_detection_short_range.tflite",
        _MP_LICENSE,
        "BlazeFace short range, 128x128 (mediapipe 0.10.21)",
    ),
    ModelFile(
        "mediapipe_full_sparse",
        "face_detection_full_range_sparse.tflite",
        "2c3728e6da56f21e21a320433396fb06d40d9088f2247c05e5635a688d45dfe1",
        _MP + "face_detection_full_range_sparse.tflite",
        _MP_LICENSE,
        "BlazeFace full range (sparse), 192x192 (mediapipe 0.10.21)",
    ),
    ModelFile(
        "mediapipe_face_mesh",
        "face_landmark.tflite",
        "1055cb9d4a9ca8b8c688902a3a5194311138ba256bcc94e336d8373a5f30c814",
        _MP + "face_landmark.tflite",
        _MP_LICENSE,
        "MediaPipe face mesh, 468 points, 192x192 (mediapipe 0.10.21)",
    ),
    ModelFile(
        "dlib_shape68",
        "shape_predictor_68_face_landmarks.dat",
        "fbdc2cb80eb9aa7a758672cbfdda32ba6300efe9b6e6c7a299ff7e736b11b92f",
        _DLIB + "shape_predictor_68_face_landmarks.dat",
        "dlib model; trained on iBUG 300-W (research use only, see dlib-models README)",
        "dlib 68-point shape predictor",
    ),
    ModelFile(
        "dlib_shape5",
        "shape_predictor_5_face_landmarks.dat",
        "c4b1e9804792707d3a405c2c16a80a20269e6675021f64a41d30fffafbc41888",
        _DLIB + "shape_predictor_5_face_landmarks.dat",
        "CC0 (dlib-models)",
        "dlib 5-point shape predictor (eye corners, nose base)",
    ),
    ModelFile(
        "dlib_mmod",
        "mmod_human_face_detector.dat",
        "4cb19393e2fbaf2b1609a9319ad5386618c886a6234ec1b971f3e87c85d87fe6",
        _DLIB + "mmod_human_face_detector.dat",
        "CC0 (dlib-models)",
        "dlib MMOD CNN face detector",
    ),
    ModelFile(
        "dlib_resnet",
        "dlib_face_recognition_resnet_model_v1.dat",
        "55533b28a95800a551ba546ba62fe69625c7e95a7061c338adffead08719da30",
        _DLIB + "dlib_face_recognition_resnet_model_v1.dat",
        "CC0 (dlib-models)",
        "dlib ResNet face recogniser, 128-d, 150x150 chips",
    ),
]
# No SHA-256 is published for these (searched: the projects' READMEs and release pages, and the
# mirrors that redistribute them), so they are listed for their URL and license only; see
# ModelFile.verified.
_FILES += [
    ModelFile(
        "yolov8n-face",
        "yolov8n-face.onnx",
        "",
        "https://github.com/derronqi/yolov8-face",
        "GPL-3.0 (derronqi/yolov8-face); exports carry Ultralytics' AGPL-3.0 in their metadata",
        "YOLOv8n-Face, 640x640, box + score + 5 keypoints (x, y, visibility): one [1, 20, 8400] output",
        ("yoloface_8n.onnx",),
        "download yolov8n-face.pt from the repository's README and export it "
        "(pip install ultralytics; yolo export model=yolov8n-face.pt format=onnx), or take FaceFusion's "
        "export https://github.com/facefusion/facefusion-assets/releases/download/models-3.0.0/"
        "yoloface_8n.onnx (12,659,761 bytes)",
    ),
    ModelFile(
        "rtmpose_face6_m",
        "rtmpose-m_simcc-face6_256x256.onnx",
        "",
        "https://download.openmmlab.com/mmpose/v1/projects/rtmposev1/onnx_sdk/"
        "rtmpose-m_simcc-face6_pt-in1k_120e-256x256-72a37400_20230529.zip",
        "Apache-2.0 (mmpose)",
        "RTMPose-m face6: 106 LaPa face keypoints (SimCC), 256x256 face crops",
        (),
        "unzip it and rename its end2end.onnx",
    ),
    ModelFile(
        "rtmpose_face6_t",
        "rtmpose-t_simcc-face6_256x256.onnx",
        "",
        "https://download.openmmlab.com/mmpose/v1/projects/rtmposev1/onnx_sdk/"
        "rtmpose-t_simcc-face6_pt-in1k_120e-256x256-df79d9a5_20230529.zip",
        "Apache-2.0 (mmpose)",
        "RTMPose-t face6: 106 LaPa face keypoints (SimCC), 256x256 face crops",
        (),
        "unzip it and rename its end2end.onnx",
    ),
]
KNOWN_FILES: dict[str, ModelFile] = {f.name: f for f in _FILES}


def home() -> Path:
    """``$FACEFORGE_HOME`` or ``~/.cache/faceforge``."""
    env = os.environ.get("FACEFORGE_HOME")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "faceforge"


def models_dir() -> Path:
    """Where :func:`fetch` writes: ``home()/models``."""
    return home() / "models"


def search_dirs() -> list[Path]:
    """``models_dir()`` then every folder of ``$FACEFORGE_MODEL_DIRS``."""
    dirs = [models_dir()]
    extra = os.environ.get("FACEFORGE_MODEL_DIRS", "")
    dirs += [Path(p).expanduser() for p in extra.split(os.pathsep) if p.strip()]
    return dirs


def sha256_file(path: str | Path) -> str:
    """Hex SHA-256 of a file."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


@lru_cache(maxsize=256)
def sha256_cached(path: str, size: int, mtime_ns: int) -> str:
    """SHA-256 of ``path``, remembered per (path, size, mtime): a replaced file is hashed again."""
    return sha256_file(path)


def _spec(name: str | ModelFile) -> ModelFile:
    if isinstance(name, ModelFile):
        return name
    try:
        return KNOWN_FILES[name]
    except KeyError:
        raise FaceforgeError(
            f"unknown model file {name!r}{did_you_mean(name, KNOWN_FILES)}; known: {', '.join(KNOWN_FILES)}"
        ) from None


def find(name: str | ModelFile) -> Path | None:
    """The first verified copy of ``name`` in :func:`search_dirs`, or ``None``.

    For a file without a published SHA-256 the first copy under its file names counts (unverified).
    """
    spec = _spec(name)
    for d in search_dirs():
        for fn in (spec.filename, *spec.alt_filenames):
            p = d / fn
            if p.is_file():
                if not spec.verified:
                    return p
                st = p.stat()
                if sha256_cached(str(p), st.st_size, st.st_mtime_ns) == spec.sha256:
                    return p
    return None


def _no_sha_message(spec: ModelFile, what: str = "") -> str:
    how = f" ({spec.how})" if spec.how else ""
    return (
        f"{what or spec.name} file {spec.filename!r}: no SHA-256 is published for it, so faceforge does not "
        f"download it. Get it from {spec.url}{how} (license {spec.license}), then save it as "
        f"{models_dir() / spec.filename} or pass it explicitly (--detector-model FILE / model_path=)"
    )


def matches(path: str | Path, name: str | ModelFile) -> bool:
    """Whether the file at ``path`` has the registered SHA-256 of ``name`` (cached by size and mtime)."""
    spec = _spec(name)
    p = Path(path)
    if not p.is_file() or not spec.verified:
        return False
    st = p.stat()
    return sha256_cached(str(p), st.st_size, st.st_mtime_ns) == spec.sha256


def resolve(name: str | ModelFile, what: str = "") -> Path:
    """Like :func:`find` but raise a :class:`FaceforgeError` with fetch instructions when missing."""
    spec = _spec(name)
    p = find(spec)
    if p is not None:
        return p
    if not spec.verified:
        raise FaceforgeError(
            _no_sha_message(spec, what) + f"; looked in {', '.join(str(d) for d in search_dirs())}"
        )
    where = ", ".join(str(d) for d in search_dirs())
    bad = [str(d / spec.filename) for d in search_dirs() if (d / spec.filename).is_file()]
    note = f" ({', '.join(bad)} exists but its SHA-256 does not match)" if bad else ""
    raise FaceforgeError(
        f"{what or 'model'} file {spec.filename!r} not found in {where}{note}. "
        f"Fetch it with `faceforge models fetch {spec.name}` (downloads {spec.url}, license "
        f"{spec.license}), or download it yourself into {models_dir()} (sha256 {spec.sha256}), "
        "or pass the file (--detector-model FILE; --model-path for faceforge align; model_path= in Python)."
    )


def fetch(
    name: str | ModelFile,
    *,
    force: bool = False,
    timeout: float = 60.0,
    progress: Callable[[int, int | None], None] | None = None,
) -> Path:
    """Download ``name`` into :func:`models_dir` (verified), unless a verified copy is already there.

    ``progress(done_bytes, total_bytes_or_None)`` is called per chunk. Raises
    :class:`FaceforgeError` on network errors, truncated downloads and checksum mismatches; in every
    failure the partial file is removed.
    """
    spec = _spec(name)
    if not spec.verified:
        raise FaceforgeError(_no_sha_message(spec))
    dest_dir = models_dir()
    dest = dest_dir / spec.filename
    if not force and dest.is_file() and sha256_file(dest) == spec.sha256:
        return dest
    dest_dir.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{spec.filename}.", suffix=".part", dir=dest_dir)
    tmp = Path(tmp_name)
    try:
        h = hashlib.sha256()
        done = 0
        with os.fdopen(fd, "wb") as out:
            try:
                with urllib.request.urlopen(spec.url, timeout=timeout) as resp:
                    length = resp.headers.get("Content-Length")
                    total = int(length) if length and length.isdigit() else None
                    while True:
                        chunk = resp.read(1 << 16)
                        if not chunk:
                            break
                        with naming_errors(dest):  # a full disk is not a network error
                            out.write(chunk)
                        h.update(chunk)
                        done += len(chunk)
                        if progress is not None:
                            progress(done, total)
            except http.client.IncompleteRead:
                raise FaceforgeError(
                    f"downloading {spec.name} from {spec.url} was cut off after {done} bytes"
                ) from None
            except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as e:
                if isinstance(e, OSError) and e.filename == os.fspath(dest):  # our disk, not the network
                    raise FaceforgeError(f"{dest}: cannot write the download: {e.strerror}") from None
                raise FaceforgeError(
                    f"downloading {spec.name} from {spec.url} failed: {e}; check the network, or "
                    f"download the file yourself into {dest_dir} (sha256 {spec.sha256})"
                ) from None
        if total is not None and done != total:
            raise FaceforgeError(
                f"downloading {spec.name} from {spec.url} was cut off: got {done} of {total} bytes"
            )
        digest = h.hexdigest()
        if digest != spec.sha256:
            raise FaceforgeError(
                f"downloaded {spec.filename} from {spec.url} has sha256 {digest}, expected {spec.sha256}; "
                "the file was not kept (the URL may serve a different version)"
            )
        os.replace(tmp, dest)
    finally:
        if tmp.exists():
            tmp.unlink()
    return dest


def files_status() -> list[dict[str, Any]]:
    """Every known file with where a verified copy is (``path``, or ``None``)."""
    rows = []
    for spec in KNOWN_FILES.values():
        p = find(spec)
        row = asdict(spec)
        row["verified"] = spec.verified
        row["path"] = str(p) if p else None
        rows.append(row)
    return rows
