"""The REST service: :func:`create_app` ``(recognizer, gallery)`` → a FastAPI app (OpenAPI 3.1) with
``/v1/verify``, ``/v1/embed``, ``/v1/search``, ``/v1/models``, ``/healthz`` and the verify page, guarded by an
ASGI middleware (body size, API key, ``multipart/form-data``, RFC 7578) and a shared decode budget
(:class:`DecodeBudget`). Details: docs/serve.md, including "Implementation notes".
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hmac
import io
import logging
import math
import re
import threading
import time
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable
from importlib import resources
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import numpy as np
from fastapi import Depends, FastAPI, File, Form, Request, UploadFile
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.security import APIKeyHeader
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException as StarletteHTTPException

from faceforge import __version__
from faceforge.errors import FaceforgeError, ImageDecodeError, NoFaceError
from faceforge.imageio import (
    IMAGE_FORMATS,
    ImageTooLargeError,
    decode_cost,
    decode_image_scaled,
    probe,
    release_memory,
)

if TYPE_CHECKING:
    from faceforge.infer.gallery import Gallery
    from faceforge.infer.recognizer import FaceRecognizer

__all__ = [
    "DEFAULT_DECODE_MAX_SIDE",
    "DEFAULT_DECODE_WAIT_S",
    "DEFAULT_MAX_BODY_BYTES",
    "DEFAULT_MAX_DECODE_BYTES",
    "DEFAULT_MAX_PIXELS",
    "IMAGE_FORMATS",
    "DecodeBudget",
    "ImageTooLargeError",
    "auto_batch_process",
    "create_app",
    "decode_upload",
    "redact_paths",
]

log = logging.getLogger(__name__)

DEFAULT_MAX_BODY_BYTES = 10 * 2**20
#: decoded image size limit: a 10 MiB PNG of a flat colour can hold gigapixels (a "decompression bomb")
DEFAULT_MAX_PIXELS = 40_000_000
#: bytes the decoded images of all requests in flight may hold together (``--max-decode-mb``)
DEFAULT_MAX_DECODE_BYTES = 512 * 2**20
#: longer side an upload is shrunk to while decoding (detection and crops need no more)
DEFAULT_DECODE_MAX_SIDE = 2048
#: crops of concurrent requests embedded in one model call when batching pays (``--max-batch auto``)
DEFAULT_MAX_BATCH = 16
#: on a CPU, ``auto`` batches when one call on :data:`PROBE_CROPS` crops costs at most this share of as
#: many single calls (measured at start-up by :func:`probe_batching`)
BATCH_PAYS_RATIO = 0.6
PROBE_CROPS = 8
#: a single CPU call slower than this (a crop and its flip) is compute-bound and is not probed: on the
#: 2-core CPU measured, GhostFaceNetV1 at 112×112 (38 ms a pass) and IResNet-50 (190 ms) cost as much
#: per crop in a batch as alone, while the 64×64 quickstart model cost 5× less per crop in a batch of 8
#: (docs/performance.md)
PROBE_MAX_SINGLE_S = 0.1


def probe_batching(recognizer: FaceRecognizer, repeats: int = 3) -> float | None:
    """Cost of one call on :data:`PROBE_CROPS` blank crops over that of as many single calls (best of
    ``repeats`` each, after a warm-up), or None when a single call alone exceeds :data:`PROBE_MAX_SINGLE_S`.

    Micro-batching pays where a call's fixed cost (operator dispatch, small layers) outweighs the
    per-crop arithmetic; this measures which regime the served model is in on this machine.
    """
    h, w = (int(v) for v in recognizer.face_cfg.input_size)
    crops = np.full((PROBE_CROPS, h, w, 3), 128, np.uint8)

    def best(n: int) -> float:
        recognizer.embed_crops(crops[:n])  # warm-up: first-call allocations are not the point
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            recognizer.embed_crops(crops[:n])
            times.append(time.perf_counter() - t0)
        return min(times)

    single = best(1)
    if single > PROBE_MAX_SINGLE_S:
        return None
    return best(PROBE_CROPS) / (PROBE_CROPS * single)


#: the probe's answer per recognizer (an app built again for the same one does not probe again)
_PROBED: weakref.WeakKeyDictionary[Any, float | None] = weakref.WeakKeyDictionary()


def auto_max_batch(recognizer: FaceRecognizer) -> int:
    """:data:`DEFAULT_MAX_BATCH` on a GPU, or on a CPU when :func:`probe_batching` finds that a batch
    costs at most :data:`BATCH_PAYS_RATIO` of its crops' single calls; else 1 (one request at a time)."""
    device = getattr(getattr(recognizer.model, "run", None), "device", None)
    if getattr(device, "type", "cpu") == "cuda":
        return DEFAULT_MAX_BATCH
    if recognizer not in _PROBED:
        recognizer.disable_batching()  # the probe times the model itself, not an earlier app's batcher
        _PROBED[recognizer] = probe_batching(recognizer)
    ratio = _PROBED[recognizer]
    return DEFAULT_MAX_BATCH if ratio is not None and ratio <= BATCH_PAYS_RATIO else 1


def auto_batch_process(recognizer: FaceRecognizer) -> bool:
    """Whether a batched service runs its model in model processes by default: for a PyTorch model on
    a CPU with at least two cores. There the model's Python-level dispatch would otherwise take turns
    with HTTP parsing, decoding and alignment for the interpreter lock; in a process of its own it runs
    beside them (docs/serve.md, "Model processes"). ONNX Runtime releases the lock by itself, and a
    GPU runs the arithmetic elsewhere already."""
    from faceforge.infer.model_process import on_multicore_cpu

    run = getattr(recognizer.model, "run", None)
    return recognizer.backend == "torch" and on_multicore_cpu(run, unknown_is_cpu=False)


#: seconds a request waits for decode budget before it gets 503 + Retry-After
DEFAULT_DECODE_WAIT_S = 5.0
API_KEY_HEADER = "X-API-Key"
#: endpoints that take a multipart upload (content-type checked before the body is read)
UPLOAD_PATHS = frozenset({"/v1/verify", "/v1/embed", "/v1/search"})
#: paths open without the API key
OPEN_PATHS = frozenset({"/", "/healthz", "/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc"})

_T = TypeVar("_T")

_CODES = {
    400: "bad_request",
    401: "unauthorized",
    404: "not_found",
    405: "method_not_allowed",
    409: "no_gallery",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "invalid_request",
    503: "busy",
}


# --------------------------------------------------------------------------------------------------
# response models (they make the OpenAPI document precise, which schemathesis checks against)


class ErrorDetail(BaseModel):
    code: str = Field(description="machine-readable reason, e.g. not_an_image, no_face, payload_too_large")
    message: str = Field(description="what was wrong, naming the field or file")


class ErrorBody(BaseModel):
    error: ErrorDetail


class FaceOut(BaseModel):
    bbox: list[float] | None = Field(None, description="x1, y1, x2, y2 in pixels; null for an aligned input")
    score: float | None = Field(None, description="detector confidence; null for an aligned input")
    landmarks: list[list[float]] | None = Field(None, description="5 points [x, y]: eyes, nose, mouth")
    aligned_png: str | None = Field(None, description="the aligned crop the model saw, base64 PNG")


class VerifyFaces(BaseModel):
    a: FaceOut
    b: FaceOut


class VerifyOut(BaseModel):
    verified: bool = Field(description="similarity >= threshold")
    similarity: float = Field(description="cosine similarity of the two embeddings, in [-1, 1]")
    threshold: float
    model: str
    faces: VerifyFaces


class EmbedOut(BaseModel):
    model: str
    dim: int
    embeddings: list[list[float]] = Field(description="L2-normalised, one per face")
    faces: list[FaceOut]


class SearchHit(BaseModel):
    label: str
    similarity: float
    index: int
    meta: dict[str, Any] = Field(default_factory=dict)


class SearchOut(BaseModel):
    model: str
    k: int
    gallery_size: int
    results: list[SearchHit]


class HealthOut(BaseModel):
    status: str
    model: str
    gallery_size: int | None
    limits: dict[str, Any] = Field(
        default_factory=dict, description="the service's input limits (docs/security.md)"
    )
    decode: dict[str, Any] = Field(
        default_factory=dict, description="decode budget use: bytes held now and at the peak, refusals"
    )
    batching: dict[str, Any] = Field(
        default_factory=dict,
        description="micro-batching: max_batch, max_wait_ms, workers, model calls so far and crops embedded",
    )


class ModelsOut(BaseModel):
    models: list[dict[str, Any]]
    gallery: dict[str, Any] | None


def _doc(*codes: int) -> dict[int | str, dict[str, Any]]:
    text = {
        400: "not an image / bad input",
        401: f"missing or wrong {API_KEY_HEADER}",
        409: "no gallery loaded",
        413: "body or image too large",
        415: "not multipart/form-data",
        422: "no face found, or an invalid form",
        503: "busy: the decode budget stayed full (retry after Retry-After seconds)",
    }
    return {c: {"model": ErrorBody, "description": text[c]} for c in codes}


# --------------------------------------------------------------------------------------------------
# errors


class ServiceBusyError(FaceforgeError):
    """The decode budget stayed full for ``decode_wait_s``: answered 503 with ``Retry-After``."""

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class _BodyTooLarge(StarletteHTTPException):
    """Raised from ``receive`` when a streamed body passes the limit (FastAPI re-raises HTTP errors)."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"request body exceeds the limit of {limit} bytes")


def _error(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status)


async def _send_error(
    send: Callable[[dict], Awaitable[None]], status: int, code: str, message: str, *, close: bool = True
) -> None:
    """Answer at the ASGI level, before any route runs.

    ``close``: the request body was left unread, so the connection cannot be reused.
    """
    resp = _error(status, code, message)
    if close:
        resp.headers["connection"] = "close"
    await send({"type": "http.response.start", "status": status, "headers": resp.raw_headers})
    await send({"type": "http.response.body", "body": resp.body})


async def _drain(receive: Callable[[], Awaitable[dict]], limit: int) -> bool:
    """Read and drop a request body of at most ``limit`` bytes; True when all of it was read.

    Closing a TCP socket with unread input makes the kernel send RST, which can destroy a response the
    client has not read yet (RFC 9112 §9.6 asks servers to close gracefully); a body within the limit is
    therefore consumed before an early 401/415, and the connection stays usable.
    """
    seen = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return False
        seen += len(message.get("body", b""))
        if seen > limit:
            return False
        if not message.get("more_body", False):
            return True


def _validation_message(exc: RequestValidationError) -> str:
    parts = []
    for err in exc.errors()[:5]:
        loc = [str(x) for x in err.get("loc", ()) if x not in ("body", "query", "header")]
        parts.append(f"field {'.'.join(loc) or '?'!r}: {err.get('msg', 'invalid')}")
    return "; ".join(parts) or "invalid request"


class _Guard:
    """ASGI middleware: API key, body size limit and content type, all checked before the body is read."""

    def __init__(self, app: Any, *, api_key: str | None, max_body_bytes: int) -> None:
        self.app = app
        self.api_key = api_key.encode() if api_key else None
        self.limit = int(max_body_bytes)

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path, headers = scope.get("path", ""), Headers(scope=scope)
        length = headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > self.limit:
            await _send_error(
                send,
                413,
                "payload_too_large",
                f"request body of {int(length)} bytes exceeds the limit of {self.limit} bytes",
            )
            return
        refusal: tuple[int, str, str] | None = None
        if self.api_key is not None and path not in OPEN_PATHS:
            given = headers.get(API_KEY_HEADER.lower(), "").encode("latin-1", "replace")
            # constant-time comparison: the key must not leak through response timing
            if not hmac.compare_digest(given, self.api_key):
                what = "wrong" if given else "missing"
                refusal = (401, "unauthorized", f"{what} {API_KEY_HEADER} header")
        if refusal is None and scope.get("method") == "POST" and path in UPLOAD_PATHS:
            ctype = headers.get("content-type", "")
            if ctype.split(";", 1)[0].strip().lower() != "multipart/form-data":
                refusal = (
                    415,
                    "unsupported_media_type",
                    f"{path} takes multipart/form-data (file uploads), got {ctype or 'no Content-Type'!r}",
                )
        if refusal is not None:
            drained = await _drain(receive, self.limit)
            await _send_error(send, *refusal, close=not drained)
            return

        received = 0
        started = False

        async def limited_receive() -> dict:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    raise _BodyTooLarge(self.limit)
            return message

        async def tracking_send(message: dict) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except _BodyTooLarge as e:
            # Normally the route's exception handler answers; this covers a read outside a route.
            if started:
                raise
            await _send_error(send, 413, "payload_too_large", str(e.detail))


# --------------------------------------------------------------------------------------------------
# images


class DecodeBudget:
    """A byte-weighted semaphore on the event loop: the decoded images of all requests in flight.

    ``hold(cost)`` waits (without a thread) until ``cost`` more bytes fit in ``capacity``, at most
    ``wait_s`` seconds, else raises :class:`ServiceBusyError`; a cost above the capacity is clipped to
    it (the request then runs alone). ``stats()`` gives the bytes in use, the peak and the refusals.
    """

    def __init__(self, capacity: int, wait_s: float) -> None:
        if capacity <= 0:
            raise FaceforgeError(f"the decode budget must be positive, got {capacity} bytes")
        if not wait_s > 0:
            raise FaceforgeError(f"the decode wait must be positive, got {wait_s} s")
        self.capacity = int(capacity)
        self.wait_s = float(wait_s)
        self.in_use = 0
        self.peak = 0
        self.waiting = 0
        self.refused = 0
        self.served = 0
        self._cond: asyncio.Condition | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def _condition(self) -> asyncio.Condition:
        loop = asyncio.get_running_loop()
        if self._cond is None or self._loop is not loop:  # one app served by a new loop (tests)
            self._cond, self._loop = asyncio.Condition(), loop
        return self._cond

    @property
    def retry_after(self) -> int:
        """Seconds a refused client is told to wait (``Retry-After``)."""
        return max(1, math.ceil(self.wait_s))

    @contextlib.asynccontextmanager
    async def hold(self, cost: int) -> AsyncIterator[None]:
        """Reserve ``cost`` bytes for the body of the ``async with``."""
        cost = max(1, min(int(cost), self.capacity))
        cond = self._condition()
        async with cond:
            self.waiting += 1
            try:
                await asyncio.wait_for(
                    cond.wait_for(lambda: self.in_use + cost <= self.capacity), self.wait_s
                )
            except asyncio.TimeoutError:
                self.refused += 1
                raise ServiceBusyError(
                    f"the service is busy: the decoded images of the requests in flight fill its "
                    f"{self.capacity / 2**20:.0f} MiB budget; retry after {self.retry_after} s",
                    self.retry_after,
                ) from None
            finally:
                self.waiting -= 1
            self.in_use += cost
            self.peak = max(self.peak, self.in_use)
        try:
            yield
        finally:
            async with cond:
                self.in_use -= cost
                self.served += 1
                cond.notify_all()

    def stats(self) -> dict[str, Any]:
        """Budget use for ``/healthz``."""
        return {
            "in_use_bytes": self.in_use,
            "peak_bytes": self.peak,
            "waiting": self.waiting,
            "refused_busy": self.refused,
            "served": self.served,
        }


def _field_header(src: Any, field: str, max_pixels: int) -> Any:
    """The declared header of an upload (bytes or its spool; no pixel decoded); errors name ``field``."""
    if isinstance(src, (bytes, bytearray)):
        src = io.BytesIO(src)
    src.seek(0, io.SEEK_END)
    size = src.tell()
    src.seek(0)
    head = src.read(8)
    src.seek(0)
    if not size:
        raise ImageDecodeError(f"field {field!r} is an empty file; expected a JPEG/PNG/WebP/... image")
    try:
        header = probe(src, source=f"field {field!r}", formats=IMAGE_FORMATS)
    except ImageTooLargeError:
        raise
    except ImageDecodeError:
        raise ImageDecodeError(
            f"field {field!r} is not an image the service reads ({size} bytes starting {head!r}); "
            f"expected one of {', '.join(IMAGE_FORMATS)}"
        ) from None
    if header.pixels > max_pixels:
        raise ImageTooLargeError(
            f"field {field!r} is {header.width}x{header.height} = {header.pixels} pixels; "
            f"the limit is {max_pixels}"
        )
    return header


def decode_upload(
    data: bytes,
    field: str,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    max_side: int | None = DEFAULT_DECODE_MAX_SIDE,
) -> np.ndarray:
    """Uploaded bytes (or a binary file) → upright RGB uint8 ``[H, W, 3]``, checked before decoding.

    The header is read first so a decompression bomb is refused without allocating it; only
    :data:`IMAGE_FORMATS` are parsed; an image above ``max_side`` is shrunk while decoding. Every failure
    is an :class:`~faceforge.errors.ImageDecodeError` (400) or :class:`ImageTooLargeError` (413) naming
    ``field``.
    """
    return _decode_field(data, field, max_pixels, max_side)[0]


def _decode_field(
    src: Any, field: str, max_pixels: int, max_side: int | None, *, checked: bool = False
) -> tuple[np.ndarray, float]:
    """``checked``: :func:`_field_header` already passed on ``src`` (the decoder checks the size again)."""
    if isinstance(src, (bytes, bytearray)):
        src = io.BytesIO(src)
    if not checked:
        _field_header(src, field, max_pixels)
    else:
        src.seek(0)
    try:
        return decode_image_scaled(
            src, source=f"field {field!r}", max_pixels=max_pixels, max_side=max_side, formats=IMAGE_FORMATS
        )
    except FaceforgeError:
        raise
    except Exception as e:  # a decoder bug must still be the client's 400, never a 500
        raise ImageDecodeError(f"field {field!r} cannot be decoded: {type(e).__name__}: {e}") from None


# --------------------------------------------------------------------------------------------------
# server paths never leave the service


_ABS_PATH = re.compile(r"(?<![\w.:/])(?:[A-Za-z]:[\\/]|/|~/)[^\s'\"(),;:<>|]+")
_PATH_KEYS = frozenset({"path", "paths", "file", "filename", "source", "image", "weights", "dir"})


def _basename(m: re.Match[str]) -> str:
    text = m.group(0).rstrip("/\\")
    return re.split(r"[\\/]", text)[-1] or "<path>"


def redact_paths(obj: Any, key: str | None = None) -> Any:
    """``obj`` with every file-system path reduced to its file name (strings inside dicts/lists too).

    Absolute paths (``/…``, ``~/…``, ``C:\\…``) anywhere in a string become their last component; the
    value of a key that names a path (``path``, ``source``, ``file``, …), relative or not, becomes its file
    name when it is one word.
    """
    if isinstance(obj, dict):
        return {k: redact_paths(v, str(k)) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [redact_paths(v, key) for v in obj]
    if isinstance(obj, str):
        whole = key is not None and key.lower() in _PATH_KEYS and not any(c.isspace() for c in obj)
        if whole and ("/" in obj or "\\" in obj):
            return re.split(r"[\\/]", obj.rstrip("/\\"))[-1] or "<path>"
        return _ABS_PATH.sub(_basename, obj)
    return obj


def _scale_face(face: dict[str, Any], scale: float) -> dict[str, Any]:
    """Map a face's box and landmarks from the decoded (shrunk) image back to the uploaded picture."""
    if scale == 1.0:
        return face
    out = dict(face)
    if out.get("bbox") is not None:
        out["bbox"] = [round(float(v) / scale, 2) for v in out["bbox"]]
    if out.get("landmarks") is not None:
        out["landmarks"] = [
            [round(float(x) / scale, 2), round(float(y) / scale, 2)] for x, y in out["landmarks"]
        ]
    return out


def png_base64(rgb: np.ndarray) -> str:
    """An RGB uint8 crop as base64 PNG (RFC 4648 / PNG, ISO/IEC 15948) for JSON responses."""
    import cv2

    # Huffman coding only (no LZ77 matching), no per-row filter search in Python: a 112 px crop
    # encodes in ~0.55x the time of PIL at zlib level 1 and comes out ~13 % smaller (photo-like
    # crops have few long repeats for LZ77 to find). Lossless either way.
    arr = np.asarray(rgb, dtype=np.uint8)
    ok, buf = cv2.imencode(
        ".png",
        np.ascontiguousarray(arr[..., ::-1] if arr.ndim == 3 else arr),  # OpenCV writes BGR
        [cv2.IMWRITE_PNG_COMPRESSION, 1, cv2.IMWRITE_PNG_STRATEGY, cv2.IMWRITE_PNG_STRATEGY_HUFFMAN_ONLY],
    )
    if not ok:  # cv2 refuses only shapes it cannot store; the crops here are always HxWx3 uint8
        raise FaceforgeError(f"PNG encoding failed for an array of shape {np.shape(rgb)}")
    return base64.b64encode(buf.tobytes()).decode("ascii")


def _face_out(face: dict[str, Any], with_crop: bool = True) -> dict[str, Any]:
    out = {k: face.get(k) for k in ("bbox", "score", "landmarks")}
    aligned = face.get("aligned")
    out["aligned_png"] = png_base64(aligned) if with_crop and aligned is not None else None
    return out


def _page() -> str:
    return resources.files("faceforge.serve").joinpath("static/index.html").read_text(encoding="utf-8")


# --------------------------------------------------------------------------------------------------


def service_limits(
    max_body_bytes: int,
    max_pixels: int,
    max_decode_bytes: int,
    decode_max_side: int | None,
    decode_wait_s: float,
) -> dict[str, Any]:
    """The limits as ``/healthz`` lists them and ``faceforge serve`` prints them at start."""
    # What the budget admits at once: a 40 MP JPEG at its draft scale, a PNG of max_pixels, a crop.
    from faceforge.imageio import ImageHeader

    jpeg = decode_cost(ImageHeader("JPEG", 6000, 6667, "RGB"), decode_max_side)
    png = decode_cost(
        ImageHeader("PNG", max(1, int(math.sqrt(max_pixels))), max(1, int(math.sqrt(max_pixels))), "RGBA")
    )
    crop = decode_cost(ImageHeader("PNG", 112, 112, "RGB"))
    return {
        "max_body_bytes": int(max_body_bytes),
        "max_pixels": int(max_pixels),
        "max_decode_bytes": int(max_decode_bytes),
        "decode_max_side": decode_max_side,
        "decode_wait_s": float(decode_wait_s),
        "concurrent_decodes": {
            "jpeg_40mp": max(1, max_decode_bytes // jpeg),
            "png_at_max_pixels": max(1, max_decode_bytes // png),
            "aligned_crop": max(1, max_decode_bytes // crop),
        },
        "image_formats": list(IMAGE_FORMATS),
    }


def describe_limits(limits: dict[str, Any]) -> str:
    """One line of the limits for the start-up message."""
    c = limits["concurrent_decodes"]
    side = limits["decode_max_side"]
    return (
        f"limits: body {limits['max_body_bytes'] / 2**20:.1f} MiB, image {limits['max_pixels']:,} pixels "
        f"(from the header, before decoding), decode budget {limits['max_decode_bytes'] / 2**20:.0f} MiB "
        f"({c['jpeg_40mp']} × 40 MP JPEG, {c['png_at_max_pixels']} × PNG at the pixel limit, "
        f"{c['aligned_crop']:,} × aligned crop at once), images shrunk to {side or 'no'} px "
        f"while decoding, 503 after {limits['decode_wait_s']:g} s waiting"
    )


def create_app(
    recognizer: FaceRecognizer,
    gallery: Gallery | None = None,
    *,
    api_key: str | None = None,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    max_decode_bytes: int = DEFAULT_MAX_DECODE_BYTES,
    decode_max_side: int | None = DEFAULT_DECODE_MAX_SIDE,
    decode_wait_s: float = DEFAULT_DECODE_WAIT_S,
    expose_paths: bool = False,
    max_batch: int | None = None,
    max_wait_ms: float = 0.0,
    batch_workers: int = 1,
    batch_process: bool | None = None,
) -> FastAPI:
    """The FastAPI app serving ``recognizer`` (and ``gallery`` for ``/v1/search``); see docs/serve.md.

    ``api_key``: when set, every ``/v1/*`` request must carry it in ``X-API-Key`` (401 otherwise).
    ``max_body_bytes``: request size limit (413). ``max_pixels``: declared image size limit (413, read
    from the header). ``max_decode_bytes``: the byte budget of the decoded images in flight;
    ``decode_wait_s``: how long a request waits for it before a 503. ``decode_max_side``: longer side
    uploads are shrunk to while decoding (None: never). ``expose_paths``: let server paths (model file,
    gallery image paths) appear in answers; by default they are reduced to file names.
    ``max_batch``: crops of concurrent requests embedded in one model call (micro-batching, see
    :mod:`faceforge.infer.batching`; 1: requests run one at a time under a lock; None: 16 when the
    model runs in model processes, else :func:`auto_max_batch`: on a GPU, or on a CPU when a start-up
    probe finds that batches pay).
    ``max_wait_ms``: how long a batch waits for company after its first crop (0: never — no latency
    added to a lone request; under load batches form while the previous one runs). ``batch_workers``:
    batches that may run at the same time (with ``max_batch`` > 1), each in its own thread; on an
    N-core CPU, N workers at one torch thread each keep every core on a batch. ``batch_process``: each
    worker's batches run in a model process of its own (:mod:`faceforge.infer.model_process`), beside
    the request threads instead of taking turns with them for the interpreter lock; None:
    :func:`auto_batch_process` (a PyTorch model on a CPU with at least two cores).
    """
    if max_body_bytes <= 0:
        raise FaceforgeError(f"max_body_bytes must be positive, got {max_body_bytes}")
    if max_pixels <= 0:
        raise FaceforgeError(f"max_pixels must be positive, got {max_pixels}")
    if decode_max_side is not None and decode_max_side < 64:
        raise FaceforgeError(f"decode_max_side must be >= 64 pixels (or None), got {decode_max_side}")
    dim = int(recognizer.face_cfg.embedding_size)
    if gallery is not None and gallery.dim != dim:
        raise FaceforgeError(
            f"the gallery holds {gallery.dim}-d embeddings but model {recognizer.name!r} gives {dim}-d; "
            "build the gallery with this model"
        )
    auto_batch = max_batch is None
    want_process = auto_batch_process(recognizer) if batch_process is None else bool(batch_process)
    if auto_batch:
        # Beside the request threads, batches never cost more than single calls (docs/serve.md).
        max_batch = DEFAULT_MAX_BATCH if want_process else auto_max_batch(recognizer)
    if isinstance(max_batch, bool) or not isinstance(max_batch, int) or max_batch < 1:
        raise FaceforgeError(f"max_batch must be a positive integer, got {max_batch!r}")
    if not 0 <= max_wait_ms <= 1000:
        raise FaceforgeError(f"max_wait_ms must be in [0, 1000] milliseconds, got {max_wait_ms!r}")
    if isinstance(batch_workers, bool) or not isinstance(batch_workers, int) or not 1 <= batch_workers <= 64:
        raise FaceforgeError(f"batch_workers must be an integer in [1, 64], got {batch_workers!r}")
    model_name = str(recognizer.name)
    # One at a time: a lock around the whole call. Batched: requests run side by side (detection is
    # serialised per detector inside the recognizer) and their crops meet in the micro-batcher,
    # which alone calls the model.
    lock: threading.Lock | contextlib.nullcontext = threading.Lock()
    recognizer.disable_batching()  # a recognizer served before keeps no batcher of other settings
    batcher = None
    if max_batch > 1:
        wait_s = max_wait_ms / 1000.0
        try:
            batcher = recognizer.enable_batching(max_batch, wait_s, batch_workers, want_process)
        except FaceforgeError as e:
            if not (batch_process is None and want_process):
                raise
            # auto only: a model that cannot move (e.g. a module class defined in a script's __main__)
            log.warning("model process not used (%s); the model runs in the server process", e)
            want_process = False
            if auto_batch:
                max_batch = auto_max_batch(recognizer)
            if max_batch > 1:
                batcher = recognizer.enable_batching(max_batch, wait_s, batch_workers)
    if batcher is not None:
        lock = contextlib.nullcontext()
    batch_process = want_process and batcher is not None
    page = _page()
    budget = DecodeBudget(max_decode_bytes, decode_wait_s)
    limits = service_limits(max_body_bytes, max_pixels, max_decode_bytes, decode_max_side, decode_wait_s)
    # Large decodes are mapped and unmapped, not left in the thread heaps (see imageio.release_memory).
    release_memory(mmap_threshold=4 * 2**20)

    def public(obj: Any) -> Any:
        return obj if expose_paths else redact_paths(obj)

    async def on_images(
        fields: list[tuple[UploadFile, str]],
        fn: Callable[[list[tuple[np.ndarray, float]]], _T],
        answer: Callable[[_T], Any] | None = None,
    ) -> Any:
        """Decode the uploads under the budget, then ``fn(images)`` (under the lock when one at a time),
        then ``answer(result)`` (the response, outside the lock), all in one worker thread: one thread
        hop per request. The budget stays reserved until the answer is built.

        The multipart parser has spooled each upload (to disk above 1 MiB); headers are read from the
        spool and the pixels decoded straight from it, so no copy of the body is held in memory.
        """
        blobs = [(upload.file, name) for upload, name in fields]

        def check() -> list[Any]:
            return [_field_header(f, n, max_pixels) for f, n in blobs]

        # Uploads the parser kept in memory (under 1 MiB) are probed here, on the loop (a fraction of
        # a millisecond, no I/O); a spool on disk is read in a worker thread.
        in_memory = all(not getattr(f, "_rolled", True) for f, _ in blobs)
        headers = check() if in_memory else await run_in_threadpool(check)
        cost = 0
        for h in headers:
            kept = min(h.pixels, (decode_max_side or max(h.width, h.height)) ** 2) * 3
            cost += decode_cost(h, decode_max_side) + kept
        big = cost >= 32 * 2**20
        async with budget.hold(cost):

            def work() -> Any:
                try:  # the headers were checked above: decode without probing them again
                    images = [
                        _decode_field(d, n, max_pixels, decode_max_side, checked=True) for d, n in blobs
                    ]
                finally:
                    del blobs[:]
                    if big:
                        release_memory()
                try:
                    with lock:
                        out = fn(images)
                finally:
                    images.clear()
                return out if answer is None else answer(out)

            return await run_in_threadpool(work)

    # The key is enforced by _Guard before the body is read; this dependency only declares the
    # scheme in the OpenAPI document (the /docs "Authorize" button, schemathesis' auth checks).
    key_scheme = APIKeyHeader(name=API_KEY_HEADER, auto_error=False, description="the service's API key")

    def _declared_key(_: str | None = Depends(key_scheme)) -> None:
        return None

    app = FastAPI(
        title="faceforge",
        version=__version__,
        description="Face verification, embedding and gallery search with a faceforge model.",
    )
    v1: list[Any] = [Depends(_declared_key)] if api_key else []
    app.state.recognizer = recognizer
    app.state.gallery = gallery
    app.state.limits = limits
    app.state.max_batch = max_batch
    app.state.batch_process = batch_process
    app.state.decode_budget = budget

    # ---------------------------------------------------------------------------------- errors
    def _message(exc: Exception) -> str:
        return str(public(str(exc)))

    @app.exception_handler(NoFaceError)
    async def _no_face(_: Request, exc: NoFaceError) -> JSONResponse:
        return _error(422, "no_face", _message(exc))

    @app.exception_handler(ImageDecodeError)
    async def _not_image(_: Request, exc: ImageDecodeError) -> JSONResponse:
        return _error(400, "not_an_image", _message(exc))

    @app.exception_handler(ImageTooLargeError)
    async def _too_big(_: Request, exc: ImageTooLargeError) -> JSONResponse:
        return _error(413, "image_too_large", _message(exc))

    @app.exception_handler(ServiceBusyError)
    async def _busy(_: Request, exc: ServiceBusyError) -> JSONResponse:
        resp = _error(503, "busy", str(exc))
        resp.headers["retry-after"] = str(exc.retry_after)
        return resp

    @app.exception_handler(FaceforgeError)
    async def _bad_input(_: Request, exc: FaceforgeError) -> JSONResponse:
        return _error(400, "bad_request", _message(exc))

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        return _error(422, "invalid_request", _validation_message(exc))

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = _CODES.get(exc.status_code, "error")
        resp = _error(exc.status_code, code, str(exc.detail))
        # e.g. Allow on a 405 (RFC 9110 §15.5.6)
        for name, value in (exc.headers or {}).items():
            resp.headers[name] = value
        if exc.status_code == 413:
            resp.headers["connection"] = "close"
        return resp

    @app.exception_handler(Exception)
    async def _internal(_: Request, exc: Exception) -> JSONResponse:
        log.exception("internal error while serving a request")
        return _error(500, "internal", f"internal error ({type(exc).__name__}); see the server log")

    # ---------------------------------------------------------------------------------- routes
    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def index() -> HTMLResponse:
        return HTMLResponse(page)

    @app.get("/healthz", response_model=HealthOut, tags=["service"])
    async def healthz() -> dict[str, Any]:
        """Liveness: the model is loaded (no inference is run); the input limits and decode budget use."""
        return {
            "status": "ok",
            "model": model_name,
            "gallery_size": None if gallery is None else len(gallery),
            "limits": limits,
            "decode": budget.stats(),
            "batching": {
                "max_batch": max_batch,
                "max_wait_ms": float(max_wait_ms),
                "workers": None if batcher is None else batcher.workers,
                "model_processes": batch_process,
                "model_calls": None if batcher is None else batcher.batches,
                "crops": None if batcher is None else batcher.rows,
            },
        }

    @app.get("/v1/models", response_model=ModelsOut, responses=_doc(401), tags=["service"], dependencies=v1)
    async def models() -> dict[str, Any]:
        """The model's facts (``FaceRecognizer.info()``) and the gallery's, if one is loaded."""
        info = public(jsonable_encoder(recognizer.info()))
        g = None
        if gallery is not None:
            g = {"size": len(gallery), "dim": gallery.dim, "index": gallery.kind}
        return {"models": [info], "gallery": g}

    @app.post(
        "/v1/verify",
        response_model=VerifyOut,
        responses=_doc(400, 401, 413, 415, 422, 503),
        tags=["faces"],
        dependencies=v1,
    )
    async def verify(
        a: Annotated[UploadFile, File(description="first photo (or an aligned crop)")],
        b: Annotated[UploadFile, File(description="second photo (or an aligned crop)")],
        threshold: Annotated[
            float | None,
            Form(ge=-1.0, le=1.0, description="cosine threshold; default: the model's calibration"),
        ] = None,
    ) -> dict[str, Any]:
        """Are the largest faces of ``a`` and ``b`` the same person?"""

        def run(images: list[tuple[np.ndarray, float]]) -> tuple[dict[str, Any], dict[str, float]]:
            (img_a, scale_a), (img_b, scale_b) = images
            return recognizer.verify(img_a, img_b, threshold=threshold), {"a": scale_a, "b": scale_b}

        def answer(out: tuple[dict[str, Any], dict[str, float]]) -> dict[str, Any]:
            res, scales = out
            return {
                "verified": bool(res["verified"]),
                "similarity": float(res["similarity"]),
                "threshold": float(res["threshold"]),
                "model": model_name,
                "faces": {k: _face_out(_scale_face(res["faces"][k], scales[k])) for k in ("a", "b")},
            }

        return await on_images([(a, "a"), (b, "b")], run, answer)

    @app.post(
        "/v1/embed",
        response_model=EmbedOut,
        responses=_doc(400, 401, 413, 415, 422, 503),
        tags=["faces"],
        dependencies=v1,
    )
    async def embed(
        image: Annotated[UploadFile, File(description="a photo (or an aligned crop)")],
        all_faces: Annotated[
            bool, Form(description="every face (best score first), not the largest")
        ] = False,
    ) -> dict[str, Any]:
        """L2-normalised embedding of the largest face (or of every face)."""

        def run(images: list[tuple[np.ndarray, float]]) -> tuple[list[Any], float]:
            img, scale = images[0]
            return recognizer.embed_faces(img), scale

        def answer(out: tuple[list[Any], float]) -> dict[str, Any]:
            faces, scale = out
            if not all_faces:
                faces = [max(faces, key=lambda f: _area(f.bbox))]
            return {
                "model": model_name,
                "dim": dim,
                "embeddings": [f.embedding.astype(float).tolist() for f in faces],
                "faces": [_face_out(_scale_face(f.to_dict(), scale), with_crop=False) for f in faces],
            }

        return await on_images([(image, "image")], run, answer)

    @app.post(
        "/v1/search",
        response_model=SearchOut,
        responses=_doc(400, 401, 409, 413, 415, 422, 503),
        tags=["gallery"],
        dependencies=v1,
    )
    async def search(
        image: Annotated[UploadFile, File(description="a photo (or an aligned crop)")],
        k: Annotated[int, Form(ge=1, le=1000, description="number of results")] = 5,
    ) -> dict[str, Any]:
        """The ``k`` gallery entries most similar to the largest face of ``image``, best first."""
        if gallery is None:
            return _error(409, "no_gallery", "no gallery is loaded; start the service with --gallery DIR")
        g = gallery  # not None here (mypy cannot carry the check into the closure)
        hits = await on_images([(image, "image")], lambda images: recognizer.find(images[0][0], g, k))
        results = [{**h, "meta": public(h.get("meta") or {})} for h in jsonable_encoder(hits)]
        return {"model": model_name, "k": k, "gallery_size": len(gallery), "results": results}

    # Outermost, so a refused request never reaches the multipart parser.
    app.add_middleware(_Guard, api_key=api_key, max_body_bytes=max_body_bytes)
    return app


def _area(bbox: list[float] | None) -> float:
    if bbox is None:
        return float("inf")
    return max(0.0, bbox[2] - bbox[0]) * max(0.0, bbox[3] - bbox[1])
