"""Flip-test fusion runs a crop and its mirror in one model call of 2N rows (not two calls of N), with
the embeddings of the two calls' sum."""

from __future__ import annotations

import numpy as np
import pytest


@pytest.mark.parametrize("flip", [True, False])
def test_one_call_per_chunk_and_the_same_embeddings(flip: bool) -> None:
    from faceforge.infer.loading import EmbeddingModel
    from faceforge.infer.recognizer import FaceRecognizer
    from faceforge.models.face_cfg import FaceConfig, preprocess

    proj = np.random.default_rng(0).normal(size=(3 * 32 * 32, 16)).astype(np.float32)
    calls: list[int] = []

    def run(x: np.ndarray) -> np.ndarray:  # a fixed random projection: a mirror gives another answer
        calls.append(len(x))
        return x.reshape(len(x), -1) @ proj

    cfg = FaceConfig(input_size=(32, 32), template="none", embedding_size=16)
    rec = FaceRecognizer(EmbeddingModel(run, cfg, "proj", "test", "torch", "weights"), detector=None)
    rec.flip = flip
    crops = np.random.default_rng(1).integers(0, 256, (3, 32, 32, 3), dtype=np.uint8)
    emb = rec.embed_crops(crops)
    assert calls == [6 if flip else 3]
    x = preprocess(crops, cfg)
    ref = x.reshape(3, -1) @ proj
    if flip:
        ref = ref + np.ascontiguousarray(x[..., ::-1]).reshape(3, -1) @ proj
    ref /= np.linalg.norm(ref, axis=1, keepdims=True)
    np.testing.assert_allclose(emb, ref, rtol=1e-5, atol=1e-6)
    calls.clear()
    rec.enable_batching(max_batch=8)  # the micro-batcher calls the same function
    try:
        np.testing.assert_allclose(rec.embed_crops(crops), emb, rtol=1e-5, atol=1e-6)
    finally:
        rec.disable_batching()
    assert calls == [6 if flip else 3]
