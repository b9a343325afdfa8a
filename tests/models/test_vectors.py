"""Forward-pass test vectors from the reference implementations (deterministic random weights)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

from faceforge.models import create_model, load_backbone_weights

safetensors_torch = pytest.importorskip("safetensors.torch")

CASES = {"insightface_mbf": "mbf", "edgeface_xs_gamma_06": "edgeface_xs_gamma_06"}


@pytest.mark.parametrize("stem", sorted(CASES))
def test_reference_output(stem: str, shared_dir: Path) -> None:
    name = CASES[stem]
    if name.startswith("edgeface") and importlib.util.find_spec("timm") is None:
        pytest.skip("timm not installed")
    path = shared_dir / "reference" / "vectors" / f"{stem}.safetensors"
    if not path.is_file():
        pytest.skip(f"{path} missing")
    tensors = safetensors_torch.load_file(str(path))
    model = create_model(name, embedding_size=tensors["test.output"].shape[1]).eval()
    # strict load of every non-test key directly (no prefix handling) ...
    weights = {k: v for k, v in tensors.items() if not k.startswith("test.")}
    model.load_state_dict(weights, strict=True)
    # ... and through our loader (which must give the same model)
    load_backbone_weights(model, path)
    with torch.no_grad():
        out = model(tensors["test.input"])
    torch.testing.assert_close(out, tensors["test.output"], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(out.double(), tensors["test.output_float64"], atol=1e-4, rtol=1e-4)
