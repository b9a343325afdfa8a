"""Models: recognition backbones (``create_model``) and their :class:`FaceConfig`."""

from __future__ import annotations

from faceforge.models.backbones import create_model, list_models, load_backbone_weights, register_model
from faceforge.models.face_cfg import FaceConfig

__all__ = ["FaceConfig", "create_model", "list_models", "load_backbone_weights", "register_model"]
