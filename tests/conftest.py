"""Shared fixtures: ``shared_dir`` points at ../shared and skips cleanly when it is absent."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("FACEFORGE_SHARED", REPO.parent / "shared"))

#: the pytest-xdist worker this process is ("gw0", "gw1", ...), or None when pytest runs in one process
XDIST_WORKER = os.environ.get("PYTEST_XDIST_WORKER")


def pytest_configure(config: pytest.Config) -> None:
    """Per process, before any test: one torch thread per xdist worker, and a private faceforge home.

    ``make test`` runs two workers on CI's two cores; two intra-op threads each would oversubscribe
    them (PyTorch's spinning threads then collapse), and the subprocesses a test starts inherit the
    variable. ``FACEFORGE_HOME`` defaults to a temporary folder so no test writes into the user's
    ``~/.cache/faceforge`` (an explicitly set home is kept: a developer's own model files).
    """
    if XDIST_WORKER:
        os.environ["OMP_NUM_THREADS"] = "1"
        import torch

        torch.set_num_threads(1)
    if "FACEFORGE_HOME" not in os.environ:
        import atexit
        import shutil
        import tempfile

        home = tempfile.mkdtemp(prefix="faceforge-home-")
        atexit.register(shutil.rmtree, home, ignore_errors=True)
        os.environ["FACEFORGE_HOME"] = home


#: fixtures that train a model (directly or through ``trained_checkpoint``): their tests are ``slow``
TRAINING_FIXTURES = ("trained_checkpoint", "serve_recognizer", "serve_gallery", "live_server", "client")


#: tests that take 1.4 s or more without training (``--durations`` of ``make test-fast`` on the 2-core
#: CI machine): they run in ``make test`` / CI only, so the edit-test loop stays under 3 minutes
MULTI_SECOND_TESTS = frozenset(
    {
        "tests/align/test_bad_inputs.py::test_align_every_bad_input_is_an_outcome",
        "tests/align/test_cli.py::test_align_all_sizes_workers",
        "tests/align/test_dlib.py::test_astronaut_hog",
        "tests/align/test_dlib.py::test_dlib_resnet_on_our_crops_matches_native",
        "tests/align/test_quality_gates.py::test_lfw_boxes_hold_their_landmarks",
        "tests/align/test_quality_gates.py::test_mediapipe_says_when_faces_are_out_of_range",
        "tests/cli/test_cli_contract.py::test_a_closed_output_pipe_is_one_line",
        "tests/cli/test_walkthrough.py::test_a_pairs_header_promising_more_pairs_is_an_error_everywhere",
        "tests/cli/test_walkthrough.py::test_bench_align_warns_about_a_small_sorted_pair_list",
        "tests/cli/test_walkthrough.py::test_eval_names_a_pair_file_the_same_way_with_pairs_and_sets",
        "tests/cli/test_walkthrough.py::test_no_native_log_lines_in_a_fresh_process",
        "tests/cli/test_walkthrough.py::test_synth_refuses_a_folder_written_with_other_parameters",
        "tests/eval/test_align_bench.py::test_subprocess_reports_its_own_peak_rss",
        "tests/eval/test_eval_model.py::test_checkpoint_is_an_alias_of_model",
        "tests/eval/test_eval_model.py::test_overrides_reach_the_model_and_the_crops",
        "tests/eval/test_eval_model.py::test_pairs_flag_uses_the_folder_name",
        "tests/eval/test_eval_model.py::test_pretrained_name_writes_its_calibration_file",
        "tests/eval/test_eval_photos.py::test_cli_detector_none_warns_once_per_set",
        "tests/eval/test_eval_photos.py::test_cli_detects_reports_no_faces_and_reuses_crops",
        "tests/eval/test_ijb.py::test_cli_ijb_writes_the_report",
        "tests/eval/test_retrieval.py::test_ivf_close_to_exact",
        "tests/eval/test_suite.py::test_cli_cache_is_invalidated_by_a_changed_checkpoint",
        "tests/eval/test_suite.py::test_cli_several_sets_report_and_calibration",
        "tests/eval/test_suite.py::test_lowres_and_super_resolution",
        "tests/eval/test_suite.py::test_write_calibration_is_used_by_inference",
        "tests/export/test_onnx.py::test_dynamic_batch_and_opset",
        "tests/export/test_onnx.py::test_onnx_parity_every_backbone",
        "tests/infer/test_gallery.py::test_approximate_indexes_recall",
        "tests/models/test_foreign.py::test_adaface_fed_rgb_by_mistake_changes_the_embedding",
        "tests/models/test_foreign.py::test_arcface_torch_iresnet18_dataparallel_and_resume_checkpoint",
        "tests/models/test_foreign.py::test_import_keeps_adaface_bgr_and_sizes",
        "tests/models/test_foreign.py::test_layout_keys_equal_reference_and_are_detected",
        "tests/security/test_gallery_files.py::test_sigkill_at_every_save_step",
        "tests/security/test_resume.py::test_resume_auto_after_a_truncated_newest_checkpoint",
    }
)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark every test that needs a trained model ``slow`` (``make test-fast`` leaves them out).

    Tests that call ``train()`` themselves carry the mark in their own file; this catches the ones
    that only ask for a training fixture, including through another fixture (``fixturenames`` is the
    closure) or, for the service tests, ``request.getfixturevalue`` inside ``serve_recognizer``.
    """
    for item in items:
        if any(name in TRAINING_FIXTURES for name in getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)
        elif item.nodeid.split("[")[0] in MULTI_SECOND_TESTS:
            item.add_marker(pytest.mark.slow)


@pytest.fixture(autouse=True)
def _no_cpu_bf16_probe(request, monkeypatch):
    """Tests train with precision ``auto``; on a CPU with bf16 units that runs a timing probe whose
    pick could depend on the machine's load. Outside the tests of the rule itself, report no bf16
    units so every run picks fp32, the same on every machine."""
    if request.module.__name__.endswith("test_cpu_precision"):
        yield
        return
    from faceforge.train import presets

    monkeypatch.setattr(presets, "cpu_bf16_support", lambda: None)
    yield


@pytest.fixture
def one_thread():
    """One torch intra-op thread for the test: two collapse when another process competes for CI's 2 cores."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture
def file_size_limit():
    """``limit(n)`` caps every file this process writes at ``n`` bytes until the test ends: a ``write``
    past it fails with ``EFBIG`` and no file name, as a full disk fails with ``ENOSPC`` (SIGXFSZ ignored)."""
    import resource
    import signal

    old_limit = resource.getrlimit(resource.RLIMIT_FSIZE)
    old_handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)

    def limit(n: int) -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (n, old_limit[1]))

    yield limit
    resource.setrlimit(resource.RLIMIT_FSIZE, old_limit)
    signal.signal(signal.SIGXFSZ, old_handler)


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """The ../shared folder (reference vectors, LFW, detector files); skip the test when absent."""
    if not (SHARED / "reference").is_dir():
        pytest.skip(f"../shared not found at {SHARED} (reference data for this test)")
    return SHARED


# A small GhostFaceNetV1 + ArcFace trained on SynthFaces (64×64 input, 128-d, 8 epochs), ~80 s at
# one thread on an idle 2-core machine (2.5 min when it is shared); its checkpoint carries the
# calibration of its 400 validation pairs (~88% accurate). Used by the inference,
# export and service tests. Identities >= 1000 of SynthFaces(seed=0) were never seen in training.
TRAINED_SYNTH_IDENTITIES = 150


@pytest.fixture(scope="session")
def trained_checkpoint(tmp_path_factory) -> Path:
    """Path of a faceforge checkpoint trained on SynthFaces (seed 0) with its calibration filled.

    Under pytest-xdist the workers share one training run: the first to ask trains under a file lock
    in the run's common temporary folder, the others wait for it and read the same (read-only) file.
    """
    if not XDIST_WORKER:
        return _train_fixture_checkpoint(tmp_path_factory.mktemp("trained_checkpoint"))
    from filelock import FileLock

    root = tmp_path_factory.getbasetemp().parent / "trained_checkpoint"
    done = root / "best_checkpoint.txt"
    with FileLock(f"{root}.lock"):
        if not done.is_file():
            best = _train_fixture_checkpoint(root)
            done.write_text(str(best), encoding="utf-8")
    return Path(done.read_text(encoding="utf-8"))


def _train_fixture_checkpoint(root: Path) -> Path:
    """Write the SynthFaces folder under ``root`` and train the fixture model there, at one thread."""
    import torch

    from faceforge.data.synth import write_dataset
    from faceforge.train.config import load_config
    from faceforge.train.run import train

    write_dataset(
        root / "data",
        identities=TRAINED_SYNTH_IDENTITIES,
        images_per_id=16,
        val_identities=30,
        test_identities=0,
        workers=1,
        progress=False,
        val_pairs_per_fold=20,
    )
    overrides = {
        "data.root": root / "data",
        "data.test_pairs": "null",
        "run_root": root / "runs",
        "name": "fixture",
        "data.image_size": 64,
        "data.batch_size": 64,
        "model.backbone.name": "ghostfacenetv1",
        "model.backbone.width": 0.25,
        "model.backbone.stride": 2,
        "model.backbone.embedding_size": 128,
        "model.head.scale": 32,
        "model.head.margin": 0.3,
        "scheduler.warmup_epochs": 0.5,
        "trainer.max_epochs": 8,
        "trainer.precision": "32-true",
        "trainer.accelerator": "cpu",
        "trainer.enable_progress_bar": "false",
        "verification.batch_size": 128,
    }
    argv = [a for k, v in overrides.items() for a in (f"--{k}", str(v))]
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        result = train(load_config(None, argv), evaluate_test=False)
    finally:
        torch.set_num_threads(n)
    return result.best_checkpoint
