"""The top-level doors named in the README resolve to the real implementations."""

from __future__ import annotations

import pytest

import faceforge


def test_top_level_exports() -> None:
    from faceforge.eval.metrics import evaluate_pairs
    from faceforge.heads import create_head

    assert faceforge.evaluate_pairs is evaluate_pairs
    assert faceforge.create_head is create_head
    assert "ghostfacenetv1" in faceforge.list_models()
    assert "arcface" in faceforge.list_heads()
    assert "yunet" in faceforge.list_detectors()
    with pytest.raises(AttributeError):
        _ = faceforge.no_such_thing
