"""Deformers: posed (world) samples -> the canonical space of a field, ``forward(x, head, frame, dirs) ->
Canonical``. INSTA's triangle-frame deformer, the rigid baseline, MonoAvatar's SE(3) error-correction warp, MonoNPHM's
backward deformation with hyper-dimensions (and root finding to invert it), the 360° portrait avatar's inverse
SMPL-X skinning (chained before the triangle-frame deformer on the rest mesh) and its blend basis of displacement
fields, and a chain of deformers."""

from .base import Canonical, Deformer, DeformerChain, RigidDeformer, RigidDeformerConfig, check_deformer_input
from .blend_fields import BlendFieldConfig, BlendFieldDeformer
from .hyper import HyperDeformation, HyperDeformer, HyperDeformerConfig, HyperRegularizers, Preimage, find_preimage
from .se3_warp import ErrorCorrectionConfig, ErrorCorrectionWarp, WarpRegularizers, log_quaternion_to_rotation
from .skinning import SkinningDeformer, SkinningDeformerConfig
from .triangle_frames import TriangleDeformerConfig, TriangleFrameDeformer

__all__ = [
    "BlendFieldConfig",
    "BlendFieldDeformer",
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
    "SkinningDeformer",
    "SkinningDeformerConfig",
    "TriangleDeformerConfig",
    "TriangleFrameDeformer",
    "WarpRegularizers",
    "check_deformer_input",
    "find_preimage",
    "log_quaternion_to_rotation",
]
