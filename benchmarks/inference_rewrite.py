"""CPU inference of each backbone as built against the rewrite that :class:`TorchRunner` runs.

:func:`faceforge.models.optimize.optimize_for_inference` folds eval-mode BatchNorm into the
convolution before it and stores NHWC (``channels_last``) weights when the model has no
LayerNorm-style layers; each step is checked against the original's embeddings. This prints, per
backbone (randomly initialised, BatchNorm statistics randomised so the fold is not a no-op; the weights
do not change the speed): what was rewritten, the largest relative deviation of the embeddings, the
rewrite's one-off cost, and ms per forward pass of both at each batch size (rows; a crop and its
mirror are 2), timed alternately in the same run (median of ``--repeats``), with the ratio::

    PYTHONPATH=src python benchmarks/inference_rewrite.py [--models ghostfacenetv1,mobilefacenet,...]
        [--batches 2,32] [--repeats 9] [--threads 1]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch import nn

DEFAULT_MODELS = (
    "quickstart,ghostfacenetv1,ghostfacenetv2,mobilefacenet,iresnet18,iresnet50,ir_se50,dlib_resnet_v1,"
    "edgeface_xxs,edgeface_base"
)


def build(name: str) -> nn.Module:
    """A backbone by registry name, or ``quickstart`` (configs/quickstart.yaml's, what make demo trains)."""
    if name == "quickstart":
        from pathlib import Path

        from faceforge.models.build import build_backbone
        from faceforge.train.config import load_config

        cfg = load_config(str(Path(__file__).resolve().parents[1] / "configs" / "quickstart.yaml"), [])
        model = build_backbone(cfg["model"]["backbone"], cfg["data"]["image_size"])
    else:
        from faceforge.models import create_model

        model = create_model(name)
    g = torch.Generator().manual_seed(0)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d) and m.running_var is not None:
            m.running_mean.normal_(0, 0.1, generator=g)
            m.running_var.uniform_(0.5, 2.0, generator=g)
            if m.affine:
                m.weight.data.uniform_(0.5, 1.5, generator=g)
                m.bias.data.normal_(0, 0.1, generator=g)
    return model.eval()


def timed(module: nn.Module, x: torch.Tensor) -> float:
    """Seconds of one forward pass under inference mode."""
    with torch.inference_mode():
        t = time.perf_counter()
        module(x)
        return time.perf_counter() - t


def main() -> None:
    """One table row per (model, batch)."""
    from faceforge.models.optimize import optimize_for_inference

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default=DEFAULT_MODELS)
    ap.add_argument("--batches", default="2,32", help="rows per forward pass (a crop and its mirror: 2)")
    ap.add_argument("--repeats", type=int, default=9)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(f"{args.threads} torch thread(s), median of {args.repeats} alternating runs")
    print(
        "| model | input | rewrite | max deviation | rewrite s | batch | as built ms | rewritten ms | ratio |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for name in args.models.split(","):
        model = build(name)
        h, w = (int(v) for v in model.face_cfg.input_size)
        t0 = time.perf_counter()
        rw = optimize_for_inference(model, (h, w))
        t_rw = time.perf_counter() - t0
        what = ", ".join(
            ([f"{rw.folded} BN folded"] if rw.folded else []) + (["NHWC"] if rw.channels_last else [])
        )
        for b in (int(v) for v in args.batches.split(",")):
            x = torch.randn(b, 3, h, w, generator=torch.Generator().manual_seed(1))
            xr = x.contiguous(memory_format=torch.channels_last) if rw.channels_last else x
            timed(model, x), timed(rw.module, xr)  # warm-up: first-call allocations are not the point
            base, new = [], []
            for _ in range(args.repeats):
                base.append(timed(model, x))
                new.append(timed(rw.module, xr))
            a, n = statistics.median(base) * 1e3, statistics.median(new) * 1e3
            print(
                f"| {name} | {h}x{w} | {what or 'none'} | {rw.max_rel_error:.1e} | {t_rw:.2f} | {b} "
                f"| {a:.1f} | {n:.1f} | {a / n:.2f}x |",
                flush=True,
            )


if __name__ == "__main__":
    main()
