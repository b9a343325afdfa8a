"""Classification / margin heads for face recognition. ``create_head(name, embedding_size, num_classes,
**kwargs)`` builds one; ``list_heads()`` names them; :class:`PartialFC` shards the class centres over
ranks. See docs/heads.md.
"""

from faceforge.heads.adaface import AdaFaceHead
from faceforge.heads.base import HEADS, BaseHead, create_head, focal_from_ce, list_heads, normalized_cosine
from faceforge.heads.curricularface import CurricularFaceHead
from faceforge.heads.margins import ArcFaceHead, CombinedMarginHead, CosFaceHead, NormFaceHead, SoftmaxHead
from faceforge.heads.partial_fc import PartialFC, ddp_ignore_partial_fc, shard_range
from faceforge.heads.schedules import Schedule, build_schedule
from faceforge.heads.subcenter import SubCenterArcFaceHead

__all__ = [
    "HEADS",
    "AdaFaceHead",
    "ArcFaceHead",
    "BaseHead",
    "CombinedMarginHead",
    "CosFaceHead",
    "CurricularFaceHead",
    "NormFaceHead",
    "PartialFC",
    "Schedule",
    "SoftmaxHead",
    "SubCenterArcFaceHead",
    "build_schedule",
    "create_head",
    "ddp_ignore_partial_fc",
    "focal_from_ce",
    "list_heads",
    "normalized_cosine",
    "shard_range",
]
