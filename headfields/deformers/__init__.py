"""Deformers: posed (world) samples -> the canonical space of a field, ``forward(x, head, frame, dirs) ->
Canonical``. INSTA's triangle-frame deformer, the rigid baseline, and a chain of deformers."""

from .base import Canonical, Deformer, DeformerChain, RigidDeformer, RigidDeformerConfig, check_deformer_input
from .triangle_frames import TriangleDeformerConfig, TriangleFrameDeformer

__all__ = [
    "Canonical",
    "Deformer",
    "DeformerChain",
    "RigidDeformer",
    "RigidDeformerConfig",
    "TriangleDeformerConfig",
    "TriangleFrameDeformer",
    "check_deformer_input",
]
