"""CPU training-step throughput of face backbones: fp32 vs bf16 autocast, channels_last on/off.

Measures forward + backward images/second (loss = mean squared embedding) for each model in four modes,
all in the same process, and reports each mode's speed relative to eager fp32 (contiguous).

    PYTHONPATH=src python benchmarks/backbones.py                       # batch 64, default models
    PYTHONPATH=src python benchmarks/backbones.py --batch 8 --iters 2 \
        --models mbf ghostfacenetv1:width=0.5,stride=2
    PYTHONPATH=src python benchmarks/backbones.py --modes fp32 fp32+cl      # skip bf16 (slow without AMX)

A model is ``name`` or ``name:key=value,...`` (values parsed as Python literals). bf16 autocast is only
fast on CPUs with native bf16 (AVX512-BF16 / AMX); elsewhere it is emulated and much slower.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import json
import time

import torch

from faceforge.models import create_model

DEFAULT_MODELS = ["mbf", "ghostfacenetv1", "edgeface_xs_gamma_06", "iresnet50"]
MODES = {
    "fp32": ("fp32", False),
    "fp32+cl": ("fp32", True),
    "bf16": ("bf16", False),
    "bf16+cl": ("bf16", True),
}


def parse_model(spec: str) -> tuple[str, dict[str, object]]:
    """``"ghostfacenetv1:width=0.5,stride=2"`` -> ``("ghostfacenetv1", {"width": 0.5, "stride": 2})``."""
    name, _, rest = spec.partition(":")
    kwargs: dict[str, object] = {}
    for item in filter(None, rest.split(",")):
        key, _, value = item.partition("=")
        try:
            kwargs[key] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            kwargs[key] = value
    return name, kwargs


def step_time(
    model: torch.nn.Module, x: torch.Tensor, dtype: str, channels_last: bool, iters: int, warmup: int
) -> float:
    """Median seconds of one forward+backward step."""
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(memory_format=fmt)
    x = x.contiguous(memory_format=fmt)
    ctx = (lambda: torch.autocast("cpu", dtype=torch.bfloat16)) if dtype == "bf16" else contextlib.nullcontext
    times = []
    for i in range(warmup + iters):
        model.zero_grad(set_to_none=True)
        t0 = time.perf_counter()
        with ctx():
            loss = model(x).float().square().mean()
        loss.backward()
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    return sorted(times)[len(times) // 2]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=DEFAULT_MODELS)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--iters", type=int, default=5, help="timed steps per mode (median reported)")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--modes", nargs="+", default=list(MODES), choices=list(MODES))
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch default)")
    ap.add_argument("--json", help="also write the results to this JSON file")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch {args.batch}, "
          f"{args.iters} timed iters (median), fwd+bwd")  # fmt: skip
    print("| model | params | mode | img/s | vs eager fp32 |")
    print("|---|---:|---|---:|---:|")
    results = []
    for spec in args.models:
        name, kwargs = parse_model(spec)
        model = create_model(name, **kwargs).train()
        name = spec
        h, w = model.face_cfg.input_size
        x = torch.randn(args.batch, 3, h, w)
        params = sum(p.numel() for p in model.parameters())
        base = None
        for dtype, cl in (MODES[m] for m in args.modes):
            try:
                t = step_time(model, x, dtype, cl, args.iters, args.warmup)
            except RuntimeError as e:  # e.g. an op without bf16 CPU kernel
                print(f"| {name} | {params:,} | {dtype}{' +CL' if cl else ''} | failed: {e} | |")
                continue
            ips = args.batch / t
            if dtype == "fp32" and not cl:
                base = ips
            ratio = ips / base if base else float("nan")
            mode = f"{dtype}{' channels_last' if cl else ''}"
            print(f"| {name} | {params:,} | {mode} | {ips:.1f} | {ratio:.2f}x |", flush=True)
            results.append({"model": name, "params": params, "dtype": dtype, "channels_last": cl,
                            "batch": args.batch, "img_per_s": ips, "ratio_vs_fp32": ratio})  # fmt: skip
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
