"""A reader for dlib's binary serialisation of DNNs (``net_type`` ``.dat`` files, ``dlib/serialize.h``),
written from scratch and defensive: every length, count and shape is checked before anything is
allocated, a malformed field raises a :class:`~faceforge.errors.FaceforgeError` naming the file and byte
offset, nothing is unpickled or executed. Entry points: :func:`read_dlib_net`, :func:`read_net`,
:class:`DlibReader`, :class:`DlibNet`. Details: docs/backbones.md, "dlib .dat format".
"""

from __future__ import annotations

import io
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import numpy as np

from faceforge.errors import FaceforgeError

__all__ = [
    "MAX_FILE_BYTES",
    "AddPrev",
    "Affine",
    "AvgPool",
    "Con",
    "DlibNet",
    "DlibReader",
    "Fc",
    "InputRGB",
    "LossMetric",
    "Marker",
    "MaxPool",
    "Relu",
    "read_dlib_net",
    "read_layer",
    "read_net",
]

MAX_FILE_BYTES = 2 << 30  # 2 GiB: far above any dlib model file
MAX_STRING = 256  # layer names are short
MAX_DIM = 1 << 31  # a single tensor dimension
MAX_TENSOR_ELEMENTS = 1 << 28  # 1 GiB of float32
MAX_LAYERS = 100_000

_INF_EXP, _NINF_EXP, _NAN_EXP = 32000, 32001, 32002


class DlibReader:
    """Bounded reader of dlib's primitive encodings from a binary stream of known ``size``.

    ``name`` is used in error messages (normally the file path). Every read checks the bytes left.
    """

    def __init__(self, stream: BinaryIO, size: int, name: str = "<bytes>") -> None:
        if size < 0 or size > MAX_FILE_BYTES:
            raise FaceforgeError(f"{name}: size {size} bytes is outside 0..{MAX_FILE_BYTES}")
        self._f = stream
        self.size = size
        self.name = name
        self.offset = 0

    @classmethod
    def from_bytes(cls, data: bytes, name: str = "<bytes>") -> DlibReader:
        return cls(io.BytesIO(data), len(data), name)

    @property
    def remaining(self) -> int:
        return self.size - self.offset

    def error(self, expected: str, detail: str = "", offset: int | None = None) -> FaceforgeError:
        """A one-line :class:`FaceforgeError`: file, byte offset, what was expected (and what was found)."""
        off = self.offset if offset is None else offset
        msg = f"{self.name}: malformed dlib file at byte offset {off}: expected {expected}"
        return FaceforgeError(msg + (f" ({detail})" if detail else ""))

    # ----------------------------------------------------------------------------------- raw bytes

    def read_bytes(self, n: int, what: str) -> bytes:
        if n < 0 or n > self.remaining:
            raise self.error(what, f"needs {n} bytes, {self.remaining} left in the file")
        data = self._f.read(n)
        if len(data) != n:  # the stream was shorter than its declared size
            raise self.error(what, f"needs {n} bytes, the stream ended after {len(data)}")
        self.offset += n
        return data

    def skip(self, n: int, what: str) -> None:
        if n < 0 or n > self.remaining:
            raise self.error(what, f"needs {n} bytes, {self.remaining} left in the file")
        self._f.seek(n, os.SEEK_CUR)
        self.offset += n

    def peek_byte(self) -> int | None:
        if self.remaining <= 0:
            return None
        b = self._f.read(1)
        if not b:
            return None
        self._f.seek(-1, os.SEEK_CUR)
        return b[0]

    # ----------------------------------------------------------------------------------- primitives

    def read_int(self, what: str, bits: int = 64, signed: bool = True) -> int:
        """dlib's packed integer of a C++ type with ``bits`` bits."""
        start = self.offset
        ctrl = self.read_bytes(1, f"{what} (packed integer)")[0]
        n, neg = ctrl & 0x0F, bool(ctrl & 0x80)
        if ctrl & 0x70 or n == 0 or n > bits // 8:
            raise self.error(
                f"{what} (packed integer of at most {bits // 8} bytes)",
                f"control byte 0x{ctrl:02x}",
                start,
            )
        if neg and not signed:
            raise self.error(f"{what} (unsigned integer)", "negative sign flag", start)
        if n > self.remaining:
            raise self.error(
                f"{what} (packed integer)", f"needs {n} more bytes, {self.remaining} left", start
            )
        value = int.from_bytes(self.read_bytes(n, f"{what} (packed integer)"), "little")
        limit = (1 << (bits - 1)) if signed else (1 << bits) - 1
        if value > limit or (value == limit and signed and not neg):
            raise self.error(f"{what} (integer fitting {bits} bits)", f"magnitude {value}", start)
        return -value if neg else value

    def read_count(self, what: str, maximum: int) -> int:
        """A non-negative integer (e.g. a size) checked against ``maximum``."""
        start = self.offset
        v = self.read_int(what, 64, signed=True)
        if v < 0 or v > maximum:
            raise self.error(f"{what} in 0..{maximum}", f"got {v}", start)
        return v

    def read_double(self, what: str) -> float:
        """dlib's portable ``float``/``double``: packed int64 mantissa, packed int16 exponent."""
        start = self.offset
        ctrl = self.peek_byte()
        if ctrl is not None and ctrl & 0x70:
            raise self.error(f"{what} (portable float)", "old ASCII float format is not supported", start)
        mantissa = self.read_int(f"{what} mantissa", 64)
        exponent = self.read_int(f"{what} exponent", 16)
        if exponent == _INF_EXP:
            return math.inf
        if exponent == _NINF_EXP:
            return -math.inf
        if exponent == _NAN_EXP:
            return math.nan
        try:
            return math.ldexp(float(mantissa), exponent)
        except OverflowError:
            raise self.error(
                f"{what} (finite float)", f"{mantissa} * 2**{exponent} overflows", start
            ) from None

    def read_float(self, what: str) -> float:
        """A C++ ``float`` (same encoding as double; the value is rounded to float32)."""
        start = self.offset
        v = self.read_double(what)
        if math.isfinite(v) and abs(v) > float(np.finfo(np.float32).max):
            raise self.error(f"{what} (float32)", f"{v} out of range", start)
        return float(np.float32(v))

    def read_bool(self, what: str) -> bool:
        start = self.offset
        b = self.read_bytes(1, f"{what} (bool)")
        if b not in (b"0", b"1"):
            raise self.error(f"{what} (bool '0' or '1')", f"byte 0x{b[0]:02x}", start)
        return b == b"1"

    def read_string(self, what: str, max_len: int = MAX_STRING) -> str:
        start = self.offset
        n = self.read_count(f"{what} length", max_len)
        if n > self.remaining:
            raise self.error(what, f"length {n}, {self.remaining} bytes left in the file", start)
        raw = self.read_bytes(n, what)
        try:
            return raw.decode("ascii")
        except UnicodeDecodeError:
            raise self.error(f"{what} (ASCII string)", f"bytes {raw[:16]!r}", start) from None

    def _dims(self, what: str) -> tuple[int, int, int, int]:
        dims = tuple(self.read_count(f"{what} {d}", MAX_DIM) for d in ("num_samples", "k", "nr", "nc"))
        return dims  # type: ignore[return-value]

    def read_tensor(self, what: str, load: bool = True) -> np.ndarray:
        """A version-2 ``tensor``: float32 array of shape (num_samples, k, nr, nc).

        With ``load=False`` the data is skipped (e.g. cached outputs) and an empty array is returned.
        """
        start = self.offset
        version = self.read_int(f"{what} version", 32)
        if version != 2:
            raise self.error(f"{what} tensor version 2", f"got {version}", start)
        dims_at = self.offset
        dims = self._dims(what)
        n = math.prod(dims)
        if n > MAX_TENSOR_ELEMENTS or 4 * n > self.remaining:
            raise self.error(
                f"{what} data that fits the file",
                f"shape {dims} needs {4 * n} bytes, {self.remaining} left, max {MAX_TENSOR_ELEMENTS} floats",
                dims_at,
            )
        if not load:
            self.skip(4 * n, f"{what} data")
            return np.zeros((0, 0, 0, 0), np.float32)
        data = self.read_bytes(4 * n, f"{what} data")
        return np.frombuffer(data, dtype="<f4").astype(np.float32).reshape(dims)

    def read_alias_tensor(self, what: str) -> tuple[int, int, int, int]:
        """A version-1 ``alias_tensor``: just its four dims (its offset follows from the layer)."""
        start = self.offset
        version = self.read_int(f"{what} version", 32)
        if version != 1:
            raise self.error(f"{what} alias_tensor version 1", f"got {version}", start)
        return self._dims(what)


# --------------------------------------------------------------------------------------- records


@dataclass
class InputRGB:
    """``input_rgb_image_sized<NR, NC>``: ``(pixel - avg) / 256`` per RGB channel."""

    avg_red: float
    avg_green: float
    avg_blue: float
    nr: int
    nc: int


@dataclass
class Con:
    """``con_`` (version 4): ``weight`` [F, K, nr, nc] (cross-correlation) and ``bias`` [F]."""

    num_filters: int
    nr: int
    nc: int
    stride: tuple[int, int]
    padding: tuple[int, int]
    weight: np.ndarray
    bias: np.ndarray
    offset: int = 0


@dataclass
class Affine:
    """``affine_``: per-channel ``gamma * x + beta``; ``mode`` 0 = CONV_MODE (per k), 1 = FC_MODE."""

    gamma: np.ndarray
    beta: np.ndarray
    mode: int
    offset: int = 0


@dataclass
class Relu:
    offset: int = 0


@dataclass
class MaxPool:
    """``max_pool_`` (version 2); ``nr == nc == 0`` pools the whole map."""

    nr: int
    nc: int
    stride: tuple[int, int]
    padding: tuple[int, int]
    offset: int = 0


@dataclass
class AvgPool:
    """``avg_pool_`` (version 2); ``nr == nc == 0`` (``avg_pool_everything``) pools the whole map."""

    nr: int
    nc: int
    stride: tuple[int, int]
    padding: tuple[int, int]
    offset: int = 0


@dataclass
class AddPrev:
    """``add_prev_``: adds a tagged earlier output (which tag is not stored in the file)."""

    offset: int = 0


@dataclass
class Marker:
    """An ``add_tag_layer`` or ``add_skip_layer`` (both write only their version 1)."""

    offset: int = 0


@dataclass
class Fc:
    """``fc_`` (version 2): ``weight`` [num_inputs, num_outputs] (out = x @ weight + bias)."""

    num_outputs: int
    num_inputs: int
    weight: np.ndarray
    bias: np.ndarray | None
    offset: int = 0


@dataclass
class LossMetric:
    """``loss_metric_`` (version 2): the training margin and distance threshold."""

    margin: float
    dist_thresh: float


Layer = Con | Affine | Relu | MaxPool | AvgPool | AddPrev | Marker | Fc


@dataclass
class DlibNet:
    """A parsed dlib network: loss, input layer and the layers in forward order (input side first)."""

    loss: LossMetric
    input: InputRGB
    layers: list[Layer] = field(default_factory=list)
    path: str = ""


def _pair(r: DlibReader, what: str, maximum: int) -> tuple[int, int]:
    return r.read_count(f"{what} y", maximum), r.read_count(f"{what} x", maximum)


def _read_con(r: DlibReader, start: int) -> Con:
    params = r.read_tensor("con_ params")
    num_filters = r.read_count("con_ num_filters", MAX_DIM)
    nr = r.read_count("con_ filter rows", 4096)
    nc = r.read_count("con_ filter cols", 4096)
    stride = _pair(r, "con_ stride", 4096)
    padding = _pair(r, "con_ padding", 4096)
    at = r.offset
    filt = r.read_alias_tensor("con_ filters")
    bias = r.read_alias_tensor("con_ biases")
    for what in ("learning_rate_multiplier", "weight_decay_multiplier", "bias_learning_rate_multiplier",
                 "bias_weight_decay_multiplier"):  # fmt: skip
        r.read_double(f"con_ {what}")
    if (
        filt[0] != num_filters
        or filt[2:] != (nr, nc)
        or bias != (1, num_filters, 1, 1)
        or min(num_filters, nr, nc, *stride) < 1
        or params.size != math.prod(filt) + num_filters
    ):
        raise r.error(
            "con_ filters [num_filters, k, nr, nc] + biases [1, num_filters, 1, 1] matching params",
            f"num_filters {num_filters}, kernel {nr}x{nc}, stride {stride}, filters {filt}, biases {bias}, "
            f"params {params.size}",
            at,
        )
    flat = params.reshape(-1)
    nw = math.prod(filt)
    return Con(num_filters, nr, nc, stride, padding, flat[:nw].reshape(filt).copy(), flat[nw:].copy(), start)


def _read_affine(r: DlibReader, start: int) -> Affine:
    params = r.read_tensor("affine_ params")
    at = r.offset
    gamma = r.read_alias_tensor("affine_ gamma")
    beta = r.read_alias_tensor("affine_ beta")
    mode = r.read_int("affine_ mode", 32)
    k = math.prod(gamma)
    if gamma != beta or params.size != 2 * k or k == 0 or mode not in (0, 1):
        raise r.error(
            "affine_ gamma and beta of equal shape filling params, mode 0 or 1",
            f"gamma {gamma}, beta {beta}, params {params.size}, mode {mode}",
            at,
        )
    flat = params.reshape(-1)
    return Affine(flat[:k].copy(), flat[k:].copy(), mode, start)


def _read_pool(r: DlibReader, start: int, cls: type[MaxPool] | type[AvgPool]) -> MaxPool | AvgPool:
    name = "max_pool_" if cls is MaxPool else "avg_pool_"
    nr = r.read_count(f"{name} window rows", 4096)
    nc = r.read_count(f"{name} window cols", 4096)
    stride = _pair(r, f"{name} stride", 4096)
    padding = _pair(r, f"{name} padding", 4096)
    if min(stride) < 1 or (nr == 0) != (nc == 0):
        raise r.error(f"{name} stride >= 1 and a window of both or neither dims 0", f"{nr}x{nc} /{stride}")
    return cls(nr, nc, stride, padding, start)


def _read_fc(r: DlibReader, start: int) -> Fc:
    num_outputs = r.read_count("fc_ num_outputs", MAX_DIM)
    num_inputs = r.read_count("fc_ num_inputs", MAX_DIM)
    params = r.read_tensor("fc_ params")
    at = r.offset
    w = r.read_alias_tensor("fc_ weights")
    b = r.read_alias_tensor("fc_ biases")
    bias_mode = r.read_int("fc_ bias_mode", 32)
    for what in ("learning_rate_multiplier", "weight_decay_multiplier", "bias_learning_rate_multiplier",
                 "bias_weight_decay_multiplier"):  # fmt: skip
        r.read_double(f"fc_ {what}")
    has_bias = bias_mode == 0  # FC_HAS_BIAS = 0, FC_NO_BIAS = 1
    want_b = (1, num_outputs, 1, 1) if has_bias else (0, 0, 0, 0)
    if (
        bias_mode not in (0, 1)
        or min(num_outputs, num_inputs) < 1
        or w != (num_inputs, num_outputs, 1, 1)
        or b != want_b
        or params.size != num_inputs * num_outputs + (num_outputs if has_bias else 0)
    ):
        raise r.error(
            "fc_ weights [num_inputs, num_outputs] (+ biases) filling params, bias_mode 0 or 1",
            f"outputs {num_outputs}, inputs {num_inputs}, weights {w}, biases {b}, params {params.size}, "
            f"bias_mode {bias_mode}",
            at,
        )
    flat = params.reshape(-1)
    nw = num_inputs * num_outputs
    bias = flat[nw:].copy() if has_bias else None
    return Fc(num_outputs, num_inputs, flat[:nw].reshape(num_inputs, num_outputs).copy(), bias, start)


_LAYERS = {
    "con_4": _read_con,
    "affine_": _read_affine,
    "relu_": lambda r, start: Relu(start),
    "max_pool_2": lambda r, start: _read_pool(r, start, MaxPool),
    "avg_pool_2": lambda r, start: _read_pool(r, start, AvgPool),
    "add_prev_": lambda r, start: AddPrev(start),
    "fc_2": _read_fc,
}


def read_layer(r: DlibReader) -> Layer:
    """One computational layer record (name string + fields)."""
    start = r.offset
    tag = r.read_string("layer name")
    fn = _LAYERS.get(tag)
    if fn is None:
        raise r.error(f"a known dlib layer name ({', '.join(_LAYERS)})", f"got {tag!r}", start)
    return fn(r, start)


def _read_input(r: DlibReader) -> InputRGB:
    start = r.offset
    tag = r.read_string("input layer name")
    if tag != "input_rgb_image_sized":
        raise r.error("input layer 'input_rgb_image_sized'", f"got {tag!r}", start)
    avg = [r.read_float(f"input avg_{c}") for c in ("red", "green", "blue")]
    nr = r.read_count("input rows", 1 << 16)
    nc = r.read_count("input cols", 1 << 16)
    return InputRGB(avg[0], avg[1], avg[2], nr, nc)


def _read_loss(r: DlibReader) -> LossMetric:
    start = r.offset
    version = r.read_int("add_loss_layer version", 32)
    if version != 1:
        raise r.error("add_loss_layer version 1", f"got {version}", start)
    start = r.offset
    tag = r.read_string("loss layer name")
    if tag != "loss_metric_2":
        raise r.error("loss layer 'loss_metric_2'", f"got {tag!r}", start)
    return LossMetric(r.read_float("loss_metric_ margin"), r.read_float("loss_metric_ dist_thresh"))


def _read_layer_state(r: DlibReader) -> None:
    """What ``add_layer`` writes after its layer: 3 bools and 3 tensors (grads, cached output)."""
    for what in (
        "this_layer_setup_called",
        "gradient_input_is_stale",
        "get_output_and_gradient_input_disabled",
    ):
        r.read_bool(what)
    for what in ("x_grad", "cached_output", "params_grad"):
        r.read_tensor(what, load=False)


def read_net(r: DlibReader) -> DlibNet:
    """Parse a whole ``add_loss_layer<loss_metric_, ... input_rgb_image_sized>`` from ``r``."""
    loss = _read_loss(r)
    wrappers: list[tuple[int, int]] = []  # (version, offset), outermost first
    while True:
        start = r.offset
        version = r.read_int("layer wrapper version", 32)
        if version == 3:  # add_layer around the input layer: the innermost one
            break
        if version not in (1, 2):
            raise r.error("layer wrapper version 1 (tag/skip), 2 (add_layer) or 3 (input add_layer)",
                          f"got {version}", start)  # fmt: skip
        wrappers.append((version, start))
        if len(wrappers) > MAX_LAYERS:
            raise r.error(f"at most {MAX_LAYERS} layers before the input layer", "", start)
    inp = _read_input(r)
    layers: list[Layer] = [read_layer(r)]
    _read_layer_state(r)
    start = r.offset  # the input add_layer (version 3) also stores the input's sample expansion factor
    factor = r.read_int("sample_expansion_factor", 32, signed=False)
    if factor != 1:
        raise r.error("sample_expansion_factor 1 (one tensor sample per image)", f"got {factor}", start)
    for version, start in reversed(wrappers):
        if version == 1:
            layers.append(Marker(start))
        else:
            layers.append(read_layer(r))
            _read_layer_state(r)
    if r.remaining:
        raise r.error("end of file", f"{r.remaining} trailing bytes")
    return DlibNet(loss, inp, layers, r.name)


def read_dlib_net(path: str | os.PathLike[str]) -> DlibNet:
    """Parse the dlib DNN file at ``path`` (e.g. ``dlib_face_recognition_resnet_model_v1.dat``)."""
    p = Path(path)
    if not p.is_file():
        raise FaceforgeError(f"dlib model file not found: {str(p)!r}")
    with open(p, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        return read_net(DlibReader(f, size, str(p)))
