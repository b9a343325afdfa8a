"""SynthFaces: faceforge's procedural face data set with exact landmarks (see ``render``)."""

from faceforge.data.synth.render import ARCFACE_112, Identity, SynthFaces, Variation, render
from faceforge.data.synth.writer import write_dataset

__all__ = ["ARCFACE_112", "Identity", "SynthFaces", "Variation", "render", "write_dataset"]
