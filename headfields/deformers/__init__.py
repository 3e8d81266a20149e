"""Deformers: posed (world) samples -> the canonical space of a field, ``forward(x, head, frame, dirs) ->
Canonical``. INSTA's triangle-frame deformer, the rigid baseline, MonoAvatar's SE(3) error-correction warp, MonoNPHM's
backward deformation with hyper-dimensions (and root finding to invert it), and a chain of deformers."""

from .base import Canonical, Deformer, DeformerChain, RigidDeformer, RigidDeformerConfig, check_deformer_input
from .hyper import HyperDeformation, HyperDeformer, HyperDeformerConfig, HyperRegularizers, Preimage, find_preimage
from .se3_warp import ErrorCorrectionConfig, ErrorCorrectionWarp, WarpRegularizers, log_quaternion_to_rotation
from .triangle_frames import TriangleDeformerConfig, TriangleFrameDeformer

__all__ = [
    "Canonical",
    "Deformer",
    "DeformerChain",
    "ErrorCorrectionConfig",
    "ErrorCorrectionWarp",
    "HyperDeformation",
    "HyperDeformer",
    "HyperDeformerConfig",
    "HyperRegularizers",
    "Preimage",
    "RigidDeformer",
    "RigidDeformerConfig",
    "TriangleDeformerConfig",
    "TriangleFrameDeformer",
    "WarpRegularizers",
    "check_deformer_input",
    "find_preimage",
    "log_quaternion_to_rotation",
]
