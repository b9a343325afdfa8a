"""Shared plumbing of the onnxruntime detectors: session and device, input sizing, batching, mapping back.
A backend implements ``_prepare(rgb) -> (tensor [3, H, W], meta)`` and ``_decode(outputs, meta)``;
this class runs the session one image at a time (:meth:`OnnxDetector.detect`) or on stacked
batches of equally sized inputs (:meth:`OnnxDetector.detect_batch`) when the graph has a free batch
dimension, and falls back to one image per run when the file fixes it to 1 (or a batched run fails).
Both paths decode the same per-image outputs, so their faces are the same.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from faceforge.align.detectors._model import model_file
from faceforge.align.detectors.base import (
    Detector,
    Face,
    check_device,
    letterbox,
    log,
    onnx_session,
    shrink_and_pad,
    to_rgb_uint8,
)
from faceforge.errors import FaceforgeError

__all__ = ["OnnxDetector", "graph_takes_batch", "run_batched"]


def graph_takes_batch(session: Any) -> bool:
    """Whether the session's first input and every output have a symbolic (free) batch dimension.

    A file whose input or output batch is a fixed number (YOLO5-Face's ``[1, 6300, 16]``, a default
    Ultralytics export's ``[1, 3, 640, 640]``) only runs one image at a time.
    """
    dims = [session.get_inputs()[0].shape[0]]
    dims += [o.shape[0] if o.shape else 1 for o in session.get_outputs()]
    return all(not isinstance(d, int) for d in dims)


def run_batched(
    session: Any, input_name: str, xs: Sequence[np.ndarray], batchable: bool, max_batch: int, what: str
) -> tuple[list[list[np.ndarray]], bool]:
    """Run ``session`` on each input ``[C, H, W]``; returns per input its outputs (batch dim 1) and
    whether batching still holds.

    With ``batchable``, up to ``max_batch`` inputs of one shape go into one run; a batched run that
    fails, or whose outputs do not split into the inputs, switches to one input per run for good
    (one log line), so a graph whose batch is free on paper but fixed in its ops still works.
    """
    out: list[list[np.ndarray]] = []
    i = 0
    while i < len(xs):
        n = min(max_batch, len(xs) - i) if batchable else 1
        if n == 1:
            out.append(list(session.run(None, {input_name: np.ascontiguousarray(xs[i][None])})))
            i += 1
            continue
        try:
            res = session.run(None, {input_name: np.ascontiguousarray(np.stack(xs[i : i + n]))})
            if any(r.ndim == 0 or r.shape[0] != n for r in res):
                raise ValueError(f"outputs {[r.shape for r in res]} do not split into {n} images")
        except Exception as e:  # onnxruntime's own error types; the loop below is the fallback
            log.info("%s does not run batches (%s); one input per run", what, str(e).splitlines()[0][:200])
            batchable = False
            continue
        out += [[r[j : j + 1] for r in res] for j in range(n)]
        i += n
    return out, batchable


class OnnxDetector(Detector):
    """An onnxruntime detector.

    Input sizing: a file with a fixed input shape is always letterboxed to it. For dynamic files,
    ``input_size=None`` (default) keeps the image's scale (downscaled only if its longer side
    exceeds ``max_side``) and pads to a multiple of ``stride_multiple``; ``input_size=640`` or
    ``(w, h)`` letterboxes to that size instead (insightface's ``det_size`` behaviour).
    ``device``: ``auto`` (CUDA when this onnxruntime has it, else CPU), ``cpu`` or ``cuda``.
    """

    store_name = ""
    stride_multiple = 32
    #: most images stacked into one ``session.run`` (bounds the memory of a batch)
    max_batch = 32

    def __init__(
        self,
        model_path: str | Path | None = None,
        score_threshold: float = 0.5,
        nms_threshold: float = 0.4,
        input_size: int | tuple[int, int] | None = None,
        max_side: int = 640,
        threads: int | None = None,
        device: str = "auto",
    ) -> None:
        super().__init__(score_threshold, nms_threshold)
        self._device = check_device(device, self.name)
        self.model_path = model_file(model_path, self.store_name, self.name)
        self.session = onnx_session(self.model_path, self.name, threads, device)
        inp = self.session.get_inputs()[0]
        self.input_name = inp.name
        self._output_names = [o.name for o in self.session.get_outputs()]
        shape = inp.shape
        if len(shape) != 4 or shape[1] != 3:
            raise FaceforgeError(
                f"{self.model_path}: input {inp.name} has shape {shape}; "
                f"expected [N, 3, H, W] for {self.name}"
            )
        fixed = (shape[3], shape[2]) if all(isinstance(v, int) for v in shape[2:]) else None
        if isinstance(input_size, int):
            input_size = (input_size, input_size)
        self.input_size: tuple[int, int] | None = fixed or (tuple(input_size) if input_size else None)
        self.max_side = int(max_side)
        # Private (underscore) so that detector_identity, the cache key of crops, does not change.
        self._batchable = graph_takes_batch(self.session)

    @property
    def providers(self) -> list[str]:
        """The execution providers the session actually runs on (CUDA first when it is used)."""
        return list(self.session.get_providers())

    # ---------------------------------------------------------------- backend hooks
    @abstractmethod
    def _prepare(self, rgb: np.ndarray) -> tuple[np.ndarray, Any]:
        """The network input ``[3, H, W]`` float32 for ``rgb`` and what :meth:`_decode` needs."""

    @abstractmethod
    def _decode(self, outs: list[np.ndarray], meta: Any) -> list[Face]:
        """Faces from one image's outputs (each with a leading batch dimension of 1)."""

    # ---------------------------------------------------------------- running
    def _canvas(self, rgb: np.ndarray) -> tuple[np.ndarray, float]:
        if self.input_size is not None:
            return letterbox(rgb, self.input_size, upscale=True)
        return shrink_and_pad(rgb, self.max_side, self.stride_multiple)

    def _run_many(self, xs: Sequence[np.ndarray]) -> list[list[np.ndarray]]:
        """Per input, the session's outputs (leading batch dimension 1), batched where the graph allows."""
        out, self._batchable = run_batched(
            self.session,
            self.input_name,
            xs,
            self._batchable,
            self.max_batch,
            f"{self.name}: {self.model_path}",
        )
        return out

    def _detect(self, rgb: np.ndarray) -> list[Face]:
        x, meta = self._prepare(rgb)
        return self._decode(self._run_many([x])[0], meta)

    def detect_batch(self, images: Sequence[np.ndarray]) -> list[list[Face]]:
        """Faces per image; images whose network inputs have the same size run as one batch.

        Letterboxed inputs (a fixed-size file, or ``input_size``) always share one size; at native
        size only images of equal padded size batch together (all 250×250 LFW photos do).
        """
        rgbs = [to_rgb_uint8(im) for im in images]
        result: list[list[Face]] = [[] for _ in rgbs]
        groups: dict[tuple[int, ...], list[tuple[int, np.ndarray, Any]]] = {}
        for i, rgb in enumerate(rgbs):
            if min(rgb.shape[:2]) < self.min_image_side:
                continue
            x, meta = self._prepare(rgb)
            groups.setdefault(tuple(x.shape), []).append((i, x, meta))
        for items in groups.values():
            outs = self._run_many([x for _, x, _ in items])
            for (i, _, meta), o in zip(items, outs):
                h, w = rgbs[i].shape[:2]
                result[i] = self._finish(self._decode(o, meta), w, h)
        return result
