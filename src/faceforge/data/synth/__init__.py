"""SynthFaces: faceforge's procedural face data set with exact landmarks (see ``render``)."""

from faceforge.data.synth.objects import OBJECT_CLASSES, SynthObjects, write_objects
from faceforge.data.synth.render import ARCFACE_112, Identity, SynthFaces, Variation, render
from faceforge.data.synth.writer import write_dataset

__all__ = ["ARCFACE_112", "Identity", "SynthFaces", "Variation", "render", "write_dataset"]
__all__ += ["OBJECT_CLASSES", "SynthObjects", "write_objects"]
