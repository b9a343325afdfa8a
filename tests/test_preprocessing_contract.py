"""One preprocessing contract: the same photo reaches the network as the same tensor on every path.

Training's data path, ``faceforge eval``, ``FaceRecognizer`` (PyTorch and ONNX) and the REST service
each decode a photo and turn it into the model's input; ``faceforge.models.face_cfg.preprocess`` is
the one function that does the colour order and normalisation. The model here records what it is
fed, with a FaceConfig that makes every mistake visible: BGR and a different mean/std per channel.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from faceforge.data.synth import SynthFaces
from faceforge.models.face_cfg import FaceConfig, preprocess

CFG = FaceConfig(
    input_size=(112, 112),
    color="BGR",
    mean=(0.30, 0.45, 0.60),
    std=(0.20, 0.25, 0.35),
    template="arcface",
    embedding_size=48,
)


class Recorder(nn.Module):
    """A tiny exportable "backbone" (4×4 average pool → 48-d) that keeps the last input it saw."""

    def __init__(self) -> None:
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(4)
        self.face_cfg = CFG
        self.seen: list[np.ndarray] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not torch.jit.is_tracing() and not torch.onnx.is_in_onnx_export():
            self.seen.append(x.detach().cpu().numpy().copy())
        return self.pool(x).flatten(1) + 1.0  # + 1: never a zero embedding


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """Two aligned 112×112 crops of different identities, as lossless PNGs in an ImageFolder."""
    root = tmp_path_factory.mktemp("contract")
    sf = SynthFaces(3)
    paths = []
    for ident in (0, 1):
        rgb, _ = sf.image(5000 + ident, 0)
        d = root / "train" / f"id{ident}"
        d.mkdir(parents=True)
        Image.fromarray(rgb).save(d / "0.png")
        paths.append(d / "0.png")
    return root, paths


def _expected(path) -> np.ndarray:
    """The input written out from the FaceConfig definition, by hand: BGR, (p/255 - mean) / std."""
    rgb = np.asarray(Image.open(path).convert("RGB"), np.float64)
    bgr = rgb[:, :, ::-1].transpose(2, 0, 1)
    mean = np.asarray(CFG.mean).reshape(3, 1, 1)
    std = np.asarray(CFG.std).reshape(3, 1, 1)
    return (bgr / 255.0 - mean) / std


def _embedding_model(module: nn.Module):
    from faceforge.infer.loading import EmbeddingModel, torch_runner

    return EmbeddingModel(torch_runner(module, "cpu"), CFG, "recorder", "", "torch", "weights", {}, module)


def _recording(model):
    """Wrap ``model.run`` (the network call after preprocessing) to keep its inputs."""
    seen: list[np.ndarray] = []
    run = model.run

    def wrapped(x: np.ndarray) -> np.ndarray:
        seen.append(np.array(x, copy=True))
        return run(x)

    model.run = wrapped
    return seen


def test_preprocess_numpy_and_torch_share_one_definition(photos) -> None:
    _, paths = photos
    rgb = np.asarray(Image.open(paths[0]).convert("RGB"))[None]
    a = preprocess(rgb, CFG)  # numpy NHWC
    b = preprocess(torch.from_numpy(rgb).permute(0, 3, 1, 2), CFG).numpy()  # torch NCHW
    assert a.dtype == np.float32 and a.shape == (1, 3, 112, 112)
    assert np.abs(a - b).max() <= 1e-6
    assert np.abs(a[0] - _expected(paths[0])).max() <= 1e-5
    # The colour order matters: the RGB reading of the same pixels is a different input.
    rgb_cfg = dataclasses.replace(CFG, color="RGB")
    assert np.abs(preprocess(rgb, rgb_cfg) - a).max() > 0.5


def test_every_path_feeds_the_same_tensor(photos, tmp_path) -> None:
    from faceforge.infer import FaceRecognizer

    root, paths = photos
    want = _expected(paths[0]).astype(np.float32)
    got: dict[str, np.ndarray] = {}

    # 1. training: the DataModule's dataset (RGB uint8) → FaceRecognitionModule.forward → preprocess.
    from faceforge.data.folder import ImageFolderDataset
    from faceforge.train.config import load_config
    from faceforge.train.module import FaceRecognitionModule

    ds = ImageFolderDataset(root / "train", 112)
    cfg = load_config(None, ["--model.backbone.name", "mbf", "--data.image_size", "112"])
    module = FaceRecognitionModule(cfg, 2)
    rec_net = Recorder()
    module.backbone, module.face_cfg, module.ema_backbone = rec_net, CFG, None
    module.eval()
    x0, _ = ds[[p for p, _ in ds.samples].index(str(paths[0]))]
    with torch.no_grad():
        module(x0[None])
    got["training"] = rec_net.seen[-1][0]

    # 2. eval: a pair list over the photos → faceforge.eval.suite (aligned crops) → EmbeddingModel.
    from faceforge.eval.suite import ModelInfo, SetSpec, evaluate_sets

    pairs = tmp_path / "pairs.txt"
    a, b = (str(p.relative_to(root / "train")) for p in paths)
    pairs.write_text("".join(f"{a}\t{a}\t1\n{a}\t{b}\t0\n" for _ in range(2)))
    em = _embedding_model(Recorder())
    seen = _recording(em)
    evaluate_sets([SetSpec("contract", pairs, "pairs", root / "train")], ModelInfo.from_model(em),
                  flip="none", n_folds=2, detector="none")  # fmt: skip
    batch = np.concatenate(seen)
    got["eval"] = min(batch, key=lambda t: float(np.abs(t - want).max()))

    # 3. FaceRecognizer, PyTorch backend.
    rec = FaceRecognizer(_embedding_model(Recorder()), detector=None, threshold=0.5)
    seen = _recording(rec.model)
    rec.embed(paths[0])
    got["recognizer torch"] = seen[0][0]

    # 4. FaceRecognizer, ONNX backend (faceforge export: the FaceConfig travels in the metadata).
    from faceforge.export.onnx import export_onnx

    onnx_path = export_onnx(Recorder(), tmp_path / "rec.onnx", face_cfg=CFG)
    ro = FaceRecognizer.from_onnx(onnx_path, detector=None, threshold=0.5)
    assert ro.face_cfg.to_dict() == CFG.to_dict()
    seen = _recording(ro.model)
    ro.embed(paths[0])
    got["recognizer onnx"] = seen[0][0]

    # 5. the service: POST /v1/embed with the file's bytes.
    from fastapi.testclient import TestClient

    from faceforge.serve.app import create_app

    svc = FaceRecognizer(_embedding_model(Recorder()), detector=None, threshold=0.5)
    seen = _recording(svc.model)
    with TestClient(create_app(svc, max_batch=1)) as client:  # no start-up probe among the recorded calls
        r = client.post("/v1/embed", files={"image": ("a.png", paths[0].read_bytes(), "image/png")})
    assert r.status_code == 200, r.text
    got["service"] = seen[0][0]

    for where, x in got.items():
        assert x.shape == (3, 112, 112), where
        assert np.abs(x - want).max() <= 1e-5, f"{where}: {np.abs(x - want).max()}"
        assert np.abs(x - got["training"]).max() <= 1e-6, where
