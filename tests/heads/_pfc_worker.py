"""Worker for the 2-process Partial FC test (imported by the spawned processes; not a test module)."""

from __future__ import annotations

import os
from pathlib import Path

import torch
import torch.distributed as dist

from faceforge.heads import PartialFC


def run(rank: int, world: int, port: int, tmp: str) -> None:
    """One rank: loss/grad at sample rate 1.0, sampling at 0.1, checkpoints in both directions."""
    torch.set_num_threads(1)
    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        d = torch.load(Path(tmp) / "inputs.pt")
        emb, labels = d["embeddings"], d["labels"]
        b = emb.shape[0] // world
        e = emb[rank * b : (rank + 1) * b].clone().requires_grad_(True)
        lab = labels[rank * b : (rank + 1) * b]
        out: dict[str, object] = {}

        # 1) sample rate 1.0 == single-process full softmax (ArcFace margin)
        pfc = PartialFC(d["D"], d["C"], margin_head="arcface", scale=64.0, margin=0.5)
        pfc.load_full_state_dict({"weight": d["weight"]})
        loss = pfc(e, lab)
        loss.backward()
        out.update(
            loss=loss.detach(),
            emb_grad=e.grad.clone(),
            weight_grad=pfc.weight.grad.clone(),
            start=pfc.class_start,
            num_local=pfc.num_local,
        )

        # 2) sample rate 0.1: positives of the global batch kept, count as configured
        torch.manual_seed(100 + rank)
        pfc2 = PartialFC(d["D"], d["C"], margin_head="cosface", sample_rate=0.1)
        e2 = emb[rank * b : (rank + 1) * b].clone().requires_grad_(True)
        loss2 = pfc2(e2, lab)
        loss2.backward()
        out.update(
            index=pfc2.last_index.clone(),
            num_sample=pfc2.num_sample,
            loss2=loss2.detach(),
            grad_rows=(pfc2.weight.grad.abs().sum(1) > 0).nonzero().flatten(),
            emb_grad2_finite=bool(torch.isfinite(e2.grad).all()),
        )

        # 3) checkpoint at world size 2 (full matrix via the state_dict hook) + its logits
        sd = pfc.state_dict()
        logits_ws2 = pfc.logits(e.detach(), lab)
        if rank == 0:
            torch.save(sd, Path(tmp) / "ckpt_ws2.pt")
            out["logits_ws2"] = logits_ws2

        # 4) checkpoint saved at world size 1 loads here
        pfc3 = PartialFC(d["D"], d["C"], margin_head="arcface")
        pfc3.load_state_dict(torch.load(Path(tmp) / "ckpt_ws1.pt"))
        out["logits_from_ws1"] = pfc3.logits(e.detach(), lab)
        torch.save(out, Path(tmp) / f"out{rank}.pt")
    finally:
        dist.destroy_process_group()
