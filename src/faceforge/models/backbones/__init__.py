"""Face-recognition backbones; importing this package registers every family. Use :func:`create_model`
(``create_model("iresnet50", embedding_size=512)``), :func:`list_models` and
:func:`load_backbone_weights`. ``timm/<name>`` builds any timm model with an embedding neck. Details:
docs/backbones.md.
"""

from __future__ import annotations

# importing each family module registers its factories
from faceforge.models.backbones import (  # noqa: F401
    dlib_resnet,
    edgeface,
    ghostfacenet,
    iresnet,
    irse,
    mobilefacenet,
    timm_wrapper,
)
from faceforge.models.backbones.registry import MODELS, create_model, list_models, register_model
from faceforge.models.backbones.weights import load_backbone_weights, read_state_dict

__all__ = [
    "MODELS",
    "create_model",
    "list_models",
    "load_backbone_weights",
    "read_state_dict",
    "register_model",
]
