"""``faceforge models``: pretrained models and backbones, ``import`` of foreign files, model-file fetching.

``list`` shows which pretrained models (``--model NAME`` on every verb) are usable on this machine and
every registered backbone; ``import SRC --out DST`` writes a faceforge file from a foreign one (an
insightface ONNX, an arcface_torch / AdaFace / EdgeFace / evoLVe state dict) with its preprocessing
stored, so the next load needs no guessing; ``fetch`` downloads a model file (the only command that
touches the network).
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

import torch


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
    rows = [describe(n, latency=args.latency) for n in list_models()]
    if args.json:
        print(json.dumps({"pretrained": pre, "backbones": rows}, indent=2))
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
    print("any timm model: timm/<name> (e.g. timm/convnext_tiny)")
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    """Print one model's facts as JSON."""
    print(json.dumps(describe(args.name, latency=args.latency), indent=2))
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    """Write a faceforge file (stored preprocessing) from a foreign model file; print the facts."""
    from faceforge.cli._common import model_overrides
    from faceforge.infer.loading import import_model

    path, facts = import_model(args.src, args.out, arch=args.arch, overrides=model_overrides(args))
    if args.json:
        print(json.dumps({"out": str(path), "facts": facts}, indent=2, default=str))
        return 0
    print(f"wrote {path}")
    for k, v in facts.items():
        print(f"  {k}: {v}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``models`` command with ``list``, ``info``, ``fetch`` and ``files``."""
    p = sub.add_parser("models", help="recognition backbones and detector model files")
    msub = p.add_subparsers(dest="models_command", metavar="ACTION")
    q = msub.add_parser("list", help="every registered backbone with params, GFLOPs, embedding size")
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
    from faceforge.cli._common import add_override_options

    add_override_options(q)
    q.add_argument("--json", action="store_true", help="print JSON instead of text")
    q.set_defaults(func=cmd_import)
    try:
        from faceforge.cli.align_cmd import add_store_commands
    except ImportError:  # the detector extra is not installed: no store commands
        return
    add_store_commands(msub)
