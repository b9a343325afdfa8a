"""InsightFace ``.bin`` verification sets (``lfw.bin``, ``cfp_fp.bin``, ``agedb_30.bin``, ...): a pickle of
``(2N encoded images, N bools)`` as written by insightface's ``lfw2pack.py`` and read by ``load_bin``.
:func:`read_bin` never calls :func:`pickle.load`: :class:`RestrictedUnpickler` resolves only a whitelist of
argument-checking stand-ins (bytes, bool numpy arrays) and refuses anything else with
:class:`FaceforgeError`; file size, image count, memo fan-out and decoded bytes are bounded
(:data:`MAX_FILE_BYTES`, :data:`MAX_IMAGES`, :data:`MAX_FANOUT`, :data:`MAX_DECODED_BYTES`). Also
:class:`BinSet`, :func:`write_bin`, :func:`pairs_to_bin`, :func:`bin_to_pairs`. Details: docs/data.md,
"`.bin` format and limits".
"""

from __future__ import annotations

import io
import os
import pickle
import pickletools
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from faceforge.data.pairs import Pairs, write_pairs_csv
from faceforge.errors import FaceforgeError
from faceforge.fileio import env_limit, naming_errors, write_bytes
from faceforge.imageio import check_encoded, extension_for

__all__ = [
    "MAX_DECODED_BYTES",
    "MAX_FANOUT",
    "MAX_FILE_BYTES",
    "MAX_IMAGES",
    "BinSet",
    "RestrictedUnpickler",
    "bin_to_pairs",
    "pairs_to_bin",
    "read_bin",
    "safe_loads",
    "write_bin",
]


#: largest .bin file read (``FACEFORGE_BIN_MAX_FILE_MB``)
MAX_FILE_BYTES = env_limit("FACEFORGE_BIN_MAX_FILE_MB", 4096 * 2**20, 2**20)
#: most images one .bin may hold (``FACEFORGE_BIN_MAX_IMAGES``; LFW has 12,000)
MAX_IMAGES = env_limit("FACEFORGE_BIN_MAX_IMAGES", 200_000)
#: most references to one pickled object (``FACEFORGE_BIN_MAX_FANOUT``; LFW's busiest image is in 6 pairs)
MAX_FANOUT = env_limit("FACEFORGE_BIN_MAX_FANOUT", 64)
#: most bytes decode_all allocates for the decoded images (``FACEFORGE_BIN_MAX_DECODED_MB``)
MAX_DECODED_BYTES = env_limit("FACEFORGE_BIN_MAX_DECODED_MB", 4096 * 2**20, 2**20)

_GET_OPS = frozenset({"GET", "BINGET", "LONG_BINGET"})


class _Refused(pickle.UnpicklingError):
    pass


def _safe_codecs_encode(obj: Any, encoding: Any = "utf-8", *rest: Any) -> bytes:
    if rest or not isinstance(obj, str) or encoding not in ("latin1", "latin-1"):
        raise _Refused(
            f"_codecs.encode called with unexpected arguments ({type(obj).__name__}, {encoding!r})"
        )
    return obj.encode("latin1")


def _safe_bytes(*args: Any) -> bytes:
    if not args:
        return b""
    if len(args) == 2 and isinstance(args[0], str):
        return _safe_codecs_encode(*args)
    if len(args) == 1 and isinstance(args[0], (bytes, bytearray)):
        return bytes(args[0])
    raise _Refused("bytes() called with unexpected arguments")


def _safe_bytearray(*args: Any) -> bytearray:
    return bytearray(_safe_bytes(*args))


def _safe_dtype(obj: Any, align: Any = False, copy: Any = True) -> np.dtype:
    name = obj.decode("latin1") if isinstance(obj, bytes) else obj
    if not isinstance(name, str) or name not in ("b1", "?", "bool"):
        raise _Refused(f"numpy dtype {name!r} is not allowed (only bool arrays are)")
    return np.dtype(bool)


class _NDArrayToken:
    """Stands in for ``numpy.ndarray`` in a pickle: usable only as ``_reconstruct``'s subtype."""

    def __reduce__(self) -> Any:  # pragma: no cover - never pickled
        raise TypeError("not picklable")


_NDARRAY = _NDArrayToken()


def _safe_reconstruct(subtype: Any, shape: Any, typecode: Any) -> np.ndarray:
    if subtype is not _NDARRAY:
        raise _Refused(f"array subtype {subtype!r} is not allowed")
    if not isinstance(shape, tuple) or not all(isinstance(s, int) and 0 <= s < 2**31 for s in shape):
        raise _Refused(f"array shape {shape!r} is not allowed")
    return np.ndarray((0,), dtype=bool)


def _safe_scalar(dtype: Any, data: Any = None) -> np.bool_:
    if (
        not isinstance(dtype, np.dtype)
        or dtype != np.dtype(bool)
        or not isinstance(data, bytes)
        or len(data) != 1
    ):
        raise _Refused("numpy scalar is not a bool")
    return np.bool_(data != b"\x00")


_ALLOWED: dict[tuple[str, str], Any] = {
    ("_codecs", "encode"): _safe_codecs_encode,
    ("builtins", "bytes"): _safe_bytes,
    ("__builtin__", "bytes"): _safe_bytes,
    ("builtins", "bytearray"): _safe_bytearray,
    ("__builtin__", "bytearray"): _safe_bytearray,
    ("numpy", "ndarray"): _NDARRAY,
    ("numpy", "dtype"): _safe_dtype,
    ("numpy.core.multiarray", "_reconstruct"): _safe_reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _safe_reconstruct,
    ("numpy.core.multiarray", "scalar"): _safe_scalar,
    ("numpy._core.multiarray", "scalar"): _safe_scalar,
}


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that resolves only the whitelisted globals listed in docs/data.md (".bin format")."""

    def find_class(self, module: str, name: str) -> Any:
        """Return the stand-in for an allowed global; refuse everything else."""
        fn = _ALLOWED.get((module, name))
        if fn is None:
            raise _Refused(
                f"global '{module}.{name}' is not allowed (only bytes, lists, tuples, bools, ints and "
                "numpy bool arrays may appear in a .bin file)"
            )
        return fn

    def persistent_load(self, pid: Any) -> Any:
        """Persistent ids are never allowed."""
        raise _Refused("persistent ids are not allowed")


def memo_fanout(data: bytes, source: str, max_fanout: int) -> int:
    """Scan the pickle's opcodes (nothing is built) and refuse one whose memo repeats an object more
    than ``max_fanout`` times, or whose opcodes are truncated; returns the largest repeat count."""
    refs: Counter[Any] = Counter()
    try:
        for op, arg, _pos in pickletools.genops(io.BytesIO(data)):
            if op.name in _GET_OPS:
                refs[arg] += 1
    except Exception as e:  # truncated or malformed opcodes: never handed to the C unpickler, whose
        # counted-bytes opcodes allocate the declared length before reading it
        raise FaceforgeError(f"{source}: not a readable pickle ({type(e).__name__}: {e})") from None
    if not refs:
        return 0
    memo, n = refs.most_common(1)[0]
    if n > max_fanout:
        raise FaceforgeError(
            f"{source}: refused to load: memo entry {memo} is referenced {n} times (limit {max_fanout}); "
            "one stored image repeated that often only inflates the set (FACEFORGE_BIN_MAX_FANOUT raises it)"
        )
    return n


def safe_loads(data: bytes, source: str = "<bytes>", *, max_fanout: int | None = None) -> Any:
    """Unpickle ``data`` with :class:`RestrictedUnpickler`; errors become :class:`FaceforgeError`.

    ``max_fanout``: refuse a pickle whose memo references one object more often (None: no scan).
    """
    if max_fanout is not None:
        memo_fanout(data, source, max_fanout)
    try:
        obj = RestrictedUnpickler(io.BytesIO(data), encoding="bytes").load()
    except _Refused as e:
        raise FaceforgeError(f"{source}: refused to load: {e}") from None
    except Exception as e:  # truncated or malformed pickle
        raise FaceforgeError(f"{source}: not a readable pickle ({type(e).__name__}: {e})") from None
    _check_types(obj, source)
    return obj


def _check_types(obj: Any, source: str, depth: int = 0) -> None:
    if depth > 4:
        raise FaceforgeError(f"{source}: refused to load: nesting deeper than a .bin file has")
    if isinstance(obj, (bytes, bytearray, bool, int, np.bool_)):
        return
    if isinstance(obj, np.ndarray):
        if obj.dtype != np.dtype(bool):
            raise FaceforgeError(f"{source}: refused to load: numpy array of dtype {obj.dtype} (only bool)")
        return
    if isinstance(obj, (list, tuple)):
        for v in obj:
            _check_types(v, source, depth + 1)
        return
    raise FaceforgeError(f"{source}: refused to load: value of type {type(obj).__name__}")


@dataclass
class BinSet:
    """A loaded ``.bin`` set: ``images`` (2N encoded images) and ``issame`` (N bools)."""

    images: list[bytes]
    issame: np.ndarray
    source: str = ""
    num_corrupt: int = field(default=0)

    def __len__(self) -> int:
        return len(self.issame)

    def decode(self, i: int) -> np.ndarray | None:
        """Decode image ``i`` to RGB ``uint8`` HWC; ``None`` if it does not decode or declares more pixels
        than the decoder's limit (read from its header first)."""
        data = self.images[i]
        if not data:
            return None
        try:
            check_encoded(data, source=f"{self.source} image {i}")
        except FaceforgeError:
            return None
        im = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
        return None if im is None else cv2.cvtColor(im, cv2.COLOR_BGR2RGB)

    def decode_all(
        self, size: tuple[int, int] | None = None, max_bytes: int | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Decode every image to ``[2N, H, W, 3]`` RGB ``uint8`` (resized to ``size`` = (h, w) when
        given, else the first good image's size). Returns ``(images, ok)``; images that do not decode
        are zeros with ``ok[i] = False`` and are counted in :attr:`num_corrupt`.

        The output is allocated once, after checking it against ``max_bytes`` (default
        :data:`MAX_DECODED_BYTES`); images are decoded one at a time into it.
        """
        limit = MAX_DECODED_BYTES if max_bytes is None else int(max_bytes)
        n = len(self.images)
        first_i, first = 0, None
        if size is None:
            for first_i in range(n):
                first = self.decode(first_i)
                if first is not None:
                    break
            size = (112, 112) if first is None else (first.shape[0], first.shape[1])
        h, w = (int(v) for v in size)
        need = n * h * w * 3
        if need > limit:
            raise FaceforgeError(
                f"{self.source or '.bin'}: decoding {n} images at {h}x{w} needs {need / 2**20:,.0f} MiB, "
                f"over the limit of {limit / 2**20:,.0f} MiB (FACEFORGE_BIN_MAX_DECODED_MB raises it)"
            )
        out = np.zeros((n, h, w, 3), dtype=np.uint8)
        ok = np.zeros(n, dtype=bool)
        for i in range(n):
            d = first if (first is not None and i == first_i) else self.decode(i)
            if d is None:
                continue
            if d.shape[:2] != (h, w):
                d = cv2.resize(d, (w, h), interpolation=cv2.INTER_AREA)
            out[i] = d
            ok[i] = True
        self.num_corrupt = int((~ok).sum())
        return out, ok


def read_bin(path: str | os.PathLike[str]) -> BinSet:
    """Read a ``.bin`` pair set safely (see docs/data.md, ".bin format and limits").

    Raises:
        FaceforgeError: missing file, refused or malformed pickle, wrong structure, odd image count,
            or an image count that is not twice the number of labels.
    """
    p = Path(path).expanduser()
    if not p.is_file():
        raise FaceforgeError(f".bin file {p} does not exist")
    size = p.stat().st_size
    if size > MAX_FILE_BYTES:
        raise FaceforgeError(
            f"{p} is {size / 2**20:,.0f} MiB, over the .bin limit of {MAX_FILE_BYTES / 2**20:,.0f} MiB "
            "(FACEFORGE_BIN_MAX_FILE_MB raises it)"
        )
    obj = safe_loads(p.read_bytes(), str(p), max_fanout=MAX_FANOUT)
    if not isinstance(obj, (tuple, list)) or len(obj) != 2:
        raise FaceforgeError(f"{p}: expected a pickled (images, issame) pair, got {type(obj).__name__}")
    bins, issame = obj
    if not isinstance(bins, (list, tuple)) or not all(isinstance(b, (bytes, bytearray)) for b in bins):
        raise FaceforgeError(f"{p}: the first element must be a list of encoded images (bytes)")
    if isinstance(issame, np.ndarray):
        if issame.ndim != 1:
            raise FaceforgeError(f"{p}: issame must be 1-D, got shape {issame.shape}")
        same = issame.astype(bool)
    elif isinstance(issame, (list, tuple)) and all(
        isinstance(v, (bool, np.bool_)) or (isinstance(v, int) and v in (0, 1)) for v in issame
    ):
        same = np.asarray(issame, dtype=bool)
    else:
        raise FaceforgeError(f"{p}: the second element must be a list of bools (issame)")
    if len(bins) > MAX_IMAGES:
        raise FaceforgeError(
            f"{p}: holds {len(bins)} images, over the limit of {MAX_IMAGES} "
            "(FACEFORGE_BIN_MAX_IMAGES raises it)"
        )
    if len(bins) % 2:
        raise FaceforgeError(f"{p}: holds an odd number of images ({len(bins)}); pairs need an even number")
    if len(bins) != 2 * len(same):
        raise FaceforgeError(
            f"{p}: {len(bins)} images but {len(same)} labels; expected exactly 2 images per label"
        )
    return BinSet([bytes(b) for b in bins], same, str(p))


def write_bin(
    path: str | os.PathLike[str], images: Sequence[bytes], issame: Sequence[bool] | np.ndarray
) -> Path:
    """Write ``(list of image bytes, list of bools)`` as a ``.bin`` (pickle protocol 4, no globals)."""
    p = Path(path)
    same = [bool(v) for v in np.asarray(issame, dtype=bool).ravel()]
    imgs = [bytes(b) for b in images]
    if len(imgs) != 2 * len(same):
        raise FaceforgeError(f"write_bin({p}): {len(imgs)} images for {len(same)} labels; need 2 per label")
    p.parent.mkdir(parents=True, exist_ok=True)
    with naming_errors(p), open(p, "wb") as fh:
        pickler = pickle.Pickler(fh, protocol=4)
        # No memo: an image used by several pairs is stored once per use, as insightface's files are,
        # so the file never needs the memo fan-out that read_bin refuses.
        pickler.fast = True
        pickler.dump((imgs, same))
    return p


def pairs_to_bin(
    pairs: Pairs, out: str | os.PathLike[str], image_size: tuple[int, int] | None = None, quality: int = 95
) -> Path:
    """Pack a :class:`~faceforge.data.pairs.Pairs` list into a ``.bin``.

    Image bytes are copied unchanged unless ``image_size`` (h, w) is given, in which case every image
    is decoded, resized and re-encoded as JPEG (``quality``); an image that does not decode then
    raises :class:`FaceforgeError` naming it.
    """
    images: list[bytes] = []
    cache: dict[str, bytes] = {}
    for a, b in zip(pairs.paths_a, pairs.paths_b):
        for q in (a, b):
            if q not in cache:
                try:
                    data = Path(q).read_bytes()
                except OSError as e:
                    raise FaceforgeError(f"cannot read image {q}: {e}") from None
                if image_size is not None:
                    check_encoded(data, source=f"image {q}")  # its header, before decoding
                    im = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
                    if im is None:
                        raise FaceforgeError(f"image {q} does not decode (corrupt or not an image)")
                    im = cv2.resize(im, (image_size[1], image_size[0]), interpolation=cv2.INTER_AREA)
                    data = cv2.imencode(".jpg", im, [cv2.IMWRITE_JPEG_QUALITY, quality])[1].tobytes()
                cache[q] = data
            images.append(cache[q])
    return write_bin(out, images, pairs.issame)


def bin_to_pairs(
    bin_path: str | os.PathLike[str], out_dir: str | os.PathLike[str], n_folds: int = 10
) -> Pairs:
    """Unpack a ``.bin`` into ``out_dir/images/NNNNNN.<ext>`` and ``out_dir/pairs.csv``.

    The CSV has ``path_a,path_b,label,fold`` with ``n_folds`` contiguous folds (the split insightface
    evaluates with); the returned :class:`Pairs` is what :func:`read_pairs` gives for that CSV.
    """
    bs = read_bin(bin_path)
    out = Path(out_dir)
    (out / "images").mkdir(parents=True, exist_ok=True)
    width = max(6, len(str(len(bs.images))))
    paths = []
    for i, data in enumerate(bs.images):
        p = out / "images" / f"{i:0{width}d}{extension_for(data)}"
        write_bytes(p, data)
        paths.append(str(p))
    n = len(bs.issame)
    k = max(1, min(n_folds, n))
    pairs = Pairs(paths[0::2], paths[1::2], bs.issame.copy(), (np.arange(n) * k) // max(n, 1))
    write_pairs_csv(out / "pairs.csv", pairs, relative_to=out)
    return pairs
