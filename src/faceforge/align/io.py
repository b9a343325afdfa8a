"""Reading photos for detection: any PIL-readable file → RGB uint8, EXIF orientation (TIFF/EXIF 2.3
tag 274) applied. :func:`read_image` goes through the guarded decoder :func:`faceforge.imageio.decode_image`;
every failure is one :class:`~faceforge.errors.ImageDecodeError` line. Details: docs/align.md,
"Implementation notes" ("Reading photos").
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from faceforge.errors import FaceforgeError
from faceforge.imageio import IMAGE_EXTENSIONS, decode_image

__all__ = ["IMAGE_EXTENSIONS", "read_image"]


def read_image(path: str | Path, *, max_pixels: int | None = None) -> np.ndarray:
    """Load ``path`` as an upright RGB uint8 ``[H, W, 3]`` array; :class:`FaceforgeError` if unreadable.

    ``max_pixels``: refuse a larger declared size (default :func:`faceforge.imageio.default_max_pixels`).
    """
    p = Path(path)
    if not p.is_file():
        raise FaceforgeError(f"image {p} does not exist")
    return decode_image(p, max_pixels=max_pixels)
