"""Detect and align many images: the folder loop behind ``faceforge detect`` and ``faceforge align``.
:func:`detect_file` detects the faces of one image into a JSON-able record (optionally drawing them);
:func:`expand_image_inputs` turns files and folders into image paths. :func:`align_folder` mirrors a
folder tree of photos into crops (one per image, or one per face), in a pool of worker processes with
one detector each; per-file problems go to ``DST/failures.jsonl`` (:data:`FAILURES`) and never stop
the run, and a re-run skips files whose crop exists and, unless ``retry_failed``, the listed failures.
"""

from __future__ import annotations

import errno
import json
import multiprocessing as mp
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from faceforge.errors import FaceforgeError
from faceforge.fileio import free_bytes, fsync_dir, naming_errors
from faceforge.progress import progress_bar

__all__ = [
    "CROP_EXTENSIONS",
    "FAILURES",
    "AlignResult",
    "align_folder",
    "detect_file",
    "draw_faces",
    "expand_image_inputs",
    "range_note",
    "read_failures",
]

#: the per-file failure log in the output folder of :func:`align_folder`
FAILURES = "failures.jsonl"
#: why a run stops when the disk fills: the crops already written are whole (written then renamed)
DISK_FULL = (
    "no space left on the disk for the aligned crops; those written so far are kept and a re-run "
    "continues after them"
)
#: crop file types :func:`align_folder` writes
CROP_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
#: a range note is given when a detector cannot see faces this small (pixels) in the image
_NOTE_FROM_PX = 32


def draw_faces(rgb: np.ndarray, faces: list) -> np.ndarray:
    """A BGR copy of ``rgb`` with each face's box, score and 5 landmarks drawn on it."""
    bgr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
    colours = [(255, 0, 0), (0, 0, 255), (0, 255, 0), (255, 0, 255), (0, 255, 255)]
    t = max(1, round(max(rgb.shape[:2]) / 400))
    for f in faces:
        x1, y1, x2, y2 = (round(float(v)) for v in f.bbox)
        cv2.rectangle(bgr, (x1, y1), (x2, y2), (0, 200, 0), t)
        cv2.putText(
            bgr, f"{f.score:.2f}", (x1, max(y1 - 3, 10)), cv2.FONT_HERSHEY_SIMPLEX, 0.4 * t, (0, 200, 0), t
        )
        for (x, y), c in zip(f.landmarks, colours):
            cv2.circle(bgr, (round(float(x)), round(float(y))), 2 * t, c, -1)
    return bgr


def expand_image_inputs(items: list[str]) -> list[str]:
    """Image paths: files as given, folders expanded to the images under them (sorted)."""
    from faceforge.imageio import IMAGE_EXTENSIONS, list_images

    out: list[str] = []
    for raw in items:
        p = Path(raw)
        if p.is_dir():
            found = [str(f) for f in list_images(p)]
            if not found:
                raise FaceforgeError(
                    f"folder {p} holds no image (expected files ending in {', '.join(IMAGE_EXTENSIONS)})"
                )
            out += found
        else:
            out.append(raw)  # a missing or broken file is that image's own error line
    return out


def range_note(det: Any, width: int, height: int) -> str | None:
    """For detectors with a limited range (MediaPipe): the smallest face they can find in this image."""
    smallest = getattr(det, "smallest_face", None)
    if smallest is None:
        return None
    px = float(smallest(width, height))
    if px < _NOTE_FROM_PX:  # the range covers every face a photo this size can hold well
        return None
    return (
        f"{det.name} finds faces of about {px:.0f} px and larger in a {width}x{height} image; "
        "smaller faces are out of its range (try --detector yunet or scrfd)"
    )


def detect_file(det: Any, name: str, draw_to: Path | None = None) -> dict[str, Any]:
    """``{"file", "width", "height", "faces"[, "note"]}`` for one image, or ``{"file", "error"}``.

    With ``draw_to`` the faces are drawn into that image file (:func:`draw_faces`).
    """
    from faceforge.align.io import read_image

    rec: dict[str, Any] = {"file": name}
    try:
        rgb = read_image(name)
        faces = det.detect(rgb)
        rec.update(width=int(rgb.shape[1]), height=int(rgb.shape[0]), faces=[f.to_dict() for f in faces])
        if not faces:
            why = range_note(det, rec["width"], rec["height"])
            if why:
                rec["note"] = why
        if draw_to is not None and not cv2.imwrite(str(draw_to), draw_faces(rgb, faces)):
            raise FaceforgeError(f"cannot write {draw_to} (expected a .png/.jpg path in an existing folder)")
    except FaceforgeError as e:
        rec["error"] = str(e)
    return rec


# ---------------------------------------------------------------------------------------------- align

_WORKER: dict[str, Any] = {}


def _init_worker(detector: str, kw: dict[str, Any], settings: dict[str, Any]) -> None:
    from faceforge.align import create_detector

    # One detector per process; keep each process to one BLAS/ONNX thread so N workers use N cores.
    cv2.setNumThreads(1)
    try:
        import torch

        torch.set_num_threads(1)
    except ImportError:  # pragma: no cover
        pass
    _WORKER["det"] = create_detector(detector, **kw)
    _WORKER.update(settings)


_TEMP_MARK = ".partial"


def _outputs(rel: Path, n: int, dst: Path, ext: str, all_faces: bool) -> list[Path]:
    base = dst / rel.parent / rel.stem
    if not all_faces:
        return [base.with_name(base.name + ext)]
    return [base.with_name(f"{base.name}_{i}{ext}") for i in range(n)]


def _temp_crop(out: Path) -> Path:
    """Where a crop is written before its rename: hidden (never a source name, see :func:`_scan`), and
    ending in the crop's extension, which is how OpenCV picks the encoder."""
    return out.with_name(f".{out.stem}{_TEMP_MARK}{out.suffix}")


def _remove_temp_crops(dst: Path) -> int:
    """Delete the temporaries a stopped or killed run left under ``dst`` (a worker can be terminated between
    its write and its rename); returns how many."""
    n = 0
    for root, _dirs, files in os.walk(dst):
        for fn in files:
            if fn.startswith(".") and _TEMP_MARK + "." in fn:
                Path(root, fn).unlink(missing_ok=True)
                n += 1
    return n


def _align_one(job: tuple[str, str]) -> tuple[str, str | None, int]:
    """Worker: (source path, relative path) → (relative path, failure reason or None, crops written)."""
    from faceforge.align import similarity_matrix, warp
    from faceforge.align.io import read_image

    src, rel = job
    s = _WORKER
    try:
        rgb = read_image(src)
        faces = s["det"].detect(rgb)
        if not faces:
            h, w = rgb.shape[:2]
            return rel, f"no face found ({w}x{h} image)", 0
        if not s["all"]:
            faces = [max(faces, key=lambda f: f.area)]
        outs = _outputs(Path(rel), len(faces), Path(s["dst"]), s["ext"], s["all"])
        outs[0].parent.mkdir(parents=True, exist_ok=True)
        for f, o in zip(faces, outs):
            crop = warp(rgb, similarity_matrix(f.landmarks, s["template"], s["size"]), s["size"])
            # Write to a temp name then rename, so an interrupted run never leaves a half crop that a
            # re-run would take as finished.
            tmp = _temp_crop(o)
            if not cv2.imwrite(str(tmp), cv2.cvtColor(crop, cv2.COLOR_RGB2BGR)):
                tmp.unlink(missing_ok=True)
                if free_bytes(o.parent) < crop.nbytes + (1 << 16):
                    # not this photo's fault: every later one would fail the same way
                    raise OSError(errno.ENOSPC, DISK_FULL, str(o))
                return rel, f"cannot write {o}", 0
            os.replace(tmp, o)
        return rel, None, len(outs)
    except OSError as e:
        if e.errno in (errno.ENOSPC, errno.EDQUOT):
            raise
        return rel, f"{type(e).__name__}: {e}", 0
    except FaceforgeError as e:
        return rel, str(e), 0
    except Exception as e:  # a per-file outcome, never a crash of the whole run
        return rel, f"{type(e).__name__}: {e}", 0


def _scan(src: Path, dst: Path) -> Iterator[tuple[Path, Path]]:
    dst_r = dst.resolve()
    for root, dirs, files in os.walk(src):
        dirs.sort()
        if Path(root).resolve() == dst_r or dst_r in Path(root).resolve().parents:
            dirs[:] = []
            continue
        for fn in sorted(files):
            if fn.startswith("."):
                continue
            p = Path(root) / fn
            yield p, p.relative_to(src)


def read_failures(path: Path) -> dict[str, str]:
    """``{relative file: reason}`` of a ``failures.jsonl`` (``{}`` when absent; bad lines skipped)."""
    out: dict[str, str] = {}
    if path.is_file():
        for line in path.read_text().splitlines():
            try:
                rec = json.loads(line)
                out[rec["file"]] = rec["reason"]
            except (json.JSONDecodeError, KeyError, TypeError):
                continue
    return out


@dataclass
class AlignResult:
    """What :func:`align_folder` did: counts, the failure log and every failure it now lists."""

    src: Path
    aligned: int
    crops: int
    failed: int
    skipped: int
    failures_file: Path
    done_before: int = 0
    jobs: int = 0
    failures: dict[str, str] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        """The JSON-able summary line: aligned, crops, failed, skipped, failures_file."""
        return {
            "aligned": self.aligned,
            "crops": self.crops,
            "failed": self.failed,
            "skipped": self.skipped,
            "failures_file": str(self.failures_file),
        }

    def empty_reason(self) -> str | None:
        """Why the output folder holds no crop at all (None when it holds one)."""
        if self.aligned + self.done_before:
            return None
        if not self.jobs and not self.failures:
            return f"align: no file under {self.src} (expected a folder of photos)"
        first = next(iter(sorted(self.failures.items())))
        return (
            f"align: not one face aligned from {self.src}: {len(self.failures)} file(s) failed (e.g. "
            f"{first[0]}: {first[1]}); every reason is in {self.failures_file}"
        )


def align_folder(
    src: Path,
    dst: Path,
    *,
    detector: str = "yunet",
    detector_kwargs: dict[str, Any] | None = None,
    size: str | int | None = None,
    template: str = "arcface",
    ext: str = "jpg",
    all_faces: bool = False,
    workers: int = 1,
    retry_failed: bool = False,
    progress: bool = False,
) -> AlignResult:
    """Detect and align every image under ``src`` into ``dst`` (mirroring its tree).

    ``size`` defaults to 112 (150 with the dlib template, dlib's chip); ``workers`` 0 means every
    core. Bad arguments raise :class:`FaceforgeError` before anything is written.
    """
    from faceforge.align import create_detector
    from faceforge.align.templates import get_template, parse_size

    src, dst = Path(src), Path(dst)
    if not src.is_dir():
        raise FaceforgeError(f"align source {src} is not a folder (expected a folder of images)")
    # The dlib template is defined at 150 px (dlib's chip); arcface at 112.
    sz = parse_size(size if size is not None else (150 if template == "dlib" else 112))
    get_template(template, sz)  # fail early on a bad template/size combination
    if dst.resolve() == src.resolve():
        raise FaceforgeError(f"align: DST {dst} is SRC itself; expected another (new or empty) folder")
    suffix = "." + ext.lstrip(".").lower()
    if suffix not in CROP_EXTENSIONS:
        raise FaceforgeError(f"--ext {ext!r}: expected jpg, png, bmp or webp")
    kw = dict(detector_kwargs or {})
    create_detector(detector, **kw)  # fail early (missing model/dependency) before forking
    dst.mkdir(parents=True, exist_ok=True)
    _remove_temp_crops(dst)  # from a run that was killed

    failures_path = dst / FAILURES
    old_failures = read_failures(failures_path)
    jobs, skipped, done_before, kept_failures = [], 0, 0, {}
    for p, rel in _scan(src, dst):
        key = rel.as_posix()
        first = _outputs(rel, 1, dst, suffix, all_faces)[0]
        if first.exists():
            skipped += 1
            done_before += 1
        elif key in old_failures and not retry_failed:
            kept_failures[key] = old_failures[key]
            skipped += 1
        else:
            jobs.append((str(p), key))

    settings = {"dst": str(dst), "ext": suffix, "all": all_faces, "template": template, "size": sz}
    n_workers = workers if workers > 0 else max(1, os.cpu_count() or 1)
    n_workers = min(n_workers, max(1, len(jobs)))
    new_failures: dict[str, str] = {}
    n_ok = n_crops = 0
    bar = progress_bar(len(jobs), "align", enabled=progress)
    pool = None
    finished = False
    try:
        if n_workers == 1:
            _init_worker(detector, kw, settings)
            results: Iterator = map(_align_one, jobs)
        else:
            ctx = mp.get_context("spawn")
            pool = ctx.Pool(n_workers, initializer=_init_worker, initargs=(detector, kw, settings))
            results = pool.imap_unordered(_align_one, jobs, chunksize=4)
        for rel, reason, n in results:
            if reason is None:
                n_ok += 1
                n_crops += n
            else:
                new_failures[rel] = reason
            bar.update(1)
        finished = True
    finally:
        if pool is not None:
            pool.terminate()
            pool.join()  # no worker is between a write and its rename any more
        if not finished:
            _remove_temp_crops(dst)
        bar.close()
        # Failures are rewritten whole: old ones still skipped + this run's, none of the now-fixed.
        allf = {**kept_failures, **new_failures}
        tmp = failures_path.with_suffix(".jsonl.tmp")
        try:
            with naming_errors(failures_path), open(tmp, "w") as f:
                for k in sorted(allf):
                    f.write(json.dumps({"file": k, "reason": allf[k]}) + "\n")
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, failures_path)
            fsync_dir(dst)
        except OSError:
            tmp.unlink(missing_ok=True)
            if finished:  # else the error that stopped the run (a full disk, usually) is the one to see
                raise
    return AlignResult(
        src=src,
        aligned=n_ok,
        crops=n_crops,
        failed=len(new_failures),
        skipped=skipped,
        failures_file=failures_path,
        done_before=done_before,
        jobs=len(jobs),
        failures=allf,
    )
