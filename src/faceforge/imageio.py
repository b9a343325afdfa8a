"""The one guarded image decoder: bytes or a file → upright RGB uint8, with its memory bounded first.
Every reader of untrusted pictures goes through here: :func:`probe` checks the declared size against
the pixel limit before anything is allocated, :func:`decode_image` / :func:`decode_image_scaled` decode
(reduced for JPEG when a side limit is set), apply the EXIF orientation (TIFF/EXIF tag 274) and
convert to RGB (:func:`to_rgb_uint8`). Details: docs/security.md, "Images: one guarded decoder" and
"Implementation notes" (`faceforge.imageio`).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import io
import math
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from faceforge.errors import FaceforgeError, ImageDecodeError

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "IMAGE_EXTENSIONS",
    "IMAGE_FORMATS",
    "ImageHeader",
    "ImageTooLargeError",
    "check_encoded",
    "decode_cost",
    "decode_image",
    "decode_image_scaled",
    "default_max_pixels",
    "extension_for",
    "is_image_name",
    "list_images",
    "probe",
    "release_memory",
    "to_rgb_uint8",
]

#: library / command-line default (a 108 MP phone photo passes; a gigapixel PNG bomb does not)
DEFAULT_MAX_PIXELS = 120_000_000
ENV_MAX_PIXELS = "FACEFORGE_MAX_IMAGE_PIXELS"
#: PIL formats decoded from untrusted bytes (MPO: the JPEG variant many phones write)
IMAGE_FORMATS = ("JPEG", "MPO", "PNG", "WEBP", "BMP", "GIF", "TIFF", "PPM")
#: the file endings every folder reader takes as images (the formats above; one list for training,
#: evaluation, alignment and inference)
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif", ".ppm", ".pgm")
#: bytes per pixel of each PIL mode while decoding (the decoded buffer itself)
_MODE_BYTES = {"1": 1, "L": 1, "P": 1, "LA": 2, "PA": 2, "La": 2, "I;16": 2, "I;16B": 2, "I;16L": 2,
               "I;16N": 2, "RGB": 4, "YCbCr": 4, "LAB": 4, "HSV": 4, "RGBA": 4, "RGBa": 4, "RGBX": 4,
               "CMYK": 4, "I": 4, "F": 4}  # fmt: skip
_ORIENT = {2: "FLIP_LEFT_RIGHT", 3: "ROTATE_180", 4: "FLIP_TOP_BOTTOM", 5: "TRANSPOSE", 6: "ROTATE_270",
           7: "TRANSVERSE", 8: "ROTATE_90"}  # fmt: skip


class ImageTooLargeError(ImageDecodeError):
    """An image whose declared pixel count exceeds the limit (refused from its header, not decoded)."""


@dataclass(frozen=True)
class ImageHeader:
    """What an image's header declares: format, size, PIL mode."""

    format: str
    width: int
    height: int
    mode: str

    @property
    def pixels(self) -> int:
        """Declared ``width × height``."""
        return self.width * self.height


def default_max_pixels() -> int:
    """The pixel limit: ``$FACEFORGE_MAX_IMAGE_PIXELS`` when set, else :data:`DEFAULT_MAX_PIXELS`."""
    raw = os.environ.get(ENV_MAX_PIXELS, "").strip()
    if not raw:
        return DEFAULT_MAX_PIXELS
    try:
        v = int(float(raw))
    except ValueError:
        v = 0
    if v < 1:
        raise FaceforgeError(f"environment {ENV_MAX_PIXELS}={raw!r}: expected a positive pixel count")
    return v


def extension_for(data: bytes) -> str:
    """The file ending for encoded image bytes, from their magic numbers (``.img`` when unknown).

    JPEG ``FF D8 FF``, PNG's 8-byte signature, BMP ``BM``, GIF ``GIF8``, WebP ``RIFF....WEBP``.
    """
    if data[:3] == b"\xff\xd8\xff":
        return ".jpg"
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return ".png"
    if data[:2] == b"BM":
        return ".bmp"
    if data[:4] == b"GIF8":
        return ".gif"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return ".webp"
    return ".img"


def is_image_name(name: str | os.PathLike[str]) -> bool:
    """Whether a file name has an image ending and is not hidden (``._x.jpg``: macOS resource forks)."""
    base = os.path.basename(os.fspath(name))
    return not base.startswith(".") and os.path.splitext(base)[1].lower() in IMAGE_EXTENSIONS


def list_images(folder: str | os.PathLike[str], *, recursive: bool = True) -> list[Path]:
    """The image files in ``folder`` (below it with ``recursive``), sorted; hidden ones left out.

    The one folder scanner of the package: every reader of a folder of pictures lists it here.
    """
    root = Path(folder)
    if not root.is_dir():
        raise FaceforgeError(f"{root} is not a folder (expected a folder of images)")
    if recursive:
        found = (
            Path(dp) / f
            for dp, dirs, fs in os.walk(root)
            for f in fs
            if is_image_name(f) and not any(part.startswith(".") for part in Path(dp).relative_to(root).parts)
        )
    else:
        found = (Path(e.path) for e in os.scandir(root) if e.is_file() and is_image_name(e.name))
    return sorted(p for p in found if p.is_file())


def _describe(src: Any, source: str | None) -> str:
    if source:
        return source
    if isinstance(src, (str, os.PathLike)):
        return str(src)
    if isinstance(src, (bytes, bytearray, memoryview)):
        return f"<{len(src)} bytes>"
    return f"<{type(src).__name__}>"


def _bomb_message(e: BaseException, where: str, limit: int | None) -> str:
    """PIL's own refusal (above twice ``PIL.Image.MAX_IMAGE_PIXELS``) in this module's words."""
    m = re.search(r"\((\d+) pixels\)", str(e))
    n = f"{int(m.group(1)):,}" if m else "too many"
    lim = f"{limit:,}" if limit is not None else f"{default_max_pixels():,}"
    return f"{where} declares {n} pixels; the limit is {lim} (raise it with {ENV_MAX_PIXELS})"


def _open(src: Any, where: str, formats: tuple[str, ...] | None, limit: int | None = None) -> Any:
    """``PIL.Image.open`` of a path or bytes with every failure turned into a one-line error."""
    from PIL import Image, UnidentifiedImageError

    if isinstance(src, (bytes, bytearray, memoryview)):
        data = bytes(src)
        if not data:
            raise ImageDecodeError(f"{where} is empty (0 bytes); expected JPEG/PNG/... image content")
        fp: Any = io.BytesIO(data)
        head = data[:8]
    elif hasattr(src, "read") and hasattr(src, "seek"):  # a binary file object (an upload's spool)
        try:
            src.seek(0)
            head = src.read(8)
            src.seek(0)
        except (OSError, ValueError) as e:
            raise ImageDecodeError(f"{where} cannot be read: {e}") from None
        if not head:
            raise ImageDecodeError(f"{where} is empty (0 bytes); expected JPEG/PNG/... image content")
        fp = src
    elif isinstance(src, (str, os.PathLike)):
        p = Path(src)
        if not p.is_file():
            raise ImageDecodeError(f"image {p} does not exist or is not a file")
        try:
            if p.stat().st_size == 0:
                raise ImageDecodeError(f"image {p} is empty (0 bytes)")
            with open(p, "rb") as fh:
                head = fh.read(8)
        except OSError as e:
            raise ImageDecodeError(f"image {p} cannot be read: {e.strerror or e}") from None
        fp = p
    else:
        raise ImageDecodeError(
            f"unsupported image source {where}; expected a file path, bytes or a binary file"
        )
    if formats:
        Image.init()  # every plugin registered: `formats` is looked up by name
        formats = tuple(f for f in formats if f in Image.OPEN)
    try:
        return Image.open(fp, formats=list(formats) if formats else None)
    except Image.DecompressionBombError as e:
        raise ImageTooLargeError(_bomb_message(e, where, limit)) from None
    except UnidentifiedImageError:
        allowed = f"; expected one of {', '.join(formats)}" if formats else ""
        raise ImageDecodeError(
            f"{where} is not an image file PIL can read (starts with {head!r}){allowed}"
        ) from None
    except Exception as e:  # every plugin raises its own types on hostile headers
        raise ImageDecodeError(
            f"{where} has a malformed image header ({type(e).__name__}: {_first_line(e)})"
        ) from None


def _first_line(e: BaseException) -> str:
    lines = str(e).strip().splitlines()
    return lines[0] if lines else type(e).__name__


def _check_size(w: int, h: int, where: str, max_pixels: int) -> None:
    if w <= 0 or h <= 0:
        raise ImageDecodeError(f"{where} declares an empty size {w}x{h}")
    if w * h > max_pixels:
        raise ImageTooLargeError(
            f"{where} is {w}x{h} = {w * h:,} pixels; the limit is {max_pixels:,} "
            f"(raise it with {ENV_MAX_PIXELS} or the service's --max-pixels)"
        )


def probe(
    src: str | os.PathLike | bytes | BinaryIO,
    *,
    source: str | None = None,
    formats: tuple[str, ...] | None = None,
) -> ImageHeader:
    """The header of an image (format, declared size, mode) without decoding any pixel data."""
    where = _describe(src, source)
    with _open(src, where, formats) as im:
        return ImageHeader(str(im.format), int(im.size[0]), int(im.size[1]), str(im.mode))


def check_encoded(data: bytes, *, source: str | None = None, max_pixels: int | None = None) -> ImageHeader:
    """The header of encoded bytes, checked against the pixel limit; for readers that decode with
    OpenCV (``cv2.imdecode`` allows a gigapixel): call this first, decode only when it returns."""
    where = _describe(data, source)
    limit = default_max_pixels() if max_pixels is None else int(max_pixels)
    with _open(data, where, None, limit) as im:
        header = ImageHeader(str(im.format), int(im.size[0]), int(im.size[1]), str(im.mode))
    _check_size(header.width, header.height, where, limit)
    return header


def _draft_scale(w: int, h: int, max_side: int | None) -> int:
    """The JPEG DCT scale denominator (1, 2, 4 or 8) that keeps the longer side >= ``max_side``."""
    if not max_side or max(w, h) <= max_side:
        return 1
    s = 1
    while s < 8 and math.ceil(max(w, h) / (2 * s)) >= max_side:
        s *= 2
    return s


def decode_cost(header: ImageHeader, max_side: int | None = None) -> int:
    """Bytes a decode of ``header`` holds at its peak (decoded buffer, one conversion copy, output).

    A JPEG above ``max_side`` is costed at its draft scale; every other format at full size.
    """
    w, h = header.width, header.height
    if header.format in ("JPEG", "MPO"):
        s = _draft_scale(w, h, max_side)
        w, h = math.ceil(w / s), math.ceil(h / s)
    per = _MODE_BYTES.get(header.mode, 4)
    # decoded buffer + a full-size mode conversion (palette/alpha/CMYK → RGB) + the RGB output array
    return w * h * (per + 4 + 3) + 64 * 1024


def decode_image(
    src: str | os.PathLike | bytes | BinaryIO,
    *,
    source: str | None = None,
    max_pixels: int | None = None,
    max_side: int | None = None,
    formats: tuple[str, ...] | None = None,
) -> np.ndarray:
    """Decode ``src`` (path or bytes) to upright RGB uint8 ``[H, W, 3]`` under the module's guards."""
    rgb, _ = decode_image_scaled(
        src, source=source, max_pixels=max_pixels, max_side=max_side, formats=formats
    )
    return rgb


def decode_image_scaled(
    src: str | os.PathLike | bytes | BinaryIO,
    *,
    source: str | None = None,
    max_pixels: int | None = None,
    max_side: int | None = None,
    formats: tuple[str, ...] | None = None,
) -> tuple[np.ndarray, float]:
    """Like :func:`decode_image`, also returning the scale: output pixels per declared (upright) pixel.

    ``max_pixels``: refuse a larger declared size (default :func:`default_max_pixels`).
    ``max_side``: shrink the longer side to at most this (JPEG: while decoding); None keeps the size.
    ``formats``: PIL formats allowed (default: all PIL reads).
    """
    from PIL import Image

    where = _describe(src, source)
    limit = default_max_pixels() if max_pixels is None else int(max_pixels)
    if max_side is not None and int(max_side) < 16:
        raise FaceforgeError(f"max_side must be >= 16 pixels, got {max_side}")
    with _open(src, where, formats, limit) as im:
        w, h = (int(v) for v in im.size)
        _check_size(w, h, where, limit)
        try:
            if im.format in ("JPEG", "MPO") and _draft_scale(w, h, max_side) > 1:
                s = _draft_scale(w, h, max_side)
                # PIL picks the largest DCT scale whose result is still >= the size asked for: floor
                im.draft(None, (max(1, w // s), max(1, h // s)))
            im.load()
            orientation = _orientation(im)
            out = im
            if max_side is not None and max(out.size) > max_side:
                out = _shrink(out, int(max_side))
            if orientation in _ORIENT:
                out = out.transpose(getattr(Image.Transpose, _ORIENT[orientation]))
            arr = _to_array(out)
        except Image.DecompressionBombError as e:
            raise ImageTooLargeError(_bomb_message(e, where, limit)) from None
        except FaceforgeError:
            raise
        except MemoryError:
            raise ImageTooLargeError(f"{where} ({w}x{h}) does not fit in memory") from None
        except Exception as e:  # truncated data, bad chunks, decoder errors of any plugin
            raise ImageDecodeError(
                f"cannot decode image {where}: {type(e).__name__}: {_first_line(e)}"
            ) from None
    if arr.ndim < 2 or arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ImageDecodeError(f"image {where} is empty (shape {arr.shape})")
    rgb = to_rgb_uint8(arr, where)
    upright_w = h if orientation in (5, 6, 7, 8) else w
    return rgb, rgb.shape[1] / upright_w


def _orientation(im: Any) -> int:
    try:
        return int(im.getexif().get(0x0112, 1) or 1)
    except Exception:  # a damaged EXIF block is ignored (the picture is shown as stored)
        return 1


def _shrink(im: Any, max_side: int) -> Any:
    from PIL import Image

    w, h = im.size
    f = max_side / max(w, h)
    size = (max(1, round(w * f)), max(1, round(h * f)))
    if im.mode == "P":
        im = im.convert("RGBA")
    elif im.mode not in ("L", "LA", "RGB", "RGBA", "I", "F", "I;16", "I;16L", "I;16B", "I;16N", "1"):
        im = im.convert("RGB")
    if im.mode == "1":
        im = im.convert("L")
    return im.resize(size, Image.Resampling.BILINEAR, reducing_gap=2.0)


def _to_array(im: Any) -> np.ndarray:
    if im.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N"):
        return np.clip(np.asarray(im, dtype=np.int64), 0, 65535).astype(np.uint16)
    if im.mode == "F":
        return np.asarray(im, dtype=np.float32)
    if im.mode in ("L", "RGB"):
        return np.asarray(im)
    return np.asarray(im.convert("RGBA" if "A" in im.mode or im.mode == "P" else "RGB"))


def to_rgb_uint8(img: np.ndarray, where: str = "array") -> np.ndarray:
    """Gray/RGB/RGBA of uint8/uint16/bool/float → contiguous RGB uint8: the one pixel mapping.

    uint16 → ``// 257`` (exact 16 → 8 bit), bool → 0/255, float in [0, 1] → ×255 (else clipped),
    other integers clipped; alpha dropped, gray repeated. Raises :class:`ImageDecodeError` naming
    ``where`` for other shapes or types.
    """
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[:, :, 0]
    if img.ndim == 2:
        img = np.repeat(img[:, :, None], 3, axis=2)
    elif img.ndim == 3 and img.shape[2] == 4:
        img = img[:, :, :3]
    elif not (img.ndim == 3 and img.shape[2] == 3):
        raise ImageDecodeError(f"image {where} has an unsupported shape {img.shape}")
    if img.dtype == np.uint8:
        pass
    elif img.dtype == np.uint16:
        img = (img.astype(np.uint32) // 257).astype(np.uint8)
    elif img.dtype == np.bool_:
        img = img.astype(np.uint8) * 255
    elif np.issubdtype(img.dtype, np.floating):
        f = np.nan_to_num(img.astype(np.float32))
        if f.size and float(f.max()) <= 1.0:
            f = f * 255.0
        img = np.clip(np.rint(f), 0, 255).astype(np.uint8)
    elif np.issubdtype(img.dtype, np.integer):
        img = np.clip(img, 0, 255).astype(np.uint8)
    else:
        raise ImageDecodeError(f"image {where} has an unsupported pixel type {img.dtype}")
    return np.ascontiguousarray(img)


# --------------------------------------------------------------------------------------------------
# giving memory back


_LIBC: Any = None
_M_MMAP_THRESHOLD = -3


def _libc() -> Any:
    global _LIBC
    if _LIBC is None:
        _LIBC = False
        if sys.platform.startswith("linux"):
            try:
                lib = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
                lib.malloc_trim  # noqa: B018 - glibc only (musl has none)
                _LIBC = lib
            except (OSError, AttributeError):
                _LIBC = False
    return _LIBC


def release_memory(mmap_threshold: int | None = None) -> bool:
    """Return freed heap memory to the OS (glibc ``malloc_trim``); a no-op elsewhere. True when done.

    ``mmap_threshold`` (bytes) also fixes glibc's ``M_MMAP_THRESHOLD``: allocations at least that big
    are then mapped and unmapped on free, instead of the threshold creeping up to 32 MiB after the
    first large free and leaving decoded images' memory in the per-thread heaps (the service sets it).
    """
    lib = _libc()
    if not lib:
        return False
    if mmap_threshold is not None:
        lib.mallopt(_M_MMAP_THRESHOLD, int(mmap_threshold))
    lib.malloc_trim(0)
    return True
