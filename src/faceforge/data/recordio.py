"""InsightFace RecordIO datasets (``train.rec`` / ``train.idx`` / ``property``) in pure Python, no mxnet:
dmlc-core RecordIO framing, MXNet's ``.idx`` index and ``IRHeader`` image records, and insightface's
``MXFaceDataset`` layout. :class:`FaceRecordDataset` reads by key, safe with any number of DataLoader
workers, skipping and counting bad records; :func:`write_face_rec` writes a set; every number read from
a file is checked before it sizes an allocation (:data:`MAX_RECORD_BYTES`, :data:`MAX_CLASSES`).
Details: docs/data.md, "InsightFace RecordIO" and "RecordIO format and hostile files".
"""

from __future__ import annotations

import contextlib
import io
import itertools
import logging
import math
import os
import struct
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from faceforge.data.folder import decode_image
from faceforge.errors import FaceforgeError
from faceforge.fileio import env_limit, fsync_dir, naming_errors, write_text
from faceforge.imageio import probe

__all__ = [
    "MAGIC",
    "FaceRecordDataset",
    "IRHeader",
    "IndexedRecordReader",
    "IndexedRecordWriter",
    "pack_record",
    "read_property",
    "rec_paths",
    "unpack_record",
    "write_face_rec",
]

log = logging.getLogger(__name__)

MAGIC = 0xCED7230A
_MAGIC_BYTES = struct.pack("<I", MAGIC)
_LEN_MASK = (1 << 29) - 1
_IR_FMT = "<IfQQ"
_IR_SIZE = struct.calcsize(_IR_FMT)  # 24
#: label floats one record may carry (insightface uses 1 or 2)
MAX_LABEL_FLOATS = 1024
#: bytes a reader will allocate for one record's header read in one go
_ONE_READ = 1 << 20


#: largest record payload read (a face image is ~10 KB); ``$FACEFORGE_REC_MAX_RECORD_MB`` raises it
MAX_RECORD_BYTES = env_limit("FACEFORGE_REC_MAX_RECORD_MB", 64 * 2**20, 2**20)
#: largest class count (``property``, labels); ``$FACEFORGE_REC_MAX_CLASSES`` raises it
MAX_CLASSES = env_limit("FACEFORGE_REC_MAX_CLASSES", 10_000_000)


def _as_index(v: Any, lo: int, hi: int) -> int | None:
    """``v`` as an int in ``[lo, hi]`` when it is a finite integral number there, else None."""
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    if not math.isfinite(f) or f != int(f) or not lo <= f <= hi:
        return None
    return int(f)


@dataclass
class IRHeader:
    """MXNet image-record header: ``flag`` (number of label floats, 0 = scalar label), ``label``
    (float or float32 array), ``id``, ``id2``."""

    flag: int
    label: float | np.ndarray
    id: int = 0
    id2: int = 0


def pack_record(header: IRHeader, payload: bytes = b"") -> bytes:
    """Serialise an ``IRHeader`` (+ label array when it is one) followed by ``payload``."""
    lab = header.label
    if isinstance(lab, (int, float, np.floating, np.integer)):
        return struct.pack(_IR_FMT, 0, float(lab), header.id, header.id2) + payload
    arr = np.asarray(lab, dtype="<f4").ravel()
    return struct.pack(_IR_FMT, arr.size, 0.0, header.id, header.id2) + arr.tobytes() + payload


def unpack_record(buf: bytes) -> tuple[IRHeader, bytes]:
    """Split a record into its ``IRHeader`` and payload; raise ``ValueError`` if it is too short."""
    if len(buf) < _IR_SIZE:
        raise ValueError(f"record of {len(buf)} bytes is shorter than the {_IR_SIZE}-byte IRHeader")
    flag, label, id1, id2 = struct.unpack_from(_IR_FMT, buf, 0)
    if flag > 0:
        end = _IR_SIZE + 4 * flag
        if len(buf) < end:
            raise ValueError(f"record of {len(buf)} bytes is too short for {flag} label floats")
        arr = np.frombuffer(buf, dtype="<f4", count=flag, offset=_IR_SIZE).astype(np.float32)
        return IRHeader(flag, arr, id1, id2), buf[end:]
    return IRHeader(0, label, id1, id2), buf[_IR_SIZE:]


def _frame(payload: bytes) -> bytes:
    """Frame one record per dmlc RecordIO (splitting at aligned magic words)."""
    n = len(payload)
    if n >= 1 << 29:
        raise FaceforgeError(f"RecordIO record of {n} bytes is too large (limit 2^29 bytes)")
    out = io.BytesIO()
    start = 0
    pos = payload.find(_MAGIC_BYTES)
    while pos != -1 and pos + 4 <= n:
        if pos % 4 == 0:
            cflag = 1 if start == 0 else 2
            out.write(_MAGIC_BYTES + struct.pack("<I", (cflag << 29) | (pos - start)))
            out.write(payload[start:pos])
            start = pos + 4
            pos = payload.find(_MAGIC_BYTES, start)
        else:
            pos = payload.find(_MAGIC_BYTES, pos + 1)
    cflag = 3 if start else 0
    rest = n - start
    out.write(_MAGIC_BYTES + struct.pack("<I", (cflag << 29) | rest))
    out.write(payload[start:])
    out.write(b"\0" * ((4 - rest % 4) % 4))
    return out.getvalue()


class IndexedRecordWriter:
    """Write an indexed RecordIO pair (``.rec`` + ``.idx``); use as a context manager.

    Both are written under hidden temporary names and renamed by :meth:`close`: a run that fails (a full
    disk) or is killed leaves any earlier pair as it was and no half file a reader would take.
    """

    def __init__(self, rec_path: str | os.PathLike[str], idx_path: str | os.PathLike[str] | None = None):
        self.rec_path = Path(rec_path)
        self.idx_path = Path(idx_path) if idx_path is not None else self.rec_path.with_suffix(".idx")
        self.rec_path.parent.mkdir(parents=True, exist_ok=True)
        self._tmp_rec = self.rec_path.with_name(f".{self.rec_path.name}.partial")
        self._tmp_idx = self.idx_path.with_name(f".{self.idx_path.name}.partial")
        self._fh = open(self._tmp_rec, "wb")
        self.offsets: dict[int, int] = {}

    def write(self, key: int, record: bytes) -> None:
        """Append ``record`` under integer ``key``."""
        if key in self.offsets:
            raise FaceforgeError(f"{self.rec_path}: key {key} written twice")
        self.offsets[key] = self._fh.tell()
        with naming_errors(self.rec_path):
            self._fh.write(_frame(record))

    def overwrite(self, key: int, record: bytes) -> None:
        """Replace an already written record by one that frames to exactly the same size."""
        off = self.offsets[key]
        framed = _frame(record)
        end = self._fh.tell()
        self._fh.seek(off)
        old = self._read_frame_size(off)
        if old != len(framed):
            self._fh.seek(end)
            raise FaceforgeError(f"{self.rec_path}: cannot overwrite key {key} with a record of another size")
        self._fh.seek(off)
        with naming_errors(self.rec_path):
            self._fh.write(framed)
        self._fh.seek(end)

    def _read_frame_size(self, off: int) -> int:
        self._fh.flush()
        with open(self._tmp_rec, "rb") as fh:
            fh.seek(off)
            total = 0
            while True:
                _magic, lrec = struct.unpack("<II", fh.read(8))
                cflag, length = lrec >> 29, lrec & _LEN_MASK
                pad = (4 - length % 4) % 4
                fh.seek(length + pad, 1)
                total += 8 + length + pad
                if cflag in (0, 3):
                    return total

    def close(self) -> None:
        """Flush the ``.rec``, write the ``.idx`` and put both in place."""
        if self._fh.closed:
            return
        try:
            with naming_errors(self.rec_path):
                self._fh.flush()  # what is buffered: a full disk can surface here
                os.fsync(self._fh.fileno())
                self._fh.close()
            with naming_errors(self.idx_path), open(self._tmp_idx, "w", encoding="ascii") as fh:
                fh.writelines(f"{k}\t{off}\n" for k, off in self.offsets.items())
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(self._tmp_rec, self.rec_path)
            os.replace(self._tmp_idx, self.idx_path)
        except BaseException:
            self.abort()
            raise
        fsync_dir(self.rec_path.parent)

    def abort(self) -> None:
        """Drop what was written: the temporaries are removed, an earlier pair at the paths is kept."""
        with contextlib.suppress(OSError):
            self._fh.close()
        for p in (self._tmp_rec, self._tmp_idx):
            p.unlink(missing_ok=True)

    def __enter__(self) -> IndexedRecordWriter:
        return self

    def __exit__(self, exc_type: object, *exc: object) -> None:
        if exc_type is None:
            self.close()
        else:  # the error that stopped the writing is the one to see, not a second one from the index
            self.abort()


class IndexedRecordReader:
    """Random access to an indexed RecordIO file; fork/worker safe (lazy per-process handle)."""

    def __init__(self, rec_path: str | os.PathLike[str], idx_path: str | os.PathLike[str] | None = None):
        self.rec_path = Path(rec_path)
        self.idx_path = Path(idx_path) if idx_path is not None else self.rec_path.with_suffix(".idx")
        if not self.rec_path.is_file():
            raise FaceforgeError(f"RecordIO file {self.rec_path} does not exist")
        self.file_size = self.rec_path.stat().st_size
        if self.idx_path.is_file():
            self.offsets = self._read_idx()
        else:
            log.warning("%s missing: scanning %s to build the index", self.idx_path, self.rec_path)
            self.offsets = self.scan()
        self._fd: int | None = None
        self._pid: int | None = None
        self._sorted: np.ndarray | None = None

    def _read_idx(self) -> dict[int, int]:
        offsets: dict[int, int] = {}
        # Every record takes at least its 8-byte frame header: more entries than that is not an index.
        most = self.file_size // 8 + 1
        with open(self.idx_path, encoding="ascii", errors="replace") as fh:
            for lineno, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                parts = line.split("\t") if "\t" in line else line.split()
                try:
                    k, off = int(parts[0]), int(parts[1])
                except (ValueError, IndexError):
                    raise FaceforgeError(
                        f"{self.idx_path}:{lineno}: expected 'index<TAB>offset' integers, "
                        f"got {line.strip()[:80]!r}"
                    ) from None
                if k < 0 or off < 0:
                    raise FaceforgeError(
                        f"{self.idx_path}:{lineno}: key {k} / offset {off} is negative; expected "
                        f"non-negative integers (offsets into {self.rec_path.name}, {self.file_size} bytes)"
                    )
                offsets[k] = off
                if len(offsets) > most:
                    raise FaceforgeError(
                        f"{self.idx_path}:{lineno}: more index entries than {self.rec_path.name} "
                        f"({self.file_size} bytes) can hold records; the index does not belong to it"
                    )
        return offsets

    def scan(self) -> dict[int, int]:
        """Walk the ``.rec`` from the start and return ``{record number: offset}`` (stops at damage)."""
        offsets: dict[int, int] = {}
        with open(self.rec_path, "rb") as fh:
            off, k = 0, 0
            while off + 8 <= self.file_size:
                start = off
                ok = True
                while True:
                    fh.seek(off)
                    head = fh.read(8)
                    if len(head) < 8:
                        ok = False
                        break
                    magic, lrec = struct.unpack("<II", head)
                    if magic != MAGIC:
                        ok = False
                        break
                    cflag, length = lrec >> 29, lrec & _LEN_MASK
                    off += 8 + length + (4 - length % 4) % 4
                    if off > self.file_size:
                        ok = False
                        break
                    if cflag in (0, 3):
                        break
                if not ok:
                    break
                offsets[k] = start
                k += 1
        return offsets

    @property
    def keys(self) -> list[int]:
        """Record keys in index order."""
        return list(self.offsets)

    def _handle(self) -> int:
        pid = os.getpid()
        if self._fd is None or self._pid != pid:
            self._fd = os.open(self.rec_path, os.O_RDONLY | getattr(os, "O_BINARY", 0))
            self._pid = pid
        return self._fd

    def _pread(self, n: int, off: int) -> bytes:
        fd = self._handle()
        if hasattr(os, "pread"):
            return os.pread(fd, n, off)
        os.lseek(fd, off, os.SEEK_SET)  # pragma: no cover - non-POSIX
        return os.read(fd, n)

    def _span(self, off: int) -> int:
        """Bytes from ``off`` to the next record's offset (or the end of the file)."""
        if self._sorted is None:
            self._sorted = np.unique(
                np.fromiter(self.offsets.values(), dtype=np.int64, count=len(self.offsets))
            )
        j = int(np.searchsorted(self._sorted, off, side="right"))
        nxt = int(self._sorted[j]) if j < len(self._sorted) else self.file_size
        return max(0, min(nxt, self.file_size) - off)

    def read(self, key: int) -> bytes:
        """Return the payload of record ``key``; raise ``KeyError`` / ``ValueError`` when absent/damaged.

        Lengths are checked against the file size and :data:`MAX_RECORD_BYTES` before anything is read.
        """
        off = self.offsets[key]
        if off < 0 or off + 8 > self.file_size:
            raise ValueError(f"record {key}: offset {off} is outside the file ({self.file_size} bytes)")
        # Usually the whole framed record in one read; never more than _ONE_READ on trust.
        buf = self._pread(min(self._span(off), _ONE_READ), off)
        pos = 0
        total = 0

        def take(n: int) -> bytes:
            if pos + n <= len(buf):
                return buf[pos : pos + n]
            return self._pread(n, off + pos)

        parts: list[bytes] = []
        while True:
            if off + pos + 8 > self.file_size:
                raise ValueError(f"record {key} at offset {off + pos}: truncated header (end of file)")
            head = take(8)
            if len(head) < 8:
                raise ValueError(f"record {key} at offset {off + pos}: truncated header (end of file)")
            magic, lrec = struct.unpack("<II", head)
            if magic != MAGIC:
                raise ValueError(f"record {key} at offset {off + pos}: bad magic 0x{magic:08x}")
            cflag, length = lrec >> 29, lrec & _LEN_MASK
            pos += 8
            total += length
            if total > MAX_RECORD_BYTES:
                raise ValueError(
                    f"record {key} at offset {off}: {total} bytes exceed the record limit of "
                    f"{MAX_RECORD_BYTES} (FACEFORGE_REC_MAX_RECORD_MB)"
                )
            if off + pos + length > self.file_size:
                raise ValueError(
                    f"record {key} at offset {off}: truncated "
                    f"({self.file_size - off - pos} of {length} bytes)"
                )
            data = take(length)
            if len(data) < length:
                raise ValueError(f"record {key} at offset {off}: truncated ({len(data)} of {length} bytes)")
            parts.append(data)
            pos += length + (4 - length % 4) % 4
            if cflag in (0, 3):
                break
        return parts[0] if len(parts) == 1 else _MAGIC_BYTES.join(parts)

    def read_header(self, key: int) -> IRHeader:
        """Read only the ``IRHeader`` (and label floats) of record ``key``."""
        off = self.offsets[key]
        head = self._pread(8 + _IR_SIZE, off)
        if len(head) < 8 + _IR_SIZE:
            raise ValueError(f"record {key} at offset {off}: truncated")
        magic, lrec = struct.unpack_from("<II", head)
        if magic != MAGIC:
            raise ValueError(f"record {key} at offset {off}: bad magic 0x{magic:08x}")
        flag = struct.unpack_from("<I", head, 8)[0]
        length = lrec & _LEN_MASK
        if flag > MAX_LABEL_FLOATS or (flag and (lrec >> 29) == 0 and _IR_SIZE + 4 * flag > length):
            raise ValueError(
                f"record {key} at offset {off}: header declares {flag} label floats "
                f"(record of {length} bytes, at most {MAX_LABEL_FLOATS} allowed)"
            )
        if flag == 0 or (lrec >> 29) != 0:
            # scalar labels, or a split record (rare): read what is needed / the whole record
            if flag == 0:
                return unpack_record(head[8:])[0]
            return unpack_record(self.read(key))[0]
        buf = self._pread(_IR_SIZE + 4 * flag, off + 8)
        return unpack_record(buf)[0]

    def close(self) -> None:
        """Close this process's handle."""
        if self._fd is not None and self._pid == os.getpid():
            os.close(self._fd)
        self._fd = None

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_fd"] = None
        state["_pid"] = None
        return state

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass


def rec_paths(path: str | os.PathLike[str]) -> tuple[Path, Path, Path]:
    """``(rec, idx, property)`` paths for a ``.rec`` file, an existing ``PREFIX.rec``'s prefix, or an
    insightface folder (``FOLDER/train.rec``; also for a folder that does not exist yet)."""
    p = Path(path).expanduser()
    if p.is_dir():
        rec = p / "train.rec"
    elif p.suffix == ".rec":
        rec = p
    elif p.suffix == ".idx":
        rec = p.with_suffix(".rec")
    elif p.with_name(p.name + ".rec").is_file():
        rec = p.with_name(p.name + ".rec")
    else:
        rec = p / "train.rec"  # a folder (to be created by a writer)
    return rec, rec.with_suffix(".idx"), rec.parent / "property"


def read_property(path: str | os.PathLike[str]) -> tuple[int, int, int]:
    """Read an insightface ``property`` file: ``num_classes,height,width``."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as e:
        raise FaceforgeError(f"cannot read property file {p}: {e}") from None
    try:
        vals = tuple(int(v) for v in text.split(","))
    except ValueError:
        vals = ()
    if len(vals) != 3:
        raise FaceforgeError(f"{p}: expected 'num_classes,height,width' (3 integers), got {text!r}")
    return vals  # type: ignore[return-value]


def write_face_rec(
    path: str | os.PathLike[str],
    items: Iterable[tuple[int, bytes]],
    *,
    image_size: tuple[int, int] | None = None,
    header: bool = True,
    num_classes: int | None = None,
) -> dict[str, Any]:
    """Write an insightface-layout ``.rec`` + ``.idx`` (+ ``property`` next to them).

    Args:
        path: output ``.rec`` path, or a folder (-> ``folder/train.rec``).
        items: ``(label, encoded image bytes)`` with labels ``0..C-1`` grouped (all images of a label
            together, labels ascending); a label with no images gets an empty identity range.
        image_size: ``(height, width)`` for ``property``; default: decoded from the first image.
        header: write record 0 with the identity ranges (insightface style); without it images are
            records ``0..N-1`` and there are no identity records.
        num_classes: written to ``property``; default: ``max label + 1``.

    Returns:
        ``{"rec", "idx", "property", "num_images", "num_classes"}``.
    """
    rec, idx, prop = rec_paths(path)
    ranges: list[tuple[int, int, int]] = []  # (label, first key, end key)
    n = 0
    last = -1
    first_img: bytes | None = None
    with IndexedRecordWriter(rec, idx) as w:
        base = 1 if header else 0
        if header:
            w.write(0, pack_record(IRHeader(2, np.array([0.0, 0.0], np.float32), 0, 0)))
        for label, data in items:
            label = int(label)
            if label < last:
                raise FaceforgeError(
                    f"write_face_rec({rec}): labels must be grouped and ascending, got {label} after {last}"
                )
            key = base + n
            if label != last:
                for empty in range(last + 1, label):  # labels without images: empty ranges
                    ranges.append((empty, key, key))
                ranges.append((label, key, key + 1))
                last = label
            else:
                ranges[-1] = (label, ranges[-1][1], key + 1)
            if first_img is None:
                first_img = data
            w.write(key, pack_record(IRHeader(0, float(label), key, 0), data))
            n += 1
        if header:
            a = 1 + n
            for j, (_lab, s, e) in enumerate(ranges):
                w.write(a + j, pack_record(IRHeader(2, np.array([s, e], np.float32), a + j, 0)))
            b = a + len(ranges)
            w.overwrite(0, pack_record(IRHeader(2, np.array([a, b], np.float32), 0, 0)))
    ncls = num_classes if num_classes is not None else (last + 1 if last >= 0 else 0)
    if image_size is None:
        image_size = (0, 0)
        if first_img is not None:
            with contextlib.suppress(FaceforgeError):  # the header says the size: nothing decoded
                header = probe(first_img, source=f"{rec} first image")
                image_size = (header.height, header.width)
    write_text(prop, f"{ncls},{image_size[0]},{image_size[1]}\n")
    return {"rec": rec, "idx": idx, "property": prop, "num_images": n, "num_classes": ncls}


class FaceRecordDataset(Dataset):
    """A torch ``Dataset`` over an insightface ``.rec``: ``ds[i] -> (image, label)``.

    ``image`` is a CHW ``uint8`` RGB tensor (``float32`` in [0, 1] with ``to_float=True``), after
    ``transform`` (called on the HWC ``uint8`` RGB array, may return an array or a tensor).
    Records that cannot be read or decoded are counted in :attr:`num_skipped` (per process) and
    replaced by the next readable record, so a run never stops on a bad record. Records that lie
    beyond the end of the ``.rec`` (a truncated file) are dropped at construction and counted in
    :attr:`num_truncated`.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        transform: Callable[[np.ndarray], Any] | None = None,
        *,
        to_float: bool = False,
        idx_path: str | os.PathLike[str] | None = None,
    ):
        rec, idx, prop = rec_paths(path)
        if idx_path is not None:
            idx = Path(idx_path)
        if not rec.is_file():
            raise FaceforgeError(
                f"RecordIO file {rec} does not exist (expected a .rec, a prefix or a folder)"
            )
        self.reader = IndexedRecordReader(rec, idx)
        self.transform = transform
        self.to_float = to_float
        self.property = read_property(prop) if prop.is_file() else None
        if self.property is not None and not 0 <= self.property[0] <= MAX_CLASSES:
            raise FaceforgeError(
                f"{prop}: num_classes {self.property[0]} is outside 0..{MAX_CLASSES} "
                "(FACEFORGE_REC_MAX_CLASSES raises the limit)"
            )
        self.num_skipped = 0
        self.identity_ranges: list[tuple[int, int]] | None = None
        keys = self.reader.keys
        h0 = self._header_record(keys)
        if h0 is not None:
            a, b = h0
            keys = list(range(1, a))
            self.identity_ranges = self._read_ranges(a, b)
        size = self.reader.file_size
        ok = [k for k in keys if k in self.reader.offsets and self.reader.offsets[k] + 8 <= size]
        ok = self._drop_truncated(ok)
        self.num_truncated = len(keys) - len(ok)
        if self.num_truncated:
            log.warning("%s: %d record(s) beyond the end of the file skipped", rec, self.num_truncated)
        self.keys = np.asarray(ok, dtype=np.int64)
        self._labels: np.ndarray | None = None
        # A label is a class index below this (so nothing sized by a label can explode).
        n_classes = max(
            self.property[0] if self.property else 0, len(self.keys), len(self.identity_ranges or ())
        )
        self.label_limit = min(n_classes, MAX_CLASSES)

    def _header_record(self, keys: list[int]) -> tuple[int, int] | None:
        """``(a, b)`` if record 0 is an insightface header (array label, no image), else ``None``.

        A header whose ranges are impossible (not integers, outside the index) is an error naming it.
        """
        if not keys or keys[0] != 0:
            return None
        try:
            h0, payload = unpack_record(self.reader.read(0))
        except (ValueError, KeyError, OSError):
            return None
        if h0.flag < 2 or payload:
            return None
        lab = np.asarray(h0.label)[:2]
        top = max(self.reader.offsets) + 1
        a, b = _as_index(lab[0], 1, top), _as_index(lab[1], 1, top)
        if a is None or b is None or a > b:
            raise FaceforgeError(
                f"{self.reader.rec_path}: record 0 (the insightface header) declares images "
                f"1..{lab[0]:g} and identity records {lab[0]:g}..{lab[1]:g}; expected integers "
                f"1 <= a <= b <= {top} (the index holds keys up to {top - 1})"
            )
        if a - 1 > len(keys):
            return None
        return a, b

    def _read_ranges(self, a: int, b: int) -> list[tuple[int, int]] | None:
        """The identity records ``a .. b-1``: ``[first, end)`` image-key ranges, checked.

        Rules: docs/data.md, "RecordIO format and hostile files".
        """
        ranges: list[tuple[int, int]] = []
        for k in range(a, b):
            try:
                lab = np.asarray(self.reader.read_header(k).label).ravel()
            except (ValueError, KeyError):
                return None  # unreadable identity records: labels come from the image records
            first = _as_index(lab[0], 1, a) if lab.size >= 2 else None
            end = _as_index(lab[1], 1, a) if lab.size >= 2 else None
            if first is None or end is None or first > end:
                shown = ", ".join(f"{v:g}" for v in lab[:2])
                raise FaceforgeError(
                    f"{self.reader.rec_path}: identity record {k} has the range [{shown}); expected integers "
                    f"1 <= first <= end <= {a} (the image records)"
                )
            ranges.append((first, end))
        order = sorted(range(len(ranges)), key=lambda i: ranges[i])
        for prev, cur in itertools.pairwise(order):
            if ranges[cur][0] < ranges[prev][1]:
                raise FaceforgeError(
                    f"{self.reader.rec_path}: identity records {a + prev} and {a + cur} overlap "
                    f"({list(ranges[prev])} and {list(ranges[cur])}); an image belongs to one identity"
                )
        return ranges or None

    def _drop_truncated(self, keys: list[int]) -> list[int]:
        """Drop keys whose record runs past the end of the file (checks the tail records only)."""
        size = self.reader.file_size
        out = list(keys)
        while out:
            try:
                k = out[-1]
                off = self.reader.offsets[k]
                head = self.reader._pread(8, off)
                length = struct.unpack("<II", head)[1] & _LEN_MASK
                if off + 8 + length <= size:
                    break
            except (ValueError, struct.error):
                pass
            out.pop()
        return out

    def __len__(self) -> int:
        return len(self.keys)

    @property
    def labels(self) -> np.ndarray:
        """Class label of every sample (from the identity ranges, else from the record headers); -1 for
        a record whose label is unreadable or not a class index below :attr:`label_limit`."""
        if self._labels is None:
            labels = np.full(len(self.keys), -1, dtype=np.int64)
            if self.identity_ranges is not None and len(self.keys):
                starts = np.array([s for s, _ in self.identity_ranges], dtype=np.int64)
                ends = np.array([e for _, e in self.identity_ranges], dtype=np.int64)
                order = np.argsort(starts, kind="stable")
                j = np.searchsorted(starts[order], self.keys, side="right") - 1
                inside = j >= 0
                cls = order[np.clip(j, 0, None)]
                inside &= self.keys < ends[cls]
                labels[inside] = cls[inside]
            bad = 0
            for i in np.flatnonzero(labels < 0):
                try:
                    labels[i] = self._label_of(self.reader.read_header(int(self.keys[i])), int(self.keys[i]))
                except (ValueError, KeyError):
                    labels[i] = -1
                    bad += 1
            if bad:
                log.warning(
                    "%s: %d record(s) with an unreadable or impossible label", self.reader.rec_path, bad
                )
            self._labels = labels
        return self._labels

    def _label_of(self, header: IRHeader, key: int) -> int:
        raw = np.asarray(header.label).ravel()[0] if header.flag > 0 else header.label
        label = _as_index(raw, 0, self.label_limit - 1)
        if label is None:
            raise ValueError(
                f"record {key}: label {float(raw):g} is not a class index in 0..{self.label_limit - 1}"
            )
        return label

    @property
    def num_classes(self) -> int:
        """Number of classes (``property`` when present, else from the labels)."""
        if self.property is not None:
            return self.property[0]
        return int(self.labels.max()) + 1 if len(self) else 0

    def read_raw(self, i: int) -> tuple[int, bytes]:
        """``(label, encoded image bytes)`` of sample ``i`` (raises ``ValueError`` on a damaged record or
        an impossible label)."""
        key = int(self.keys[i])
        header, img = unpack_record(self.reader.read(key))
        return self._label_of(header, key), img

    def _load(self, i: int) -> tuple[np.ndarray, int] | None:
        try:
            label, data = self.read_raw(i)
        except (ValueError, KeyError, OSError, struct.error) as e:
            log.debug("record %d unreadable: %s", i, e)
            return None
        img = decode_image(data)
        if img is None:
            return None
        return img, label

    def __getitem__(self, i: int) -> tuple[Any, int]:
        n = len(self.keys)
        if n == 0:
            raise IndexError("empty RecordIO dataset")
        for step in range(min(n, 64)):
            got = self._load((i + step) % n)
            if got is not None:
                break
            self.num_skipped += 1
            if self.num_skipped in (1, 10, 100, 1000) or self.num_skipped % 10000 == 0:
                log.warning(
                    "%s: %d unreadable record(s) skipped so far", self.reader.rec_path, self.num_skipped
                )
        else:
            raise FaceforgeError(f"{self.reader.rec_path}: 64 records in a row near index {i} are unreadable")
        img, label = got
        out = self.transform(img) if self.transform is not None else img
        if isinstance(out, np.ndarray):
            out = torch.from_numpy(np.ascontiguousarray(out.transpose(2, 0, 1)))
        if self.to_float and out.dtype == torch.uint8:
            out = out.float().div_(255.0)
        return out, label
