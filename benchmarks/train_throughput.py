"""Training throughput: img/s, model-FLOP utilisation, faceforge overhead and loader speed.

For each backbone (default r50, mbf, GhostFaceNetV1, EdgeFace-XS at batch 64, 112x112, ArcFace over
``--classes`` identities) this prints:

* ``step img/s``: faceforge's training step (``FaceRecognitionModule.training_step``: preprocessing,
  flip, backbone, margin head, loss) + backward + SGD step;
* ``plain img/s``: the same model and head in a plain PyTorch loop (same weights, same maths);
* ``overhead``: faceforge step time / plain step time - 1 (target <= 5 %); both are timed alternately
  in the same run so machine load hits both alike;
* ``MFU``: achieved FLOP/s of the step (forward + backward FLOPs counted by
  ``torch.utils.flop_counter``) divided by the peak of a large GEMM measured in the same run
  (fp32 on CPU, bf16 on GPU), i.e. model-FLOP utilisation as in Chowdhery et al. (PaLM, 2022);
* ``loader img/s``: the training DataLoader of faceforge over a cached SynthFaces set.

On a GPU (``--device auto`` picks CUDA when available) the steps run under bf16 autocast and every
timing is synchronised. ``--batch``/``--models``/``--steps`` shrink the run for a busy CPU.

    python benchmarks/train_throughput.py --models mbf,ghostfacenetv1 --batch 16 --steps 3
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import tempfile
import time
import warnings
from typing import Any

import torch
import torch.nn.functional as F

MODELS = {
    "r50": "iresnet50",
    "mbf": "mbf",
    "ghostfacenetv1": "ghostfacenetv1",
    "edgeface_xs": "edgeface_xs_gamma_06",
}


def sync(device: torch.device) -> None:
    """Wait for queued GPU work so wall-clock timings are real."""
    if device.type == "cuda":
        torch.cuda.synchronize()


def gemm_peak(device: torch.device, n: int, repeats: int = 5) -> float:
    """Best FLOP/s of an ``n x n`` matmul (fp32 on CPU, bf16 on GPU): the measured peak."""
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    a @ b
    sync(device)
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        a @ b
        sync(device)
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best


def build(name: str, batch: int, size: int, classes: int, device: torch.device) -> Any:
    """A FaceRecognitionModule (no Trainer) for ``name`` with an ArcFace head."""
    from faceforge.train.config import load_config
    from faceforge.train.module import FaceRecognitionModule

    cfg = load_config(
        None,
        [
            "--model.backbone",
            f"{{name: {MODELS.get(name, name)}, embedding_size: 512}}",
            "--data.image_size",
            str(size),
            "--data.batch_size",
            str(batch),
            "--trainer.logger",
            "null",
        ],
    )
    m = FaceRecognitionModule(cfg, classes).to(device)
    m.configure_model()
    return m.train()


def faceforge_step(m: Any, opt: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor) -> None:
    """One step through the LightningModule's own training_step."""
    loss = m.training_step((x, y), 0)
    loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)


def plain_step(m: Any, opt: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor) -> None:
    """The same computation written as a bare PyTorch loop."""
    from faceforge.models.face_cfg import preprocess

    flip = torch.rand(x.shape[0], device=x.device) < 0.5
    x = torch.where(flip[:, None, None, None], x.flip(-1), x)
    emb = m.backbone(preprocess(x, m.face_cfg))
    logits = m.head(emb, y)
    loss = F.cross_entropy(logits, y)
    loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)


def count_flops(m: Any, x: torch.Tensor, y: torch.Tensor) -> int:
    """Forward + backward FLOPs of one training step (torch.utils.flop_counter)."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as fc:
        loss = m.training_step((x, y), 0)
        loss.backward()
    m.zero_grad(set_to_none=True)
    return int(fc.get_total_flops())


def loader_speed(batch: int, size: int, seconds: float = 3.0) -> float:
    """img/s of faceforge's training DataLoader over a cached SynthFaces set."""
    from faceforge.data.synth import write_dataset
    from faceforge.train.datamodule import FaceDataModule

    with tempfile.TemporaryDirectory() as d:
        write_dataset(d, identities=32, images_per_id=8, val_identities=0, test_identities=0,
                      workers=1, progress=False, val_pairs_per_fold=1, test_pairs_per_fold=1)  # fmt: skip
        cfg = {"root": d, "train": "train", "val_pairs": None, "test_pairs": None, "image_size": size,
               "batch_size": batch, "num_workers": 0, "cache": True, "flip": True, "augment": []}  # fmt: skip
        dm = FaceDataModule(cfg)
        n, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            for x, _ in dm.train_dataloader():
                n += x.shape[0]
        return n / (time.perf_counter() - t0)


def main() -> None:
    """Parse arguments, measure every model, print one table."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", default="r50,mbf,ghostfacenetv1,edgeface_xs")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--image-size", type=int, default=112)
    ap.add_argument("--classes", type=int, default=1000)
    ap.add_argument("--steps", type=int, default=5, help="timed steps per path (after 2 warm-up steps)")
    ap.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (1 on a shared machine)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")
    dev = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                       ("cpu" if args.device == "auto" else args.device))  # fmt: skip
    amp = torch.autocast("cuda", dtype=torch.bfloat16) if dev.type == "cuda" else contextlib.nullcontext()
    peak = gemm_peak(dev, 8192 if dev.type == "cuda" else 2048)
    name = torch.cuda.get_device_name(0) if dev.type == "cuda" else f"CPU, {args.threads} thread(s)"
    print(f"device: {name}; GEMM peak {peak / 1e12:.3f} TFLOP/s; batch {args.batch}, "
          f"{args.image_size}x{args.image_size}, ArcFace over {args.classes} classes")  # fmt: skip
    loader = loader_speed(args.batch, args.image_size)
    print(f"{'model':16s} {'step img/s':>10s} {'plain img/s':>11s} {'overhead':>9s} {'GFLOP/img':>9s} "
          f"{'MFU':>6s} {'loader img/s':>12s}")  # fmt: skip
    for key in args.models.split(","):
        torch.manual_seed(0)
        m = build(key, args.batch, args.image_size, args.classes, dev)
        opt = torch.optim.SGD(m.parameters(), lr=0.01, momentum=0.9)
        x = torch.randint(
            0, 256, (args.batch, 3, args.image_size, args.image_size), dtype=torch.uint8, device=dev
        )
        y = torch.randint(0, args.classes, (args.batch,), device=dev)
        with amp:
            flops = count_flops(m, x, y)
            for _ in range(2):
                faceforge_step(m, opt, x, y)
                plain_step(m, opt, x, y)
            times: dict[str, list[float]] = {"ff": [], "plain": []}
            for _ in range(args.steps):  # alternate so that load changes hit both paths alike
                for tag, fn in (("ff", faceforge_step), ("plain", plain_step)):
                    sync(dev)
                    t = time.perf_counter()
                    fn(m, opt, x, y)
                    sync(dev)
                    times[tag].append(time.perf_counter() - t)
        tf, tp = statistics.median(times["ff"]), statistics.median(times["plain"])
        mfu = flops / tf / peak
        print(f"{key:16s} {args.batch / tf:10.1f} {args.batch / tp:11.1f} {100 * (tf / tp - 1):8.1f}% "
              f"{flops / args.batch / 1e9:9.2f} {100 * mfu:5.1f}% {loader:12.0f}")  # fmt: skip


if __name__ == "__main__":
    main()
