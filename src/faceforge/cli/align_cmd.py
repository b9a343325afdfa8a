"""``faceforge detect`` / ``faceforge align``.

``register(subparsers)`` adds ``detect`` and ``align``; every action sets ``func(args) -> int``.

Usage::

    faceforge detect IMG|DIR... [--detector yunet] [--json] [--out PNG|DIR] [--model-path P]
    faceforge align SRC DST [--detector yunet] [--size 112] [--template arcface]
                            [--largest|--all] [--workers N] [--retry-failed]

``detect`` prints one line (or JSON object) per image; a folder stands for the images under it.
Exit code: 0 when every image holds a face, 1 when every image was read but at least one holds
none (the answer is "no face"), 2 when an image could not be read or drawn (its line says why).

``align`` mirrors SRC's folder tree into DST (one crop per image, ``name.jpg``; with ``--all``
``name_0.jpg``, ``name_1.jpg``, …). Per-file problems (not an image, unreadable, no face, …) are
written to ``DST/failures.jsonl`` as ``{"file", "reason"}`` and never stop the run. A re-run skips
files whose crop exists and, unless ``--retry-failed``, files listed in ``failures.jsonl``.
Exit code: 0 when DST holds at least one crop afterwards, 2 when not a single face could be aligned
(or SRC holds no file), with a one-line reason.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from faceforge.cli._common import add_progress_option, show_progress
from faceforge.errors import FaceforgeError

__all__ = ["cmd_align", "cmd_detect", "register"]

FAILURES = "failures.jsonl"


def _detector_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    kw: dict[str, Any] = {}
    if getattr(args, "model_path", None):
        kw["model_path"] = args.model_path
    if getattr(args, "score_threshold", None) is not None:
        kw["score_threshold"] = args.score_threshold
    return kw


def _draw(rgb: np.ndarray, faces: list) -> np.ndarray:
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


# --------------------------------------------------------------------------------------------- detect


def _detect_inputs(items: list[str]) -> list[str]:
    """Image paths: files as given, folders expanded to the images under them (sorted)."""
    from faceforge.align.io import IMAGE_EXTENSIONS

    out: list[str] = []
    for raw in items:
        p = Path(raw)
        if p.is_dir():
            found = sorted(
                str(f) for f in p.rglob("*") if f.is_file() and f.suffix.lower() in IMAGE_EXTENSIONS
            )
            if not found:
                raise FaceforgeError(
                    f"folder {p} holds no image (expected files ending in {', '.join(IMAGE_EXTENSIONS)})"
                )
            out += found
        else:
            out.append(raw)  # a missing or broken file is that image's own error line
    return out


#: a range note is printed when a detector cannot see faces this small (pixels) in the image
_NOTE_FROM_PX = 32


def _range_note(det: Any, width: int, height: int) -> str | None:
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


def cmd_detect(args: argparse.Namespace) -> int:
    """Detect faces in each image; print one JSON object (or a text line) per image."""
    from faceforge.align import create_detector
    from faceforge.align.io import read_image

    images = _detect_inputs(args.images)
    det = create_detector(args.detector, **_detector_kwargs(args))
    out = Path(args.out) if args.out else None
    many = len(images) > 1
    if out is not None and many:
        if out.exists() and not out.is_dir():
            raise FaceforgeError(f"--out {out} is a file; with several images --out must be a folder")
        out.mkdir(parents=True, exist_ok=True)
    failed = without_face = 0
    for name in images:
        rec: dict[str, Any] = {"file": name}
        try:
            rgb = read_image(name)
            faces = det.detect(rgb)
            rec.update(width=int(rgb.shape[1]), height=int(rgb.shape[0]), faces=[f.to_dict() for f in faces])
            if not faces:
                without_face += 1
                why = _range_note(det, rec["width"], rec["height"])
                if why:
                    rec["note"] = why
            if out is not None:
                dst = out / (Path(name).stem + ".png") if many else out
                if not cv2.imwrite(str(dst), _draw(rgb, faces)):
                    raise FaceforgeError(
                        f"cannot write {dst} (expected a .png/.jpg path in an existing folder)"
                    )
        except FaceforgeError as e:
            failed += 1
            rec["error"] = str(e)
        if args.json:
            print(json.dumps(rec))
        elif "error" in rec:
            print(f"{name}: error: {rec['error']}")
        else:
            print(f"{name}: {len(rec['faces'])} face(s)" + (f" ({rec['note']})" if "note" in rec else ""))
            for f in rec["faces"]:
                print(f"  score {f['score']:.3f} bbox {f['bbox']} landmarks {f['landmarks']}")
    return 2 if failed else 1 if without_face else 0


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


def _outputs(rel: Path, n: int, dst: Path, ext: str, all_faces: bool) -> list[Path]:
    base = dst / rel.parent / rel.stem
    if not all_faces:
        return [base.with_name(base.name + ext)]
    return [base.with_name(f"{base.name}_{i}{ext}") for i in range(n)]


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
            tmp = o.with_name(o.stem + ".tmp" + o.suffix)
            if not cv2.imwrite(str(tmp), cv2.cvtColor(crop, cv2.COLOR_RGB2BGR)):
                return rel, f"cannot write {o}", 0
            os.replace(tmp, o)
        return rel, None, len(outs)
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


def _read_failures(path: Path) -> dict[str, str]:
    out: dict[str, str] = {}
    if path.is_file():
        for line in path.read_text().splitlines():
            try:
                rec = json.loads(line)
                out[rec["file"]] = rec["reason"]
            except (json.JSONDecodeError, KeyError, TypeError):
                continue
    return out


def cmd_align(args: argparse.Namespace) -> int:
    """Detect + align every image under SRC into DST; per-file failures go to DST/failures.jsonl."""
    from faceforge.align import create_detector
    from faceforge.align.templates import get_template, parse_size

    src, dst = Path(args.src), Path(args.dst)
    if not src.is_dir():
        raise FaceforgeError(f"align source {src} is not a folder (expected a folder of images)")
    # The dlib template is defined at 150 px (dlib's chip); arcface at 112.
    size = parse_size(args.size if args.size is not None else (150 if args.template == "dlib" else 112))
    get_template(args.template, size)  # fail early on a bad template/size combination
    if dst.resolve() == src.resolve():
        raise FaceforgeError(f"align: DST {dst} is SRC itself; expected another (new or empty) folder")
    ext = "." + args.ext.lstrip(".").lower()
    if ext not in (".jpg", ".jpeg", ".png", ".bmp", ".webp"):
        raise FaceforgeError(f"--ext {args.ext!r}: expected jpg, png, bmp or webp")
    kw = _detector_kwargs(args)
    create_detector(args.detector, **kw)  # fail early (missing model/dependency) before forking
    dst.mkdir(parents=True, exist_ok=True)

    failures_path = dst / FAILURES
    old_failures = _read_failures(failures_path)
    jobs, skipped, done_before, kept_failures = [], 0, 0, {}
    for p, rel in _scan(src, dst):
        key = rel.as_posix()
        first = _outputs(rel, 1, dst, ext, args.all)[0]
        if first.exists():
            skipped += 1
            done_before += 1
        elif key in old_failures and not args.retry_failed:
            kept_failures[key] = old_failures[key]
            skipped += 1
        else:
            jobs.append((str(p), key))

    settings = {"dst": str(dst), "ext": ext, "all": args.all, "template": args.template, "size": size}
    workers = args.workers if args.workers > 0 else max(1, os.cpu_count() or 1)
    workers = min(workers, max(1, len(jobs)))
    new_failures: dict[str, str] = {}
    n_ok = n_crops = 0
    progress = None
    if show_progress(args):
        from tqdm import tqdm

        progress = tqdm(total=len(jobs), desc="align", unit="img", file=sys.stderr, dynamic_ncols=True)
    pool = None
    try:
        if workers == 1:
            _init_worker(args.detector, kw, settings)
            results: Iterator = map(_align_one, jobs)
        else:
            ctx = mp.get_context("spawn")
            pool = ctx.Pool(workers, initializer=_init_worker, initargs=(args.detector, kw, settings))
            results = pool.imap_unordered(_align_one, jobs, chunksize=4)
        for rel, reason, n in results:
            if reason is None:
                n_ok += 1
                n_crops += n
            else:
                new_failures[rel] = reason
            if progress is not None:
                progress.update(1)
    finally:
        if pool is not None:
            pool.terminate()
        if progress is not None:
            progress.close()
        # Failures are rewritten whole: old ones still skipped + this run's, none of the now-fixed.
        allf = {**kept_failures, **new_failures}
        tmp = failures_path.with_suffix(".jsonl.tmp")
        with open(tmp, "w") as f:
            for k in sorted(allf):
                f.write(json.dumps({"file": k, "reason": allf[k]}) + "\n")
        os.replace(tmp, failures_path)
    summary = {
        "aligned": n_ok,
        "crops": n_crops,
        "failed": len(new_failures),
        "skipped": skipped,
        "failures_file": str(failures_path),
    }
    print(json.dumps(summary) if args.json else " ".join(f"{k}={v}" for k, v in summary.items()))
    if n_ok + done_before == 0:
        if not jobs and not kept_failures:
            raise FaceforgeError(f"align: no file under {src} (expected a folder of photos)")
        allf = {**kept_failures, **new_failures}
        first = next(iter(sorted(allf.items())))
        raise FaceforgeError(
            f"align: not one face aligned from {src}: {len(allf)} file(s) failed (e.g. {first[0]}: "
            f"{first[1]}); every reason is in {failures_path}"
        )
    return 0


def _threshold(v: str) -> float:
    x = float(v)
    if not 0 <= x <= 1:
        raise argparse.ArgumentTypeError(f"{v} is not in [0, 1]")
    return x


def _non_negative(v: str) -> int:
    x = int(v)
    if x < 0:
        raise argparse.ArgumentTypeError(f"{v} is negative")
    return x


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``detect`` and ``align`` commands to ``subparsers``."""
    from faceforge.align.detectors.base import list_detectors

    names = ", ".join(list_detectors())
    p = subparsers.add_parser(
        "detect",
        help="detect faces and 5 landmarks in images",
        description="Detect faces and 5 landmarks. Exit code 0: every image holds a face; 1: every "
        "image was read but at least one holds none; 2: an image could not be read (its line says why).",
    )
    p.add_argument("images", nargs="+", metavar="IMG", help="image files or folders (searched recursively)")
    p.add_argument("--detector", default="yunet", help=f"backend (default yunet): {names}")
    p.add_argument("--model-path", help="model file (or MTCNN folder) instead of the model store")
    p.add_argument(
        "--score-threshold",
        type=_threshold,
        default=None,
        help="minimum face score in [0, 1] (default: the detector's own, see docs/align.md)",
    )
    p.add_argument("--json", action="store_true", help="one JSON object per image")
    p.add_argument("--out", help="draw boxes/landmarks: a PNG path (one image) or a folder (several)")
    p.set_defaults(func=cmd_detect)

    p = subparsers.add_parser(
        "align",
        help="detect + 5-point align a folder of photos into crops",
        description="Detect and align every photo under SRC into DST (per-file failures in "
        "DST/failures.jsonl). Exit code 0 when DST holds at least one crop, 2 when no face at all "
        "could be aligned.",
    )
    p.add_argument("src", help="folder of photos (walked recursively)")
    p.add_argument("dst", help="output folder (mirrors SRC's tree)")
    p.add_argument("--detector", default="yunet", help=f"backend (default yunet): {names}")
    p.add_argument("--model-path", help="model file (or MTCNN folder) instead of the model store")
    p.add_argument(
        "--score-threshold",
        type=_threshold,
        default=None,
        help="minimum face score in [0, 1] (default: the detector's own, see docs/align.md)",
    )
    p.add_argument(
        "--size",
        default=None,
        help="crop size: 112 (default; 150 with --template dlib), 128, 224, 96x112, ...",
    )
    p.add_argument("--template", default="arcface", help="alignment template: arcface or dlib")
    g = p.add_mutually_exclusive_group()
    g.add_argument(
        "--largest", action="store_true", default=True, help="one crop: the largest face (default)"
    )
    g.add_argument("--all", action="store_true", help="one crop per detected face (name_0, name_1, ...)")
    p.add_argument("--ext", default="jpg", help="crop file type: jpg (default) or png")
    p.add_argument("--workers", type=_non_negative, default=1, help="processes (0 = all cores)")
    p.add_argument("--retry-failed", action="store_true", help="retry files listed in failures.jsonl")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    add_progress_option(p)
    p.set_defaults(func=cmd_align)
