"""Alignment benchmark: the same recogniser on the crops of several detectors, side by side.
:func:`bench_align` runs it (each detector's detection in its own subprocess, :mod:`.worker`; the crops
embedded by a :class:`Recognizer` from :func:`build_recognizer`) and writes the report (:mod:`.report`:
:func:`write_outputs`, :func:`to_markdown`, :func:`plot_metrics`, :func:`write_sample_sheet`);
:func:`select_face` and :func:`fallback_landmarks` are the face kept and the crop of a failed image,
also used by ``faceforge eval``. How it measures: docs/align.md, "bench-align: how it measures".
"""

from __future__ import annotations

from faceforge.eval.align_bench.recognizers import Recognizer, build_recognizer
from faceforge.eval.align_bench.report import (
    SAMPLE_IDENTITIES,
    plot_metrics,
    sample_indices,
    save_aligned,
    to_markdown,
    write_outputs,
    write_sample_sheet,
)
from faceforge.eval.align_bench.run import (
    MIN_STABLE_PAIRS,
    NATIVE_ROW,
    PROGRESS_EVERY_S,
    bench_align,
    pair_warnings,
    subset_folds,
)
from faceforge.eval.align_bench.worker import SELECT_MODES, fallback_landmarks, select_face

# the private names the tests use (the detection loop, the prefetcher, the subprocess runner they replace)
from faceforge.eval.align_bench.worker import _detect_worker as _detect_worker
from faceforge.eval.align_bench.worker import _in_subprocess as _in_subprocess
from faceforge.eval.align_bench.worker import _prefetch as _prefetch

__all__ = [
    "MIN_STABLE_PAIRS",
    "NATIVE_ROW",
    "PROGRESS_EVERY_S",
    "SAMPLE_IDENTITIES",
    "SELECT_MODES",
    "Recognizer",
    "bench_align",
    "build_recognizer",
    "fallback_landmarks",
    "pair_warnings",
    "plot_metrics",
    "sample_indices",
    "save_aligned",
    "select_face",
    "subset_folds",
    "to_markdown",
    "write_outputs",
    "write_sample_sheet",
]
