"""CPU precision presets (issue #21): bf16 only with native bf16 units and a probe that measures >= 1.3x.

The hardware query (:func:`faceforge.train.presets.cpu_bf16_support`) and the probes are faked to
cover every branch on any machine; one test runs the real detection and probe of this machine.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from faceforge.errors import FaceforgeError
from faceforge.infer import loading
from faceforge.models import create_model
from faceforge.train import presets
from faceforge.train.config import load_config
from faceforge.train.presets import (
    MIN_BF16_SPEEDUP,
    Bf16Probe,
    DeviceInfo,
    apply_preset,
    choose_cpu_precision,
    choose_preset,
    probe_train_step,
    time_fp32_vs_bf16,
)

TINY = [
    "--data.image_size", "32",
    "--data.batch_size", "16",
    "--model.backbone.width", "0.25",
    "--model.backbone.stride", "2",
    "--model.backbone.embedding_size", "32",
    "--trainer.accelerator", "cpu",
]  # fmt: skip
AMX = DeviceInfo("cpu", "CPU", cpus=8, cpu_bf16="AMX-BF16, AVX512-BF16")
NO_BF16 = DeviceInfo("cpu", "CPU", cpus=8)


def _probe(speedup: float, cosine: float | None = None) -> Bf16Probe:
    return Bf16Probe("fake fwd+bwd 112x112 batch 8", 10.0, 10.0 * speedup, 1.5, cosine)


def _must_not_run() -> Bf16Probe:
    raise AssertionError("the probe ran although the rule says no probe")


# ---------------------------------------------------------------- detection
@pytest.mark.parametrize(
    ("flags", "amx_tile", "avx512_bf16", "expected"),
    [
        ({"avx512f", "amx_tile", "amx_bf16", "avx512_bf16"}, True, True, "AMX-BF16, AVX512-BF16"),
        ({"avx512f", "avx512_bf16"}, False, True, "AVX512-BF16"),
        ({"avx2", "fma"}, False, False, None),  # e.g. AMD EPYC (Zen 2/3): bf16 only emulated
        ({"amx_bf16", "avx512_bf16"}, False, True, "AVX512-BF16"),  # AMX offered but not usable by torch
        (None, True, True, "AMX-BF16, AVX512-BF16"),  # no /proc/cpuinfo: torch's query decides
        ({"amx_bf16"}, None, None, "AMX-BF16"),  # old torch without the query: cpuinfo decides
        (None, None, None, None),  # nobody to ask: no bf16
    ],
)
def test_cpu_bf16_support_needs_every_source_to_agree(monkeypatch, flags, amx_tile, avx512_bf16, expected):
    answers = {"_is_amx_tile_supported": amx_tile, "_is_avx512_bf16_supported": avx512_bf16}
    monkeypatch.setattr(presets, "_cpuinfo_flags", lambda: flags)
    monkeypatch.setattr(presets, "_torch_cpu_query", answers.__getitem__)
    assert presets.cpu_bf16_support() == expected


def test_cpuinfo_flags_are_read_from_the_flags_line(tmp_path: Path) -> None:
    f = tmp_path / "cpuinfo"
    f.write_text("processor\t: 0\nmodel name\t: Some CPU\nflags\t\t: fpu avx512f amx_bf16 avx512_bf16\n\n")
    assert presets._cpuinfo_flags(str(f)) == {"fpu", "avx512f", "amx_bf16", "avx512_bf16"}
    assert presets._cpuinfo_flags(str(tmp_path / "missing")) is None


def test_detect_device_asks_the_one_detection_function(monkeypatch) -> None:
    monkeypatch.setattr(presets, "cpu_bf16_support", lambda: "AVX512-BF16")
    assert presets.detect_device("cpu").cpu_bf16 == "AVX512-BF16"
    monkeypatch.setattr(presets, "cpu_bf16_support", lambda: None)
    assert presets.detect_device("cpu").cpu_bf16 is None


# ---------------------------------------------------------------- the rule
@pytest.mark.parametrize(
    ("units", "speedup", "bf16", "said"),
    [
        (None, 3.0, False, "no native bf16 on this CPU"),  # never probed, however fast it would be
        ("AMX-BF16", 2.33, True, "= 2.33x (probe 1.5 s) >= 1.3x"),
        ("AMX-BF16", MIN_BF16_SPEEDUP, True, ">= 1.3x"),  # the threshold itself counts
        ("AMX-BF16", 1.15, False, "= 1.15x (probe 1.5 s) < 1.3x"),
        ("AVX512-BF16", 0.4, False, "< 1.3x"),
    ],
)
def test_choose_cpu_precision(units, speedup, bf16, said) -> None:
    calls = []

    def probe() -> Bf16Probe:
        calls.append(1)
        return _probe(speedup)

    cp = choose_cpu_precision(units, probe)
    assert cp.bf16 is bf16 and said in cp.reason
    assert len(calls) == (1 if units else 0)
    if units:
        assert units in cp.reason and "fp32 10 img/s" in cp.reason and cp.probe is not None


def test_a_failing_probe_or_none_keeps_fp32() -> None:
    def fails() -> Bf16Probe:
        raise RuntimeError("no bf16 kernel for op X")

    cp = choose_cpu_precision("AMX-BF16", fails)
    assert not cp.bf16 and "no bf16 kernel for op X" in cp.reason
    assert choose_cpu_precision("AMX-BF16", None) == presets.CpuPrecision(False, "AMX-BF16; not probed")


# ---------------------------------------------------------------- the training preset
@pytest.mark.parametrize(
    ("info", "speedup", "precision", "said"),
    [
        (NO_BF16, 2.0, "32-true", "precision 32-true (no native bf16 on this CPU)"),
        (AMX, 2.33, "bf16-mixed", "precision bf16-mixed (AMX-BF16, AVX512-BF16; fake fwd+bwd"),
        (AMX, 1.15, "32-true", "1.15x (probe 1.5 s) < 1.3x)"),
    ],
)
def test_cpu_preset_follows_units_and_probe(info, speedup, precision, said) -> None:
    cfg = load_config(None, TINY)
    probe = (lambda: _probe(speedup)) if info.cpu_bf16 else _must_not_run
    p = choose_preset(cfg, info, probe)
    assert p.precision == precision and said in p.summary
    assert p.summary.startswith("preset: CPU (8 cores) x 1 -> precision")


def test_explicit_precision_is_kept_and_not_probed() -> None:
    for value in ("32-true", "bf16-mixed"):
        for info in (AMX, NO_BF16):
            p = choose_preset(load_config(None, [*TINY, "--trainer.precision", value]), info, _must_not_run)
            assert p.precision == value and f"precision {value} (as configured)" in p.summary


def test_no_probe_with_several_cpu_processes_or_on_gpu() -> None:
    ddp = load_config(None, [*TINY, "--trainer.devices", "2", "--trainer.strategy", "ddp"])
    p = choose_preset(ddp, AMX, _must_not_run)
    assert p.precision == "32-true" and "not probed with 2 processes sharing the CPU" in p.summary
    h100 = DeviceInfo("cuda", "NVIDIA H100", (9, 0), 80, 1, 16, cpu_bf16="AMX-BF16")
    assert choose_preset(load_config(None, TINY), h100, _must_not_run).precision == "bf16-mixed"
    # A CPU with units but nothing to measure with keeps fp32 and says so.
    assert "not probed" in choose_preset(load_config(None, TINY), AMX).summary


def test_a_bad_global_batch_fails_before_any_probe() -> None:
    cfg = load_config(None, [*TINY, "--data.global_batch_size", "20"])
    with pytest.raises(FaceforgeError, match=r"global_batch_size=20"):
        choose_preset(cfg, AMX, _must_not_run)


def test_apply_preset_writes_the_choice_and_every_value_stays_overridable() -> None:
    cfg = load_config(None, TINY)
    p = apply_preset(cfg, AMX, lambda: _probe(2.0))
    assert cfg["trainer"]["precision"] == p.precision == "bf16-mixed"
    cfg = load_config(None, [*TINY, "--trainer.precision", "32-true", "--data.num_workers", "1"])
    apply_preset(cfg, AMX, _must_not_run)
    assert (cfg["trainer"]["precision"], cfg["data"]["num_workers"]) == ("32-true", 1)


# ---------------------------------------------------------------- the timing loop (fake clock)
class FakeClock:
    """A clock that only the fake steps advance: ``per_image`` seconds per input and precision."""

    def __init__(self, fp32: float, bf16: float, slowdown: float = 1.0) -> None:
        self.now, self.per_image = 0.0, {False: fp32, True: bf16}
        self.slowdown = slowdown  # every step after the first is this many times slower
        self.steps: list[tuple[int, bool]] = []

    def __call__(self) -> float:
        return self.now

    def make_step(self, batch: int):
        def step(bf16: bool) -> None:
            self.now += batch * self.per_image[bf16] * (self.slowdown if self.steps else 1.0)
            self.steps.append((batch, bf16))

        return step


def test_timing_sizes_the_batch_alternates_and_keeps_the_budget() -> None:
    c = FakeClock(fp32=0.05, bf16=0.025)
    batch, t32, t16 = time_fp32_vs_bf16(c.make_step, max_batch=32, seconds=5.0, clock=c)
    # 0.1 s for 2 images leaves 4.9 s: 6 steps of 16 images (0.05 s each) fit.
    assert (batch, t32, t16) == (16, pytest.approx(0.8), pytest.approx(0.4))
    assert c.steps == [(2, False), (16, False), (16, True)] + [(16, False), (16, True)] * 3
    assert c.now <= 5.0
    c = FakeClock(fp32=0.001, bf16=0.001)
    assert time_fp32_vs_bf16(c.make_step, max_batch=8, seconds=5.0, clock=c)[0] == 8  # at most max_batch
    assert len(c.steps) == 3 + 2 * 4  # at most max_pairs pairs


def test_timing_refuses_a_step_that_leaves_no_room() -> None:
    c = FakeClock(fp32=1.0, bf16=0.5)  # 2 s for 2 images; a bf16 warm-up and a pair need 6 more
    with pytest.raises(RuntimeError, match=r"one fp32 step of 2 inputs took 2\.00 s"):
        time_fp32_vs_bf16(c.make_step, max_batch=32, seconds=5.0, clock=c)
    assert c.steps == [(2, False)]


def test_timing_stops_when_the_machine_slows_down_after_sizing() -> None:
    c = FakeClock(fp32=0.05, bf16=0.025, slowdown=10.0)  # sized for 16 images, then 8 s per step
    with pytest.raises(RuntimeError, match=r"ran out before the bf16 warm-up \(busy machine\?\)"):
        time_fp32_vs_bf16(c.make_step, max_batch=32, seconds=5.0, clock=c)
    assert c.steps == [(2, False), (16, False)]
    c = FakeClock(fp32=0.05, bf16=0.025, slowdown=3.0)  # the warm-ups end at 0.1 + 2.4 + 1.2 s
    assert time_fp32_vs_bf16(c.make_step, max_batch=32, seconds=5.0, clock=c)[1:] == (
        pytest.approx(2.4),
        pytest.approx(1.2),
    )
    assert len(c.steps) == 5  # one pair, which ends past the budget (at most one pair does)


# ---------------------------------------------------------------- this machine, for real
def test_the_real_probe_on_this_machine_decides_as_the_rule_says() -> None:
    units = presets.cpu_bf16_support()
    cfg = load_config(None, TINY)
    seen: list[Bf16Probe | RuntimeError] = []

    def probe() -> Bf16Probe:
        try:
            seen.append(probe_train_step(cfg))
        except RuntimeError as e:  # a machine too busy for a fair comparison in 5 s
            seen.append(e)
            raise
        return seen[-1]

    rng = torch.get_rng_state()
    p = choose_preset(cfg, presets.detect_device("cpu"), probe)
    assert torch.equal(torch.get_rng_state(), rng)  # the probe leaves the training RNG alone
    if units is None:
        assert not seen and p.precision == "32-true"
        assert "precision 32-true (no native bf16 on this CPU)" in p.summary
        return
    (r,) = seen
    if isinstance(r, RuntimeError):
        assert p.precision == "32-true" and f"({units}; no bf16 probe result: {r})" in p.summary
        return
    # the batch (2..16) depends on how fast this machine is right now
    assert re.fullmatch(r"ghostfacenetv1 fwd\+bwd 32x32 batch ([2-9]|1[0-6])", r.what), r.what
    assert r.fp32_img_s > 0 and r.bf16_img_s > 0
    assert p.precision == ("bf16-mixed" if r.speedup >= MIN_BF16_SPEEDUP else "32-true")
    assert f"({units}; {r.describe()}" in p.summary


# ---------------------------------------------------------------- inference
@pytest.fixture(scope="module")
def tiny_net() -> torch.nn.Module:
    torch.manual_seed(0)
    return create_model("ghostfacenetv1", width=0.25, stride=2, embedding_size=32, input_size=32)


def _x() -> np.ndarray:
    return np.random.default_rng(0).standard_normal((4, 3, 32, 32)).astype(np.float32)


def test_runner_auto_without_bf16_units_never_probes(monkeypatch, tiny_net) -> None:
    monkeypatch.setattr(presets, "cpu_bf16_support", lambda: None)
    monkeypatch.setattr(loading, "probe_inference", lambda *a, **k: _must_not_run())
    r = loading.torch_runner(tiny_net, "cpu", "auto")
    assert not r.bf16 and r.fact == "fp32: auto, no native bf16 on this CPU"


@pytest.mark.parametrize(
    ("speedup", "cosine", "bf16", "said"),
    [
        (2.0, 0.99995, True, "bf16 autocast: auto, AMX-BF16; fake fwd+bwd"),
        (1.1, 0.99995, False, "fp32: auto, AMX-BF16; fake fwd+bwd 112x112 batch 8: fp32 10 img/s"),
        (2.0, 0.99, False, "fp32: auto, bf16 cosine to fp32 0.9900 < 0.999"),
        (2.0, float("nan"), False, "fp32: auto, bf16 cosine to fp32 nan < 0.999"),
    ],
)
def test_runner_auto_uses_bf16_when_it_pays_and_agrees(
    monkeypatch, caplog, tiny_net, speedup, cosine, bf16, said
) -> None:
    monkeypatch.setattr(presets, "cpu_bf16_support", lambda: "AMX-BF16")
    sizes = []

    def fake(module, size, seconds=None):
        sizes.append(size)
        return _probe(speedup, cosine)

    monkeypatch.setattr(loading, "probe_inference", fake)
    with caplog.at_level(logging.WARNING, logger="faceforge.infer.loading"):
        r = loading.torch_runner(tiny_net, "cpu", "auto")
    assert r.bf16 is bf16 and said in r.fact and sizes == [(32, 32)]
    assert ("embeddings deviate" in caplog.text) is (speedup >= 1.3 and not cosine >= 0.999)
    x = _x()
    fp32 = loading.torch_runner(tiny_net, "cpu")(x)
    out = r(x)
    assert out.dtype == np.float32 and out.shape == (4, 32)
    # bf16 autocast rounds: the output differs from fp32 exactly when bf16 was chosen.
    assert np.array_equal(out, fp32) is (not bf16)


def test_explicit_runner_precisions(tiny_net) -> None:
    x = _x()
    fp32, bf16 = loading.torch_runner(tiny_net, "cpu"), loading.torch_runner(tiny_net, "cpu", "bf16")
    assert (fp32.bf16, fp32.fact, bf16.bf16, bf16.fact) == (
        False,
        "fp32: default",
        True,
        "bf16 autocast: given",
    )
    a, b = fp32(x), bf16(x)
    cos = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    assert not np.array_equal(a, b) and cos.min() > 0.99
    with pytest.raises(FaceforgeError, match="precision must be one of fp32, bf16, auto"):
        loading.torch_runner(tiny_net, "cpu", "fp16")


def test_real_inference_probe_measures_and_compares_embeddings(tiny_net) -> None:
    r = loading.probe_inference(tiny_net, (32, 32))
    assert r.what.startswith("GhostFaceNet forward 32x32 batch ") and r.fp32_img_s > 0 and r.bf16_img_s > 0
    assert r.cosine is not None and 0.99 < r.cosine <= 1.0 + 1e-6


def test_load_model_records_the_precision(monkeypatch, tmp_path: Path) -> None:
    torch.manual_seed(0)
    path = tmp_path / "mbf.pt"
    torch.save(create_model("mbf").state_dict(), path)
    assert "precision" not in loading.load_model(path, arch="mbf").facts  # default: as before
    monkeypatch.setattr(presets, "cpu_bf16_support", lambda: "AMX-BF16")
    sizes = []
    monkeypatch.setattr(
        loading, "probe_inference", lambda m, size, s=None: sizes.append(size) or _probe(1.8, 1.0)
    )
    m = loading.load_model(path, arch="mbf", precision="auto")
    assert m.run.bf16 and m.facts["precision"].startswith("bf16 autocast: auto, AMX-BF16")
    assert sizes == [(112, 112)]  # the probe feeds the model's input size
    with pytest.raises(FaceforgeError, match="precision must be one of"):
        loading.load_model(path, arch="mbf", precision="half")
