"""Logits against the reference implementations (../shared/reference/vectors/margins.npz, README §4).

Tolerance: abs 2e-5 on logits of magnitude up to ~98 (the README's suggestion). ArcFace, CosFace and
insightface's CosFace-form combined match bit for bit; insightface's ArcFace-form combined head puts
every non-target entry through cos(arccos(x)), which differs from 64·x by up to 1.2e-5.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from faceforge.heads import create_head

ATOL = 2e-5


@pytest.fixture(scope="module")
def ref(shared_dir: Path) -> dict[str, np.ndarray]:
    with np.load(shared_dir / "reference" / "vectors" / "margins.npz") as z:
        return {k: z[k] for k in z.files}


def _t(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.asarray(a))


def _check(out: torch.Tensor, expected: np.ndarray) -> None:
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, _t(expected), rtol=0, atol=ATOL)


def test_inputs_are_as_documented(ref: dict[str, np.ndarray]) -> None:
    assert ref["cosine"].shape == (64, 1000)
    assert ref["theta_plus_m_gt_pi"].sum() == 10
    assert math.isclose(float(ref["arcface_th"]), math.cos(math.pi - 0.5))
    assert math.isclose(float(ref["arcface_mm"]), math.sin(math.pi - 0.5) * 0.5)


def test_arcface_evolve_with_fallback(ref: dict[str, np.ndarray]) -> None:
    head = create_head("arcface", 8, 1000, scale=float(ref["scale"]), margin=float(ref["arcface_margin"]))
    out = head.apply_margin(_t(ref["cosine"]), _t(ref["labels"]))
    _check(out, ref["logits_evolve_arcface_s64_m0p5"])
    # the θ + m > π rows really took the fallback branch (they differ from the no-fallback form)
    rows = np.flatnonzero(ref["theta_plus_m_gt_pi"])
    cols = ref["labels"][rows]
    no_fb = ref["logits_insightface_combined_arcface_s64_m0p5"][rows, cols]
    assert np.all(np.abs(out.numpy()[rows, cols] - no_fb) > 5)


@pytest.mark.parametrize(
    ("m", "key"), [(0.35, "logits_evolve_cosface_s64_m0p35"), (0.4, "logits_evolve_cosface_s64_m0p4")]
)
def test_cosface_evolve(ref: dict[str, np.ndarray], m: float, key: str) -> None:
    head = create_head("cosface", 8, 1000, scale=64.0, margin=m)
    _check(head.apply_margin(_t(ref["cosine"]), _t(ref["labels"])), ref[key])


def test_combined_insightface_arcface_form(ref: dict[str, np.ndarray]) -> None:
    head = create_head("combined", 8, 1000, scale=64.0, m1=1.0, m2=0.5, m3=0.0)
    _check(
        head.apply_margin(_t(ref["cosine"]), _t(ref["labels"])),
        ref["logits_insightface_combined_arcface_s64_m0p5"],
    )


def test_combined_insightface_cosface_form(ref: dict[str, np.ndarray]) -> None:
    head = create_head("combined", 8, 1000, scale=64.0, m1=1.0, m2=0.0, m3=0.4)
    _check(
        head.apply_margin(_t(ref["cosine"]), _t(ref["labels"])),
        ref["logits_insightface_combined_cosface_s64_m0p4"],
    )


def _adaface(ref: dict[str, np.ndarray]):
    head = create_head(
        "adaface",
        8,
        1000,
        scale=float(ref["adaface_s"]),
        margin=float(ref["adaface_m"]),
        h=float(ref["adaface_h"]),
        t_alpha=float(ref["adaface_t_alpha"]),
    )
    assert head.eps == float(ref["adaface_eps"])
    torch.testing.assert_close(head.batch_mean, _t(ref["adaface_batch_mean_init"]))
    torch.testing.assert_close(head.batch_std, _t(ref["adaface_batch_std_init"]))
    return head


def test_adaface_logits_and_batch_statistics(ref: dict[str, np.ndarray]) -> None:
    head = _adaface(ref)
    out = head.apply_margin(_t(ref["cosine"]), _t(ref["labels"]), _t(ref["adaface_norms"]))
    _check(out, ref["logits_adaface_m0p4_h0p333_s64"])
    torch.testing.assert_close(head.batch_mean, _t(ref["adaface_batch_mean"]), rtol=1e-6, atol=0)
    torch.testing.assert_close(head.batch_std, _t(ref["adaface_batch_std"]), rtol=1e-6, atol=0)


def test_adaface_intermediates(ref: dict[str, np.ndarray]) -> None:
    head = _adaface(ref)
    scaler, g_ang, g_add = head.margin_terms(_t(ref["adaface_norms"]))
    for got, key in [
        (scaler, "adaface_margin_scaler"),
        (g_ang, "adaface_g_angular"),
        (g_add, "adaface_g_add"),
    ]:
        torch.testing.assert_close(got, _t(ref[key]), rtol=0, atol=1e-6)


def test_adaface_forward_computes_norms_from_raw_embeddings(ref: dict[str, np.ndarray]) -> None:
    """forward() must feed ‖x‖ of the raw embeddings: rescaling rows changes nothing but the norms."""
    torch.manual_seed(0)
    head = _adaface(ref)
    x = torch.randn(64, 8)
    x = x / x.norm(dim=1, keepdim=True) * _t(ref["adaface_norms"])
    labels = _t(ref["labels"]) % 1000
    logits = head(x, labels)
    torch.testing.assert_close(head.batch_mean, _t(ref["adaface_batch_mean"]), rtol=1e-5, atol=0)
    head2 = _adaface(ref)
    cos = torch.nn.functional.normalize(x, dim=1) @ torch.nn.functional.normalize(head.weight, dim=1).t()
    torch.testing.assert_close(
        logits, head2.apply_margin(cos, labels, _t(ref["adaface_norms"])), rtol=0, atol=1e-4
    )
