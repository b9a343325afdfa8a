"""Reading photos for detection: any PIL-readable file → RGB uint8, EXIF orientation applied.

EXIF orientation tag 274 (TIFF/EXIF 2.3 §4.6.4) is applied with ``PIL.ImageOps.exif_transpose``
so that landmarks refer to the upright picture a viewer sees. Gray, palette, RGBA and 16-bit images
are converted (16-bit scaled by 1/257, alpha dropped).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from faceforge.align.detectors.base import to_rgb_uint8
from faceforge.errors import FaceforgeError

__all__ = ["IMAGE_EXTENSIONS", "read_image"]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif", ".ppm", ".pgm")


def read_image(path: str | Path) -> np.ndarray:
    """Load ``path`` as an upright RGB uint8 ``[H, W, 3]`` array; :class:`FaceforgeError` if unreadable."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    p = Path(path)
    if not p.is_file():
        raise FaceforgeError(f"image {p} does not exist")
    try:
        with Image.open(p) as im:
            im = ImageOps.exif_transpose(im)
            if im.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N"):
                arr = np.clip(np.asarray(im, dtype=np.int64), 0, 65535).astype(np.uint16)
            elif im.mode == "F":
                arr = np.asarray(im, dtype=np.float32)
            elif im.mode in ("L", "RGB"):
                arr = np.asarray(im)
            else:  # P, LA, RGBA, CMYK, YCbCr, 1, …
                arr = np.asarray(im.convert("RGBA" if "A" in im.mode or im.mode == "P" else "RGB"))
    except UnidentifiedImageError:
        raise FaceforgeError(f"{p} is not an image file PIL can read") from None
    except (OSError, ValueError, SyntaxError) as e:
        raise FaceforgeError(f"cannot decode image {p}: {e}") from None
    if arr.ndim < 2 or arr.shape[0] == 0 or arr.shape[1] == 0:
        raise FaceforgeError(f"image {p} is empty (shape {arr.shape})")
    return to_rgb_uint8(arr)
