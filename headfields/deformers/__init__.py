"""Deformers: posed (world) samples -> the canonical space of a field, ``forward(x, head, frame, dirs) ->
Canonical``. INSTA's triangle-frame deformer, the rigid baseline, MonoAvatar's SE(3) error-correction warp, and a
chain of deformers."""

from .base import Canonical, Deformer, DeformerChain, RigidDeformer, RigidDeformerConfig, check_deformer_input
from .se3_warp import ErrorCorrectionConfig, ErrorCorrectionWarp, WarpRegularizers, log_quaternion_to_rotation
from .triangle_frames import TriangleDeformerConfig, TriangleFrameDeformer

__all__ = [
    "Canonical",
    "Deformer",
    "DeformerChain",
    "ErrorCorrectionConfig",
    "ErrorCorrectionWarp",
    "RigidDeformer",
    "RigidDeformerConfig",
    "TriangleDeformerConfig",
    "TriangleFrameDeformer",
    "WarpRegularizers",
    "check_deformer_input",
    "log_quaternion_to_rotation",
]
