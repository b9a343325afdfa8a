"""Training step (or inference) img/s on a CPU: NCHW (contiguous) against NHWC (``channels_last``).

For each backbone of ``--models`` at ``--size`` and each thread count of ``--threads``, times the
training step (forward, a loss on the embedding, backward, SGD) of one batch, or with ``--infer`` a
forward pass under ``torch.inference_mode``, in both memory formats,
alternating them so the machine's load hits both alike, and prints the median img/s of each and
their ratio. The default models are ``configs/quickstart.yaml``'s GhostFaceNetV1 at width 0.5 and
1.0 (64×64, stride 2): the measurement behind ``trainer.channels_last: true`` and width 1.0 there.
oneDNN's convolutions take NHWC natively, and depthwise convolutions (GhostFaceNet, MobileFaceNet)
gain the most (PyTorch tutorial "Channels Last Memory Format").

    python benchmarks/channels_last.py [--models ghostfacenetv1:0.5,ghostfacenetv1:1.0] [--threads 1,2]
        [--size 64] [--batch 128] [--steps 7] [--infer]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch


def step_timer(
    name: str, width: float | None, size: int, batch: int, channels_last: bool, infer: bool = False
):
    """A function that runs one training step (``infer``: one forward pass) and returns its seconds."""
    from faceforge.models import create_model

    kw = {"width": width, "stride": 2} if width is not None else {}
    torch.manual_seed(0)
    model = create_model(name, input_size=size, embedding_size=512, **kw).train(not infer)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model.to(memory_format=fmt)
    x = torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(0)).contiguous(
        memory_format=fmt
    )
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)

    def forward() -> float:
        t = time.perf_counter()
        with torch.inference_mode():
            model(x)
        return time.perf_counter() - t

    def step() -> float:
        t = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        model(x).square().mean().backward()
        opt.step()
        return time.perf_counter() - t

    return forward if infer else step


def main() -> None:
    """Print one row per (model, threads): NCHW img/s, NHWC img/s and the ratio."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="ghostfacenetv1:0.5,ghostfacenetv1:1.0", help="name[:width],...")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--steps", type=int, default=7, help="timed steps per format (after one warm-up)")
    ap.add_argument("--infer", action="store_true", help="time inference (eval, no grad) instead of training")
    args = ap.parse_args()
    print(
        f"torch {torch.__version__}, batch {args.batch}, {args.size}x{args.size}, "
        f"median of {args.steps} {'forward passes' if args.infer else 'training steps'}"
    )
    print(f"{'model':<24} {'threads':>7} {'NCHW img/s':>11} {'NHWC img/s':>11} {'NHWC/NCHW':>10}")
    for spec in args.models.split(","):
        name, _, w = spec.partition(":")
        for threads in (int(t) for t in args.threads.split(",")):
            torch.set_num_threads(threads)
            steps = {
                cl: step_timer(name, float(w) if w else None, args.size, args.batch, cl, args.infer)
                for cl in (False, True)
            }
            for s in steps.values():
                s()  # warm-up: first-call allocations and oneDNN kernel selection
            times: dict[bool, list[float]] = {False: [], True: []}
            for _ in range(args.steps):
                for cl in (False, True):
                    times[cl].append(steps[cl]())
            ips = {cl: args.batch / statistics.median(t) for cl, t in times.items()}
            print(
                f"{spec:<24} {threads:>7} {ips[False]:>11.0f} {ips[True]:>11.0f} "
                f"{ips[True] / ips[False]:>9.2f}x"
            )


if __name__ == "__main__":
    main()
