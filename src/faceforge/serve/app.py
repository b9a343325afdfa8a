"""The REST service: ``create_app(recognizer, gallery)`` → a FastAPI app (see ``docs/serve.md``).

Endpoints (OpenAPI 3.1 at ``/openapi.json``, Swagger UI at ``/docs``):

``POST /v1/verify``  multipart ``a``, ``b`` (image files), optional ``threshold`` → verdict, cosine
                     similarity, threshold and both faces with their aligned crops as base64 PNG
``POST /v1/embed``   multipart ``image``, optional ``all_faces`` → L2-normalised embedding(s)
``POST /v1/search``  multipart ``image``, ``k`` → the ``k`` nearest gallery entries (409 without a gallery)
``GET  /healthz``    liveness; ``GET /v1/models``: ``FaceRecognizer.info()`` and the gallery's facts
``GET  /``           a page to drop two photos and see the verdict with the aligned crops

Guards, applied by a pure ASGI middleware before routing, so a refused request never reaches the
multipart parser: the body size limit (413 from ``Content-Length`` alone, and again while a chunked
body streams in), the optional API key (``X-API-Key``; ``/``, ``/healthz`` and the OpenAPI documents
stay open) and the content type of the upload endpoints (``multipart/form-data``, RFC 7578; else 415).
Errors are JSON ``{"error": {"code", "message"}}``: bad image → 400, no face → 422, invalid form →
422, and never a 500 for anything a client sends. Inference is CPU-bound, so it runs in Starlette's
thread pool, and a lock serialises the model (a PyTorch module and a lazily built detector are not
promised to be thread-safe; on a CPU concurrent calls would only compete for the same cores).
"""

from __future__ import annotations

import base64
import hmac
import io
import logging
import threading
from collections.abc import Awaitable, Callable
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

if TYPE_CHECKING:
    from faceforge.infer.gallery import Gallery
    from faceforge.infer.recognizer import FaceRecognizer

__all__ = ["DEFAULT_MAX_BODY_BYTES", "DEFAULT_MAX_PIXELS", "IMAGE_FORMATS", "create_app"]

log = logging.getLogger(__name__)

DEFAULT_MAX_BODY_BYTES = 10 * 2**20
#: decoded image size limit: a 10 MiB PNG of a flat colour can hold gigapixels (a "decompression bomb")
DEFAULT_MAX_PIXELS = 40_000_000
#: PIL formats the service decodes; fewer parsers exposed to untrusted bytes
IMAGE_FORMATS = ("JPEG", "PNG", "WEBP", "BMP", "GIF", "TIFF", "PPM")
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
    }
    return {c: {"model": ErrorBody, "description": text[c]} for c in codes}


# --------------------------------------------------------------------------------------------------
# errors


class ImageTooLargeError(FaceforgeError):
    """An uploaded image whose pixel count exceeds the service's ``max_pixels``."""


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


def decode_upload(data: bytes, field: str, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Uploaded bytes → RGB uint8 ``[H, W, 3]`` (EXIF orientation applied), checked before decoding.

    The header is read first (PIL reads only the size) so a decompression bomb is refused without
    allocating it; only :data:`IMAGE_FORMATS` are parsed. Every failure is an
    :class:`~faceforge.errors.ImageDecodeError` (400) or :class:`ImageTooLargeError` (413) naming ``field``.
    """
    from PIL import Image

    from faceforge.infer import load_image

    if not data:
        raise ImageDecodeError(f"field {field!r} is an empty file; expected a JPEG/PNG/WebP/... image")
    try:
        with Image.open(io.BytesIO(data), formats=IMAGE_FORMATS) as im:
            w, h = im.size
    except Image.DecompressionBombError as e:
        raise ImageTooLargeError(f"field {field!r}: {e}") from None
    except Exception:
        # Any parser failure on client bytes is the client's problem, whatever the plugin raised.
        raise ImageDecodeError(
            f"field {field!r} is not an image the service reads ({len(data)} bytes starting {data[:8]!r}); "
            f"expected one of {', '.join(IMAGE_FORMATS)}"
        ) from None
    if w * h > max_pixels:
        raise ImageTooLargeError(f"field {field!r} is {w}x{h} = {w * h} pixels; the limit is {max_pixels}")
    try:
        return load_image(data)
    except FaceforgeError as e:
        raise ImageDecodeError(f"field {field!r}: {e}") from None
    except Exception as e:
        raise ImageDecodeError(f"field {field!r} cannot be decoded: {type(e).__name__}: {e}") from None


def png_base64(rgb: np.ndarray) -> str:
    """An RGB uint8 crop as base64 PNG (RFC 4648 / PNG, ISO/IEC 15948) for JSON responses."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(rgb, dtype=np.uint8)).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _face_out(face: dict[str, Any], with_crop: bool = True) -> dict[str, Any]:
    out = {k: face.get(k) for k in ("bbox", "score", "landmarks")}
    aligned = face.get("aligned")
    out["aligned_png"] = png_base64(aligned) if with_crop and aligned is not None else None
    return out


def _page() -> str:
    return resources.files("faceforge.serve").joinpath("static/index.html").read_text(encoding="utf-8")


# --------------------------------------------------------------------------------------------------


def create_app(
    recognizer: FaceRecognizer,
    gallery: Gallery | None = None,
    *,
    api_key: str | None = None,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> FastAPI:
    """The FastAPI app serving ``recognizer`` (and ``gallery`` for ``/v1/search``); see the module doc.

    ``api_key``: when set, every ``/v1/*`` request must carry it in ``X-API-Key`` (401 otherwise).
    ``max_body_bytes``: request size limit (413). ``max_pixels``: decoded image size limit (413).
    """
    if max_body_bytes <= 0:
        raise FaceforgeError(f"max_body_bytes must be positive, got {max_body_bytes}")
    dim = int(recognizer.face_cfg.embedding_size)
    if gallery is not None and gallery.dim != dim:
        raise FaceforgeError(
            f"the gallery holds {gallery.dim}-d embeddings but model {recognizer.name!r} gives {dim}-d; "
            "build the gallery with this model"
        )
    model_name = str(recognizer.name)
    lock = threading.Lock()
    page = _page()

    async def infer(fn: Callable[..., _T], *args: Any, **kw: Any) -> _T:
        def locked() -> _T:
            with lock:
                return fn(*args, **kw)

        return await run_in_threadpool(locked)

    async def read_image(upload: UploadFile, field: str) -> np.ndarray:
        data = await upload.read()
        return await run_in_threadpool(decode_upload, data, field, max_pixels)

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

    # ---------------------------------------------------------------------------------- errors
    @app.exception_handler(NoFaceError)
    async def _no_face(_: Request, exc: NoFaceError) -> JSONResponse:
        return _error(422, "no_face", str(exc))

    @app.exception_handler(ImageDecodeError)
    async def _not_image(_: Request, exc: ImageDecodeError) -> JSONResponse:
        return _error(400, "not_an_image", str(exc))

    @app.exception_handler(ImageTooLargeError)
    async def _too_big(_: Request, exc: ImageTooLargeError) -> JSONResponse:
        return _error(413, "image_too_large", str(exc))

    @app.exception_handler(FaceforgeError)
    async def _bad_input(_: Request, exc: FaceforgeError) -> JSONResponse:
        return _error(400, "bad_request", str(exc))

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
        """Liveness: the model is loaded (no inference is run)."""
        return {
            "status": "ok",
            "model": model_name,
            "gallery_size": None if gallery is None else len(gallery),
        }

    @app.get("/v1/models", response_model=ModelsOut, responses=_doc(401), tags=["service"], dependencies=v1)
    async def models() -> dict[str, Any]:
        """The model's facts (``FaceRecognizer.info()``) and the gallery's, if one is loaded."""
        info = jsonable_encoder(recognizer.info())
        g = None
        if gallery is not None:
            g = {"size": len(gallery), "dim": gallery.dim, "index": gallery.kind}
        return {"models": [info], "gallery": g}

    @app.post(
        "/v1/verify",
        response_model=VerifyOut,
        responses=_doc(400, 401, 413, 415, 422),
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
        img_a = await read_image(a, "a")
        img_b = await read_image(b, "b")
        res = await infer(recognizer.verify, img_a, img_b, threshold=threshold)
        return {
            "verified": bool(res["verified"]),
            "similarity": float(res["similarity"]),
            "threshold": float(res["threshold"]),
            "model": model_name,
            "faces": {k: _face_out(res["faces"][k]) for k in ("a", "b")},
        }

    @app.post(
        "/v1/embed",
        response_model=EmbedOut,
        responses=_doc(400, 401, 413, 415, 422),
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
        img = await read_image(image, "image")
        faces = await infer(recognizer.embed_faces, img)
        if not all_faces:
            faces = [max(faces, key=lambda f: _area(f.bbox))]
        return {
            "model": model_name,
            "dim": dim,
            "embeddings": [f.embedding.astype(float).tolist() for f in faces],
            "faces": [_face_out(f.to_dict(), with_crop=False) for f in faces],
        }

    @app.post(
        "/v1/search",
        response_model=SearchOut,
        responses=_doc(400, 401, 409, 413, 415, 422),
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
        img = await read_image(image, "image")
        hits = await infer(recognizer.find, img, gallery, k)
        return {"model": model_name, "k": k, "gallery_size": len(gallery), "results": jsonable_encoder(hits)}

    # Outermost, so a refused request never reaches the multipart parser.
    app.add_middleware(_Guard, api_key=api_key, max_body_bytes=max_body_bytes)
    return app


def _area(bbox: list[float] | None) -> float:
    if bbox is None:
        return float("inf")
    return max(0.0, bbox[2] - bbox[0]) * max(0.0, bbox[3] - bbox[1])
