"""SynthFaces: faceforge's procedural face data set with exact landmarks (v1: ``render``; v2, 3-D heads:
``render_v2`` and ``head3d``)."""

from faceforge.data.synth.objects import OBJECT_CLASSES, SynthObjects, write_objects
from faceforge.data.synth.render import ARCFACE_112, Identity, SynthFaces, Variation, render
from faceforge.data.synth.render_v2 import SynthFacesV2, render2
from faceforge.data.synth.writer import write_dataset

__all__ = ["ARCFACE_112", "Identity", "SynthFaces", "Variation", "render", "write_dataset"]
__all__ += ["OBJECT_CLASSES", "SynthObjects", "write_objects"]
__all__ += ["SynthFacesV2", "render2"]
