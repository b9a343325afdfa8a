"""Partial FC: memory per rank of the head and step time of the sampled head vs full softmax.

Usage::

    python benchmarks/partial_fc.py                  # computed table + measured at 1M classes on CPU
    python benchmarks/partial_fc.py --classes 100000 # measure at a smaller size
    python benchmarks/partial_fc.py --no-measure     # the computed table only
    python benchmarks/partial_fc.py --device cuda    # measure on a GPU (torch.cuda peak memory)

Computed memory (float32, SGD with momentum as in insightface): per rank the head holds its shard
of centres ``ceil(C / W) × D``, its gradient (dense over the shard, also with sampling) and the
momentum buffer, plus per step the sampled, normalised centres and their gradient and about four
``[B_global, n_sampled]`` float32 matrices (cosine, logits, exp, gradient). The measured numbers
run one configuration per child process: peak RSS increase on CPU (``ru_maxrss``; includes
allocator slack) or ``torch.cuda.max_memory_allocated`` on a GPU, and the median time of a full
training step (forward, backward, SGD update) after one warm-up step. World size 1 only.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

GIB = 1024**3


def computed_bytes(classes: int, dim: int, world: int, rate: float, batch_per_rank: int) -> dict[str, float]:
    """Bytes per rank (rank 0, the largest shard) for the head's state and one step's activations."""
    shard = math.ceil(classes / world)
    sampled = shard if rate >= 1 else max(1, int(rate * shard))
    state = 3 * shard * dim * 4  # weight + gradient + momentum
    gathered = batch_per_rank * world
    step = 2 * sampled * dim * 4 + 4 * gathered * sampled * 4 + 2 * gathered * dim * 4
    return {"state": state, "step": step, "total": state + step}


def print_computed(dim: int, batch: int, rate: float) -> None:
    print(f"Computed memory per rank (GiB), D={dim}, float32, SGD+momentum, batch {batch}/rank")
    print(
        f"{'classes':>10} {'world':>5} | {'state':>7} {'step r=1':>9} {'total r=1':>9} | "
        f"{'step r=' + format(rate, 'g'):>9} {'total r=' + format(rate, 'g'):>10}"
    )
    for classes in (1_000_000, 10_000_000):
        for world in (1, 2, 8):
            full = computed_bytes(classes, dim, world, 1.0, batch)
            samp = computed_bytes(classes, dim, world, rate, batch)
            print(
                f"{classes:>10,} {world:>5} | {full['state'] / GIB:7.2f} {full['step'] / GIB:9.2f} "
                f"{full['total'] / GIB:9.2f} | {samp['step'] / GIB:9.2f} {samp['total'] / GIB:10.2f}"
            )


def _measure(args: argparse.Namespace) -> dict[str, float]:
    """Child process: build one head, run warm-up + timed steps, report peak memory and step time."""
    import torch

    from faceforge.heads import PartialFC, create_head

    torch.manual_seed(0)
    if args.threads:
        torch.set_num_threads(args.threads)
    dev = torch.device(args.device)
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if args.kind == "full":
        head = create_head("arcface", args.dim, args.classes).to(dev)
        step_fn = head.loss
    else:
        head = PartialFC(args.dim, args.classes, margin_head="arcface", sample_rate=args.rate).to(dev)
        step_fn = head
    opt = torch.optim.SGD(head.parameters(), lr=0.1, momentum=0.9)
    x = torch.randn(args.batch, args.dim, device=dev, requires_grad=True)
    y = torch.randint(0, args.classes, (args.batch,), device=dev)
    times = []
    for i in range(args.steps + 1):
        if dev.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        step_fn(x, y).backward()
        opt.step()
        if dev.type == "cuda":
            torch.cuda.synchronize()
        if i > 0:
            times.append(time.perf_counter() - t0)
    if dev.type == "cuda":
        peak = torch.cuda.max_memory_allocated()
    else:
        peak = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss0) * 1024  # Linux: KiB
    return {"peak_bytes": float(peak), "step_s": statistics.median(times)}


def _available_bytes() -> float:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return float(line.split()[1]) * 1024
    except OSError:
        pass
    return float("inf")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--classes", type=int, default=1_000_000, help="classes for the measured part")
    p.add_argument("--dim", type=int, default=512)
    p.add_argument("--batch", type=int, default=128, help="batch per rank")
    p.add_argument("--rate", type=float, default=0.1, help="Partial FC sample rate")
    p.add_argument("--steps", type=int, default=3, help="timed steps (after one warm-up)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch default)")
    p.add_argument("--no-measure", action="store_true", help="print the computed table only")
    p.add_argument("--json", type=Path, help="also write the results here")
    p.add_argument("--_child", dest="kind", choices=["full", "sampled"], help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.kind:
        print(json.dumps(_measure(args)))
        return

    print_computed(args.dim, args.batch, args.rate)
    results: dict[str, object] = {"args": {k: str(v) for k, v in vars(args).items()}}
    if not args.no_measure:
        need = computed_bytes(args.classes, args.dim, 1, 1.0, args.batch)["total"] * 1.6
        if args.device == "cpu" and need > _available_bytes():
            print(
                f"\nskipping the measurement: needs ~{need / GIB:.1f} GiB, "
                f"{_available_bytes() / GIB:.1f} GiB available (try --classes 100000)"
            )
            return
        print(
            f"\nMeasured, world size 1, {args.classes:,} classes x {args.dim}, "
            f"batch {args.batch}, {args.device}"
        )
        env = dict(os.environ)
        src = str(Path(__file__).resolve().parents[1] / "src")
        env["PYTHONPATH"] = src + os.pathsep + env.get("PYTHONPATH", "")
        for kind, label in (("sampled", f"Partial FC r={args.rate:g}"), ("full", "full softmax (arcface)")):
            cmd = [sys.executable, __file__, "--_child", kind] + [
                f"--{k}={getattr(args, k)}"
                for k in ("classes", "dim", "batch", "rate", "steps", "device", "threads")
            ]
            out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True).stdout
            r = json.loads(out.strip().splitlines()[-1])
            results[kind] = r
            computed = computed_bytes(
                args.classes, args.dim, 1, args.rate if kind == "sampled" else 1.0, args.batch
            )
            print(
                f"  {label:<26} peak {r['peak_bytes'] / GIB:6.2f} GiB "
                f"(computed {computed['total'] / GIB:5.2f})"
                f"  step {r['step_s'] * 1000:8.1f} ms"
            )
        s, f = results["sampled"], results["full"]
        assert isinstance(s, dict) and isinstance(f, dict)
        print(f"  speed-up of the sampled head: {f['step_s'] / s['step_s']:.2f}x")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
