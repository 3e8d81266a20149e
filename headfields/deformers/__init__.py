"""Deformers: posed (world) samples -> the canonical space of a field, ``forward(x, head, frame, dirs) ->
Canonical``. INSTA's triangle-frame deformer, the rigid baseline, MonoAvatar's SE(3) error-correction field, MonoNPHM's
backward deformation with hyper-dimensions (and root finding to invert it), the 360° portrait avatar's inverse
SMPL-X skinning (chained before the triangle-frame deformer on the rest mesh) and its blend basis of displacement
fields, and a chain of deformers."""

import warnings

from .base import (
    Canonical,
    Deformer,
    DeformerChain,
    MappedDeformer,
    RigidDeformer,
    RigidDeformerConfig,
    check_deformer_input,
)
from .blend_fields import BlendFieldConfig, BlendFieldDeformer, expression_and_jaw, jaw_index
from .error_correction import (
    CorrectionRegularizers,
    ErrorCorrectionConfig,
    ErrorCorrectionField,
    log_quaternion_to_rotation,
)
from .gaussian_binding import (
    BindingRegulariserConfig,
    FaceFrames,
    GaussianSet,
    PosedGaussians,
    bind_gaussians,
    binding_regularisers,
    face_frames,
    matrix_to_quaternion,
    quaternion_multiply,
    quaternion_to_matrix,
)
from .hyper import HyperDeformation, HyperDeformer, HyperDeformerConfig, HyperRegularizers, Preimage, find_preimage
from .inverse_skinning import SkinningDeformer, SkinningDeformerConfig
from .triangle_frames import TriangleDeformerConfig, TriangleFrameDeformer

__all__ = [
    "BindingRegulariserConfig",
    "BlendFieldConfig",
    "BlendFieldDeformer",
    "Canonical",
    "CorrectionRegularizers",
    "Deformer",
    "DeformerChain",
    "ErrorCorrectionConfig",
    "ErrorCorrectionField",
    "FaceFrames",
    "GaussianSet",
    "HyperDeformation",
    "HyperDeformer",
    "HyperDeformerConfig",
    "HyperRegularizers",
    "MappedDeformer",
    "PosedGaussians",
    "Preimage",
    "RigidDeformer",
    "RigidDeformerConfig",
    "SkinningDeformer",
    "SkinningDeformerConfig",
    "TriangleDeformerConfig",
    "TriangleFrameDeformer",
    "bind_gaussians",
    "binding_regularisers",
    "check_deformer_input",
    "expression_and_jaw",
    "face_frames",
    "find_preimage",
    "jaw_index",
    "log_quaternion_to_rotation",
    "matrix_to_quaternion",
    "quaternion_multiply",
    "quaternion_to_matrix",
]

# Old names of the error-correction field ("warp" now means NVIDIA Warp only): they still work, with a warning.
_RENAMED = {"ErrorCorrectionWarp": ErrorCorrectionField, "WarpRegularizers": CorrectionRegularizers}


def __getattr__(name: str) -> type:
    if name in _RENAMED:
        new = _RENAMED[name]
        warnings.warn(
            f"headfields.deformers.{name} is renamed to {new.__name__}; this alias goes in the next release",
            DeprecationWarning,
            stacklevel=2,
        )
        return new
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
