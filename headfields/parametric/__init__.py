"""Parametric heads: FLAME and SMPL-X from their official files (chumpy pickles included, without chumpy),
evaluated into a :class:`Head` for B frames, linear blend skinning of arbitrary points, a mouth cavity for
FLAME's open lips and VHAP's teeth. Small synthetic model files in the official formats are in ``headfields.synthetic``."""

from .files import read_model_file
from .head import Head
from .model import EYE_JOINTS, ParametricModel, load_model
from .mouth import add_mouth_interior
from .skinning import (
    SkinningWeights,
    blend_transforms,
    inverse_skinning,
    skin_points,
    skinned_to,
    skinning_weights,
    transform_points,
)
from .teeth import add_teeth
from .tracked_meshes import SubjectModel, TrackedMeshModel, require_parametric_model, rigid_fit

__all__ = [
    "EYE_JOINTS",
    "Head",
    "ParametricModel",
    "SkinningWeights",
    "SubjectModel",
    "TrackedMeshModel",
    "add_mouth_interior",
    "add_teeth",
    "blend_transforms",
    "inverse_skinning",
    "load_model",
    "read_model_file",
    "require_parametric_model",
    "rigid_fit",
    "skin_points",
    "skinned_to",
    "skinning_weights",
    "transform_points",
]
