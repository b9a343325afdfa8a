"""Partial FC: single process and 2 gloo processes against a full-softmax reference."""

from __future__ import annotations

import itertools
import socket
import sys
from pathlib import Path

import pytest
import torch

from faceforge.errors import FaceforgeError
from faceforge.heads import PartialFC, create_head, shard_range

HERE = Path(__file__).resolve().parent


def test_shard_range_covers_all_classes_contiguously() -> None:
    for c, w in [(10, 3), (1003, 2), (8, 8), (7, 1)]:
        pieces = [shard_range(c, w, r) for r in range(w)]
        assert pieces[0][0] == 0
        for (s0, n0), (s1, _) in itertools.pairwise(pieces):
            assert s1 == s0 + n0
        assert sum(n for _, n in pieces) == c
        assert max(n for _, n in pieces) - min(n for _, n in pieces) <= 1


@pytest.mark.parametrize("name", ["arcface", "cosface", "combined", "adaface", "normface"])
def test_single_process_rate1_equals_full_head(name: str) -> None:
    torch.manual_seed(0)
    pfc = PartialFC(16, 50, margin_head=name)
    head = create_head(name, 16, 50)
    head.weight.data.copy_(pfc.weight.data)
    e = torch.randn(8, 16, requires_grad=True)
    lab = torch.randint(0, 50, (8,))
    a = pfc(e, lab)
    (ga,) = torch.autograd.grad(a, e)
    b = head.loss(e, lab)
    (gb,) = torch.autograd.grad(b, e)
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(ga, gb, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(pfc.logits(e, lab), head(e, lab), rtol=1e-6, atol=1e-5)


def test_single_process_sampling_keeps_positives_and_count() -> None:
    torch.manual_seed(1)
    pfc = PartialFC(8, 400, sample_rate=0.1)
    assert pfc.num_sample == 40
    e = torch.randn(16, 8, requires_grad=True)
    lab = torch.randint(0, 400, (16,))
    loss = pfc(e, lab)
    loss.backward()
    idx = pfc.last_index
    assert idx is not None and idx.numel() == 40
    assert set(lab.tolist()) <= set(idx.tolist())
    assert torch.equal(idx, idx.sort().values)
    rows = (pfc.weight.grad.abs().sum(1) > 0).nonzero().flatten()
    assert set(rows.tolist()) <= set(idx.tolist())
    # the loss equals a full head restricted to the sampled classes
    head = create_head("arcface", 8, 40)
    head.weight.data.copy_(pfc.weight.data[idx])
    remapped = torch.searchsorted(idx, lab)
    torch.testing.assert_close(loss, head.loss(e, remapped), rtol=1e-5, atol=1e-6)


def test_more_positives_than_sample_keeps_all_positives() -> None:
    pfc = PartialFC(8, 100, sample_rate=0.05)
    lab = torch.arange(20)
    pfc(torch.randn(20, 8), lab)
    assert pfc.last_index.tolist() == list(range(20))


@pytest.mark.parametrize("rate", [0.0, 1.5, -0.1])
def test_bad_sample_rate(rate: float) -> None:
    with pytest.raises(FaceforgeError, match=str(rate)):
        PartialFC(8, 10, sample_rate=rate)


def test_errors_name_the_value() -> None:
    pfc = PartialFC(8, 10)
    with pytest.raises(FaceforgeError, match="12"):
        pfc(torch.randn(2, 8), torch.tensor([1, 12]))
    with pytest.raises(FaceforgeError, match="7"):
        pfc(torch.randn(2, 7), torch.tensor([1, 2]))
    with pytest.raises(FaceforgeError, match="curricularface"):
        PartialFC(8, 10, margin_head="curricularface")
    with pytest.raises(FaceforgeError, match="arcfase"):
        PartialFC(8, 10, margin_head="arcfase")
    with pytest.raises(FaceforgeError, match="99"):
        PartialFC(8, 10).load_state_dict({"weight": torch.zeros(99, 8)})


def test_state_dict_roundtrip_single_process(tmp_path: Path) -> None:
    a = PartialFC(8, 30, margin_head="adaface")
    a(torch.randn(4, 8), torch.tensor([0, 1, 2, 3]))  # moves the AdaFace buffers
    torch.save(a.full_state_dict(), tmp_path / "x.pt")
    b = PartialFC(8, 30, margin_head="adaface")
    b.load_full_state_dict(torch.load(tmp_path / "x.pt"))
    assert torch.equal(a.weight, b.weight)
    assert torch.equal(a.margin_head.batch_mean, b.margin_head.batch_mean)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow  # two spawned processes with torch.distributed: ~10 s
def test_two_process_gloo(tmp_path: Path) -> None:
    import torch.multiprocessing as mp

    torch.manual_seed(0)
    C, D, B = 1003, 16, 8  # uneven shards: 502 + 501
    weight = torch.randn(C, D) * 0.01
    emb = torch.randn(B, D)
    labels = torch.randint(0, C, (B,))
    labels[:3] = torch.tensor([0, 501, 502])  # shard boundaries
    torch.save(
        {"C": C, "D": D, "weight": weight, "embeddings": emb, "labels": labels}, tmp_path / "inputs.pt"
    )

    # world size 1 checkpoint + logits for the "load at world size 2" direction
    pfc1 = PartialFC(D, C, margin_head="arcface")
    torch.save(pfc1.state_dict(), tmp_path / "ckpt_ws1.pt")
    logits_ws1 = pfc1.logits(emb, labels)

    # reference: single-process full softmax (ArcFace) with the same weights and batch
    ref = create_head("arcface", D, C, scale=64.0, margin=0.5)
    ref.weight.data.copy_(weight)
    e = emb.clone().requires_grad_(True)
    ref_loss = ref.loss(e, labels)
    ref_loss.backward()

    if str(HERE) not in sys.path:
        sys.path.insert(0, str(HERE))
    import _pfc_worker

    mp.spawn(_pfc_worker.run, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    outs = [torch.load(tmp_path / f"out{r}.pt") for r in range(2)]

    # 1) sample rate 1.0: same loss on both ranks, same embedding/centre gradients as the reference
    for o in outs:
        torch.testing.assert_close(o["loss"], ref_loss.detach(), rtol=1e-5, atol=0)
    emb_grad = torch.cat([o["emb_grad"] for o in outs])
    torch.testing.assert_close(emb_grad, e.grad, rtol=1e-5, atol=1e-5 * e.grad.abs().max().item())
    w_grad = torch.cat([o["weight_grad"] for o in outs])
    assert w_grad.shape == (C, D)
    torch.testing.assert_close(
        w_grad, ref.weight.grad, rtol=1e-5, atol=1e-5 * ref.weight.grad.abs().max().item()
    )

    # 2) sample rate 0.1: every positive of the global batch kept; count = int(0.1 * shard)
    for o in outs:
        start, n = o["start"], o["num_local"]
        idx = o["index"]
        assert idx.numel() == o["num_sample"] == int(0.1 * n) == 50
        positives = {int(x) - start for x in labels if start <= x < start + n}
        assert positives <= set(idx.tolist())
        assert len(set(idx.tolist())) == idx.numel()
        assert set(o["grad_rows"].tolist()) <= set(idx.tolist())
        assert o["emb_grad2_finite"]
    assert torch.equal(outs[0]["loss2"], outs[1]["loss2"])

    # 3) world size 2 -> 1: full matrix in the checkpoint, equal logits
    sd2 = torch.load(tmp_path / "ckpt_ws2.pt")
    assert sd2["weight"].shape == (C, D)
    torch.testing.assert_close(sd2["weight"], weight)
    pfc_back = PartialFC(D, C, margin_head="arcface")
    pfc_back.load_state_dict(sd2)
    torch.testing.assert_close(pfc_back.logits(emb, labels), outs[0]["logits_ws2"], rtol=0, atol=1e-5)

    # 4) world size 1 -> 2: equal logits
    for o in outs:
        torch.testing.assert_close(o["logits_from_ws1"], logits_ws1, rtol=0, atol=1e-5)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_autocast_single_process_finite_fp32(dtype: torch.dtype) -> None:
    torch.manual_seed(0)
    pfc = PartialFC(8, 20, margin_head="arcface", sample_rate=0.5)
    proj = torch.nn.Linear(8, 8)
    x = torch.randn(6, 8)
    with torch.autocast("cpu", dtype=dtype):
        loss = pfc(proj(x), torch.tensor([0, 5, 19, 5, 7, 1]))
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    loss.backward()
    assert torch.isfinite(proj.weight.grad).all() and torch.isfinite(pfc.weight.grad).all()


def test_ddp_ignore_names_every_partial_fc_tensor() -> None:
    from faceforge.heads import ddp_ignore_partial_fc

    model = torch.nn.ModuleDict(
        {"backbone": torch.nn.Linear(4, 8), "head": PartialFC(8, 10, margin_head="adaface")}
    )
    names = ddp_ignore_partial_fc(model)
    assert set(names) == {"head.weight", "head.margin_head.batch_mean", "head.margin_head.batch_std"}
    assert model._ddp_params_and_buffers_to_ignore == names
    assert getattr(model["head"].weight, "_ddp_ignored", False)
    assert not getattr(model["backbone"].weight, "_ddp_ignored", False)
