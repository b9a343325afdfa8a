"""CPU throughput of face backbones: fp32 vs bf16 autocast, training and inference, and the preset's pick.

For each model, in the same process and with the modes interleaved (so machine load hits all alike):

* ``train`` images/second of a forward + backward step (loss = mean squared embedding, train mode);
* ``infer`` images/second of a forward pass (eval mode, ``torch.inference_mode``);
* the ratio of each mode to fp32 (contiguous) of the same pass: the baseline of this run;
* what ``precision: auto`` would choose: the training preset (its in-process probe,
  :func:`faceforge.train.presets.probe_train_step`) and ``load_model(..., precision="auto")`` (its
  probe with the cosine check, :func:`faceforge.infer.loading.torch_runner`), and what the same rule
  (native bf16 units and bf16 >= 1.3x) says on this benchmark's own, longer measurement.

    PYTHONPATH=src python benchmarks/backbones.py                       # 1 thread, batch 8, default models
    PYTHONPATH=src python benchmarks/backbones.py --batch 32 --threads 2 --iters 5 --models iresnet50
    PYTHONPATH=src python benchmarks/backbones.py --models mbf ghostfacenetv1:width=0.5,stride=2 \
        --modes fp32 fp32+cl bf16 bf16+cl --no-probe

A model is ``name`` or ``name:key=value,...`` (values parsed as Python literals). bf16 autocast is only
fast on CPUs with native bf16 (AMX-BF16 / AVX512-BF16); elsewhere it is emulated and much slower.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import json
import statistics
import time
from collections.abc import Callable

import torch

from faceforge.infer.loading import torch_runner
from faceforge.models import create_model
from faceforge.train.config import load_config
from faceforge.train.presets import (
    MIN_BF16_SPEEDUP,
    Bf16Probe,
    apply_preset,
    choose_cpu_precision,
    cpu_bf16_support,
    detect_device,
)

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


Pass = tuple[Callable[[], object], Callable[[], object]]  # (untimed preparation, timed run)


def make_pass(model: torch.nn.Module, x: torch.Tensor, mode: str, train: bool) -> Pass:
    """One training step (fwd + bwd) or one inference forward of ``model`` on ``x`` in ``mode``."""
    dtype, channels_last = MODES[mode]
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    xm = x.contiguous(memory_format=fmt)

    def prepare() -> object:
        return model.to(memory_format=fmt).train(train)

    def run() -> object:
        amp = torch.autocast("cpu", dtype=torch.bfloat16) if dtype == "bf16" else contextlib.nullcontext()
        if train:
            model.zero_grad(set_to_none=True)
            with amp:
                loss = model(xm).float().square().mean()
            loss.backward()
            return loss
        with torch.inference_mode(), amp:
            return model(xm).float()

    return prepare, run


def interleaved_times(passes: dict[str, Pass], iters: int, warmup: int) -> dict[str, float | str]:
    """Median seconds of each pass, the passes taking turns; a failing pass gets its error text."""
    times: dict[str, list[float]] = {m: [] for m in passes}
    failed: dict[str, str] = {}
    for i in range(warmup + iters):
        for mode, (prepare, run) in passes.items():
            if mode in failed:
                continue
            prepare()
            t0 = time.perf_counter()
            try:
                run()
            except RuntimeError as e:  # e.g. an op without a bf16 CPU kernel
                failed[mode] = f"failed: {str(e).splitlines()[0][:80]}"
                continue
            if i >= warmup:
                times[mode].append(time.perf_counter() - t0)
    return {m: failed.get(m) or statistics.median(times[m]) for m in passes}


def cpu_model() -> str:
    """The CPU model name from ``/proc/cpuinfo`` (Linux), else ``"unknown CPU"``."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.partition(":")[2].strip()
    except OSError:
        pass
    return "unknown CPU"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=DEFAULT_MODELS)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--iters", type=int, default=3, help="timed rounds per mode (median reported)")
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--modes", nargs="+", default=["fp32", "bf16"], choices=list(MODES))
    ap.add_argument("--passes", nargs="+", default=["train", "infer"], choices=["train", "infer"])
    ap.add_argument("--threads", type=int, default=1, help="torch threads (0 = torch default)")
    ap.add_argument("--no-probe", action="store_true", help="skip the preset's own probes (<= 5 s each)")
    ap.add_argument("--json", help="also write the results to this JSON file")
    args = ap.parse_args(argv)
    args.modes = sorted(set(args.modes) | {"fp32"}, key=list(MODES).index)  # fp32 first: the baseline
    if args.threads:
        torch.set_num_threads(args.threads)
    units = cpu_bf16_support()
    print(f"{cpu_model()}; native bf16: {units or 'none'}; torch {torch.__version__} "
          f"(CPU capability {torch.backends.cpu.get_cpu_capability()}), {torch.get_num_threads()} threads, "
          f"batch {args.batch}, median of {args.iters} interleaved rounds")  # fmt: skip
    print("| model | params | pass | mode | img/s | vs fp32 |")
    print("|---|---:|---|---|---:|---:|")
    results: list[dict[str, object]] = []
    picks: list[str] = []
    for spec in args.models:
        name, kwargs = parse_model(spec)
        torch.manual_seed(0)
        model = create_model(name, **kwargs)
        h, w = model.face_cfg.input_size
        x = torch.randn(args.batch, 3, h, w)
        params = sum(p.numel() for p in model.parameters())
        ips: dict[tuple[str, str], float] = {}
        for kind in args.passes:
            passes = {m: make_pass(model, x, m, kind == "train") for m in args.modes}
            for mode, t in interleaved_times(passes, args.iters, args.warmup).items():
                if isinstance(t, str):
                    print(f"| {spec} | {params:,} | {kind} | {mode} | {t} | |", flush=True)
                    continue
                ips[kind, mode] = args.batch / t
                base = ips.get((kind, "fp32"))
                ratio = ips[kind, mode] / base if base else float("nan")
                print(f"| {spec} | {params:,} | {kind} | {mode} | {ips[kind, mode]:.1f} | {ratio:.2f}x |",
                      flush=True)  # fmt: skip
                row = {"model": spec, "params": params, "pass": kind, "mode": mode, "batch": args.batch}
                results.append({**row, "img_per_s": ips[kind, mode], "ratio_vs_fp32": ratio})
        model.to(memory_format=torch.contiguous_format)
        for kind in args.passes:
            if (kind, "fp32") in ips and (kind, "bf16") in ips:
                m = Bf16Probe(f"{kind} batch {args.batch}", ips[kind, "fp32"], ips[kind, "bf16"], 0.0)
                rule = choose_cpu_precision(units, lambda m=m: m)
                why = f"{m.speedup:.2f}x {'>=' if m.speedup >= MIN_BF16_SPEEDUP else '<'} {MIN_BF16_SPEEDUP}x"
                picks.append(f"{spec} {kind}, the rule on this table: {'bf16' if rule.bf16 else 'fp32'} "
                             f"({why}{'' if units else '; no native bf16 on this CPU'})")  # fmt: skip
        if not args.no_probe:
            # What `faceforge train` with this backbone and the default config would print.
            cfg = load_config(None, ["--trainer.accelerator", "cpu", "--data.image_size", str(h)])
            cfg["model"]["backbone"] = {"name": name, **kwargs}
            picks.append(f"{spec} train: {apply_preset(cfg, detect_device('cpu')).summary}")
            runner = torch_runner(model, "cpu", "auto", (h, w))
            picks.append(f"{spec} load_model(precision='auto'): {runner.fact}")
    print()
    for line in picks:
        print(line)
    if args.json:
        with open(args.json, "w") as f:
            out = {"cpu": cpu_model(), "bf16_units": units, "results": results, "picks": picks}
            json.dump(out, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
