"""``faceforge models``: list and describe backbones; fetch detector files (explicit download only)."""

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
    """Print the model table."""
    from faceforge.models import list_models

    rows = [describe(n, latency=args.latency) for n in list_models()]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
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


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``models`` command with ``list``, ``info``, ``fetch`` and ``files``."""
    p = sub.add_parser("models", help="recognition backbones and detector model files")
    msub = p.add_subparsers(dest="models_command", metavar="ACTION")
    q = msub.add_parser("list", help="every registered backbone with params, GFLOPs, embedding size")
    q.add_argument("--latency", action="store_true", help="also measure batch-1 CPU latency")
    q.add_argument("--json", action="store_true")
    q.set_defaults(func=cmd_list)
    q = msub.add_parser("info", help="one backbone's preprocessing, template and size")
    q.add_argument("name")
    q.add_argument("--latency", action="store_true")
    q.set_defaults(func=cmd_info)
    try:
        from faceforge.cli.align_cmd import add_store_commands
    except ImportError:  # the detector extra is not installed: no store commands
        return
    add_store_commands(msub)
